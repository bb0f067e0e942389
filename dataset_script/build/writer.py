"""Write the dataset folder: Parquet shards + a README.md dataset card whose YAML ``configs:`` make
``datasets.load_dataset(folder, "<config>")`` work for every config (ARCHITECTURE.md §4).

Layout::

    README.md                     dataset card (YAML configs + prose)
    data/cells/cells-00000.parquet …   one row per meta-cell, row groups sorted by tissue, disease
    data/entities.parquet   data/edges.parquet   data/embeddings.parquet   data/gene_panels.parquet
    build_info.json               recipe, versions, counts (for people and for resuming)
    reports/<dataset_id>/*.tsv    reviewable tables: gene mapping, metadata harmonisation, disease
                                  categories, development stages (one row per distinct input value)

The folder is written under a temporary name next to ``out`` and renamed into place only when
complete (:func:`dataset_script.files.atomic_directory`, kind ``"dataset"``), so a failed build never
leaves a half-written dataset, an existing dataset is replaced only at the end and only with
``overwrite``, a folder that is not a dataset folder is never written into or replaced, and of two
concurrent builds into one ``out`` exactly one succeeds. ``build_info.json`` records every file under
``data/`` (:func:`file_records`: bytes, rows, SHA-256) so a loader can tell a tampered folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from dataset_script.files import atomic_directory, check_output_folder, path_inside
from dataset_script.schema import (
    CELL_SCHEMA,
    EDGE_SCHEMA,
    ENTITY_SCHEMA,
    GENE_PANEL_SCHEMA,
)

ROWS_PER_SHARD = 50_000   # ~20k non-zeros per row × 8 B ≈ 160 kB/row worst case → shards well under 500 MB
ROWS_PER_GROUP = 2_000
SHARED_CONFIGS = ("entities", "edges", "embeddings", "gene_panels")


def slug(text: str) -> str:
    """Lower-case config-name fragment: ``"systemic lupus erythematosus"`` → ``"systemic_lupus_erythematosus"``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def disease_short_name(label: str, synonyms: list[str]) -> str:
    """A short config name for a disease: its acronym synonym when MONDO has one (``SLE``), else
    the slug of its label (``normal`` stays ``normal``)."""
    acronyms = sorted((s for s in synonyms if re.fullmatch(r"[A-Z][A-Z0-9]{1,5}", s)), key=len)
    return slug(acronyms[0]) if acronyms else slug(label)


def cell_configs(cells: pd.DataFrame, disease_synonyms: dict[str, list[str]]) -> list[dict]:
    """The cell configs: ``all`` (default), one per ``tissue_general`` and one per
    (``tissue_general``, ``disease``), each a Parquet ``filters`` view of the same shards.

    Raises
    ------
    ValueError
        If two different (tissue, disease) pairs would get the same config name.
    """
    def files() -> list[dict]:  # a fresh list per config keeps the YAML free of anchors
        return [{"split": "train", "path": "data/cells/*.parquet"}]

    configs = [{"config_name": "all", "default": True, "data_files": files()}]
    for tissue in sorted(cells["tissue_general"].unique()):
        configs.append({"config_name": slug(tissue), "data_files": files(),
                        "filters": [["tissue_general", "==", tissue]]})
    seen: dict[str, tuple] = {}
    pairs = cells[["tissue_general", "disease"]].drop_duplicates().sort_values(["tissue_general", "disease"])
    for tissue, disease in pairs.itertuples(index=False):
        name = f"{slug(tissue)}_{disease_short_name(disease, disease_synonyms.get(disease, []))}"
        if name in seen and seen[name] != (tissue, disease):
            raise ValueError(f"Config name {name!r} would serve both {seen[name]} and {(tissue, disease)}")
        seen[name] = (tissue, disease)
        configs.append({"config_name": name, "data_files": files(),
                        "filters": [["tissue_general", "==", tissue], ["disease", "==", disease]]})
    for name in SHARED_CONFIGS:
        configs.append({"config_name": name, "data_files": [{"split": "train", "path": f"data/{name}.parquet"}]})
    return configs


