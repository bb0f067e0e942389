"""Read one raw single-cell input named by a recipe into an AnnData with harmonised ``.obs``.

A recipe entry (``build/*.yaml``) says where the input is (h5ad, 10x folder or dense CSV — see
:mod:`dataset_script.build.readers`), which obs columns hold the donor, sample, condition, cell type,
tissue, disease, sex, age or development stage, how to rename values, constants for the whole file,
and overrides for the ontology mapping. Files that follow the CELLxGENE schema
(:data:`CELLXGENE_OBS`) are recognised: their ontology IDs are validated and used directly.

After :func:`read_dataset`, ``adata.obs`` has every column of
:data:`dataset_script.schema.OBS_COLUMNS`, ``adata.var["entrez_id"]`` holds the resolved gene (or
``""``), ``adata.uns["omnicelltosg"]`` records the value scale, the matrix read and the gene-mapping
report, and ``adata.uns["omnicelltosg_tables"]`` holds the reviewable tables (gene mapping, metadata
harmonisation, disease categories, development stages) that the build writes next to the data.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from dataset_script.build import harmonize
from dataset_script.build.annotate import annotate, train_model
from dataset_script.build.development_stages import parse_development_stage
from dataset_script.build.knowledge import (
    UNMAPPED_WARN_FRACTION,
    GeneTable,
    resolve_gene_ids,
)
from dataset_script.build.readers import read_matrix
from dataset_script.build.recipe import CellTypeAnnotation, DatasetEntry
from dataset_script.files import atomic_write_text
from dataset_script.schema import LOG_SCALE_MAX, OBS_COLUMNS

#: obs columns of the CELLxGENE schema (5.x) that mark a file as following it.
CELLXGENE_OBS = ("cell_type_ontology_term_id", "disease_ontology_term_id", "tissue_ontology_term_id",
                 "development_stage_ontology_term_id", "sex_ontology_term_id", "donor_id",
                 "assay_ontology_term_id")
CELLXGENE_SEX = {"PATO:0000383": "female", "PATO:0000384": "male", "unknown": "unknown"}


def _nonzero_sample(X, n_sample: int, seed: int) -> np.ndarray:
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    data = data[data != 0]
    if data.size > n_sample:
        data = np.random.default_rng(seed).choice(data, size=n_sample, replace=False)
    return np.asarray(data, dtype=np.float64)


def values_are_counts(X, n_sample: int = 10_000, seed: int = 0) -> bool:
    """True if a random sample of the non-zero values of ``X`` are all non-negative integers."""
    sample = _nonzero_sample(X, n_sample, seed)
    return bool(sample.size == 0 or (np.all(sample >= 0) and np.allclose(sample, np.round(sample))))


def detect_value_transform(X, n_sample: int = 10_000, seed: int = 0) -> str:
    """Say what the values of an expression matrix are: one of :data:`~dataset_script.schema.VALUE_TRANSFORMS`.

    ``counts`` when a random sample of ``n_sample`` non-zero values are non-negative integers;
    otherwise ``log`` when the matrix maximum is at most :data:`~dataset_script.schema.LOG_SCALE_MAX`
    (log1p of CP10k, log2(TPM+1) …), else ``linear`` (TPM / CPM / FPKM).

    Raises
    ------
    ValueError
        If ``X`` holds negative values: scaled or centred data (e.g. after ``sc.pp.scale``) cannot be
        turned back into expression; point the recipe at the unscaled values (``use_raw: true`` or
        ``layer: <name>``).
    """
    data = X.data if sp.issparse(X) else np.asarray(X)
    if data.size and float(data.min()) < 0:
        raise ValueError(f"Expression matrix holds negative values (min {float(data.min()):.3g}): it looks scaled "
                         "or centred (e.g. sc.pp.scale), which cannot be used as expression. Point the recipe at "
                         "unscaled values with 'use_raw: true' or 'layer: <name>'.")
    if values_are_counts(X, n_sample, seed):
        return "counts"
    return "log" if (float(data.max()) if data.size else 0.0) <= LOG_SCALE_MAX else "linear"


def is_cellxgene(obs: pd.DataFrame) -> bool:
    """True when ``obs`` carries every column of :data:`CELLXGENE_OBS`."""
    return all(c in obs.columns for c in CELLXGENE_OBS)


def _overrides(entry: DatasetEntry, data_dir: Path) -> dict[str, dict[str, str]]:
    """Per-field overrides: the recipe's ``cell_type_map`` / ``disease_map`` / ``tissue_map`` /
    ``development_stage_map``, then the rows of its ``overrides_file`` (TSV ``field, original, mapped``), which win."""
    out = {"cell_type": dict(entry.cell_type_map), "disease": dict(entry.disease_map),
           "tissue": dict(entry.tissue_map), "development_stage": dict(entry.development_stage_map)}
    if entry.overrides_file:
        path = Path(data_dir) / entry.overrides_file
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        missing = {"field", "original", "mapped"} - set(table.columns)
        if missing:
            raise ValueError(f"Override table {path} lacks columns {sorted(missing)}; needs field, original, mapped")
        bad = sorted(set(table["field"]) - set(out))
        if bad:
            raise ValueError(f"Override table {path} has fields {bad}; accepted: {sorted(out)}")
        for f, o, m in table[["field", "original", "mapped"]].itertuples(index=False):
            out[f][o] = m
    return out


def read_dataset(entry: DatasetEntry | dict, data_dir: Path, genes: GeneTable, *,
                 cache_dir: Path | None = None) -> ad.AnnData:
    """Read the input of one recipe entry and harmonise its metadata.

    Parameters
    ----------
    entry
        One item of a recipe's ``datasets`` list: a :class:`~dataset_script.build.recipe.DatasetEntry`
        or its dict (validated here), which documents every key: ``dataset_id``, ``path`` (relative
        to ``data_dir``), the format and matrix to read, how obs columns and values map onto the
        schema, constants, ontology overrides and ``cell_type_annotation`` (CellTypist, for input
        without cell types).
    data_dir
        The shared data folder.
    genes
        The gene table used to resolve gene identifiers to Entrez IDs.
    cache_dir
        Where a CellTypist model trained for ``cell_type_annotation.train_from`` is cached
        (default ``./.cache``; the build passes its own cache folder).

    Returns
    -------
    AnnData, ``n_obs`` × ``n_vars`` (rows are cells), ``.X`` CSR float32 as in the file;
    ``uns["omnicelltosg"]["value_transform"]`` is :func:`detect_value_transform`'s answer, and
    ``uns["omnicelltosg"]["cell_type_model"]`` the CellTypist model file when cell types were annotated.

    Raises
    ------
    FileNotFoundError
        If the input does not exist.
    ValueError
        If the entry is not valid (:meth:`DatasetEntry.of`), a mapped obs column is missing (the message lists the file's columns), a ``values``
        mapping names a value absent from the data (the message lists the values present), an
        override names no ontology term, a CELLxGENE-schema file holds IDs absent from their
        ontology, the chosen matrix is scaled (negative values), or ``layer`` names no layer.
    """
    entry = DatasetEntry.of(entry)
    data_dir = Path(data_dir)
    path = data_dir / entry.path
    if not path.exists() and not entry.reads_census:
        raise FileNotFoundError(f"Input file for dataset {entry.dataset_id!r} not found: {path}")
    adata = read_matrix(entry.path if entry.reads_census else path, genes, fmt=entry.format,
                        orientation=entry.orientation, soma=entry.soma_query())
    if entry.obs_table:
        meta = pd.read_csv(data_dir / entry.obs_table, sep=None, engine="python", index_col=0)
        meta.index = meta.index.astype(str)
        absent = adata.obs_names.difference(meta.index)
        if len(absent):
            raise ValueError(f"obs_table {entry.obs_table} lacks {len(absent)} of the {adata.n_obs} cells "
                             f"(e.g. {list(absent[:3])}); its first column must be the cell barcode")
        adata.obs = meta.loc[adata.obs_names]
    cellxgene = entry.metadata_schema == "cellxgene" or (entry.metadata_schema == "auto" and is_cellxgene(adata.obs))
    if cellxgene and not entry.use_raw and not entry.layer and adata.raw is not None:
        entry = entry.model_copy(update={"use_raw": True})  # CELLxGENE keeps raw counts in .raw when .X is normalised
    X, var_names, matrix = _expression_matrix(adata, entry)
    _check_matrix(X, var_names, entry.dataset_id)
    adata, X, n_empty = _drop_empty_cells(adata, X, entry.dataset_id)
    transform = detect_value_transform(X)
    overrides = _overrides(entry, data_dir)
    tables: dict[str, pd.DataFrame] = {}
    annotation: dict[str, str] = {}
    if cellxgene:
        out = _cellxgene_obs(adata.obs, entry, data_dir, tables)
    else:
        out = _mapped_obs(adata.obs, entry, path)
        if "cell_type" not in out and entry.cell_type_annotation:
            model = _annotate_cell_types(out, X, var_names, transform, entry, data_dir, genes, cache_dir, tables)
            annotation = {"cell_type_model": str(model)}
        _harmonise(out, entry, data_dir, overrides, tables)
    entrez, report, gene_table = resolve_gene_ids(list(var_names), entry.gene_id_type, genes, return_table=True)
    if report["unmapped_fraction"] > UNMAPPED_WARN_FRACTION:
        warnings.warn(f"{entry.dataset_id!r}: {report['unmapped_fraction']:.0%} of {report['n_input']} input genes "
                      f"did not resolve ({report['ambiguous']} ambiguous, {report['unmapped']} unmapped; id type "
                      f"{report['id_type']}). See its gene-mapping report.", stacklevel=2)
    tables["gene_mapping"] = gene_table
    var = pd.DataFrame({"entrez_id": [e or "" for e in entrez]}, index=pd.Index(var_names).astype(str))
    result = ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=out[list(OBS_COLUMNS)], var=var)
    result.uns["omnicelltosg"] = {
        "dataset_id": entry.dataset_id, "values_are_counts": transform == "counts",
        "value_transform": transform, "matrix": matrix, "gene_mapping": report,
        "schema": "cellxgene" if cellxgene else "free_text", "input": adata.uns.get("omnicelltosg_input", {}),
        "dropped_empty_cells": n_empty, **annotation,
    }
    result.uns["omnicelltosg_tables"] = tables
    return result


def _check_matrix(X, var_names, dataset_id: str) -> None:
    """Refuse an empty matrix, a malformed sparse matrix (indices out of range, e.g. a corrupt file,
    which would crash the build natively), NaN or infinite values, and repeated gene names (which
    gene would a value belong to?). Each error names the dataset and the counts."""
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{dataset_id!r}: the expression matrix is empty ({X.shape[0]} cells × {X.shape[1]} genes)")
    try:
        X.check_format(full_check=True)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{dataset_id!r}: the expression matrix is malformed ({err}); the file is corrupt or was "
                         "written inconsistently") from None
    nan, inf = int(np.isnan(X.data).sum()), int(np.isinf(X.data).sum())
    if nan or inf:
        rows = np.unique(np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))[~np.isfinite(X.data)]) \
            if X.format == "csr" else []
        raise ValueError(f"{dataset_id!r}: the expression matrix holds {nan} NaN and {inf} infinite value(s)"
                         f"{f' in {len(rows)} cell(s)' if len(rows) else ''}; expression must be finite. Fix or "
                         "drop those cells (or point the recipe at another matrix with use_raw / layer)")
    names = pd.Index(var_names).astype(str)
    if names.has_duplicates:
        dup = names[names.duplicated()].unique()
        raise ValueError(f"{dataset_id!r}: {len(dup)} gene name(s) appear more than once, e.g. {list(dup[:5])}; "
                         "make them unique (e.g. AnnData.var_names_make_unique) or aggregate them first")


def _drop_empty_cells(adata: ad.AnnData, X: sp.csr_matrix, dataset_id: str) -> tuple[ad.AnnData, sp.csr_matrix, int]:
    """Cells whose expression is all zero carry no signal (a meta-cell of them would have library size
    0): they are dropped with a warning, and their count returned (recorded as ``dropped_empty_cells``).

    Raises
    ------
    ValueError
        If every cell is all zero.
    """
    X = sp.csr_matrix(X)
    nonzero = np.asarray((X != 0).sum(1)).ravel() > 0
    if nonzero.all():
        return adata, X, 0
    if not nonzero.any():
        raise ValueError(f"{dataset_id!r}: every one of the {X.shape[0]} cells has all-zero expression")
    n = int((~nonzero).sum())
    warnings.warn(f"{dataset_id!r}: {n} of {X.shape[0]} cells have all-zero expression and are dropped "
                  "(recorded as dropped_empty_cells)", stacklevel=3)
    return adata[nonzero], X[nonzero], n


def _mapped_obs(obs: pd.DataFrame, entry: DatasetEntry, path: Path) -> pd.DataFrame:
    """The recipe's ``columns`` / ``values`` / ``constants`` applied to a file's obs."""
    missing = [src for src in entry.columns.values() if src not in obs.columns]
    if missing:
        raise ValueError(f"{path.name} lacks obs column(s) {missing} named by the recipe for "
                         f"{entry.dataset_id!r}; available columns: {list(obs.columns)}")
    out = pd.DataFrame(index=obs.index.astype(str))
    for col, src in entry.columns.items():
        out[col] = obs[src].astype(str).to_numpy()
    for col, mapping in entry.values.items():
        present = set(out[col])
        absent = sorted(set(mapping) - present)
        if absent:
            raise ValueError(f"Recipe value map for {col!r} of {entry.dataset_id!r} names values not "
                             f"in the data: {absent}; values present: {sorted(present)}")
        unmapped = sorted(present - set(mapping))
        if unmapped:
            raise ValueError(f"Values {unmapped} of {col!r} in {entry.dataset_id!r} have no entry in the "
                             f"recipe's value map (mapped: {sorted(mapping)})")
        out[col] = out[col].map(mapping)
    for col, value in entry.constants.items():
        out[col] = value
    return out


def _expression_matrix(adata: ad.AnnData, entry: DatasetEntry) -> tuple[sp.csr_matrix, pd.Index, str]:
    """The matrix a recipe entry points at (``X``, ``raw`` or a layer), its gene names and its name."""
    if entry.use_raw:
        if adata.raw is None:
            raise ValueError(f"{entry.dataset_id!r}: 'use_raw: true' but the file has no .raw")
        X, names, matrix = adata.raw.X, adata.raw.var_names, "raw"
    elif entry.layer:
        if entry.layer not in adata.layers:
            raise ValueError(f"{entry.dataset_id!r}: layer {entry.layer!r} not in the file; "
                             f"layers: {list(adata.layers)}")
        X, names, matrix = adata.layers[entry.layer], adata.var_names, f"layers[{entry.layer!r}]"
    else:
        X, names, matrix = adata.X, adata.var_names, "X"
    return (X if sp.issparse(X) else sp.csr_matrix(X)), names, matrix


def model_for_entry(spec: CellTypeAnnotation, data_dir: Path, genes: GeneTable, cache_dir: Path,
                    query_genes: list[str]) -> tuple[Path, str]:
    """The CellTypist model file a recipe's ``cell_type_annotation`` names, training it on the labelled
    dataset ``train_from`` (ingested with :func:`read_dataset`) restricted to the genes the query
    measures when it gives that; a trained model is cached under ``cache_dir`` by the training entry
    and the gene set, with its training summary next to it (``.json``). Returns ``(path, source
    description)``.

    Raises
    ------
    ValueError
        If the labelled dataset shares no gene with the query.
    """
    if spec.model:
        path = Path(spec.model)
        path = path if path.is_absolute() else Path(data_dir) / path
        return path, f"celltypist:{path.name}"
    entry = spec.train_from
    query = sorted(set(map(str, query_genes)))
    key = hashlib.sha256((json.dumps(entry.model_dump(mode="json"), sort_keys=True) + "\x1f".join(query))
                         .encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"celltypist-{entry.dataset_id}-{key}.pkl"
    if not path.exists():
        labelled = read_dataset(entry, data_dir, genes)
        shared = labelled.var_names.intersection(pd.Index(query))
        if len(shared) == 0:
            raise ValueError(f"The labelled dataset {entry.dataset_id!r} shares no gene with the query")
        info = train_model(labelled[:, shared].copy(), labelled.obs["cell_type"].to_numpy(), path,
                           value_transform=labelled.uns["omnicelltosg"]["value_transform"],
                           details=f"trained by OmniCellTOSG on {entry.dataset_id} ({entry.path})")
        atomic_write_text(path.with_suffix(".json"), json.dumps(info, indent=1))
    return path, f"celltypist:trained on {entry.dataset_id}"


def _annotate_cell_types(obs: pd.DataFrame, X, var_names, transform: str, entry: DatasetEntry, data_dir: Path,
                         genes: GeneTable, cache_dir: Path | None, tables: dict) -> Path:
    """CellTypist calls for an input without a cell-type column (``cell_type_annotation``); returns
    the model file used."""
    spec = entry.cell_type_annotation
    model, source = model_for_entry(spec, data_dir, genes, Path(cache_dir or ".cache"), list(map(str, var_names)))
    cells = ad.AnnData(X=X, obs=pd.DataFrame(index=obs.index), var=pd.DataFrame(index=pd.Index(var_names).astype(str)))
    calls = annotate(cells, model, value_transform=transform, min_confidence=spec.min_confidence)
    obs["cell_type"] = calls["cell_type"].to_numpy()
    obs["cell_type_source"] = source
    obs["cell_type_confidence"] = calls["cell_type_confidence"].to_numpy()
    tables["cell_type_annotation"] = calls.rename_axis("cell").reset_index()
    return model


def _identifiers(obs: pd.DataFrame, entry: DatasetEntry) -> None:
    obs["dataset_id"] = entry.dataset_id
    obs["source"] = entry.source
    obs["donor_id"] = entry.dataset_id + ":" + obs.get("donor_id", pd.Series("unknown", index=obs.index)).astype(str)
    if "condition" not in obs:
        obs["condition"] = "control"
    if "sample_id" not in obs:
        obs["sample_id"] = obs["donor_id"] + ":" + obs["condition"].astype(str)
    else:
        obs["sample_id"] = entry.dataset_id + ":" + obs["sample_id"].astype(str)


def _apply_stages(obs: pd.DataFrame, values: pd.Series, hsapdv: dict[str, str], tables: dict,
                  overrides: dict[str, str] | None = None) -> None:
    """age_years / development_stage_category / birth_phase from free text, numbers or HsapDv IDs;
    an override (original → replacement text, e.g. "P3" → "3 days") is parsed instead of the original."""
    overrides = overrides or {}
    parsed = {}
    for v in pd.unique(values):
        if v in overrides:
            p = parse_development_stage(overrides[v], hsapdv)
            parsed[v] = type(p)(p.age_years, p.category, p.birth_phase, f"override ({overrides[v]!r}): {p.rule}")
        else:
            parsed[v] = parse_development_stage(v, hsapdv)
    obs["age_years"] = values.map(lambda v: parsed[v].age_years).astype(float).to_numpy()
    obs["development_stage_category"] = values.map(lambda v: parsed[v].category).to_numpy()
    obs["birth_phase"] = values.map(lambda v: parsed[v].birth_phase).to_numpy()
    tables["development_stage"] = pd.DataFrame(
        [{"original": str(v), "age_years": p.age_years, "development_stage_category": p.category,
          "birth_phase": p.birth_phase, "rule": p.rule,
          "needs_review": p.rule.endswith("unparsed") or p.rule == "unknown HsapDv ID"}
         for v, p in parsed.items()])


def _harmonise(obs: pd.DataFrame, entry: DatasetEntry, data_dir: Path, overrides: dict, tables: dict) -> None:
    """Fill identifiers, ontology IDs, sex and age of a free-text ``obs`` in place; add the
    reviewable mapping tables to ``tables``."""
    _identifiers(obs, entry)
    matches: list[harmonize.TermMatch] = []
    tissue_values = obs["tissue"].astype(str) if "tissue" in obs else pd.Series("", index=obs.index)
    tissue = {}
    for value in pd.unique(tissue_values):
        tissue[value], m = harmonize.resolve_tissue(data_dir, value, overrides=overrides["tissue"])
        matches.append(m)
    for k in ("tissue", "tissue_ontology_id", "tissue_general"):
        obs[k] = tissue_values.map(lambda v, k=k: tissue[v][k]).to_numpy()
    disease_values = obs["disease"].astype(str) if "disease" in obs else pd.Series("normal", index=obs.index)
    dmatch, categories = harmonize.resolve_diseases(
        data_dir, list(pd.unique(disease_values)), overrides=overrides["disease"],
        categories=entry.disease_categories or harmonize.DISEASE_CATEGORIES)
    matches += list(dmatch.values())
    obs["disease_ontology_id"] = disease_values.map(lambda v: dmatch[v].ontology_id).to_numpy()
    obs["disease"] = disease_values.map(lambda v: dmatch[v].label).to_numpy()
    obs["disease_category"] = disease_values.map(dict(zip(categories["original"], categories["disease_category"]))).to_numpy()
    if "cell_type" not in obs:
        raise ValueError(f"{entry.dataset_id!r} has no cell_type column mapped; map one, or annotate the "
                         "cells with CellTypist via 'cell_type_annotation: {model: FILE.pkl}' or "
                         "'{train_from: <labelled dataset entry>}', or declare one cell type for a sorted or "
                         "cultured population with 'constants: {cell_type: <Cell Ontology label or ID>}'")
    obs["cell_type_original"] = obs["cell_type"].astype(str)
    if "cell_type_source" not in obs:
        obs["cell_type_source"] = "recipe constant" if "cell_type" in entry.constants else "author"
        obs["cell_type_confidence"] = np.nan
    cl = harmonize.resolve_cell_types(data_dir, overrides["cell_type"], sorted(set(obs["cell_type_original"])))
    matches += list(cl.values())
    rejected = sorted(k for k, m in cl.items() if not m.ontology_id)
    if rejected and "cell_type" in entry.constants:
        raise ValueError(f"{entry.dataset_id!r}: the constant cell_type {rejected[0]!r} matches no Cell Ontology "
                         f"term well enough (fuzzy score < {harmonize.FUZZY_ACCEPT}); give a Cell Ontology label, "
                         "synonym or ID (e.g. 'CL:0000236'), or map it with cell_type_map")
    if rejected:
        warnings.warn(f"{entry.dataset_id!r}: cell-type labels {rejected} match no Cell Ontology term well enough "
                      f"(fuzzy score < {harmonize.FUZZY_ACCEPT}); they become 'unknown'. Add them to cell_type_map.",
                      stacklevel=3)
    obs["cell_type_ontology_id"] = obs["cell_type_original"].map({k: m.ontology_id or "unknown" for k, m in cl.items()})
    obs["cell_type"] = obs["cell_type_original"].map({k: m.label for k, m in cl.items()})
    obs["sex"] = [harmonize.normalize_sex(s) for s in obs.get("sex", pd.Series("unknown", index=obs.index))]
    hsapdv = harmonize.ontology(data_dir, "HsapDv").labels
    if "development_stage" in obs and "age" in obs:
        raise ValueError(f"{entry.dataset_id!r} maps both 'age' and 'development_stage'; map one")
    stage_values = obs["development_stage"] if "development_stage" in obs else obs.get(
        "age", pd.Series("unknown", index=obs.index))
    _apply_stages(obs, stage_values.astype(str), hsapdv, tables, overrides["development_stage"])
    for col in ("assay", "suspension_type"):
        if col not in obs:
            obs[col] = "unknown"
    tables["harmonisation"] = harmonize.mapping_table(matches)
    tables["disease_categories"] = categories


def _validated(values: pd.Series, known: dict[str, str], column: str, extra: dict[str, str] | None = None) -> pd.Series:
    """Map CELLxGENE ontology IDs to labels, raising for IDs absent from the ontology."""
    lookup = {**known, **(extra or {})}
    bad = sorted(set(values.astype(str)) - set(lookup))
    if bad:
        raise ValueError(f"CELLxGENE column {column!r} holds IDs absent from its ontology: {bad[:5]}"
                         f"{' …' if len(bad) > 5 else ''} ({len(bad)} in all)")
    return values.astype(str).map(lookup)


def _cellxgene_obs(obs: pd.DataFrame, entry: DatasetEntry, data_dir: Path, tables: dict) -> pd.DataFrame:
    """obs of a CELLxGENE-schema file: IDs validated against the ontologies and used as they are."""
    onto = {p: harmonize.ontology(data_dir, p) for p in ("CL", "MONDO", "UBERON", "HsapDv", "EFO")}
    out = pd.DataFrame(index=obs.index.astype(str))
    out["donor_id"] = obs["donor_id"].astype(str).to_numpy()
    for col, src in entry.columns.items():  # e.g. condition / sample_id columns
        out[col] = obs[src].astype(str).to_numpy()
    out["cell_type_ontology_id"] = obs["cell_type_ontology_term_id"].astype(str).to_numpy()
    out["cell_type"] = _validated(out["cell_type_ontology_id"], onto["CL"].labels, "cell_type_ontology_term_id",
                                  {"unknown": "unknown"}).to_numpy()
    out["cell_type_original"] = (obs["cell_type"].astype(str).to_numpy() if "cell_type" in obs else out["cell_type"])
    out["cell_type_source"] = "cellxgene"
    out["cell_type_confidence"] = np.nan
    disease_ids = obs["disease_ontology_term_id"].astype(str)
    _validated(disease_ids, onto["MONDO"].labels, "disease_ontology_term_id", {harmonize.NORMAL_ID: "normal"})
    dmatch, categories = harmonize.resolve_diseases(
        data_dir, list(pd.unique(disease_ids)), categories=entry.disease_categories or harmonize.DISEASE_CATEGORIES)
    out["disease_ontology_id"] = disease_ids.to_numpy()
    out["disease"] = disease_ids.map(lambda v: dmatch[v].label).to_numpy()
    out["disease_category"] = disease_ids.map(dict(zip(categories["original"], categories["disease_category"]))).to_numpy()
    if "condition" not in out:
        out["condition"] = np.where(out["disease_ontology_id"] == harmonize.NORMAL_ID, "control", out["disease"])
    tissue_ids = obs["tissue_ontology_term_id"].astype(str)
    out["tissue_ontology_id"] = tissue_ids.to_numpy()
    out["tissue"] = _validated(tissue_ids, onto["UBERON"].labels, "tissue_ontology_term_id").to_numpy()
    general = {t: harmonize.tissue_general(data_dir, t) for t in pd.unique(tissue_ids)}
    out["tissue_general"] = tissue_ids.map(general).to_numpy()
    out["sex"] = _validated(obs["sex_ontology_term_id"], CELLXGENE_SEX, "sex_ontology_term_id").to_numpy()
    stage_ids = obs["development_stage_ontology_term_id"].astype(str)
    _validated(stage_ids, onto["HsapDv"].labels, "development_stage_ontology_term_id", {"unknown": "unknown"})
    _apply_stages(out, stage_ids, onto["HsapDv"].labels, tables)
    out["assay"] = _validated(obs["assay_ontology_term_id"], onto["EFO"].labels, "assay_ontology_term_id").to_numpy()
    out["suspension_type"] = obs["suspension_type"].astype(str).to_numpy() if "suspension_type" in obs else "unknown"
    _identifiers(out, entry)
    tables["disease_categories"] = categories
    tables["harmonisation"] = harmonize.mapping_table(
        [harmonize.TermMatch("cell_type", t, t, onto["CL"].labels.get(t, "unknown"), "CELLxGENE ID", 100.0, False)
         for t in pd.unique(out["cell_type_ontology_id"])] + list(dmatch.values()))
    return out
