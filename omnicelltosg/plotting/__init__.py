"""Figures of the project (matplotlib; PNG): training curves (`curves`), evaluation figures (`evaluation`),
the signaling network (`signaling`). Every figure is written atomically and closed. The library never
selects a matplotlib backend: a notebook keeps its inline backend, and a machine without a display gets
matplotlib's own headless fallback (Agg)."""

from __future__ import annotations

import os
from pathlib import Path

from dataset_script.files import atomic_file


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Save a pyplot figure to `path` (PNG, `dpi`, tight bounding box) atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["save_figure"]
