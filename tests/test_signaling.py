"""Tests of signaling-network inference (paper §2.5, ARCHITECTURE.md §7); p-values are checked against
`scipy.stats.mannwhitneyu` / `false_discovery_control` directly, everything else by hand."""

import matplotlib.image
import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from modeling_celltosg import CellTOSGConfig, CellTOSGForCellClassification, TOSGGraph
from omnicelltosg.tools.signaling import (
    EDGE_COLUMNS,
    NODE_COLUMNS,
    _undirected_mean,
    edge_attention,
    group_edge_attention,
    infer_signaling,
    node_expression,
    write_signaling,
)

OFFSETS = np.array([-0.1, 0.1, -0.05, 0.05, 0.0, 0.0])  # zero-mean per-cell jitter (6 cells per group)
BASE = np.arange(6) * 0.1  # mean 0.25


def synthetic_cohort(pairs, case_weight, mu_case, nt):
    """6 case + 6 control cells. Pair `e` has mean weight `case_weight[e]` in case, 0.5 in control; protein
    `j` has expression `mu_case[j] + BASE` in case and `1 + BASE[::-1]` in control."""
    p = len(pairs)
    weights = np.concatenate([np.asarray(case_weight) + OFFSETS[:, None], 0.5 + OFFSETS[:, None] + np.zeros(p)])
    expr = np.concatenate([np.asarray(mu_case)[None, :] + BASE[:, None], 1.0 + BASE[::-1, None] + 0 * np.asarray(mu_case)])
    groups = np.array(["AD"] * 6 + ["CT"] * 6)
    return torch.tensor(pairs).T + nt, weights.astype(np.float32), expr, groups


# A hub with leaves B, C, D and neighbour E; E–F; a separate component G–H. C and E differ case vs control.
SYMBOLS = list("ABCDEFGH")
PAIRS = [(0, 1), (0, 2), (0, 3), (0, 4), (4, 5), (6, 7)]
CASE_W = [0.8, 0.2, 0.4, 0.6, 1.0, 0.3]
MU_CASE = [1.0, 1.0, 3.0, 1.0, 2.0, 1.0, 1.0, 1.0]
NT = 8


def hand_case(**kw):
    pairs, weights, expr, groups = synthetic_cohort(PAIRS, CASE_W, MU_CASE, NT)
    kw = {"top_k": 8, "min_leaves": 2} | kw
    return infer_signaling(weights, pairs, expr, groups, case="AD", control="CT", symbols=SYMBOLS,
                           num_transcripts=NT, **kw), expr


def test_hand_checked_statistics_and_core():
    result, expr = hand_case()
    nodes = result.nodes.set_index("symbol")
    # node attention = mean of incident mean edge weights: A=(.8+.2+.4+.6)/4, E=(.6+1)/2, ...
    expected_att = dict(A=0.5, B=0.8, C=0.2, D=0.4, E=0.8, F=1.0, G=0.3, H=0.3)
    expected_mean = {s: m + 0.25 for s, m in zip(SYMBOLS, MU_CASE)}
    for s in SYMBOLS:
        assert nodes.at[s, "attention_case"] == pytest.approx(expected_att[s], abs=1e-6)
        assert nodes.at[s, "attention_control"] == pytest.approx(0.5, abs=1e-6)
        assert nodes.at[s, "mean_expression_case"] == pytest.approx(expected_mean[s])
        assert nodes.at[s, "importance_case"] == pytest.approx(expected_att[s] * expected_mean[s], abs=1e-6)
        assert nodes.at[s, "importance_control"] == pytest.approx(0.5 * 1.25, abs=1e-6)
    assert list(result.nodes["symbol"][:6]) == ["E", "F", "B", "C", "A", "D"]  # 1.8, 1.25, 1.0, .65, .625, .5
    # Mann–Whitney U vs scipy; C and E are completely separated: exact p = 2 / C(12, 6)
    ref = [stats.mannwhitneyu(expr[:6, j], expr[6:, j], alternative="two-sided") for j in range(8)]
    ref_p = np.array([r.pvalue for r in ref])
    order = result.nodes["protein_index"].to_numpy() - NT
    np.testing.assert_allclose(result.nodes["p_value"], ref_p[order])
    np.testing.assert_allclose(result.nodes["mwu_statistic"], np.array([r.statistic for r in ref])[order])
    np.testing.assert_allclose(result.nodes["fdr"], stats.false_discovery_control(ref_p)[order])
    assert nodes.at["C", "mwu_statistic"] == 36 and nodes.at["A", "p_value"] == pytest.approx(1.0)
    assert nodes.at["C", "p_value"] == pytest.approx(2 / 924) and nodes.at["C", "fdr"] == pytest.approx(2 / 924 * 8 / 2)
    assert set(nodes.index[nodes["significant"]]) == {"C", "E"}
    assert nodes.at["E", "log2_fold_change"] == pytest.approx(np.log2(np.expm1(2.25) / np.expm1(1.25)))
    # LCC = {A..F}; A keeps C (significant) and B (heavier than D) → D pruned; G–H is another component.
    assert set(result.core.nodes) == {NT + i for i in (0, 1, 2, 4, 5)}
    assert {frozenset(e) for e in result.core.edges} == {frozenset((NT + u, NT + v)) for u, v in [(0, 1), (0, 2), (0, 4), (4, 5)]}
    assert set(nodes.index[nodes["in_core_subgraph"]]) == set("ABCEF")
    edges = result.edges
    assert list(edges["weight_case"]) == sorted(edges["weight_case"], reverse=True)
    row = edges[(edges.source_symbol == "A") & (edges.target_symbol == "D")].iloc[0]
    assert row.weight_case == pytest.approx(0.4) and row.weight_delta == pytest.approx(-0.1) and not row.in_core_subgraph
    assert result.core.nodes[NT + 2]["symbol"] == "C" and result.core.nodes[NT + 2]["significant"] is True


