"""Training-curve figures (matplotlib, Agg backend; PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(curves: dict[str, list[float]], path: Path, *, title: str, xlabel: str) -> Path:
    """One panel per curve (shared x label), written atomically to ``path`` (PNG, 120 dpi)."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.4), squeeze=False)
    for ax, (name, values) in zip(axes[0], curves.items()):
        steps = range(1, len(values) + 1)
        ax.plot(steps, values, marker="o" if len(values) <= 20 else None, lw=1.5)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
