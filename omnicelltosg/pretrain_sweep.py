"""``omnicelltosg pretrain-sweep``: masked-edge pretraining at several mask ratios, evaluated on held-out
PPI pairs next to link-prediction baselines on the SAME pairs and negatives (issue 5).

For each mask ratio a fresh CellTOSG-FM (same seed, same settings) is pretrained; the held-out pairs
(``held_out_fraction`` of the STRING pairs, removed from the graph for good) are scored against random
and degree-matched negatives: AUROC, AP, Hits@50. Baselines on the training graph: common neighbours,
Adamic–Adar, degree product, and a GAE without any prior (:mod:`modeling_celltosg.link_prediction`).
Writes ``pretraining_sweep.md``, ``pretraining_sweep.json`` and ``pretraining_sweep.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from dataset_script.loader import expression_tensors, gene_panels, load_cells, load_graph
from modeling_celltosg import CellTOSGConfig, CellTOSGForPretraining
from modeling_celltosg.link_prediction import gae_scores, heuristic_scores, train_gae
from modeling_celltosg.training import evaluate_link_prediction, pretrain, split_ppi_edges

DEFAULT_RATIOS = (1e-3, 0.1, 0.5, 0.7)
MODEL_SETTINGS = {"hidden_size": 16, "num_layers": 2, "layer_type": "gat", "num_heads": 2, "dropout": 0.0}


def run_sweep(dataset_dir: Path, out: Path, *, ratios=DEFAULT_RATIOS, steps: int = 60, batch_size: int = 8,
              lr: float = 3e-3, held_out_fraction: float = 0.1, max_cells: int = 512, seed: int = 0,
              negatives: str = "mixed", gae_epochs: int = 200) -> dict:
    """Run the sweep and the baselines; returns the results dict (also written to ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    graph, _ = load_graph(dataset_dir)
    cells = load_cells(dataset_dir)
    rows = np.random.default_rng(seed).permutation(len(cells))[:max_cells]
    x, m = expression_tensors(cells.select(np.sort(rows)), graph.num_transcripts, gene_panels(dataset_dir))
    train_edges, test_edges = split_ppi_edges(graph.ppi_edge_index, held_out_fraction, seed)
    all_pairs = graph.ppi_edge_index
    protein_range = (graph.num_transcripts, graph.num_nodes)
    results: dict = {"settings": {"steps": steps, "batch_size": batch_size, "lr": lr, "negatives": negatives,
                                  "held_out_fraction": held_out_fraction, "n_cells": int(len(x)), "seed": seed,
                                  "model": MODEL_SETTINGS},
                     "n_train_edges": int(train_edges.size(1)), "n_test_edges": int(test_edges.size(1)),
                     "celltosg_fm": {}, "baselines": {}}
    for ratio in ratios:
        torch.manual_seed(seed)
        config = CellTOSGConfig.for_graph(graph, **MODEL_SETTINGS)
        t = time.perf_counter()
        res = pretrain(CellTOSGForPretraining(config), x, m, graph, steps=steps, batch_size=batch_size, lr=lr,
                       mask_ratio=ratio, held_out_fraction=held_out_fraction, seed=seed, negatives=negatives)
        assert torch.equal(res["test_edges"], test_edges)  # every method is scored on the same pairs
        results["celltosg_fm"][str(ratio)] = res["evaluation"] | {
            "masked_edges_per_step": max(1, int(round(ratio * res["n_train_edges"]))),
            "seconds": time.perf_counter() - t, "loss_first10": float(np.mean(res["loss_curve"][:10])),
            "loss_last10": float(np.mean(res["loss_curve"][-10:]))}
    n = graph.num_nodes
    for name in ("common_neighbours", "adamic_adar", "degree_product"):
        results["baselines"][name] = evaluate_link_prediction(
            lambda p, name=name: heuristic_scores(train_edges, p, n)[name], train_edges, test_edges, all_pairs, n,
            protein_range, seed)
    t = time.perf_counter()
    z = train_gae(train_edges, n, epochs=gae_epochs, seed=seed)
    results["baselines"]["gae_no_priors"] = evaluate_link_prediction(
        lambda p: gae_scores(z, p), train_edges, test_edges, all_pairs, n, protein_range, seed)
    results["baselines"]["gae_no_priors"]["seconds"] = time.perf_counter() - t
    (out / "pretraining_sweep.json").write_text(json.dumps(results, indent=2))
    (out / "pretraining_sweep.md").write_text(render_table(results))
    plot_sweep(results, out / "pretraining_sweep.png")
    return results


def render_table(results: dict) -> str:
    """Markdown: one row per model (mask ratio / baseline), AUROC / AP / Hits@50 against both negatives."""
    s = results["settings"]
    lines = [f"# Masked-edge pretraining: mask ratio sweep ({results['n_test_edges']:,} held-out STRING pairs, "
             f"{results['n_train_edges']:,} training pairs)", "",
             f"CellTOSG-FM ({s['model']['layer_type']}, hidden {s['model']['hidden_size']}, "
             f"{s['model']['num_layers']} layers), {s['steps']} steps × {s['batch_size']} cells, lr {s['lr']}, "
             f"training negatives: {s['negatives']}; {s['n_cells']} meta-cells; seed {s['seed']}.", "",
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
    import matplotlib

    matplotlib.use("Agg")
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
