"""``report.md`` of ``omnicelltosg evaluate`` and the cross-task table of finished evaluations (Markdown /
CSV, written atomically). The figures are :mod:`omnicelltosg.plotting.evaluation`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from dataset_script.files import atomic_file, atomic_write_text
from omnicelltosg.tasks import ABLATIONS


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
    tie = abs(comparison["fm_macro_f1_mean"] - comparison["best_other_macro_f1_mean"]) < 1e-9
    verdict = ("CellTOSG-FM has the highest mean test macro-F1." if comparison["fm_wins"] else
               f"CellTOSG-FM ties with `{comparison['best_other']}` (mean test macro-F1 "
               f"{comparison['fm_macro_f1_mean']:.3f}); it does not win." if tie else
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


def _versus_lines(title: str, versus: dict) -> list[str]:
    t, b = versus["paired_t_test"], versus.get("bootstrap") or {}
    ci = f"bootstrap 95% CI [{b['ci_low']:+.3f}, {b['ci_high']:+.3f}]" if b else "no bootstrap"
    p = "n/a" if pd.isna(t["p_value"]) else f"{t['p_value']:.3g}"
    return [f"| {title} | {versus['fm_macro_f1_mean']:.3f} | {versus['other_macro_f1_mean']:.3f} | "
            f"{t['mean_difference']:+.3f} ({ci}) | {p} | {t['n']} |"]


def _ablation_section(comparison: dict) -> list[str]:
    """CellTOSG-FM against logistic regression (the target) and against each ablation (what each part adds)."""
    rows = []
    if comparison.get("vs_logistic_regression"):
        rows += _versus_lines("logistic regression (target: FM − LR ≥ −0.01)", comparison["vs_logistic_regression"])
    for model, versus in (comparison.get("ablations") or {}).items():
        rows += _versus_lines(f"`{model}` (without the {ABLATIONS[model]})", versus)
    if not rows:
        return []
    return ["## CellTOSG-FM vs logistic regression and its ablations", "",
            "FM − other on the runs both completed (positive: the FM is better, i.e. the removed part helps).", "",
            "| compared with | FM | other | FM − other | paired p | runs |", "|---|---|---|---|---|---|", *rows]


def _budget_section(settings: dict, results: pd.DataFrame) -> list[str]:
    """The training budget every model had, and what each used (epochs, optimiser steps, chosen settings)."""
    ft = settings.get("finetuning", {})
    lines = ["## Training budget", "",
             f"Every model trained by gradient descent (graph models, MLP): epoch cap {ft.get('epochs')}, early "
             f"stopping after {ft.get('early_stopping_patience')} epochs without a better validation macro-F1, "
             f"AdamW (weight decay {ft.get('weight_decay')}), linear warm-up over {ft.get('warmup_fraction')} of "
             f"the capped steps then cosine decay, batch {ft.get('batch_size')}, class-weighted loss "
             f"{ft.get('class_weighted')}, learning rates {settings.get('learning_rates')} (best on validation). "
             f"Logistic regression: its `C` grid, solved to convergence. Wide & deep models fit their linear path "
             f"the same way, then train the graph part.", "",
             "| model | chosen learning rates | epochs run (mean) | optimiser steps (mean, selected lr) | chosen C |",
             "|---|---|---|---|---|"]
    for model, group in results.groupby("model", sort=False):
        hp = [json.loads(h) for h in group["hparams"]]
        lrs = sorted({h["lr"] for h in hp if "lr" in h})
        epochs = [h["epochs_run"] for h in hp if "epochs_run" in h]
        steps = [h["steps"] for h in hp if "steps" in h]
        cs = sorted({h.get("C", h.get("wide C")) for h in hp if "C" in h or "wide C" in h})
        lines.append(f"| {model} | {', '.join(map(str, lrs)) or '–'} | "
                     f"{np.mean(epochs):.1f} | {np.mean(steps):.0f} | {', '.join(map(str, cs)) or '–'} |"
                     if epochs else f"| {model} | {', '.join(map(str, lrs)) or '–'} | – | – | {', '.join(map(str, cs)) or '–'} |")
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
    runs = results[["variant", "seed"]].drop_duplicates()
    n_runs = len(runs)
    lines = [f"# Evaluation: {spec.name}", "",
             f"Dataset `{dataset}` (entity table `{info.get('entity_version')}`, {info.get('n_metacells')} meta-cells). "
             f"Cohort: `{json.dumps(spec.conditions)}` → `{label}`. "
             f"{len(spec.split_variants)} split variant(s); {n_runs} runs (split variant, seed) completed: "
             + ", ".join(f"{v}/{s}" for v, s in runs.itertuples(index=False)) + ".", ""]
    if spec.note:
        lines += [f"> {spec.note}", ""]
    lines += ["Every model sees the same split in a run; checkpoints (epochs) and hyper-parameters are chosen on "
              "validation macro-F1 only; test is scored once.", ""]
    n_classes = len(next(iter(cohorts.values())).label_names)
    for section in (_splits_section(spec, cohorts), _results_section(summary, comparison),
                    _comparison_section(comparison), _ablation_section(comparison), _budget_section(settings, results),
                    _chance_section(spec, comparison, n_classes), _per_class_section(results, summary)):
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
        lr = comparison.get("vs_logistic_regression") or {}
        lr_boot = lr.get("bootstrap") or {}
        row.update({"fm_minus_lr": (lr.get("paired_t_test") or {}).get("mean_difference"),
                    "fm_minus_lr_ci_low": lr_boot.get("ci_low"), "fm_minus_lr_ci_high": lr_boot.get("ci_high")})
        for model, versus in (comparison.get("ablations") or {}).items():
            row[f"fm_minus[{model}]"] = versus["paired_t_test"]["mean_difference"]
        for model in summary.index:
            row[f"macro_f1[{model}]"] = summary.loc[model, "macro_f1_mean"]
            row[f"macro_f1_sd[{model}]"] = summary.loc[model, "macro_f1_sd"]
        rows.append(row)
    return pd.DataFrame(rows)


def _target_and_ablation_tables(table: pd.DataFrame, ablations: list[str]) -> list[str]:
    """Markdown: FM − logistic regression per task (the target: ≥ −0.01 with the CI reaching 0) and the
    ablation table (each ablation's mean macro-F1; FM − ablation in brackets)."""
    lines = []
    if "fm_minus_lr" in table.columns:
        lines += ["", "## CellTOSG-FM vs logistic regression (target: FM − LR ≥ −0.01, bootstrap CI reaching ≥ 0)", "",
                  "| task | FM − LR | bootstrap 95% CI | target met? |", "|---|---|---|---|"]
        for _, r in table[table["fm_minus_lr"].notna()].iterrows():
            met = r["fm_minus_lr"] >= -0.01 and r["fm_minus_lr_ci_high"] >= 0
            lines.append(f"| {r['task']} | {r['fm_minus_lr']:+.3f} | [{r['fm_minus_lr_ci_low']:+.3f}, "
                         f"{r['fm_minus_lr_ci_high']:+.3f}] | {'yes' if met else '**no**'} |")
    if ablations:
        lines += ["", "## Ablations (test macro-F1 mean ± sd; FM − ablation in brackets: > 0 = the removed part helps)",
                  "", "| task | CellTOSG-FM | " + " | ".join(f"{m} (no {ABLATIONS[m].split(' (')[0]})" for m in ablations)
                  + " |", "|---|---|" + "---|" * len(ablations)]
        for _, r in table.iterrows():
            cells = [f"{_pm(r[f'macro_f1[{m}]'], r[f'macro_f1_sd[{m}]'])} ({r.get(f'fm_minus[{m}]', np.nan):+.3f})"
                     if not pd.isna(r.get(f"macro_f1[{m}]", np.nan)) else "n/a" for m in ablations]
            lines.append(f"| {r['task']} | {_pm(r['fm_macro_f1'], r['fm_macro_f1_sd'])} | " + " | ".join(cells) + " |")
    return lines


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
    ablations = [m for m in models if m in ABLATIONS]
    models = [m for m in models if m not in ABLATIONS]
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
    lines += _target_and_ablation_tables(table, ablations)
    with_fm = table["fm_macro_f1"].notna()
    wins = int(table.loc[with_fm, "fm_wins"].astype(bool).sum())
    lines += ["", f"CellTOSG-FM has the highest mean test macro-F1 in {wins} of {int(with_fm.sum())} task(s) it ran in. "
              "A test level other "
              "than `donor` means test rows share donors with training rows (see each task's report)."]
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


__all__ = ["write_evaluation_report", "cross_task_table", "write_cross_task_table"]
