"""Cohorts from an OmniCellTOSG dataset: metadata query → donor-level split → normalised tensors
(ARCHITECTURE.md §5; first version — sampling, case/control matching and ComBat-seq come later).

Everything on cell rows runs as ``datasets`` ``filter`` / ``map`` with named, module-level
functions, so a repeated query is served from the ``datasets`` cache and the same seed gives the
same cohort.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import torch

from modeling_celltosg.graph import TOSGGraph

TARGET_SUM = 1e4  # counts per meta-cell after normalisation (scanpy normalize_total convention)


def _load(path: str | Path, config: str) -> datasets.Dataset:
    """``datasets.load_dataset(path, config, split="train")`` with a clear error for a bad config.

    Raises
    ------
    FileNotFoundError
        If ``path`` has no dataset card (README.md).
    ValueError
        If ``config`` is not declared in the card (the message lists the configs).
    """
    path = Path(path)
    if not (path / "README.md").exists():
        raise FileNotFoundError(f"No OmniCellTOSG dataset at {path} (README.md missing); build one with "
                                "`omnicelltosg build`")
    names = datasets.get_dataset_config_names(str(path))
    if config not in names:
        raise ValueError(f"Config {config!r} not in the dataset at {path}; available configs: {names}")
    return datasets.load_dataset(str(path), config, split="train")


def _build_info(path: str | Path) -> dict:
    """The dataset's ``build_info.json`` (entity version, node and edge counts)."""
    return json.loads((Path(path) / "build_info.json").read_text())


def load_graph(path: str | Path) -> tuple[TOSGGraph, pd.DataFrame]:
    """The shared entity graph and text priors of a dataset.

    Returns
    -------
    graph : :class:`modeling_celltosg.graph.TOSGGraph` — ``internal_edge_index`` [2, Ei]
        transcript → protein, ``ppi_edge_index`` [2, Ep] (one row per unordered pair),
        ``name_embeddings`` / ``description_embeddings`` float32 [N, 384], ``entity_version``.
    entities : the ``entities`` table (entity_index, entity_id, entity_type, symbol, name, …).
    """
    entities = _load(path, "entities").to_pandas().sort_values("entity_index", ignore_index=True)
    edges = _load(path, "edges").to_pandas()
    emb = _load(path, "embeddings").with_format("numpy")
    order = np.argsort(np.asarray(emb["entity_index"]))
    internal = edges[edges["relation"] == "internal"][["source", "target"]].to_numpy(np.int64).T
    ppi = edges[edges["relation"] == "ppi"][["source", "target"]].to_numpy(np.int64).T
    version = _build_info(path)["entity_version"]
    graph = TOSGGraph(
        num_transcripts=int((entities["entity_type"] == "transcript").sum()),
        num_proteins=int((entities["entity_type"] == "protein").sum()),
        internal_edge_index=torch.from_numpy(np.ascontiguousarray(internal)),
        ppi_edge_index=torch.from_numpy(np.ascontiguousarray(ppi)),
        name_embeddings=torch.from_numpy(np.asarray(emb["name_embedding"], dtype=np.float32)[order]),
        description_embeddings=torch.from_numpy(np.asarray(emb["description_embedding"], dtype=np.float32)[order]),
        entity_version=version,
    )
    return graph, entities


def _match(value, wanted) -> bool:
    norm = (lambda v: v.lower() if isinstance(v, str) else v)
    if isinstance(wanted, (list, tuple, set)):
        return norm(value) in {norm(w) for w in wanted}
    return norm(value) == norm(wanted)


def select_cells(row: dict, conditions: dict) -> bool:
    """Filter predicate: scalar condition = equality, list = membership, strings case-insensitive."""
    return all(_match(row[k], v) for k, v in conditions.items())


