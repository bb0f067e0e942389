"""Signaling figures (matplotlib, Agg canvas; PNG) and the interactive network page (pyvis HTML):

- :func:`plot_signaling_network`: the paper method's core subgraph (a REPRODUCTION, labelled so on the
  figure) of a :class:`omnicelltosg.tools.signaling.SignalingResult`;
- :func:`plot_evidence_network` and :func:`write_network_html`: the default method's network of an
  :class:`omnicelltosg.tools.evidence_network.EvidenceNetworkResult`;
- :func:`plot_cell_type_comparison`: the default method per cell type, side by side.
"""

from __future__ import annotations

import html
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
    fig.text(0.01, 0.005, "paper method (REPRODUCTION of arXiv 2504.02148 §2.5: attention × expression, top-k, "
             "largest component, star-leaf pruning); not the default method", fontsize=7 * scale, color="#555555")
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



# The default method's network (omnicelltosg.tools.evidence_network) and the per-cell-type comparison.


def _evidence_layout(network: nx.Graph) -> dict:
    n = max(network.number_of_nodes(), 1)
    return nx.spring_layout(network, seed=0, k=2.2 / np.sqrt(n), iterations=300, weight=None)


def plot_evidence_network(result, path: str | os.PathLike, *, title: str) -> Path:
    """The evidence network as a PNG (written atomically): nodes coloured by log2 fold change (diverging,
    centred at 0), size ∝ |score|, terminals (genes with a prize) outlined in black, Steiner (linking)
    genes in grey outline; edges coloured by the tree's empirical p-value against the rewired null
    (dark = small p) and, when present, width ∝ |occlusion contrast| of the model. Legend and colour bars.

    Args:
        result: an :class:`omnicelltosg.tools.evidence_network.EvidenceNetworkResult`.
        path: the PNG; title: figure title.

    Returns: ``path`` as a ``Path``.
    """
    from matplotlib import colormaps, patheffects
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    g = result.network
    side = float(np.clip(7 + g.number_of_nodes() / 10, 8, 16))
    fig = Figure(figsize=(side * 1.2, side), dpi=130)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    fig.suptitle(title, fontsize=13, fontweight="bold")
    ax.set_title(f"{result.case} vs {result.control} ({result.direction}): {g.number_of_nodes()} genes, "
                 f"{g.number_of_edges()} interactions; {'with' if result.uses_attribution else 'without'} model "
                 "attributions", fontsize=10)
    path = Path(path)
    with atomic_file(path) as tmp:
        if g.number_of_nodes() == 0:
            ax.text(0.5, 0.5, "empty network", ha="center", va="center", transform=ax.transAxes)
            fig.savefig(tmp, format="png")
            return path
        pos = _evidence_layout(g)
        nodes = sorted(g.nodes)
        edges = list(g.edges(data=True))
        p_edge = np.array([d.get("p_tree", np.nan) for *_, d in edges], float)
        edge_cmap, edge_norm = _edge_p_colours()
        occl = np.array([abs(d.get("occlusion_contrast", np.nan)) for *_, d in edges], float)
        widths = (1.0 + 4.0 * occl / np.nanmax(occl)) if np.isfinite(occl).any() and np.nanmax(occl) > 0 else np.full(len(edges), 2.0)
        for (u, v, _), p, w in zip(edges, p_edge, np.nan_to_num(widths, nan=1.0)):
            ax.plot([pos[u][0], pos[v][0]], [pos[u][1], pos[v][1]], color=edge_cmap(edge_norm(np.nan_to_num(p, nan=1.0))),
                    lw=w, zorder=1, alpha=0.85)
        lfc = np.nan_to_num(np.array([g.nodes[n]["log2_fold_change"] for n in nodes], float), nan=0.0)
        bound = max(float(np.abs(lfc).max()), 1e-3)
        score = np.abs(np.nan_to_num(np.array([g.nodes[n]["score"] for n in nodes], float)))
        sizes = 120 + 900 * score / (score.max() or 1.0)
        terminal = np.array([bool(g.nodes[n]["terminal"]) for n in nodes])
        sc = ax.scatter([pos[n][0] for n in nodes], [pos[n][1] for n in nodes], s=sizes, c=lfc, cmap="RdBu_r",
                        norm=TwoSlopeNorm(0.0, -bound, bound), edgecolors=np.where(terminal, "black", "#9e9e9e"),
                        linewidths=np.where(terminal, 2.0, 1.0), zorder=3)
        for n, size in zip(nodes, sizes):
            ax.annotate(n, pos[n], xytext=(0, 3 + np.sqrt(size) / 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=8, zorder=4,
                        path_effects=[patheffects.withStroke(linewidth=2.5, foreground="white")])
        ax.margins(0.08)
        bar = fig.colorbar(sc, ax=ax, shrink=0.5, pad=0.01)
        bar.set_label(f"log2 fold change ({result.case} / {result.control})")
        from matplotlib.cm import ScalarMappable

        ebar = fig.colorbar(ScalarMappable(edge_norm, edge_cmap), ax=ax, shrink=0.5, pad=0.04)
        ebar.set_label("edge p-value vs degree-preserving rewired networks")
        handles = [Line2D([], [], marker="o", ls="", ms=10, mfc="white", mec="black", mew=2, label="terminal (prize)"),
                   Line2D([], [], marker="o", ls="", ms=10, mfc="white", mec="#9e9e9e", mew=1, label="linking gene (no prize)"),
                   Line2D([], [], marker="o", ls="", ms=5, mfc="#999999", mec="none", label="size ∝ |score|"),
                   Line2D([], [], color="#444444", lw=4, label="width ∝ |model occlusion contrast|")]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=8, frameon=False)
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def _edge_p_colours():
    """Colour map and norm of an edge p-value in [0, 1]: black (p = 0) to light grey (p = 1), never white, so
    every edge stays visible on the white page (matplotlib ``Greys_r`` cut at 5/6 of its range)."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap, Normalize

    return ListedColormap(colormaps["Greys_r"](np.linspace(0.0, 1.0 / 1.2, 256)), name="edge_p"), Normalize(0, 1)


def write_network_html(result, path: str | os.PathLike, *, title: str) -> Path:
    """The evidence network as a self-contained interactive HTML page (pyvis / vis-network, inline
    JavaScript, no network access needed): drag, zoom, hover for each gene's fold change, FDR, score,
    attribution z and empirical p-values; same colours as the PNG. Written atomically.

    Returns: ``path`` as a ``Path``.
    """
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm, to_hex
    from pyvis.network import Network

    g = result.network
    page = Network(height="800px", width="100%", bgcolor="#ffffff", font_color="#222222", cdn_resources="in_line")
    lfc = {n: float(np.nan_to_num(g.nodes[n]["log2_fold_change"], nan=0.0)) for n in g.nodes}
    bound = max([abs(v) for v in lfc.values()] + [1e-3])
    node_norm, node_cmap = TwoSlopeNorm(0.0, -bound, bound), colormaps["RdBu_r"]
    edge_cmap, edge_norm = _edge_p_colours()
    score_max = max([abs(float(np.nan_to_num(g.nodes[n]["score"]))) for n in g.nodes] + [1e-9])
    for n in sorted(g.nodes):
        d = g.nodes[n]
        tip = "\n".join([n, f"log2 FC {d['log2_fold_change']:.2f}", f"FDR {d['fdr']:.2g}", f"score {d['score']:.2f}",
                         f"attribution z {d['attribution_z']:.2f}", f"tree p {d['p_tree']:.2g}",
                         f"walk p {d['p_rwr']:.2g}", "terminal" if d["terminal"] else "linking gene"])
        page.add_node(n, label=n, title=tip, color={"background": to_hex(node_cmap(node_norm(lfc[n]))),
                                                    "border": "#000000" if d["terminal"] else "#9e9e9e"},
                      borderWidth=3 if d["terminal"] else 1, size=10 + 25 * abs(float(np.nan_to_num(d["score"]))) / score_max)
    for u, v, d in g.edges(data=True):
        p = float(np.nan_to_num(d.get("p_tree", np.nan), nan=1.0))
        page.add_edge(u, v, color=to_hex(edge_cmap(edge_norm(p))), width=2,
                      title=f"{u}–{v}: confidence {d['confidence']:.3f}, tree p {p:.2g}, "
                            f"occlusion {d.get('occlusion_contrast', float('nan')):.3g}")
    page.toggle_physics(True)
    caption = (f"<h3 style='font-family:sans-serif'>{html.escape(title)}</h3><p style='font-family:sans-serif;"
               f"font-size:13px'>{result.case} vs {result.control} ({result.direction}): {g.number_of_nodes()} genes, "
               f"{g.number_of_edges()} interactions. Node colour: log2 fold change (red up, blue down); black border: "
               "terminal (prize), grey: linking gene; size ∝ |score|. Edge shade: p-value against degree-preserving "
               "rewired networks (dark = small). Hover a node or an edge for its numbers; drag and zoom.</p>")
    path = Path(path)
    with atomic_file(path) as tmp:
        Path(tmp).write_text(page.generate_html(notebook=False).replace("<body>", "<body>" + caption, 1), encoding="utf-8")
    return path


def plot_cell_type_comparison(results: dict, path: str | os.PathLike, *, title: str, n_genes: int = 8) -> Path:
    """Per-cell-type signaling compared: a heatmap of the score of the union of each cell type's
    ``n_genes`` best genes (rows) in every cell type (columns), dots on genes in that cell type's
    network. Written atomically.

    Args:
        results: cell type → :class:`omnicelltosg.tools.evidence_network.EvidenceNetworkResult`.

    Returns: ``path`` as a ``Path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    types = sorted(results)
    genes: list[str] = []
    for ct in types:
        genes += [s for s in results[ct].nodes["symbol"].head(n_genes) if s not in genes]
    score = np.array([[float(results[ct].nodes.set_index("symbol")["score"].get(g, np.nan)) for ct in types] for g in genes])
    member = np.array([[g in results[ct].network for ct in types] for g in genes])
    fig = Figure(figsize=(2.2 + 1.3 * len(types), 1.6 + 0.22 * len(genes)), dpi=130)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bound = max(float(np.nanmax(np.abs(score))) if np.isfinite(score).any() else 1.0, 1e-3)
    im = ax.imshow(np.nan_to_num(score), aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound))
    yy, xx = np.nonzero(member)
    ax.scatter(xx, yy, s=12, c="black", marker="o")
    ax.set_xticks(range(len(types)), [f"{t}\n({results[t].network.number_of_nodes()} genes)" for t in types],
                  rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(genes)), genes, fontsize=7)
    ax.set_title(f"{title}: per-cell-type signaling\n(score of each type's top {n_genes} genes; dot = gene in that "
                 "cell type's network)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.6).set_label("score (evidence z, + attribution z)")
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


__all__ = ["plot_signaling_network", "plot_evidence_network", "write_network_html", "plot_cell_type_comparison"]
