"""``omnicelltosg pretrain-sweep``: masked-edge pretraining at several mask ratios, evaluated on held-out
PPI pairs next to link-prediction baselines on the SAME pairs and negatives (issue 5).

For each mask ratio a fresh CellTOSG-FM (same seed, same settings) is pretrained; the held-out pairs
(``held_out_fraction`` of the STRING pairs, removed from the graph for good) are scored against random
and degree-matched negatives: AUROC, AP, Hits@50. Baselines on the training graph: common neighbours,
Adamic–Adar, degree product, and a GAE without any prior (:mod:`omnicelltosg.evaluation.link_prediction`).
Writes ``pretraining_sweep.md``, ``pretraining_sweep.json`` and ``pretraining_sweep.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from dataset_script.cohorts.loader import (
    expression_tensors,
    gene_panels,
    load_cells,
    load_graph,
)
from dataset_script.files import atomic_write_text
from modeling_celltosg import CellTOSGConfig, CellTOSGForPreTraining
from omnicelltosg.evaluation.link_prediction import (
    evaluate_link_prediction,
    gae_scores,
    heuristic_scores,
    split_ppi_edges,
    train_gae,
)
from omnicelltosg.plotting import save_figure
from omnicelltosg.train import PretrainingArguments, pretrain

#: Mask ratios of the sweep: from one pair per step to most of the training pairs.
DEFAULT_RATIOS = (1e-3, 0.1, 0.5, 0.7)
#: Model hyper-parameters shown in the table (the model is the default ``CellTOSGConfig``).
MODEL_FIELDS = ("layer_type", "hidden_size", "num_layers", "num_heads", "dropout")


def _baselines(graph, train_edges, test_edges, seed: int, gae_epochs: int) -> dict:
    """Common neighbours, Adamic–Adar, degree product and a GAE without priors, on the training graph,
    scored on the held-out pairs against the same negatives as the model."""
    n, all_pairs = graph.num_nodes, graph.ppi_edge_index
    protein_range = (graph.num_transcripts, graph.num_nodes)
    baselines = {}
    for name in ("common_neighbours", "adamic_adar", "degree_product"):
        baselines[name] = evaluate_link_prediction(
            lambda p, name=name: heuristic_scores(train_edges, p, n)[name], train_edges, test_edges, all_pairs, n,
            protein_range, seed)
    t = time.perf_counter()
    z = train_gae(train_edges, n, epochs=gae_epochs, seed=seed)
    baselines["gae_no_priors"] = evaluate_link_prediction(
        lambda p: gae_scores(z, p), train_edges, test_edges, all_pairs, n, protein_range, seed)
    baselines["gae_no_priors"]["seconds"] = time.perf_counter() - t
    return baselines


def run_sweep(dataset_dir: Path, out: Path, *, ratios=DEFAULT_RATIOS, pretraining: PretrainingArguments | None = None,
              max_cells: int = 512, gae_epochs: int = 200, model: dict | None = None) -> dict:
    """Run the sweep and the baselines; returns the results dict (also written to ``out``).

    Args:
        dataset_dir: dataset folder (``omnicelltosg build`` output); out: output folder.
        ratios: mask ratios; each replaces ``pretraining.mask_ratio`` for one fresh model.
        pretraining: steps, batch size, learning rate, held-out fraction, negatives and seed of every
            model (default :class:`~omnicelltosg.train.PretrainingArguments`); the seed also picks the
            ``max_cells`` meta-cells and the held-out pairs.
        max_cells: meta-cells sampled from the dataset; gae_epochs: epochs of the GAE baseline.
        model: ``CellTOSGConfig`` fields that replace the defaults of every model (e.g.
            ``{"per_cell_edges": True, "expression_loss_weight": 1.0}`` with ``pretraining.gene_mask_ratio > 0``:
            masked-expression modelling and per-cell edge scoring); recorded in the results.

    Raises:
        ValueError: no ratio, or a ratio outside (0, 1) (checked first); OSError / ValueError: no valid
            dataset at ``dataset_dir``. Both before ``out`` is created: its files are written atomically
            at the end (the folder appears with them).
    """
    args = pretraining or PretrainingArguments()
    ratios = list(ratios)
    if not ratios:
        raise ValueError("ratios (--ratios): give at least one mask ratio in (0, 1)")
    for ratio in ratios:
        try:
            args.with_overrides(mask_ratio=ratio)
        except (ValueError, TypeError) as err:
            raise ValueError(f"ratios (--ratios): {err}") from None
    out = Path(out)
    graph, _ = load_graph(dataset_dir)
    cells = load_cells(dataset_dir)
    rows = np.random.default_rng(args.seed).permutation(len(cells))[:max_cells]
    x, m = expression_tensors(cells.select(np.sort(rows)), graph.num_transcripts, gene_panels(dataset_dir))
    train_edges, test_edges = split_ppi_edges(graph.ppi_edge_index, args.held_out_fraction, args.seed)
    model = dict(model or {})
    config = CellTOSGConfig.for_graph(graph, **model)  # invalid fields fail here, before any training
    swept = {k: v for k, v in args.to_dict().items() if k != "mask_ratio"}  # the ratio varies per model
    results: dict = {"settings": {**swept, "n_cells": int(len(x)),
                                  "model": {k: getattr(config, k) for k in (*MODEL_FIELDS, *model)}},
                     "n_train_edges": int(train_edges.size(1)), "n_test_edges": int(test_edges.size(1)),
                     "celltosg_fm": {}, "baselines": {}}
    for ratio in ratios:
        torch.manual_seed(args.seed)
        t = time.perf_counter()
        res = pretrain(CellTOSGForPreTraining(CellTOSGConfig.for_graph(graph, **model)), x, m, graph, args,
                       mask_ratio=ratio)
        assert torch.equal(res["test_edges"], test_edges)  # every method is scored on the same pairs
        results["celltosg_fm"][str(ratio)] = res["evaluation"] | {
            "masked_edges_per_step": max(1, int(round(ratio * res["n_train_edges"]))),
            "seconds": time.perf_counter() - t, "loss_first10": float(np.mean(res["loss_curve"][:10])),
            "loss_last10": float(np.mean(res["loss_curve"][-10:]))}
    results["baselines"] = _baselines(graph, train_edges, test_edges, args.seed, gae_epochs)
    atomic_write_text(out / "pretraining_sweep.json", json.dumps(results, indent=2))
    atomic_write_text(out / "pretraining_sweep.md", render_table(results))
    plot_sweep(results, out / "pretraining_sweep.png")
    return results


def render_table(results: dict) -> str:
    """Markdown: one row per model (mask ratio / baseline), AUROC / AP / Hits@50 against both negatives."""
    s = results["settings"]
    lines = [f"# Masked-edge pretraining: mask ratio sweep ({results['n_test_edges']:,} held-out STRING pairs, "
             f"{results['n_train_edges']:,} training pairs)", "",
             f"CellTOSG-FM ({s['model']['layer_type']}, hidden {s['model']['hidden_size']}, "
             f"{s['model']['num_layers']} layers), {s['steps']} steps × {s['batch_size']} cells, lr {s['learning_rate']}, "
             f"training negatives: {s['negatives']}; {s['n_cells']} meta-cells; seed {s['seed']}"
             + (f"; masked-expression modelling: {s['gene_mask_ratio']:g} of the measured genes per cell, loss weight "
                f"{s['model'].get('expression_loss_weight', 0):g}" if s.get("gene_mask_ratio") else "")
             + ("; masked pairs scored in every cell (per_cell_edges)" if s["model"].get("per_cell_edges") else "")
             + ".", "",
             "| model | masked / step | AUROC (random) | AP (random) | Hits@50 (random) | AUROC (deg.-matched) "
             "| AP (deg.-matched) | Hits@50 (deg.-matched) |",
             "|---|---|---|---|---|---|---|---|"]

    def row(name, ev, masked=""):
        r, d = ev["random"], ev["degree_matched"]
        return (f"| {name} | {masked} | {r['auroc']:.3f} | {r['ap']:.3f} | {r['hits@50']:.3f} | {d['auroc']:.3f} "
                f"| {d['ap']:.3f} | {d['hits@50']:.3f} |")
    for ratio, ev in results["celltosg_fm"].items():
        lines.append(row(f"CellTOSG-FM, mask ratio {ratio}", ev, f"{ev['masked_edges_per_step']:,}"))
    for name, ev in results["baselines"].items():
        lines.append(row(name.replace("_", " "), ev))
    return "\n".join(lines) + "\n"


def plot_sweep(results: dict, path: Path) -> None:
    """AUROC vs mask ratio (both negative kinds), baselines as horizontal lines."""
    import matplotlib.pyplot as plt

    ratios = [float(r) for r in results["celltosg_fm"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, kind in zip(axes, ("random", "degree_matched")):
        ax.plot(ratios, [results["celltosg_fm"][str(r)][kind]["auroc"] for r in results["celltosg_fm"]], "o-",
                color="black", label="CellTOSG-FM")
        for (name, ev), c in zip(results["baselines"].items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
            ax.axhline(ev[kind]["auroc"], color=c, ls="--", label=name.replace("_", " "))
        ax.set_xscale("log")
        ax.set_xlabel("mask ratio (fraction of training pairs masked per step)")
        ax.set_title(f"held-out PPI, {kind.replace('_', '-')} negatives")
        ax.set_ylim(0.4, 1.0)
    axes[0].set_ylabel("AUROC")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
