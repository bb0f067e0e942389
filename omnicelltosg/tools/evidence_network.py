"""The default signaling method (issue 19): case-vs-control evidence per gene, optionally combined with
the classifier's attributions, then a prize-collecting Steiner tree and a random walk with restart over
the PPI graph, each against a degree-preserving rewired null.

Steps of [`infer_evidence_network`]:

1. score per gene ``s = z_evidence`` (the signed statistic of :mod:`omnicelltosg.tools.differential`),
   or, with model attributions, the unweighted Stouffer combination
   ``s = (z_evidence + z_attribution) / √2`` (equal weights, fixed a priori);
2. direction: ``up`` ranks by ``s`` (higher in case first, the default: what the condition switches
   on), ``down`` by ``−s``, ``both`` by ``|s|``;
3. terminals: the :data:`NETWORK_TERMINALS` best genes in that direction with evidence
   FDR < :data:`EVIDENCE_FDR`; prize = directional score / the largest one (in (0, 1]); every other
   gene has prize 0;
4. the tree ([`omnicelltosg.tools.network.prize_collecting_steiner_tree`]) with the costs of
   [`omnicelltosg.tools.network.edge_costs`]; the walk restarts at the prizes;
5. the rewired null gives per-node and per-edge empirical p-values of the tree and per-node p-values
   of the walk.

No parameter here was chosen on the GO labels the validation uses: the terminal count is the size of a
readable figure, the cost scale is set by the prize scale, the hub penalty is Omics Integrator 2's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import networkx as nx
import numpy as np
import pandas as pd

from omnicelltosg.tools import network as net

DIRECTIONS = ("up", "down", "both")
#: Default direction: genes higher in the case (what a stimulus or a disease state switches on).
DIRECTION = "up"
#: Genes given a prize (the best in the chosen direction with evidence FDR below EVIDENCE_FDR).
NETWORK_TERMINALS = 50
#: Evidence FDR below which a gene may be a terminal.
EVIDENCE_FDR = 0.05

NODE_COLUMNS = ["symbol", "score", "rank", "log2_fold_change", "statistic", "p_value", "fdr", "attribution_z",
                "attribution_p", "degree", "prize", "terminal", "in_network", "p_tree", "null_frequency",
                "rwr", "p_rwr"]
EDGE_COLUMNS = ["source", "target", "confidence", "cost", "p_tree", "occlusion_contrast"]


@dataclass
class PPINetwork:
    """An undirected PPI graph over gene symbols (one protein per symbol).

    Attributes:
        symbols: ``N`` gene symbols (node positions ``0..N-1``).
        edges: int64 ``[E, 2]`` node positions, ``u < v``, unique, no self-loops.
        confidence: float64 ``[E]`` in [0, 1] (1 where unknown).
    """

    symbols: np.ndarray
    edges: np.ndarray
    confidence: np.ndarray
    _null: list | None = field(default=None, repr=False)

    @classmethod
    def from_pairs(cls, symbols: Sequence[str], pairs: Sequence[tuple[str, str]],
                   confidence: Sequence[float] | None = None) -> PPINetwork:
        """Build from symbol pairs (pairs with an unknown symbol, self-pairs and repeats dropped; the
        first confidence of a repeated pair is kept)."""
        symbols = np.asarray([str(s) for s in symbols])
        pos = {s: i for i, s in enumerate(symbols)}
        conf = np.ones(len(pairs)) if confidence is None else np.asarray(confidence, dtype=np.float64)
        seen, rows, kept = set(), [], []
        for k, (a, b) in enumerate(pairs):
            i, j = pos.get(str(a)), pos.get(str(b))
            if i is None or j is None or i == j or (min(i, j), max(i, j)) in seen:
                continue
            seen.add((min(i, j), max(i, j)))
            rows.append((min(i, j), max(i, j)))
            kept.append(conf[k])
        edges = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
        return cls(symbols, edges, np.clip(np.asarray(kept, dtype=np.float64), 0, 1))

    def null_edges(self, n_networks: int, seed: int = 0) -> list[np.ndarray]:
        """The rewired networks of the null, made once and reused by every analysis on this graph."""
        if self._null is None or len(self._null) != n_networks:
            self._null = net.rewired_networks(self.edges, len(self.symbols), n_networks=n_networks, seed=seed)
        return self._null


@dataclass
class EvidenceNetworkResult:
    """Output of [`infer_evidence_network`].

    Attributes:
        nodes: one row per gene of the PPI graph (``NODE_COLUMNS``), sorted by ``rank`` (1 = best).
        edges: one row per network edge (``EDGE_COLUMNS``).
        network: the tree (nodes are symbols with the node columns as attributes; edges carry
            ``confidence``, ``cost``, ``p_tree``, ``occlusion_contrast``).
        case / control / direction: what was compared; uses_attribution: whether ``score`` includes them.
    """

    nodes: pd.DataFrame
    edges: pd.DataFrame
    network: nx.Graph
    case: object
    control: object
    direction: str
    uses_attribution: bool


def combine_scores(evidence_z: np.ndarray, attribution_z: np.ndarray | None = None) -> np.ndarray:
    """``z_evidence`` alone, or ``(z_evidence + z_attribution) / √2`` (unweighted Stouffer); NaN counts as 0."""
    e = np.nan_to_num(np.asarray(evidence_z, dtype=np.float64), nan=0.0)
    if attribution_z is None:
        return e
    return (e + np.nan_to_num(np.asarray(attribution_z, dtype=np.float64), nan=0.0)) / np.sqrt(2.0)


def directional(score: np.ndarray, direction: str) -> np.ndarray:
    """The score the ranking sorts by: ``score`` (up), ``−score`` (down) or ``|score|`` (both)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
    return {"up": score, "down": -score, "both": np.abs(score)}[direction]


