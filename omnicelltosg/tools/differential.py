"""Per-gene case-vs-control evidence at the right level, for signaling inference (issue 19).

Two levels, chosen by what the data allow ([`differential_evidence`]):

- ``pseudobulk_deseq2``: meta-cell counts summed per donor × group ([`pseudobulk`]) and tested with
  DESeq2's negative-binomial GLM (PyDESeq2, Muzellec et al. 2023; Love et al. 2014), design
  ``~ donor + group`` when every donor has both groups (paired), else ``~ group``. Needs raw counts
  and at least :data:`MIN_DONORS_PER_GROUP` donors in each group. With a cell-type column, the
  samples are donor × cell type × group and the cell type is a fixed effect
  (``~ donor + cell_type + group``; muscat's pseudobulk-per-cluster design, Crowell et al. 2020): the
  group coefficient is the response shared across cell types, and the model has residual degrees of
  freedom that 2 donors × 2 groups alone would not give (1). Only cell types holding both groups
  enter it (:func:`covariate_levels`); fewer than :data:`MIN_COVARIATE_LEVELS` → no covariate.
- ``metacell_welch``: Welch's t-test (``scipy.stats.ttest_ind``, ``equal_var=False``) on the
  meta-cells' ``log1p`` CP10k expression, used where there are no counts (e.g. TPM-like input) or too
  few donors. Meta-cells of one donor are not independent, so its p-values are optimistic; the
  output names the level it used.

Every result has one row per gene with ``log2_fold_change`` (case / control), ``statistic`` (signed:
> 0 = higher in case; Wald z for DESeq2, Welch t otherwise), ``p_value``, ``fdr`` (Benjamini–Hochberg)
and ``level``.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

#: Fewest donors per group for a donor-level count model (DESeq2 needs replicates in each group).
MIN_DONORS_PER_GROUP = 2
EVIDENCE_COLUMNS = ["symbol", "base_mean", "log2_fold_change", "statistic", "p_value", "fdr", "level"]
LEVELS = ("pseudobulk_deseq2", "metacell_welch")
#: Fewest covariate levels (cell types) holding both groups for the covariate to enter the model.
MIN_COVARIATE_LEVELS = 2


def covariate_levels(samples: pd.DataFrame, covariate_column: str, group_column: str,
                     groups: Sequence[str]) -> list[str]:
    """Levels of ``covariate_column`` (e.g. cell types) that hold rows of every one of ``groups``, sorted.

    Raises:
        ValueError: ``covariate_column`` or ``group_column`` not in ``samples``.
    """
    for col in (covariate_column, group_column):
        if col not in samples.columns:
            raise ValueError(f"column {col!r} not in samples; columns: {list(samples.columns)}.")
    frame = samples[[covariate_column, group_column]].dropna().astype(str)
    frame = frame[frame[group_column].isin([str(g) for g in groups])]
    per_level = frame.groupby(covariate_column)[group_column].nunique()
    return sorted(per_level.index[per_level == len(set(groups))].tolist())


def pseudobulk(counts, samples: pd.DataFrame, keys: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Sum the counts of the rows that share the values of ``keys`` (e.g. donor × condition).

    Args:
        counts: ``[M, G]`` counts, dense array or scipy sparse matrix; rows are meta-cells (or cells).
        samples: ``M`` rows of metadata holding the ``keys`` columns (row order = ``counts`` rows).
        keys: columns that define one pseudobulk sample.

    Returns:
        ``sums``: float64 ``[S, G]``, row ``s`` = the sum of the counts of the rows of sample ``s``;
        ``meta``: ``S`` rows, the ``keys`` columns plus ``n_rows`` (rows summed), sorted by ``keys``.

    Raises:
        ValueError: ``samples`` without one row per count row, a missing key column, or missing values
            in a key column.
    """
    n_rows = counts.shape[0]
    if len(samples) != n_rows:
        raise ValueError(f"samples has {len(samples)} rows, counts has {n_rows}.")
    missing = [k for k in keys if k not in samples.columns]
    if missing:
        raise ValueError(f"key columns {missing} not in samples; columns: {list(samples.columns)}.")
    frame = samples[list(keys)].astype(str).reset_index(drop=True)
    if samples[list(keys)].isna().any().any():
        raise ValueError(f"missing values in the key columns {list(keys)}.")
    codes = frame.groupby(list(keys), sort=True).ngroup().to_numpy()
    meta = frame.drop_duplicates().sort_values(list(keys)).reset_index(drop=True)
    indicator = sp.csr_matrix((np.ones(n_rows), (codes, np.arange(n_rows))), shape=(len(meta), n_rows))
    sums = indicator @ (counts if sp.issparse(counts) else np.asarray(counts, dtype=np.float64))
    sums = np.asarray(sums.todense() if sp.issparse(sums) else sums, dtype=np.float64)
    meta["n_rows"] = np.bincount(codes, minlength=len(meta))
    return sums, meta


