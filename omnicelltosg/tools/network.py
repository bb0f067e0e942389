"""Network methods of signaling inference (issue 19): prize-collecting Steiner tree, random walk with
restart, and a degree-preserving rewired-network null, on an undirected PPI graph.

Graphs are given as ``edges`` int64 ``[E, 2]`` (node positions ``0..N-1``, one row per unordered pair,
no self-loops) with per-edge values aligned to the rows.

- [`prize_collecting_steiner_tree`]: ``pcst_fast`` (Hegde, Indyk & Schmidt 2015; the Goemans–Williamson
  scheme) on node prizes and edge costs, one tree (no root, one cluster, strong pruning) — the
  formulation of Omics Integrator / PCSF (Tuncbag et al. 2016).
- [`edge_costs`]: ``base + (1 − confidence) + γ · hub penalty``, the hub penalty of Omics Integrator 2
  (``d_u d_v / ((N − d_u − 1)(N − d_v − 1) + d_u d_v)``, γ = 20 as its default), so that a tree does
  not route through hubs for free.
- [`random_walk_with_restart`]: stationary distribution of a walk that restarts at the prize nodes
  (column-normalised adjacency, power iteration; network propagation as in Köhler et al. 2008).
- [`rewired_networks`] / [`network_null`]: degree-preserving rewiring (igraph's ``Graph.rewire``,
  Maslov & Sneppen 2002), and per-node / per-edge empirical p-values of the tree and the walk against
  it, so that hubs do not win by degree alone.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import scipy.sparse as sp

#: Cost of every interaction before confidence and hub penalty, in units of the largest node prize (1):
#: a terminal is joined through one intermediate protein (two edges) only when its prize is at least
#: half the largest prize. Chosen a priori from the prize scale, not on any validation label.
BASE_EDGE_COST = 0.25
#: Omics Integrator 2's default multiplicative hub penalty γ.
HUB_PENALTY = 20.0
#: Restart probability of the random walk (the walk's mean length is 1 / restart − 1 steps).
RESTART = 0.5
#: Rewired networks in the degree-preserving null, and double-edge swaps per edge in each.
NULL_NETWORKS = 20
SWAPS_PER_EDGE = 5


def _check_edges(edges: np.ndarray, num_nodes: int, values: dict[str, np.ndarray] | None = None) -> np.ndarray:
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2) if np.size(edges) else np.zeros((0, 2), np.int64)
    if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
        raise ValueError(f"edges must index nodes in [0, {num_nodes}), got [{edges.min()}, {edges.max()}].")
    if edges.size and (edges[:, 0] == edges[:, 1]).any():
        raise ValueError("edges must not contain self-loops.")
    for name, v in (values or {}).items():
        if np.shape(v) != (len(edges),):
            raise ValueError(f"{name} must have one value per edge ({len(edges)}), got shape {np.shape(v)}.")
    return edges


def degrees(edges: np.ndarray, num_nodes: int) -> np.ndarray:
    """Degree of every node (int64 ``[N]``) of an undirected edge list ``[E, 2]``."""
    return np.bincount(np.asarray(edges, dtype=np.int64).ravel(), minlength=num_nodes)


def edge_costs(edges: np.ndarray, num_nodes: int, *, confidence: np.ndarray | None = None,
               base: float = BASE_EDGE_COST, hub_penalty: float = HUB_PENALTY) -> np.ndarray:
    """Cost of each edge: ``base + (1 − confidence) + hub_penalty · d_u d_v / ((N − d_u − 1)(N − d_v − 1) + d_u d_v)``.

    Args:
        edges: int ``[E, 2]``; num_nodes: ``N``; confidence: float ``[E]`` in [0, 1] (e.g. the STRING
            combined score / 1000), None = 1 for every edge.

    Returns: float64 ``[E]``, all > 0 when ``base`` > 0.

    Raises:
        ValueError: bad edges, ``confidence`` outside [0, 1], or negative ``base`` / ``hub_penalty``.
    """
    edges = _check_edges(edges, num_nodes, None if confidence is None else {"confidence": confidence})
    if base < 0 or hub_penalty < 0:
        raise ValueError(f"base and hub_penalty must be >= 0, got {base} and {hub_penalty}.")
    conf = np.ones(len(edges)) if confidence is None else np.asarray(confidence, dtype=np.float64)
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise ValueError(f"confidence must lie in [0, 1], got [{conf.min()}, {conf.max()}].")
    d = degrees(edges, num_nodes).astype(np.float64)
    du, dv = d[edges[:, 0]], d[edges[:, 1]]
    hub = du * dv / ((num_nodes - du - 1) * (num_nodes - dv - 1) + du * dv)
    return base + (1.0 - conf) + hub_penalty * hub


def prize_collecting_steiner_tree(edges: np.ndarray, prizes: np.ndarray, costs: np.ndarray, *,
                                  pruning: str = "strong") -> tuple[np.ndarray, np.ndarray]:
    """One prize-collecting Steiner tree (``pcst_fast``; unrooted, one cluster).

    Maximises, approximately (Goemans–Williamson), the prizes of the nodes kept minus the costs of the
    edges kept, over connected subtrees.

    Args:
        edges: int ``[E, 2]`` node positions; prizes: float ``[N]`` >= 0; costs: float ``[E]`` > 0.
        pruning: ``pcst_fast``'s pruning (``"strong"``, ``"gw"``, ``"simple"`` or ``"none"``).

    Returns: ``nodes`` (int64 positions, sorted) and ``edge_rows`` (int64 rows of ``edges``, sorted).
    With no positive prize the tree is empty.

    Raises:
        ValueError: negative prizes, non-positive costs, or shapes that do not match.
    """
    import pcst_fast

    prizes = np.asarray(prizes, dtype=np.float64)
    edges = _check_edges(edges, len(prizes), {"costs": costs})
    costs = np.asarray(costs, dtype=np.float64)
    if prizes.size and prizes.min() < 0:
        raise ValueError("prizes must be >= 0.")
    if costs.size and costs.min() <= 0:
        raise ValueError("costs must be > 0.")
    if not (prizes > 0).any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nodes, rows = pcst_fast.pcst_fast(edges, prizes, costs, -1, 1, pruning, 0)
    return np.sort(np.asarray(nodes, dtype=np.int64)), np.sort(np.asarray(rows, dtype=np.int64))


def random_walk_with_restart(edges: np.ndarray, num_nodes: int, restart_vector: np.ndarray, *,
                             restart: float = RESTART, tol: float = 1e-10, max_iter: int = 1000) -> np.ndarray:
    """Stationary probabilities ``p = (1 − r) W p + r p0`` of a random walk with restart.

    ``W`` is the column-normalised adjacency (an isolated node keeps its mass: its column is a
    self-loop), ``p0 = restart_vector / sum``.

    Args:
        edges: int ``[E, 2]``; num_nodes: ``N``; restart_vector: float ``[N]`` >= 0 with a positive sum.
        restart: ``r`` in (0, 1].

    Returns: float64 ``[N]``, summing to 1.

    Raises:
        ValueError: a negative or all-zero restart vector, ``r`` outside (0, 1].
    """
    edges = _check_edges(edges, num_nodes)
    p0 = np.asarray(restart_vector, dtype=np.float64)
    if p0.shape != (num_nodes,) or p0.min() < 0 or p0.sum() <= 0:
        raise ValueError(f"restart_vector must be [N={num_nodes}] >= 0 with a positive sum.")
    if not 0 < restart <= 1:
        raise ValueError(f"restart must lie in (0, 1], got {restart}.")
    p0 = p0 / p0.sum()
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    d = degrees(edges, num_nodes)
    isolated = np.flatnonzero(d == 0)
    rows, cols = np.concatenate([rows, isolated]), np.concatenate([cols, isolated])
    w = sp.csr_matrix((1.0 / np.maximum(d, 1)[cols], (rows, cols)), shape=(num_nodes, num_nodes))
    p = p0.copy()
    for _ in range(max_iter):
        nxt = (1 - restart) * (w @ p) + restart * p0
        if np.abs(nxt - p).sum() < tol:
            return nxt
        p = nxt
    return p


def rewired_networks(edges: np.ndarray, num_nodes: int, *, n_networks: int = NULL_NETWORKS,
                     swaps_per_edge: float = SWAPS_PER_EDGE, seed: int = 0) -> list[np.ndarray]:
    """Degree-preserving rewirings of a simple graph (Maslov & Sneppen 2002), with igraph's C
    ``Graph.rewire`` (``allowed_edge_types="simple"``).

    Each network starts from the real one and makes ``swaps_per_edge × E`` double-edge swap trials
    (``u–v, x–y → u–x, v–y``, rejected when they would create a self-loop or a multi-edge), so every node
    keeps its degree. igraph draws from its own generator, seeded here (``random.seed``-style) from
    ``seed`` so a run is reproducible.

    Returns: ``n_networks`` int64 ``[E, 2]`` edge lists (rows sorted, ``u < v``).

    Raises:
        ValueError: bad edges, ``n_networks < 0`` or ``swaps_per_edge < 0``.
    """
    import random

    import igraph

    edges = _check_edges(edges, num_nodes)
    if n_networks < 0 or swaps_per_edge < 0:
        raise ValueError(f"n_networks and swaps_per_edge must be >= 0, got {n_networks} and {swaps_per_edge}.")
    state = random.getstate()
    igraph.set_random_number_generator(random.Random(seed))
    out = []
    try:
        for _ in range(n_networks):
            g = igraph.Graph(n=num_nodes, edges=edges.tolist(), directed=False)
            trials = int(swaps_per_edge * len(edges))
            if trials and len(edges) >= 2:
                g.rewire(n=trials, allowed_edge_types="simple")
            e = np.sort(np.asarray(g.get_edgelist(), dtype=np.int64).reshape(-1, 2), axis=1)
            out.append(e[np.lexsort((e[:, 1], e[:, 0]))])
    finally:
        igraph.set_random_number_generator(random)
        random.setstate(state)
    return out


def network_null(edges: np.ndarray, prizes: np.ndarray, costs: np.ndarray, tree_nodes: np.ndarray,
                 tree_edge_rows: np.ndarray, rwr: np.ndarray, *, null_edges: list[np.ndarray] | None = None,
                 n_networks: int = NULL_NETWORKS, swaps_per_edge: float = SWAPS_PER_EDGE, restart: float = RESTART,
                 seed: int = 0) -> dict:
    """Empirical p-values of a tree and a walk against degree-preserving rewired networks.

    On each rewired network (same prizes; the real edge costs reassigned to the rewired edges in random
    order, then the hub penalty unchanged because degrees are) the tree and the walk are recomputed.
    Per node ``i`` in the real tree: ``p_tree = (1 + #null trees holding i) / (1 + R)`` — small when
    the node is kept only thanks to the real wiring, near 1 when its prize and degree alone keep it.
    Per real tree edge ``u–v``: the same with "both ``u`` and ``v`` in the null tree". Per node:
    ``p_rwr = (1 + #null walks with probability >= the real one) / (1 + R)``.

    Args:
        edges, prizes, costs: as [`prize_collecting_steiner_tree`]; tree_nodes / tree_edge_rows: the real
            tree; rwr: the real walk ``[N]`` (restart at ``prizes``).

    Returns: ``{"node_p_tree" [N] (NaN off the tree), "edge_p_tree" [len(tree_edge_rows)],
    "node_p_rwr" [N], "node_null_frequency" [N], "n_networks"}``.
    """
    num_nodes = len(prizes)
    rng = np.random.default_rng(seed + 1)
    if null_edges is None:
        null_edges = rewired_networks(edges, num_nodes, n_networks=n_networks, swaps_per_edge=swaps_per_edge, seed=seed)
    r = len(null_edges)
    in_tree = np.zeros(num_nodes)
    both = np.zeros(len(tree_edge_rows))
    rwr_ge = np.zeros(num_nodes)
    tree_pairs = np.asarray(edges, dtype=np.int64)[tree_edge_rows] if len(tree_edge_rows) else np.zeros((0, 2), np.int64)
    for rewired in null_edges:
        null_costs = rng.permutation(np.asarray(costs, dtype=np.float64))
        nodes, _ = prize_collecting_steiner_tree(rewired, prizes, null_costs)
        mask = np.zeros(num_nodes, bool)
        mask[nodes] = True
        in_tree += mask
        both += mask[tree_pairs[:, 0]] & mask[tree_pairs[:, 1]] if len(tree_pairs) else 0
        rwr_ge += random_walk_with_restart(rewired, num_nodes, prizes, restart=restart) >= rwr - 1e-15
    node_p = np.full(num_nodes, np.nan)
    node_p[tree_nodes] = (1 + in_tree[tree_nodes]) / (1 + r)
    return {"node_p_tree": node_p, "edge_p_tree": (1 + both) / (1 + r), "node_p_rwr": (1 + rwr_ge) / (1 + r),
            "node_null_frequency": in_tree / max(r, 1), "n_networks": r}


__all__ = ["degrees", "edge_costs", "prize_collecting_steiner_tree", "random_walk_with_restart", "rewired_networks",
           "network_null", "BASE_EDGE_COST", "HUB_PENALTY", "RESTART", "NULL_NETWORKS", "SWAPS_PER_EDGE"]
