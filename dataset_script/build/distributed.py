"""Run the meta-cell step of the build as Dask distributed tasks, one per partition.

Each partition (dataset × donor × sample × condition; ARCHITECTURE.md §3) is written once to shared
storage as an ``.h5ad`` file; a Dask task reads it, runs
:func:`dataset_script.build.metacells.metacells_of_partition`, writes its result next to it atomically
(``<task>.result.parquet``, then ``<task>.result.npz``, each through :func:`dataset_script.files.atomic_file`)
and returns only a small
summary — no matrix travels through the scheduler. A finished result is reused (resume); a task whose
worker dies is rescheduled by Dask on another worker (``retries`` covers errors raised inside a task).

``scheduler=None`` runs the same function in this process; ``"local"`` starts an embedded
:class:`distributed.LocalCluster` (worker count and per-worker memory limit sized from the machine
unless given); ``"tcp://HOST:PORT"`` uses an existing cluster, whose workers must see ``work_dir``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from dataset_script.build.metacells import metacells_of_partition, partitions
from dataset_script.files import atomic_file


@dataclass(frozen=True)
class PartitionTask:
    """One partition to turn into meta-cells: ``task_id`` names its files under ``work_dir``."""

    task_id: str
    sample_key: str
    input_path: str
    kwargs: dict


def _result_paths(input_path: str) -> tuple[Path, Path]:
    stem = Path(input_path).with_suffix("")
    return Path(f"{stem}.result.npz"), Path(f"{stem}.result.parquet")


def run_task(task: PartitionTask) -> dict:
    """Compute one partition's meta-cells and write them next to its input (atomically).

    Returns a small summary ``{"task_id", "n_metacells", "n_cells", "seconds", "pid", "reused"}``.
    """
    npz, parquet = _result_paths(task.input_path)
    if npz.exists() and parquet.exists():
        return {"task_id": task.task_id, "reused": True, "pid": os.getpid(), "seconds": 0.0,
                "n_metacells": int(pd.read_parquet(parquet, columns=["n_cells"]).shape[0]), "n_cells": None}
    t0 = time.perf_counter()
    part = ad.read_h5ad(task.input_path)
    X, obs = metacells_of_partition(part, task.sample_key, **task.kwargs)
    with atomic_file(parquet) as tmp:
        obs.to_parquet(tmp)
    with atomic_file(npz) as tmp:  # the npz is the completion marker: written last
        sp.save_npz(tmp, X)
    return {"task_id": task.task_id, "reused": False, "pid": os.getpid(), "seconds": time.perf_counter() - t0,
            "n_metacells": int(len(obs)), "n_cells": int(part.n_obs)}


def load_result(task: PartitionTask) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """The meta-cell matrix and table a finished task wrote."""
    npz, parquet = _result_paths(task.input_path)
    return sp.load_npz(npz).tocsr(), pd.read_parquet(parquet)


def default_cluster_size(n_workers: int | None = None, memory_limit: str | int | None = None) -> tuple[int, int]:
    """(workers, bytes per worker): by default one single-threaded worker per 2 cores (SEACells and
    BLAS use more than one thread), and the machine's memory split evenly among them."""
    import psutil

    workers = n_workers or max(1, (os.cpu_count() or 2) // 2)
    if memory_limit is None:
        memory = int(psutil.virtual_memory().total * 0.8 / workers)
    else:
        from dask.utils import parse_bytes

        memory = parse_bytes(memory_limit) if isinstance(memory_limit, str) else int(memory_limit)
    return workers, memory


def run_partition_tasks(tasks: list[PartitionTask], *, scheduler: str | None = None, n_workers: int | None = None,
                        memory_limit: str | int | None = None, retries: int = 2, progress: bool = True) -> list[dict]:
    """Run every task (in this process, on an embedded LocalCluster, or on ``tcp://`` cluster).

    Returns the task summaries (:func:`run_task`) in task order.

    Raises
    ------
    ValueError
        For a scheduler that is neither None, ``"local"`` nor a ``tcp://`` / ``tls://`` address.
    """
    bar = tqdm(total=len(tasks), desc="meta-cell partitions", unit="partition", disable=not progress)
    if scheduler is None:
        out = []
        for task in tasks:
            out.append(run_task(task))
            bar.update()
        bar.close()
        return out
    from distributed import Client, LocalCluster, as_completed

    if scheduler == "local":
        workers, memory = default_cluster_size(n_workers, memory_limit)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    elif scheduler.startswith(("tcp://", "tls://")):
        cluster, client = None, Client(scheduler)
    else:
        raise ValueError(f"scheduler {scheduler!r} not supported; accepted: None (in process), 'local' "
                         "(embedded LocalCluster) or a 'tcp://HOST:PORT' address")
    try:
        futures = [client.submit(run_task, t, key=f"metacells-{t.task_id}", retries=retries, pure=False) for t in tasks]
        summaries = {}
        for future in as_completed(futures):
            s = future.result()
            summaries[s["task_id"]] = s
            bar.update()
        return [summaries[t.task_id] for t in tasks]
    finally:
        bar.close()
        client.close()
        if cluster is not None:
            cluster.close()


def _fingerprint(adata: ad.AnnData, kwargs: dict) -> str:
    """Content hash of a dataset's matrix, metadata and meta-cell settings (names its work folder)."""
    import hashlib
    import json

    X = sp.csr_matrix(adata.X)
    h = hashlib.sha256()
    for part in (X.data, X.indices, X.indptr):
        h.update(np.ascontiguousarray(part).tobytes())
    h.update(pd.util.hash_pandas_object(adata.obs.astype(str), index=True).to_numpy().tobytes())
    h.update(json.dumps(kwargs, sort_keys=True).encode())
    return h.hexdigest()[:16]


def metacells_distributed(adata: ad.AnnData, work_dir: Path, *, cells_per_metacell: int, min_cells_per_partition: int,
                          max_cells_per_partition: int, seed: int = 0, scheduler: str | None = None,
                          n_workers: int | None = None, memory_limit: str | int | None = None,
                          progress: bool = True) -> tuple[sp.csr_matrix, pd.DataFrame, list[dict]]:
    """Meta-cells of one ingested dataset with one task per partition (see the module docstring).

    Parameters
    ----------
    adata
        Output of :func:`dataset_script.build.ingest.read_dataset`.
    cells_per_metacell, min_cells_per_partition, max_cells_per_partition
        As in :func:`dataset_script.build.metacells.metacells_of_partition` (a recipe's ``metacells``
        settings, :class:`dataset_script.build.recipe.MetacellSettings`).
    scheduler, n_workers, memory_limit
        See :func:`run_partition_tasks`.

    Partitions are written to ``work_dir/<dataset_id>-<content hash>/part-NNNNN.h5ad`` (kept for
    resume: an interrupted build re-run with the same input reuses every finished partition).

    Returns
    -------
    ``(X, obs, summaries)``: X CSR float32 (meta-cells × genes of ``adata``), the meta-cell table
    (partitions in :func:`dataset_script.build.metacells.partitions` order), and the task summaries;
    the same ``(X, obs)`` whichever scheduler runs the tasks.
    """
    info = adata.uns["omnicelltosg"]
    transform = info["value_transform"]
    kwargs = {"cells_per_metacell": cells_per_metacell, "min_cells_per_partition": min_cells_per_partition,
              "max_cells_per_partition": max_cells_per_partition, "value_transform": transform, "seed": seed}
    folder = Path(work_dir) / f"{info['dataset_id']}-{_fingerprint(adata, kwargs)}"  # new input → new folder
    folder.mkdir(parents=True, exist_ok=True)
    tasks = []
    for i, (key, idx) in enumerate(partitions(adata).items()):
        path = folder / f"part-{i:05d}.h5ad"
        if not path.exists():
            part = ad.AnnData(X=adata.X[idx], obs=adata.obs.iloc[idx].copy(), var=adata.var.copy())
            with atomic_file(path) as tmp:
                part.write_h5ad(tmp)
        tasks.append(PartitionTask(f"{info['dataset_id']}-{i:05d}", str(key[2]), str(path), kwargs))
    summaries = run_partition_tasks(tasks, scheduler=scheduler, n_workers=n_workers, memory_limit=memory_limit,
                                    progress=progress)
    results = [load_result(t) for t in tasks]
    X = sp.vstack([r[0] for r in results]).tocsr()
    obs = pd.concat([r[1] for r in results], ignore_index=True)
    return X, obs, summaries


__all__ = ["PartitionTask", "run_task", "load_result", "run_partition_tasks", "metacells_distributed",
           "default_cluster_size"]
