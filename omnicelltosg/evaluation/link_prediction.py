"""PPI link prediction: the held-out split, negatives, metrics and baselines of masked-edge pretraining.

- Split: a seeded fraction of the PPI pairs is held out of the graph for good (:func:`split_ppi_edges`).
- Negatives: uniformly random protein pairs, and *degree-matched* (hard) negatives that keep one end of
  a true pair and replace the other by a protein of the same degree bin (log2 of its training degree),
  so that a scorer cannot win by ranking hubs first (degree bias of random negatives: Li et al. 2023,
  "Evaluating Graph Neural Networks for Link Prediction: Current Pitfalls and New Benchmarking").
  Pretraining draws its per-step negatives with :func:`sample_training_negatives`; the evaluation uses
  fixed sets (:func:`evaluation_negatives`) so every method is scored on the same pairs.
- Metrics: AUROC and average precision (scikit-learn) and Hits@K as defined by OGB ``ogbl-ppa`` /
  ``ogbl-collab``: the fraction of positive pairs scored above the K-th highest negative score.
- Baselines on the same training graph and the same held-out pairs: common neighbours, Adamic–Adar
  (Adamic & Adar 2003), degree product (preferential attachment) — computed with SciPy sparse products
  — and a graph auto-encoder (GAE, Kipf & Welling 2016; PyG ``GAE`` + ``GCNConv``) on learned node
  embeddings, i.e. without any text or expression prior.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import Tensor


def pair_keys(edge_index: Tensor | np.ndarray, num_nodes: int) -> np.ndarray:
    """Order-independent int64 key ``min · N + max`` of each pair of ``[2, E]``."""
    e = np.asarray(edge_index)
    return np.minimum(e[0], e[1]).astype(np.int64) * num_nodes + np.maximum(e[0], e[1])


def node_degree(edge_index: Tensor, num_nodes: int) -> np.ndarray:
    """Undirected degree (int64 [N]) of pairs stored once per unordered pair."""
    e = np.asarray(edge_index)
    return np.bincount(e[0], minlength=num_nodes) + np.bincount(e[1], minlength=num_nodes)


def sample_degree_matched_negatives(positives: Tensor, train_edges: Tensor, exclude: Tensor, num_nodes: int,
                                    generator: torch.Generator, max_rounds: int = 50,
                                    max_bin_widening: int = 2) -> Tensor:
    """Hard negatives: for each positive ``(u, v)``, ``(u, v')`` with ``v'`` drawn uniformly from the
    proteins in ``v``'s degree bin (``floor(log2(1 + degree))`` on ``train_edges``) and ``(u, v')``
    not a true pair.

    Args:
        positives: LongTensor ``[2, P]`` of true pairs (global indices).
        train_edges: ``[2, E]`` training pairs (degrees are measured on them, never on held-out pairs).
        exclude: ``[2, E']`` every true pair (training and held-out) — never returned.
        num_nodes: ``N`` (global index space).
        generator: CPU generator.

        max_rounds: draws per bin before the next bin is tried.
        max_bin_widening: when a bin yields no valid partner (hub bins are small and their members
            often all interact with ``u``), the bins ``±1 … ±max_bin_widening`` are tried in turn.

    Returns:
        LongTensor ``[2, P']`` with ``P' ≤ P`` (a positive with no valid partner in any tried bin is
        skipped).
    """
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    deg = node_degree(train_edges, num_nodes)
    proteins = np.unique(np.asarray(exclude))
    bins = np.floor(np.log2(1 + deg)).astype(np.int64)
    members = {b: proteins[bins[proteins] == b] for b in np.unique(bins[proteins])}
    excluded = set(pair_keys(exclude, num_nodes).tolist())
    pos = np.asarray(positives)
    flip = rng.random(pos.shape[1]) < 0.5  # replace either end, at random
    keep_end = np.where(flip, pos[1], pos[0])
    swap_end = np.where(flip, pos[0], pos[1])
    out_u, out_v = [], []
    for u, v in zip(keep_end, swap_end):
        for width in range(max_bin_widening + 1):  # the degree bin, then its neighbours if it is exhausted
            pool = np.concatenate([members.get(int(bins[v]) + d, np.zeros(0, np.int64))
                                   for d in sorted({-width, width})])
            found = False
            for _ in range(max_rounds if len(pool) > 1 else 0):
                w = int(pool[rng.integers(len(pool))])
                if w != u and (min(u, w) * num_nodes + max(u, w)) not in excluded:
                    out_u.append(int(u))
                    out_v.append(w)
                    found = True
                    break
            if found:
                break
    return torch.tensor([out_u, out_v], dtype=torch.long)


def hits_at_k(pos_scores: np.ndarray, neg_scores: np.ndarray, k: int = 50) -> float:
    """OGB Hits@K: share of positives scored strictly above the K-th highest negative score."""
    neg = np.asarray(neg_scores, dtype=np.float64)
    if len(neg) < k:
        return float("nan")
    threshold = np.partition(neg, -k)[-k]
    return float(np.mean(np.asarray(pos_scores, dtype=np.float64) > threshold))


def link_metrics(pos_scores, neg_scores, k: int = 50) -> dict[str, float]:
    """AUROC, AP and Hits@K of positive vs negative scores."""
    pos, neg = np.asarray(pos_scores, dtype=np.float64), np.asarray(neg_scores, dtype=np.float64)
    truth = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    scores = np.r_[pos, neg]
    return {"auroc": float(roc_auc_score(truth, scores)), "ap": float(average_precision_score(truth, scores)),
            f"hits@{k}": hits_at_k(pos, neg, k)}


def split_ppi_edges(ppi_edge_index: Tensor, held_out_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Randomly split undirected PPI pairs into training and held-out test pairs.

    Args:
        ppi_edge_index: LongTensor `[2, E]`, each unordered pair stored once.
        held_out_fraction: fraction of pairs held out, in `[0, 1)`.
        seed: seed of the permutation.

    Returns:
        `(train_edges [2, E - E_test], test_edges [2, E_test])`, `E_test = round(fraction · E)`.
    """
    if not 0.0 <= held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}.")
    num_edges = ppi_edge_index.size(1)
    perm = torch.randperm(num_edges, generator=torch.Generator().manual_seed(seed)).to(ppi_edge_index.device)
    num_test = int(round(held_out_fraction * num_edges))
    return ppi_edge_index[:, perm[num_test:]], ppi_edge_index[:, perm[:num_test]]


def sample_negative_edges(
    num: int,
    protein_range: tuple[int, int],
    exclude: Tensor,
    generator: torch.Generator,
    max_rounds: int = 100,
) -> Tensor:
    """Sample `num` random protein pairs that are not interactions (nor self-pairs).

    Args:
        num: number of pairs to return.
        protein_range: `(start, stop)` global index range of protein nodes, i.e. `(Nt, Nt + Np)`.
        exclude: LongTensor `[2, E]` of all true pairs (either orientation), e.g. the full PPI including
            held-out pairs.
        generator: CPU `torch.Generator` for reproducibility.
        max_rounds: rejection-sampling rounds before giving up (the graph is then nearly complete).

    Returns:
        LongTensor `[2, num]` on CPU (pairs may repeat).
    """
    start, stop = protein_range
    if stop - start < 2:
        raise ValueError(f"Need at least two proteins to sample pairs, got range {protein_range}.")
    excluded = torch.unique(torch.from_numpy(pair_keys(exclude.cpu(), stop)))
    found, have = [], 0
    for _ in range(max_rounds):
        cand = torch.randint(start, stop, (2, 2 * (num - have) + 16), generator=generator)
        keep = (cand[0] != cand[1]) & ~torch.isin(torch.from_numpy(pair_keys(cand, stop)), excluded)
        found.append(cand[:, keep])
        have += int(keep.sum())
        if have >= num:
            return torch.cat(found, dim=1)[:, :num]
    raise RuntimeError(f"Could only sample {have} of {num} negative pairs in {max_rounds} rounds; is the PPI complete?")


def sample_training_negatives(positives: Tensor, train_edges: Tensor, all_pairs: Tensor, num_nodes: int,
                              protein_range: tuple[int, int], kind: str, generator: torch.Generator) -> Tensor:
    """Negatives of one pretraining step, about as many as ``positives`` ``[2, P]``.

    ``kind`` (one of ``omnicelltosg.train.arguments.NEGATIVE_KINDS``): ``"random"`` protein pairs
    (:func:`sample_negative_edges`), ``"degree_matched"`` hard negatives
    (:func:`sample_degree_matched_negatives`, degrees on ``train_edges``) or ``"mixed"`` (half each).
    ``all_pairs`` ``[2, E]`` are never returned. Returns LongTensor ``[2, P']`` on CPU.
    """
    num = positives.size(1)
    if kind == "random":
        return sample_negative_edges(num, protein_range, all_pairs, generator)
    if kind == "degree_matched":
        return sample_degree_matched_negatives(positives, train_edges, all_pairs, num_nodes, generator)
    half = num // 2
    hard = sample_degree_matched_negatives(positives[:, half:], train_edges, all_pairs, num_nodes, generator)
    return torch.cat([sample_negative_edges(max(half, 1), protein_range, all_pairs, generator), hard], dim=1)


def evaluation_negatives(train_edges: Tensor, test_edges: Tensor, all_pairs: Tensor, num_nodes: int,
                         protein_range: tuple[int, int], seed: int) -> dict[str, Tensor]:
    """The fixed negative sets of the held-out evaluation (same seed → same pairs for every method):
    ``random`` and ``degree_matched``, each ``[2, ≈E_test]``."""
    generator = torch.Generator().manual_seed(10_007 + seed)
    return {"random": sample_negative_edges(test_edges.size(1), protein_range, all_pairs, generator),
            "degree_matched": sample_degree_matched_negatives(test_edges, train_edges, all_pairs, num_nodes,
                                                              generator)}


@torch.no_grad()
def evaluate_link_prediction(score, train_edges: Tensor, test_edges: Tensor, all_pairs: Tensor, num_nodes: int,
                             protein_range: tuple[int, int], seed: int, k: int = 50) -> dict:
    """Held-out PPI evaluation of a scorer ``score(pairs [2, P]) -> float [P]``: AUROC / AP / Hits@``k``
    of the held-out pairs ``test_edges`` ``[2, E_test]`` against random and against degree-matched
    negatives (:func:`evaluation_negatives` with ``seed``; ``all_pairs`` ``[2, E]`` is the full PPI).

    Returns ``{"random": {...}, "degree_matched": {...}}``, each :func:`link_metrics` plus
    ``n_negatives``; ``{}`` when there are no held-out pairs."""
    if test_edges.size(1) == 0:
        return {}
    pos = np.asarray(score(test_edges), dtype=np.float64)
    return {kind: link_metrics(pos, np.asarray(score(neg), dtype=np.float64), k) | {"n_negatives": int(neg.size(1))}
            for kind, neg in evaluation_negatives(train_edges, test_edges, all_pairs, num_nodes, protein_range,
                                                  seed).items()}


def _adjacency(train_edges: Tensor, num_nodes: int) -> sp.csr_matrix:
    e = np.asarray(train_edges)
    a = sp.coo_matrix((np.ones(e.shape[1]), (e[0], e[1])), shape=(num_nodes, num_nodes))
    a = ((a + a.T) > 0).astype(np.float64)
    return a.tocsr()


def heuristic_scores(train_edges: Tensor, pairs: Tensor, num_nodes: int) -> dict[str, np.ndarray]:
    """Common neighbours, Adamic–Adar and degree product of ``pairs`` ``[2, P]`` on the training graph.

    CN(u, v) = |Γ(u) ∩ Γ(v)|; AA(u, v) = Σ_{w ∈ Γ(u) ∩ Γ(v)} 1 / log |Γ(w)|; DP(u, v) = |Γ(u)|·|Γ(v)|.
    Returns float64 arrays ``[P]`` keyed ``common_neighbours``, ``adamic_adar``, ``degree_product``.
    """
    a = _adjacency(train_edges, num_nodes)
    deg = np.asarray(a.sum(1)).ravel()
    inv_log = np.zeros_like(deg)
    inv_log[deg > 1] = 1.0 / np.log(deg[deg > 1])
    u, v = np.asarray(pairs)
    rows_u, rows_v = a[u], a[v]
    cn = np.asarray(rows_u.multiply(rows_v).sum(1)).ravel()
    aa = np.asarray(rows_u.multiply(rows_v).multiply(inv_log[None, :]).sum(1)).ravel()
    return {"common_neighbours": cn, "adamic_adar": aa, "degree_product": deg[u] * deg[v]}


def train_gae(train_edges: Tensor, num_nodes: int, *, hidden: int = 64, out: int = 32, epochs: int = 200,
              lr: float = 0.01, seed: int = 0) -> Tensor:
    """A GAE (PyG ``GAE``, 2-layer ``GCNConv`` encoder, inner-product decoder) trained on the training
    pairs with learned node embeddings as input (no text, sequence or expression prior).

    Returns node embeddings float32 ``[N, out]``; score a pair by the sigmoid of the inner product.
    """
    from torch_geometric.nn import GAE, GCNConv
    from torch_geometric.utils import negative_sampling, to_undirected

    torch.manual_seed(seed)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(num_nodes, hidden)
            self.conv1, self.conv2 = GCNConv(hidden, hidden), GCNConv(hidden, out)

        def forward(self, edge_index):
            return self.conv2(self.conv1(self.embedding.weight, edge_index).relu(), edge_index)

    edge_index = to_undirected(train_edges, num_nodes=num_nodes)
    model = GAE(Encoder())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        optimizer.zero_grad()
        z = model.encode(edge_index)
        neg = negative_sampling(edge_index, num_nodes=num_nodes, num_neg_samples=train_edges.size(1))
        loss = model.recon_loss(z, train_edges, neg)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return model.encode(edge_index)


def gae_scores(embeddings: Tensor, pairs: Tensor) -> np.ndarray:
    """Inner-product GAE scores ``[P]`` of ``pairs`` ``[2, P]``."""
    return (embeddings[pairs[0]] * embeddings[pairs[1]]).sum(-1).numpy().astype(np.float64)


__all__ = ["split_ppi_edges", "sample_negative_edges", "sample_training_negatives", "evaluation_negatives",
           "evaluate_link_prediction", "sample_degree_matched_negatives", "hits_at_k", "link_metrics", "heuristic_scores", "train_gae",
           "gae_scores", "node_degree", "pair_keys"]