def _bh(p_value: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg over the finite p-values (NaN stays NaN)."""
    fdr = np.full(len(p_value), np.nan)
    finite = np.isfinite(p_value)
    if finite.any():
        fdr[finite] = stats.false_discovery_control(p_value[finite], method="bh")
    return fdr


def deseq2_evidence(sums: np.ndarray, meta: pd.DataFrame, symbols: Sequence[str], *, group_column: str,
                    case: str, control: str, donor_column: str | None,
                    covariate_column: str | None = None) -> pd.DataFrame:
    """DESeq2 (PyDESeq2, default settings, one CPU) on pseudobulk counts, case vs control.

    Args:
        sums: ``[S, G]`` pseudobulk counts (rounded to integers here); meta: ``S`` rows with
            ``group_column`` (and ``donor_column``, ``covariate_column``); symbols: ``G`` gene symbols.
        donor_column: the donor column, added to the design (``~ donor + group``) when every donor
            has both groups; None = ``~ group``.
        covariate_column: a categorical fixed effect added before ``group`` (e.g. the cell type of
            donor × cell type × group samples); None = none. Its levels must each hold both groups
            (see :func:`covariate_levels`), else the group effect is not estimable within levels.

    Returns: ``EVIDENCE_COLUMNS`` in gene order; ``statistic`` is the Wald z, ``log2_fold_change`` the
    MLE fold change, ``level`` ``pseudobulk_deseq2``. Genes with zero counts in every sample get NaN.
    ``attrs["design"]``: the fitted design in the metadata's column names (e.g. ``~ donor_id + condition``).

    Raises:
        ValueError: shapes that do not match, ``case`` / ``control`` absent from ``meta``, or a
            covariate level without both groups.
    """
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    if sums.shape != (len(meta), len(symbols)):
        raise ValueError(f"sums must be [S={len(meta)}, G={len(symbols)}], got {sums.shape}.")
    groups = meta[group_column].astype(str)
    for label in (case, control):
        if label not in set(groups):
            raise ValueError(f"{label!r} is not a value of {group_column!r} in the pseudobulk samples: {sorted(set(groups))}.")
    keep_rows = groups.isin([case, control]).to_numpy()
    # PyDESeq2's formula parser wants plain factor levels: code them as g0 (control) / g1 (case), d0, d1, ...
    design = pd.DataFrame({"group": np.where(groups[keep_rows] == case, "g1", "g0")},
                          index=[f"s{i}" for i in range(int(keep_rows.sum()))])
    formula = "~group"
    if donor_column is not None:
        donors = meta.loc[keep_rows, donor_column].astype(str).to_numpy()
        paired = all(len(set(design["group"][donors == d])) == 2 for d in set(donors))
        if paired and len(set(donors)) > 1:
            design["donor"] = [f"d{sorted(set(donors)).index(d)}" for d in donors]
            formula = "~donor + group"
    if covariate_column is not None:
        levels = meta.loc[keep_rows, covariate_column].astype(str).to_numpy()
        usable = covariate_levels(meta.loc[keep_rows], covariate_column, group_column, [case, control])
        if set(levels) - set(usable):
            raise ValueError(f"covariate levels {sorted(set(levels) - set(usable))} of {covariate_column!r} "
                             f"do not hold both {case!r} and {control!r}; keep only {usable}.")
        design["covariate"] = [f"c{usable.index(v)}" for v in levels]
        formula = formula.replace("group", "covariate + group")
    detected = sums[keep_rows].sum(0) > 0
    counts = pd.DataFrame(np.rint(sums[keep_rows][:, detected]).astype(np.int64), index=design.index,
                          columns=[f"gene{j}" for j in np.flatnonzero(detected)])
    inference = DefaultInference(n_cpus=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few-sample fits warn about dispersion trends; the result says its level
        dds = DeseqDataSet(counts=counts, metadata=design, design=formula, inference=inference, quiet=True)
        dds.deseq2()
        res = DeseqStats(dds, contrast=["group", "g1", "g0"], inference=inference, quiet=True)
        res.summary()
    table = res.results_df
    out = pd.DataFrame({"symbol": [str(s) for s in symbols]})
    for col, src in (("base_mean", "baseMean"), ("log2_fold_change", "log2FoldChange"), ("statistic", "stat"),
                     ("p_value", "pvalue")):
        out[col] = np.nan
        out.loc[detected, col] = table[src].to_numpy(dtype=np.float64)
    out["fdr"] = _bh(out["p_value"].to_numpy())  # BH over all tested genes (no independent filtering)
    out["level"] = LEVELS[0]
    out = out[EVIDENCE_COLUMNS]
    names = {"donor": donor_column, "covariate": covariate_column, "group": group_column}
    out.attrs["design"] = "~ " + " + ".join(names[t.strip()] for t in formula.lstrip("~").split("+"))
    return out


def welch_evidence(log_expression: np.ndarray, groups: np.ndarray, symbols: Sequence[str], *, case: str,
                   control: str) -> pd.DataFrame:
    """Welch's t-test per gene on meta-cell ``log1p`` expression, case vs control.

    Args:
        log_expression: float ``[M, G]`` ``log1p`` CP10k; groups: ``[M]`` labels; symbols: ``G`` symbols.

    Returns: ``EVIDENCE_COLUMNS``; ``log2_fold_change`` = difference of the group means of ``log1p``
    expression divided by ln 2 (the log2 ratio of geometric means of CP10k + 1); ``statistic`` = t;
    genes constant in both groups get NaN; ``level`` ``metacell_welch``.

    Raises:
        ValueError: shapes that do not match, or fewer than 2 rows in either group.
    """
    x = np.asarray(log_expression, dtype=np.float64)
    groups = np.asarray(groups).astype(str)
    if x.ndim != 2 or x.shape != (len(groups), len(symbols)):
        raise ValueError(f"log_expression must be [M={len(groups)}, G={len(symbols)}], got {x.shape}.")
    a, b = x[groups == case], x[groups == control]
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's test needs >= 2 rows per group; {case!r}: {len(a)}, {control!r}: {len(b)}.")
    with np.errstate(invalid="ignore", divide="ignore"):
        res = stats.ttest_ind(a, b, axis=0, equal_var=False)
    return pd.DataFrame({
        "symbol": [str(s) for s in symbols], "base_mean": np.expm1(x.mean(0)),
        "log2_fold_change": (a.mean(0) - b.mean(0)) / np.log(2), "statistic": res.statistic,
        "p_value": res.pvalue, "fdr": _bh(np.asarray(res.pvalue, dtype=np.float64)), "level": LEVELS[1],
    })[EVIDENCE_COLUMNS]


def _covariate_rows(samples: pd.DataFrame, covariate_column: str | None, group_column: str, case: str,
                    control: str) -> tuple[np.ndarray, list[str]]:
    """Rows that enter a covariate model, and its levels; ([], []) when the covariate cannot be used."""
    if covariate_column is None or covariate_column not in samples:
        return np.array([], dtype=np.int64), []
    levels = covariate_levels(samples, covariate_column, group_column, [case, control])
    if len(levels) < MIN_COVARIATE_LEVELS:
        return np.array([], dtype=np.int64), []
    return np.flatnonzero(samples[covariate_column].astype(str).isin(levels).to_numpy()), levels


def differential_evidence(*, counts, log_expression: np.ndarray, samples: pd.DataFrame, symbols: Sequence[str],
                          group_column: str, case: str, control: str, donor_column: str | None,
                          counts_available: bool, cell_type_column: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Case-vs-control evidence per gene at the best level the data allow (see the module docstring).

    Uses pseudobulk DESeq2 when ``counts_available`` and ``donor_column`` give at least
    :data:`MIN_DONORS_PER_GROUP` donors in each group; otherwise meta-cell Welch t-tests. With
    ``cell_type_column`` and at least :data:`MIN_COVARIATE_LEVELS` cell types holding both groups, the
    DESeq2 samples are donor × cell type × group with the cell type as a fixed effect; rows of cell
    types holding one group only are left out of that model (listed under ``"left_out"``).

    Args:
        counts: ``[M, G]`` raw counts (dense or sparse), or None; log_expression: ``[M, G]`` ``log1p``
            CP10k; samples: ``M`` rows of metadata (``group_column``, ``donor_column``,
            ``cell_type_column``); cell_type_column: None = no covariate.

    Returns: the evidence table and a description ``{"level", "reason", "samples", "design",
    "left_out"}`` (the pseudobulk samples and the covariate's left-out levels, for the report).
    """
    groups = samples[group_column].astype(str).to_numpy()
    donors_per_group = ({g: samples.loc[groups == g, donor_column].nunique() for g in (case, control)}
                        if donor_column is not None and donor_column in samples else {case: 0, control: 0})
    enough = min(donors_per_group.values()) >= MIN_DONORS_PER_GROUP
    if counts_available and counts is not None and enough:
        rows, levels = _covariate_rows(samples, cell_type_column, group_column, case, control)
        keys, covariate, left_out = [donor_column, group_column], None, []
        if len(levels):
            kept = samples.iloc[rows]
            if min(kept.loc[kept[group_column].astype(str) == g, donor_column].nunique()
                   for g in (case, control)) >= MIN_DONORS_PER_GROUP:
                keys, covariate = [donor_column, cell_type_column, group_column], cell_type_column
                left_out = sorted(set(samples[cell_type_column].astype(str)) - set(levels))
                counts, samples = counts[rows], kept
        sums, meta = pseudobulk(counts, samples, keys)
        table = deseq2_evidence(sums, meta, symbols, group_column=group_column, case=case, control=control,
                                donor_column=donor_column, covariate_column=covariate)
        reason = (f"raw counts and {donors_per_group} donors per group: pseudobulk per {' × '.join(keys)} "
                  f"({len(meta)} samples), PyDESeq2"
                  + (f" with {covariate} as a fixed effect ({len(levels)} levels)" if covariate else ""))
        return table, {"level": LEVELS[0], "reason": reason, "samples": meta.to_dict("records"),
                       "design": table.attrs["design"], "left_out": left_out}
    why = "no raw counts (non-count input)" if not counts_available else f"too few donors per group {donors_per_group}"
    table = welch_evidence(log_expression, groups, symbols, case=case, control=control)
    return table, {"level": LEVELS[1], "reason": f"{why}: meta-cell-level Welch t-test on log1p CP10k "
                                                 "(meta-cells of one donor are not independent: p-values optimistic)",
                   "samples": [], "design": None, "left_out": []}


__all__ = ["pseudobulk", "deseq2_evidence", "welch_evidence", "differential_evidence", "EVIDENCE_COLUMNS",
           "LEVELS", "MIN_DONORS_PER_GROUP", "MIN_COVARIATE_LEVELS", "covariate_levels"]
