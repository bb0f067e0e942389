"""Tests of the default signaling method's parts on small hand-checked inputs (issue 19): pseudobulk,
DESeq2 / Welch evidence, PCST, random walk with restart, the rewired null, attributions, validation."""

from types import SimpleNamespace

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

from omnicelltosg.tools import attribution as attr
from omnicelltosg.tools import network as net
from omnicelltosg.tools.differential import differential_evidence, pseudobulk, welch_evidence
from omnicelltosg.tools.enrichment import gene_set_validation, ranking_validation
from omnicelltosg.tools.evidence_network import PPINetwork, infer_evidence_network


def test_pseudobulk_sums_match_a_direct_sum():
    rng = np.random.default_rng(0)
    counts = rng.poisson(3, size=(30, 7))
    samples = pd.DataFrame({"donor": rng.choice(["d2", "d1"], 30), "cond": rng.choice(["stim", "ctrl"], 30)})
    for matrix in (counts, sp.csr_matrix(counts)):
        sums, meta = pseudobulk(matrix, samples, ["donor", "cond"])
        assert list(zip(meta["donor"], meta["cond"])) == sorted(set(zip(samples["donor"], samples["cond"])))
        for s, row in meta.iterrows():
            rows = (samples["donor"] == row["donor"]) & (samples["cond"] == row["cond"])
            np.testing.assert_array_equal(sums[s], counts[rows.to_numpy()].sum(0))
            assert row["n_rows"] == rows.sum()
    with pytest.raises(ValueError, match="not in samples"):
        pseudobulk(counts, samples, ["donor", "batch"])


def test_deseq2_evidence_finds_the_planted_genes_and_welch_matches_scipy():
    rng = np.random.default_rng(1)
    samples = pd.DataFrame({"donor": np.repeat(["a", "b"], 20), "cond": np.tile(np.repeat(["ctrl", "stim"], 10), 2)})
    mu = rng.gamma(4, 5, 60)
    fold = np.ones(60)
    fold[:5] = 4.0  # genes 0..4 up 4x in stim
    counts = rng.poisson(mu * np.where(samples["cond"].to_numpy()[:, None] == "stim", fold, 1.0))
    symbols = [f"g{i}" for i in range(60)]
    table, info = differential_evidence(counts=counts, log_expression=np.log1p(counts), samples=samples, symbols=symbols,
                                        group_column="cond", case="stim", control="ctrl", donor_column="donor",
                                        counts_available=True)
    assert info["level"] == "pseudobulk_deseq2" and len(info["samples"]) == 4
    top = set(table.sort_values("statistic", ascending=False)["symbol"].head(5))
    assert top == {f"g{i}" for i in range(5)}
    assert (table.set_index("symbol").loc[[f"g{i}" for i in range(5)], "log2_fold_change"] > 1.5).all()
    # non-count input falls back to meta-cell Welch tests, equal to scipy's
    table2, info2 = differential_evidence(counts=None, log_expression=np.log1p(counts), samples=samples, symbols=symbols,
                                          group_column="cond", case="stim", control="ctrl", donor_column="donor",
                                          counts_available=False)
    assert info2["level"] == "metacell_welch" and "no raw counts" in info2["reason"]
    x = np.log1p(counts)
    ref = stats.ttest_ind(x[samples["cond"] == "stim"], x[samples["cond"] == "ctrl"], equal_var=False)
    np.testing.assert_allclose(table2["statistic"], ref.statistic)
    np.testing.assert_allclose(table2["fdr"], stats.false_discovery_control(ref.pvalue))
    with pytest.raises(ValueError, match=">= 2 rows per group"):
        welch_evidence(x[:11], samples["cond"].to_numpy()[:11], symbols, case="stim", control="ctrl")


