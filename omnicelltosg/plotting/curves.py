"""Training-curve figures (matplotlib; PNG): the demo's pretraining and fine-tuning curves and
the evaluation's per-model curves."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from omnicelltosg.plotting import save_figure


def curve_positions(run: Mapping[str, Sequence[float]]) -> dict[str, range]:
    """x positions of each series of one run (see :func:`plot_curves`): all series end at the run's last
    step `E` (its shortest series' length); a series of length `n` covers `E - n + 1 … E`."""
    last = min(len(v) for v in run.values())
    return {metric: range(last - len(v) + 1, last + 1) for metric, v in run.items()}


def plot_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike, *, title: str,
                xlabel: str) -> Path:
    """One panel per metric, one line per run, written atomically to `path` (PNG, 120 dpi).

    Args:
        curves: `{run name: {metric name: values}}`, e.g. `{"celltosg_fm": {"train loss": [...],
            "validation macro-F1": [...]}}`. A run's series end together at its last step or epoch `E`
            (the length of its shortest series) and value `i` of a series of length `n` is drawn at
            x = `E - n + 1 + i`: a series with one value more than the others (e.g. a validation score of
            the model before training, from `train_classifier(select_initial=True)`) starts at x = 0.
            Panels follow the order in which the metrics first appear; the last panel gets a legend when
            there are several runs.
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
        for name, run in ((name, run) for name, run in curves.items() if metric in run):
            values = run[metric]
            ax.plot(curve_positions(run)[metric], values, marker="o" if len(values) <= 20 else None, ms=3, lw=1.5,
                    label=name)
        ax.set_title(metric)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    if len(curves) > 1:
        axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["curve_positions", "plot_curves"]