def test_group_mean_weights_give_the_per_cell_result():
    pairs, weights, expr, groups = synthetic_cohort(PAIRS, CASE_W, MU_CASE, NT)
    kw = dict(symbols=SYMBOLS, num_transcripts=NT, top_k=8, min_leaves=2)
    per_cell = infer_signaling(weights, pairs, expr, groups, case="AD", control="CT", **kw)
    means = {g: weights[groups == g].mean(0) for g in ("AD", "CT")}
    grouped = infer_signaling(means, pairs, expr, groups, case="AD", control="CT", **kw)
    pd.testing.assert_frame_equal(grouped.nodes, per_cell.nodes)
    pd.testing.assert_frame_equal(grouped.edges, per_cell.edges)
    assert set(grouped.core.edges) == set(per_cell.core.edges)
    with pytest.raises(ValueError, match=r"lack \['CT'\]; they hold groups \['AD'\]"):
        infer_signaling({"AD": means["AD"]}, pairs, expr, groups, case="AD", control="CT", **kw)
    with pytest.raises(ValueError, match="group mean weights must be \\[P\\]"):
        infer_signaling({g: w[:-1] for g, w in means.items()}, pairs, expr, groups, case="AD", control="CT", **kw)


def test_top_k_keeps_largest_connected_component():
    result, _ = hand_case(top_k=4)  # {E, F, B, C}: only E–F is an induced edge
    assert set(result.core.nodes) == {NT + 4, NT + 5}
    assert result.core.number_of_edges() == 1


@pytest.mark.parametrize("min_leaves, kept", [(1, {"L2"}), (2, {"L1", "L2"}), (3, {"L1", "L2", "L3"}), (9, None)])
def test_star_leaf_pruning_prefers_significant_then_heavy(min_leaves, kept):
    # Hub H with leaves L1..L5 (L1, L2 significant but light; L2 heavier than L1); H–X–Y keeps H a hub with a non-leaf neighbour.
    symbols = ["H", "L1", "L2", "L3", "L4", "L5", "X", "Y"]
    pairs = [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (6, 7)]
    case_w = [0.1, 0.2, 0.9, 0.7, 0.5, 0.6, 0.6]
    mu_case = [1.0, 3.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    pairs_t, weights, expr, groups = synthetic_cohort(pairs, case_w, mu_case, nt=2)
    result = infer_signaling(weights, pairs_t, expr, groups, case="AD", control="CT", symbols=symbols,
                             num_transcripts=2, top_k=8, min_leaves=min_leaves)
    core_symbols = {result.core.nodes[n]["symbol"] for n in result.core.nodes}
    leaves = {s for s in core_symbols if s.startswith("L")}
    if kept is None:  # fewer leaves than min_leaves: nothing pruned
        assert leaves == {"L1", "L2", "L3", "L4", "L5"}
    else:
        assert leaves == kept and len(leaves) == min_leaves
    assert {"H", "X", "Y"} <= core_symbols  # Y is X's only leaf; X and H are not pruned
    assert nx.is_connected(result.core)


def test_undirected_mean_of_reciprocal_and_one_way_edges():
    # 1→2 (0.2) and 2→1 (0.6): mean 0.4; 3→1 only (0.5): kept; self-loop 2→2 dropped; 0→3 twice: summed.
    edge_index = torch.tensor([[1, 2, 3, 2, 0, 0], [2, 1, 1, 2, 3, 3]])
    values = torch.tensor([[0.2], [0.6], [0.5], [9.0], [0.1], [0.3]])
    pairs, mean = _undirected_mean(edge_index, values, num_nodes=4)
    assert pairs.tolist() == [[0, 1, 1], [3, 2, 3]]
    torch.testing.assert_close(mean[:, 0], torch.tensor([0.4, 0.4, 0.5]))


def tiny_model_and_graph(layer_type):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    graph = TOSGGraph(
        num_transcripts=4, num_proteins=4,
        internal_edge_index=torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]),
        ppi_edge_index=torch.tensor([[4, 5, 6, 4], [5, 6, 7, 6]]),
        name_embeddings=torch.randn(8, 384, generator=g), description_embeddings=torch.randn(8, 384, generator=g),
        entity_version="v1",
    )
    config = CellTOSGConfig(num_transcripts=4, num_proteins=4, layer_type=layer_type, entity_version="v1",
                            num_layers=2, num_heads=2, hidden_size=8, num_labels=2)
    return CellTOSGForCellClassification(config), graph


