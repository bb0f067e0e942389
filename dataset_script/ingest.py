"""Read one raw single-cell file named by a recipe into an AnnData with harmonised ``.obs``.

A recipe entry (``build/*.yaml``) says where the file is, which obs columns hold the donor, sample,
condition, cell type, sex and age, how to rename values, and constants for the whole file. After
:func:`read_dataset`, ``adata.obs`` has every column of :data:`dataset_script.schema.OBS_COLUMNS`,
``adata.var["entrez_id"]`` holds the resolved gene (or ``""``), and ``adata.uns["omnicelltosg"]``
records whether values are raw counts and the gene-mapping report.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import harmonize
from .knowledge import GeneTable, resolve_gene_ids
from .schema import CONSTANT_COLUMNS, MAPPABLE_COLUMNS, OBS_COLUMNS

REQUIRED_ENTRY_KEYS = ("dataset_id", "path", "gene_id_type", "columns", "constants")


def values_are_counts(X, n_sample: int = 10_000, seed: int = 0) -> bool:
    """True if a random sample of the non-zero values of ``X`` are all non-negative integers."""
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    data = data[data != 0]
    if data.size == 0:
        return True
    sample = np.random.default_rng(seed).choice(data, size=min(n_sample, data.size), replace=False)
    return bool(np.all(sample >= 0) and np.allclose(sample, np.round(sample)))


def _check_entry(entry: dict) -> None:
    missing = [k for k in REQUIRED_ENTRY_KEYS if k not in entry]
    if missing:
        raise ValueError(f"Recipe entry {entry.get('dataset_id', '?')!r} lacks keys {missing}; "
                         f"required: {list(REQUIRED_ENTRY_KEYS)}")
    bad = sorted(set(entry["columns"]) - set(MAPPABLE_COLUMNS))
    if bad:
        raise ValueError(f"Recipe entry {entry['dataset_id']!r} maps unknown schema columns {bad}; "
                         f"mappable: {list(MAPPABLE_COLUMNS)}")
    bad = sorted(set(entry["constants"]) - set(CONSTANT_COLUMNS))
    if bad:
        raise ValueError(f"Recipe entry {entry['dataset_id']!r} sets unknown constants {bad}; "
                         f"allowed: {list(CONSTANT_COLUMNS)}")


def read_dataset(entry: dict, data_dir: Path, genes: GeneTable) -> ad.AnnData:
    """Read the file of one recipe entry and harmonise its metadata.

    Parameters
    ----------
    entry
        One item of a recipe's ``datasets`` list (keys: ``dataset_id``, ``path`` relative to
        ``data_dir``, ``gene_id_type`` (``symbol`` | ``ensembl``), ``columns``, ``values``,
        ``constants``, ``cell_type_map``, ``source``).
    data_dir
        The shared data folder.
    genes
        The gene table used to resolve gene identifiers to Entrez IDs.

    Returns
    -------
    AnnData, ``n_obs`` × ``n_vars`` (rows are cells), ``.X`` CSR float32 as in the file.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If a mapped obs column is missing (the message lists the file's columns), a ``values``
        mapping names a value absent from the data (the message lists the values present), or a
        label cannot be resolved in its ontology.
    """
    _check_entry(entry)
    path = Path(data_dir) / entry["path"]
    if not path.exists():
        raise FileNotFoundError(f"Input file for dataset {entry['dataset_id']!r} not found: {path}")
    adata = ad.read_h5ad(path)
    obs = adata.obs
    missing = [src for src in entry["columns"].values() if src not in obs.columns]
    if missing:
        raise ValueError(f"{path.name} lacks obs column(s) {missing} named by the recipe for "
                         f"{entry['dataset_id']!r}; available columns: {list(obs.columns)}")

    out = pd.DataFrame(index=obs.index.astype(str))
    for col, src in entry["columns"].items():
        out[col] = obs[src].astype(str).to_numpy()
    for col, mapping in (entry.get("values") or {}).items():
        if col not in out:
            raise ValueError(f"Recipe renames values of {col!r}, which is not mapped from an obs column "
                             f"(mapped: {sorted(out.columns)})")
        present = set(out[col])
        absent = sorted(set(map(str, mapping)) - present)
        if absent:
            raise ValueError(f"Recipe value map for {col!r} of {entry['dataset_id']!r} names values not "
                             f"in the data: {absent}; values present: {sorted(present)}")
        unmapped = sorted(present - set(map(str, mapping)))
        if unmapped:
            raise ValueError(f"Values {unmapped} of {col!r} in {entry['dataset_id']!r} have no entry in the "
                             f"recipe's value map (mapped: {sorted(map(str, mapping))})")
        out[col] = out[col].map({str(k): str(v) for k, v in mapping.items()})
    for col, value in entry["constants"].items():
        if col in entry["columns"]:
            raise ValueError(f"{col!r} is both mapped from obs and set as a constant in {entry['dataset_id']!r}")
        out[col] = value

    _harmonise(out, entry, Path(data_dir))
    X = adata.X if sp.issparse(adata.X) else sp.csr_matrix(adata.X)
    counts = values_are_counts(X)
    entrez, report = resolve_gene_ids(list(adata.var_names), entry["gene_id_type"], genes)
    var = pd.DataFrame({"entrez_id": [e or "" for e in entrez]}, index=adata.var_names.astype(str))
    result = ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=out[list(OBS_COLUMNS)], var=var)
    result.uns["omnicelltosg"] = {
        "dataset_id": entry["dataset_id"], "values_are_counts": counts,
        "value_transform": "none" if counts else "log-scale input (not counts)",
        "gene_mapping": report,
    }
    return result


def _harmonise(obs: pd.DataFrame, entry: dict, data_dir: Path) -> None:
    """Fill ontology IDs, sex, age and identifiers of ``obs`` in place."""
    obs["dataset_id"] = entry["dataset_id"]
    obs["source"] = entry.get("source", "")
    obs["donor_id"] = entry["dataset_id"] + ":" + obs.get("donor_id", pd.Series("unknown", index=obs.index)).astype(str)
    if "sample_id" not in obs:
        obs["sample_id"] = obs["donor_id"] + ":" + obs.get("condition", "control")
    else:
        obs["sample_id"] = entry["dataset_id"] + ":" + obs["sample_id"].astype(str)
    if "condition" not in obs:
        obs["condition"] = "control"
    for k, v in harmonize.resolve_tissue(data_dir, entry["constants"].get("tissue", "")).items():
        obs[k] = v
    for k, v in harmonize.resolve_disease(data_dir, entry["constants"].get("disease", "normal")).items():
        obs[k] = v
    if "cell_type" not in obs:
        raise ValueError(f"{entry['dataset_id']!r} has no cell_type column mapped; this build needs one "
                         "(automatic annotation is a separate step)")
    obs["cell_type_original"] = obs["cell_type"].astype(str)
    cl = harmonize.resolve_cell_types(data_dir, entry.get("cell_type_map") or {},
                                      sorted(set(obs["cell_type_original"])))
    obs["cell_type_ontology_id"] = obs["cell_type_original"].map({k: v[0] for k, v in cl.items()})
    obs["cell_type"] = obs["cell_type_original"].map({k: v[1] for k, v in cl.items()})
    obs["sex"] = [harmonize.normalize_sex(s) for s in obs.get("sex", pd.Series("unknown", index=obs.index))]
    age = pd.to_numeric(obs.get("age", pd.Series(np.nan, index=obs.index)), errors="coerce").astype(float)
    obs["age_years"] = age
    stages = [harmonize.development_stage(a) for a in age]
    obs["development_stage_category"] = [s[0] for s in stages]
    obs["birth_phase"] = [s[1] for s in stages]
    for col in ("assay", "suspension_type"):
        obs[col] = entry["constants"].get(col, "unknown")
