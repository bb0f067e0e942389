"""``report.md`` of ``omnicelltosg evaluate`` and the cross-task table of finished evaluations (Markdown /
CSV, written atomically). The figures are :mod:`omnicelltosg.plotting.evaluation`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from dataset_script.files import atomic_file, atomic_write_text


def _pm(mean, sd) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.3f} ± {sd:.3f}" if not pd.isna(sd) else f"{mean:.3f}"


def _splits_section(spec, cohorts: dict) -> list[str]:
    lines = ["## Splits", "",
             "| variant | arguments | test level | validation level | train | validation | test | test classes |",
             "|---|---|---|---|---|---|---|---|"]
    for v, cohort in cohorts.items():
        s = cohort.summary()
        flag = "" if s["test_level"] == "donor" else f" **({s['test_level']} level: not donor-independent)**"
        lines.append(f"| {v} | `{json.dumps(spec.split_variants[v])}` | {s['test_level']}{flag} | {s['validation_level']} | "
                     f"{s['train']['n_metacells']} ({s['train']['n_donors']} donors) | "
                     f"{s['validation']['n_metacells']} ({s['validation']['n_donors']}) | "
                     f"{s['test']['n_metacells']} ({s['test']['n_donors']}) | "
                     + ", ".join(f"{k}: {c}" for k, c in s["test"]["class_counts"].items()) + " |")
    return lines


def _results_section(summary: pd.DataFrame, comparison: dict) -> list[str]:
    lines = ["## Results (test, mean ± sd over runs)", "",
             "| model | macro-F1 | accuracy | balanced accuracy | AUROC | validation macro-F1 | runs |",
             "|---|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        name = f"**{r['model']}**" if r["model"] == comparison.get("fm") else r["model"]
        lines.append(f"| {name} | {_pm(r['macro_f1_mean'], r['macro_f1_sd'])} | {_pm(r['accuracy_mean'], r['accuracy_sd'])} | "
                     f"{_pm(r['balanced_accuracy_mean'], r['balanced_accuracy_sd'])} | {_pm(r['auroc_mean'], r['auroc_sd'])} | "
                     f"{_pm(r['val_macro_f1_mean'], r['val_macro_f1_sd'])} | {int(r['n_runs'])} |")
    return lines


def _comparison_section(comparison: dict) -> list[str]:
    if not comparison.get("best_other"):
        return []
    t, b = comparison["paired_t_test"], comparison.get("bootstrap") or {}
    verdict = ("CellTOSG-FM has the highest mean test macro-F1." if comparison["fm_wins"] else
               f"**CellTOSG-FM does not win**: `{comparison['best_other']}` has a higher mean test macro-F1 "
               f"({comparison['best_other_macro_f1_mean']:.3f} vs {comparison['fm_macro_f1_mean']:.3f}).")
    lines = ["## CellTOSG-FM vs the best other model", "", verdict, "",
             f"- best other model (by mean test macro-F1, chosen after the fact: the hardest competitor): "
             f"`{comparison['best_other']}`",
             f"- paired t-test over {t['n']} runs: mean difference (FM − other) {t['mean_difference']:+.3f}, "
             f"p = {t['p_value']:.3g}" if not pd.isna(t["p_value"]) else
             f"- paired t-test over {t['n']} runs: undefined (identical differences or < 2 runs); mean "
             f"difference {t['mean_difference']:+.3f}"]
    if b:
        lines.append(f"- bootstrap over test meta-cells ({b['n_boot']} replicates, runs averaged): difference "
                     f"{b['mean_difference']:+.3f}, {int(b['level'] * 100)}% CI [{b['ci_low']:+.3f}, {b['ci_high']:+.3f}], "
                     f"p ≈ {b['p_two_sided']:.3g}")
    lines.append("- ranking (mean test macro-F1): " + ", ".join(f"{m} {v:.3f}" for m, v in comparison["ranking"]))
    return lines


def _chance_section(spec, comparison: dict, n_classes: int) -> list[str]:
    chance = comparison.get("above_chance") or {}
    if not chance:
        return []
    k = n_classes
    lines = ["## Above chance?", "",
             f"Test balanced accuracy per model against chance (1/{k} = {1 / k:.3f}); one-sided one-sample "
             "t-test over runs (runs sharing a split are not independent: a screen, not a calibrated test). "
             "Flag = mean more than 0.1 above chance and p < 0.05.", ""]
    if not spec.genes_support_task:
        flagged = [m for m, c in chance.items() if c["flag"] and m != "majority_class"]
        lines.append("**The measured genes cannot support this task.** " + (
            f"Flagged models {flagged} are SUSPECTED LEAKS, not results." if flagged else
            "No model is flagged: the scores are at chance, as the input predicts (no leak found)."))
        lines.append("")
    lines += ["| model | mean balanced accuracy | chance | p (greater) | flag |", "|---|---|---|---|---|"]
    for m, c in sorted(chance.items(), key=lambda kv: -kv[1]["mean"]):
        lines.append(f"| {m} | {c['mean']:.3f} | {c['chance']:.3f} | {c['p_value']:.3g} | {'**yes**' if c['flag'] else 'no'} |")
    return lines


def _per_class_section(results: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    per_class = [c for c in results.columns if c.startswith("f1[")]
    if not per_class:
        return []
    lines = ["## Per-class F1 (test, mean over runs)", "", "| model | " + " | ".join(c[3:-1] for c in per_class) + " |",
             "|---|" + "---|" * len(per_class)]
    pc = results.groupby("model")[per_class].mean()
    for model in summary["model"]:
        lines.append(f"| {model} | " + " | ".join(f"{pc.loc[model, c]:.3f}" for c in per_class) + " |")
    return lines


def _figures_section(figures: dict, out: Path) -> list[str]:
    lines = ["## Figures", ""]
    for kind, value in figures.items():
        items = value.items() if isinstance(value, dict) else [(kind, value)]
        for name, p in items:
            if p:
                lines.append(f"![{name}]({Path(p).relative_to(out)})")
    return lines


def write_evaluation_report(spec, settings: dict, cohorts: dict, results: pd.DataFrame, summary: pd.DataFrame,
                            comparison: dict, figures: dict, dataset: Path, path: Path) -> Path:
    """Self-contained Markdown report (written atomically): spec, dataset version, split sizes per variant,
    the results table (mean ± sd), the FM-vs-best comparison with its statistics, the above-chance screen,
    per-class F1, the settings and the figures.

    Args:
        spec: the :class:`omnicelltosg.tasks.TaskSpec` evaluated; settings: the evaluation settings as a
            plain dict (shown as JSON); cohorts: split variant → ``Cohort``.
        results / summary / comparison / figures: as returned by
            :func:`omnicelltosg.workflows.evaluate.run_evaluation`.
        dataset: the dataset folder (its ``build_info.json`` is read); path: the ``report.md`` to write.
    """
    info = json.loads((Path(dataset) / "build_info.json").read_text())
    label = spec.label_column or spec.task
    n_runs = len(spec.split_variants) * len(spec.seeds)
    lines = [f"# Evaluation: {spec.name}", "",
             f"Dataset `{dataset}` (entity table `{info.get('entity_version')}`, {info.get('n_metacells')} meta-cells). "
             f"Cohort: `{json.dumps(spec.conditions)}` → `{label}`. "
             f"{len(spec.split_variants)} split variant(s) × seeds {spec.seeds} = {n_runs} runs per model.", ""]
    if spec.note:
        lines += [f"> {spec.note}", ""]
    lines += ["Every model sees the same split in a run; checkpoints (epochs) and hyper-parameters are chosen on "
              "validation macro-F1 only; test is scored once.", ""]
    n_classes = len(next(iter(cohorts.values())).label_names)
    for section in (_splits_section(spec, cohorts), _results_section(summary, comparison),
                    _comparison_section(comparison), _chance_section(spec, comparison, n_classes),
                    _per_class_section(results, summary)):
        if section:
            lines += section + [""]
    lines += ["## Settings", "", "```json", json.dumps(settings, indent=1), "```", ""]
    lines += _figures_section(figures, Path(path).parent)
    lines += ["", "Files: `results.csv` (one row per model × run), `summary.csv`, `comparison.json`, "
              "`predictions.npz` (test truth / predictions / probabilities per run)."]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def cross_task_table(task_dirs: list[Path]) -> pd.DataFrame:
    """One row per finished evaluation folder (``summary.csv`` + ``comparison.json`` of ``evaluate``):
    test level, runs, the FM's mean ± sd test macro-F1 and rank, the best other model, the FM − best
    difference with its bootstrap 95% CI and paired-test p, whether the FM wins, and the mean ± sd
    macro-F1 of every model (columns ``macro_f1[<model>]``, ``macro_f1_sd[<model>]``).

    Raises:
        FileNotFoundError: a folder without ``summary.csv`` / ``comparison.json`` (names the folder).
    """
    rows = []
    for folder in map(Path, task_dirs):
        missing = [f for f in ("summary.csv", "comparison.json") if not (folder / f).exists()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {missing}: not a finished `omnicelltosg evaluate` task folder.")
        summary = pd.read_csv(folder / "summary.csv").set_index("model")
        comparison = json.loads((folder / "comparison.json").read_text())
        fm = comparison.get("fm")  # absent in tasks run without the FM (e.g. a leak demonstration)
        ranking = [m for m, _ in comparison.get("ranking", [])] or list(
            summary["macro_f1_mean"].sort_values(ascending=False).index)
        boot, paired = comparison.get("bootstrap") or {}, comparison.get("paired_t_test") or {}
        level = comparison.get("test_level")
        if level is None and (folder / "results.csv").exists():  # folders written before comparison.json had it
            levels = pd.read_csv(folder / "results.csv", usecols=["test_level"])["test_level"]
            level = "/".join(sorted(set(levels.astype(str))))
        row = {"task": folder.name, "test_level": level,
               "runs": int(summary["n_runs"].max()), "fm_macro_f1": comparison.get("fm_macro_f1_mean"),
               "fm_macro_f1_sd": summary.loc[fm, "macro_f1_sd"] if fm in summary.index else np.nan,
               "fm_rank": ranking.index(fm) + 1 if fm in ranking else np.nan, "n_models": len(ranking),
               "best_other": comparison.get("best_other", ranking[0] if fm is None else None),
               "best_other_macro_f1": comparison.get("best_other_macro_f1_mean",
                                                     summary.loc[ranking[0], "macro_f1_mean"] if fm is None else None),
               "difference": boot.get("mean_difference"), "ci_low": boot.get("ci_low"), "ci_high": boot.get("ci_high"),
               "paired_p": paired.get("p_value"), "fm_wins": comparison.get("fm_wins")}
        for model in summary.index:
            row[f"macro_f1[{model}]"] = summary.loc[model, "macro_f1_mean"]
            row[f"macro_f1_sd[{model}]"] = summary.loc[model, "macro_f1_sd"]
        rows.append(row)
    return pd.DataFrame(rows)


def write_cross_task_table(task_dirs: list[Path], out: Path) -> tuple[Path, Path]:
    """Write :func:`cross_task_table` as ``evaluation_table.csv`` and a Markdown ``evaluation_table.md`` that
    says for each task whether CellTOSG-FM wins; returns both paths (written atomically)."""
    table = cross_task_table(task_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "evaluation_table.csv", out / "evaluation_table.md"
    with atomic_file(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    models = [c[len("macro_f1["):-1] for c in table.columns if c.startswith("macro_f1[")]
    lines = ["# CellTOSG-FM against every model, all tasks (test macro-F1, mean ± sd over runs)", "",
             "| task | test level | runs | CellTOSG-FM | rank | best other model | FM − best (bootstrap 95% CI) | paired p | FM wins? |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        diff = "n/a" if pd.isna(r["difference"]) else f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        p_text = "n/a" if pd.isna(r["paired_p"]) else f"{r['paired_p']:.2g}"
        if pd.isna(r["fm_macro_f1"]):  # a task run without the FM
            fm_text, rank, wins = "not run", "–", "n/a"
        else:
            fm_text, rank = _pm(r["fm_macro_f1"], r["fm_macro_f1_sd"]), f"{r['fm_rank']:.0f} of {r['n_models']}"
            wins = "**yes**" if r["fm_wins"] else "no"
        lines.append(f"| {r['task']} | {r['test_level']} | {r['runs']} | {fm_text} | {rank} | {r['best_other']} "
                     f"({r['best_other_macro_f1']:.3f}) | {diff} | {p_text} | {wins} |")
    lines += ["", "## Every model", "", "| task | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for _, r in table.iterrows():
        lines.append(f"| {r['task']} | " + " | ".join(_pm(r[f'macro_f1[{m}]'], r[f'macro_f1_sd[{m}]']) for m in models) + " |")
    with_fm = table["fm_macro_f1"].notna()
    wins = int(table.loc[with_fm, "fm_wins"].astype(bool).sum())
    lines += ["", f"CellTOSG-FM has the highest mean test macro-F1 in {wins} of {int(with_fm.sum())} task(s) it ran in. "
              "A test level other "
              "than `donor` means test rows share donors with training rows (see each task's report)."]
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


__all__ = ["write_evaluation_report", "cross_task_table", "write_cross_task_table"]
