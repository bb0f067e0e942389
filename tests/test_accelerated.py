"""Accelerate pretraining loop: checkpoint + resume continues the same loss curve; a 2-process
``torchrun`` run on CPU keeps replicas identical and gathers metrics exactly once per pair (issue 5)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def small(built):
    from dataset_script.cohorts.loader import (
        expression_tensors,
        gene_panels,
        load_cells,
        load_graph,
    )

    graph, _ = load_graph(built[0])
    cells = load_cells(built[0], conditions={"dataset_id": "kang2018_muscat"})
    x, m = expression_tensors(cells.select(range(24)), graph.num_transcripts, gene_panels(built[0]))
    return graph, x, m


def _model(graph):
    from modeling_celltosg import CellTOSGConfig, CellTOSGForPreTraining

    torch.manual_seed(0)
    cfg = CellTOSGConfig.for_graph(graph, hidden_size=8, layer_type="gcn", dropout=0.0)
    return CellTOSGForPreTraining(cfg)


def test_resume_continues_the_same_loss_curve(small, tmp_path):
    from omnicelltosg.train.accelerated import pretrain_accelerated

    graph, x, m = small
    kw = dict(batch_size=4, learning_rate=3e-3, mask_ratio=0.1, seed=0, eval_max_cells=8)
    full = pretrain_accelerated(_model(graph), x, m, graph, tmp_path / "full", steps=4, **kw)
    first = pretrain_accelerated(_model(graph), x, m, graph, tmp_path / "cut", steps=2, **kw)
    assert first["resumed_from"] is None and len(first["loss_curve"]) == 2
    # a new model object (fresh weights) resumes from the step-2 checkpoint: weights, optimiser, curve
    resumed = pretrain_accelerated(_model(graph), x, m, graph, tmp_path / "cut", steps=4, **kw)
    assert resumed["resumed_from"] == 2
    np.testing.assert_allclose(resumed["loss_curve"], full["loss_curve"], rtol=1e-5)
    assert full["loss_curve"][-1] < full["loss_curve"][0]
    ev = full["evaluation"]["random"]
    assert ev["n_scored"] == 2 * full["n_test_edges"] and 0.0 <= ev["auroc"] <= 1.0 and "hits@50" in ev
    assert full["replica_max_difference"] == 0.0  # one process: nothing to differ from
    # without resume the run starts over (different curve from a resumed continuation is not asked)
    again = pretrain_accelerated(_model(graph), x, m, graph, tmp_path / "cut", steps=2, resume=False, **kw)
    assert again["resumed_from"] is None
    np.testing.assert_allclose(again["loss_curve"], full["loss_curve"][:2], rtol=1e-5)


def test_gradient_accumulation_runs_one_curve_point_per_step(small, tmp_path):
    from omnicelltosg.train.accelerated import pretrain_accelerated

    graph, x, m = small
    res = pretrain_accelerated(_model(graph), x, m, graph, tmp_path, steps=2, batch_size=2,
                               gradient_accumulation_steps=2, mask_ratio=0.1, eval_max_cells=4)
    assert len(res["loss_curve"]) == 2 and all(np.isfinite(res["loss_curve"]))


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun is not on PATH")
def test_torchrun_two_cpu_processes(built, tmp_path):
    from modeling_celltosg import CellTOSGForPreTraining

    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29531", "-m",
                           "omnicelltosg.train.accelerated", "--dataset", str(built[0]), "--out", str(out),
                           "--steps", "2", "--max-cells", "16", "--batch-size", "2", "--hidden-size", "8",
                           "--layer-type", "gcn"], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, "\n".join(l for l in proc.stderr.splitlines() if "it/s" not in l and "examples/s" not in l)[-6000:]
    result = json.loads((out / "result.json").read_text())
    assert result["num_processes"] == 2 and len(result["loss_curve"]) == 2
    # gather_for_metrics: every held-out pair and negative scored exactly once across the two ranks
    assert result["evaluation"]["random"]["n_scored"] == 2 * result["n_test_edges"]
    n_hard = result["evaluation"]["degree_matched"]["n_scored"] - result["n_test_edges"]
    assert 0.9 * result["n_test_edges"] <= n_hard <= result["n_test_edges"]
    # DDP kept the replicas identical: every parameter tensor's sum agrees across the ranks (gathered)
    assert result["replica_max_difference"] == 0.0
    card = (out / "model" / "README.md").read_text()  # model card rendered with this run's real metrics
    assert f"{result['evaluation']['random']['auroc']:.4f}" in card and "2 process(es)" in card
    model = CellTOSGForPreTraining.from_pretrained(out / "model")
    assert model.config.hidden_size == 8 and model.config.layer_type == "gcn"


def test_bf16_mixed_precision_on_cpu_through_the_pretrain_command(built, tmp_path):
    out = tmp_path / "bf16"
    proc = subprocess.run([sys.executable, "-m", "omnicelltosg.cli", "pretrain", "--dataset", str(built[0]),
                           "--out", str(out), "--steps", "2", "--max-cells", "8", "--batch-size", "2",
                           "--hidden-size", "8", "--layer-type", "gat", "--mixed-precision", "bf16"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert len(result["loss_curve"]) == 2 and all(np.isfinite(result["loss_curve"]))
    assert 0.0 <= result["evaluation"]["random"]["auroc"] <= 1.0