def _prizes(ranked: np.ndarray, fdr: np.ndarray, n_terminals: int, fdr_threshold: float) -> np.ndarray:
    eligible = np.flatnonzero((np.nan_to_num(fdr, nan=1.0) < fdr_threshold) & (ranked > 0))
    best = eligible[np.lexsort((eligible, -ranked[eligible]))][:n_terminals]
    prizes = np.zeros(len(ranked))
    if len(best):
        prizes[best] = ranked[best] / ranked[best].max()
    return prizes


def _network_graph(nodes: pd.DataFrame, edges: pd.DataFrame) -> nx.Graph:
    g = nx.Graph()
    for _, row in nodes[nodes["in_network"]].iterrows():
        g.add_node(row["symbol"], **{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k != "symbol"})
    for _, row in edges.iterrows():
        g.add_edge(row["source"], row["target"], **{k: float(row[k]) for k in EDGE_COLUMNS[2:]})
    return g


# One function: the method's steps in order (score → prizes → tree → walk → null → tables) read as one recipe.
def infer_evidence_network(evidence: pd.DataFrame, ppi: PPINetwork, *, case, control,
                           attribution: pd.DataFrame | None = None, direction: str = DIRECTION,
                           n_terminals: int = NETWORK_TERMINALS, fdr_threshold: float = EVIDENCE_FDR,
                           n_null: int = net.NULL_NETWORKS, seed: int = 0) -> EvidenceNetworkResult:
    """Signaling network of ``case`` vs ``control`` from per-gene evidence (see the module docstring).

    Args:
        evidence: per-gene table with ``symbol``, ``log2_fold_change``, ``statistic`` (signed z-like,
            > 0 = higher in case), ``p_value``, ``fdr`` (from :mod:`omnicelltosg.tools.differential`).
        ppi: the PPI graph; genes of ``ppi`` absent from ``evidence`` get no score (rank last).
        attribution: optional per-gene ``symbol``, ``z`` (degree-corrected attribution z, > 0 = pushes
            towards case), ``p_value``; None = evidence only.
        direction: ``up`` / ``down`` / ``both``; n_terminals, fdr_threshold: terminal selection.
        n_null: rewired networks of the null (0 = no null; p-values NaN).

    Returns: an [`EvidenceNetworkResult`].

    Raises:
        ValueError: a missing evidence column, an unknown direction, ``n_terminals < 1``.
    """
    missing = [c for c in ("symbol", "log2_fold_change", "statistic", "p_value", "fdr") if c not in evidence]
    if missing:
        raise ValueError(f"evidence lacks columns {missing}; it has {list(evidence.columns)}.")
    if n_terminals < 1:
        raise ValueError(f"n_terminals must be >= 1, got {n_terminals}.")
    ev = evidence.drop_duplicates("symbol").set_index("symbol").reindex(ppi.symbols)
    nodes = pd.DataFrame({"symbol": ppi.symbols})
    for col in ("log2_fold_change", "statistic", "p_value", "fdr"):
        nodes[col] = ev[col].to_numpy(dtype=np.float64)
    att = None
    if attribution is not None:
        a = attribution.drop_duplicates("symbol").set_index("symbol").reindex(ppi.symbols)
        nodes["attribution_z"], nodes["attribution_p"] = a["z"].to_numpy(float), a["p_value"].to_numpy(float)
        att = nodes["attribution_z"].to_numpy()
    else:
        nodes["attribution_z"], nodes["attribution_p"] = np.nan, np.nan
    score = combine_scores(nodes["statistic"].to_numpy(), att)
    score[~np.isfinite(nodes["statistic"].to_numpy())] = np.nan  # not measured: no score
    nodes["score"] = score
    ranked = np.nan_to_num(directional(score, direction), nan=-np.inf)
    order = np.lexsort((ppi.symbols, -ranked))
    nodes["rank"] = np.empty(len(nodes), dtype=np.int64)
    nodes.loc[order, "rank"] = np.arange(1, len(nodes) + 1)
    num = len(ppi.symbols)
    nodes["degree"] = net.degrees(ppi.edges, num)
    prizes = _prizes(np.where(np.isfinite(ranked), ranked, 0.0), nodes["fdr"].to_numpy(), n_terminals, fdr_threshold)
    nodes["prize"], nodes["terminal"] = prizes, prizes > 0
    costs = net.edge_costs(ppi.edges, num, confidence=ppi.confidence)
    tree_nodes, tree_rows = net.prize_collecting_steiner_tree(ppi.edges, prizes, costs)
    nodes["in_network"] = np.isin(np.arange(num), tree_nodes)
    rwr = net.random_walk_with_restart(ppi.edges, num, prizes) if prizes.any() else np.full(num, np.nan)
    nodes["rwr"] = rwr
    nodes["p_tree"], nodes["null_frequency"], nodes["p_rwr"] = np.nan, np.nan, np.nan
    edge_p = np.full(len(tree_rows), np.nan)
    if n_null > 0 and prizes.any():
        null = net.network_null(ppi.edges, prizes, costs, tree_nodes, tree_rows, rwr,
                                null_edges=ppi.null_edges(n_null, seed), seed=seed)
        nodes["p_tree"], nodes["null_frequency"], nodes["p_rwr"] = (null["node_p_tree"], null["node_null_frequency"],
                                                                    null["node_p_rwr"])
        edge_p = null["edge_p_tree"]
    pairs = ppi.edges[tree_rows]
    edges = pd.DataFrame({"source": ppi.symbols[pairs[:, 0]], "target": ppi.symbols[pairs[:, 1]],
                          "confidence": ppi.confidence[tree_rows], "cost": costs[tree_rows], "p_tree": edge_p,
                          "occlusion_contrast": np.nan})
    nodes = nodes[NODE_COLUMNS].sort_values("rank").reset_index(drop=True)
    return EvidenceNetworkResult(nodes, edges, _network_graph(nodes, edges), case, control, direction,
                                 attribution is not None)


__all__ = ["PPINetwork", "EvidenceNetworkResult", "infer_evidence_network", "combine_scores", "directional",
           "DIRECTIONS", "DIRECTION", "NETWORK_TERMINALS", "EVIDENCE_FDR", "NODE_COLUMNS", "EDGE_COLUMNS"]
