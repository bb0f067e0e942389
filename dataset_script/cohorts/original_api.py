"""The original OmniCellTOSG loaders' interfaces over :func:`load_cohort`.

- ``CellTOSGDataLoader`` (the original ``CellTOSG_Loader``): metadata conditions, a task, donor-level
  train / validation / test splits.
- ``CellTOSGDataset`` (the original ``celltosg`` package, README §4.4): an organ / disease /
  organ-disease subset, one label type, no split.

Scripts written for the original release port by changing one import::

    # from CellTOSG_Loader import CellTOSGDataLoader
    from dataset_script.cohorts.original_api import CellTOSGDataLoader
    # from celltosg import CellTOSGDataset
    from dataset_script.cohorts.original_api import CellTOSGDataset

The argument names and the attributes are the original's; the work underneath is this project's
(donor-level splits with a validation split, symmetric stage matching, leak-free ComBat-seq). Two
documented differences of ``CellTOSGDataLoader``: ``data`` / ``labels`` / ``metadata`` gain a
``"validation"`` entry, and ``x_bio_emb`` is ``None`` when the dataset has no protein-sequence
embeddings. ``CellTOSGDataset`` lists its differences in its docstring.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from dataset_script.cohorts.loader import _build_info, _load, load_cohort
from dataset_script.cohorts.query import condition_mask, is_unknown
from dataset_script.files import atomic_directory, check_output_folder

logger = logging.getLogger(__name__)

#: Column names of the original release → this dataset's (CELLxGENE-style) names.
FIELD_ALIAS = {"CMT_name": "cell_type", "CMT_id": "cell_type_ontology_id", "disease_BMG_name": "disease",
               "sex_normalized": "sex", "gender": "sex"}


def _alias(name: str | None) -> str | None:
    return FIELD_ALIAS.get(name, name) if name is not None else None


# ---------------------------------------------------------------- shared by both interfaces


def _num_nodes(root) -> int:
    """``N = Nt + Np``: transcript plus protein nodes of the dataset (its ``build_info.json``)."""
    info = _build_info(root)
    return int(info["n_transcripts"]) + int(info["n_proteins"])


def _split_arrays(cohort, n_nodes: int, *, shuffle: bool, seed: int) -> dict[str, tuple[np.ndarray, pd.DataFrame, np.ndarray]]:
    """Split name → ``(x, metadata, y)`` in the original layout.

    ``x`` float32 [m, N]: CP10k + log1p expression on the transcript columns ``0..Nt-1``, zeros on the
    protein columns ``Nt..N-1``; ``metadata`` the rows' metadata with ``split`` and ``sample_index``;
    ``y`` int64 [m] the cohort's label codes. With ``shuffle`` each split's rows are permuted by
    ``numpy.random.default_rng(seed)`` (x, metadata and y together).
    """
    x, _, y = cohort.tensors()
    x, y = x.numpy(), y.numpy()
    meta = cohort.cells.select_columns([k for k in cohort.cells.column_names
                                        if not k.startswith("expression_")]).to_pandas()
    rng = np.random.default_rng(seed)
    out = {}
    for name, idx in cohort.splits.items():
        idx = rng.permutation(idx) if shuffle else idx
        full = np.zeros((len(idx), n_nodes), dtype=np.float32)
        full[:, : x.shape[1]] = x[idx]
        part = meta.iloc[idx].reset_index(drop=True).assign(split=name, sample_index=np.arange(len(idx)))
        out[name] = (full, part, y[idx])
    return out


def _edge_arrays(cohort) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(edge_index, internal_edge_index, ppi_edge_index)``, int64 numpy [2, E]: transcript → protein
    edges, protein–protein edges (one column per unordered pair) and the two concatenated in that order."""
    g = cohort.graph()
    internal, ppi = g.internal_edge_index.numpy(), g.ppi_edge_index.numpy()
    return np.concatenate([internal, ppi], axis=1), internal, ppi


