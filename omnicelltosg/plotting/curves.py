"""Training-curve figures (matplotlib, Agg backend; PNG): the demo's pretraining and fine-tuning curves and
the evaluation's per-model curves."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from omnicelltosg.plotting import save_figure  # noqa: E402


def plot_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike, *, title: str,
                xlabel: str) -> Path:
    """One panel per metric, one line per run, written atomically to `path` (PNG, 120 dpi).

    Args:
        curves: `{run name: {metric name: values}}`, e.g. `{"celltosg_fm": {"train loss": [...],
            "validation macro-F1": [...]}}`; value `i` is drawn at x = `i + 1` (step or epoch). Panels
            follow the order in which the metrics first appear; the last panel gets a legend when there are several runs.
        path: the PNG to write.
        title: figure title; xlabel: x-axis label of every panel (e.g. "epoch").

    Returns: `path` as a `Path`.

    Raises:
        ValueError: `curves` holds no metric.
    """
    metrics = list(dict.fromkeys(metric for run in curves.values() for metric in run))
    if not metrics:
        raise ValueError("curves holds no metric to plot; expected {run name: {metric name: values}}.")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, values in ((name, run[metric]) for name, run in curves.items() if metric in run):
            ax.plot(range(1, len(values) + 1), values, marker="o" if len(values) <= 20 else None, ms=3, lw=1.5,
                    label=name)
        ax.set_title(metric)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    if len(curves) > 1:
        axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["plot_curves"]
