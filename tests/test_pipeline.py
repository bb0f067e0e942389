"""Cohorts, training and the model round trip on the small real build (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataset_script.cohorts.loader import load_cohort, load_graph


@pytest.fixture(scope="module")
def graph(built):
    return load_graph(built[0])


@pytest.fixture(scope="module")
def kang(built):
    return load_cohort(built[0], conditions={"dataset_id": "KANG2018_MUSCAT"}, label_column="condition",
                       validation_by="meta-cell", seed=0)


def test_kang_cohort_is_split_by_donor(kang):
    donors = np.asarray(kang.cells["donor_id"])
    train, val, test = (set(donors[kang.splits[s]]) for s in ("train", "validation", "test"))
    assert not train & test and len(train | test) == 2
    assert val <= train and kang.validation_level == "meta-cell"  # two donors: validation from train donors
    assert kang.label_names == ["control", "stim"]
    all_idx = np.concatenate([kang.splits[s] for s in ("train", "validation", "test")])
    assert sorted(all_idx) == list(range(len(kang.cells)))  # a partition of the cohort
    for s in ("train", "validation", "test"):
        assert set(kang.labels[kang.splits[s]]) == {0, 1}


def test_expression_is_log_normalised(kang, built):
    x, mask, y = kang.tensors()
    row = kang.cells[0]
    raw = np.asarray(row["expression_values"], dtype=np.float64)
    expected = np.log1p(raw / raw.sum() * 1e4)
    np.testing.assert_allclose(x[0, row["expression_indices"]].numpy(), expected, rtol=1e-5)
    assert mask[0].sum() == len(kang.measured["kang2018_muscat"]) and not mask[0, ~mask[0]].any()
    assert x[:, ~mask[0]].abs().sum() == 0


def test_non_count_rows_log_scale_kept_linear_scale_log_normalised():
    """Non-count input: log-scale rows pass through; linear-scale rows (TPM-like, as the real Tirosh
    2016 file: values up to 34,215) get the same CP10k + log1p as counts — never fed to a model raw."""
    from dataset_script.cohorts.loader import normalize_expression

    log_row = [0.5, 3.2, 11.0]  # log2(TPM + 1)-like
    tpm_row = [5_000.0, 30_000.0, 65_000.0]
    counts_row = [1.0, 3.0, 6.0]
    out = normalize_expression({"expression_values": [log_row, tpm_row, counts_row],
                                "values_are_counts": [False, False, True]})["expression_log"]
    np.testing.assert_allclose(out[0], log_row, rtol=1e-6)
    np.testing.assert_allclose(out[1], np.log1p(np.array(tpm_row) / sum(tpm_row) * 1e4), rtol=1e-6)
    np.testing.assert_allclose(out[2], np.log1p(np.array(counts_row) / 10 * 1e4), rtol=1e-6)
    assert max(out[1]) < 10


def test_query_errors_list_what_is_available(built):
    with pytest.raises(KeyError, match="Unknown metadata field.*'tissue_general'"):
        load_cohort(built[0], conditions={"organ": "blood"}, label_column="condition")
    with pytest.raises(ValueError, match=r"No meta-cells match.*'condition': \['control', 'stim'\]"):
        load_cohort(built[0], conditions={"dataset_id": "kang2018_muscat", "condition": "LPS"}, label_column="condition")
    with pytest.raises(ValueError, match="Config 'lung' not in the dataset"):
        load_cohort(built[0], config="lung", label_column="condition")


def test_pretraining_steps_lower_loss_and_round_trip(built, graph, tmp_path):
    from transformers import AutoModel

    from dataset_script.cohorts.loader import (
        expression_tensors,
        gene_panels,
        load_cells,
    )
    from modeling_celltosg import CellTOSGConfig, CellTOSGForPreTraining
    from omnicelltosg.train import pretrain

    g, _ = graph
    cells = load_cells(built[0], conditions={"dataset_id": "kang2018_muscat"})
    x, m = expression_tensors(cells, g.num_transcripts, gene_panels(built[0]))
    torch.manual_seed(0)
    model = CellTOSGForPreTraining(CellTOSGConfig.for_graph(g))  # the default (CPU-sized) GAT
    res = pretrain(model, x, m, g, steps=30, batch_size=4, learning_rate=3e-3, seed=0, eval_max_cells=16)
    curve = res["loss_curve"]
    assert np.mean(curve[-8:]) < 0.9 * np.mean(curve[:8])
    assert 0.0 <= res["auroc"] <= 1.0 and res["n_test_edges"] > 0
    model.save_pretrained(tmp_path / "ckpt")
    loaded = AutoModel.from_pretrained(tmp_path / "ckpt").eval()
    model.eval()
    with torch.no_grad():
        a = model.celltosg(expression=x[:3], graph=g, measured_mask=m[:3]).last_hidden_state
        b = loaded(expression=x[:3], graph=g, measured_mask=m[:3]).last_hidden_state
    saved, reloaded = model.celltosg.state_dict(), loaded.state_dict()
    assert saved.keys() == reloaded.keys() and all(torch.equal(saved[k], reloaded[k]) for k in saved)
    # identical weights; outputs equal up to the summation order of multi-threaded CPU kernels
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_finetuning_lowers_loss_on_real_cohort(kang, graph):
    from modeling_celltosg import CellTOSGConfig, CellTOSGForCellClassification
    from omnicelltosg.train import finetune

    g, _ = graph
    x, m, y = kang.tensors()
    torch.manual_seed(0)
    cfg = CellTOSGConfig.for_graph(g, layer_type="gcn", num_labels=2)
    res = finetune(CellTOSGForCellClassification(cfg), x, m, y, g, train_idx=torch.as_tensor(kang.splits["train"]),
                   val_idx=torch.as_tensor(kang.splits["validation"]), test_idx=torch.as_tensor(kang.splits["test"]),
                   epochs=4, batch_size=8, learning_rate=3e-3, seed=0)
    assert res["train_loss_curve"][-1] < res["train_loss_curve"][0]
    assert res["best_epoch"] == int(np.argmax(res["val_macro_f1_curve"]))
    assert len(res["test_predictions"]) == len(kang.splits["test"])


def test_signaling_on_real_kang_cohort(kang, graph, tmp_path):
    """Signaling output shapes on the real graph and cohort (untrained GAT: shapes, not biology)."""
    from modeling_celltosg import CellTOSGConfig, CellTOSGForCellClassification
    from omnicelltosg.tools.signaling import (
        edge_attention,
        infer_signaling,
        node_expression,
        write_signaling,
    )

    g, entities = graph
    x, m, _ = kang.tensors()
    torch.manual_seed(0)
    cfg = CellTOSGConfig.for_graph(g, hidden_size=8, num_labels=2)
    idx = np.r_[0:12, len(x) - 12:len(x)]  # both conditions
    pairs, weights = edge_attention(CellTOSGForCellClassification(cfg).eval(), x[idx], m[idx], g, batch_size=8)
    assert weights.shape == (len(idx), g.ppi_edge_index.shape[1]) and pairs.shape == (2, weights.shape[1])
    assert (weights >= 0).all() and np.isfinite(weights).all()
    groups = np.asarray(kang.cells["condition"])[idx]
    assert set(groups) == {"control", "stim"}
    result = infer_signaling(weights, pairs, node_expression(x[idx].numpy(), g), groups, case="stim",
                             control="control", symbols=entities["symbol"].to_numpy()[g.num_transcripts:],
                             num_transcripts=g.num_transcripts, top_k=30)
    assert len(result.nodes) == g.num_proteins and len(result.edges) == weights.shape[1]
    assert 0 < result.core.number_of_nodes() <= 30
    # ISG15 is the textbook IFN-β response gene: it must come out up-regulated in stim meta-cells.
    isg15 = result.nodes.set_index("symbol").loc["ISG15"]
    assert isg15["log2_fold_change"] > 1
    paths = write_signaling(result, tmp_path, title="test")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())
