"""Training loops for CellTOSG-FM: masked-edge pretraining, cell-classification fine-tuning, prediction.

Plain PyTorch loops on one device (CPU by default), fixed seeds, tqdm progress. Model selection uses the
validation split only; the test split is scored once, with the best-on-validation weights.

Pretraining follows OmniCellTOSG (arXiv 2504.02148, §4.4): a held-out fraction of PPI pairs is removed
from the graph for good (never used for message passing nor as training positives); each step masks
`mask_ratio` of the remaining training pairs, encodes a mini-batch of cells on the visible graph and
scores the masked pairs against as many random non-interacting protein pairs.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import replace

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import Tensor
from tqdm.auto import tqdm

from .graph import TOSGGraph
from .link_prediction import link_metrics, pair_keys, sample_degree_matched_negatives
from .modeling_celltosg import CellTOSGForCellClassification, CellTOSGForPretraining

logger = logging.getLogger(__name__)


def split_ppi_edges(ppi_edge_index: Tensor, held_out_fraction: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
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


def _training_negatives(positives: Tensor, train_edges: Tensor, all_pairs: Tensor, num_nodes: int,
                        protein_range: tuple[int, int], kind: str, generator: torch.Generator) -> Tensor:
    """Negatives for one step: as many as ``positives``, random / degree-matched / half each."""
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
                             protein_range: tuple[int, int], seed: int = 0, k: int = 50) -> dict:
    """Held-out PPI evaluation of a scorer ``score(pairs [2, P]) -> float [P]``: AUROC / AP / Hits@``k``
    of the held-out pairs against random and against degree-matched negatives
    (:func:`evaluation_negatives`). Returns ``{}`` when there are no held-out pairs."""
    if test_edges.size(1) == 0:
        return {}
    pos = np.asarray(score(test_edges), dtype=np.float64)
    return {kind: link_metrics(pos, np.asarray(score(neg), dtype=np.float64), k) | {"n_negatives": int(neg.size(1))}
            for kind, neg in evaluation_negatives(train_edges, test_edges, all_pairs, num_nodes, protein_range,
                                                  seed).items()}


@torch.no_grad()
def _mean_node_embeddings(model, expression, measured_mask, graph, batch_size, device) -> Tensor:
    """Node embeddings `[N, d]` averaged over all given cells, encoded in chunks of `batch_size`."""
    total, count = None, 0
    for i in range(0, expression.size(0), batch_size):
        rows = slice(i, i + batch_size)
        out = model.celltosg(expression[rows].to(device), graph, measured_mask=measured_mask[rows].to(device))
        part = out.last_hidden_state.sum(dim=0)
        total = part if total is None else total + part
        count += out.last_hidden_state.size(0)
    return total / count


def pretrain(
    model: CellTOSGForPretraining,
    expression: Tensor,
    measured_mask: Tensor,
    graph: TOSGGraph,
    *,
    steps: int = 200,
    batch_size: int = 16,
    lr: float = 1e-3,
    mask_ratio: float | None = None,
    held_out_fraction: float = 0.1,
    seed: int = 0,
    log_every: int = 10,
    eval_max_cells: int = 256,
    negatives: str = "mixed",
    device: str | torch.device = "cpu",
) -> dict:
    """Self-supervised pretraining by masked PPI edge reconstruction + degree regression.

    Args:
        model: a [`CellTOSGForPretraining`].
        expression: float32 `[M, Nt]` log-normalised expression of `M` cells (rows are cells).
        measured_mask: bool `[M, Nt]`, False where the dataset did not measure the gene.
        graph: the shared [`TOSGGraph`] with the FULL PPI; `held_out_fraction` of it is removed first.
        steps: optimiser steps; each samples `batch_size` cells and one edge mask.
        lr: AdamW learning rate.
        mask_ratio: fraction of training pairs masked per step; None = `model.config.mask_ratio`.
        held_out_fraction: fraction of PPI pairs held out for the final AUROC/AP.
        seed: seeds cell sampling, edge split, masks and negatives.
        log_every: log the mean loss every this many steps.
        eval_max_cells: number of cells whose embeddings are averaged for the held-out evaluation.
        negatives: training negatives per step — ``"random"`` protein pairs, ``"degree_matched"`` hard
            negatives (:func:`~.link_prediction.sample_degree_matched_negatives`), or ``"mixed"`` (half each).
        device: where to train.

    Returns:
        dict with `loss_curve` (per-step loss), `edge_loss_curve`, `degree_loss_curve`; `evaluation`:
        held-out pairs (absent from the graph throughout) against as many random and as many
        degree-matched negatives, each with AUROC / AP / Hits@50 (:func:`evaluate_link_prediction`);
        `auroc`, `ap` (random negatives, as before); `train_edges`, `test_edges` (for baselines on the
        same pairs); `n_train_edges`, `n_test_edges`, `n_cells`, `seconds_per_step`.
    """
    if negatives not in ("random", "degree_matched", "mixed"):
        raise ValueError(f"negatives must be 'random', 'degree_matched' or 'mixed'; got {negatives!r}")
    mask_ratio = model.config.mask_ratio if mask_ratio is None else mask_ratio
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}.")
    if expression.shape != measured_mask.shape:
        raise ValueError(f"expression {tuple(expression.shape)} and measured_mask {tuple(measured_mask.shape)} differ.")
    graph.validate()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_edges, test_edges = split_ppi_edges(graph.ppi_edge_index.cpu(), held_out_fraction, seed)
    train_graph = replace(graph, ppi_edge_index=train_edges).to(device)
    all_pairs = graph.ppi_edge_index.cpu()
    protein_range = (graph.num_transcripts, graph.num_nodes)
    num_cells, num_train = expression.size(0), train_edges.size(1)
    num_masked = max(1, int(round(mask_ratio * num_train)))

    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    curves = {"loss_curve": [], "edge_loss_curve": [], "degree_loss_curve": []}
    start = time.perf_counter()
    for step in tqdm(range(steps), desc="pretrain", leave=False):
        cells = torch.randperm(num_cells, generator=generator)[:batch_size]
        perm = torch.randperm(num_train, generator=generator)
        positives, visible = train_edges[:, perm[:num_masked]], train_edges[:, perm[num_masked:]]
        negs = _training_negatives(positives, train_edges, all_pairs, graph.num_nodes, protein_range, negatives,
                                   generator)
        out = model(
            expression[cells].to(device),
            train_graph,
            positives.to(device),
            negs.to(device),
            measured_mask=measured_mask[cells].to(device),
            ppi_edge_index=visible.to(device),  # degree targets: training graph, held-out pairs excluded
        )
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        curves["loss_curve"].append(out.loss.item())
        curves["edge_loss_curve"].append(out.edge_loss.item())
        curves["degree_loss_curve"].append(out.degree_loss.item())
        if log_every and (step + 1) % log_every == 0:
            logger.info("pretrain step %d/%d loss %.4f", step + 1, steps, np.mean(curves["loss_curve"][-log_every:]))
    seconds_per_step = (time.perf_counter() - start) / max(steps, 1)

    model.eval()
    eval_cells = torch.randperm(num_cells, generator=generator)[:eval_max_cells]
    embeddings = _mean_node_embeddings(
        model, expression[eval_cells], measured_mask[eval_cells], train_graph, batch_size, device
    )
    evaluation = evaluate_link_prediction(lambda pairs: model.score_edges(embeddings, pairs.to(device)).cpu().numpy(),
                                          train_edges, test_edges, all_pairs, graph.num_nodes, protein_range, seed)
    return {
        **curves,
        "evaluation": evaluation,
        "auroc": evaluation["random"]["auroc"] if evaluation else float("nan"),
        "ap": evaluation["random"]["ap"] if evaluation else float("nan"),
        "train_edges": train_edges,
        "test_edges": test_edges,
        "n_train_edges": int(num_train),
        "n_test_edges": int(test_edges.size(1)),
        "n_cells": int(num_cells),
        "seconds_per_step": seconds_per_step,
    }


@torch.no_grad()
def predict(
    model: CellTOSGForCellClassification,
    expression: Tensor,
    measured_mask: Tensor,
    graph: TOSGGraph,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Logits `[M, num_labels]` (CPU float) for `expression` `[M, Nt]` / `measured_mask` `[M, Nt]`, in eval mode."""
    model.to(device).eval()
    graph = graph.to(device)
    chunks = []
    for i in range(0, expression.size(0), batch_size):
        rows = slice(i, i + batch_size)
        chunks.append(model(expression[rows].to(device), graph, measured_mask=measured_mask[rows].to(device)).logits.cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, model.config.num_labels)


