"""Automatic cell-type annotation of unlabelled input with CellTypist (Domínguez Conde et al. 2022,
Science; PyPI ``celltypist``).

Models never come from the internet at run time: either a user-supplied CellTypist model file
(``.pkl``) or one trained here on a labelled real dataset (:func:`train_model`). Input and training
expression are normalised the way CellTypist expects (counts per 10,000, log1p); inputs that are
already log-scale are used as they are.

Recipe entry (``cell_type_annotation``, :class:`dataset_script.build.recipe.CellTypeAnnotation`), used
when the entry maps no ``cell_type`` column; :func:`dataset_script.build.ingest.read_dataset` resolves it
to a model (training one on ``train_from`` if asked) and calls :func:`annotate`::

    cell_type_annotation:
      model: models/my_celltypist.pkl            # a file, relative to the data folder, or …
      train_from: {dataset entry of a labelled file}   # … trained here, labels harmonised to CL first
      min_confidence: 0.5                        # below it a call is flagged low-confidence

Model files are untrusted input: a CellTypist ``.pkl`` is a Python pickle, and unpickling one with
:mod:`pickle` runs whatever code it names. :func:`load_model` reads them with a restricted unpickler
that builds only what a CellTypist model holds (a dict of a scikit-learn ``LogisticRegression`` or
``SGDClassifier``, a ``StandardScaler``, NumPy arrays and scalars, and plain Python containers) and
refuses every other global with a ``ValueError`` naming it, before anything is called. This covers the
recipe's ``model:`` files and the models cached by the build (``celltypist-*.pkl``).

This module is a leaf of the build: it imports nothing from the rest of the project but the atomic writers.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from dataset_script.files import atomic_file

#: The only globals a CellTypist model pickle may name (module, name): NumPy array / scalar / dtype
#: reconstruction (NumPy 1 and 2 module paths), the scikit-learn classes of CellTypist models (its
#: default LogisticRegression and the SGD path used here, with the loss object SGD pickles) and the
#: StandardScaler. Nothing here runs code beyond restoring attributes.
ALLOWED_MODEL_GLOBALS = frozenset(
    [(f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")]
    + [(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [("numpy.dtypes", f"{t}DType") for t in ("Float64", "Float32", "Int64", "Int32", "Str", "Object", "Bool")]
    + [("sklearn.linear_model._logistic", "LogisticRegression"),
       ("sklearn.linear_model._stochastic_gradient", "SGDClassifier"),
       ("sklearn.preprocessing._data", "StandardScaler"),
       ("sklearn._loss._loss", "CyHalfBinomialLoss"), ("sklearn._loss._loss", "CyHalfMultinomialLoss"),
       ("sklearn.linear_model._sgd_fast", "Log"), ("sklearn.linear_model._sgd_fast", "Hinge"),
       ("sklearn.linear_model._sgd_fast", "ModifiedHuber")])


class _ModelUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_MODEL_GLOBALS`."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_MODEL_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CellTypist model does not hold")
        return super().find_class(module, name)


def load_model(path: Path):
    """A CellTypist model file read without running code from it (see the module docstring).

    Returns
    -------
    ``celltypist.models.Model`` (classifier, scaler, description), as ``Model.load`` would give.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a CellTypist model: it names a global outside :data:`ALLOWED_MODEL_GLOBALS`
        (nothing of it is run), is not a pickle, or lacks the ``Model`` / ``Scaler_`` / ``description``
        entries of the expected types. The message names the file.
    """
    from celltypist.models import Model
    from sklearn.preprocessing import StandardScaler

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CellTypist model not found: {path} (models are never downloaded here)")
    try:
        with open(path, "rb") as fh:
            content = _ModelUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError) as err:
        raise ValueError(f"Refusing CellTypist model {path}: {err}. Only CellTypist model files (scikit-learn "
                         "classifier + StandardScaler) are loaded; nothing from this file was run.") from None
    content = content if isinstance(content, dict) else {}
    if (type(content.get("Model")).__name__ not in ("LogisticRegression", "SGDClassifier")
            or not isinstance(content.get("Scaler_"), StandardScaler) or not isinstance(content.get("description"), dict)):
        raise ValueError(f"{path} is not a CellTypist model: expected a dict with 'Model' (LogisticRegression or "
                         f"SGDClassifier), 'Scaler_' (StandardScaler) and 'description' (dict)")
    return Model(content["Model"], content["Scaler_"], content["description"])


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
        If fewer than two distinct labels are given, ``labels`` does not match the cells, or ``out``
        does not end in ``.pkl`` (CellTypist's ``Model.write`` replaces any other extension).
    """
    from sklearn.model_selection import train_test_split

    out = Path(out)
    if out.suffix != ".pkl":
        raise ValueError(f"CellTypist model files end in .pkl; got {out}")
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
    with atomic_file(out) as tmp:
        model.write(str(tmp))
    return {"path": str(out), "alpha": best, "validation_accuracy": scores, "n_cells": int(adata.n_obs),
            "n_genes": int(adata.n_vars), "labels": [str(c) for c in classes]}


def annotate(adata: ad.AnnData, model_path: Path, *, min_confidence: float,
             value_transform: str = "counts") -> pd.DataFrame:
    """Predict a cell type per cell with a CellTypist model (``mode="best match"``).

    ``min_confidence`` (0–1) is the probability below which a call is flagged (a recipe's
    ``cell_type_annotation.min_confidence``).

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
        If the file is not a CellTypist model (:func:`load_model`: nothing of it is run), or no gene of
        the model is measured in ``adata``.
    """
    import celltypist

    model_path = Path(model_path)
    model = load_model(model_path)
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


__all__ = ["ALPHA_GRID", "ALLOWED_MODEL_GLOBALS", "load_model", "train_model", "annotate"]
