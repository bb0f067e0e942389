"""``run_sweep`` with the pretraining objectives of issue 18 (masked-expression modelling, per-cell edge
scoring) on the small real build: the options reach the model, every method is scored on the same
held-out pairs, and a half-specified objective is refused before ``out`` is written."""

from __future__ import annotations

import json

import pytest

from omnicelltosg.train import PretrainingArguments
from omnicelltosg.workflows.pretrain_sweep import run_sweep

TINY = PretrainingArguments(steps=2, batch_size=4, eval_max_cells=8)


def test_sweep_with_masked_expression_and_per_cell_edges(built, tmp_path):
    dataset, _, _ = built
    out = tmp_path / "sweep"
    res = run_sweep(dataset, out, ratios=[0.1], pretraining=TINY.with_overrides(gene_mask_ratio=0.2), max_cells=16,
                    gae_epochs=2, model={"per_cell_edges": True, "expression_loss_weight": 1.0})
    assert res["settings"]["gene_mask_ratio"] == 0.2
    assert res["settings"]["model"]["per_cell_edges"] is True and res["settings"]["model"]["expression_loss_weight"] == 1.0
    fm = res["celltosg_fm"]["0.1"]
    for ev in [fm, *res["baselines"].values()]:
        for kind in ("random", "degree_matched"):
            assert 0.0 <= ev[kind]["auroc"] <= 1.0 and 0.0 <= ev[kind]["ap"] <= 1.0
    table = (out / "pretraining_sweep.md").read_text()
    assert "masked-expression modelling: 0.2 of the measured genes per cell, loss weight 1" in table
    assert "per_cell_edges" in table
    assert json.loads((out / "pretraining_sweep.json").read_text())["n_test_edges"] == res["n_test_edges"] > 0


def test_gene_masking_without_the_expression_head_is_refused_before_writing(built, tmp_path):
    dataset, _, _ = built
    out = tmp_path / "sweep"
    with pytest.raises(ValueError, match="gene_mask_ratio"):
        run_sweep(dataset, out, ratios=[0.1], pretraining=TINY.with_overrides(gene_mask_ratio=0.2), max_cells=16,
                  gae_epochs=2)
    assert not out.exists()