@pytest.mark.parametrize("layer_type", ["gat", "transformer", "gcn"])
def test_edge_attention_matches_raw_model_output(layer_type):
    model, graph = tiny_model_and_graph(layer_type)
    model.train()
    x = torch.log1p(torch.rand(7, 4, generator=torch.Generator().manual_seed(1)) * 5)
    mask = torch.ones(7, 4, dtype=torch.bool)
    mask[0, 1] = False
    pairs, weights = edge_attention(model, x, mask, graph, batch_size=3)
    assert model.training  # training flag restored
    assert pairs.tolist() == [[4, 4, 5, 6], [5, 6, 6, 7]]
    assert weights.shape == (7, 4) and weights.dtype == np.float32 and (weights >= 0).all()
    model.eval()
    with torch.no_grad():
        out = model(x, graph, measured_mask=mask, output_attentions=True)
    summed = sum(a.sum(-1) for a in out.attentions)  # [E_dir, B]
    src, dst = out.attention_edge_index.tolist()
    for p, (u, v) in enumerate(pairs.T.tolist()):
        both = [summed[e] for e in range(len(src)) if {src[e], dst[e]} == {u, v}]
        assert len(both) == 2  # the model always passes both directions
        np.testing.assert_allclose(weights[:, p], (both[0] + both[1]).numpy() / 2, rtol=1e-5, atol=1e-6)
    if layer_type != "gcn":  # attention differs between cells
        assert weights.std(axis=0).max() > 0

    # streamed per-group means = the per-cell weights averaged per group (batches split the groups)
    groups = np.array(["AD", "CT", "AD", "AD", "CT", "CT", "AD"])
    group_pairs, means, counts = group_edge_attention(model, x, mask, graph, groups, batch_size=3)
    assert torch.equal(group_pairs, pairs) and counts == {"AD": 4, "CT": 3}
    for label in ("AD", "CT"):
        np.testing.assert_allclose(means[label], weights[groups == label].mean(0), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="one label per cell"):
        group_edge_attention(model, x, mask, graph, groups[:-1])


def test_node_expression_picks_highest_scaled_transcript():
    graph = TOSGGraph(
        num_transcripts=3, num_proteins=3,
        internal_edge_index=torch.tensor([[0, 1, 2], [3, 3, 4]]),  # t0, t1 → p3; t2 → p4; p5 has none
        ppi_edge_index=torch.tensor([[3], [4]]),
        name_embeddings=torch.zeros(6, 4), description_embeddings=torch.zeros(6, 4), entity_version="v",
    )
    # min–max scaled means: t0 = (0, .1, 1) → .367; t1 = (0, 1, 1) → .667 although t0 has the larger raw mean.
    expr = np.array([[0.0, 5.0, 1.0], [1.0, 6.0, 2.0], [10.0, 6.0, 3.0]])
    out = node_expression(expr, graph)
    np.testing.assert_array_equal(out[:, 0], expr[:, 1])
    np.testing.assert_array_equal(out[:, 1], expr[:, 2])
    assert np.isnan(out[:, 2]).all() and out.shape == (3, 3)


