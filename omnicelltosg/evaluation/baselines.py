"""Expression-only baselines for cell classification (scikit-learn), each selected on validation only.

- ``majority_class``: the most frequent training class for every test meta-cell.
- ``logistic_regression``: L2 logistic regression on log-normalised expression (CP10k + log1p) of the
  genes the cohort measured; ``C`` chosen on validation macro-F1.
- ``mlp``: the paper's DNN baseline — scikit-learn ``MLPClassifier`` trained epoch by epoch with
  ``partial_fit``; the epoch (checkpoint) and the L2 strength ``alpha`` are chosen on validation
  macro-F1.

Every function takes ``x`` float ``[M, G]``, ``y`` int ``[M]``, ``splits`` {train, validation, test} →
row positions and returns a :class:`ModelRun`.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.neural_network import MLPClassifier

#: Passes over the training rows of the MLP baseline (its checkpoint is chosen among them on validation).
MLP_EPOCHS = 40


@dataclass
class ModelRun:
    """One model trained and selected on one split.

    Attributes: ``model`` name; ``val_macro_f1`` of the selected model; ``test_pred`` int ``[T]`` and
    ``test_proba`` float ``[T, K]`` on the test rows; ``hparams`` chosen on validation; ``best_epoch``
    (None where not epoch-based); ``curves`` {name: per-epoch values} of the selected configuration;
    ``seconds`` of training and selection.
    """

    model: str
    val_macro_f1: float
    test_pred: np.ndarray
    test_proba: np.ndarray
    hparams: dict = field(default_factory=dict)
    best_epoch: int | None = None
    curves: dict = field(default_factory=dict)
    seconds: float = 0.0


def _val_f1(y_true, y_pred) -> float:
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def _full_proba(clf, x: np.ndarray, num_classes: int) -> np.ndarray:
    """`predict_proba` widened to all K classes (a class absent from training gets probability 0)."""
    proba = np.zeros((len(x), num_classes))
    proba[:, clf.classes_] = clf.predict_proba(x)
    return proba


def majority_class(x: np.ndarray, y: np.ndarray, splits: dict, *, num_classes: int, seed: int = 0) -> ModelRun:
    """Predict the most frequent training class (ties: the lowest index)."""
    t0 = time.perf_counter()
    majority = int(np.bincount(y[splits["train"]], minlength=num_classes).argmax())
    proba = np.zeros((len(splits["test"]), num_classes))
    proba[:, majority] = 1.0
    val = _val_f1(y[splits["validation"]], np.full(len(splits["validation"]), majority))
    return ModelRun("majority_class", val, np.full(len(splits["test"]), majority), proba,
                    {"class": majority}, seconds=time.perf_counter() - t0)


def logistic_regression(x: np.ndarray, y: np.ndarray, splits: dict, *, num_classes: int, seed: int = 0,
                        c_grid: tuple[float, ...] = (0.01, 0.1, 1.0)) -> ModelRun:
    """L2 logistic regression (lbfgs), ``C`` in ``c_grid`` chosen on validation macro-F1."""
    t0 = time.perf_counter()
    tr, va, te = splits["train"], splits["validation"], splits["test"]
    best = None
    for c in c_grid:
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x[tr], y[tr])
        f1 = _val_f1(y[va], clf.predict(x[va]))
        if best is None or f1 > best[0]:
            best = (f1, c, clf)
    f1, c, clf = best
    return ModelRun("logistic_regression", f1, clf.predict(x[te]), _full_proba(clf, x[te], num_classes), {"C": c},
                    seconds=time.perf_counter() - t0)


def mlp(x: np.ndarray, y: np.ndarray, splits: dict, *, num_classes: int, seed: int = 0, epochs: int = MLP_EPOCHS,
        hidden: tuple[int, ...] = (128,), alpha_grid: tuple[float, ...] = (1e-4, 1e-2)) -> ModelRun:
    """Two-layer perceptron (ReLU, Adam, scikit-learn defaults otherwise), trained ``epochs`` passes with
    ``partial_fit``; the (alpha, epoch) with the best validation macro-F1 is kept."""
    t0 = time.perf_counter()
    tr, va, te = splits["train"], splits["validation"], splits["test"]
    classes = np.arange(num_classes)
    best = None
    for alpha in alpha_grid:
        clf = MLPClassifier(hidden_layer_sizes=hidden, alpha=alpha, random_state=seed, batch_size=min(64, len(tr)))
        losses, val_curve = [], []
        for epoch in range(epochs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.partial_fit(x[tr], y[tr], classes=classes)
            losses.append(float(clf.loss_))
            val_curve.append(_val_f1(y[va], clf.predict(x[va])))
            if best is None or val_curve[-1] > best[0]:
                best = (val_curve[-1], alpha, epoch, copy.deepcopy(clf), None)
        if best[1] == alpha:
            best = best[:4] + ({"train loss": losses, "validation macro-F1": val_curve},)
    f1, alpha, epoch, clf, curves = best
    return ModelRun("mlp", f1, clf.predict(x[te]), clf.predict_proba(x[te]), {"alpha": alpha, "hidden": list(hidden)},
                    best_epoch=epoch, curves=curves, seconds=time.perf_counter() - t0)


EXPRESSION_BASELINES = {"mlp": mlp, "logistic_regression": logistic_regression, "majority_class": majority_class}

__all__ = ["ModelRun", "majority_class", "logistic_regression", "mlp", "EXPRESSION_BASELINES", "MLP_EPOCHS"]
