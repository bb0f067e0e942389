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

from .query import is_unknown
from .schema import DEVELOPMENT_STAGE_CATEGORIES

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
    needed = [balance_field, *match_keys] + ([stage_key] if stage_key else [])
    missing = [c for c in needed if c not in meta.columns]
    if missing:
        raise KeyError(f"Matching needs column(s) {missing}; available: {sorted(meta.columns)}")
    if tolerance < 0 or int(tolerance) != tolerance:
        raise ValueError(f"tolerance must be a non-negative integer number of stages; got {tolerance}")
    if controls_per_case < 1 or int(controls_per_case) != controls_per_case:
        raise ValueError(f"controls_per_case must be an integer >= 1; got {controls_per_case}")
    tolerance = int(tolerance) if stage_key else 0
    n = len(meta)
    balance = meta[balance_field]
    unknown_balance = is_unknown(balance)
    is_control = (balance.astype(str).str.lower() == str(control_value).lower()).to_numpy() & ~unknown_balance
    is_case = ~is_control & ~unknown_balance
    if not is_control.any() or not is_case.any():
        side = "control" if not is_control.any() else "case"
        raise ValueError(f"No {side} rows for matching on {balance_field!r} with control value {control_value!r}; "
                         f"values present: {sorted(map(str, pd.unique(balance)))}")

    rng = np.random.default_rng(seed)
    priority = rng.random(n)
    dropped: dict[str, int] = {}
    usable = np.ones(n, dtype=bool)
    for key in match_keys:  # unknown exact keys cannot be matched
        unk = is_unknown(meta[key])
        lost = int((is_case & usable & unk).sum())
        if lost:
            dropped[f"unknown {key}"] = lost
        usable &= ~unk
    n_stages = len(stage_order) if stage_key else 1
    if stage_key:
        stage, unk = _stage_codes(meta[stage_key], tuple(stage_order), stage_key)
        lost = int((is_case & usable & unk).sum())
        if lost:
            dropped[f"unknown {stage_key}"] = lost
        usable &= ~unk
    else:
        stage = np.zeros(n, dtype=np.int64)
    if match_keys:
        key_frame = meta[match_keys].astype(str)
        key_code = key_frame.groupby(match_keys, sort=True).ngroup().to_numpy(np.int64)
    else:
        key_code = np.zeros(n, dtype=np.int64)
    cell = key_code * n_stages + stage  # stratum / pool code

    # --- case strata (sorted by key, then stage)
    case_rows = np.flatnonzero(is_case & usable)
    strata_codes, case_stratum = np.unique(cell[case_rows], return_inverse=True)
    n_strata = len(strata_codes)
    n_cases = np.bincount(case_stratum, minlength=n_strata)
    need = n_cases * controls_per_case

    # --- control pools: controls sorted by (pool code, priority); a pool is a contiguous block
    ctrl = np.flatnonzero(is_control & usable)
    ctrl = ctrl[np.lexsort((priority[ctrl], cell[ctrl]))]
    pool_codes, pool_start, pool_size = np.unique(cell[ctrl], return_index=True, return_counts=True)
    used = np.zeros(len(pool_codes), dtype=np.int64)

    def pool_of(codes: np.ndarray) -> np.ndarray:
        if len(pool_codes) == 0:
            return np.full(len(codes), -1, dtype=np.int64)
        pos = np.searchsorted(pool_codes, codes)
        ok = (pos < len(pool_codes)) & (pool_codes[np.minimum(pos, len(pool_codes) - 1)] == codes)
        return np.where(ok, pos, -1)

    picked_rows, picked_stratum, picked_offset = [], [], []
    taken = np.zeros(n_strata, dtype=np.int64)
    by_offset = np.zeros((n_strata, tolerance + 1), dtype=np.int64)

    # layer 0: each pool serves exactly one stratum → vectorised
    p0 = pool_of(strata_codes)
    has = p0 >= 0
    take0 = np.zeros(n_strata, dtype=np.int64)
    take0[has] = np.minimum(need[has], pool_size[p0[has]])
    rows0 = ctrl[_take_prefix(pool_start[p0[has]], take0[has])]
    picked_rows.append(rows0)
    picked_stratum.append(np.repeat(np.flatnonzero(has), take0[has]))
    picked_offset.append(np.zeros(len(rows0), dtype=np.int64))
    used[p0[has]] += take0[has]
    taken += take0
    by_offset[:, 0] = take0

    # layers d = 1 … τ: strata still short compete, in sorted order, for unused controls at stage ± d
    stratum_key, stratum_stage = strata_codes // n_stages, strata_codes % n_stages
    for d in range(1, tolerance + 1):
        for s in np.flatnonzero(taken < need):
            pools = [p for st in (stratum_stage[s] - d, stratum_stage[s] + d) if 0 <= st < n_stages
                     for p in pool_of(np.array([stratum_key[s] * n_stages + st])) if p >= 0]
            if not pools:
                continue
            cand = np.concatenate([ctrl[pool_start[p] + used[p]: pool_start[p] + pool_size[p]] for p in pools])
            if len(cand) == 0:
                continue
            k = int(min(need[s] - taken[s], len(cand)))
            chosen = cand[np.argsort(priority[cand], kind="stable")[:k]]
            for p in pools:  # chosen rows are a priority prefix of each pool's unused block
                lo, hi = pool_start[p], pool_start[p] + pool_size[p]
                used[p] += int(np.isin(chosen, ctrl[lo:hi]).sum())
            picked_rows.append(chosen)
            picked_stratum.append(np.full(k, s))
            picked_offset.append(np.full(k, d))
            taken[s] += k
            by_offset[s, d] += k

    ctrl_rows = np.concatenate(picked_rows)
    ctrl_stratum = np.concatenate(picked_stratum)
    ctrl_offset = np.concatenate(picked_offset)
    ctrl_up = np.zeros(len(ctrl_rows), dtype=bool)

    # --- short strata: up-sample, trim the cases, or drop
    kept_cases = n_cases.copy()
    n_up = np.zeros(n_strata, dtype=np.int64)
    status = np.array(["matched"] * n_strata, dtype=object)
    reason = np.array([""] * n_strata, dtype=object)
    window = f"within ±{tolerance} stages" if stage_key else "with the same keys"
    keep_ctrl = np.ones(len(ctrl_rows), dtype=bool)
    extra_rows, extra_stratum, extra_offset = [], [], []
    order = np.argsort(ctrl_stratum, kind="stable")
    bounds = np.searchsorted(ctrl_stratum[order], np.arange(n_strata + 1))
    for s in np.flatnonzero(taken < need):
        members = order[bounds[s]: bounds[s + 1]]
        if taken[s] == 0:
            kept_cases[s], status[s] = 0, "dropped"
            reason[s] = f"no control {window}"
        elif upsample:
            draw = rng.choice(members, size=int(need[s] - taken[s]), replace=True)
            extra_rows.append(ctrl_rows[draw])
            extra_stratum.append(np.full(len(draw), s))
            extra_offset.append(ctrl_offset[draw])
            n_up[s] = len(draw)
            status[s] = "upsampled"
            reason[s] = f"{taken[s]} of {need[s]} controls found {window}"
        else:
            kept_cases[s] = taken[s] // controls_per_case
            surplus = members[np.argsort(priority[ctrl_rows[members]], kind="stable")][kept_cases[s] * controls_per_case:]
            keep_ctrl[surplus] = False
            status[s] = "trimmed" if kept_cases[s] else "dropped"
            reason[s] = f"{taken[s]} of {need[s]} controls found {window}; upsample=False"
    lost_short = int((n_cases - kept_cases)[status != "matched"].sum())
    for s in np.flatnonzero(status != "matched"):
        if n_cases[s] - kept_cases[s]:
            why = "no control " + window if status[s] == "dropped" and taken[s] == 0 else \
                f"too few controls {window} (upsample=False)"
            dropped[why] = dropped.get(why, 0) + int(n_cases[s] - kept_cases[s])
    assert lost_short == sum(v for k, v in dropped.items() if not k.startswith("unknown"))

    ctrl_rows, ctrl_stratum, ctrl_offset = ctrl_rows[keep_ctrl], ctrl_stratum[keep_ctrl], ctrl_offset[keep_ctrl]
    if extra_rows:
        ctrl_rows = np.concatenate([ctrl_rows, *extra_rows])
        ctrl_stratum = np.concatenate([ctrl_stratum, *extra_stratum])
        ctrl_offset = np.concatenate([ctrl_offset, *extra_offset])
        ctrl_up = np.concatenate([np.zeros(keep_ctrl.sum(), dtype=bool),
                                  np.ones(sum(len(e) for e in extra_rows), dtype=bool)])
    else:
        ctrl_up = np.zeros(len(ctrl_rows), dtype=bool)

    # cases: all of a matched / up-sampled stratum, the lowest-priority ones of a trimmed stratum
    case_order = np.lexsort((priority[case_rows], case_stratum))
    rank = np.empty(len(case_rows), dtype=np.int64)
    sorted_strata = case_stratum[case_order]
    rank[case_order] = np.arange(len(case_rows)) - np.searchsorted(sorted_strata, sorted_strata)
    keep_case = rank < kept_cases[case_stratum]
    cases_out = case_rows[case_order][keep_case[case_order]]
    cases_stratum = case_stratum[case_order][keep_case[case_order]]

    first = case_rows[case_order][np.searchsorted(sorted_strata, np.arange(n_strata))]
    strata = pd.DataFrame({k: meta[k].to_numpy()[first] for k in match_keys})
    if stage_key:
        strata["stage"] = np.asarray(stage_order, dtype=object)[stratum_stage] if n_strata else []
    strata["n_cases"] = n_cases
    strata["n_cases_kept"] = kept_cases
    for d in range(tolerance + 1):
        strata[f"n_controls_offset_{d}"] = by_offset[:, d]
    strata["n_upsampled"] = n_up
    strata["status"] = status
    strata["reason"] = reason

    rows = np.concatenate([cases_out, ctrl_rows]).astype(np.int64)
    return MatchResult(
        rows=rows,
        is_case=np.concatenate([np.ones(len(cases_out), bool), np.zeros(len(ctrl_rows), bool)]),
        stratum=np.concatenate([cases_stratum, ctrl_stratum]).astype(np.int64),
        stage_offset=np.concatenate([np.zeros(len(cases_out), np.int64), ctrl_offset]).astype(np.int64),
        upsampled=np.concatenate([np.zeros(len(cases_out), bool), ctrl_up]),
        strata=strata, n_cases_in=int(is_case.sum()), dropped=dropped)
