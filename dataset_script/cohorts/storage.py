"""Open the tables of a dataset folder, after checking the folder is the one its build wrote.

``build_info.json`` records every file under ``data/`` with its size, row count and SHA-256
(:func:`dataset_script.build.writer.file_records`). Every load checks, cheaply, that exactly the
recorded files are there with their recorded sizes (an extra, missing, truncated or grown shard is a
``ValueError`` naming it); ``verify=True`` also hashes every file. The ``datasets`` cache of a folder
is keyed by the recorded content hashes and each file's observed size and modification time, so a
changed file is never served from an older cache. Cell tables must not repeat a ``cell_id``.

A folder built before the record existed (no ``files`` in ``build_info.json``) loads with a warning;
its cache is keyed by the observed files alone, and duplicate ``cell_id`` are still refused.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import datasets
import pyarrow.compute as pc

from dataset_script.files import atomic_write_text, sha256_file

#: Configs that are not cell tables (no ``cell_id``).
SHARED_CONFIGS = ("entities", "edges", "embeddings", "gene_panels")


_WARNED: set[str] = set()  # folders without file records already warned about in this process


class DatasetIntegrityError(ValueError):
    """The files of a dataset folder are not those its build recorded, or cells repeat a ``cell_id``."""


def _build_info(path: str | Path) -> dict:
    """The dataset's ``build_info.json`` (entity version, node and edge counts, file records)."""
    return json.loads((Path(path) / "build_info.json").read_text())


def _data_files(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in (path / "data").rglob("*") if p.is_file())


def check_dataset(path: str | Path, *, verify: bool = False) -> dict[str, dict] | None:
    """Check the files under ``path/data`` against ``build_info["files"]``; returns that record (None
    for a folder built before it existed, with a warning).

    Always: the same set of files, each of its recorded size. With ``verify``: each file's SHA-256.

    Raises
    ------
    FileNotFoundError
        If ``path`` has no ``build_info.json``.
    DatasetIntegrityError
        (a ``ValueError``) naming every extra, missing, resized or (``verify``) modified file.
    """
    path = Path(path)
    if not (path / "build_info.json").exists():
        raise FileNotFoundError(f"No OmniCellTOSG dataset at {path} (build_info.json missing); build one with "
                                "`omnicelltosg build`")
    records = _build_info(path).get("files")
    if records is None:
        if str(path.resolve()) in _WARNED:
            return None
        _WARNED.add(str(path.resolve()))
        warnings.warn(f"{path} was built without file records (an older build): its files cannot be checked; "
                      "rebuild it to get integrity checks", stacklevel=3)
        return None
    present = _data_files(path)
    problems = [f"extra file {f} (not written by the build)" for f in present if f not in records]
    problems += [f"missing file {f}" for f in records if f not in present]
    for name, rec in records.items():
        if name not in present:
            continue
        size = (path / name).stat().st_size
        if size != rec["bytes"]:
            problems.append(f"{name} has {size:,} bytes, the build wrote {rec['bytes']:,} (truncated or changed)")
        elif verify and sha256_file(path / name) != rec["sha256"]:
            problems.append(f"{name} content differs from the build's (SHA-256 mismatch)")
    if problems:
        raise DatasetIntegrityError(f"Dataset folder {path} was changed after it was built: " + "; ".join(problems)
                                    + ". Rebuild it (omnicelltosg build --overwrite) or restore the files.")
    return records


def dataset_cache_dir(path: str | Path) -> Path:
    """The ``datasets`` cache folder of one build of a dataset folder, in its current state.

    ``datasets`` keys the Arrow cache of a local folder by its name and configuration, not by the
    content of its files, so a rebuilt or changed folder was served the previous cached rows. The
    cache is namespaced by the folder's absolute path, its ``build_info.json`` (the recorded content
    hashes of every file) and the observed size and modification time of every data file.
    """
    path = Path(path).resolve()
    info = path / "build_info.json"
    stamp = hashlib.sha256(str(path).encode() + (info.read_bytes() if info.exists() else b""))
    for name in _data_files(path) if (path / "data").is_dir() else []:
        stat = (path / name).stat()
        stamp.update(f"\x1f{name}\x1e{stat.st_size}\x1e{stat.st_mtime_ns}".encode())
    return Path(datasets.config.HF_DATASETS_CACHE) / "omnicelltosg" / f"{path.name}-{stamp.hexdigest()[:16]}"


def check_unique_cell_ids(cells: datasets.Dataset, path: Path) -> None:
    """Raise :class:`DatasetIntegrityError` if a ``cell_id`` repeats in a cell table (e.g. a copied shard:
    the same meta-cell could land in train and test)."""
    if "cell_id" not in cells.column_names or len(cells) == 0:
        return
    ids = cells.data.column("cell_id")
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids).to_pylist()
        dup = [c["values"] for c in counts if c["counts"] > 1]
        raise DatasetIntegrityError(f"Dataset folder {path}: {len(dup)} cell_id value(s) repeat, e.g. {dup[:3]} "
                                    "(a duplicated shard?); refusing to load it")


def _load(path: str | Path, config: str, *, verify: bool = False) -> datasets.Dataset:
    """``datasets.load_dataset(path, config, split="train")`` after :func:`check_dataset`, with a clear
    error for a bad config and a duplicate ``cell_id`` check on cell tables.

    Raises
    ------
    FileNotFoundError
        If ``path`` has no dataset card (README.md) or no build_info.json.
    ValueError
        If ``config`` is not declared in the card (the message lists the configs).
    DatasetIntegrityError
        See :func:`check_dataset` and :func:`check_unique_cell_ids`; also if config ``all`` does not
        have the recorded number of rows.
    """
    path = Path(path)
    if not (path / "README.md").exists():
        raise FileNotFoundError(f"No OmniCellTOSG dataset at {path} (README.md missing); build one with "
                                "`omnicelltosg build`")
    records = check_dataset(path, verify=verify)
    names = datasets.get_dataset_config_names(str(path))
    if config not in names:
        raise ValueError(f"Config {config!r} not in the dataset at {path}; available configs: {names}")
    cache_dir = dataset_cache_dir(path)
    ds = datasets.load_dataset(str(path), config, split="train", cache_dir=str(cache_dir))
    checked = cache_dir / f"unique-cell-ids-{hashlib.sha256(config.encode()).hexdigest()[:12]}"
    if config not in SHARED_CONFIGS and not checked.exists():  # once per state of the folder (≈1 s per 400k rows)
        check_unique_cell_ids(ds, path)
        atomic_write_text(checked, "ok\n")
    if config == "all" and records is not None:
        expected = sum(r["rows"] or 0 for f, r in records.items() if f.startswith("data/cells/"))
        if len(ds) != expected:
            raise DatasetIntegrityError(f"Dataset folder {path}: config 'all' has {len(ds)} rows, the build wrote "
                                        f"{expected}")
    return ds