def test_cell_type_covariate_removes_a_composition_effect_and_keeps_a_shared_response():
    # 2 donors; cell type A is 4 of 16 meta-cells in control but 12 of 16 in stim; gene 0 marks A (no
    # response); genes 1-3 go up 3x in stim in both types; type C exists in stim only (must be left out).
    rng = np.random.default_rng(2)
    rows = []
    for donor in ("d1", "d2"):
        for cond, n_a in (("ctrl", 4), ("stim", 12)):
            rows += [(donor, cond, "A")] * n_a + [(donor, cond, "B")] * (16 - n_a)
        rows += [(donor, "stim", "C")] * 3
    samples = pd.DataFrame(rows, columns=["donor", "cond", "cell_type"])
    mu = np.tile(rng.gamma(4, 5, 40), (len(samples), 1))
    is_a, is_stim = (samples["cell_type"] == "A").to_numpy(), (samples["cond"] == "stim").to_numpy()
    mu[:, 0] = np.where(is_a, 60.0, 2.0)
    mu[is_stim, 1:4] *= 3.0
    counts = rng.poisson(mu)
    kw = dict(counts=counts, log_expression=np.log1p(counts), samples=samples, symbols=[f"g{i}" for i in range(40)],
              group_column="cond", case="stim", control="ctrl", donor_column="donor", counts_available=True)
    plain, plain_info = differential_evidence(**kw)
    adjusted, info = differential_evidence(**kw, cell_type_column="cell_type")
    assert plain_info["design"] == "~ donor + cond" and len(plain_info["samples"]) == 4
    assert info["design"] == "~ donor + cell_type + cond" and info["left_out"] == ["C"]
    assert len(info["samples"]) == 8 and {s["cell_type"] for s in info["samples"]} == {"A", "B"}
    assert plain["fdr"].iloc[0] < 0.05 and plain["log2_fold_change"].iloc[0] > 0.8  # composition reads as response
    assert abs(adjusted["log2_fold_change"].iloc[0]) < 0.5 and adjusted["fdr"].iloc[0] > 0.05  # ~0, not ~1.1
    assert set(adjusted.sort_values("statistic", ascending=False)["symbol"].head(3)) == {"g1", "g2", "g3"}
    np.testing.assert_allclose(adjusted["log2_fold_change"].iloc[1:4], np.log2(3.0), atol=0.3)
    # one cell type with both groups is not enough for a covariate: the plain design
    only_a = samples["cell_type"].isin(["A", "C"]).to_numpy()
    _, info_a = differential_evidence(**{**kw, "counts": counts[only_a], "log_expression": np.log1p(counts[only_a]),
                                         "samples": samples[only_a].reset_index(drop=True)}, cell_type_column="cell_type")
    assert info_a["design"] == "~ donor + cond" and info_a["left_out"] == []


# PCST: a prize-rich path 0-1-2-3; 7 (prize 1) joined through 8 (no prize) for 0.5 < 1; 6 (prize 0.3) only
# through 4, 5 for 0.75 > 0.3; 9 (prize 0.2) on an edge of cost 0.25 > 0.2.
PCST_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6], [0, 8], [7, 8], [2, 9]])
PCST_PRIZES = np.array([1, 1, 1, 1, 0, 0, 0.3, 1, 0, 0.2])


def test_pcst_keeps_the_prize_rich_connected_part():
    costs = np.full(len(PCST_EDGES), 0.25)
    nodes, rows = net.prize_collecting_steiner_tree(PCST_EDGES, PCST_PRIZES, costs)
    assert set(nodes.tolist()) == {0, 1, 2, 3, 7, 8}
    tree = nx.Graph([tuple(e) for e in PCST_EDGES[rows]])
    assert nx.is_tree(tree) and set(tree.nodes) == set(nodes.tolist())
    # cheaper edges: now 6 (through 4, 5 for 0.15 < 0.3) and 9 (0.05 < 0.2) join too
    nodes, _ = net.prize_collecting_steiner_tree(PCST_EDGES, PCST_PRIZES, np.full(len(PCST_EDGES), 0.05))
    assert set(nodes.tolist()) == set(range(10))
    empty, _ = net.prize_collecting_steiner_tree(PCST_EDGES, np.zeros(10), costs)
    assert empty.size == 0
    with pytest.raises(ValueError, match="costs must be > 0"):
        net.prize_collecting_steiner_tree(PCST_EDGES, PCST_PRIZES, np.zeros(len(PCST_EDGES)))


