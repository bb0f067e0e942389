"""Classification metrics and the statistics that compare models over repeated runs.

Metrics are scikit-learn's; this module only fixes which ones a report carries and how a model is
compared with another on the same test meta-cells (paired over runs, bootstrap over meta-cells).
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
)


def classification_metrics(y_true, y_pred, proba=None, label_names: list[str] | None = None) -> dict:
    """Test metrics of one model on one split.

    Args:
        y_true, y_pred: int class indices `[M]`.
        proba: optional float `[M, K]` class probabilities (rows sum to 1); AUROC needs it.
        label_names: the K class names (per-class F1 is keyed by them).

    Returns:
        `accuracy`, `macro_f1` (unweighted mean of per-class F1 over the classes present in `y_true` or
        `y_pred`, as scikit-learn), `balanced_accuracy` (mean per-class recall), `per_class_f1`
        {name: F1} over all K classes, and `auroc`: for a binary task the ROC AUC of `proba[:, 1]`;
        for more classes the macro one-vs-rest AUC; NaN when `proba` is missing or the test split
        holds a single class (AUROC undefined).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = len(label_names) if label_names is not None else int(max(y_true.max(), y_pred.max())) + 1
    names = label_names if label_names is not None else [str(i) for i in range(k)]
    per_class = f1_score(y_true, y_pred, labels=np.arange(k), average=None, zero_division=0)
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "per_class_f1": {names[i]: float(per_class[i]) for i in range(k)},
        "auroc": float("nan"),
    }
    if proba is not None and len(np.unique(y_true)) > 1:
        proba = np.asarray(proba, dtype=np.float64)
        if k == 2:
            out["auroc"] = float(roc_auc_score(y_true, proba[:, 1]))
        elif len(np.unique(y_true)) == k:
            out["auroc"] = float(roc_auc_score(y_true, proba / proba.sum(1, keepdims=True), multi_class="ovr",
                                               average="macro", labels=np.arange(k)))
    return out


def bootstrap_difference(runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], *, n_boot: int = 1000,
                         seed: int = 0, level: float = 0.95) -> dict:
    """Bootstrap CI of the macro-F1 difference between two models scored on the same test meta-cells.

    Args:
        runs: one `(y_true, pred_a, pred_b)` triple per run (split × seed); within a run both models
            predicted the same test meta-cells.
        n_boot: bootstrap replicates; seed: numpy seed; level: CI coverage.

    Each replicate resamples every run's test meta-cells with replacement (independently per run),
    recomputes macro-F1 of both models on the resample and averages the per-run differences
    (a − b). Returns `mean_difference` (on the original data), `ci_low`, `ci_high` (percentile
    interval), `standard_error` (sd of the replicates, ddof 1) and `p_two_sided` (twice the smaller tail
    fraction of replicates at or beyond 0, at most 1, floored at 1 / n_boot).
    """
    rng = np.random.default_rng(seed)

    def diff(t, a, b):
        return f1_score(t, a, average="macro", zero_division=0) - f1_score(t, b, average="macro", zero_division=0)

    observed = float(np.mean([diff(t, a, b) for t, a, b in runs]))
    reps = np.empty(n_boot)
    for r in range(n_boot):
        ds = []
        for t, a, b in runs:
            idx = rng.integers(0, len(t), len(t))
            ds.append(diff(t[idx], a[idx], b[idx]))
        reps[r] = np.mean(ds)
    alpha = (1.0 - level) / 2
    tail = min((reps <= 0).mean(), (reps >= 0).mean())
    return {"mean_difference": observed, "ci_low": float(np.quantile(reps, alpha)),
            "ci_high": float(np.quantile(reps, 1 - alpha)), "standard_error": float(np.std(reps, ddof=1)),
            "p_two_sided": float(min(1.0, max(2 * tail, 1.0 / n_boot))),
            "n_boot": n_boot, "level": level}


def paired_test(a: np.ndarray, b: np.ndarray) -> dict:
    """Paired t-test (scipy.stats.ttest_rel) of a − b over runs; NaN p-value with fewer than 2 runs or
    when every difference is identical (the test is undefined)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    if len(d) < 2 or np.allclose(d, d[0]):
        return {"test": "paired t-test over runs", "n": int(len(d)), "mean_difference": float(d.mean()) if len(d) else
                float("nan"), "statistic": float("nan"), "p_value": float("nan")}
    res = stats.ttest_rel(a, b)
    return {"test": "paired t-test over runs", "n": int(len(d)), "mean_difference": float(d.mean()),
            "statistic": float(res.statistic), "p_value": float(res.pvalue)}


def above_chance(balanced_accuracy: np.ndarray, n_classes: int, *, margin: float = 0.1, alpha: float = 0.05) -> dict:
    """Is a model above chance on a task? One-sided one-sample t-test (scipy.stats.ttest_1samp,
    ``alternative="greater"``) of the per-run test balanced accuracy against chance, ``1 / n_classes``.

    ``flag`` is True when the mean exceeds chance by more than ``margin`` AND p < ``alpha``. Runs that
    share a split are not independent, so this is a screen, not a calibrated test: on a task the input
    genes cannot support (e.g. sex without X/Y-linked genes) a flag means a leak to look for.

    Raises:
        ValueError: if ``n_classes`` < 2.
    """
    if n_classes < 2:
        raise ValueError(f"above_chance needs at least 2 classes, got {n_classes}")
    x = np.asarray(balanced_accuracy, dtype=float)
    chance = 1.0 / n_classes
    if len(x) < 2 or np.allclose(x, x[0]):
        p = float("nan") if len(x) < 2 else (0.0 if x[0] > chance else 1.0)
    else:
        p = float(stats.ttest_1samp(x, chance, alternative="greater").pvalue)
    mean = float(x.mean()) if len(x) else float("nan")
    return {"chance": chance, "mean": mean, "n": int(len(x)), "p_value": p,
            "flag": bool(len(x) and mean > chance + margin and p < alpha)}


__all__ = ["classification_metrics", "bootstrap_difference", "paired_test", "above_chance"]
