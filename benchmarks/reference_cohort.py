"""A straightforward pandas implementation of the cohort algorithms (query, stratified case/control
matching, donor split) — the baseline of ``benchmarks/bench_cohort.py`` and an independent check of
``dataset_script.cohorts.matching`` / ``dataset_script.cohorts.splits`` in the tests.

It follows the same rules and consumes the random generator in the same order, so on the same
table and seed it must select exactly the same rows; it is written the obvious way (boolean masks
on DataFrames, one stratum and one donor at a time), not for speed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

UNKNOWN = {"", "unknown", "unannotated", "unannoted", "na", "n/a", "nan", "none"}


def _unknown(series: pd.Series) -> pd.Series:
    return series.isna() | series.astype(str).str.strip().str.lower().isin(UNKNOWN)


def query_reference(meta: pd.DataFrame, conditions: dict) -> np.ndarray:
    """Row positions matching the conditions (scalar = equality, list = membership, strings
    case-insensitive)."""
    mask = pd.Series(True, index=meta.index)
    for name, wanted in conditions.items():
        wanted = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
        col = meta[name]
        if col.dtype == object or pd.api.types.is_string_dtype(col):
            mask &= col.astype(str).str.lower().isin([str(w).lower() for w in wanted])
        else:
            mask &= col.isin(wanted)
    return np.flatnonzero(mask.to_numpy())


def _reference_usable(df: pd.DataFrame, case_mask: pd.Series, match_keys, stage_key, stage_order):
    """(usable rows, cases lost to an unknown key by reason); sets ``df["_stage"]`` and makes the keys str."""
    dropped = {}
    usable = pd.Series(True, index=df.index)
    for key in match_keys:
        unk = _unknown(df[key])
        if (case_mask & usable & unk).sum():
            dropped[f"unknown {key}"] = int((case_mask & usable & unk).sum())
        usable &= ~unk
    if stage_key:
        unk = _unknown(df[stage_key])
        if (case_mask & usable & unk).sum():
            dropped[f"unknown {stage_key}"] = int((case_mask & usable & unk).sum())
        usable &= ~unk
        order = {s.lower(): i for i, s in enumerate(stage_order)}
        df["_stage"] = df[stage_key].astype(str).str.lower().map(order).fillna(-1).astype(int)
    else:
        df["_stage"] = 0
    for key in match_keys:
        df[key] = df[key].astype(str)
    return usable, dropped


def _reference_draw(df: pd.DataFrame, strata: list, ctrl_groups: dict, need: dict, tolerance: int):
    """Offset by offset, stratum by stratum: the lowest-priority unused controls at stage ± d.
    Returns ({stratum: control rows}, {stratum: their offsets})."""
    used = np.zeros(len(df), dtype=bool)
    taken: dict = {s: [] for s in strata}
    offsets: dict = {s: [] for s in strata}
    for d in range(0, tolerance + 1):
        for s in strata:
            rest = need[s] - len(taken[s])
            if rest <= 0:
                continue
            stages = {s[-1] - d, s[-1] + d}
            parts = [ctrl_groups[s[:-1] + (st,)] for st in sorted(stages) if s[:-1] + (st,) in ctrl_groups]
            if not parts:
                continue
            cand = pd.concat(parts)
            cand = cand[~used[cand["_pos"].to_numpy()]].sort_values("_priority", kind="stable")
            chosen = cand["_pos"].to_numpy()[:rest]
            taken[s] += list(chosen)
            offsets[s] += [d] * len(chosen)
            used[chosen] = True
    return taken, offsets


def match_reference(meta: pd.DataFrame, *, balance_field: str, control_value: str, match_keys=(),
                    stage_key=None, stage_order=(), tolerance=1, controls_per_case=1, upsample=True, seed=0):
    """Returns (case rows, control rows, control stage offsets, control upsampled flags, dropped)."""
    rng = np.random.default_rng(seed)
    df = meta.reset_index(drop=True).copy()
    df["_priority"] = rng.random(len(df))
    df["_pos"] = np.arange(len(df))
    unknown_bal = _unknown(df[balance_field])
    ctrl_mask = (df[balance_field].astype(str).str.lower() == str(control_value).lower()) & ~unknown_bal
    case_mask = ~ctrl_mask & ~unknown_bal
    usable, dropped = _reference_usable(df, case_mask, match_keys, stage_key, stage_order)
    tolerance = tolerance if stage_key else 0
    window = f"within ±{tolerance} stages" if stage_key else "with the same keys"
    group_cols = list(match_keys) + ["_stage"]
    cases, controls = df[case_mask & usable], df[ctrl_mask & usable]
    case_groups = {k if isinstance(k, tuple) else (k,): g for k, g in cases.groupby(group_cols, sort=True)}
    ctrl_groups = {k if isinstance(k, tuple) else (k,): g for k, g in controls.groupby(group_cols, sort=True)}
    strata = list(case_groups)  # sorted by the keys, then the stage
    need = {s: len(case_groups[s]) * controls_per_case for s in strata}
    taken, offsets = _reference_draw(df, strata, ctrl_groups, need, tolerance)
    case_rows, ctrl_rows, ctrl_off, ctrl_up = [], [], [], []
    for s in strata:
        members = case_groups[s].sort_values("_priority", kind="stable")
        n_case = len(members)
        got = list(taken[s])
        off = list(offsets[s])
        up = [False] * len(got)
        kept = n_case
        if len(got) < need[s]:
            if not got:
                kept = 0
                dropped["no control " + window] = dropped.get("no control " + window, 0) + n_case
            elif upsample:
                draw = rng.choice(np.arange(len(got)), size=need[s] - len(got), replace=True)
                got += [got[i] for i in draw]
                off += [off[i] for i in draw]
                up += [True] * len(draw)
            else:
                kept = len(got) // controls_per_case
                by_priority = sorted(range(len(got)), key=lambda i: df["_priority"].iat[got[i]])
                keep = sorted(by_priority[: kept * controls_per_case])
                got, off, up = [got[i] for i in keep], [off[i] for i in keep], [up[i] for i in keep]
                reason = f"too few controls {window} (upsample=False)"
                if n_case - kept:
                    dropped[reason] = dropped.get(reason, 0) + n_case - kept
        case_rows += members["_pos"].tolist()[:kept]
        if kept:
            ctrl_rows += got
            ctrl_off += off
            ctrl_up += up
    return (np.array(case_rows, dtype=np.int64), np.array(ctrl_rows, dtype=np.int64),
            np.array(ctrl_off, dtype=np.int64), np.array(ctrl_up, dtype=bool), dropped)


def split_reference(donors: np.ndarray, labels: np.ndarray, *, val_fraction=0.15, test_fraction=0.2, seed=0,
                    n_trials=8):
    """Donor split by the same greedy rule, one donor at a time over a pandas crosstab.
    Returns {split name: sorted donor keys}."""
    rng = np.random.default_rng(seed)
    table = pd.crosstab(pd.Series(np.asarray(donors).astype(str), name="donor"),
                        pd.Series(np.asarray(labels).astype(str), name="label"))
    fractions = {"train": 1 - val_fraction - test_fraction, "validation": val_fraction, "test": test_fraction}
    names = list(fractions)
    totals = table.sum(0)
    best, best_score = None, None
    for _ in range(n_trials):
        order = rng.permutation(len(table))
        filled = {s: pd.Series(0.0, index=table.columns) for s in names}
        assign = {}
        for i in order:
            donor = table.index[i]
            v = table.iloc[i]
            costs = []
            for s in names:
                if fractions[s] <= 0:
                    costs.append(np.inf)
                    continue
                target = fractions[s] * totals
                before = ((filled[s] - target) ** 2 / totals.clip(lower=1))[v > 0].sum()
                after = ((filled[s] + v - target) ** 2 / totals.clip(lower=1))[v > 0].sum()
                costs.append(round(float(after - before), 9))
            s = names[int(np.argmin(costs))]
            filled[s] = filled[s] + v
            assign[donor] = s
        # every split needs a donor (donor-count tie → first split in order)
        for s in names:
            if fractions[s] > 0 and s not in assign.values():
                per = pd.Series(list(assign.values())).value_counts().reindex(names, fill_value=0)
                src = per.idxmax()
                cands = [d for d, a in assign.items() if a == src]
                assign[min(cands, key=lambda d: (table.loc[d].sum(), list(table.index).index(d)))] = s
        active = [s for s in names if fractions[s] > 0]
        carriers = (table > 0).sum(0)

        def missing_cells():
            out = []
            for s in active:
                present = table.loc[[d for d, a in assign.items() if a == s]].sum(0) > 0
                out += [(s, c) for c in table.columns if not present[c] and carriers[c] >= len(active)]
            return out

        for _move in range(50):  # move a carrier of a missing class (smallest donor first)
            gaps = missing_cells()
            if not gaps:
                break
            s, c = gaps[0]
            options = [d for d in table.index if table.loc[d, c] > 0
                       and sum(1 for e, a in assign.items() if a == assign[d] and table.loc[e, c] > 0) > 1
                       and sum(1 for a in assign.values() if a == assign[d]) > 1]
            if not options:
                break
            assign[min(options, key=lambda d: table.loc[d].sum())] = s
        missing = len(missing_cells())
        sizes = pd.Series({s: table.loc[[d for d, a in assign.items() if a == s]].to_numpy().sum() for s in names})
        score = (missing, float(sum(abs(sizes[s] - fractions[s] * totals.sum()) for s in names)))
        if best_score is None or score < best_score:
            best, best_score = dict(assign), score
    return {s: sorted(d for d, a in best.items() if a == s) for s in names}
