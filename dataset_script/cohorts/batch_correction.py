"""ComBat-seq batch correction of meta-cell counts (inmoose ``pycombat_seq``; Zhang, Parmigiani &
Johnson 2020, NAR Genom. Bioinform. 2:lqaa078), per ``tissue_general``, batch = ``dataset_id``.

Rules (ARCHITECTURE.md §5):

- only rows whose values are counts (``values_are_counts``) are corrected; others are reported;
- within a tissue group, only genes measured by every dataset of the group (their gene panels) —
  an unmeasured gene is absent, not zero, and must not be "corrected" towards zero;
- the biological covariate (the label) is kept in the model when the design
  [batch one-hot | covariate one-hot] has full column rank; when the covariate is confounded with
  the batch the group is corrected without it, and the report says so;
- no leakage: each split is fitted on its own rows, and the label covariate is used for the
  training split only (validation and test labels stay unseen). A group with a single batch in a
  split is left as it is (nothing to correct) and reported.

``pycombat_seq`` keeps library-size differences (it models counts with a library-size offset);
normalisation to 10,000 counts per meta-cell happens afterwards, at access time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dataset_script.workarounds import quiet


def design_is_estimable(batch: np.ndarray, covariate: np.ndarray) -> bool:
    """True when batch and covariate effects can both be estimated: the design matrix
    [intercept-free batch one-hot | covariate one-hot without its first level] has full column
    rank (false, e.g., when each dataset holds a single disease)."""
    b = pd.get_dummies(pd.Series(batch).astype(str)).to_numpy(float)
    c = pd.get_dummies(pd.Series(covariate).astype(str), drop_first=True).to_numpy(float)
    if c.shape[1] == 0:
        return False
    design = np.hstack([b, c])
    return int(np.linalg.matrix_rank(design)) == design.shape[1]


def combat_seq_rows(indices: list[np.ndarray], values: list[np.ndarray], meta: pd.DataFrame,
                    measured: dict[str, np.ndarray], covariate: np.ndarray | None = None,
                    split: str = "all") -> tuple[list[np.ndarray], list[np.ndarray], list[dict]]:
    """ComBat-seq on sparse meta-cell rows, per tissue group.

    Parameters
    ----------
    indices, values
        Per row, the transcript indices (int) and counts (float) of its non-zero entries.
    meta
        One row per input row with ``tissue_general``, ``dataset_id`` and ``values_are_counts``.
    measured
        ``dataset_id`` → transcript indices that dataset measured (its gene panel).
    covariate
        Optional biological covariate per row (kept in the model when estimable).
    split
        Name used in the report.

    Returns
    -------
    (indices, values, report): corrected rows (same order; genes outside the group's common panel
    unchanged) and one report dict per tissue group.
    """
    # Imported here, only when a correction runs: inmoose is heavy (it pulls in numba).
    from inmoose.pycombat import pycombat_seq

    new_idx = [np.asarray(i, dtype=np.int64) for i in indices]
    new_val = [np.asarray(v, dtype=np.float32) for v in values]
    report = []
    counts_ok = meta["values_are_counts"].to_numpy(bool)
    for tissue, group in meta.groupby("tissue_general", sort=True):
        rows = np.flatnonzero(meta["tissue_general"].to_numpy() == tissue)
        entry = {"split": split, "tissue_general": str(tissue), "n_metacells": int(len(rows))}
        not_counts = rows[~counts_ok[rows]]
        rows = rows[counts_ok[rows]]
        if len(not_counts):
            entry["n_not_counts_left_uncorrected"] = int(len(not_counts))
        batches = meta["dataset_id"].to_numpy().astype(str)[rows]
        entry["batches"] = sorted(map(str, set(batches)))
        if len(set(batches)) < 2:
            report.append(entry | {"status": "skipped: fewer than 2 batches (dataset_id) with counts"})
            continue
        genes = None
        for d in entry["batches"]:
            genes = np.asarray(measured[d]) if genes is None else np.intersect1d(genes, measured[d])
        genes = np.sort(genes)
        entry["n_genes"] = int(len(genes))
        dense = np.zeros((len(genes), len(rows)), dtype=np.float64)
        for j, r in enumerate(rows):
            pos = np.searchsorted(genes, new_idx[r])
            ok = (pos < len(genes)) & (genes[np.minimum(pos, len(genes) - 1)] == new_idx[r])
            dense[pos[ok], j] = new_val[r][ok]
        covar = None
        if covariate is not None:
            cov = np.asarray(covariate).astype(str)[rows]
            if design_is_estimable(batches, cov):
                covar = pd.get_dummies(pd.Series(cov), drop_first=True).to_numpy(float)
                entry["covariate"] = "kept"
            else:
                entry["covariate"] = "confounded with batch (or a single level): corrected without it"
        else:
            entry["covariate"] = "none (labels unseen in this split)" if split != "all" else "none"
        with quiet():
            corrected = pycombat_seq(dense, batches, covar_mod=covar)
        corrected = np.asarray(corrected, dtype=np.float32)
        for j, r in enumerate(rows):
            keep = ~np.isin(new_idx[r], genes)
            nz = np.flatnonzero(corrected[:, j])
            idx = np.concatenate([new_idx[r][keep], genes[nz]])
            val = np.concatenate([new_val[r][keep], corrected[nz, j]])
            order = np.argsort(idx, kind="stable")
            new_idx[r], new_val[r] = idx[order], val[order]
        report.append(entry | {"status": "corrected"})
    return new_idx, new_val, report