def test_errors_list_available_groups_and_shapes():
    pairs, weights, expr, groups = synthetic_cohort(PAIRS, CASE_W, MU_CASE, NT)
    kw = dict(symbols=SYMBOLS, num_transcripts=NT)
    with pytest.raises(ValueError, match=r"case='PD'.*available groups: \['AD', 'CT'\]"):
        infer_signaling(weights, pairs, expr, groups, case="PD", control="CT", **kw)
    with pytest.raises(ValueError, match=r"control='x'.*\['AD', 'CT'\]"):
        infer_signaling(weights, pairs, expr, groups, case="AD", control="x", **kw)
    with pytest.raises(ValueError, match="weights must be"):
        infer_signaling(weights[:, :-1], pairs, expr, groups, case="AD", control="CT", **kw)
    with pytest.raises(ValueError, match="one label per cell"):
        infer_signaling(weights, pairs, expr, groups[:-1], case="AD", control="CT", **kw)
    with pytest.raises(ValueError, match="len\\(symbols\\)"):
        infer_signaling(weights, pairs, expr, groups, case="AD", control="CT", symbols=SYMBOLS[:-1], num_transcripts=NT)


def test_write_signaling_outputs(tmp_path):
    result, _ = hand_case()
    paths = write_signaling(result, tmp_path / "out", title="AD vs CT (toy)")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "signaling_nodes.csv", "signaling_edges.csv", "signaling_core.graphml", "signaling_network.png"}
    nodes, edges = pd.read_csv(paths["nodes"]), pd.read_csv(paths["edges"])
    assert list(nodes.columns) == NODE_COLUMNS and list(edges.columns) == EDGE_COLUMNS
    assert len(nodes) == 8 and len(edges) == 6 and nodes["symbol"].iloc[0] == "E"
    core = nx.read_graphml(paths["graphml"])
    assert core.number_of_nodes() == 5 and {d["symbol"] for _, d in core.nodes(data=True)} == set("ABCEF")
    image = matplotlib.image.imread(paths["figure"])
    assert image.shape[0] > 400 and image.shape[1] > 400 and image[..., :3].std() > 0.05


# ---------------------------------------------------------------------------------------------------------
# GO enrichment and the complete signaling command
# ---------------------------------------------------------------------------------------------------------


def test_go_enrichment_matches_scipy_hypergeometric():
    import pandas as pd
    from scipy import stats as sps

    from omnicelltosg.tools.enrichment import GOAnnotations, go_enrichment

    # background of 10 annotated genes; term T1 holds g0..g3, T2 holds g4..g9; set = g0, g1, g2, g5
    gene_terms = {f"g{i}": frozenset({"T1"} if i < 4 else {"T2"}) for i in range(10)}
    gene_terms["g0"] = frozenset({"T1", "T3"})
    terms = pd.DataFrame({"term": ["one", "two", "three"], "ontology": ["BP", "BP", "MF"]}, index=["T1", "T2", "T3"])
    res = go_enrichment(["g0", "g1", "g2", "g5", "not_in_background"], [f"g{i}" for i in range(10)],
                        GOAnnotations(gene_terms, terms), min_term_size=1)
    t1 = res.set_index("go_id").loc["T1"]
    assert (t1["overlap"], t1["term_size"], t1["set_size"], t1["background_size"]) == (3, 4, 4, 10)
    assert t1["p_value"] == pytest.approx(sps.hypergeom.sf(2, 10, 4, 4))  # P(X >= 3)
    assert t1["genes"] == "g0;g1;g2"
    p = res.set_index("go_id")["p_value"]
    assert res.set_index("go_id")["fdr"].to_numpy() == pytest.approx(sps.false_discovery_control(p.to_numpy(), method="bh"))
    assert res["p_value"].is_monotonic_increasing