def test_edge_costs_hub_penalty_by_hand():
    edges = np.array([[0, 1], [0, 2], [0, 3], [3, 4]])  # degrees 3, 1, 1, 2, 1; N = 5
    costs = net.edge_costs(edges, 5, confidence=np.array([1.0, 0.9, 1.0, 0.5]), base=0.25, hub_penalty=20)
    hub = lambda a, b: a * b / ((5 - a - 1) * (5 - b - 1) + a * b)  # noqa: E731
    expected = [0.25 + 20 * hub(3, 1), 0.35 + 20 * hub(3, 1), 0.25 + 20 * hub(3, 2), 0.75 + 20 * hub(2, 1)]
    np.testing.assert_allclose(costs, expected)
    with pytest.raises(ValueError, match="confidence must lie in"):
        net.edge_costs(edges, 5, confidence=np.array([1.5, 1, 1, 1]))


def test_random_walk_with_restart_two_nodes_closed_form():
    p = net.random_walk_with_restart(np.array([[0, 1]]), 3, np.array([1.0, 0, 0]), restart=0.3)
    # p0 = r + (1-r) p1, p1 = (1-r) p0; node 2 is isolated and never reached
    p0 = 0.3 / (1 - 0.7**2)
    np.testing.assert_allclose(p, [p0, 0.7 * p0, 0.0], atol=1e-9)
    with pytest.raises(ValueError, match="positive sum"):
        net.random_walk_with_restart(np.array([[0, 1]]), 3, np.zeros(3))


def test_rewiring_null_keeps_degrees():
    g = nx.gnm_random_graph(60, 150, seed=3)
    edges = np.array(sorted(g.edges()))
    nulls = net.rewired_networks(edges, 60, n_networks=3, swaps_per_edge=5, seed=0)
    real = net.degrees(edges, 60)
    for e in nulls:
        np.testing.assert_array_equal(net.degrees(e, 60), real)
        assert len({tuple(r) for r in e.tolist()}) == len(e) == len(edges)  # no multi-edges
        assert (e[:, 0] != e[:, 1]).all()
        changed = len({tuple(r) for r in e.tolist()} - {tuple(r) for r in edges.tolist()})
        assert changed > len(edges) // 2  # actually rewired
    assert not np.array_equal(nulls[0], nulls[1])


def test_network_null_p_values_are_in_range_and_hubs_do_not_win():
    # a star hub 0 with 10 leaves of small prize and a prize-rich triangle 20-21-22 linked to the rest
    edges = [(0, i) for i in range(1, 11)] + [(20, 21), (21, 22), (20, 22), (22, 11), (11, 12), (12, 1)]
    edges = np.array(edges)
    prizes = np.zeros(23)
    prizes[[20, 21, 22]] = 1.0
    prizes[0] = 0.5
    costs = np.full(len(edges), 0.25)
    nodes, rows = net.prize_collecting_steiner_tree(edges, prizes, costs)
    rwr = net.random_walk_with_restart(edges, 23, prizes)
    res = net.network_null(edges, prizes, costs, nodes, rows, rwr, n_networks=10, seed=0)
    p = res["node_p_tree"]
    assert np.isnan(p[np.setdiff1d(np.arange(23), nodes)]).all()
    assert ((p[nodes] > 0) & (p[nodes] <= 1)).all() and len(res["edge_p_tree"]) == len(rows)
    assert ((res["node_p_rwr"] > 0) & (res["node_p_rwr"] <= 1)).all()
    # a prize node is in every tree it can reach: frequency 1 → p = 1 (its selection is explained by its prize)
    assert p[20] == pytest.approx(1.0)


