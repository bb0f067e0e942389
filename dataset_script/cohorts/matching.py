"""Stratified case/control matching (the paper's Stratified Retrieval Algorithm, ARCHITECTURE.md §5).

Cases are rows whose ``balance_field`` is not the control value (and not unknown); controls are rows
whose ``balance_field`` equals it. Cases are grouped into strata by their exact-match keys (cell
type, sex, …) and, optionally, an ordered age-stage key. Each stratum draws
``controls_per_case × n_cases`` controls with the same exact keys:

1. first, for every stratum, controls at the *same* stage;
2. then, layer by layer for offsets d = 1 … τ, controls at stage ± d (both directions — the
   original only looked at younger stages), sampling without replacement inside each layer;
3. a stratum still short either up-samples its drawn controls with replacement (``upsample=True``)
   or keeps only as many cases as its controls support; a stratum with no control within ±τ is
   dropped. Every lost case is counted with its reason in :attr:`MatchResult.dropped`.

Randomness: each row gets one uniform priority from ``seed``; "sampling without replacement" takes
the lowest-priority unused controls. The result therefore depends only on the seed and the table,
not on the order strata are visited within a layer (apart from competition, resolved in the sorted
order of the strata).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dataset_script.cohorts.query import is_unknown
from dataset_script.schema import DEVELOPMENT_STAGE_CATEGORIES

#: Age groups in increasing age (ARCHITECTURE.md §4), the default order of the stage key.
AGE_STAGES: tuple[str, ...] = tuple(name for name, _ in DEVELOPMENT_STAGE_CATEGORIES)


@dataclass
class MatchResult:
    """Output of :func:`match_case_control`.

    Attributes
    ----------
    rows : int64 [K] — positions in the input table: kept cases (by stratum), then their controls;
        a position repeats when its control was up-sampled.
    is_case : bool [K]
    stratum : int64 [K] — row of :attr:`strata` each selected row belongs to.
    stage_offset : int64 [K] — |stage(control) − stage(stratum)| in stage steps (0 for cases).
    upsampled : bool [K] — the row is an extra draw with replacement.
    strata : one row per case stratum: the key values, ``stage``, ``n_cases``, ``n_cases_kept``,
        ``n_controls_offset_<d>`` for d = 0 … τ, ``n_upsampled``, ``status`` and ``reason``.
    n_cases_in : case rows before matching (including those with unknown keys).
    dropped : cases lost, by reason.
    """

    rows: np.ndarray
    is_case: np.ndarray
    stratum: np.ndarray
    stage_offset: np.ndarray
    upsampled: np.ndarray
    strata: pd.DataFrame
    n_cases_in: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        """Counts for reports: cases in / kept / lost by reason, controls by stage offset."""
        offsets = {int(d): int(n) for d, n in zip(*np.unique(self.stage_offset[~self.is_case], return_counts=True))}
        return {"n_cases_in": self.n_cases_in, "n_cases_kept": int(self.is_case.sum()), "n_controls": int((~self.is_case).sum()),
                "n_controls_upsampled": int(self.upsampled.sum()), "controls_by_stage_offset": offsets,
                "n_strata": int(len(self.strata)), "n_strata_dropped": int((self.strata["status"] == "dropped").sum()),
                "cases_lost": dict(self.dropped)}


def _stage_codes(values: pd.Series, stage_order: tuple[str, ...], stage_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(int64 codes into ``stage_order`` with −1 for unknown, bool unknown mask)."""
    unknown = is_unknown(values)
    lookup = {s.lower(): i for i, s in enumerate(stage_order)}
    lowered = values.astype(str).str.strip().str.lower()
    codes = lowered.map(lookup)
    bad = sorted(set(values[codes.isna().to_numpy() & ~unknown].astype(str)))
    if bad:
        raise ValueError(f"{stage_key} values {bad} are not in the stage order {list(stage_order)} "
                         "(pass stage_order= to match on another ordered key)")
    return codes.fillna(-1).to_numpy(np.int64), unknown


