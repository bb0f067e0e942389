"""Meta-cells per partition: splitting of large partitions, quality metrics, and the Dask build
(2-worker LocalCluster equals the single-process build, also when a worker is killed mid-build; a
build process killed mid-way resumes from its finished partitions)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from dataset_script.build.distributed import metacells_distributed
from dataset_script.build.ingest import read_dataset
from dataset_script.build.knowledge import load_gene_table
from dataset_script.build.metacells import (
    metacells_of_partition,
    partitions,
    quality,
    split_partition,
)

from .conftest import RECIPE


@pytest.fixture(scope="module")
def kang(data_dir):
    entry = next(d for d in yaml.safe_load(RECIPE.read_text())["datasets"] if d["dataset_id"].startswith("kang"))
    return read_dataset(entry, data_dir, load_gene_table(data_dir / "knowledge"))


def test_quality_hand_checked():
    pcs = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 2.0]])
    compact, separation = quality(pcs, np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(compact, [0.5, 0.5])  # variances (1, 0) and (0, 1), averaged over components
    np.testing.assert_allclose(separation, [np.hypot(9, 1)] * 2, rtol=1e-6)  # centroids (1, 0) and (10, 1)
    assert np.isnan(quality(pcs, np.zeros(4, dtype=int))[1][0])  # one meta-cell: no neighbour


def test_large_partitions_are_split_reproducibly(kang):
    idx = next(iter(partitions(kang).values()))
    part = kang[idx]
    chunks = split_partition(part, 100, value_transform="counts", seed=0)
    assert all(len(c) <= 100 for c in chunks) and len(chunks) >= int(np.ceil(part.n_obs / 100))
    assert np.array_equal(np.sort(np.concatenate(chunks)), np.arange(part.n_obs))  # every cell exactly once
    again = split_partition(part, 100, value_transform="counts", seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(chunks, again))
    assert split_partition(part, part.n_obs, value_transform="counts", seed=0)[0].size == part.n_obs
    with pytest.raises(ValueError, match="max_cells_per_partition must be >= 2"):
        split_partition(part, 1, value_transform="counts")
    X, obs = metacells_of_partition(part.copy(), "s", cells_per_metacell=10, min_cells_per_partition=10,
                                    max_cells_per_partition=100, value_transform="counts", seed=0)
    assert obs["cell_id"].str.contains(":p1:").any() and obs["n_cells"].sum() == part.n_obs
    assert np.allclose(np.asarray(X.sum()), part.X.sum())  # counts conserved across the split
    assert (obs["compactness"] >= 0).all() and (obs["separation"] > 0).all()


def _assert_same(a, b):
    (Xa, oa), (Xb, ob) = a, b
    assert (Xa != Xb).nnz == 0
    cols = [c for c in oa.columns if c not in ("compactness", "separation")]
    pd.testing.assert_frame_equal(oa[cols].reset_index(drop=True), ob[cols].reset_index(drop=True), check_dtype=False)
    np.testing.assert_allclose(oa["compactness"], ob["compactness"], rtol=1e-3, equal_nan=True)


def _kill_a_busy_worker(client, work_dir, build, timeout=120) -> dict:
    """Once one partition result is on disk and a worker is running another task, SIGKILL that
    worker's process; returns ``{"pid", "tasks"}`` (empty if the moment never came)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not build.done():
        busy = [addr for addr, keys in client.processing().items() if keys]
        if busy and list(work_dir.glob("*/*.result.npz")):  # mid-build: one finished, another running
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            keys = [str(k) for k in client.processing()[busy[0]]]
            os.kill(pid, signal.SIGKILL)
            return {"pid": pid, "tasks": {k.removeprefix("metacells-") for k in keys}}
        time.sleep(0.05)
    return {}