def _prior_embeddings(cohort, *, warn: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Stored prior embeddings by node index: name and description float32 [N, 384], protein sequence
    float32 [N, S] (zero rows for nodes without a sequence) or ``None`` when the dataset has none
    (logged when ``warn``)."""
    g = cohort.graph()
    bio = None if g.sequence_embeddings is None else g.sequence_embeddings.numpy()
    if bio is None and warn:
        logger.warning("This dataset has no protein-sequence embeddings; x_bio_emb / s_bio is None "
                       "(use train_bio=True for the raw sequences)")
    return g.name_embeddings.numpy(), g.description_embeddings.numpy(), bio


class CellTOSGDataLoader:
    """Load a cohort with the original loader's arguments.

    Parameters
    ----------
    root
        Dataset folder (``omnicelltosg build`` output).
    conditions
        Metadata query (original field names such as ``CMT_name`` / ``disease_BMG_name`` are accepted).
    task
        ``"disease"``, ``"gender"`` / ``"sex"``, ``"cell_type"`` or ``"condition"``
        (:data:`dataset_script.cohorts.tasks.TASKS`; ``"pretrain"`` is refused: use
        :func:`dataset_script.cohorts.loader.load_cells`).
    label_column
        Column to encode as labels (default: the task's).
    sample_ratio, sample_size
        Down-sampling (one of them).
    shuffle
        Shuffle the rows of each split (with ``random_state``).
    stratified_balancing
        Stratified case/control matching with the task's preset.
    extract_mode
        ``"train"`` (donor-level train / validation / test) or ``"inference"`` (all rows, no split).
    random_state
        Seed of every random choice.
    train_text, train_bio
        Load raw texts / sequences (``s_name``, ``s_desc``, ``s_bio``) instead of the embeddings.
    correction_method
        ``None`` or ``"combat_seq"``.
    output_dir
        Write the original file layout there (``train/expression_matrix.npy``, ``train/labels.csv``,
        ``train/labels_train.npy``, …, ``label_mapping_<label>.csv``, ``labels_full_<label>.csv``);
        written to a temporary folder and moved into place when complete. The folder gets a marker
        file (``.omnicelltosg``, kind ``export``); a non-empty folder without it is never written into
        or replaced, and an earlier export is replaced only with ``overwrite=True``. Checked before
        any loading.
    overwrite
        Replace an earlier export at ``output_dir`` (only an export folder written here).
    **cohort_kwargs
        Passed to :func:`load_cohort` (``validation_by``, ``test_donors``, ``split_by``, …).

    Attributes
    ----------
    data : dict split → float32 [m, N] expression (CP10k + log1p on transcript columns, zeros on
        protein columns, as in the original), or one array in inference mode.
    labels : dict split → int64 [m] (or the metadata frame in inference mode); ``label_mapping``
        name → index; ``metadata`` dict split → DataFrame with a ``split`` column.
    edge_index, internal_edge_index, ppi_edge_index : int64 [2, E] numpy arrays.
    x_name_emb, x_desc_emb : float32 [N, 384] (or ``s_name`` / ``s_desc`` DataFrames with
        ``train_text``); ``x_bio_emb`` / ``s_bio`` likewise.
    cohort : the underlying :class:`dataset_script.cohorts.loader.Cohort`.

    Raises
    ------
    FileExistsError
        If ``output_dir`` is a non-empty folder that is not an export of this loader, or an export and
        ``overwrite`` is False (before anything is loaded).
    ValueError, KeyError
        For bad arguments (see :func:`dataset_script.cohorts.loader.load_cohort`).
    """

    def __init__(self, root, conditions: dict, task: str | None = None, label_column: str | None = None,
                 sample_ratio: float | None = None, sample_size: int | None = None, shuffle: bool = False,
                 stratified_balancing: bool = False, extract_mode: str = "train", random_state: int = 2025,
                 train_text: bool = False, train_bio: bool = False, correction_method: str | None = None,
                 output_dir: str | None = None, overwrite: bool = False, **cohort_kwargs):
        if output_dir is not None:
            check_output_folder(Path(output_dir), kind="export", overwrite=overwrite)
        self.overwrite = overwrite
        if extract_mode not in ("train", "inference"):
            raise ValueError(f"extract_mode must be 'train' or 'inference'; got {extract_mode!r}")
        if task == "pretrain":
            raise ValueError("task='pretrain' has no labels: use dataset_script.cohorts.loader.load_cells(root, conditions=...) "
                             "to get every queried meta-cell for pretraining")
        if correction_method in ("none", ""):
            correction_method = None
        if correction_method in ("combat", "pycombat_seq"):
            correction_method = "combat_seq"
        self.root, self.conditions, self.task = root, conditions, task
        self.label_column = _alias(label_column)
        self.sample_ratio, self.sample_size, self.shuffle = sample_ratio, sample_size, shuffle
        self.stratified_balancing, self.extract_mode, self.random_state = stratified_balancing, extract_mode, random_state
        self.train_text, self.train_bio = train_text, train_bio
        self.correction_method, self.output_dir = correction_method, output_dir
        conditions = {_alias(k): v for k, v in (conditions or {}).items()}
        self.cohort = load_cohort(
            root, conditions=conditions, task=_alias(task), label_column=self.label_column,
            sample_ratio=sample_ratio, sample_size=sample_size, match=bool(stratified_balancing),
            correction=correction_method, seed=random_state,
            **({"split_by": "none"} if extract_mode == "inference" else {}), **cohort_kwargs)
        c = self.cohort
        self.label_column = c.label_column
        self.label_mapping = {name: i for i, name in enumerate(c.label_names)} if c.label_names else None
        parts = _split_arrays(c, _num_nodes(root), shuffle=shuffle, seed=random_state)
        self.data = {name: x for name, (x, _, _) in parts.items()}
        self.metadata = {name: meta for name, (_, meta, _) in parts.items()}
        labels = {name: y for name, (_, _, y) in parts.items()}
        if extract_mode == "inference":
            self.data, self.metadata = self.data["all"], self.metadata["all"]
            self.labels = self.metadata
        else:
            self.labels = labels if c.label_names else self.metadata

        self.edge_index, self.internal_edge_index, self.ppi_edge_index = _edge_arrays(c)
        entities = c.entities()
        name_emb, desc_emb, bio_emb = _prior_embeddings(c, warn=not train_bio)
        if train_text:
            self.s_name = entities[["entity_index", "name"]].copy()
            self.s_desc = entities[["entity_index", "description"]].copy()
        else:
            self.x_name_emb, self.x_desc_emb = name_emb, desc_emb
        if train_bio:
            self.s_bio = entities[["entity_index", "sequence"]].copy()
        else:
            self.x_bio_emb = bio_emb
        if output_dir:
            self._write(Path(output_dir))

    def _write(self, out: Path) -> None:
        """The original file layout, written atomically: the folder appears complete or not at all."""
        with atomic_directory(out, replace=self.overwrite, kind="export") as tmp:
            if self.extract_mode == "inference":
                self.metadata.to_csv(tmp / "labels.csv", index=False)
                np.save(tmp / "expression_matrix.npy", self.data)
            else:
                for name in self.data:
                    (tmp / name).mkdir()
                    self.metadata[name].to_csv(tmp / name / "labels.csv", index=False)
                    np.save(tmp / name / "expression_matrix.npy", self.data[name])
                    if self.label_mapping:
                        np.save(tmp / name / f"labels_{name}.npy", self.labels[name])
                if self.label_mapping:
                    col = self.label_column
                    mapping = {"label_name": list(self.label_mapping), "label_index": list(self.label_mapping.values())}
                    pd.DataFrame(mapping).to_csv(tmp / f"label_mapping_{col}.csv", index=False)
                    full = pd.concat([self.metadata[n].assign(label_index=self.labels[n]) for n in self.data],
                                     ignore_index=True)
                    full.to_csv(tmp / f"labels_full_{col}.csv", index=False)


# ---------------------------------------------------------------- CellTOSGDataset (README §4.4 of the original)

#: The original's ``categories``.
CATEGORIES = ("get_organ", "get_disease", "get_organ_disease")
#: The original's label types → the metadata column they read (``status`` is derived from it:
#: 0 = control, i.e. disease ``normal``; 1 = case, any other disease).
LABEL_TYPES = {"ct": "cell_type", "og": "tissue_general", "ds": "disease", "status": "disease"}
#: The ``disease`` value of healthy meta-cells: the original's ``general`` folders and ``status`` controls.
CONTROL_DISEASE = "normal"
#: Abbreviations (the original's folder keys and common ones) → the full names each may stand for.
#: One is accepted only when exactly one of these names is a disease of the dataset (of the organ,
#: for ``get_organ_disease``); compared after :func:`_normalise_name`.
DISEASE_ABBREVIATIONS = {
    "general": ("normal",),
    "AD": ("alzheimer disease",),
    "ALS": ("amyotrophic lateral sclerosis",),
    "ASL": ("amyotrophic lateral sclerosis",),  # the original's key for ALS
    "MS": ("multiple sclerosis",),
    "SLE": ("systemic lupus erythematosus",),
    "SCLC": ("small cell lung carcinoma",),
    "NSCLC": ("non-small cell lung carcinoma",),
    "LUAD": ("lung adenocarcinoma",),
    "LUSC": ("lung squamous cell carcinoma", "squamous cell lung carcinoma"),
    "RCC": ("renal cell carcinoma", "clear cell renal carcinoma", "clear cell renal cell carcinoma"),
    "ccRCC": ("clear cell renal carcinoma", "clear cell renal cell carcinoma"),
    "CIS": ("clinically isolated syndrome",),
    "AML": ("acute myeloid leukemia",),
    "ALL": ("acute lymphoblastic leukemia",),
    "APL": ("acute promyelocytic leukemia",),
    "NHL": ("b-cell non-hodgkin lymphoma", "non-hodgkin lymphoma"),
    "CTCL": ("cutaneous t-cell lymphoma", "advanced-stage cutaneous t-cell lymphoma"),
    "GBM": ("glioblastoma",),
    "MDD": ("major depressive disorder",),
    "ASD": ("autism spectrum disorder",),
    "FTD": ("frontotemporal dementia",),
    "PD": ("parkinson disease",),
    "PDAC": ("pancreatic ductal adenocarcinoma",),
}
#: ``status`` cohorts: one random ``normal`` control per case from the case's organ, no repeated rows
#: (the original's balancing with ``general`` samples; arguments of ``load_cohort(match=...)``).
STATUS_MATCH = {"balance_field": "disease", "control_value": CONTROL_DISEASE, "match_keys": ["tissue_general"],
                "stage_key": None, "upsample": False}


def _normalise_name(value) -> str:
    """Comparison form of an organ or disease name: lower case, ``_`` as a space, possessive and
    apostrophes dropped, single spaces (``"alzheimer's_disease"`` → ``"alzheimer disease"``)."""
    s = str(value).strip().lower().replace("_", " ").replace("'s ", " ").replace("’s ", " ")
    s = s.replace("'", "").replace("’", "")
    return " ".join(s.split())


def _name_table(values, abbreviations: bool) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """Names accepted for the known ``values`` of an organ / disease column.

    Returns ``(table, ambiguous, accepted)``: normalised name (:func:`_normalise_name`) → the dataset
    values it selects, for every value and (``abbreviations``) every abbreviation of
    :data:`DISEASE_ABBREVIATIONS` that names exactly one of them; abbreviation → values, for those
    naming several; the accepted names as a user writes them (values, then abbreviations).
    """
    by_norm: dict[str, list[str]] = {}
    for v in sorted(set(map(str, values))):
        by_norm.setdefault(_normalise_name(v), []).append(v)
    table, ambiguous, accepted = dict(by_norm), {}, [v for vs in by_norm.values() for v in vs]
    for abbr, full in DISEASE_ABBREVIATIONS.items() if abbreviations else ():
        key = _normalise_name(abbr)
        hits = sorted({_normalise_name(f) for f in full} & set(by_norm))
        if key in by_norm or not hits:
            continue
        if len(hits) == 1:
            table[key] = by_norm[hits[0]]
            accepted.append(abbr)
        else:
            ambiguous[key] = [v for h in hits for v in by_norm[h]]
    return table, ambiguous, accepted


def _resolve(name: str, values, what: str, where: str, abbreviations: bool) -> list[str]:
    """Dataset values selected by ``name`` among the known ``values`` of a column (:func:`_name_table`).

    Raises
    ------
    ValueError
        ``name`` is not an accepted name (the message lists them), or an abbreviation that names
        several diseases here (the message lists them).
    """
    table, ambiguous, accepted = _name_table(values, abbreviations)
    key = _normalise_name(name)
    if key in table:
        return table[key]
    if key in ambiguous:
        raise ValueError(f"{what} {name!r} is ambiguous {where}: it could mean any of {ambiguous[key]}; "
                         f"give the full name (accepted: {accepted})")
    raise ValueError(f"Unknown {what} {name!r} {where}; accepted: {accepted}")


def _known(values: pd.Series) -> pd.Series:
    """The annotated values of a metadata column (no missing / "unknown"-like ones)."""
    return values[~is_unknown(values)].astype(str)


class CellTOSGDataset:
    """An organ / disease / organ-disease subset with one label type: the original ``CellTOSGDataset``
    (the ``celltosg`` package of the original release, README §4.4) over :func:`load_cohort`.

    Parameters
    ----------
    root
        Dataset folder (``omnicelltosg build`` output).
    categories : str
        ``"get_organ"`` (every meta-cell of an organ), ``"get_disease"`` (a disease in every organ
        that has it) or ``"get_organ_disease"`` (one organ-disease pair), as in the original. One
        string (the original README's list shows the options).
    name : str
        The organ (``"blood"``, ``"bone_marrow"``), the disease (``"systemic lupus erythematosus"``,
        ``"SLE"``, ``"general"`` = ``"normal"``) or ``"<organ>-<disease>"`` (``"blood-SLE"``). Organs
        are values of ``tissue_general`` and diseases values of ``disease`` in this dataset, compared
        case-insensitively with ``_`` read as a space and possessives dropped (``"alzheimer's_disease"``
        = ``"Alzheimer disease"``); the abbreviations of :data:`DISEASE_ABBREVIATIONS` are accepted
        when exactly one disease of the dataset (of the organ, for ``get_organ_disease``) matches.
    label_type : str
        ``"ct"`` (``cell_type``), ``"og"`` (``tissue_general``), ``"ds"`` (``disease``) or
        ``"status"`` (0 = control, disease ``normal``; 1 = case, any other disease).
    seed : int
        Seed of the sampling, the ``status`` control draw and the shuffle.
    ratio : float or None
        Fraction in (0, 1] of the meta-cells kept; ``None`` keeps all (not in the original).
    train_text, train_bio : bool
        As in the original: ``True`` gives the raw texts / sequences in ``s_name`` / ``s_desc`` /
        ``s_bio``, ``False`` the stored embeddings.
    shuffle : bool
        Permute the rows (``data``, ``labels`` and ``metadata`` together) with ``seed``.

    Attributes
    ----------
    data : numpy float32 [M, N]
        One row per meta-cell of the subset; columns are the entity nodes (``N = Nt + Np``):
        CP10k + log1p expression on the transcript columns ``0..Nt-1``, zeros on the protein columns
        ``Nt..N-1`` (the original's X also spans every entity node). Also ``x``.
    labels : numpy int64 [M]
        Class codes, indices into ``label_names`` (sorted class names; ``["control", "case"]`` for
        ``status``); ``label_mapping`` name → code. Also ``y``.
    metadata : pandas.DataFrame [M rows]
        The rows' metadata (``cell_id``, ``donor_id``, ``tissue_general``, ``disease``, ``cell_type``, …),
        aligned with ``data``; ``label_column`` names the column ``labels`` encode (``disease`` for
        ``status``, from which it is derived).
    edge_index : numpy int64 [2, Ei + Ep]
        ``internal_edge_index`` then ``ppi_edge_index``.
    internal_edge_index : numpy int64 [2, Ei]
        Transcript (row 0, in ``0..Nt-1``) → its protein (row 1, in ``Nt..N-1``), as in the entities table.
    ppi_edge_index : numpy int64 [2, Ep]
        Protein–protein pairs (indices in ``Nt..N-1``), one column per unordered pair.
    s_name, s_desc : numpy float32 [N, 384] or list of str [N]
        Name / description embeddings (``train_text=False``) or texts (``train_text=True``), by node index.
    s_bio : numpy float32 [N, S], list of str [N] or None
        Protein-sequence embeddings (zero rows for nodes without a sequence; ``None`` when the dataset
        has none) or the sequences (``""`` for transcripts and proteins without one).
    x_name_emb, x_desc_emb, x_bio_emb
        The same arrays as ``s_name`` / ``s_desc`` / ``s_bio`` in embedding mode, else ``None``
        (the names the original README uses).
    root, categories, name, label_type, seed, ratio, train_text, train_bio, shuffle
        The arguments. ``organ`` / ``disease``: the dataset values selected (lists, or ``None``);
        ``conditions``: the metadata query given to :func:`load_cohort`; ``cohort``: its result.
    num_transcripts, num_nodes : int
        ``Nt`` and ``N``.

    ``len(ds)`` is ``M``; ``ds[i]`` is ``(data[i], labels[i], edge_index, internal_edge_index,
    ppi_edge_index, s_name, s_desc)`` as in the original; :meth:`as_tuple` gives the eight values the
    original README unpacks.

    Raises
    ------
    ValueError
        An unknown ``categories`` / ``label_type`` / organ / disease (the message lists the accepted
        values; organs and diseases are those of this dataset), an ambiguous abbreviation, a
        ``get_organ_disease`` name that is not ``<organ>-<disease>``, a label type with fewer than two
        classes in the subset (the message lists the label types that have two), ``status`` without
        cases or without ``normal`` controls in the organ(s), or a bad ``ratio`` / ``seed``.
    FileNotFoundError
        ``root`` is not a dataset folder.

    Notes
    -----
    Mirrored from the original: the arguments, their defaults (``label_type="ct"``, ``seed=2025``,
    ``ratio=0.01``, ``train_text=False``, ``train_bio=False``, ``shuffle=False``), the three categories,
    the four label types, no train / test split, ``status`` cohorts of cases plus as many controls
    drawn from the same organ, the attributes ``data`` / ``labels`` / ``edge_index`` /
    ``internal_edge_index`` / ``ppi_edge_index`` / ``s_name`` / ``s_desc`` / ``s_bio``, ``edge_index``
    as internal edges followed by PPI edges, ``__getitem__`` / ``__len__``.

    Differences from the original:

    - Subsets come from this dataset's metadata (``tissue_general``, ``disease``), not from the
      original's fixed organ / disease folder table; unknown or ambiguous names raise ``ValueError``
      listing the accepted ones (the original raised ``ValueError`` / ``KeyError`` without a list, or
      failed on an empty concatenation). ``get_organ_disease`` splits at the ``-`` after a known
      organ, so diseases may contain ``-``.
    - ``ratio`` samples per class of the label column, ``max(floor(n * ratio), 1)`` rows per class
      (the original: ``max(1, int(n * ratio))`` rows per partition file), with ``numpy.random.
      default_rng(seed)`` (the original reseeded the global ``numpy.random``). For ``status`` the
      cases are sampled per disease (``floor(n * ratio)``, no minimum), then one ``normal`` control
      per case from the case's organ without replacement; cases without a control are dropped (the
      original kept every case and could return fewer controls). The original's ``get_disease`` +
      ``status`` failed (no organ to balance with); here controls come from the organs that have the
      disease.
    - ``labels`` are codes 0..K-1 of the subset's classes (``label_names``), not the original's
      dataset-wide codes from its ``Y`` files (its training scripts remapped them with ``np.unique``).
      ``status`` is derived from ``disease`` (the original read a fourth ``Y`` column). A label type
      with a single class in the subset (``og`` under ``get_organ``, ``ds`` under
      ``get_organ_disease``) is refused; the original returned a constant label.
    - ``data`` is float32 CP10k + log1p of this dataset's meta-cell counts, with zero protein columns;
      unshuffled rows are in dataset order (the original: partition-file order).
    - Node numbering is this dataset's (transcripts ``0..Nt-1``, proteins ``Nt..N-1``), not the
      original's 483,817 BioMedGraphica entities; PPI edges are stored once per unordered pair.
    - Texts are lists aligned with the node index, not the original's raw CSV file content as one
      string; embeddings are this dataset's MiniLM name / description (384) and UniRep sequence
      priors, not the original's ``x_*_emb.npy``.
    - Added: ``metadata``, ``label_column``, ``label_names``, ``label_mapping``, ``organ``, ``disease``,
      ``conditions``, ``cohort``, ``num_transcripts``, ``num_nodes``, ``x`` / ``y``, ``x_*_emb``,
      :meth:`as_tuple`, ``ratio=None``.
    """

    def __init__(self, root, categories: str, name: str, label_type: str = "ct", seed: int = 2025,
                 ratio: float | None = 0.01, train_text: bool = False, train_bio: bool = False,
                 shuffle: bool = False):
        if not isinstance(categories, str) or categories not in CATEGORIES:
            raise ValueError(f"Unknown categories {categories!r}; accepted: {list(CATEGORIES)} (one string)")
        if not isinstance(label_type, str) or label_type not in LABEL_TYPES:
            raise ValueError(f"Unknown label_type {label_type!r}; accepted: {list(LABEL_TYPES)} "
                             f"({', '.join(f'{k} = {v}' for k, v in LABEL_TYPES.items())})")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must be a non-empty string (an organ, a disease or '<organ>-<disease>'); got {name!r}")
        self.root, self.categories, self.name, self.label_type = root, categories, name, label_type
        self.seed, self.ratio, self.shuffle = seed, ratio, shuffle
        self.train_text, self.train_bio = train_text, train_bio

        meta = _load(root, "all").select_columns(sorted({"tissue_general", "disease", "cell_type"})).to_pandas()
        self.organ, self.disease = self._resolve_subset(meta, categories, name)
        self.label_column = LABEL_TYPES[label_type]
        self.conditions = self._conditions(meta)

        status = label_type == "status"
        self.cohort = load_cohort(
            root, conditions=self.conditions, label_column=self.label_column, sample_ratio=ratio,
            split_by="none", seed=seed, **({"match": STATUS_MATCH} if status else {"min_per_class": 1}))
        c = self.cohort
        self.num_transcripts, self.num_nodes = c.num_transcripts, _num_nodes(root)
        self.data, self.metadata, labels = _split_arrays(c, self.num_nodes, shuffle=shuffle, seed=seed)["all"]
        if status:
            self.label_names = ["control", "case"]
            self.labels = (self.metadata["disease"].str.lower() != CONTROL_DISEASE).to_numpy().astype(np.int64)
        else:
            self.label_names, self.labels = list(c.label_names), labels
        self.label_mapping = {n: i for i, n in enumerate(self.label_names)}

        self.edge_index, self.internal_edge_index, self.ppi_edge_index = _edge_arrays(c)
        name_emb, desc_emb, bio_emb = _prior_embeddings(c, warn=not train_bio)
        entities = c.entities()
        texts = {col: entities[col].fillna("").astype(str).tolist() for col in ("name", "description", "sequence")}
        self.s_name, self.s_desc = (texts["name"], texts["description"]) if train_text else (name_emb, desc_emb)
        self.s_bio = texts["sequence"] if train_bio else bio_emb
        self.x_name_emb, self.x_desc_emb = (None, None) if train_text else (name_emb, desc_emb)
        self.x_bio_emb = None if train_bio else bio_emb

    # --- name → dataset values → metadata query
    @staticmethod
    def _resolve_subset(meta: pd.DataFrame, categories: str, name: str) -> tuple[list[str] | None, list[str] | None]:
        """``(organ values, disease values)`` of the dataset that ``name`` selects (``None`` = any)."""
        organs = _known(meta["tissue_general"]).unique()
        if categories == "get_organ":
            return _resolve(name, organs, "organ", "in this dataset", abbreviations=False), None
        if categories == "get_disease":
            diseases = _known(meta["disease"]).unique()
            return None, _resolve(name, diseases, "disease", "in this dataset", abbreviations=True)
        splits = [(name[:i], name[i + 1:]) for i, ch in enumerate(name) if ch == "-"]
        splits = [(o, d) for o, d in splits if _normalise_name(o) in {_normalise_name(v) for v in organs} and d.strip()]
        if len(splits) != 1:
            why = "no" if not splits else "more than one"
            raise ValueError(f"name {name!r} for get_organ_disease must be '<organ>-<disease>' with one organ of this "
                             f"dataset before the '-' ({why} split found); organs: {sorted(map(str, organs))}")
        organ_name, disease_name = splits[0]
        organ = _resolve(organ_name, organs, "organ", "in this dataset", abbreviations=False)
        in_organ = meta["tissue_general"].astype(str).isin(organ)
        diseases = _known(meta.loc[in_organ, "disease"]).unique()
        return organ, _resolve(disease_name, diseases, "disease", f"in organ {organ_name!r}", abbreviations=True)

    def _conditions(self, meta: pd.DataFrame) -> dict:
        """The :func:`load_cohort` query of the subset (with ``normal`` controls for ``status``), after
        checking that the label type has two classes there."""
        where = f"for {self.categories} {self.name!r}"
        conditions = {k: v for k, v in (("tissue_general", self.organ), ("disease", self.disease)) if v is not None}
        rows = condition_mask(meta, conditions) if conditions else np.ones(len(meta), dtype=bool)
        disease = meta["disease"].astype(str).str.lower()
        is_case = rows & ~is_unknown(meta["disease"]) & (disease != CONTROL_DISEASE).to_numpy()
        case_organs = sorted(set(meta.loc[is_case, "tissue_general"].astype(str)))
        controls = (disease == CONTROL_DISEASE).to_numpy() & meta["tissue_general"].astype(str).isin(case_organs).to_numpy()
        n_classes = {lt: _known(meta.loc[rows, col]).nunique() for lt, col in LABEL_TYPES.items() if lt != "status"}
        n_classes["status"] = 2 if is_case.any() and controls.any() else int(is_case.any() or controls.any())
        usable = [lt for lt, n in n_classes.items() if n >= 2]
        if n_classes[self.label_type] < 2:
            if self.label_type == "status":
                need = "no case (a disease other than 'normal')" if not is_case.any() else \
                    f"no '{CONTROL_DISEASE}' controls in organ(s) {case_organs}"
                raise ValueError(f"label_type 'status' needs cases and '{CONTROL_DISEASE}' controls {where}: {need}; "
                                 f"label types with two or more classes here: {usable}")
            values = sorted(_known(meta.loc[rows, self.label_column]).unique())
            raise ValueError(f"label_type {self.label_type!r} ({self.label_column}) has a single class {values} {where}; "
                             f"label types with two or more classes here: {usable}")
        if self.label_type != "status":
            return conditions
        cases = sorted(set(meta.loc[is_case, "disease"].astype(str)))
        normal = sorted(set(meta.loc[controls, "disease"].astype(str)))
        return {"tissue_general": self.organ or case_organs, "disease": cases + normal}

    # --- the original's container interface
    @property
    def x(self) -> np.ndarray:
        """``data``."""
        return self.data

    @property
    def y(self) -> np.ndarray:
        """``labels``."""
        return self.labels

    def as_tuple(self) -> tuple:
        """``(x, y, edge_index, internal_edge_index, ppi_edge_index, s_name, s_desc, s_bio)``, the
        values the original README unpacks."""
        return (self.data, self.labels, self.edge_index, self.internal_edge_index, self.ppi_edge_index,
                self.s_name, self.s_desc, self.s_bio)

    def __getitem__(self, idx):
        """``(data[idx], labels[idx], edge_index, internal_edge_index, ppi_edge_index, s_name, s_desc)``,
        as in the original (``s_bio`` is not part of a sample there either)."""
        return (self.data[idx], self.labels[idx], self.edge_index, self.internal_edge_index,
                self.ppi_edge_index, self.s_name, self.s_desc)

    def __len__(self) -> int:
        return len(self.data)
