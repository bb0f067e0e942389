"""Cohorts from an OmniCellTOSG dataset (ARCHITECTURE.md §5).

conditions → optional ``sample_ratio`` | ``sample_size`` → optional stratified case/control matching
→ split by donor → optional ComBat-seq (per tissue, batch = dataset) → normalisation (10,000 counts
per meta-cell, log1p) at access time.

Everything on cell rows runs as ``datasets`` ``filter`` / ``select`` / ``map`` with named,
module-level functions, so a repeated identical query is served from the ``datasets`` cache, and
every random choice comes from one ``seed``, so the same seed gives the same cohort. The cohort
logic itself (:mod:`.query`, :mod:`.sampling`, :mod:`.matching`, :mod:`.splits`) works on the
metadata table alone; the label tasks and their presets are in :mod:`.tasks`.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
import numpy as np
import pandas as pd
import torch

from dataset_script.cohorts.arguments import (
    check_request,
    check_sample_size,
    match_arguments,
)
from dataset_script.cohorts.batch_correction import combat_seq_rows
from dataset_script.cohorts.matching import MatchResult, match_case_control
from dataset_script.cohorts.query import (
    check_fields,
    empty_query_error,
    is_unknown,
    select_batch,
)
from dataset_script.cohorts.sampling import sample_rows
from dataset_script.cohorts.splits import (
    Split,
    donor_keys,
    level_of_rows,
    split_by_donor,
    split_by_metacell,
)
from dataset_script.cohorts.storage import (  # noqa: F401  (_build_info, dataset_cache_dir: used by callers)
    DatasetIntegrityError,
    _build_info,
    _load,
    check_dataset,
    dataset_cache_dir,
)
from dataset_script.cohorts.tasks import resolve_task
from dataset_script.schema import LOG_SCALE_MAX

if TYPE_CHECKING:
    from modeling_celltosg.tosg_graph import TOSGGraph

TARGET_SUM = 1e4  # counts per meta-cell after normalisation (scanpy normalize_total convention)


def load_graph(path: str | Path, *, verify: bool = False) -> tuple[TOSGGraph, pd.DataFrame]:
    """The shared entity graph and text priors of a dataset (files checked first,
    :func:`dataset_script.cohorts.storage.check_dataset`; ``verify=True`` also hashes them).

    Returns
    -------
    graph : :class:`modeling_celltosg.tosg_graph.TOSGGraph` — ``internal_edge_index`` [2, Ei]
        transcript → protein, ``ppi_edge_index`` [2, Ep] (one row per unordered pair),
        ``name_embeddings`` / ``description_embeddings`` float32 [N, 384], ``entity_version``, and
        when the dataset has them ``sequence_embeddings`` float32 [N, S] (UniRep) with
        ``sequence_present`` bool [N].
    entities : the ``entities`` table (entity_index, entity_id, entity_type, symbol, name, …).

    Raises
    ------
    DatasetIntegrityError
        (a ``ValueError``) if the folder's files are not those its build recorded.
    """
    # Imported here: modeling_celltosg pulls in transformers / torch_geometric, which a cohort does not need.
    from modeling_celltosg.tosg_graph import TOSGGraph

    entities = _load(path, "entities", verify=verify).to_pandas().sort_values("entity_index", ignore_index=True)
    edges = _load(path, "edges").to_pandas()
    # emb[:] reads every column as one array; emb["column"] is a lazy Column in datasets ≥ 4 whose
    # np.asarray walks it row by row (measured on the demo build: ~50 s vs < 1 s).
    emb = _load(path, "embeddings").with_format("numpy")[:]
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
    if "sequence_embedding" in emb:
        graph.sequence_embeddings = torch.from_numpy(np.asarray(emb["sequence_embedding"], dtype=np.float32)[order])
        graph.sequence_present = torch.from_numpy(np.asarray(emb["has_sequence_embedding"], dtype=bool)[order])
    return graph, entities


def metadata_fields(cells: datasets.Dataset) -> list[str]:
    """Metadata columns of a cells table (everything but the expression payload)."""
    return [c for c in cells.column_names if not c.startswith("expression_") and c != "label"]


def query(cells: datasets.Dataset, conditions: dict) -> datasets.Dataset:
    """Rows of ``cells`` matching every condition (scalar = equality, list = membership, strings
    case-insensitive), as a batched Arrow ``filter`` — cached by ``datasets``.

    Raises
    ------
    KeyError
        If a condition names an unknown field (the message lists the metadata fields).
    ValueError
        If nothing matches; the message gives, for each condition field, the values available
        under the other conditions.
    """
    check_fields(metadata_fields(cells), conditions)
    if not conditions:
        return cells
    out = cells.with_format("arrow").filter(
        select_batch, batched=True, batch_size=50_000, fn_kwargs={"conditions": conditions}, desc="query",
        new_fingerprint=_code_fingerprint(cells._fingerprint, select_batch, repr(conditions))).with_format(None)
    if len(out) == 0:
        raise empty_query_error(cells.select_columns(list(conditions)).to_pandas(), conditions)
    return out


def normalize_expression(batch: dict) -> dict:
    """``datasets.map`` function: counts → counts per 10,000 → log1p. Non-count rows that are already
    log-scale (max ≤ :data:`LOG_SCALE_MAX`) are kept as they are; non-count rows on a linear scale
    (TPM / FPKM-like, max above it) are rescaled to 10,000 per row and log1p-transformed like counts.
    Adds ``expression_log`` (list<float32>) aligned with ``expression_indices``."""
    out = []
    for values, counts in zip(batch["expression_values"], batch["values_are_counts"]):
        v = np.asarray(values, dtype=np.float32)
        if counts or (v.size and v.max() > LOG_SCALE_MAX):
            total = v.sum()
            v = np.log1p(v * (TARGET_SUM / total)) if total > 0 else v
        out.append(v.astype(np.float32))
    return {"expression_log": out}


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


def load_cells(path: str | Path, *, conditions: dict | None = None, config: str = "all",
               verify: bool = False) -> datasets.Dataset:
    """Query meta-cells and add normalised expression (``expression_log``); no labels, no split. The
    folder's files are checked first (``verify=True`` also hashes them); a tampered folder raises
    :class:`~dataset_script.cohorts.storage.DatasetIntegrityError`."""
    cells = query(_load(path, config, verify=verify), conditions or {})
    return cells.map(normalize_expression, batched=True, desc="normalise",
                     new_fingerprint=_code_fingerprint(cells._fingerprint, normalize_expression))


def encode_labels(batch: dict, label_column: str, label_names: list[str]) -> dict:
    """``datasets.map`` function: the class code (int64, index into ``label_names``) of each row."""
    lookup = {name: i for i, name in enumerate(label_names)}
    return {"label": [lookup[str(v)] for v in batch[label_column]]}


def replace_expression(batch: dict, indices: list[int], corrected: dict) -> dict:
    """``datasets.map`` function: swap in batch-corrected counts (``corrected[row] = (idx, val)``)."""
    idx = [corrected[i][0].astype(np.int32) for i in indices]
    val = [corrected[i][1].astype(np.float32) for i in indices]
    return {"expression_indices": idx, "expression_values": val}


@dataclass
class Cohort:
    """A labelled cohort ready for a model (returned by :func:`load_cohort`).

    Attributes
    ----------
    cells : ``datasets.Dataset`` of the cohort's meta-cells — metadata, ``expression_indices`` /
        ``expression_values`` (counts; batch-corrected when asked), ``expression_log`` (CP10k +
        log1p, aligned with the indices) and ``label`` (int64).
    labels : int64 [M]; ``label_names`` the class names (control first for matched tasks).
    split : :class:`dataset_script.cohorts.splits.Split` (train / validation / test positions + levels).
    reports : what each step did: ``query``, ``sampling``, ``matching`` (summary), ``matching_strata``
        (one row per case stratum), ``matching_rows`` (stratum, role, stage offset per cohort row),
        ``correction`` (one entry per split × tissue group).
    """

    cells: datasets.Dataset
    labels: np.ndarray
    label_names: list[str]
    split: Split
    label_column: str | None
    conditions: dict
    num_transcripts: int
    path: Path
    task: str | None = None
    measured: dict[str, np.ndarray] = field(default_factory=dict)
    reports: dict = field(default_factory=dict)
    _graph: tuple | None = field(default=None, repr=False)

    # --- splits
    @property
    def splits(self) -> dict[str, np.ndarray]:
        """``{"train", "validation", "test"}`` → row positions (int64)."""
        return self.split.indices

    @property
    def validation_level(self) -> str:
        return self.split.validation_level

    def split_dataset(self, name: str, format: str | None = "numpy") -> datasets.Dataset:
        """One split as a ``datasets.Dataset`` (``format``: ``"numpy"``, ``"torch"`` or ``None``)."""
        if name not in self.splits:
            raise KeyError(f"Unknown split {name!r}; splits: {list(self.splits)}")
        ds = self.cells.select(self.splits[name])
        return ds.with_format(format) if format else ds

    def to_dataset_dict(self, format: str | None = "numpy") -> datasets.DatasetDict:
        """All splits as a ``datasets.DatasetDict``."""
        return datasets.DatasetDict({name: self.split_dataset(name, format) for name in self.splits})

    # --- dense model inputs
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dense model inputs for all rows: expression float32 [M, Nt] (log-normalised),
        measured_mask bool [M, Nt] (genes the row's dataset measured), labels int64 [M]."""
        x, mask = expression_tensors(self.cells, self.num_transcripts, self.measured)
        return x, mask, torch.from_numpy(self.labels)

    # --- the shared graph and the entity priors
    def graph(self) -> TOSGGraph:
        """The shared entity graph (:func:`load_graph`), loaded once."""
        if self._graph is None:
            self._graph = load_graph(self.path)
        return self._graph[0]

    def entities(self) -> pd.DataFrame:
        """The entities table (names, descriptions, sequences), loaded with the graph."""
        self.graph()
        return self._graph[1]

    @property
    def internal_edge_index(self) -> torch.Tensor:
        """int64 [2, Ei], transcript → protein."""
        return self.graph().internal_edge_index

    @property
    def ppi_edge_index(self) -> torch.Tensor:
        """int64 [2, Ep], protein–protein (one row per unordered pair)."""
        return self.graph().ppi_edge_index

    @property
    def edge_index(self) -> torch.Tensor:
        """int64 [2, Ei + Ep]: internal edges, then PPI edges."""
        g = self.graph()
        return torch.cat([g.internal_edge_index, g.ppi_edge_index], dim=1)

    def entity_priors(self) -> dict[str, torch.Tensor]:
        """Frozen text priors: ``name`` and ``description`` embeddings, float32 [N, 384]."""
        g = self.graph()
        return {"name": g.name_embeddings, "description": g.description_embeddings}

    # --- reports and export
    def summary(self) -> dict:
        """Split sizes, donors and class counts per split, and the split levels (for reports)."""
        return self.split.summary(self.labels, self.label_names)

    def to_anndata(self, split: str | None = None):
        """The cohort (or one split) as an ``anndata.AnnData`` for scanpy users.

        ``.X`` scipy CSR float32 [M, Nt] (CP10k + log1p expression on transcript nodes),
        ``.layers["counts"]`` the counts, ``.obs`` metadata + ``split`` + ``label``, ``.var`` the
        transcript entities (index ``entity_id``, ``symbol``, ``measured`` in this cohort),
        ``.uns["omnicelltosg"]`` label mapping, split levels, conditions and entity version.
        """
        import anndata as ad
        import scipy.sparse as sp

        rows = np.arange(len(self.cells)) if split is None else self.splits[split]
        part = self.cells.select(rows)
        cols = part.select_columns(["expression_indices", "expression_log", "expression_values"]).with_format("numpy")
        indptr, indices, logv, counts = [0], [], [], []
        for row in cols:
            indices.append(row["expression_indices"])
            logv.append(row["expression_log"])
            counts.append(row["expression_values"])
            indptr.append(indptr[-1] + len(row["expression_indices"]))
        cat = (lambda a, dt: np.concatenate(a).astype(dt) if a else np.zeros(0, dt))
        shape = (len(rows), self.num_transcripts)
        x = sp.csr_matrix((cat(logv, np.float32), cat(indices, np.int64), np.asarray(indptr)), shape=shape)
        c = sp.csr_matrix((cat(counts, np.float32), cat(indices, np.int64), np.asarray(indptr)), shape=shape)
        obs = part.select_columns(metadata_fields(part)).to_pandas()
        where = np.empty(len(self.cells), dtype=object)
        for name, idx in self.splits.items():
            where[idx] = name
        obs["split"] = pd.Categorical(where[rows])
        obs["label"] = self.labels[rows]
        obs.index = [f"{cid}#{i}" if dup else str(cid) for i, (cid, dup) in
                     enumerate(zip(obs["cell_id"], obs["cell_id"].duplicated(keep=False)))]
        ents = self.entities()
        tx = ents[ents["entity_type"] == "transcript"].sort_values("entity_index")
        measured = np.zeros(self.num_transcripts, dtype=bool)
        for d in set(obs["dataset_id"]):
            measured[self.measured[str(d)]] = True
        var = pd.DataFrame({"symbol": tx["symbol"].to_numpy(), "measured": measured},
                           index=pd.Index(tx["entity_id"].to_numpy(), name="entity_id"))
        uns = {"omnicelltosg": {
            "label_column": self.label_column, "label_names": list(self.label_names),
            "test_level": self.split.test_level, "validation_level": self.split.validation_level,
            "conditions": {k: (list(map(str, v)) if isinstance(v, (list, tuple, set)) else str(v))
                           for k, v in self.conditions.items()},
            "entity_version": str(self.graph().entity_version), "task": str(self.task or "")}}
        return ad.AnnData(X=x, obs=obs, var=var, layers={"counts": c}, uns=uns)