def test_signaling_command_on_real_kang(built, tmp_path, data_dir):
    """End to end on the real Kang meta-cells with a (briefly) fine-tuned model: the default method, the
    paper reproduction and the attention-free control written; validation rows for every ranking."""
    import json

    import networkx as nx

    from dataset_script.cohorts.loader import load_cohort
    from modeling_celltosg import CellTOSGConfig, CellTOSGForCellClassification
    from omnicelltosg.train import finetune
    from omnicelltosg.workflows.signaling import run_signaling

    dataset = built[0]
    cohort = load_cohort(dataset, conditions={"dataset_id": "kang2018_muscat"}, label_column="condition",
                         validation_by="meta-cell", test_donors=["kang2018_muscat:101"])
    graph = cohort.graph()
    x, m, y = cohort.tensors()
    names = list(cohort.label_names)
    config = CellTOSGConfig.for_graph(graph, hidden_size=8, num_layers=1, num_labels=2,
                                      id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    model = CellTOSGForCellClassification(config)
    finetune(model, x, m, y, graph, train_idx=cohort.splits["train"], val_idx=cohort.splits["validation"],
             test_idx=cohort.splits["test"], epochs=1)
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "signaling"
    summary = run_signaling(dataset, tmp_path / "model", out, conditions={"dataset_id": "kang2018_muscat"},
                            group_column="condition", case="stim", control="control",
                            knowledge_dir=data_dir / "knowledge", known_biology="type_i_interferon", top_k=60)
    for name in ("signaling_nodes.csv", "signaling_edges.csv", "signaling_network.graphml", "signaling_network.png",
                 "signaling_network.html", "gene_ranking.csv", "go_enrichment.csv"):
        assert (out / "evidence_network" / name).exists(), name
    for kind in ("paper", "uniform_control"):
        assert (out / kind / "signaling_network.png").exists() and (out / kind / "go_enrichment.csv").exists()
    network = nx.read_graphml(out / "evidence_network" / "signaling_network.graphml")
    assert network.number_of_nodes() == len(summary["network"]["genes"]) and nx.is_connected(network)
    methods = {r["method"] for r in summary["validation"]}
    assert methods == {"evidence_network", "evidence_only", "attribution_only", "rwr_propagation",
                       "fold_change_baseline", "paper", "uniform_control"}
    assert all(0 <= r["auprc"] <= 1 for r in summary["validation"])
    assert summary["evidence"]["level"] == "pseudobulk_deseq2"  # counts and two donors per group
    # Kang's cell types hold both conditions: samples are donor × cell type × condition (counted here from
    # the cohort's own metadata), cell types with one condition only are left out of the model
    assert summary["evidence"]["design"] == "~ donor_id + cell_type + condition"
    meta = cohort.cells.select_columns(["donor_id", "cell_type", "condition"]).to_pandas()
    both = meta.groupby("cell_type")["condition"].nunique()
    kept = meta[meta["cell_type"].isin(both.index[both == 2])]
    assert len(summary["evidence"]["samples"]) == len(kept.drop_duplicates()) > 4 * 2
    assert summary["evidence"]["left_out"] == sorted(both.index[both < 2])
    assert json.loads((out / "summary.json").read_text())["network"] == summary["network"]
    report = (out / "report.md").read_text()
    assert "REPRODUCTION" in report and "What the model adds" in report and "AUPRC" in report
    with pytest.raises(ValueError, match="available"):
        run_signaling(dataset, tmp_path / "model", tmp_path / "x", conditions={"dataset_id": "kang2018_muscat"},
                      group_column="condition", case="IFN", control="control", knowledge_dir=data_dir / "knowledge")


def test_signaling_defaults_are_one_constant_in_every_door():
    """The function, the workflow, the command line and the demo all use TOP_K / MIN_LEAVES / FDR_THRESHOLD."""
    import inspect

    from omnicelltosg.cli import _parser
    from omnicelltosg.tools.signaling import FDR_THRESHOLD, MIN_LEAVES, TOP_K
    from omnicelltosg.workflows import demo
    from omnicelltosg.workflows.signaling import run_signaling

    from omnicelltosg.tools.evidence_network import DIRECTION
    from omnicelltosg.workflows.signaling import DEFAULT_METHOD

    args = _parser().parse_args(["signaling", "--dataset", "d", "--model", "m", "--conditions", "{}", "--case", "a",
                                 "--control", "b"])
    assert (args.top_k, args.min_leaves, args.fdr) == (TOP_K, MIN_LEAVES, FDR_THRESHOLD)
    assert (args.method, args.direction) == (DEFAULT_METHOD, DIRECTION) == ("evidence_network", "up")
    assert inspect.signature(run_signaling).parameters["direction"].default == DIRECTION
    for fn in (infer_signaling, run_signaling):
        params = inspect.signature(fn).parameters
        assert (params["top_k"].default, params["min_leaves"].default, params["fdr_threshold"].default) == (
            TOP_K, MIN_LEAVES, FDR_THRESHOLD)
    assert not {"top_k", "min_leaves", "fdr_threshold"} & set(demo.SIGNALING)  # the demo takes the defaults
