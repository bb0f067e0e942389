"""The signaling network figure (matplotlib, Agg canvas; PNG) of a
:class:`omnicelltosg.tools.signaling.SignalingResult`."""

from __future__ import annotations

import os
from pathlib import Path

import networkx as nx
import numpy as np

from dataset_script.files import atomic_file


def _place_labels(ax, core, pos, nodes, sizes, sig, label_all: bool, scale: float) -> None:
    """Label significant nodes (bold) and, for small cores, all others; each label goes above its node,
    else below, right or left, whichever first avoids the labels already placed (greedy, significant and
    large nodes first)."""
    from matplotlib import patheffects

    renderer = ax.figure.canvas.get_renderer()
    placed = []
    for i in sorted(range(len(nodes)), key=lambda i: (not sig[i], -sizes[i])):
        if not (sig[i] or label_all):
            continue
        r = 2 + np.sqrt(sizes[i]) / 2
        candidates = ((0, r, "center", "bottom"), (0, -r, "center", "top"), (r, 0, "left", "center"),
                      (-r, 0, "right", "center"))
        for k, (dx, dy, ha, va) in enumerate(candidates):
            text = ax.annotate(core.nodes[nodes[i]]["symbol"], pos[nodes[i]], xytext=(dx, dy), textcoords="offset points",
                               ha=ha, va=va, fontsize=(8.5 if sig[i] else 6.5) * scale, zorder=4,
                               fontweight="bold" if sig[i] else "normal",
                               path_effects=[patheffects.withStroke(linewidth=2.5, foreground="white")])
            box = text.get_window_extent(renderer)
            if k == len(candidates) - 1 or not any(box.overlaps(other) for other in placed):
                break  # a free spot, or the last candidate (kept even if it overlaps)
            text.remove()
        placed.append(box)


def _draw_nodes_and_edges(ax, core: nx.Graph, scale: float):
    """Edges (width ∝ case weight), nodes (size ∝ case importance, colour = log2 fold change, significant
    ones outlined in black) and their labels; returns the node scatter (for the colour bar)."""
    from matplotlib.colors import TwoSlopeNorm

    nodes = sorted(core.nodes)
    pos = nx.spring_layout(core, seed=0, k=2.0 / np.sqrt(len(nodes)), iterations=200, weight=None)
    imp = np.nan_to_num(np.array([core.nodes[n]["importance_case"] for n in nodes], float), nan=0.0)
    max_size = float(np.clip(1500 * np.sqrt(15 / len(nodes)), 300, 1500))
    sizes = max_size * (0.12 + 0.88 * (imp - imp.min()) / (np.ptp(imp) or 1.0))
    lfc = np.nan_to_num(np.array([core.nodes[n]["log2_fold_change"] for n in nodes], float), nan=0.0)
    bound = max(float(np.abs(lfc).max()), 1e-3)
    sig = np.array([bool(core.nodes[n]["significant"]) for n in nodes])
    w = np.array([d["weight_case"] for _, _, d in core.edges(data=True)], float)
    widths = 0.5 + 4.5 * (w - w.min()) / (np.ptp(w) or 1.0) if len(w) else []
    nx.draw_networkx_edges(core, pos, ax=ax, width=widths, edge_color="#8c8c8c", alpha=0.7)
    scatter = ax.scatter([pos[n][0] for n in nodes], [pos[n][1] for n in nodes], s=sizes, c=lfc, cmap="RdBu_r",
                         norm=TwoSlopeNorm(0.0, -bound, bound), edgecolors=np.where(sig, "black", "#bdbdbd"),
                         linewidths=np.where(sig, 2.5, 0.8), zorder=3)
    ax.margins(0.08)
    _place_labels(ax, core, pos, nodes, sizes, sig, len(nodes) <= 40, scale)
    return scatter


def _legend(ax, scale: float) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", ls="", ms=10, mfc="white", mec="black", mew=2.5, label="significant (FDR)"),
        Line2D([], [], marker="o", ls="", ms=10, mfc="white", mec="#bdbdbd", mew=0.8, label="not significant"),
        Line2D([], [], marker="o", ls="", ms=5, mfc="#999999", mec="none", label="size ∝ importance (case)"),
        Line2D([], [], color="#8c8c8c", lw=3, label="width ∝ attention (case)"),
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=8 * scale, frameon=False)


def plot_signaling_network(result, path: str | os.PathLike, *, title: str) -> Path:
    """Draw the core subgraph of a signaling result as a PNG at `path` (written atomically).

    Spring layout (networkx, seed 0); node size ∝ case importance, colour = log2 fold change (diverging,
    centred at 0), significant genes outlined in black and labelled in bold; edge width ∝ case weight.
    The canvas grows with the core (8–16 inches, 150 dpi) and the fonts with it.

    Args:
        result: a :class:`omnicelltosg.tools.signaling.SignalingResult` (uses `core`, `case`, `control`).
        path: the PNG to write.
        title: figure title.

    Returns: `path` as a `Path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    core = result.core
    side = float(np.clip(7 + core.number_of_nodes() / 12, 8, 16))  # larger canvas for larger cores
    fig = Figure(figsize=(side * 1.15, side), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    scale = side / 9  # font scale, so labels keep their printed size relative to the canvas
    fig.suptitle(title, fontsize=14 * scale, fontweight="bold")
    fig.subplots_adjust(top=1 - 1.3 / side, bottom=0.5 / side)
    ax.set_title(f"{result.case} vs {result.control}: {core.number_of_nodes()} genes, "
                 f"{core.number_of_edges()} interactions", fontsize=10 * scale, pad=12 * scale)
    path = Path(path)
    with atomic_file(path) as tmp:
        if core.number_of_nodes() == 0:
            ax.text(0.5, 0.5, "empty core subgraph", ha="center", va="center", transform=ax.transAxes)
            fig.savefig(tmp, format="png")
        else:
            scatter = _draw_nodes_and_edges(ax, core, scale)
            bar = fig.colorbar(scatter, ax=ax, shrink=0.6, pad=0.02)
            bar.set_label(f"log2 fold change ({result.case} / {result.control})", fontsize=10 * scale)
            bar.ax.tick_params(labelsize=8 * scale)
            _legend(ax, scale)
            fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


__all__ = ["plot_signaling_network"]