def _fingerprint(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


@functools.lru_cache(maxsize=None)
def _module_version(filename: str) -> str:
    return hashlib.sha256(Path(filename).read_bytes()).hexdigest()[:16]


def _code_fingerprint(previous: str, fn, *parts) -> str:
    """Fingerprint of ``previous`` transformed by module-level ``fn`` with ``parts``: includes a hash of
    the source file that defines ``fn``. ``datasets`` pickles an importable function by reference
    (module + name), so its own fingerprint does not change when the function's code does and a stale
    cached result would be served after an upgrade (seen here: a fixed normalisation kept returning
    the old values)."""
    return _fingerprint(previous, fn.__module__, fn.__qualname__, _module_version(inspect.getfile(fn)), *parts)


def _known_rows(meta: pd.DataFrame, label_column: str | None, spec: dict | None, reports: dict) -> np.ndarray:
    """Positions (int64) of the rows with a known label (and a known balance field when matching)."""
    known = ~is_unknown(meta[label_column]) if label_column else np.ones(len(meta), dtype=bool)
    if spec:
        known &= ~is_unknown(meta[spec["balance_field"]])
    reports["unknown_label_dropped"] = int((~known).sum())
    rows = np.flatnonzero(known)
    if len(rows) == 0:
        raise ValueError(f"Every queried meta-cell has an unknown {label_column!r}")
    return rows


def _matched_rows(meta: pd.DataFrame, rows: np.ndarray, label_column: str, spec: dict, sample_ratio: float | None,
                  sample_size: int | None, seed: int, reports: dict) -> np.ndarray:
    """Cases (down-sampled first when asked) and their matched controls, as positions in ``meta``
    (sorted; a position repeats for an up-sampled control). Adds the ``matching*`` reports."""
    sub = meta.iloc[rows].reset_index(drop=True)
    is_ctrl = sub[spec["balance_field"]].astype(str).str.lower() == str(spec["control_value"]).lower()
    cases = np.flatnonzero(~is_ctrl.to_numpy())
    if sample_ratio is not None or sample_size is not None:
        picked = sample_rows(sub[label_column].to_numpy()[cases], sample_ratio=sample_ratio,
                             sample_size=sample_size, seed=seed)
        keep = np.concatenate([np.unique(cases[picked]), np.flatnonzero(is_ctrl.to_numpy())])
        sub, rows = sub.iloc[np.sort(keep)].reset_index(drop=True), rows[np.sort(keep)]
    result: MatchResult = match_case_control(sub, seed=seed, **spec)
    reports["matching"] = result.summary() | {"spec": spec}
    reports["matching_strata"] = result.strata
    order = np.argsort(result.rows, kind="stable")
    # per cohort row (after sorting): its stratum, role and stage offset — for paired analyses
    reports["matching_rows"] = pd.DataFrame({
        "stratum": result.stratum[order], "role": np.where(result.is_case[order], "case", "control"),
        "stage_offset": result.stage_offset[order], "upsampled": result.upsampled[order]})
    return rows[result.rows[order]]


def _label_codes(meta: pd.DataFrame, rows: np.ndarray, label_column: str | None,
                 control_value: str | None) -> tuple[list[str], np.ndarray]:
    """``(label_names, labels int64 [len(rows)])``: sorted class names, ``control_value`` first when
    given and present. Raises ``ValueError`` if a label column has a single class."""
    values = meta[label_column].astype(str).to_numpy()[rows] if label_column else np.full(len(rows), "")
    label_names = sorted(set(values)) if label_column else []
    if control_value is not None and str(control_value).lower() in [v.lower() for v in label_names]:
        ctrl = next(v for v in label_names if v.lower() == str(control_value).lower())
        label_names = [ctrl] + [v for v in label_names if v != ctrl]
    if label_column and len(label_names) < 2:
        raise ValueError(f"label_column {label_column!r} has a single value {label_names} in this cohort")
    lookup = {v: i for i, v in enumerate(label_names)}
    return label_names, np.array([lookup.get(v, 0) for v in values], dtype=np.int64)


def _split_rows(meta: pd.DataFrame, rows: np.ndarray, labels: np.ndarray, *, split_by: str, validation_by: str,
                test_donors: list[str] | None, val_fraction: float, test_fraction: float, seed: int) -> Split:
    """The split of the cohort rows (positions into ``rows``), made on distinct meta-cells so that an
    up-sampled copy always follows its original."""
    uniq, first = np.unique(rows, return_index=True)
    umeta = meta.iloc[uniq]
    if split_by == "none":
        split_u = Split({"all": np.arange(len(uniq))}, "none", "none", {"all": sorted(set(donor_keys(umeta)))})
    elif split_by == "meta-cell":
        split_u = split_by_metacell(labels[first], val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                                    donors=donor_keys(umeta))
    else:
        split_u = split_by_donor(donor_keys(umeta), labels[first], val_fraction=val_fraction,
                                 test_fraction=test_fraction, seed=seed, validation_by=validation_by,
                                 test_donors=test_donors)
    where = np.empty(len(uniq), dtype=object)
    for name, idx in split_u.indices.items():
        where[idx] = name
    row_split = where[np.searchsorted(uniq, rows)]
    split = Split({name: np.flatnonzero(row_split == name) for name in split_u.indices},
                  split_u.test_level, split_u.validation_level, split_u.donors)
    if "n_cells" in umeta:
        split = level_of_rows(split, umeta["n_cells"].to_numpy())
    return split


def _combat_seq(cohort_cells: datasets.Dataset, cohort_meta: pd.DataFrame, split: Split, labels: np.ndarray,
                measured: dict[str, np.ndarray], *, seed: int, label_column: str | None,
                reports: dict) -> datasets.Dataset:
    """ComBat-seq fitted per split (labels as covariate in train only), as a cached ``map``; adds the
    ``correction`` report."""
    corrected, corr_report = {}, []
    payload = cohort_cells.select_columns(["expression_indices", "expression_values"])
    for name, idx in split.indices.items():
        if len(idx) == 0:
            continue
        part = payload.select(idx)
        new_i, new_v, rep = combat_seq_rows(
            [np.asarray(v) for v in part["expression_indices"]], [np.asarray(v) for v in part["expression_values"]],
            cohort_meta.iloc[idx].reset_index(drop=True), measured,
            covariate=labels[idx] if name == "train" else None, split=name)
        corrected.update({int(r): (i, v) for r, i, v in zip(idx, new_i, new_v)})
        corr_report += rep
    reports["correction"] = {"method": "combat_seq (inmoose.pycombat_seq)", "groups": corr_report}
    return cohort_cells.map(
        replace_expression, batched=True, with_indices=True, fn_kwargs={"corrected": corrected},
        new_fingerprint=_code_fingerprint(cohort_cells._fingerprint, replace_expression, "combat_seq", seed,
                                          label_column), desc="ComBat-seq")


def _normalised_and_labelled(cohort_cells: datasets.Dataset, label_column: str | None,
                             label_names: list[str]) -> datasets.Dataset:
    """``expression_log`` (:func:`normalize_expression`) and, with a label column, ``label`` added as
    cached ``map`` steps."""
    cohort_cells = cohort_cells.map(normalize_expression, batched=True, desc="normalise",
                                    new_fingerprint=_code_fingerprint(cohort_cells._fingerprint, normalize_expression))
    if label_column:
        cohort_cells = cohort_cells.map(
            encode_labels, batched=True, desc="labels", fn_kwargs={"label_column": label_column, "label_names": label_names},
            new_fingerprint=_code_fingerprint(cohort_cells._fingerprint, encode_labels, label_column, tuple(label_names)))
    return cohort_cells


def check_cohort_arguments(**arguments) -> None:
    """Check :func:`load_cohort` keyword arguments (all but ``path``) without loading anything: the
    checks ``load_cohort`` makes before it opens the dataset, plus the ``match`` argument.

    Raises
    ------
    ValueError
        An argument ``load_cohort`` does not take (the message lists the accepted ones), or a bad value
        (the message names the argument and what is accepted).
    """
    params = {name: p.default for name, p in inspect.signature(load_cohort).parameters.items() if name != "path"}
    unknown = sorted(map(str, set(arguments) - set(params)))
    if unknown:
        raise ValueError(f"load_cohort does not take {unknown}; accepted arguments: {sorted(params)}")
    a = params | arguments
    task, settings = resolve_task(a["task"])
    check_request(a["label_column"] or settings.label_column, a["split_by"], a["correction"],
                   conditions=a["conditions"], test_donors=a["test_donors"], seed=a["seed"],
                   sample_ratio=a["sample_ratio"], sample_size=a["sample_size"], min_per_class=a["min_per_class"],
                   val_fraction=a["val_fraction"], test_fraction=a["test_fraction"],
                   validation_by=a["validation_by"], config=a["config"])
    match_arguments(a["match"], task, settings)


def load_cohort(path: str | Path, *, conditions: dict | None = None, task: str | None = None,
                label_column: str | None = None, config: str = "all", sample_ratio: float | None = None,
                sample_size: int | None = None, min_per_class: int | None = None, match: bool | dict = False,
                split_by: str = "donor", validation_by: str = "donor", test_donors: list[str] | None = None,
                val_fraction: float = 0.15, test_fraction: float = 0.2, correction: str | None = None,
                seed: int = 0, verify: bool = False) -> Cohort:
    """Query, sample, match, split, batch-correct and normalise a labelled cohort.

    Parameters
    ----------
    path
        Dataset folder written by ``omnicelltosg build``.
    conditions
        Metadata query, e.g. ``{"tissue_general": "blood", "disease": ["normal", "systemic lupus
        erythematosus"]}``: scalar = equality, list = membership, strings case-insensitive.
    task
        ``"cell_type"``, ``"disease"``, ``"sex"`` (alias ``"gender"``), ``"condition"`` or ``None``:
        sets the default ``label_column``, the per-class minimum for cell-type sampling and the
        matching preset (:data:`dataset_script.cohorts.tasks.TASKS`).
    label_column
        Metadata column to predict (default: the task's). Rows with an unknown label are dropped.
    sample_ratio, sample_size
        Down-sample (one of them): per class with a minimum of ``min_per_class`` rows (default 10
        for cell-type tasks, rare classes up-sampled; 0 otherwise). With matching, the cases are
        sampled before they are matched.
    match
        ``True`` for the task's stratified case/control matching preset, or a dict of
        :func:`dataset_script.cohorts.matching.match_case_control` arguments (``balance_field``,
        ``control_value``, ``match_keys``, ``stage_key``, ``tolerance``, ``controls_per_case``,
        ``upsample``) overriding it.
    split_by, validation_by, test_donors, val_fraction, test_fraction
        See :func:`dataset_script.cohorts.splits.split_by_donor`; ``split_by="meta-cell"`` gives a
        stratified meta-cell-level split (flagged in ``cohort.split``).
    correction
        ``None`` or ``"combat_seq"`` (:mod:`dataset_script.cohorts.batch_correction`).
    seed
        Every random choice (sampling, matching, split) derives from it.
    verify
        Also hash every file of the folder against ``build_info.json`` (sizes and the set of files are
        always checked: :func:`dataset_script.cohorts.storage.check_dataset`).

    Raises
    ------
    KeyError
        Unknown condition field or label column (the message lists the fields).
    ValueError
        An empty query (the message lists the available values), a bad task / sampling request /
        correction method, a label column with a single class, or too few donors.
    DatasetIntegrityError
        (a ``ValueError``) if the folder's files are not those its build recorded, or a ``cell_id`` repeats.
    """
    path = Path(path)
    task, settings = resolve_task(task)
    label_column = label_column or settings.label_column
    check_request(label_column, split_by, correction, conditions=conditions, test_donors=test_donors, seed=seed,
                   sample_ratio=sample_ratio, sample_size=sample_size, min_per_class=min_per_class,
                   val_fraction=val_fraction, test_fraction=test_fraction, validation_by=validation_by, config=config)
    conditions = dict(conditions or {})
    cells = _load(path, config, verify=verify)
    fields = metadata_fields(cells)
    if label_column is not None and label_column not in fields:
        raise KeyError(f"label_column {label_column!r} is not a metadata field; available: {sorted(fields)}")
    cells = query(cells, conditions)
    meta = cells.select_columns(fields).to_pandas()
    reports: dict = {"query": {"conditions": conditions, "n_metacells": int(len(meta))}}

    # 1. rows with a known label, 2. sampling, 3. matching
    spec = match_arguments(match, task, settings)
    rows = _known_rows(meta, label_column, spec, reports)
    check_sample_size(sample_size, len(rows))
    min_per_class = settings.min_per_class if min_per_class is None else min_per_class
    if spec:
        rows = _matched_rows(meta, rows, label_column, spec, sample_ratio, sample_size, seed, reports)
    else:
        strata = meta[label_column].to_numpy() if label_column else np.zeros(len(meta))
        rows = rows[sample_rows(strata[rows], sample_ratio=sample_ratio, sample_size=sample_size,
                                min_per_class=min_per_class, upsample=settings.upsample, seed=seed)]
    reports["sampling"] = {"sample_ratio": sample_ratio, "sample_size": sample_size, "min_per_class": min_per_class,
                           "n_metacells": int(len(rows)), "n_repeated_rows": int(len(rows) - len(np.unique(rows)))}
    label_names, labels = _label_codes(meta, rows, label_column, spec["control_value"] if spec else None)

    # 4. split, then select the cohort's rows (a cached, fingerprinted indices mapping)
    split = _split_rows(meta, rows, labels, split_by=split_by, validation_by=validation_by, test_donors=test_donors,
                        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    cohort_cells = cells.select(rows.tolist())
    measured = gene_panels(path)
    # 5. ComBat-seq, 6. normalisation and labels at access time
    if correction == "combat_seq":
        cohort_cells = _combat_seq(cohort_cells, meta.iloc[rows].reset_index(drop=True), split, labels, measured,
                                   seed=seed, label_column=label_column, reports=reports)
    cohort_cells = _normalised_and_labelled(cohort_cells, label_column, label_names)
    num_transcripts = int(_build_info(path)["n_transcripts"])
    return Cohort(cohort_cells, labels, label_names, split, label_column, conditions, num_transcripts, path, task,
                  measured, reports)
