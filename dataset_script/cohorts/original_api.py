"""``CellTOSGDataLoader``: the original OmniCellTOSG loader's interface over :func:`load_cohort`.

Scripts written for the original release port by changing one import::

    # from CellTOSG_Loader import CellTOSGDataLoader
    from dataset_script.cohorts.original_api import CellTOSGDataLoader

The argument names and the attributes are the original's; the work underneath is this project's
(donor-level splits with a validation split, symmetric stage matching, leak-free ComBat-seq). Two
documented differences: ``data`` / ``labels`` / ``metadata`` gain a ``"validation"`` entry, and
``x_bio_emb`` is ``None`` until protein-sequence embeddings are part of the dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from dataset_script.cohorts.loader import _build_info, _load, load_cohort
from dataset_script.files import atomic_directory, check_output_folder

logger = logging.getLogger(__name__)

#: Column names of the original release → this dataset's (CELLxGENE-style) names.
FIELD_ALIAS = {"CMT_name": "cell_type", "CMT_id": "cell_type_ontology_id", "disease_BMG_name": "disease",
               "sex_normalized": "sex", "gender": "sex"}


def _alias(name: str | None) -> str | None:
    return FIELD_ALIAS.get(name, name) if name is not None else None


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
        info = _build_info(root)
        n_nodes = int(info["n_transcripts"]) + int(info["n_proteins"])
        x, _, y = c.tensors()
        x, y = x.numpy(), y.numpy()
        meta = c.cells.select_columns([k for k in c.cells.column_names if not k.startswith("expression_")]).to_pandas()
        rng = np.random.default_rng(random_state)
        self.data, self.metadata, labels = {}, {}, {}
        for name, idx in c.splits.items():
            idx = rng.permutation(idx) if shuffle else idx
            full = np.zeros((len(idx), n_nodes), dtype=np.float32)
            full[:, : x.shape[1]] = x[idx]
            self.data[name] = full
            self.metadata[name] = meta.iloc[idx].reset_index(drop=True).assign(split=name, sample_index=np.arange(len(idx)))
            labels[name] = y[idx]
        if extract_mode == "inference":
            self.data, self.metadata = self.data["all"], self.metadata["all"]
            self.labels = self.metadata
        else:
            self.labels = labels if c.label_names else self.metadata

        g = c.graph()
        self.internal_edge_index = g.internal_edge_index.numpy()
        self.ppi_edge_index = g.ppi_edge_index.numpy()
        self.edge_index = np.concatenate([self.internal_edge_index, self.ppi_edge_index], axis=1)
        entities = c.entities()
        if train_text:
            self.s_name = entities[["entity_index", "name"]].copy()
            self.s_desc = entities[["entity_index", "description"]].copy()
        else:
            self.x_name_emb = g.name_embeddings.numpy()
            self.x_desc_emb = g.description_embeddings.numpy()
        if train_bio:
            self.s_bio = entities[["entity_index", "sequence"]].copy()
        else:
            emb = _load(root, "embeddings")
            self.x_bio_emb = (np.asarray(emb.sort("entity_index")["sequence_embedding"], dtype=np.float32)
                              if "sequence_embedding" in emb.column_names else None)
            if self.x_bio_emb is None:
                logger.warning("This dataset has no protein-sequence embeddings; x_bio_emb is None "
                               "(use train_bio=True for the raw sequences)")
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
