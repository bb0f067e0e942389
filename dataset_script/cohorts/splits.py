"""Train / validation / test splits by donor (ARCHITECTURE.md §5).

Meta-cells of one donor are highly correlated, so a split that puts a donor on both sides of the
train/test line measures memory, not generalisation. The donor key is ``dataset_id/donor_id`` (two
studies may both call a donor "1"). Donors are assigned greedily, in a seeded random order, to the
split whose per-class targets (``fraction × class size``) the donor's meta-cells help most; several
random orders are tried and the assignment that (1) puts every class in every split where enough
donors carry it and (2) comes closest to the target fractions is kept. Meta-cell-level splits exist
for cohorts without donors, but only when asked for explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SPLIT_NAMES = ("train", "validation", "test")
SPLIT_LEVELS = ("donor", "meta-cell")


def check_split_request(val_fraction: float, test_fraction: float, validation_by: str = "donor") -> None:
    """Validate split arguments before any work.

    Raises
    ------
    ValueError
        Naming the argument: ``validation_by`` not in :data:`SPLIT_LEVELS`; ``val_fraction`` /
        ``test_fraction`` that are not numbers in [0, 1) with a sum below 1.
    """
    if not isinstance(validation_by, str) or validation_by not in SPLIT_LEVELS:
        raise ValueError(f"validation_by must be one of {SPLIT_LEVELS}; got {validation_by!r}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        if not number or not 0 <= value < 1:
            raise ValueError(f"{name} must be a number in [0, 1); got {value!r}")
    if not val_fraction + test_fraction < 1:
        raise ValueError(f"val_fraction and test_fraction must be in [0, 1) with a sum below 1; got "
                         f"{val_fraction}, {test_fraction}")


def donor_keys(meta: pd.DataFrame) -> np.ndarray:
    """Donor key per row: ``"<dataset_id>/<donor_id>"`` (object array [n])."""
    return (meta["dataset_id"].astype(str) + "/" + meta["donor_id"].astype(str)).to_numpy(dtype=object)


@dataclass
class Split:
    """Row positions of each split and how they were made.

    ``indices[name]`` int64 positions for ``train`` / ``validation`` / ``test``; ``test_level`` and
    ``validation_level`` are ``"donor"``, ``"meta-cell"``, or ``"cell"`` (a meta-cell-level split of a
    build whose rows are single cells); ``donors[name]`` the donor keys in each
    split.
    """

    indices: dict[str, np.ndarray]
    test_level: str
    validation_level: str
    donors: dict[str, list[str]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.indices[name]

    def summary(self, labels: np.ndarray | None = None, label_names: list[str] | None = None) -> dict:
        """Per split: meta-cells, donors, and class counts when ``labels`` are given."""
        out = {"test_level": self.test_level, "validation_level": self.validation_level}
        for name, idx in self.indices.items():
            entry = {"n_metacells": int(len(idx)), "n_donors": len(self.donors.get(name, []))}
            if labels is not None:
                vals, counts = np.unique(labels[idx], return_counts=True)
                entry["class_counts"] = {str(label_names[v] if label_names else v): int(c) for v, c in zip(vals, counts)}
            out[name] = entry
        return out


def _stratified_rows(rows: np.ndarray, labels: np.ndarray, fractions: list[float],
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Split ``rows`` into len(fractions)+1 parts, each class shared by rounding (last part = rest)."""
    parts = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels[rows]):
        members = rng.permutation(rows[labels[rows] == c])
        start = 0
        for i, f in enumerate(fractions):
            k = int(round(f * len(members)))
            parts[i].append(members[start: start + k])
            start += k
        parts[-1].append(members[start:])
    return [np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts]


def _greedy_assignment(counts: np.ndarray, fractions: np.ndarray, order: np.ndarray) -> np.ndarray:
    """One greedy pass: donor → split minimising the weighted squared deviation from class targets.

    counts int [D, C] meta-cells per donor and class; fractions float [S] (0 = split not used).
    Returns int64 [D] split per donor. Only a donor's non-zero classes enter the cost change, so a
    pass is O(D · S · classes-per-donor).
    """
    n_class = counts.sum(0).astype(float)
    weight = 1.0 / np.maximum(n_class, 1.0)
    target = fractions[:, None] * n_class[None, :]
    filled = np.zeros_like(target)
    inactive = fractions <= 0
    assign = np.empty(len(counts), dtype=np.int64)
    for d in order:
        nz = np.flatnonzero(counts[d])
        v = counts[d, nz]
        dev = filled[:, nz] - target[:, nz]
        delta = ((2 * dev * v + v * v) * weight[nz]).sum(1)
        delta = np.round(delta, 9)  # exact ties (common) go to the earlier split, whatever the float rounding
        delta[inactive] = np.inf
        s = int(np.argmin(delta))
        filled[s, nz] += v
        assign[d] = s
    return assign