class LinearClassifier(torch.nn.Module):
    """A linear cell classifier with the CellTOSG call signature (logits = x W^T + b)."""

    def __init__(self, weight):
        super().__init__()
        self.linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.linear.bias.fill_(0.3)

    def forward(self, expression, graph, measured_mask=None):
        x = expression if measured_mask is None else expression * measured_mask
        return SimpleNamespace(logits=self.linear(x))


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_x_input"])
def test_attributions_of_a_linear_model_equal_weights_times_inputs(method):
    w = np.array([[0.5, -1.0, 2.0, 0.0], [1.5, 1.0, -1.0, 3.0]])
    model = LinearClassifier(w)
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(0)) * 3
    a = attr.expression_attributions(model, x, None, graph=None, case_index=1, control_index=0, method=method,
                                     batch_size=2)
    np.testing.assert_allclose(a, x.numpy() * (w[1] - w[0]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="method must be one of"):
        attr.expression_attributions(model, x, None, None, case_index=1, control_index=0, method="saliency")


def test_attribution_contrast_by_hand_and_permutation_null():
    a = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    groups = np.array(["stim", "stim", "ctrl", "ctrl"])
    res = attr.attribution_contrast(a, groups, case="stim", control="ctrl", n_permutations=50, seed=0)
    np.testing.assert_allclose(res["contrast"], [(1 + 3) / 2 - (0 + 2) / 2, 0 - 1])
    assert ((res["p_value"] > 0) & (res["p_value"] <= 1)).all()
    # permuting within strata that each hold one group only never changes the labels: sd 0 → z 0
    same = attr.attribution_contrast(a, groups, case="stim", control="ctrl", strata=groups, n_permutations=5)
    np.testing.assert_allclose(same["z"], 0.0)
    deg = np.array([1, 2, 4, 8, 16, 32])
    corrected = attr.degree_corrected(3.0 * np.log1p(deg) + 1.0, deg)
    np.testing.assert_allclose(corrected, 0.0, atol=1e-9)


def test_integrated_gradients_completeness_on_a_real_celltosg_model():
    from tests.test_signaling import tiny_model_and_graph

    model, graph = tiny_model_and_graph("gat")
    # a fresh v2 model's heads start at zero (logits 0 for every input): move every weight so that the
    # logit difference depends on the input, else 0 == 0 below would prove nothing
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    x = torch.log1p(torch.rand(3, 4, generator=torch.Generator().manual_seed(2)) * 5)
    mask = torch.ones(3, 4, dtype=torch.bool)
    a = attr.expression_attributions(model, x, mask, graph, case_index=1, control_index=0, n_steps=64)
    model.eval()
    with torch.no_grad():
        f = lambda z: (lambda l: l[:, 1] - l[:, 0])(model(z, graph, measured_mask=mask).logits)  # noqa: E731
        gap = (f(x) - f(torch.zeros_like(x))).numpy()
    assert np.abs(gap).min() > 0.05
    np.testing.assert_allclose(a.sum(1), gap, rtol=0.05, atol=2e-3)
    # the batch size only bounds memory (the workflow passes ATTRIBUTION_BATCH_SIZE): same values
    one = attr.expression_attributions(model, x, mask, graph, case_index=1, control_index=0,
                                       method="gradient_x_input", batch_size=1)
    all_ = attr.expression_attributions(model, x, mask, graph, case_index=1, control_index=0,
                                        method="gradient_x_input", batch_size=3)
    assert np.abs(one).max() > 0
    np.testing.assert_allclose(one, all_, rtol=1e-5, atol=1e-7)
    occl = attr.edge_occlusion(model, x, mask, graph, np.array([[4, 5], [6, 7]]), np.array(["s", "c", "s"]),
                               case="s", control="c", case_index=1, control_index=0)
    assert occl.shape == (2,) and np.isfinite(occl).all()
    with pytest.raises(ValueError, match="not a PPI edge"):
        attr.edge_occlusion(model, x, mask, graph, np.array([[4, 7]]), np.array(["s", "c", "s"]), case="s",
                            control="c", case_index=1, control_index=0)


def test_ranking_validation_by_hand():
    scores = {"A": 4.0, "B": 3.0, "C": 2.0, "D": 1.0}
    v = ranking_validation(scores, {"A", "C"}, ["A", "B", "C", "D", "E"], ks=(1, 2))
    # ranking A (+), B, C (+), D, E (unscored, last): AP = (1/1 + 2/3) / 2
    assert v["auprc"] == pytest.approx((1 + 2 / 3) / 2)
    assert v["precision_at"] == {1: 1.0, 2: 0.5} and v["prevalence"] == pytest.approx(0.4)
    s = gene_set_validation({"A", "B", "Z"}, {"A", "C"}, ["A", "B", "C", "D", "E"])
    assert (s["n_genes"], s["n_known"], s["fraction_known"]) == (2, 1, 0.5)
    assert s["hypergeom_p"] == pytest.approx(stats.hypergeom.sf(0, 5, 2, 2))
    with pytest.raises(ValueError, match="no positive"):
        ranking_validation(scores, {"Q"}, ["A", "B"])


def test_evidence_network_end_to_end_on_a_toy_graph():
    symbols = [f"G{i}" for i in range(10)]
    # 90 unconnected genes without evidence: N = 100 keeps the hub penalty of degree-2 nodes small (< 0.01)
    ppi = PPINetwork.from_pairs(symbols + [f"Z{i}" for i in range(90)],
                                [(f"G{a}", f"G{b}") for a, b in PCST_EDGES] + [("G0", "G0"), ("G1", "G0")])
    assert len(ppi.edges) == len(PCST_EDGES)  # self-pair and repeat dropped
    stat = np.array([8, 7, 6, 5, 0, 0, 3, 9, 0, -2.0])
    evidence = pd.DataFrame({"symbol": symbols, "log2_fold_change": stat / 2, "statistic": stat,
                             "p_value": 2 * stats.norm.sf(np.abs(stat)), "fdr": np.where(np.abs(stat) > 2.5, 0.01, 0.5)})
    res = infer_evidence_network(evidence, ppi, case="stim", control="ctrl", n_terminals=5, n_null=5)
    nodes = res.nodes.set_index("symbol")
    assert list(res.nodes["symbol"][:5]) == ["G7", "G0", "G1", "G2", "G3"]
    assert set(nodes.index[nodes["terminal"]]) == {"G7", "G0", "G1", "G2", "G3"}
    assert nodes.at["G7", "prize"] == 1.0 and nodes.at["G3", "prize"] == pytest.approx(5 / 9)
    assert set(res.network.nodes) == {"G0", "G1", "G2", "G3", "G7", "G8"} and nx.is_connected(res.network)
    assert nodes.loc[list(res.network.nodes), "p_tree"].between(0, 1).all()
    assert np.isnan(nodes.at["Z0", "score"]) and nodes.at["Z0", "rank"] > 10
    down = infer_evidence_network(evidence, ppi, case="stim", control="ctrl", direction="down", n_null=0)
    assert down.nodes["symbol"].iloc[0] == "G9"
    att = pd.DataFrame({"symbol": symbols, "z": -stat, "p_value": 0.5})
    combined = infer_evidence_network(evidence, ppi, case="stim", control="ctrl", attribution=att, n_null=0)
    np.testing.assert_allclose(combined.nodes["score"].dropna(), 0.0)  # the equal-weight combination cancels exactly
    with pytest.raises(ValueError, match="direction must be one of"):
        infer_evidence_network(evidence, ppi, case="stim", control="ctrl", direction="sideways")
