"""Pretrained vs from-scratch fine-tuning across two ``omnicelltosg evaluate`` folders, paired by run.

A model whose rows live in one evaluation folder (e.g. the FM pretrained with another recipe, in its own
folder because its settings differ) is compared with a model of another folder (e.g. ``celltosg_scratch``
of the main evaluation, which does not depend on pretraining) on the runs — (split variant, seed) — both
completed, on the same test meta-cells (checked). Per task: paired test macro-F1 differences and the
bootstrap CI of :func:`omnicelltosg.evaluation.metrics.bootstrap_difference`; then the mean over tasks.

Run: ``python benchmarks/pretraining_gain.py --a runs/evaluate_pt_recipe --a-model celltosg_fm
--b runs/evaluate_v2 --b-model celltosg_scratch --tasks pbmc68k_cell_type kang_cell_type --json OUT``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omnicelltosg.evaluation.metrics import bootstrap_difference  # noqa: E402


def paired_runs(folder_a: Path, model_a: str, folder_b: Path, model_b: str) -> tuple[pd.DataFrame, list]:
    """Rows ``variant, seed, a, b, difference`` (test macro-F1) and the ``(truth, pred_a, pred_b)`` triples.

    Raises:
        ValueError: two runs with the same (variant, seed) that did not predict the same test meta-cells.
    """
    res_a, res_b = pd.read_csv(folder_a / "results.csv"), pd.read_csv(folder_b / "results.csv")
    a = res_a[res_a["model"] == model_a].set_index(["variant", "seed"])["macro_f1"]
    b = res_b[res_b["model"] == model_b].set_index(["variant", "seed"])["macro_f1"]
    keys = sorted(set(a.index) & set(b.index))
    pred_a, pred_b = np.load(folder_a / "predictions.npz"), np.load(folder_b / "predictions.npz")
    rows, triples = [], []
    for v, s in keys:
        ta, tb = pred_a[f"{model_a}|{v}|{s}|truth"], pred_b[f"{model_b}|{v}|{s}|truth"]
        if not np.array_equal(ta, tb):
            raise ValueError(f"run ({v}, {s}): the two folders scored different test meta-cells.")
        triples.append((ta, pred_a[f"{model_a}|{v}|{s}|pred"], pred_b[f"{model_b}|{v}|{s}|pred"]))
        rows.append({"variant": v, "seed": s, "a": a[(v, s)], "b": b[(v, s)], "difference": a[(v, s)] - b[(v, s)]})
    return pd.DataFrame(rows), triples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, required=True)
    ap.add_argument("--a-model", required=True)
    ap.add_argument("--b", type=Path, required=True)
    ap.add_argument("--b-model", required=True)
    ap.add_argument("--tasks", nargs="+", required=True)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = {"a": f"{args.a}:{args.a_model}", "b": f"{args.b}:{args.b_model}", "tasks": {}}
    for task in args.tasks:
        runs, triples = paired_runs(args.a / task, args.a_model, args.b / task, args.b_model)
        if runs.empty:
            print(f"{task}: no paired runs")
            continue
        boot = bootstrap_difference(triples)
        out["tasks"][task] = {"runs": runs.to_dict("records"), "mean_a": runs["a"].mean(), "mean_b": runs["b"].mean(),
                              "mean_difference": runs["difference"].mean(), "ci": [boot["ci_low"], boot["ci_high"]]}
        print(f"{task}: {len(runs)} paired runs, a {runs['a'].mean():.3f}, b {runs['b'].mean():.3f}, a - b "
              f"{runs['difference'].mean():+.3f} (bootstrap 95% CI [{boot['ci_low']:+.3f}, {boot['ci_high']:+.3f}])")
    if out["tasks"]:
        out["mean_over_tasks"] = float(np.mean([t["mean_difference"] for t in out["tasks"].values()]))
        print(f"mean over {len(out['tasks'])} task(s) of a - b: {out['mean_over_tasks']:+.3f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
