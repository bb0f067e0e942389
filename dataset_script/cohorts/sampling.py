"""Down-sampling a cohort: ``sample_ratio`` xor ``sample_size``, per-class quotas (ARCHITECTURE.md §5).

The quota rules follow the original loader's cell-type sampler (every class keeps at least
``min_per_class`` rows, rare classes are up-sampled with replacement to reach it) with one change:
a ``sample_size`` is shared out by the largest-remainder method, so the quotas sum exactly to the
requested size and a class's quota never depends on the order of the classes.
"""

from __future__ import annotations

import numpy as np

#: Largest sample size / per-class minimum accepted (an index must fit a 32-bit integer).
MAX_ROWS = 2**31 - 1


def _is_number(value) -> bool:
    """A real number that is not a bool (``True`` is an int in Python, never a meant size or ratio)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_sampling_request(sample_ratio: float | None, sample_size: int | None, min_per_class: int | None = 0) -> None:
    """Validate a sampling request before any work.

    Raises
    ------
    ValueError
        Naming the argument: both ``sample_ratio`` and ``sample_size``; a ``sample_ratio`` that is not a
        number in (0, 1]; a ``sample_size`` that is not a whole number in [1, :data:`MAX_ROWS`]; a
        ``min_per_class`` that is not a whole number in [0, :data:`MAX_ROWS`] (None = the task's default).
    """
    if sample_ratio is not None and sample_size is not None:
        raise ValueError("Give sample_ratio or sample_size, not both "
                         f"(got sample_ratio={sample_ratio!r}, sample_size={sample_size!r})")
    if sample_ratio is not None and not (_is_number(sample_ratio) and 0 < sample_ratio <= 1):
        raise ValueError(f"sample_ratio must be a number in (0, 1]; got {sample_ratio!r}")
    if sample_size is not None and not (_is_number(sample_size) and np.isfinite(sample_size)
                                        and int(sample_size) == sample_size and 1 <= sample_size <= MAX_ROWS):
        raise ValueError(f"sample_size must be a positive integer (at most {MAX_ROWS}); got {sample_size!r}")
    if min_per_class is not None and not (_is_number(min_per_class) and np.isfinite(min_per_class)
                                          and int(min_per_class) == min_per_class and 0 <= min_per_class <= MAX_ROWS):
        raise ValueError(f"min_per_class must be a non-negative integer (at most {MAX_ROWS}); got {min_per_class!r}")


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` that sum to ``total`` (Hamilton's method)."""
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=np.int64)
    share = total * weights / weights.sum()
    out = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - out), kind="stable")
    out[order[: total - out.sum()]] += 1
    return out


def class_quotas(class_counts: np.ndarray, *, sample_ratio: float | None = None, sample_size: int | None = None,
                 min_per_class: int = 0, upsample: bool = True) -> np.ndarray:
    """Rows to draw from each class (int64, aligned with ``class_counts``).

    - ``sample_ratio``: ``max(floor(n_c * ratio), min_per_class)`` per class.
    - ``sample_size``: ``min_per_class`` per class, the rest shared out in proportion to class sizes
      (largest remainder), so the quotas sum to ``sample_size``.
    - neither: ``max(n_c, min_per_class)``.

    Without ``upsample`` every quota is capped at the class size. Whole floats (``5.0``) count as integers;
    ``min_per_class=None`` is 0.

    Raises
    ------
    ValueError
        Both or invalid requests (:func:`check_sampling_request`), or a ``sample_size`` below
        ``min_per_class`` × number of classes.
    """
    check_sampling_request(sample_ratio, sample_size, min_per_class)
    sample_size = None if sample_size is None else int(sample_size)  # 5.0 → 5: it slices and sizes arrays
    min_per_class = 0 if min_per_class is None else int(min_per_class)
    counts = np.asarray(class_counts, dtype=np.int64)
    if sample_ratio is not None:
        quotas = np.maximum(np.floor(counts * sample_ratio).astype(np.int64), min_per_class)
    elif sample_size is not None:
        floor_total = min_per_class * len(counts)
        if sample_size < floor_total:
            raise ValueError(f"sample_size={sample_size} cannot give {len(counts)} classes at least "
                             f"{min_per_class} rows each (needs >= {floor_total})")
        # Classes whose proportional share is below the floor get the floor; the others share the rest.
        fixed = np.zeros(len(counts), dtype=bool)
        while True:
            rest = sample_size - min_per_class * fixed.sum()
            share = _largest_remainder(rest, np.where(fixed, 0, counts).astype(float))
            newly = (~fixed) & (share < min_per_class)
            if not newly.any():
                quotas = np.where(fixed, min_per_class, share)
                break
            fixed |= newly
    else:
        quotas = np.maximum(counts, min_per_class)
    if not upsample:
        quotas = np.minimum(quotas, counts)
    return quotas.astype(np.int64)


def sample_by_class(labels: np.ndarray, quotas: dict | np.ndarray, seed: int) -> np.ndarray:
    """Row positions (int64, sorted) drawing ``quotas[c]`` rows of each class ``c`` of ``labels``.

    A class with at least its quota is sampled without replacement; a smaller class keeps every
    row once and draws the shortfall with replacement (up-sampling; repeated positions appear).
    ``labels`` are class codes 0..C-1 when ``quotas`` is an array.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    parts = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        q = int(quotas[c])
        if q <= len(members):
            parts.append(rng.choice(members, size=q, replace=False))
        else:
            parts.append(np.concatenate([members, rng.choice(members, size=q - len(members), replace=True)]))
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def sample_rows(labels: np.ndarray, *, sample_ratio: float | None = None, sample_size: int | None = None,
                min_per_class: int = 0, upsample: bool = False, seed: int = 0) -> np.ndarray:
    """Per-class (stratified) sample of rows; see :func:`class_quotas` for the rules.

    ``labels`` : any array [n] of class values. Returns row positions (int64, sorted; repeated when
    up-sampled). With no ratio, no size and ``min_per_class == 0`` every row is returned once.
    """
    values, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    counts = np.bincount(codes, minlength=len(values))
    quotas = class_quotas(counts, sample_ratio=sample_ratio, sample_size=sample_size,
                          min_per_class=min_per_class, upsample=upsample)
    return sample_by_class(codes, quotas, seed)