@torch.no_grad()
def recalibrate_batchnorm(model, expression: Tensor, measured_mask: Tensor, graph: TOSGGraph, *,
                          batch_size: int = 16, max_cells: int = 512, device: str = "cpu") -> None:
    """Recompute BatchNorm running statistics with the current weights over (up to ``max_cells``)
    training cells — as ``torch.optim.swa_utils.update_bn`` does, with our model's inputs.

    Running averages collected while the encoder was still changing describe an older model; at
    evaluation they shift the standardised pooled features and predictions collapse to one class.
    Modules use ``momentum=None`` so the statistics are exact averages over the pass.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    n = min(len(expression), max_cells)
    for i in range(0, n, batch_size):
        if n - i < 2:  # BatchNorm needs at least two cells
            break
        model(expression[i : i + batch_size].to(device), graph, measured_mask=measured_mask[i : i + batch_size].to(device))
    model.train(was_training)


def finetune(
    model: CellTOSGForCellClassification,
    expression: Tensor,
    measured_mask: Tensor,
    labels: Tensor,
    graph: TOSGGraph,
    *,
    train_idx,
    val_idx,
    test_idx,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict:
    """Fine-tune a cell classifier; select the epoch on validation macro-F1, then score test once.

    Args:
        model: a [`CellTOSGForCellClassification`] (e.g. from a pretraining checkpoint).
        expression: float32 `[M, Nt]`; measured_mask: bool `[M, Nt]`; labels: LongTensor `[M]`.
        graph: the shared [`TOSGGraph`].
        train_idx, val_idx, test_idx: disjoint row indices (array-like of int) into the `M` cells.
        epochs: passes over `train_idx`; batch_size: cells per step; lr: AdamW learning rate.
        seed: seeds shuffling and dropout.

    Returns:
        dict with `train_loss_curve` (mean loss per epoch), `val_macro_f1_curve`, `best_epoch` (0-based,
        argmax of validation macro-F1) and its `val_macro_f1`, test `accuracy`, `macro_f1`,
        `test_predictions` (numpy int `[len(test_idx)]`) and `test_probabilities` (numpy float
        `[len(test_idx), num_labels]`, softmax) from the best-on-validation weights, which are left
        loaded in `model`.
    """
    train_idx, val_idx, test_idx = (
        torch.as_tensor(np.asarray(i), dtype=torch.long) for i in (train_idx, val_idx, test_idx)
    )
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ValueError("finetune needs non-empty train_idx and val_idx (model selection uses validation only).")
    train_set, val_set, test_set = (set(i.tolist()) for i in (train_idx, val_idx, test_idx))
    overlap = (train_set & (val_set | test_set)) | (val_set & test_set)
    if overlap:
        raise ValueError(f"train/val/test indices overlap on {len(overlap)} cells, e.g. {sorted(overlap)[:5]}.")
    graph.validate()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    graph = graph.to(device)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    train_losses, val_f1s, best_f1, best_state, best_epoch = [], [], -1.0, None, -1
    for epoch in tqdm(range(epochs), desc="finetune", leave=False):
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        losses = []
        starts = list(range(0, len(order), batch_size))
        if len(starts) > 1 and len(order) - starts[-1] == 1:
            starts.pop()  # a lone last cell joins the previous batch (BatchNorm needs >= 2 cells)
        for i, start in enumerate(starts):
            rows = order[start : starts[i + 1] if i + 1 < len(starts) else len(order)]
            out = model(
                expression[rows].to(device),
                graph,
                measured_mask=measured_mask[rows].to(device),
                labels=labels[rows].to(device),
            )
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            losses.append(out.loss.item())
        train_losses.append(float(np.mean(losses)))
        recalib = train_idx[torch.randperm(len(train_idx), generator=generator)]
        recalibrate_batchnorm(model, expression[recalib], measured_mask[recalib], graph, batch_size=batch_size,
                              device=device)
        val_pred = predict(model, expression[val_idx], measured_mask[val_idx], graph, batch_size, device).argmax(-1)
        val_f1 = float(f1_score(labels[val_idx].cpu().numpy(), val_pred.numpy(), average="macro"))
        val_f1s.append(val_f1)
        if val_f1 > best_f1:
            best_f1, best_epoch, best_state = val_f1, epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    test_logits = predict(model, expression[test_idx], measured_mask[test_idx], graph, batch_size, device)
    test_pred, truth = test_logits.argmax(-1).numpy(), labels[test_idx].cpu().numpy()
    return {
        "train_loss_curve": train_losses,
        "val_macro_f1_curve": val_f1s,
        "best_epoch": best_epoch,
        "accuracy": float(accuracy_score(truth, test_pred)) if len(truth) else float("nan"),
        "macro_f1": float(f1_score(truth, test_pred, average="macro")) if len(truth) else float("nan"),
        "val_macro_f1": best_f1,
        "test_predictions": test_pred,
        "test_probabilities": torch.softmax(test_logits, dim=-1).numpy(),
    }


__all__ = ["split_ppi_edges", "sample_negative_edges", "evaluation_negatives", "evaluate_link_prediction", "pretrain", "finetune", "predict", "recalibrate_batchnorm"]
