"""Figures and ``report.md`` of ``omnicelltosg evaluate`` (matplotlib Agg, umap-learn, scikit-learn)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_confusions(predictions: dict, label_names: list[str], out: Path, *, models: list[str | None]) -> dict:
    """Row-normalised confusion matrix per model, test predictions pooled over all runs; cell text =
    counts. Returns {model: PNG path}."""
    paths = {}
    k = len(label_names)
    for model in [m for m in models if m]:
        keys = [key for key in predictions if key[0] == model]
        if not keys:
            continue
        cm = sum(confusion_matrix(predictions[key]["truth"], predictions[key]["pred"], labels=np.arange(k)) for key in keys)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.0 * k + 2))
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.6 else "black")
        short = [n if len(n) <= 22 else n[:20] + "…" for n in label_names]
        ax.set_xticks(range(k), short, rotation=40, ha="right")
        ax.set_yticks(range(k), short)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{model}: test, {len(keys)} runs pooled")
        fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
        paths[model] = _save(fig, out / f"confusion_{model}.png")
    return paths


def plot_training_curves(curves: dict, path: Path, *, title: str) -> Path | None:
    """Training loss and validation macro-F1 per epoch for each trained model (first split variant,
    selected configuration)."""
    models = sorted({name for name, v in curves if v == min(vv for _, vv in curves)})
    if not models:
        return None
    v0 = min(vv for _, vv in curves)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in models:
        c = curves[(name, v0)]
        for ax, key in zip(axes, ("train loss", "validation macro-F1")):
            values = c.get(key, [])
            ax.plot(range(1, len(values) + 1), values, marker="o" if len(values) <= 12 else None, ms=3, label=name)
    for ax, key in zip(axes, ("train loss", "validation macro-F1")):
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(f"{title}: training curves (split 0, seed of the first run)")
    return _save(fig, path)


def plot_umaps(embeddings: np.ndarray, expression: np.ndarray, cohort, variant: int, path: Path, *,
               label_column: str, seed: int = 0) -> Path:
    """UMAP (umap-learn, 15 neighbours) of the fine-tuned FM's cell embeddings next to UMAP of PCA
    (50 components, scikit-learn) on log-normalised expression; coloured by label and by donor."""
    import umap
    from sklearn.decomposition import PCA

    labels = np.asarray(cohort.label_names)[cohort.labels]
    donors = np.asarray(cohort.cells["donor_id"]).astype(str)
    split = np.empty(len(labels), dtype=object)
    for name, idx in cohort.splits.items():
        split[idx] = name
    n_pc = int(min(50, expression.shape[1], expression.shape[0] - 1))
    pcs = PCA(n_components=n_pc, random_state=seed).fit_transform(expression)
    coords = {"CellTOSG-FM cell embeddings": umap.UMAP(random_state=seed, n_neighbors=15).fit_transform(embeddings),
              f"PCA ({n_pc} PCs) of expression": umap.UMAP(random_state=seed, n_neighbors=15).fit_transform(pcs)}
    fig, axes = plt.subplots(2, 2, figsize=(12, 10))
    for col, (title, xy) in enumerate(coords.items()):
        for row, (what, values) in enumerate(((label_column, labels), ("donor", donors))):
            ax = axes[row, col]
            cats = sorted(set(values))
            cmap = plt.get_cmap("tab10" if len(cats) <= 10 else "tab20")
            for i, cat in enumerate(cats):
                sel = values == cat
                ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=cmap(i % cmap.N), label=cat, alpha=0.8)
            test = split == "test"
            ax.scatter(xy[test, 0], xy[test, 1], s=18, facecolors="none", edgecolors="k", linewidths=0.3)
            ax.set_title(f"{title}\ncoloured by {what}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            if len(cats) <= 20:
                ax.legend(fontsize=7, markerscale=1.5, loc="best")
    unit = "cells" if cohort.split.test_level == "cell" else "meta-cells"  # single-cell rows (pbmc68k)
    fig.suptitle(f"UMAP, split {variant}: all cohort {unit} (test {unit} circled)")
    return _save(fig, path)


def plot_embedding_heatmap(model, expression, measured_mask, graph, cohort, path: Path, *, label_column: str,
                           n_genes: int = 5000, batch_size: int = 16) -> Path:
    """Paper Figure 4c analogue: meta-cells (rows, ordered by label) × the `n_genes` highest-variance
    measured genes (columns), left: log-normalised expression, right: the fine-tuned model's transcript
    node embedding projected on its first principal component (over all cells and genes), both
    z-scored per gene. Genes are ordered by the label whose mean expression is highest, then by that mean.

    Shapes: `expression`, `measured_mask` `[M, Nt]`; uses `model.celltosg`'s `last_hidden_state` `[B, N, d]`.
    """
    import torch

    x = expression.numpy()
    measured = measured_mask.numpy().any(0)
    var = np.where(measured, x.var(0), -np.inf)
    genes = np.argsort(-var)[: int(min(n_genes, measured.sum()))]
    labels = cohort.labels
    order = np.argsort(labels, kind="stable")
    model.eval()
    states = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            h = model.celltosg(expression[i:i + batch_size], graph, measured_mask=measured_mask[i:i + batch_size]).last_hidden_state
            states.append(h[:, torch.as_tensor(genes)].numpy())  # last_hidden_state [b, N, d] → [b, G, d]
    emb = np.concatenate(states)  # [M, G, d]
    flat = emb.reshape(-1, emb.shape[-1])
    flat = flat - flat.mean(0)
    pc1 = np.linalg.svd(flat[:: max(1, len(flat) // 200_000)], full_matrices=False)[2][0]
    score = (emb - emb.reshape(-1, emb.shape[-1]).mean(0)) @ pc1  # [M, G]

    def z(a):
        return (a - a.mean(0)) / (a.std(0) + 1e-8)

    ex = z(x[:, genes])
    means = np.stack([ex[labels == k].mean(0) for k in range(len(cohort.label_names))])
    gene_order = np.lexsort((-means.max(0), means.argmax(0)))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    for ax, mat, title in ((axes[0], ex, "log-normalised expression"), (axes[1], z(score), "CellTOSG-FM gene embedding (PC1)")):
        im = ax.imshow(mat[order][:, gene_order], aspect="auto", cmap="RdBu_r", vmin=-2.5, vmax=2.5, interpolation="nearest")
        ax.set_title(f"{title}\n{len(genes)} highest-variance genes (z-score per gene)", fontsize=10)
        ax.set_xlabel("genes")
    bounds = np.cumsum(np.bincount(labels[order], minlength=len(cohort.label_names)))
    starts = np.concatenate([[0], bounds[:-1]])
    axes[0].set_yticks((starts + bounds) / 2 - 0.5, [n if len(n) <= 24 else n[:22] + "…" for n in cohort.label_names],
                       fontsize=8)
    for ax in axes:
        for b in bounds[:-1]:
            ax.axhline(b - 0.5, color="k", lw=0.6)
    axes[0].set_ylabel(f"meta-cells ordered by {label_column}")
    fig.colorbar(im, ax=axes, fraction=0.02)
    return _save(fig, path)


def _pm(mean, sd) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.3f} ± {sd:.3f}" if not pd.isna(sd) else f"{mean:.3f}"


def write_evaluation_report(spec, settings: dict, cohorts: dict, results: pd.DataFrame, summary: pd.DataFrame,
                            comparison: dict, figures: dict, dataset: Path, path: Path) -> Path:
    """Self-contained Markdown report: spec, dataset version, split sizes per variant, the results
    table (mean ± sd), the FM-vs-best comparison with its statistics, per-class F1 and the figures."""
    info = json.loads((Path(dataset) / "build_info.json").read_text())
    out = Path(path).parent
    lines = [f"# Evaluation: {spec.name}", "",
             f"Dataset `{dataset}` (entity table `{info.get('entity_version')}`, {info.get('n_metacells')} meta-cells). "
             f"Cohort: `{json.dumps(spec.conditions)}` → `{spec.label_column}`. "
             f"{len(spec.split_variants)} split variant(s) × seeds {spec.seeds} = {len(spec.split_variants) * len(spec.seeds)} runs per model.",
             ""]
    if spec.note:
        lines += [f"> {spec.note}", ""]
    lines += ["Every model sees the same split in a run; checkpoints (epochs) and hyper-parameters are chosen on "
              "validation macro-F1 only; test is scored once.", "", "## Splits", "",
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
    lines += ["", "## Results (test, mean ± sd over runs)", "",
              "| model | macro-F1 | accuracy | balanced accuracy | AUROC | validation macro-F1 | runs |",
              "|---|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        name = f"**{r['model']}**" if r["model"] == comparison.get("fm") else r["model"]
        lines.append(f"| {name} | {_pm(r['macro_f1_mean'], r['macro_f1_sd'])} | {_pm(r['accuracy_mean'], r['accuracy_sd'])} | "
                     f"{_pm(r['balanced_accuracy_mean'], r['balanced_accuracy_sd'])} | {_pm(r['auroc_mean'], r['auroc_sd'])} | "
                     f"{_pm(r['val_macro_f1_mean'], r['val_macro_f1_sd'])} | {int(r['n_runs'])} |")
    if comparison.get("best_other"):
        t, b = comparison["paired_t_test"], comparison.get("bootstrap") or {}
        verdict = ("CellTOSG-FM has the highest mean test macro-F1." if comparison["fm_wins"] else
                   f"**CellTOSG-FM does not win**: `{comparison['best_other']}` has a higher mean test macro-F1 "
                   f"({comparison['best_other_macro_f1_mean']:.3f} vs {comparison['fm_macro_f1_mean']:.3f}).")
        lines += ["", "## CellTOSG-FM vs the best other model", "", verdict, "",
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
    chance = comparison.get("above_chance") or {}
    if chance:
        k = len(next(iter(cohorts.values())).label_names)
        lines += ["", "## Above chance?", "",
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
    per_class = [c for c in results.columns if c.startswith("f1[")]
    if per_class:
        lines += ["", "## Per-class F1 (test, mean over runs)", "", "| model | " + " | ".join(c[3:-1] for c in per_class) + " |",
                  "|---|" + "---|" * len(per_class)]
        pc = results.groupby("model")[per_class].mean()
        for model in summary["model"]:
            lines.append(f"| {model} | " + " | ".join(f"{pc.loc[model, c]:.3f}" for c in per_class) + " |")
    lines += ["", "## Settings", "", "```json", json.dumps(settings, indent=1), "```", "", "## Figures", ""]
    for kind, value in figures.items():
        items = value.items() if isinstance(value, dict) else [(kind, value)]
        for name, p in items:
            if p:
                lines.append(f"![{name}]({Path(p).relative_to(out)})")
    lines += ["", "Files: `results.csv` (one row per model × run), `summary.csv`, `comparison.json`, "
              "`predictions.npz` (test truth / predictions / probabilities per run)."]
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return Path(path)


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
    tmp = csv_path.with_suffix(".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(csv_path)
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
    tmp = md_path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(md_path)
    return csv_path, md_path


__all__ = ["plot_confusions", "plot_training_curves", "plot_umaps", "plot_embedding_heatmap", "write_evaluation_report",
           "cross_task_table", "write_cross_task_table"]