def _write_table(df: pd.DataFrame, schema: pa.Schema, path: Path, row_group_size: int | None = None) -> None:
    table = pa.Table.from_pandas(df[[f.name for f in schema]], schema=schema, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size, compression="zstd")


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's content, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_records(folder: Path) -> dict[str, dict]:
    """``{"data/…": {"bytes", "rows", "sha256"}}`` for every file under ``folder/data`` (``rows`` from the
    Parquet footer), the integrity record of ``build_info["files"]``."""
    records = {}
    for path in sorted(p for p in (Path(folder) / "data").rglob("*") if p.is_file()):
        rows = pq.read_metadata(path).num_rows if path.suffix == ".parquet" else None
        records[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "rows": rows,
                                                         "sha256": sha256_of(path)}
    return records


def write_dataset(out: Path, *, cells: pd.DataFrame, entities: pd.DataFrame, edges: pd.DataFrame,
                  embeddings: pa.Table, gene_panels: pd.DataFrame, card: str, configs: list[dict],
                  build_info: dict, overwrite: bool = False, reports: dict[str, pd.DataFrame] | None = None,
                  extra_files: dict[str, bytes] | None = None) -> Path:
    """Write all tables and the card to ``out`` atomically.

    Parameters
    ----------
    cells, entities, edges, gene_panels
        Tables with the columns of :data:`CELL_SCHEMA`, :data:`ENTITY_SCHEMA`,
        :data:`EDGE_SCHEMA` and :data:`GENE_PANEL_SCHEMA`.
    embeddings
        Arrow table with the :func:`dataset_script.schema.embedding_schema` columns.
    card
        Markdown body of README.md (the YAML header is generated from ``configs``).
    reports
        ``{"<dataset_id>/<table>": DataFrame}`` written as ``reports/<dataset_id>/<table>.tsv``.
    extra_files
        ``{relative name: bytes}`` written as they are (e.g. the card's ``summary.png``).

    build_info
        Written as ``build_info.json``; ``build_info["files"]`` is set to :func:`file_records` of the data.

    Raises
    ------
    FileExistsError
        If ``out`` holds a dataset and ``overwrite`` is False; if ``out`` is a non-empty folder that is
        not a dataset folder (never replaced); or if another writer created ``out`` meanwhile.
    ValueError
        If a report or extra file name would resolve outside the dataset folder.
    """
    out = Path(out)
    check_output_folder(out, kind="dataset", overwrite=overwrite)
    with atomic_directory(out, replace=overwrite, kind="dataset") as tmp:
        cells = cells.sort_values(["tissue_general", "disease", "dataset_id", "cell_id"], kind="stable")
        for i, start in enumerate(range(0, max(len(cells), 1), ROWS_PER_SHARD)):
            _write_table(cells.iloc[start:start + ROWS_PER_SHARD], CELL_SCHEMA,
                         tmp / "data" / "cells" / f"cells-{i:05d}.parquet", ROWS_PER_GROUP)
        _write_table(entities, ENTITY_SCHEMA, tmp / "data" / "entities.parquet")
        _write_table(edges, EDGE_SCHEMA, tmp / "data" / "edges.parquet")
        _write_table(gene_panels, GENE_PANEL_SCHEMA, tmp / "data" / "gene_panels.parquet")
        pq.write_table(embeddings, tmp / "data" / "embeddings.parquet", compression="zstd")
        header = yaml.safe_dump({"configs": configs, "license": "other", "tags": ["single-cell", "biology", "graph"]},
                                sort_keys=False)
        (tmp / "README.md").write_text(f"---\n{header}---\n\n{card}")
        build_info["files"] = file_records(tmp)
        (tmp / "build_info.json").write_text(json.dumps(build_info, indent=2, default=str))
        for name, content in (extra_files or {}).items():
            path_inside(tmp, name).write_bytes(content)
        for name, table in (reports or {}).items():
            target = path_inside(tmp / "reports", f"{name}.tsv")
            target.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(target, sep="\t", index=False)
    return out
