"""The paper's signaling method (``method="paper"``): a REPRODUCTION of OmniCellTOSG, arXiv 2504.02148 §2.5.

It is not the default: on Kang IFN-β it misses the interferon response (stim-only importance; node
attention ~ 1 / degree favours low-degree genes). The default method is
:mod:`omnicelltosg.tools.evidence_network` (issue 19); ``omnicelltosg signaling`` runs both and
validates them side by side.

Pipeline (ARCHITECTURE.md §7): attention on PPI edges from the fine-tuned model, per cell
([`edge_attention`]) or streamed into per-group means ([`group_edge_attention`], memory independent of
the number of cells) → per-protein expression ([`node_expression`]) → group aggregation, node
importance, Mann–Whitney U with Benjamini–Hochberg FDR, top-k nodes, largest connected component and
star-leaf pruning ([`infer_signaling`]) → tables, GraphML and a network figure ([`write_signaling`]).

Index conventions follow [`TOSGGraph`]: transcripts are entities `0..Nt-1`, proteins `Nt..Nt+Np-1`;
"protein position" means `global index - Nt`. Attention edges follow PyG: `edge_index[0]` → `[1]`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import networkx as nx
import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor

from dataset_script.files import atomic_file
from modeling_celltosg.tosg_graph import TOSGGraph
from omnicelltosg.plotting.signaling import plot_signaling_network

# top_k 200: on the 1,267-gene Kang panel the 40 most important proteins share few STRING edges
# (their largest connected component has 3 proteins); 200 gives a readable core network.
#: Proteins (by case importance) seeding the core subgraph, in every door (function, command, demo).
TOP_K = 200
#: Leaves kept per hub by star-leaf pruning.
MIN_LEAVES = 2
#: Benjamini–Hochberg FDR below which a protein is "significant" (Mann–Whitney U, case vs control).
FDR_THRESHOLD = 0.05

NODE_COLUMNS = [
    "protein_index", "symbol", "attention_case", "attention_control", "mean_expression_case",
    "mean_expression_control", "importance_case", "importance_control", "log2_fold_change",
    "mwu_statistic", "p_value", "fdr", "significant", "in_core_subgraph",
]
EDGE_COLUMNS = [
    "source_symbol", "target_symbol", "source_index", "target_index", "weight_case", "weight_control",
    "weight_delta", "in_core_subgraph",
]


@dataclass
class SignalingResult:
    """Output of [`infer_signaling`].

    Attributes:
        nodes: one row per protein (`Np` rows, columns `NODE_COLUMNS`), sorted by `importance_case`
            (descending, NaN last). `protein_index` is the global entity index.
        edges: one row per undirected PPI pair (`P` rows, columns `EDGE_COLUMNS`), sorted by
            `weight_case` (descending); `source_index < target_index`, global entity indices.
        core: the final (pruned) subgraph; nodes are global protein indices with the node-table
            columns as attributes, edges carry `weight_case`, `weight_control`, `weight_delta`.
        case / control: the two group labels compared.
    """

    nodes: pd.DataFrame
    edges: pd.DataFrame
    core: nx.Graph
    case: object
    control: object


# 1. Per-cell edge attention


def _undirected_mean(edge_index: Tensor, values: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Directed edges `[2, E]` with values `[E, B]` → undirected pairs `[2, P]` (u < v, sorted) and `[P, B]`.

    Self-loops are dropped; repeated copies of one directed edge are summed; each unordered pair is the
    mean over the directions present (one direction only → that value)."""
    keep = edge_index[0] != edge_index[1]
    edge_index, values = edge_index[:, keep], values[keep]
    directed, inverse = torch.unique(edge_index[0] * num_nodes + edge_index[1], return_inverse=True)
    summed = torch.zeros(directed.numel(), values.size(1), dtype=values.dtype).index_add_(0, inverse, values)
    src, dst = directed // num_nodes, directed % num_nodes
    pair_key = torch.minimum(src, dst) * num_nodes + torch.maximum(src, dst)
    pairs, pair_inverse = torch.unique(pair_key, return_inverse=True)
    total = torch.zeros(pairs.numel(), values.size(1), dtype=values.dtype).index_add_(0, pair_inverse, summed)
    count = torch.zeros(pairs.numel(), dtype=values.dtype).index_add_(0, pair_inverse, torch.ones_like(src, dtype=values.dtype))
    return torch.stack([pairs // num_nodes, pairs % num_nodes]), total / count.unsqueeze(1)


def _edge_attention_batches(model, expression, measured_mask, graph: TOSGGraph, batch_size: int
                            ) -> Iterator[tuple[Tensor, Tensor, int]]:
    """Validate the inputs, then yield `(pairs [2, P], weights [b, P] float32, start row)` per batch of
    cells (see [`edge_attention`] for the definition of the weights)."""
    expression = torch.as_tensor(expression, dtype=torch.float32)
    if measured_mask is not None:
        measured_mask = torch.as_tensor(measured_mask, dtype=torch.bool)
        if measured_mask.shape != expression.shape:
            raise ValueError(f"measured_mask shape {tuple(measured_mask.shape)} != expression shape {tuple(expression.shape)}.")
    if expression.dim() != 2 or expression.size(1) != graph.num_transcripts:
        raise ValueError(f"expression must be [M, Nt={graph.num_transcripts}], got {tuple(expression.shape)}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if expression.size(0) == 0:
        raise ValueError("expression has no cells (M = 0).")
    device = next(model.parameters()).device
    graph_dev = graph.to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, expression.size(0), batch_size):
                x = expression[start : start + batch_size].to(device)
                mask = None if measured_mask is None else measured_mask[start : start + batch_size].to(device)
                out = model(x, graph_dev, measured_mask=mask, output_attentions=True)
                if not out.attentions:
                    raise ValueError("The model returned no PPI attentions (num_layers = 0?).")
                summed = torch.stack(out.attentions).sum(dim=(0, 3)).cpu()  # [L, E, B, H] → [E, B]
                batch_pairs, batch_weights = _undirected_mean(out.attention_edge_index.cpu(), summed, graph.num_nodes)
                yield batch_pairs, batch_weights.T.float(), start
    finally:
        model.train(was_training)


def edge_attention(
    model: torch.nn.Module,
    expression: Tensor | np.ndarray,
    measured_mask: Tensor | np.ndarray | None,
    graph: TOSGGraph,
    *,
    batch_size: int = 16,
) -> tuple[Tensor, np.ndarray]:
    """Per-cell attention weight of every undirected PPI pair (paper §2.5, ARCHITECTURE.md §7).

    The model runs in eval mode without gradients (its training flag is restored afterwards). For each
    cell, α is summed over PPI layers and heads per directed edge, self-loops are dropped, and the two
    directions of a pair are averaged (a pair seen in one direction only keeps that value). For a GCN
    model the "attention" is the symmetric normalisation coefficient, identical for all cells. The
    result holds `M × P` floats; for group statistics over many cells use [`group_edge_attention`].

    Args:
        model: a [`CellTOSGForCellClassification`] (or any CellTOSG model whose output has
            `attentions` and `attention_edge_index` with `output_attentions=True`).
        expression: float `[M, Nt]`, `log1p` of counts per 10k; rows are cells.
        measured_mask: bool `[M, Nt]`, False = gene not measured; None = all measured.
        graph: the [`TOSGGraph`] the model was trained on.
        batch_size: cells per forward pass.

    Returns:
        `pairs`: LongTensor `[2, P]`, undirected protein pairs `u < v` in global indices, sorted.
        `weights`: float32 ndarray `[M, P]`, non-negative for GAT/transformer/GCN.

    Raises:
        ValueError: mismatched shapes, no cells, `batch_size < 1`, or a model without PPI attentions.
    """
    pairs, chunks = None, []
    for batch_pairs, batch_weights, _ in _edge_attention_batches(model, expression, measured_mask, graph, batch_size):
        pairs = batch_pairs if pairs is None else pairs
        chunks.append(batch_weights)
    return pairs, torch.cat(chunks).numpy().astype(np.float32)


def group_edge_attention(
    model: torch.nn.Module,
    expression: Tensor | np.ndarray,
    measured_mask: Tensor | np.ndarray | None,
    graph: TOSGGraph,
    groups: Sequence | np.ndarray,
    *,
    batch_size: int = 16,
) -> tuple[Tensor, dict, dict]:
    """Mean attention weight of every undirected PPI pair per group of cells, streamed.

    The same weights as [`edge_attention`] (same model pass, same definition), summed per group batch by
    batch in float64, so memory is `O(G × P)` however many cells there are (the per-cell `[M, P]`
    matrix is never held). Pass the result to [`infer_signaling`] as its `weights`.

    Args:
        model, expression, measured_mask, graph, batch_size: as [`edge_attention`].
        groups: `[M]` group label of each cell (e.g. disease status).

    Returns:
        `pairs`: LongTensor `[2, P]` as [`edge_attention`]; `means`: {group label: float64 ndarray
        `[P]`, the mean weight over that group's cells}; `counts`: {group label: number of cells}.

    Raises:
        ValueError: `groups` without one label per cell, or any error of [`edge_attention`].
    """
    groups = np.asarray(groups)
    n_cells = len(expression)
    if groups.shape != (n_cells,):
        raise ValueError(f"groups must have one label per cell (M={n_cells}), got shape {groups.shape}.")
    labels, codes = np.unique(groups, return_inverse=True)
    pairs, sums = None, None
    for batch_pairs, batch_weights, start in _edge_attention_batches(model, expression, measured_mask, graph,
                                                                     batch_size):
        if sums is None:
            pairs, sums = batch_pairs, torch.zeros(len(labels), batch_pairs.size(1), dtype=torch.float64)
        batch_codes = torch.as_tensor(codes[start : start + len(batch_weights)], dtype=torch.long)
        sums.index_add_(0, batch_codes, batch_weights.double())
    counts = np.bincount(codes, minlength=len(labels))
    means = {label: (sums[i] / counts[i]).numpy() for i, label in enumerate(labels.tolist())}  # Python keys
    return pairs, means, {label: int(c) for label, c in zip(means, counts)}


# 2. Per-protein expression


def node_expression(expression_norm: np.ndarray, graph: TOSGGraph) -> np.ndarray:
    """Expression of each protein, taken from its transcript through the internal edges.

    Where several transcripts map to one protein, the one with the highest mean min–max-normalised
    expression across cells is used (ties → the lowest transcript index). Proteins without a
    transcript get NaN.

    Args:
        expression_norm: float `[M, Nt]` normalised (`log1p`) expression; rows are cells.
        graph: the [`TOSGGraph`].

    Returns:
        float64 ndarray `[M, Np]`, column `j` = protein at global index `Nt + j`.
    """
    x = np.asarray(expression_norm, dtype=np.float64)
    nt, npr = graph.num_transcripts, graph.num_proteins
    if x.ndim != 2 or x.shape[1] != nt:
        raise ValueError(f"expression_norm must be [M, Nt={nt}], got {x.shape}.")
    span = x.max(axis=0) - x.min(axis=0) if len(x) else np.zeros(nt)
    scaled_mean = np.where(span > 0, (x.mean(axis=0) - x.min(axis=0)) / np.where(span > 0, span, 1.0), 0.0) if len(x) else span
    best = np.full(npr, -1, dtype=np.int64)
    best_score = np.full(npr, -np.inf)
    for t, p in sorted(graph.internal_edge_index.T.tolist()):
        j = p - nt
        if scaled_mean[t] > best_score[j]:
            best[j], best_score[j] = t, scaled_mean[t]
    out = np.full((x.shape[0], npr), np.nan)
    has = best >= 0
    out[:, has] = x[:, best[has]]
    return out


# 3. Statistics, top-k subgraph, pruning


def _prune_star_leaves(graph: nx.Graph, min_leaves: int) -> nx.Graph:
    """One pass: every hub (degree >= 2) keeps at most `min_leaves` of its degree-1 neighbours, preferring
    `significant` leaves (node attribute), then the heaviest `weight_case` edge, then the lowest index."""
    drop = set()
    for hub in (n for n in graph.nodes if graph.degree[n] >= 2):
        leaves = [n for n in graph.neighbors(hub) if graph.degree[n] == 1]
        leaves.sort(key=lambda n: (not graph.nodes[n]["significant"], -graph[hub][n]["weight_case"], n))
        drop.update(leaves[min_leaves:])
    return graph.subgraph(set(graph.nodes) - drop).copy()


def _mann_whitney(case: np.ndarray, control: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided `scipy.stats.mannwhitneyu` per column of `[n_case, Np]` vs `[n_control, Np]`.

    One call per protein, because a vectorised call picks the exact/asymptotic method once for all
    columns (ties anywhere force the asymptotic one). Columns with NaN (no transcript) give NaN."""
    statistic, p_value = np.full(case.shape[1], np.nan), np.full(case.shape[1], np.nan)
    for j in range(case.shape[1]):
        a, b = case[:, j], control[:, j]
        if np.isnan(a).any() or np.isnan(b).any():
            continue
        res = stats.mannwhitneyu(a, b, alternative="two-sided")
        statistic[j], p_value[j] = res.statistic, res.pvalue
    return statistic, p_value


def _log2_fold_change(mean_case: np.ndarray, mean_control: np.ndarray) -> np.ndarray:
    """scanpy `rank_genes_groups` convention on `log1p` data: log2((expm1(μ_case)+ε)/(expm1(μ_ctrl)+ε))."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log2((np.expm1(mean_case) + 1e-9) / (np.expm1(mean_control) + 1e-9))


def _check_inputs(weights, pairs, protein_expression, groups, *, case, control, symbols, num_transcripts: int,
                  top_k: int, min_leaves: int) -> tuple[Mapping | np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate the arguments of [`infer_signaling`]; returns `weights` (group means as given, or a
    float64 `[M, P]` array), `pairs` int64 `[2, P]`, `protein_expression` float64 `[M, Np]`, `groups` `[M]`."""
    group_means = weights if isinstance(weights, Mapping) else None
    weights = group_means if group_means is not None else np.asarray(weights, dtype=np.float64)
    pairs = np.asarray(pairs.cpu() if isinstance(pairs, Tensor) else pairs, dtype=np.int64)
    expr = np.asarray(protein_expression, dtype=np.float64)
    groups = np.asarray(groups)
    m, npr = expr.shape if expr.ndim == 2 else (None, None)
    if expr.ndim != 2 or len(symbols) != npr:
        raise ValueError(f"protein_expression must be [M, Np] with Np = len(symbols) = {len(symbols)}, got {expr.shape}.")
    if group_means is not None:
        missing = [label for label in (case, control) if label not in group_means]
        if missing:
            raise ValueError(f"weights (group means) lack {missing}; they hold groups {sorted(group_means, key=str)}.")
        shapes = {label: np.shape(group_means[label]) for label in (case, control)}
        if pairs.ndim != 2 or pairs.shape[0] != 2 or any(sh != (pairs.shape[1],) for sh in shapes.values()):
            raise ValueError(f"group mean weights must be [P] with pairs [2, P]; got {shapes}, pairs {pairs.shape}.")
    elif pairs.ndim != 2 or pairs.shape[0] != 2 or weights.shape != (m, pairs.shape[1]):
        raise ValueError(f"weights must be [M={m}, P] and pairs [2, P]; got weights {weights.shape}, pairs {pairs.shape}.")
    if groups.shape != (m,):
        raise ValueError(f"groups must have one label per cell (M={m}), got shape {groups.shape}.")
    if pairs.size and (pairs.min() < num_transcripts or pairs.max() >= num_transcripts + npr):
        raise ValueError(f"pairs must be protein indices in [{num_transcripts}, {num_transcripts + npr}).")
    available = sorted(pd.unique(groups).tolist(), key=str)
    for name, label in (("case", case), ("control", control)):
        if label not in available:
            raise ValueError(f"{name}={label!r} is not a group in `groups`; available groups: {available}.")
    if case == control:
        raise ValueError(f"case and control must differ, both are {case!r}.")
    if top_k < 1 or min_leaves < 0:
        raise ValueError(f"top_k must be >= 1 and min_leaves >= 0, got {top_k} and {min_leaves}.")
    return weights, pairs, expr, groups


def _node_table(edge_case: np.ndarray, edge_control: np.ndarray, local: np.ndarray, expr_case: np.ndarray,
                expr_control: np.ndarray, symbols: Sequence[str], num_transcripts: int,
                fdr_threshold: float) -> pd.DataFrame:
    """One row per protein (columns `NODE_COLUMNS`, protein order): node attention = mean weight of the
    incident pairs (`local` = pairs as protein positions `[2, P]`), group mean expression, importance,
    log2 fold change, Mann–Whitney U and BH FDR; `in_core_subgraph` all False."""
    npr = len(symbols)
    degree = np.bincount(local.ravel(), minlength=npr).astype(np.float64)

    def node_attention(edge_w):
        total = np.bincount(local.ravel(), weights=np.concatenate([edge_w, edge_w]), minlength=npr)
        return np.divide(total, degree, out=np.zeros(npr), where=degree > 0)

    att_case, att_control = node_attention(edge_case), node_attention(edge_control)
    with warnings.catch_warnings():  # all-NaN columns (proteins without a transcript) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_case, mean_control = np.nanmean(expr_case, 0), np.nanmean(expr_control, 0)
    statistic, p_value = _mann_whitney(expr_case, expr_control)
    fdr = np.full(npr, np.nan)
    finite = np.isfinite(p_value)
    if finite.any():
        fdr[finite] = stats.false_discovery_control(p_value[finite], method="bh")
    return pd.DataFrame({
        "protein_index": np.arange(npr) + num_transcripts,
        "symbol": [str(s) for s in symbols],
        "attention_case": att_case, "attention_control": att_control,
        "mean_expression_case": mean_case, "mean_expression_control": mean_control,
        "importance_case": att_case * mean_case, "importance_control": att_control * mean_control,
        "log2_fold_change": _log2_fold_change(mean_case, mean_control),
        "mwu_statistic": statistic, "p_value": p_value, "fdr": fdr,
        "significant": np.nan_to_num(fdr, nan=np.inf) < fdr_threshold,
        "in_core_subgraph": False,
    })


def _core_subgraph(nodes: pd.DataFrame, pairs: np.ndarray, edge_case: np.ndarray, edge_control: np.ndarray,
                   num_transcripts: int, top_k: int, min_leaves: int) -> nx.Graph:
    """`top_k` proteins by case importance (NaN last, ties → lower index) → induced PPI subgraph → largest
    connected component (ties: larger total importance, then lower index) with the node-table columns
    as attributes → star-leaf pruning."""
    importance = nodes["importance_case"].to_numpy()
    order = np.lexsort((np.arange(len(nodes)), -np.nan_to_num(importance, nan=-np.inf)))
    top = set((order[:top_k] + num_transcripts).tolist())
    sub = nx.Graph()
    sub.add_nodes_from(sorted(top))
    for e, (u, v) in enumerate(pairs.T.tolist()):
        if u in top and v in top:
            sub.add_edge(u, v, weight_case=float(edge_case[e]), weight_control=float(edge_control[e]),
                         weight_delta=float(edge_case[e] - edge_control[e]))
    imp = lambda n: float(np.nan_to_num(importance[n - num_transcripts], nan=0.0))  # noqa: E731
    components = sorted(nx.connected_components(sub), key=lambda c: (-len(c), -sum(map(imp, c)), min(c)))
    lcc = sub.subgraph(components[0]).copy()
    for n in lcc.nodes:  # node-table columns as attributes (plain Python types, for GraphML)
        row = nodes.iloc[n - num_transcripts]
        lcc.nodes[n].update({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k != "protein_index"})
    return _prune_star_leaves(lcc, min_leaves)


def infer_signaling(
    weights: np.ndarray | Mapping,
    pairs: Tensor | np.ndarray,
    protein_expression: np.ndarray,
    groups: Sequence | np.ndarray,
    *,
    case,
    control,
    symbols: Sequence[str],
    num_transcripts: int,
    top_k: int = TOP_K,
    min_leaves: int = MIN_LEAVES,
    fdr_threshold: float = FDR_THRESHOLD,
) -> SignalingResult:
    """Core signaling subgraph of `case` vs `control` cells (paper §2.5, ARCHITECTURE.md §7).

    Steps: per-group mean edge weight; node attention = mean of its incident edge weights (0 for a
    protein without PPI edges); group mean expression; importance = attention × group mean
    expression; two-sided Mann–Whitney U (`scipy.stats.mannwhitneyu`) case vs control per protein,
    Benjamini–Hochberg FDR (`scipy.stats.false_discovery_control`) over the finite p-values;
    `top_k` proteins by case importance → induced PPI subgraph → largest connected component (ties:
    larger total importance) → star-leaf pruning (each hub keeps `min_leaves` leaves, significant
    first, then heaviest case edge).

    Args:
        weights: float `[M, P]` per-cell pair weights from [`edge_attention`], or the per-group mean
            weights `{label: [P]}` from [`group_edge_attention`] (must hold `case` and `control`).
        pairs: `[2, P]` undirected protein pairs (global indices).
        protein_expression: float `[M, Np]` from [`node_expression`] (NaN = no transcript).
        groups: `[M]` group label of each cell (e.g. disease status).
        case / control: the two labels of `groups` to compare.
        symbols: `Np` gene symbols, indexed by protein position (global index − `num_transcripts`).
        num_transcripts: `Nt`.
        top_k: number of proteins (by case importance) seeding the subgraph (default [`TOP_K`]).
        min_leaves: leaves kept per hub by the pruning (default [`MIN_LEAVES`]).
        fdr_threshold: `significant = fdr < fdr_threshold` (default [`FDR_THRESHOLD`]).

    Raises:
        ValueError: shapes that do not match (named), `case` / `control` not in `groups` (lists the
            groups), `case == control`, `top_k < 1` or `min_leaves < 0`.
    """
    weights, pairs, expr, groups = _check_inputs(weights, pairs, protein_expression, groups, case=case,
                                                 control=control, symbols=symbols, num_transcripts=num_transcripts,
                                                 top_k=top_k, min_leaves=min_leaves)
    in_case, in_control = groups == case, groups == control
    local = pairs - num_transcripts
    if isinstance(weights, Mapping):
        edge_case = np.asarray(weights[case], dtype=np.float64)
        edge_control = np.asarray(weights[control], dtype=np.float64)
    else:
        edge_case, edge_control = weights[in_case].mean(0), weights[in_control].mean(0)
    nodes = _node_table(edge_case, edge_control, local, expr[in_case], expr[in_control], symbols, num_transcripts,
                        fdr_threshold)
    edges = pd.DataFrame({
        "source_symbol": nodes["symbol"].to_numpy()[local[0]], "target_symbol": nodes["symbol"].to_numpy()[local[1]],
        "source_index": pairs[0], "target_index": pairs[1],
        "weight_case": edge_case, "weight_control": edge_control, "weight_delta": edge_case - edge_control,
        "in_core_subgraph": False,
    })
    core = _core_subgraph(nodes, pairs, edge_case, edge_control, num_transcripts, top_k, min_leaves)
    nodes["in_core_subgraph"] = nodes["protein_index"].isin(list(core.nodes))
    edges["in_core_subgraph"] = [core.has_edge(u, v) for u, v in pairs.T.tolist()]
    for n in core.nodes:
        core.nodes[n]["in_core_subgraph"] = True
    nodes = nodes.sort_values(["importance_case", "protein_index"], ascending=[False, True], na_position="last")
    edges = edges.sort_values(["weight_case", "source_index", "target_index"], ascending=[False, True, True])
    return SignalingResult(nodes.reset_index(drop=True), edges.reset_index(drop=True), core, case, control)


# 4. Outputs


def write_signaling(result: SignalingResult, out_dir: str | os.PathLike, *, title: str) -> dict[str, Path]:
    """Write `signaling_nodes.csv`, `signaling_edges.csv` (all rows, ranked), `signaling_core.graphml`
    and `signaling_network.png` ([`omnicelltosg.plotting.signaling.plot_signaling_network`]) into
    `out_dir` (created if needed). Each file is written atomically (`dataset_script.files`), so a
    reader never sees a partial file.

    Returns: `{"nodes", "edges", "graphml", "figure"}` → path.
    """
    out_dir = Path(out_dir)
    paths = {
        "nodes": out_dir / "signaling_nodes.csv",
        "edges": out_dir / "signaling_edges.csv",
        "graphml": out_dir / "signaling_core.graphml",
        "figure": out_dir / "signaling_network.png",
    }
    with atomic_file(paths["nodes"]) as tmp:
        result.nodes[NODE_COLUMNS].to_csv(tmp, index=False)
    with atomic_file(paths["edges"]) as tmp:
        result.edges[EDGE_COLUMNS].to_csv(tmp, index=False)
    core = result.core.copy()
    core.graph["method"] = "paper (REPRODUCTION of arXiv 2504.02148 section 2.5; not the default method)"
    with atomic_file(paths["graphml"]) as tmp:
        nx.write_graphml(core, tmp)
    plot_signaling_network(result, paths["figure"], title=title)
    return paths


__all__ = [
    "SignalingResult",
    "edge_attention",
    "group_edge_attention",
    "node_expression",
    "infer_signaling",
    "write_signaling",
    "NODE_COLUMNS",
    "EDGE_COLUMNS",
    "TOP_K",
    "MIN_LEAVES",
    "FDR_THRESHOLD",
]