def _missing_cells(counts: np.ndarray, assign: np.ndarray, active: np.ndarray) -> list[tuple[int, int]]:
    """(split, class) pairs with no meta-cell although enough donors carry the class to cover
    every active split."""
    carriers = (counts > 0).sum(0)
    out = []
    for s in active:
        present = counts[assign == s].sum(0) > 0
        out += [(int(s), int(c)) for c in np.flatnonzero(~present & (carriers >= len(active)))]
    return out


def _repair(counts: np.ndarray, assign: np.ndarray, active: np.ndarray, max_moves: int = 50) -> np.ndarray:
    """Move single donors so every active split has a donor and, where possible, every class."""
    assign = assign.copy()
    sizes = counts.sum(1)
    for s in active:  # every active split needs a donor
        if not (assign == s).any():
            donor_split_sizes = np.bincount(assign, minlength=3)
            src = int(np.argmax(donor_split_sizes))
            movable = np.flatnonzero(assign == src)
            assign[movable[np.argmin(sizes[movable])]] = s
    for _ in range(max_moves):
        missing = _missing_cells(counts, assign, active)
        if not missing:
            break
        s, c = missing[0]
        # a donor carrying class c from a split that has another carrier of c and another donor
        options = [d for d in np.flatnonzero(counts[:, c] > 0)
                   if ((counts[assign == assign[d], c] > 0).sum() > 1) and (assign == assign[d]).sum() > 1]
        if not options:
            break
        d = min(options, key=lambda i: sizes[i])
        assign[d] = s
    return assign


def _resolve_test_donors(uniq: np.ndarray, test_donors: list[str]) -> np.ndarray:
    """bool [D]: the donors of ``uniq`` named by ``test_donors`` (keys, or bare donor IDs when unambiguous).

    Raises ``ValueError`` for an unknown or ambiguous name, or when every donor is named."""
    resolved = []
    for t in (str(t) for t in test_donors):
        hits = [u for u in uniq if u == t or u.split("/", 1)[-1] == t]
        if len(hits) != 1:
            raise ValueError(f"test donor {t!r} {'is ambiguous' if hits else 'is not in the cohort'}; "
                             f"donors: {list(uniq)}")
        resolved.append(hits[0])
    fixed_test = np.isin(uniq, resolved)
    if fixed_test.all():
        raise ValueError("test_donors holds every donor of the cohort; nothing is left to train on")
    return fixed_test


def _check_enough_donors(uniq: np.ndarray, active: np.ndarray, fixed_test: np.ndarray | None) -> None:
    """Raise ``ValueError`` (suggesting the explicit meta-cell-level options) when fewer donors are free
    than the active splits need."""
    needed = len(active) + (1 if fixed_test is not None else 0)
    free = len(uniq) - (int(fixed_test.sum()) if fixed_test is not None else 0)
    if free < len(active):
        raise ValueError(
            f"This cohort has {len(uniq)} donor(s) ({list(uniq)}); a donor-level split into "
            f"{', '.join(SPLIT_NAMES[s] for s in active)}{' + test' if fixed_test is not None else ''} needs at least "
            f"{needed}. Ask explicitly for validation_by='meta-cell' (validation carved from the training donors' "
            "meta-cells) or split_by='meta-cell' (a stratified meta-cell-level split: one donor's meta-cells then "
            "appear in several splits).")


def _best_assignment(counts: np.ndarray, fractions: np.ndarray, active: np.ndarray, n_trials: int,
                     rng: np.random.Generator) -> np.ndarray:
    """int64 [D] split per donor: the best of ``n_trials`` greedy passes in random donor orders (fewest
    missing (split, class) cells, then closest to the target meta-cell shares)."""
    best, best_score = None, None
    target_total = fractions * counts.sum()
    for _ in range(max(1, n_trials)):
        assign = _greedy_assignment(counts, fractions, rng.permutation(len(counts)))
        assign = _repair(counts, assign, active)
        score = (len(_missing_cells(counts, assign, active)),
                 float(np.abs(np.bincount(assign, weights=counts.sum(1), minlength=3) - target_total).sum()))
        if best_score is None or score < best_score:
            best, best_score = assign, score
    return best