def query(cells: datasets.Dataset, conditions: dict) -> datasets.Dataset:
    """Rows of ``cells`` matching every condition.

    Raises
    ------
    KeyError
        If a condition names an unknown field (the message lists the metadata fields).
    ValueError
        If nothing matches; the message gives, for each condition field, the values available under
        the other conditions.
    """
    meta = [c for c in cells.column_names if not c.startswith("expression_")]
    unknown = sorted(set(conditions) - set(meta))
    if unknown:
        raise KeyError(f"Unknown metadata field(s) {unknown}; available fields: {meta}")
    if not conditions:
        return cells
    out = cells.filter(select_cells, fn_kwargs={"conditions": conditions}, input_columns=None,
                       desc="query")
    if len(out) == 0:
        table = cells.select_columns(list(conditions)).to_pandas()
        hints = {}
        for field_name in conditions:
            others = {k: v for k, v in conditions.items() if k != field_name}
            mask = table.apply(lambda r: select_cells(r, others), axis=1) if others else pd.Series(True, index=table.index)
            hints[field_name] = sorted(map(str, table.loc[mask, field_name].unique()))
        raise ValueError(f"No meta-cells match {conditions}. Available values of each field under the other "
                         f"conditions: {hints}")
    return out


def normalize_expression(batch: dict) -> dict:
    """``datasets.map`` function: counts → counts per 10,000 → log1p; non-count rows are kept as
    they are (already log-scale). Adds ``expression_log`` (list<float32>) aligned with
    ``expression_indices``."""
    out = []
    for values, counts in zip(batch["expression_values"], batch["values_are_counts"]):
        v = np.asarray(values, dtype=np.float32)
        if counts:
            total = v.sum()
            v = np.log1p(v * (TARGET_SUM / total)) if total > 0 else v
        out.append(v.astype(np.float32))
    return {"expression_log": out}


def donor_split(donors: np.ndarray, labels: np.ndarray, *, val_fraction: float, test_fraction: float,
                seed: int) -> dict[str, np.ndarray]:
    """Split meta-cells by donor into train / validation / test index arrays.

    Donors are shuffled with ``seed`` and assigned to test, then validation, until each holds about
    its fraction of meta-cells; the rest are training donors. With fewer than three donors, one
    donor is the test set and validation is a label-stratified ``val_fraction`` of the training
    donors' meta-cells (``validation_level = "meta-cell"``). No donor is in both train and test.

    Raises
    ------
    ValueError
        If there are fewer than two donors.
    """
    uniq = np.array(sorted(set(donors)))
    if len(uniq) < 2:
        raise ValueError(f"A donor-level split needs >= 2 donors; this cohort has {list(uniq)}")
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    sizes = pd.Series(donors).value_counts()
    n = len(donors)
    if len(uniq) == 2:
        test_donors, val_donors = {uniq[0]}, set()
    else:
        test_donors, val_donors, acc = set(), set(), 0
        for d in uniq:
            if acc < test_fraction * n and len(test_donors) < len(uniq) - 2:
                test_donors.add(d)
                acc += sizes[d]
            elif sum(sizes[v] for v in val_donors) < val_fraction * n and len(val_donors) < len(uniq) - len(test_donors) - 1:
                val_donors.add(d)
    idx = np.arange(n)
    test = idx[np.isin(donors, list(test_donors))]
    val = idx[np.isin(donors, list(val_donors))]
    train = idx[~np.isin(donors, list(test_donors | val_donors))]
    if not val_donors:  # carve validation out of the training donors, stratified by label
        val_parts = []
        for lab in np.unique(labels[train]):
            members = rng.permutation(train[labels[train] == lab])
            val_parts.append(members[: int(round(val_fraction * len(members)))])
        val = np.sort(np.concatenate(val_parts))
        train = np.setdiff1d(train, val)
    assert not set(donors[train]) & set(donors[test]), "a donor is in both train and test"
    return {"train": train, "validation": val, "test": test,
            "validation_level": np.array("donor" if val_donors else "meta-cell")}


