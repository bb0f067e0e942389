"""Expression-only baselines for cell classification (scikit-learn), each selected on validation only.

- ``majority_class``: the most frequent training class for every test meta-cell.
- ``logistic_regression``: L2 logistic regression on log-normalised expression (CP10k + log1p) of the
  genes the cohort measured; ``C`` chosen on validation macro-F1 from ``LOGISTIC_C_GRID``.
- ``mlp``: the paper's DNN baseline — a two-layer perceptron trained with the graph models' loop and
  budget (``FinetuningArguments``, the same learning-rate grid), selected on validation macro-F1.

Every function takes ``x`` float ``[M, G]``, ``y`` int ``[M]``, ``splits`` {train, validation, test} →
row positions, ``num_classes``, ``seed``, ``training`` (the shared :class:`FinetuningArguments`) and
``learning_rates``, and returns a :class:`ModelRun`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from omnicelltosg.train.arguments import FinetuningArguments
from omnicelltosg.train.finetuning import train_classifier
from omnicelltosg.train.wide import LOGISTIC_C_GRID


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


def majority_class(x: np.ndarray, y: np.ndarray, splits: dict, *, num_classes: int, seed: int = 0,
                   training: FinetuningArguments | None = None, learning_rates=None) -> ModelRun:
    """Predict the most frequent training class (ties: the lowest index); ``training`` and
    ``learning_rates`` are accepted for a uniform call signature and unused."""
    t0 = time.perf_counter()
    majority = int(np.bincount(y[splits["train"]], minlength=num_classes).argmax())
    proba = np.zeros((len(splits["test"]), num_classes))
    proba[:, majority] = 1.0
    val = _val_f1(y[splits["validation"]], np.full(len(splits["validation"]), majority))
    return ModelRun("majority_class", val, np.full(len(splits["test"]), majority), proba,
                    {"class": majority}, seconds=time.perf_counter() - t0)


def logistic_regression(x: np.ndarray, y: np.ndarray, splits: dict, *, num_classes: int, seed: int = 0,
                        training: FinetuningArguments | None = None, learning_rates=None,
                        c_grid: tuple[float, ...] = LOGISTIC_C_GRID) -> ModelRun:
    """L2 logistic regression (scikit-learn, lbfgs, solved to convergence), ``C`` in ``c_grid`` chosen on
    validation macro-F1; class-weighted (``class_weight="balanced"``) when ``training.class_weighted``.
    ``learning_rates`` is accepted for a uniform call signature and unused (no learning rate)."""
    t0 = time.perf_counter()
    training = training or FinetuningArguments()
    tr, va, te = splits["train"], splits["validation"], splits["test"]
    best = None
    for c in c_grid:
        clf = LogisticRegression(C=c, max_iter=5000, random_state=seed,
                                 class_weight="balanced" if training.class_weighted else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x[tr], y[tr])
        f1 = _val_f1(y[va], clf.predict(x[va]))
        if best is None or f1 > best[0]:
            best = (f1, c, clf)
    f1, c, clf = best
    return ModelRun("logistic_regression", f1, clf.predict(x[te]), _full_proba(clf, x[te], num_classes),
                    {"C": c, "C grid": list(c_grid), "class_weighted": training.class_weighted},
                    seconds=time.perf_counter() - t0)


def mlp(x: np.ndarray, y: np.ndarray, splits: dict, *, num_classes: int, seed: int = 0,
        training: FinetuningArguments | None = None, learning_rates: tuple[float, ...] | None = None,
        hidden: int = 128) -> ModelRun:
    """The paper's DNN baseline: a two-layer perceptron (``G → hidden → K``, ReLU) trained by the SAME loop and
    budget as the graph models (:func:`omnicelltosg.train.finetuning.train_classifier`: epoch cap, early
    stopping, AdamW with weight decay, warm-up + cosine schedule, optional class weights), for each learning
    rate of ``learning_rates`` (default: ``training.learning_rate``); the best on validation is kept."""
    t0 = time.perf_counter()
    training = training or FinetuningArguments()
    tr, va, te = (torch.as_tensor(np.asarray(splits[k]), dtype=torch.long) for k in ("train", "validation", "test"))
    features, labels = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    best = None
    for lr in learning_rates or (training.learning_rate,):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden, num_classes))

        def forward(rows, train):
            net.train(train)
            with torch.set_grad_enabled(train):
                return net(features[rows])

        res = train_classifier(net.parameters(), forward, labels, training.with_overrides(seed=seed, learning_rate=lr),
                               train_idx=tr, val_idx=va, state=net, num_classes=num_classes)
        if best is None or res["val_macro_f1"] > best[0]["val_macro_f1"]:
            with torch.no_grad():
                best = (res, lr, torch.softmax(forward(te, False), -1).numpy())
    res, lr, proba = best
    return ModelRun("mlp", res["val_macro_f1"], proba.argmax(-1), proba,
                    {"lr": lr, "hidden": hidden, "epochs_run": res["epochs_run"], "steps": res["steps"]},
                    best_epoch=res["best_epoch"],
                    curves={"train loss": res["train_loss_curve"], "validation macro-F1": res["val_macro_f1_curve"]},
                    seconds=time.perf_counter() - t0)


EXPRESSION_BASELINES = {"mlp": mlp, "logistic_regression": logistic_regression, "majority_class": majority_class}

__all__ = ["ModelRun", "majority_class", "logistic_regression", "mlp", "EXPRESSION_BASELINES"]