def _take_prefix(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each (s, c), vectorised."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + offsets


def _check_arguments(meta: pd.DataFrame, balance_field: str, match_keys: list[str], stage_key: str | None,
                     tolerance: int, controls_per_case: int) -> None:
    """Raise ``KeyError`` for a missing column, ``ValueError`` for a bad tolerance / controls_per_case."""
    needed = [balance_field, *match_keys] + ([stage_key] if stage_key else [])
    missing = [c for c in needed if c not in meta.columns]
    if missing:
        raise KeyError(f"Matching needs column(s) {missing}; available: {sorted(meta.columns)}")
    if not _whole(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative integer number of stages; got {tolerance!r}")
    if not _whole(controls_per_case) or not 1 <= controls_per_case <= 2**31 - 1:
        raise ValueError(f"controls_per_case must be an integer >= 1 (at most 2**31 - 1); got {controls_per_case!r}")


def _whole(value) -> bool:
    """A whole, finite number that is not a bool."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            and bool(np.isfinite(value)) and int(value) == value)


def _case_control_masks(meta: pd.DataFrame, balance_field: str, control_value: str) -> tuple[np.ndarray, np.ndarray]:
    """(is_control, is_case) bool [n]; rows with an unknown ``balance_field`` are neither.
    Raises ``ValueError`` when either side is empty (the message lists the values present)."""
    balance = meta[balance_field]
    unknown_balance = is_unknown(balance)
    is_control = (balance.astype(str).str.lower() == str(control_value).lower()).to_numpy() & ~unknown_balance
    is_case = ~is_control & ~unknown_balance
    if not is_control.any() or not is_case.any():
        side = "control" if not is_control.any() else "case"
        raise ValueError(f"No {side} rows for matching on {balance_field!r} with control value {control_value!r}; "
                         f"values present: {sorted(map(str, pd.unique(balance)))}")
    return is_control, is_case


def _usable_rows(meta: pd.DataFrame, is_case: np.ndarray, match_keys: list[str], stage_key: str | None,
                 stage_order: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(usable bool [n]: every key known, stage int64 [n] code into ``stage_order`` (0 without a stage
    key), dropped: cases lost to an unknown key, by reason — counted in key order, stage key last)."""
    n = len(meta)
    dropped: dict[str, int] = {}
    usable = np.ones(n, dtype=bool)
    unknown = [(key, is_unknown(meta[key])) for key in match_keys]  # unknown exact keys cannot be matched
    stage = np.zeros(n, dtype=np.int64)
    if stage_key:
        stage, unk = _stage_codes(meta[stage_key], tuple(stage_order), stage_key)
        unknown.append((stage_key, unk))
    for key, unk in unknown:
        lost = int((is_case & usable & unk).sum())
        if lost:
            dropped[f"unknown {key}"] = lost
        usable &= ~unk
    return usable, stage, dropped


def _cell_codes(meta: pd.DataFrame, match_keys: list[str], stage: np.ndarray, n_stages: int) -> np.ndarray:
    """int64 [n]: one code per (exact keys, stage) combination — the stratum of a case, the pool of a
    control; codes sort by the keys, then the stage."""
    if match_keys:
        key_frame = meta[match_keys].astype(str)
        key_code = key_frame.groupby(match_keys, sort=True).ngroup().to_numpy(np.int64)
    else:
        key_code = np.zeros(len(meta), dtype=np.int64)
    return key_code * n_stages + stage


@dataclass
class _Pools:
    """Usable controls grouped by cell code: ``ctrl`` holds them sorted by (code, priority), so pool
    ``p`` (code ``codes[p]``) is the block ``ctrl[start[p]: start[p] + size[p]]``, of which the first
    ``used[p]`` are taken."""

    ctrl: np.ndarray
    codes: np.ndarray
    start: np.ndarray
    size: np.ndarray
    used: np.ndarray

    @classmethod
    def of(cls, ctrl: np.ndarray, cell: np.ndarray, priority: np.ndarray) -> _Pools:
        ctrl = ctrl[np.lexsort((priority[ctrl], cell[ctrl]))]
        codes, start, size = np.unique(cell[ctrl], return_index=True, return_counts=True)
        return cls(ctrl, codes, start, size, np.zeros(len(codes), dtype=np.int64))

    def lookup(self, codes: np.ndarray) -> np.ndarray:
        """Pool index of each cell code, −1 where no control has it."""
        if len(self.codes) == 0:
            return np.full(len(codes), -1, dtype=np.int64)
        pos = np.searchsorted(self.codes, codes)
        ok = (pos < len(self.codes)) & (self.codes[np.minimum(pos, len(self.codes) - 1)] == codes)
        return np.where(ok, pos, -1)

    def block(self, p: int) -> np.ndarray:
        """All rows of pool ``p``."""
        return self.ctrl[self.start[p]: self.start[p] + self.size[p]]


@dataclass
class _Draws:
    """Controls drawn so far: per draw, rows / stratum / stage offset; per stratum, ``taken`` in all and
    ``by_offset`` [strata, τ + 1] per stage offset."""

    taken: np.ndarray
    by_offset: np.ndarray
    rows: list[np.ndarray] = field(default_factory=list)
    stratum: list[np.ndarray] = field(default_factory=list)
    offset: list[np.ndarray] = field(default_factory=list)

    def add(self, rows: np.ndarray, stratum: np.ndarray, offset: int) -> None:
        self.rows.append(rows)
        self.stratum.append(stratum)
        self.offset.append(np.full(len(rows), offset, dtype=np.int64))

    def concatenated(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, stratum, stage offset) of every drawn control, in draw order."""
        return np.concatenate(self.rows), np.concatenate(self.stratum), np.concatenate(self.offset)


def _draw_same_stage(pools: _Pools, strata_codes: np.ndarray, need: np.ndarray, tolerance: int) -> _Draws:
    """Layer 0: every stratum takes up to ``need`` controls from its own pool (a pool serves exactly one
    stratum, so this is vectorised)."""
    n_strata = len(strata_codes)
    p0 = pools.lookup(strata_codes)
    has = p0 >= 0
    take0 = np.zeros(n_strata, dtype=np.int64)
    take0[has] = np.minimum(need[has], pools.size[p0[has]])
    draws = _Draws(taken=take0.copy(), by_offset=np.zeros((n_strata, tolerance + 1), dtype=np.int64))
    draws.by_offset[:, 0] = take0
    draws.add(pools.ctrl[_take_prefix(pools.start[p0[has]], take0[has])], np.repeat(np.flatnonzero(has), take0[has]), 0)
    pools.used[p0[has]] += take0[has]
    return draws


def _draw_nearby_stages(draws: _Draws, pools: _Pools, strata_codes: np.ndarray, need: np.ndarray, n_stages: int,
                        tolerance: int, priority: np.ndarray) -> None:
    """Layers d = 1 … τ: strata still short compete, in sorted order, for unused controls at stage ± d
    (the lowest-priority ones first); updates ``draws`` and ``pools.used``."""
    stratum_key, stratum_stage = strata_codes // n_stages, strata_codes % n_stages
    for d in range(1, tolerance + 1):
        for s in np.flatnonzero(draws.taken < need):
            pools_s = [p for st in (stratum_stage[s] - d, stratum_stage[s] + d) if 0 <= st < n_stages
                       for p in pools.lookup(np.array([stratum_key[s] * n_stages + st])) if p >= 0]
            if not pools_s:
                continue
            cand = np.concatenate([pools.block(p)[pools.used[p]:] for p in pools_s])
            if len(cand) == 0:
                continue
            k = int(min(need[s] - draws.taken[s], len(cand)))
            chosen = cand[np.argsort(priority[cand], kind="stable")[:k]]
            for p in pools_s:  # chosen rows are a priority prefix of each pool's unused block
                pools.used[p] += int(np.isin(chosen, pools.block(p)).sum())
            draws.add(chosen, np.full(k, s), d)
            draws.taken[s] += k
            draws.by_offset[s, d] += k


@dataclass
class _Shortfall:
    """How the strata that found too few controls were settled: per stratum ``kept_cases``,
    ``n_upsampled``, ``status`` (matched / upsampled / trimmed / dropped) and ``reason``; per drawn
    control ``keep`` (False for a trimmed stratum's surplus); the up-sampled extra draws."""

    kept_cases: np.ndarray
    n_upsampled: np.ndarray
    status: np.ndarray
    reason: np.ndarray
    keep: np.ndarray
    extra_rows: list[np.ndarray] = field(default_factory=list)
    extra_stratum: list[np.ndarray] = field(default_factory=list)
    extra_offset: list[np.ndarray] = field(default_factory=list)


def _settle_short_strata(ctrl_rows: np.ndarray, ctrl_stratum: np.ndarray, ctrl_offset: np.ndarray, taken: np.ndarray,
                         n_cases: np.ndarray, need: np.ndarray, *, controls_per_case: int, upsample: bool,
                         priority: np.ndarray, rng: np.random.Generator, window: str) -> _Shortfall:
    """A stratum short of controls up-samples its drawn controls with replacement (``upsample``), or
    keeps only the cases its controls support; one with no control at all is dropped."""
    n_strata = len(n_cases)
    out = _Shortfall(kept_cases=n_cases.copy(), n_upsampled=np.zeros(n_strata, dtype=np.int64),
                     status=np.array(["matched"] * n_strata, dtype=object),
                     reason=np.array([""] * n_strata, dtype=object), keep=np.ones(len(ctrl_rows), dtype=bool))
    order = np.argsort(ctrl_stratum, kind="stable")
    bounds = np.searchsorted(ctrl_stratum[order], np.arange(n_strata + 1))
    for s in np.flatnonzero(taken < need):
        members = order[bounds[s]: bounds[s + 1]]
        if taken[s] == 0:
            out.kept_cases[s], out.status[s] = 0, "dropped"
            out.reason[s] = f"no control {window}"
        elif upsample:
            draw = rng.choice(members, size=int(need[s] - taken[s]), replace=True)
            out.extra_rows.append(ctrl_rows[draw])
            out.extra_stratum.append(np.full(len(draw), s))
            out.extra_offset.append(ctrl_offset[draw])
            out.n_upsampled[s] = len(draw)
            out.status[s] = "upsampled"
            out.reason[s] = f"{taken[s]} of {need[s]} controls found {window}"
        else:
            out.kept_cases[s] = taken[s] // controls_per_case
            by_priority = members[np.argsort(priority[ctrl_rows[members]], kind="stable")]
            out.keep[by_priority[out.kept_cases[s] * controls_per_case:]] = False
            out.status[s] = "trimmed" if out.kept_cases[s] else "dropped"
            out.reason[s] = f"{taken[s]} of {need[s]} controls found {window}; upsample=False"
    return out


def _count_lost_cases(short: _Shortfall, n_cases: np.ndarray, taken: np.ndarray, window: str,
                      dropped: dict[str, int]) -> None:
    """Add the cases lost by short strata to ``dropped``, by reason."""
    lost_short = int((n_cases - short.kept_cases)[short.status != "matched"].sum())
    for s in np.flatnonzero(short.status != "matched"):
        if n_cases[s] - short.kept_cases[s]:
            why = "no control " + window if short.status[s] == "dropped" and taken[s] == 0 else \
                f"too few controls {window} (upsample=False)"
            dropped[why] = dropped.get(why, 0) + int(n_cases[s] - short.kept_cases[s])
    assert lost_short == sum(v for k, v in dropped.items() if not k.startswith("unknown"))


def _final_controls(ctrl_rows: np.ndarray, ctrl_stratum: np.ndarray, ctrl_offset: np.ndarray,
                    short: _Shortfall) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, stratum, stage offset, upsampled) of the kept controls, then the up-sampled extra draws."""
    rows, stratum, offset = ctrl_rows[short.keep], ctrl_stratum[short.keep], ctrl_offset[short.keep]
    if not short.extra_rows:
        return rows, stratum, offset, np.zeros(len(rows), dtype=bool)
    upsampled = np.concatenate([np.zeros(len(rows), dtype=bool),
                                np.ones(sum(len(e) for e in short.extra_rows), dtype=bool)])
    return (np.concatenate([rows, *short.extra_rows]), np.concatenate([stratum, *short.extra_stratum]),
            np.concatenate([offset, *short.extra_offset]), upsampled)


def _kept_cases(case_rows: np.ndarray, case_stratum: np.ndarray, priority: np.ndarray,
                kept_cases: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, stratum) of the kept cases — all of a matched / up-sampled stratum, the lowest-priority
    ones of a trimmed stratum — ordered by stratum, and the first case row of each stratum."""
    case_order = np.lexsort((priority[case_rows], case_stratum))
    rank = np.empty(len(case_rows), dtype=np.int64)
    sorted_strata = case_stratum[case_order]
    rank[case_order] = np.arange(len(case_rows)) - np.searchsorted(sorted_strata, sorted_strata)
    keep_case = rank < kept_cases[case_stratum]
    first = case_rows[case_order][np.searchsorted(sorted_strata, np.arange(len(kept_cases)))]
    return case_rows[case_order][keep_case[case_order]], case_stratum[case_order][keep_case[case_order]], first


def _strata_table(meta: pd.DataFrame, first: np.ndarray, match_keys: list[str], stage_names: np.ndarray | None,
                  n_cases: np.ndarray, by_offset: np.ndarray, short: _Shortfall) -> pd.DataFrame:
    """One row per case stratum (see :attr:`MatchResult.strata`); ``stage_names`` None without a stage key."""
    strata = pd.DataFrame({k: meta[k].to_numpy()[first] for k in match_keys})
    if stage_names is not None:
        strata["stage"] = stage_names
    strata["n_cases"] = n_cases
    strata["n_cases_kept"] = short.kept_cases
    for d in range(by_offset.shape[1]):
        strata[f"n_controls_offset_{d}"] = by_offset[:, d]
    strata["n_upsampled"] = short.n_upsampled
    strata["status"] = short.status
    strata["reason"] = short.reason
    return strata


def match_case_control(meta: pd.DataFrame, *, balance_field: str, control_value: str,
                       match_keys: tuple[str, ...] | list[str] = (), stage_key: str | None = None,
                       stage_order: tuple[str, ...] = AGE_STAGES, tolerance: int = 1, controls_per_case: int = 1,
                       upsample: bool = True, seed: int = 0) -> MatchResult:
    """Match every case stratum to controls (see the module docstring for the algorithm).

    Parameters
    ----------
    meta
        Metadata table, one row per meta-cell (only the named columns are read).
    balance_field, control_value
        Column that separates cases from controls, and its control value (case-insensitive),
        e.g. ``("disease", "normal")``, ``("condition", "control")``, ``("sex", "male")``.
    match_keys
        Columns matched exactly (e.g. ``["cell_type", "sex"]``).
    stage_key, stage_order, tolerance
        Ordered key (default ``development_stage_category`` order :data:`AGE_STAGES`) matched within
        ±``tolerance`` steps; ``None`` disables it.
    controls_per_case
        Controls drawn per case (integer ≥ 1).
    upsample
        Fill a short stratum by drawing its controls again with replacement; otherwise keep only
        ``found // controls_per_case`` of its cases.

    Raises
    ------
    KeyError
        A named column is missing (the message lists the columns).
    ValueError
        No control or no case rows (the message lists the values of ``balance_field``), a stage
        value outside ``stage_order``, or a bad ``tolerance`` / ``controls_per_case``.
    """
    match_keys = list(match_keys)
    _check_arguments(meta, balance_field, match_keys, stage_key, tolerance, controls_per_case)
    # no stage is farther than len(stage_order) - 1 steps: a larger tolerance is that (and a huge one would
    # otherwise loop over empty layers for ever)
    tolerance = min(int(tolerance), max(len(stage_order) - 1, 0)) if stage_key else 0
    is_control, is_case = _case_control_masks(meta, balance_field, control_value)
    rng = np.random.default_rng(seed)
    priority = rng.random(len(meta))
    usable, stage, dropped = _usable_rows(meta, is_case, match_keys, stage_key, stage_order)
    n_stages = len(stage_order) if stage_key else 1
    cell = _cell_codes(meta, match_keys, stage, n_stages)

    # case strata (sorted by key, then stage) and what each needs
    case_rows = np.flatnonzero(is_case & usable)
    strata_codes, case_stratum = np.unique(cell[case_rows], return_inverse=True)
    n_cases = np.bincount(case_stratum, minlength=len(strata_codes))
    need = n_cases * controls_per_case

    # controls: same stage first, then stage ± 1 … τ; then settle the strata still short
    pools = _Pools.of(np.flatnonzero(is_control & usable), cell, priority)
    draws = _draw_same_stage(pools, strata_codes, need, tolerance)
    _draw_nearby_stages(draws, pools, strata_codes, need, n_stages, tolerance, priority)
    ctrl_rows, ctrl_stratum, ctrl_offset = draws.concatenated()
    window = f"within ±{tolerance} stages" if stage_key else "with the same keys"
    short = _settle_short_strata(ctrl_rows, ctrl_stratum, ctrl_offset, draws.taken, n_cases, need,
                                 controls_per_case=controls_per_case, upsample=upsample, priority=priority, rng=rng,
                                 window=window)
    _count_lost_cases(short, n_cases, draws.taken, window, dropped)
    ctrl_rows, ctrl_stratum, ctrl_offset, ctrl_up = _final_controls(ctrl_rows, ctrl_stratum, ctrl_offset, short)
    cases_out, cases_stratum, first = _kept_cases(case_rows, case_stratum, priority, short.kept_cases)

    stage_names = None
    if stage_key:
        stage_names = np.asarray(stage_order, dtype=object)[strata_codes % n_stages] if len(strata_codes) else []
    strata = _strata_table(meta, first, match_keys, stage_names, n_cases, draws.by_offset, short)
    rows = np.concatenate([cases_out, ctrl_rows]).astype(np.int64)
    return MatchResult(
        rows=rows,
        is_case=np.concatenate([np.ones(len(cases_out), bool), np.zeros(len(ctrl_rows), bool)]),
        stratum=np.concatenate([cases_stratum, ctrl_stratum]).astype(np.int64),
        stage_offset=np.concatenate([np.zeros(len(cases_out), np.int64), ctrl_offset]).astype(np.int64),
        upsampled=np.concatenate([np.zeros(len(cases_out), bool), ctrl_up]),
        strata=strata, n_cases_in=int(is_case.sum()), dropped=dropped)