def expression_tensors(cells: datasets.Dataset, num_transcripts: int,
                       measured: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Densify normalised rows (``expression_log`` from :func:`normalize_expression`):
    expression float32 [M, Nt] and measured_mask bool [M, Nt] (genes the row's dataset measured)."""
    x = np.zeros((len(cells), num_transcripts), dtype=np.float32)
    mask = np.zeros((len(cells), num_transcripts), dtype=bool)
    cols = cells.select_columns(["expression_indices", "expression_log", "dataset_id"]).with_format("numpy")
    for i, row in enumerate(cols):
        x[i, row["expression_indices"]] = row["expression_log"]
        mask[i, measured[str(row["dataset_id"])]] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


def gene_panels(path: str | Path) -> dict[str, np.ndarray]:
    """``dataset_id`` → transcript indices that dataset measured (int64)."""
    panels = _load(path, "gene_panels")
    return {d: np.asarray(ix, dtype=np.int64) for d, ix in zip(panels["dataset_id"], panels["measured_indices"])}


def load_cells(path: str | Path, *, conditions: dict | None = None, config: str = "all") -> datasets.Dataset:
    """Query meta-cells and add normalised expression (``expression_log``); no labels, no split."""
    cells = query(_load(path, config), conditions or {})
    return cells.map(normalize_expression, batched=True, desc="normalise")


@dataclass
class Cohort:
    """A labelled cohort ready for a model.

    ``cells`` is the queried, normalised ``datasets.Dataset``; ``splits`` maps ``train`` /
    ``validation`` / ``test`` to row indices; ``labels`` int64 [M]; ``label_names`` the class names.
    """

    cells: datasets.Dataset
    labels: np.ndarray
    label_names: list[str]
    splits: dict[str, np.ndarray]
    label_column: str
    conditions: dict
    num_transcripts: int
    validation_level: str
    measured: dict[str, np.ndarray] = field(default_factory=dict)

    def split(self, name: str) -> datasets.Dataset:
        """The rows of one split as a ``datasets.Dataset``."""
        return self.cells.select(self.splits[name])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dense model inputs for all rows: expression float32 [M, Nt] (log-normalised),
        measured_mask bool [M, Nt] (genes the row's dataset measured), labels int64 [M]."""
        x, mask = expression_tensors(self.cells, self.num_transcripts, self.measured)
        return x, mask, torch.from_numpy(self.labels)

    def summary(self) -> dict:
        """Split sizes, donors and class counts per split (for reports)."""
        donors = np.asarray(self.cells["donor_id"])
        return {name: {"n_metacells": int(len(idx)), "n_donors": int(len(set(donors[idx]))),
                       "class_counts": {str(self.label_names[k]): int(v) for k, v in
                                        zip(*np.unique(self.labels[idx], return_counts=True))}}
                for name, idx in self.splits.items() if name != "validation_level"} | {
            "validation_level": self.validation_level}


def load_cohort(path: str | Path, *, conditions: dict | None = None, label_column: str, config: str = "all",
                val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0) -> Cohort:
    """Query a cohort, label it, split it by donor and normalise its expression.

    Parameters
    ----------
    path
        Dataset folder written by ``omnicelltosg build``.
    conditions
        Metadata query, e.g. ``{"dataset_id": "kang2018_muscat", "condition": ["control", "stim"]}``.
    label_column
        The metadata column to predict (``cell_type``, ``condition``, ``disease``, ``sex`` …).
    val_fraction, test_fraction
        Target shares of meta-cells in validation and test (by donor).

    Raises
    ------
    KeyError, ValueError
        Unknown fields, empty queries (see :func:`query`), a label column with one class, or too
        few donors for a donor-level split.
    """
    fields = _load(path, config).column_names
    if label_column not in fields:
        raise KeyError(f"label_column {label_column!r} is not a metadata field; available: "
                       f"{[c for c in fields if not c.startswith('expression_')]}")
    cells = load_cells(path, conditions=conditions, config=config)
    measured = gene_panels(path)
    nt = int(_build_info(path)["n_transcripts"])
    values = np.asarray(cells[label_column]).astype(str)
    label_names = [str(v) for v in sorted(set(values))]
    if len(label_names) < 2:
        raise ValueError(f"label_column {label_column!r} has a single value {label_names} in this cohort")
    labels = np.searchsorted(label_names, values).astype(np.int64)
    splits = donor_split(np.asarray(cells["donor_id"]), labels, val_fraction=val_fraction,
                         test_fraction=test_fraction, seed=seed)
    level = str(splits.pop("validation_level"))
    return Cohort(cells, labels, label_names, splits, label_column, dict(conditions or {}), nt, level, measured)
