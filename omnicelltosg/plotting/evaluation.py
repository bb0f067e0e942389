"""Figures of ``omnicelltosg evaluate`` (matplotlib, umap-learn, scikit-learn; PNG, written atomically):
pooled confusion matrices, UMAPs of the fine-tuned model's cell embeddings next to expression PCA, and the
gene-embedding heatmap. The training curves are :func:`omnicelltosg.plotting.curves.plot_curves`."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import confusion_matrix

from omnicelltosg.plotting import save_figure


def plot_confusions(predictions: dict, label_names: list[str], out: Path, *, models: list[str | None]) -> dict:
    """Row-normalised confusion matrix per model, test predictions pooled over all runs; cell text =
    counts. Writes ``out/confusion_<model>.png``.

    Args:
        predictions: (model, variant, seed) → {"truth": int ``[T]``, "pred": int ``[T]``, …} (class indices).
        label_names: the ``K`` class names, indexed by class index.
        out: output folder; models: the models to draw (None entries and models without runs are skipped).

    Returns: {model: PNG path}.
    """
    paths = {}
    k = len(label_names)
    for model in [m for m in models if m]:
        keys = [key for key in predictions if key[0] == model]
        if not keys:
            continue
        cm = sum(confusion_matrix(predictions[key]["truth"], predictions[key]["pred"], labels=np.arange(k)) for key in keys)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.0 * k + 2))
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.6 else "black")
        short = [n if len(n) <= 22 else n[:20] + "…" for n in label_names]
        ax.set_xticks(range(k), short, rotation=40, ha="right")
        ax.set_yticks(range(k), short)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{model}: test, {len(keys)} runs pooled")
        fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
        paths[model] = save_figure(fig, out / f"confusion_{model}.png")
    return paths


def plot_umaps(embeddings: np.ndarray, expression: np.ndarray, cohort, variant: int, path: Path, *,
               label_column: str, seed: int = 0) -> Path:
    """UMAP (umap-learn, 15 neighbours) of the fine-tuned FM's cell embeddings next to UMAP of PCA
    (50 components, scikit-learn) on log-normalised expression; coloured by label and by donor, test
    meta-cells circled.

    Args:
        embeddings: float ``[M, d]`` cell embeddings (:func:`omnicelltosg.workflows.evaluate.cell_embeddings`).
        expression: float ``[M, G]`` log-normalised expression of the measured genes; rows as ``embeddings``.
        cohort: the ``Cohort`` of those rows (labels, donors, splits); variant: its split variant (title).
        path: the PNG to write; label_column: name of the label in the panel titles; seed: PCA / UMAP seed.
    """
    import umap
    from sklearn.decomposition import PCA

    labels = np.asarray(cohort.label_names)[cohort.labels]
    donors = np.asarray(cohort.cells["donor_id"]).astype(str)
    split = np.empty(len(labels), dtype=object)
    for name, idx in cohort.splits.items():
        split[idx] = name
    n_pc = int(min(50, expression.shape[1], expression.shape[0] - 1))
    pcs = PCA(n_components=n_pc, random_state=seed).fit_transform(expression)
    coords = {"CellTOSG-FM cell embeddings": umap.UMAP(random_state=seed, n_neighbors=15).fit_transform(embeddings),
              f"PCA ({n_pc} PCs) of expression": umap.UMAP(random_state=seed, n_neighbors=15).fit_transform(pcs)}
    fig, axes = plt.subplots(2, 2, figsize=(12, 10))
    for col, (title, xy) in enumerate(coords.items()):
        for row, (what, values) in enumerate(((label_column, labels), ("donor", donors))):
            ax = axes[row, col]
            cats = sorted(set(values))
            cmap = plt.get_cmap("tab10" if len(cats) <= 10 else "tab20")
            for i, cat in enumerate(cats):
                sel = values == cat
                ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=cmap(i % cmap.N), label=cat, alpha=0.8)
            test = split == "test"
            ax.scatter(xy[test, 0], xy[test, 1], s=18, facecolors="none", edgecolors="k", linewidths=0.3)
            ax.set_title(f"{title}\ncoloured by {what}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            if len(cats) <= 20:
                ax.legend(fontsize=7, markerscale=1.5, loc="best")
    unit = "cells" if cohort.split.test_level == "cell" else "meta-cells"  # single-cell rows (pbmc68k)
    fig.suptitle(f"UMAP, split {variant}: all cohort {unit} (test {unit} circled)")
    return save_figure(fig, path)


def plot_embedding_heatmap(model, expression, measured_mask, graph, cohort, path: Path, *, label_column: str,
                           n_genes: int = 5000, batch_size: int = 16) -> Path:
    """Paper Figure 4c analogue: meta-cells (rows, ordered by label) × the `n_genes` highest-variance
    measured genes (columns), left: log-normalised expression, right: the fine-tuned model's transcript
    node embedding projected on its first principal component (over all cells and genes), both
    z-scored per gene. Genes are ordered by the label whose mean expression is highest, then by that mean.

    Shapes: `expression`, `measured_mask` `[M, Nt]`; uses `model.celltosg`'s `last_hidden_state` `[B, N, d]`.
    """
    import torch

    x = expression.numpy()
    measured = measured_mask.numpy().any(0)
    var = np.where(measured, x.var(0), -np.inf)
    genes = np.argsort(-var)[: int(min(n_genes, measured.sum()))]
    labels = cohort.labels
    order = np.argsort(labels, kind="stable")
    model.eval()
    states = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            h = model.celltosg(expression[i:i + batch_size], graph, measured_mask=measured_mask[i:i + batch_size]).last_hidden_state
            states.append(h[:, torch.as_tensor(genes)].numpy())  # last_hidden_state [b, N, d] → [b, G, d]
    emb = np.concatenate(states)  # [M, G, d]
    flat = emb.reshape(-1, emb.shape[-1])
    flat = flat - flat.mean(0)
    pc1 = np.linalg.svd(flat[:: max(1, len(flat) // 200_000)], full_matrices=False)[2][0]
    score = (emb - emb.reshape(-1, emb.shape[-1]).mean(0)) @ pc1  # [M, G]

    def z(a):
        return (a - a.mean(0)) / (a.std(0) + 1e-8)

    ex = z(x[:, genes])
    means = np.stack([ex[labels == k].mean(0) for k in range(len(cohort.label_names))])
    gene_order = np.lexsort((-means.max(0), means.argmax(0)))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    for ax, mat, title in ((axes[0], ex, "log-normalised expression"), (axes[1], z(score), "CellTOSG-FM gene embedding (PC1)")):
        im = ax.imshow(mat[order][:, gene_order], aspect="auto", cmap="RdBu_r", vmin=-2.5, vmax=2.5, interpolation="nearest")
        ax.set_title(f"{title}\n{len(genes)} highest-variance genes (z-score per gene)", fontsize=10)
        ax.set_xlabel("genes")
    bounds = np.cumsum(np.bincount(labels[order], minlength=len(cohort.label_names)))
    starts = np.concatenate([[0], bounds[:-1]])
    axes[0].set_yticks((starts + bounds) / 2 - 0.5, [n if len(n) <= 24 else n[:22] + "…" for n in cohort.label_names],
                       fontsize=8)
    for ax in axes:
        for b in bounds[:-1]:
            ax.axhline(b - 0.5, color="k", lw=0.6)
    axes[0].set_ylabel(f"meta-cells ordered by {label_column}")
    fig.colorbar(im, ax=axes, fraction=0.02)
    return save_figure(fig, path)


__all__ = ["plot_confusions", "plot_umaps", "plot_embedding_heatmap"]
