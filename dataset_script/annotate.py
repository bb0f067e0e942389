"""Automatic cell-type annotation of unlabelled input with CellTypist (Domínguez Conde et al. 2022,
Science; PyPI ``celltypist``).

Models never come from the internet at run time: either a user-supplied CellTypist model file
(``.pkl``) or one trained here on a labelled real dataset (:func:`train_model`). Input and training
expression are normalised the way CellTypist expects (counts per 10,000, log1p); inputs that are
already log-scale are used as they are.

Recipe entry (``cell_type_annotation``), used when the entry maps no ``cell_type`` column::

    cell_type_annotation:
      model: models/my_celltypist.pkl            # a file, relative to the data folder, or …
      train_from: {dataset entry of a labelled file}   # … trained here, labels harmonised to CL first
      min_confidence: 0.5                        # below it a call is flagged low-confidence
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

#: Calls whose CellTypist probability is below this are flagged ``cell_type_low_confidence``.
MIN_CONFIDENCE = 0.5


def _log_normalised(adata: ad.AnnData, value_transform: str) -> ad.AnnData:
    import scanpy as sc

    work = ad.AnnData(X=sp.csr_matrix(adata.X, dtype=np.float32), obs=pd.DataFrame(index=adata.obs_names),
                      var=pd.DataFrame(index=adata.var_names))
    if value_transform != "log":
        sc.pp.normalize_total(work, target_sum=1e4)
        sc.pp.log1p(work)
    return work


#: L2 strengths tried for CellTypist's SGD logistic regression; the best on a held-out 20% of the
#: labelled cells is kept. CellTypist's default (1e-4) over-fits small references: on Kang 2018 it
#: left most query cells with probabilities near 0 for every class.
ALPHA_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _fit(work: ad.AnnData, labels: np.ndarray, alpha: float, seed: int, details: str):
    import celltypist

    np.random.seed(seed)  # SGDClassifier inside CellTypist draws from NumPy's global state
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return celltypist.train(work, labels=labels, use_SGD=True, alpha=alpha, n_jobs=1, feature_selection=False,
                                check_expression=False, details=details)


def _predict(work: ad.AnnData, model):
    """CellTypist ``annotate`` (it scales with the model's own scaler) → its predicted-labels table."""
    import celltypist

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return celltypist.annotate(work, model=model, mode="best match").predicted_labels.loc[work.obs_names]


def train_model(adata: ad.AnnData, labels: np.ndarray, out: Path, *, value_transform: str = "counts",
                seed: int = 0, details: str = "", alpha_grid: tuple[float, ...] = ALPHA_GRID) -> dict:
    """Train a CellTypist model on labelled cells and write it to ``out`` (atomically).

    The L2 strength ``alpha`` is chosen from ``alpha_grid`` by accuracy on a stratified 20% of the
    cells held out from training; the final model is refit on every cell with that alpha.

    Parameters
    ----------
    adata
        Cells × genes (gene symbols as ``var_names``), raw counts unless ``value_transform="log"``.
        Restrict it to the genes the query measures: CellTypist drops a model's unmeasured genes at
        prediction time, which biases the decision scores.
    labels
        One cell-type label per cell (use Cell Ontology labels so calls harmonise exactly).

    Returns
    -------
    ``{"path", "alpha", "validation_accuracy" (per alpha), "n_cells", "n_genes", "labels"}``.

    Notes
    -----
    ``use_SGD=True``: CellTypist's default logistic-regression path passes ``multi_class`` to
    scikit-learn, which scikit-learn 1.9 (pinned here for the rest of the stack) no longer accepts;
    the SGD path does not pass it. Pinning an older scikit-learn instead would hold back every other
    user of it in the project.

    Raises
    ------
    ValueError
        If fewer than two distinct labels are given, or ``labels`` does not match the cells.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels).astype(str)
    if len(labels) != adata.n_obs:
        raise ValueError(f"{len(labels)} labels for {adata.n_obs} cells")
    if len(set(labels)) < 2:
        raise ValueError(f"CellTypist needs at least two cell types to train; got {sorted(set(labels))}")
    work = _log_normalised(adata, value_transform)
    classes, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 else None
    fit_idx, val_idx = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=seed, stratify=stratify)
    scores = {}
    for alpha in alpha_grid:
        model = _fit(work[fit_idx].copy(), labels[fit_idx], alpha, seed, details)
        pred = _predict(work[val_idx].copy(), model)["predicted_labels"].astype(str).to_numpy()
        scores[alpha] = float(np.mean(pred == labels[val_idx]))
    best = max(alpha_grid, key=lambda a: (scores[a], a))
    model = _fit(work, labels, best, seed, details)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.pkl")  # Model.write replaces any extension with .pkl
    model.write(str(tmp))
    tmp.replace(out)
    return {"path": str(out), "alpha": best, "validation_accuracy": scores, "n_cells": int(adata.n_obs),
            "n_genes": int(adata.n_vars), "labels": [str(c) for c in classes]}


def annotate(adata: ad.AnnData, model_path: Path, *, value_transform: str = "counts",
             min_confidence: float = MIN_CONFIDENCE) -> pd.DataFrame:
    """Predict a cell type per cell with a CellTypist model (``mode="best match"``).

    Returns
    -------
    DataFrame indexed like ``adata.obs`` with ``cell_type`` (the model's label), ``cell_type_confidence``
    (float, the predicted class's probability, 0–1) and ``cell_type_low_confidence`` (bool,
    confidence < ``min_confidence``).

    Raises
    ------
    FileNotFoundError
        If the model file does not exist.
    ValueError
        If no gene of the model is measured in ``adata``.
    """
    import celltypist
    from celltypist.models import Model

    model_path = Path(model_path)
    if not model_path.exists():
        raise FileNotFoundError(f"CellTypist model not found: {model_path} (models are never downloaded here)")
    model = Model.load(str(model_path))
    shared = np.intersect1d(model.features, adata.var_names)
    if len(shared) == 0:
        raise ValueError(f"None of the {len(model.features)} genes of {model_path.name} is measured in this input "
                         f"(input genes e.g. {list(adata.var_names[:3])}); check gene identifiers (symbols expected)")
    work = _log_normalised(adata, value_transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = celltypist.annotate(work, model=model, mode="best match")
    proba = result.probability_matrix.loc[work.obs_names]  # one-vs-rest sigmoid per class (CellTypist)
    label = result.predicted_labels.loc[work.obs_names, "predicted_labels"].astype(str)
    confidence = proba.max(axis=1).to_numpy(dtype=np.float32)
    return pd.DataFrame({"cell_type": label.to_numpy(), "cell_type_confidence": confidence,
                         "cell_type_low_confidence": confidence < min_confidence}, index=adata.obs_names)


def model_for_entry(spec: dict, data_dir: Path, genes, cache_dir: Path, query_genes: list[str]) -> tuple[Path, str]:
    """The model file a recipe's ``cell_type_annotation`` names, training it on the labelled dataset
    ``train_from`` restricted to the genes the query measures (cached by the training entry and the
    gene set) when it gives that. Returns ``(path, source description)``.

    Raises
    ------
    ValueError
        If the spec gives neither or both of ``model`` and ``train_from``.
    """
    if bool(spec.get("model")) == bool(spec.get("train_from")):
        raise ValueError("cell_type_annotation needs exactly one of 'model' (a CellTypist .pkl) or 'train_from' "
                         f"(a labelled dataset entry); got keys {sorted(spec)}")
    if spec.get("model"):
        path = Path(spec["model"])
        path = path if path.is_absolute() else Path(data_dir) / path
        return path, f"celltypist:{path.name}"
    from .ingest import read_dataset

    entry = spec["train_from"]
    query = sorted(set(map(str, query_genes)))
    key = hashlib.sha256((json.dumps(entry, sort_keys=True) + "\x1f".join(query)).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"celltypist-{entry['dataset_id']}-{key}.pkl"
    if not path.exists():
        labelled = read_dataset(entry, data_dir, genes)
        shared = labelled.var_names.intersection(pd.Index(query))
        if len(shared) == 0:
            raise ValueError(f"The labelled dataset {entry['dataset_id']!r} shares no gene with the query")
        info = train_model(labelled[:, shared].copy(), labelled.obs["cell_type"].to_numpy(), path,
                           value_transform=labelled.uns["omnicelltosg"]["value_transform"],
                           details=f"trained by OmniCellTOSG on {entry['dataset_id']} ({entry['path']})")
        path.with_suffix(".json").write_text(json.dumps(info, indent=1))
    return path, f"celltypist:trained on {entry['dataset_id']}"


def annotate_recipe(recipe_path: Path, data_dir: Path, out: Path, *, cache_dir: Path | None = None) -> dict:
    """Ingest every dataset of a recipe that asks for ``cell_type_annotation`` and write, per dataset,
    ``<out>/<dataset_id>/cell_type_annotation.tsv`` (per cell: label, confidence, low-confidence flag)
    and ``harmonisation.tsv``, plus ``<out>/summary.md`` and ``<out>/confidence.png`` (histogram of
    CellTypist confidence per dataset). Returns ``{dataset_id: summary dict}``.

    Raises
    ------
    ValueError
        If no dataset of the recipe asks for annotation.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .ingest import read_dataset
    from .knowledge import load_gene_table
    from .pipeline import load_recipe

    recipe = load_recipe(recipe_path)
    entries = [e for e in recipe["datasets"] if e.get("cell_type_annotation")]
    if not entries:
        raise ValueError(f"No dataset of {recipe_path} has 'cell_type_annotation'; nothing to annotate")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir or out / ".cache")
    genes = load_gene_table(Path(data_dir) / "knowledge")
    summaries, calls = {}, {}
    for entry in entries:
        adata = read_dataset(entry, data_dir, genes, cache_dir=cache_dir)
        tables = adata.uns["omnicelltosg_tables"]
        folder = out / entry["dataset_id"]
        folder.mkdir(exist_ok=True)
        for name in ("cell_type_annotation", "harmonisation"):
            tables[name].to_csv(folder / f"{name}.tsv", sep="\t", index=False)
        table = tables["cell_type_annotation"]
        calls[entry["dataset_id"]] = table
        model_info = sorted(cache_dir.glob(f"celltypist-{entry['cell_type_annotation'].get('train_from', {}).get('dataset_id', '')}-*.json"))
        summaries[entry["dataset_id"]] = {
            "n_cells": int(len(table)), "source": str(adata.obs["cell_type_source"].iloc[0]),
            "low_confidence_fraction": float(table["cell_type_low_confidence"].mean()),
            "median_confidence": float(table["cell_type_confidence"].median()),
            "labels": adata.obs["cell_type"].value_counts().to_dict(),
            "labels_confident": adata.obs.loc[~table["cell_type_low_confidence"].to_numpy(), "cell_type"].value_counts().to_dict(),
            "model": json.loads(model_info[-1].read_text()) if model_info and "train_from" in entry["cell_type_annotation"] else {},
        }
    fig, axes = plt.subplots(1, len(calls), figsize=(5 * len(calls), 3.5), squeeze=False)
    for ax, (name, table) in zip(axes[0], calls.items()):
        ax.hist(table["cell_type_confidence"], bins=20, range=(0, 1), color="#4c72b0")
        ax.axvline(float(entries[0]["cell_type_annotation"].get("min_confidence", MIN_CONFIDENCE)), color="k", ls="--")
        ax.set_title(f"{name} (n={len(table)})")
        ax.set_xlabel("CellTypist confidence (probability of the call)")
        ax.set_ylabel("cells")
    fig.tight_layout()
    fig.savefig(out / "confidence.png", dpi=120)
    plt.close(fig)
    lines = ["# CellTypist annotation of unlabelled inputs", "", f"Recipe `{recipe_path}`.", ""]
    for name, s in summaries.items():
        lines += [f"## {name}", "", f"- {s['n_cells']} cells, source `{s['source']}`; median confidence "
                  f"{s['median_confidence']:.3f}; {s['low_confidence_fraction']:.1%} flagged low-confidence"]
        if s["model"]:
            lines.append(f"- model: alpha {s['model']['alpha']} chosen on held-out reference cells (accuracy per alpha "
                         f"{s['model']['validation_accuracy']}), {s['model']['n_genes']} genes shared with this input")
        lines += ["", "| cell type | all calls | confident calls |", "|---|---|---|"]
        for label, n in s["labels"].items():
            lines.append(f"| {label} | {n} | {s['labels_confident'].get(label, 0)} |")
        lines.append("")
    lines.append("![confidence](confidence.png)")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(summaries, indent=1))
    return summaries


__all__ = ["MIN_CONFIDENCE", "ALPHA_GRID", "train_model", "annotate", "model_for_entry", "annotate_recipe"]