def split_by_donor(donors: np.ndarray, labels: np.ndarray, *, val_fraction: float = 0.15,
                   test_fraction: float = 0.2, seed: int = 0, validation_by: str = "donor",
                   test_donors: list[str] | None = None, n_trials: int = 8) -> Split:
    """Donor-level split of meta-cells (see the module docstring).

    Parameters
    ----------
    donors
        Donor key per row (see :func:`donor_keys`), [n].
    labels
        Class code or value per row, [n]; splits are stratified on it.
    val_fraction, test_fraction
        Target shares of meta-cells.
    validation_by
        ``"donor"`` (default) or ``"meta-cell"``: validation carved from the training donors'
        meta-cells, stratified by label — for cohorts with two donors; flagged in the result.
    test_donors
        Donor keys (or bare donor IDs when unambiguous) to hold out as the test set, e.g. "train on
        one donor, test on the other".

    Raises
    ------
    ValueError
        Bad fractions, unknown ``test_donors``, or fewer donors than the requested splits need —
        the message suggests ``validation_by="meta-cell"`` / ``split_by="meta-cell"``, which must be
        asked for explicitly.
    """
    check_split_request(val_fraction, test_fraction, validation_by)
    donors = np.asarray(donors).astype(str)
    labels = np.asarray(labels)
    uniq, donor_code = np.unique(donors, return_inverse=True)
    _, label_code = np.unique(labels.astype(str), return_inverse=True)
    counts = np.zeros((len(uniq), label_code.max() + 1 if len(labels) else 1), dtype=np.int64)
    np.add.at(counts, (donor_code, label_code), 1)
    rng = np.random.default_rng(seed)

    fractions = np.array([1 - val_fraction - test_fraction,
                          val_fraction if validation_by == "donor" else 0.0, test_fraction])
    fixed_test = None
    if test_donors is not None:  # the test split is given: the other donors share train (and validation)
        fixed_test = _resolve_test_donors(uniq, test_donors)
        fractions[2] = 0.0
        if validation_by == "donor":
            rest = 1 - counts[fixed_test].sum() / max(counts.sum(), 1)
            fractions[1] = min(val_fraction / max(rest, 1e-9), 0.5)
        fractions[0] = 1 - fractions[1]
    active = np.flatnonzero(fractions > 0)
    _check_enough_donors(uniq, active, fixed_test)

    free_idx = np.flatnonzero(~fixed_test) if fixed_test is not None else np.arange(len(uniq))
    donor_split = np.full(len(uniq), 2, dtype=np.int64)
    donor_split[free_idx] = _best_assignment(counts[free_idx], fractions, active, n_trials, rng)
    row_split = donor_split[donor_code]
    idx = np.arange(len(donors))
    parts = {name: idx[row_split == s] for s, name in enumerate(SPLIT_NAMES)}
    if validation_by == "meta-cell":
        share = val_fraction / max(1 - (len(parts["test"]) / max(len(donors), 1)), 1e-9)
        parts["validation"], parts["train"] = _stratified_rows(parts["train"], label_code, [min(share, 0.5)], rng)
    names = {name: sorted(set(donors[p])) for name, p in parts.items()}
    assert not set(names["test"]) & (set(names["train"]) | set(names["validation"])), "a test donor is also in training"
    if validation_by == "donor":
        assert not set(names["train"]) & set(names["validation"]), "a validation donor is also in training"
    return Split(parts, "donor", validation_by, names)


def level_of_rows(split: Split, n_cells: np.ndarray) -> Split:
    """``split`` with its ``"meta-cell"`` levels renamed ``"cell"`` when every row aggregates exactly one
    cell (``n_cells`` int array ``[rows]``; a ``cells_per_metacell: 1`` build such as pbmc68k), so that a
    row-level split of single cells is reported as the CELL-level split it is; otherwise unchanged."""
    if len(n_cells) == 0 or not (np.asarray(n_cells) == 1).all():
        return split
    rename = {"meta-cell": "cell"}
    return Split(split.indices, rename.get(split.test_level, split.test_level),
                 rename.get(split.validation_level, split.validation_level), split.donors)


def split_by_metacell(labels: np.ndarray, *, val_fraction: float = 0.15, test_fraction: float = 0.2,
                      seed: int = 0, donors: np.ndarray | None = None) -> Split:
    """Label-stratified meta-cell-level split (for cohorts without donors; flagged as such).

    Returns a :class:`Split` with ``test_level = validation_level = "meta-cell"``; bad fractions raise
    ``ValueError`` (:func:`check_split_request`)."""
    check_split_request(val_fraction, test_fraction)
    labels = np.asarray(labels).astype(str)
    rng = np.random.default_rng(seed)
    test, val, train = _stratified_rows(np.arange(len(labels)), labels, [test_fraction, val_fraction], rng)
    parts = {"train": train, "validation": val, "test": test}
    names = {k: sorted(set(np.asarray(donors).astype(str)[v])) for k, v in parts.items()} if donors is not None else {}
    return Split(parts, "meta-cell", "meta-cell", names)
