"""Benchmark: metadata query + stratified case/control matching + donor split over 400,000
meta-cells (issue 4), against the straightforward pandas implementation of the same algorithms
(``benchmarks/reference_cohort.py``) in the same run.

The metadata table is synthetic but follows the real vocabularies: cell types are Cell Ontology
labels, diseases MONDO labels (plus ``normal``), tissues the CELLxGENE ``tissue_general`` UBERON
groups, stages this dataset's age groups; donors carry one dataset, tissue, disease, sex and stage,
and their meta-cells' cell types follow a Zipf law (sizes of the original release: ~395k meta-cells,
766 cell types, 65 tissues, 140 diseases). No expression payload is needed for this figure.

Run:  python benchmarks/bench_cohort.py --data ../shared/data [--n-rows 400000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_cohort import match_reference, query_reference, split_reference  # noqa: E402

from dataset_script.build.harmonize import ontology  # noqa: E402
from dataset_script.cohorts.matching import AGE_STAGES, match_case_control  # noqa: E402
from dataset_script.cohorts.query import condition_mask, query_frame  # noqa: E402
from dataset_script.cohorts.splits import donor_keys, split_by_donor  # noqa: E402
from dataset_script.files import atomic_write_text  # noqa: E402


def zipf_weights(n: int, s: float = 1.1) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def synthetic_metadata(data_dir: Path, n_rows: int, n_donors: int, seed: int) -> pd.DataFrame:
    """A meta-cell metadata table with the real vocabularies (see the module docstring)."""
    rng = np.random.default_rng(seed)
    cl, mondo, uberon = ontology(data_dir, "CL"), ontology(data_dir, "MONDO"), ontology(data_dir, "UBERON")
    cell_types = rng.choice(sorted(cl.labels.values()), size=766, replace=False)
    diseases = rng.choice(sorted(mondo.labels.values()), size=140, replace=False)
    tissue_ids = json.loads((data_dir / "ontology" / "cxg_tissue_general_list.json").read_text())
    tissues = np.array([uberon.labels.get(t, t) for t in tissue_ids])
    n_datasets = max(2, n_donors // 25)
    donor = pd.DataFrame({
        "dataset_id": [f"dataset_{i:04d}" for i in rng.integers(0, n_datasets, n_donors)],
        "donor_id": [f"donor_{i}" for i in range(n_donors)],
        "tissue_general": rng.choice(tissues, n_donors, p=zipf_weights(len(tissues))),
        "disease": np.where(rng.random(n_donors) < 0.45, "normal",
                            rng.choice(diseases, n_donors, p=zipf_weights(len(diseases), 0.9))),
        "sex": rng.choice(["female", "male", "unknown"], n_donors, p=[0.48, 0.48, 0.04]),
        "development_stage_category": rng.choice(list(AGE_STAGES) + ["unknown"], n_donors,
                                                 p=np.r_[np.full(len(AGE_STAGES), 0.95 / len(AGE_STAGES)), 0.05]),
        "assay": rng.choice(["10x 3' v3", "10x 3' v2", "10x 5' v1", "Smart-seq2"], n_donors, p=[0.5, 0.3, 0.15, 0.05]),
    })
    per_donor = rng.multinomial(n_rows, np.full(n_donors, 1 / n_donors))
    rows = donor.loc[np.repeat(np.arange(n_donors), per_donor)].reset_index(drop=True)
    # each tissue has its own Zipf-ordered cell-type mix
    tissue_code = pd.factorize(rows["tissue_general"])[0]
    offsets = rng.integers(0, len(cell_types), size=tissue_code.max() + 1)
    rank = rng.choice(120, size=len(rows), p=zipf_weights(120, 1.2))
    rows["cell_type"] = cell_types[(offsets[tissue_code] + rank) % len(cell_types)]
    rows["cell_id"] = [f"mc{i}" for i in range(len(rows))]
    return rows


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--n-rows", type=int, default=400_000)
    p.add_argument("--n-donors", type=int, default=8_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    meta = synthetic_metadata(args.data, args.n_rows, args.n_donors, args.seed)
    tissues = meta["tissue_general"].value_counts().index[:20].tolist()
    conditions = {"tissue_general": tissues, "assay": ["10X 3' V3", "10x 3' v2", "10x 5' v1"]}  # case-insensitive
    spec = dict(balance_field="disease", control_value="normal", match_keys=["cell_type", "sex"],
                stage_key="development_stage_category", tolerance=1, controls_per_case=1, upsample=True,
                seed=args.seed)
    print(f"metadata: {len(meta):,} meta-cells, {meta['donor_id'].nunique():,} donors, "
          f"{meta['cell_type'].nunique()} cell types, {meta['disease'].nunique()} diseases, "
          f"{meta['tissue_general'].nunique()} tissues")

    # ---- this library
    table = pa.Table.from_pandas(meta, preserve_index=False)
    mask, t_q_arrow = timed(condition_mask, table, conditions)
    rows, t_q = timed(query_frame, meta, conditions)
    sub = meta.iloc[rows].reset_index(drop=True)
    res, t_m = timed(match_case_control, sub, **spec)
    matched = sub.iloc[np.sort(res.rows)]
    split, t_s = timed(split_by_donor, donor_keys(matched), matched["disease"].to_numpy(), seed=args.seed)

    # ---- straightforward pandas, same algorithms
    ref_rows, r_q = timed(query_reference, meta, conditions)
    (ref_cases, ref_ctrls, _, _, ref_dropped), r_m = timed(match_reference, sub, stage_order=AGE_STAGES, **spec)
    ref_split, r_s = timed(split_reference, donor_keys(matched), matched["disease"].to_numpy(), seed=args.seed)

    same = {
        "query": bool(np.array_equal(rows, ref_rows)) and bool(np.array_equal(np.flatnonzero(mask), rows)),
        "matching": bool(sorted(res.rows[res.is_case]) == sorted(ref_cases)
                         and sorted(res.rows[~res.is_case]) == sorted(ref_ctrls) and res.dropped == ref_dropped),
        "split": split.donors == ref_split,
    }
    figures = {
        "n_rows": len(meta), "n_queried": int(len(rows)), "n_matched_rows": int(len(res.rows)),
        "n_strata": int(len(res.strata)), "matching": res.summary(),
        "seconds": {"query_arrow": t_q_arrow, "query": t_q, "matching": t_m, "split": t_s,
                    "query+matching": t_q + t_m, "total": t_q + t_m + t_s},
        "reference_seconds": {"query": r_q, "matching": r_m, "split": r_s, "query+matching": r_q + r_m,
                              "total": r_q + r_m + r_s},
        "identical_to_reference": same,
    }
    print(f"query: {len(rows):,} rows; matching: {res.summary()['n_cases_kept']:,} cases kept of "
          f"{res.n_cases_in:,}, {len(res.strata):,} strata; split over {len(set(donor_keys(matched))):,} donors")
    print(f"{'step':<16}{'this library (s)':>18}{'pandas reference (s)':>22}{'speed-up':>10}")
    for step in ("query", "matching", "split", "query+matching", "total"):
        a, b = figures["seconds"][step], figures["reference_seconds"][step]
        print(f"{step:<16}{a:>18.3f}{b:>22.3f}{b / a:>9.1f}x")
    print(f"identical results: {same}")
    target = figures["seconds"]["query+matching"]
    print(f"target: query + matching under 2 s → {target:.2f} s ({'met' if target < 2 else 'NOT met'})")
    if args.json:
        atomic_write_text(args.json, json.dumps(figures, indent=2, default=str))
    return figures


if __name__ == "__main__":
    main()
