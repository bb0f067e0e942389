"""Link-prediction negatives, metrics and baselines (issue 5: pretraining evaluation)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from omnicelltosg.evaluation.link_prediction import (
    heuristic_scores,
    hits_at_k,
    link_metrics,
    node_degree,
    sample_degree_matched_negatives,
)


def test_hits_at_k_by_hand():
    neg = np.arange(100, dtype=float)  # 50th highest negative = 50
    pos = np.array([49.0, 50.0, 50.5, 99.5, 200.0])
    assert hits_at_k(pos, neg, k=50) == pytest.approx(3 / 5)  # strictly above 50
    assert np.isnan(hits_at_k(pos, neg[:10], k=50))
    m = link_metrics([0.9, 0.8], [0.1, 0.85], k=1)
    assert m["auroc"] == pytest.approx(0.75) and m["hits@1"] == pytest.approx(0.5)


def test_heuristics_match_networkx():
    g = nx.gnm_random_graph(60, 200, seed=1)
    edges = torch.tensor(list(g.edges())).T
    pairs = torch.tensor([[0, 5, 7, 10, 33], [1, 9, 40, 11, 59]])
    got = heuristic_scores(edges, pairs, 60)
    for i, (u, v) in enumerate(pairs.T.tolist()):
        assert got["common_neighbours"][i] == len(list(nx.common_neighbors(g, u, v)))
        assert got["adamic_adar"][i] == pytest.approx(next(nx.adamic_adar_index(g, [(u, v)]))[2])
        assert got["degree_product"][i] == next(nx.preferential_attachment(g, [(u, v)]))[2]


def test_degree_matched_negatives_keep_degree_and_avoid_true_pairs():
    g = nx.barabasi_albert_graph(400, 3, seed=2)
    edges = torch.tensor(list(g.edges())).T
    gen = torch.Generator().manual_seed(0)
    pos = edges[:, :150]
    neg = sample_degree_matched_negatives(pos, edges, edges, 400, gen)
    assert neg.size(1) >= 140
    true = {tuple(sorted(e)) for e in edges.T.tolist()}
    assert not any(tuple(sorted(e)) in true for e in neg.T.tolist())
    deg = node_degree(edges, 400)
    bins = np.floor(np.log2(1 + deg))
    # every negative shares one end with a positive and the other end's degree bin with the replaced end
    pos_list = pos.T.tolist()
    for u, w in neg.T.tolist():
        assert any((u == a and bins[w] == bins[b]) or (u == b and bins[w] == bins[a]) for a, b in pos_list)
    # degree product separates positives from random pairs far better than from degree-matched ones
    rand = torch.randint(0, 400, (2, 150), generator=gen)
    dp = lambda p: heuristic_scores(edges, p, 400)["degree_product"]  # noqa: E731
    assert link_metrics(dp(pos), dp(rand))["auroc"] > link_metrics(dp(pos), dp(neg))["auroc"] + 0.1