def test_two_worker_local_cluster_equals_single_process_even_when_a_worker_dies(kang, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from distributed import Client, LocalCluster

    kwargs = {"cells_per_metacell": 10, "min_cells_per_partition": 10, "max_cells_per_partition": 10_000, "seed": 0}
    X1, obs1, summaries1 = metacells_distributed(kang, tmp_path / "single", **kwargs, scheduler=None, progress=False)
    assert {s["pid"] for s in summaries1} == {os.getpid()}
    single = (X1, obs1)
    X, obs, summaries = metacells_distributed(kang, tmp_path / "a", **kwargs, scheduler="local", n_workers=2,
                                              memory_limit="3GiB", progress=False)
    _assert_same(single, (X, obs))
    assert len({s["pid"] for s in summaries}) == 2 and os.getpid() not in {s["pid"] for s in summaries}

    # The same build on a cluster this test runs (the build connects to its address), whose busy
    # worker is killed once a partition has finished: its task is recomputed on another worker.
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="3GiB", processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client, ThreadPoolExecutor(1) as pool:
        build = pool.submit(metacells_distributed, kang, tmp_path / "b", **kwargs,
                            scheduler=cluster.scheduler_address, progress=False)
        killed = _kill_a_busy_worker(client, tmp_path / "b", build)
        X2, obs2, summaries2 = build.result()
    assert killed, "no worker was killed mid-build"
    rerun = [s for s in summaries2 if s["task_id"] in killed["tasks"]]
    assert rerun and all(s["pid"] != killed["pid"] for s in rerun)  # its partition was recomputed elsewhere
    _assert_same(single, (X2, obs2))
    # resume: a third run reuses every finished partition
    _, _, summaries3 = metacells_distributed(kang, tmp_path / "b", **kwargs, scheduler=None, progress=False)
    assert all(s["reused"] for s in summaries3)


def test_build_killed_mid_way_resumes_to_the_same_dataset(built, data_dir, tmp_path):
    """A build process killed after some partitions finished, then re-run, gives the dataset of an
    uninterrupted build (the session fixture ``built``), reusing the finished partitions."""
    import shutil
    import subprocess
    import sys

    from dataset_script.build.pipeline import build_dataset

    out_ref, info_ref, recipe = built
    cache = tmp_path / ".cache"
    cache.mkdir()
    for f in (out_ref.parent / ".cache").glob("*-embeddings-*.npz"):  # text / sequence priors: not under test
        shutil.copy(f, cache)
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "dataset"
    script = ("import sys; from dataset_script.build.pipeline import build_dataset; "
              "build_dataset(sys.argv[1], sys.argv[2], sys.argv[3], cache_dir=sys.argv[4], progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(recipe_path), str(data_dir), str(out), str(cache)],
                            cwd=str(RECIPE.parents[1]))
    deadline = time.time() + 300
    while time.time() < deadline and len(list(cache.glob("partitions/*/*.result.npz"))) < 3 and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    proc.kill()
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in cache.glob("partitions/*/*.result.npz")}
    assert len(finished) >= 3 and not out.exists()  # nothing half-written where the dataset goes
    info = build_dataset(recipe_path, data_dir, out, cache_dir=cache, progress=False)
    assert len(list(cache.glob("partitions/*/*.result.npz"))) == sum(  # finished ones reused, the rest added
        len(list(d.glob("part-*.h5ad"))) for d in (cache / "partitions").iterdir())
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # reused, not recomputed
    assert info["entity_version"] == info_ref["entity_version"] and info["n_metacells"] == info_ref["n_metacells"]
    a = pd.read_parquet(out / "data" / "cells").sort_values("cell_id").reset_index(drop=True)
    b = pd.read_parquet(out_ref / "data" / "cells").sort_values("cell_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a.drop(columns=["expression_indices", "expression_values"]),
                                  b.drop(columns=["expression_indices", "expression_values"]))
    for col in ("expression_indices", "expression_values"):
        assert all(np.array_equal(x, y) for x, y in zip(a[col], b[col]))
