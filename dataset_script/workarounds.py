"""Workarounds for third-party packages, in one place. Each says why it exists.

Import this module before using SEACells; the patches are idempotent.
"""

from __future__ import annotations

import contextlib
import io
import types
from functools import partial

import tqdm


def patch_seacells() -> None:
    """Make SEACells 0.3.3 usable outside Jupyter with the pinned stack.

    * ``SEACells.build_graph`` imports ``tqdm.notebook.tqdm``, which needs ipywidgets and a
      notebook front end; outside one it raises. We replace it (and ``SEACells.core``'s bar) with
      plain ``tqdm.tqdm``, disabled: the build shows one bar over partitions instead.
    * ``SEACells.build_graph`` calls ``sc.pp.neighbors`` with its default transformer, which is
      pynndescent for more than 4,096 cells; pynndescent 0.7 with numba 0.6x breaks above 8,192
      cells. We route that one call to scikit-learn's exact kNN (``transformer="sklearn"``).
    """
    import scanpy as sc  # here, not at module level: importing `quiet` must stay light (no numba)
    import SEACells.build_graph as build_graph
    import SEACells.core as core

    if getattr(build_graph, "_omnicelltosg_patched", False):
        return
    # Per-partition inner loops would print one bar per partition; the build shows its own.
    build_graph.tqdm = partial(tqdm.tqdm, disable=True)
    core.tqdm = partial(tqdm.tqdm, disable=True)
    build_graph.sc = types.SimpleNamespace(
        pp=types.SimpleNamespace(neighbors=partial(sc.pp.neighbors, transformer="sklearn")))
    build_graph._omnicelltosg_patched = True


@contextlib.contextmanager
def quiet():
    """Silence a library's unconditional ``print`` calls (SEACells prints even with verbose=False)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
