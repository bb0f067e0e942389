"""``omnicelltosg evaluate``: every model on the SAME donor-level splits, selected on validation only,
scored once on test, repeated over seeds, with statistics that say where CellTOSG-FM does not win.

Models (paper §2.4 and ARCHITECTURE.md §7):

==========================  ==========  ======================  ===========
name                        layers      node identity            pretrained
==========================  ==========  ======================  ===========
``celltosg_fm``             GAT         text priors (MiniLM)     yes (PPI edge masking)
``celltosg_scratch``        GAT         text priors              no  — does pretraining help?
``celltosg_no_priors``      GAT         learned node embedding   yes — do the priors help?
``gcn`` / ``gat`` / ``unimp``  GCN / GAT / UniMP  learned node embedding  no (GNN baselines)
``mlp``                     expression  —                        no (the paper's DNN)
``logistic_regression``     expression  —                        no
``majority_class``          —           —                        no
==========================  ==========  ======================  ===========

Graph models are fine-tuned with :func:`modeling_celltosg.training.finetune` (epoch chosen on
validation macro-F1) for each learning rate of ``lr_grid`` (the best on validation is kept);
expression baselines are in :mod:`omnicelltosg.baselines`. Pretraining runs once per split and node
identity (text / learned) on every meta-cell of the dataset EXCEPT that split's test meta-cells.

A run = (split variant, seed). Split variants are ``load_cohort`` arguments: split seeds, or explicit
``test_donors`` (e.g. Kang: each of the two donors as test once). A cohort split at the meta-cell level
(no donors) is flagged in every output.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .baselines import EXPRESSION_BASELINES, ModelRun
from .metrics import above_chance, bootstrap_difference, classification_metrics, paired_test

GRAPH_MODELS = {
    "celltosg_fm": {"layer_type": "gat", "prior_source": "text", "pretrained": True},
    "celltosg_scratch": {"layer_type": "gat", "prior_source": "text", "pretrained": False},
    "celltosg_no_priors": {"layer_type": "gat", "prior_source": "learned", "pretrained": True},
    "gcn": {"layer_type": "gcn", "prior_source": "learned", "pretrained": False},
    "gat": {"layer_type": "gat", "prior_source": "learned", "pretrained": False},
    "unimp": {"layer_type": "transformer", "prior_source": "learned", "pretrained": False},
}
ALL_MODELS = [*GRAPH_MODELS, *EXPRESSION_BASELINES]
FM = "celltosg_fm"

#: CPU-sized defaults (2 cores): the same for every graph model.
DEFAULT_SETTINGS = {
    "model": {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "dropout": 0.0, "mask_ratio": 0.1,
              "degree_loss_weight": 0.1},
    "pretrain": {"steps": 60, "batch_size": 8, "lr": 3e-3, "held_out_fraction": 0.1},
    "finetune": {"epochs": 4, "batch_size": 16},
    "lr_grid": [3e-3],
    "mlp_epochs": 40,
}


@dataclass
class EvaluationSpec:
    """What to evaluate.

    Attributes:
        name: task name used in file names.
        conditions: metadata query (:func:`dataset_script.loader.load_cohort`).
        label_column: the column to predict.
        split_variants: one dict of ``load_cohort`` split arguments per variant (``seed``,
            ``test_donors``, ``split_by``, ``validation_by``, fractions); ``[{"seed": 0}]`` by default.
        seeds: model seeds per split variant (initialisation, shuffling, dropout).
        models: subset of :data:`ALL_MODELS` (default: all).
        cohort_kwargs: further ``load_cohort`` arguments shared by all variants (``sample_size``, ``match`` …).
        note: free text carried into the report (e.g. why a split is at the meta-cell level).
        genes_support_task: False for a task the measured genes cannot support (e.g. sex on a panel
            without X/Y-linked genes): any model flagged above chance is then reported as a suspected
            leak (:func:`omnicelltosg.metrics.above_chance`).
    """

    name: str
    conditions: dict
    label_column: str
    split_variants: list[dict] = field(default_factory=lambda: [{"seed": 0}])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    models: list[str] = field(default_factory=lambda: list(ALL_MODELS))
    cohort_kwargs: dict = field(default_factory=dict)
    note: str = ""
    genes_support_task: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` for unknown models or an empty run plan."""
        unknown = [m for m in self.models if m not in ALL_MODELS]
        if unknown:
            raise ValueError(f"Unknown models {unknown}; accepted values: {ALL_MODELS}.")
        if not self.seeds or not self.split_variants:
            raise ValueError("An evaluation needs at least one seed and one split variant.")


#: The tasks the issue asks for on the demo build (``build/demo.yaml``).
PRESETS = {
    "kang_condition": EvaluationSpec(
        "kang_condition", {"dataset_id": "kang2018_muscat"}, "condition",
        split_variants=[{"test_donors": ["kang2018_muscat:101"], "validation_by": "meta-cell"},
                        {"test_donors": ["kang2018_muscat:107"], "validation_by": "meta-cell"}],
        note="Kang has two donors: train on one, test on the other, both directions; validation meta-cells "
             "come from the training donor (flagged)."),
    "kang_cell_type": EvaluationSpec(
        "kang_cell_type", {"dataset_id": "kang2018_muscat"}, "cell_type",
        split_variants=[{"test_donors": ["kang2018_muscat:101"], "validation_by": "meta-cell"},
                        {"test_donors": ["kang2018_muscat:107"], "validation_by": "meta-cell"}],
        note="Train on one Kang donor, test on the other, both directions."),
    "onek1k_cell_type": EvaluationSpec(
        "onek1k_cell_type", {"dataset_id": "onek1k_scdesignpop"}, "cell_type",
        split_variants=[{"seed": 0}, {"seed": 1}], cohort_kwargs={"sample_size": 400},
        note="40 donors: two donor-level splits (split seeds 0 and 1: different test donors) × 3 model seeds; "
             "400 meta-cells sampled per class-stratified quota, the split still by donor."),
    "oligodendroglioma_malignant": EvaluationSpec(
        "oligodendroglioma_malignant", {"dataset_id": "tirosh2016_oligodendroglioma"}, "condition",
        split_variants=[{"seed": 0, "validation_by": "meta-cell"}, {"seed": 1, "validation_by": "meta-cell"}],
        note="Malignant vs non-malignant; donor = patient. Five patients: the test split holds whole patients, "
             "validation meta-cells come from the training patients (flagged)."),
    # OneK1K's 1,000-gene panel holds no X- or Y-linked gene (checked against org.Hs.eg.db chromosomes in
    # tests/test_evaluate.py): sex is a donor property the input cannot support, so donor-level splits should
    # give chance and anything far above it is a leak to find.
    "onek1k_sex": EvaluationSpec(
        "onek1k_sex", {"dataset_id": "onek1k_scdesignpop"}, "sex",
        split_variants=[{"seed": 0}], cohort_kwargs={"sample_size": 400},
        genes_support_task=False,
        note="Sex on OneK1K with donor-level splits. The gene panel has no X- or Y-linked gene (no XIST, "
             "no RPS4Y1 …), so the input cannot support this task: chance is the expected result and a model "
             "far above chance is a suspected leak (see 'Above chance?')."),
    # The same task split at the meta-cell level, for expression baselines only: the leak the donor-level
    # split prevents (a donor's meta-cells on both sides carry its sex through donor-specific expression).
    "onek1k_sex_metacell_split": EvaluationSpec(
        "onek1k_sex_metacell_split", {"dataset_id": "onek1k_scdesignpop"}, "sex",
        split_variants=[{"seed": 0, "split_by": "meta-cell"}],
        cohort_kwargs={"sample_size": 400}, models=["mlp", "logistic_regression", "majority_class"],
        genes_support_task=False,
        note="LEAK DEMONSTRATION, not a result: meta-cells of the same donor on both sides of the split. "
             "Compare with onek1k_sex (donor-level)."),
    # Built by build/pbmc68k.yaml (single-cell rows; the file has no donors).
    "pbmc68k_cell_type": EvaluationSpec(
        "pbmc68k_cell_type", {"dataset_id": "pbmc68k_reduced"}, "cell_type",
        split_variants=[{"seed": 0, "split_by": "meta-cell"}, {"seed": 1, "split_by": "meta-cell"}],
        note="pbmc68k_reduced has NO donor information: stratified CELL-level splits (one cell per row). "
             "Test cells share donors with training cells, so scores are not donor-independent."),
}


def _runs_plan(spec: EvaluationSpec) -> list[tuple[int, dict, int]]:
    return [(v, variant, seed) for v, variant in enumerate(spec.split_variants) for seed in spec.seeds]


@torch.no_grad()
def cell_embeddings(model, expression: torch.Tensor, measured_mask: torch.Tensor, graph, batch_size: int = 16) -> np.ndarray:
    """Pooled cell representations ``[M, d]`` of a fine-tuned classifier (eval mode), for UMAPs."""
    model.eval()
    chunks = [model(expression[i:i + batch_size], graph, measured_mask=measured_mask[i:i + batch_size]).cell_embeddings
              for i in range(0, len(expression), batch_size)]
    return torch.cat(chunks).numpy()


def _pretrain(dataset: Path, graph, test_ids: set, prior_source: str, settings: dict, seed: int, out: Path) -> Path:
    """Pretrain on every meta-cell of the dataset except ``test_ids``; returns the checkpoint folder."""
    from dataset_script.loader import expression_tensors, gene_panels, load_cells
    from modeling_celltosg import CellTOSGConfig, CellTOSGForPretraining
    from modeling_celltosg.training import pretrain

    ckpt = out / f"pretrained_{prior_source}"
    if (ckpt / "config.json").exists():  # resume
        return ckpt
    cells = load_cells(dataset)
    keep = [i for i, cid in enumerate(cells["cell_id"]) if cid not in test_ids]
    x, m = expression_tensors(cells.select(keep), graph.num_transcripts, gene_panels(dataset))
    config = CellTOSGConfig.for_graph(graph, layer_type="gat", prior_source=prior_source, **settings["model"])
    model = CellTOSGForPretraining(config)
    pretrain(model, x, m, graph, seed=seed, **settings["pretrain"])
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    model.save_pretrained(tmp)
    tmp.replace(ckpt)
    return ckpt


def _graph_model_run(name: str, cohort, x, m, y, graph, pretrained: dict, settings: dict, seed: int) -> tuple[ModelRun, object]:
    """Fine-tune graph model ``name`` for each learning rate; keep the best on validation."""
    from modeling_celltosg import CellTOSGConfig, CellTOSGForCellClassification
    from modeling_celltosg.training import finetune

    spec = GRAPH_MODELS[name]
    labels = {"num_labels": len(cohort.label_names), "id2label": dict(enumerate(cohort.label_names)),
              "label2id": {n: i for i, n in enumerate(cohort.label_names)}}
    t0 = time.perf_counter()
    best = None
    for lr in settings["lr_grid"]:
        torch.manual_seed(seed)
        if spec["pretrained"]:
            from transformers.utils import logging as hf_logging

            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # the new head's "MISSING" load report is expected here
            try:
                model = CellTOSGForCellClassification.from_pretrained(pretrained[spec["prior_source"]], **labels)
            finally:
                hf_logging.set_verbosity(verbosity)
        else:
            config = CellTOSGConfig.for_graph(graph, layer_type=spec["layer_type"], prior_source=spec["prior_source"],
                                              **settings["model"], **labels)
            model = CellTOSGForCellClassification(config)
        res = finetune(model, x, m, y, graph, train_idx=cohort.splits["train"], val_idx=cohort.splits["validation"],
                       test_idx=cohort.splits["test"], seed=seed, lr=lr, **settings["finetune"])
        if best is None or res["val_macro_f1"] > best[0]["val_macro_f1"]:
            best = (res, lr, model)
    res, lr, model = best
    run = ModelRun(name, res["val_macro_f1"], res["test_predictions"], res["test_probabilities"], {"lr": lr},
                   best_epoch=res["best_epoch"],
                   curves={"train loss": res["train_loss_curve"], "validation macro-F1": res["val_macro_f1_curve"]},
                   seconds=time.perf_counter() - t0)
    return run, model


def run_evaluation(dataset: str | Path, spec: EvaluationSpec, out: str | Path, *, settings: dict | None = None,
                   log=print) -> dict:
    """Run every model of ``spec`` on every (split variant, seed) and write the results into ``out``.

    Returns {"results", "summary" (DataFrames), "comparison", "figures", "cohorts" (variant → Cohort)}.
    Writes ``results.csv`` (one row per model × run, all metrics), ``summary.csv`` (mean ± sd per
    model), ``comparison.json`` (FM vs the best other model: paired t-test over runs and
    bootstrap CI over test meta-cells), figures (``confusion_<model>.png``, ``curves.png``,
    ``umap.png``) and ``report.md``. Rows already in ``results.csv`` (same model, variant, seed) are
    reused, so an interrupted evaluation resumes.

    Raises:
        ValueError: unknown models, an empty plan, or a cohort the loader rejects (e.g. a donor-level
            split with too few donors — the message says which option to use instead).
    """
    from dataset_script.loader import load_cohort, load_graph

    from .eval_report import (
        plot_confusions,
        plot_embedding_heatmap,
        plot_training_curves,
        plot_umaps,
        write_evaluation_report,
    )

    spec.validate()
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    dataset, out = Path(dataset), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, spec, settings, dataset)
    graph, _ = load_graph(dataset)
    results_path = out / "results.csv"
    done = pd.read_csv(results_path) if results_path.exists() else pd.DataFrame()
    predictions: dict[tuple, dict] = {}
    pred_path = out / "predictions.npz"
    if pred_path.exists():
        with np.load(pred_path, allow_pickle=False) as z:
            for key in z.files:
                model, v, seed, what = key.split("|")
                predictions.setdefault((model, int(v), int(seed)), {})[what] = z[key]
    rows = done.to_dict("records")
    cohorts, umap_inputs, heatmap = {}, None, None
    curves_path = out / "curves.json"  # kept across resumes so the curves figure can be redrawn
    curves = {}
    if curves_path.exists():
        for key, c in json.loads(curves_path.read_text()).items():
            name, v = key.rsplit("|", 1)
            curves[(name, int(v))] = c
    inputs = {}  # variant → dense inputs, built once and shared by that variant's seeds
    for v, variant, seed in _runs_plan(spec):
        if v not in cohorts:
            cohort = load_cohort(dataset, conditions=spec.conditions, label_column=spec.label_column,
                                 **{**spec.cohort_kwargs, **variant})
            cohorts[v] = cohort
            x, m, y = cohort.tensors()
            inputs[v] = (x, m, y, x.numpy()[:, m.any(0).numpy()],  # expression of the measured genes only
                         set(np.asarray(cohort.cells["cell_id"])[cohort.splits["test"]]))
        cohort = cohorts[v]
        x, m, y, xe, test_ids = inputs[v]
        yn = y.numpy()
        split_dir = out / "checkpoints" / f"split{v}"
        pretrained = {}
        for name in spec.models:
            if any(r["model"] == name and r["variant"] == v and r["seed"] == seed for r in rows):
                continue
            log(f"[evaluate {spec.name}] split {v} seed {seed}: {name}")
            if name in GRAPH_MODELS:
                g = GRAPH_MODELS[name]
                if g["pretrained"] and g["prior_source"] not in pretrained:
                    split_dir.mkdir(parents=True, exist_ok=True)
                    pretrained[g["prior_source"]] = _pretrain(dataset, graph, test_ids, g["prior_source"], settings,
                                                              seed=int(variant.get("seed", v)), out=split_dir)
                run, model = _graph_model_run(name, cohort, x, m, y, graph, pretrained, settings, seed)
                if name == FM and umap_inputs is None:
                    umap_inputs = (cell_embeddings(model, x, m, graph), xe, cohort, v)
                    heatmap = plot_embedding_heatmap(model, x, m, graph, cohort, out / "embedding_heatmap.png",
                                                     label_column=spec.label_column)
                    model.save_pretrained(out / "checkpoints" / "celltosg_fm_finetuned")
                    (out / "checkpoints" / "celltosg_fm_finetuned" / "evaluation_run.json").write_text(
                        json.dumps({"variant": v, "seed": seed, "split": variant}))
            else:
                run = EXPRESSION_BASELINES[name](xe, yn, cohort.splits, num_classes=len(cohort.label_names), seed=seed,
                                                 **({"epochs": settings["mlp_epochs"]} if name == "mlp" else {}))
            truth = yn[cohort.splits["test"]]
            metrics = classification_metrics(truth, run.test_pred, run.test_proba, cohort.label_names)
            rows.append({"task": spec.name, "model": name, "variant": v, "seed": seed,
                         "test_level": cohort.split.test_level, "validation_level": cohort.split.validation_level,
                         "n_train": len(cohort.splits["train"]), "n_validation": len(cohort.splits["validation"]),
                         "n_test": len(truth), "val_macro_f1": run.val_macro_f1,
                         **{k: metrics[k] for k in ("accuracy", "macro_f1", "balanced_accuracy", "auroc")},
                         **{f"f1[{k}]": val for k, val in metrics["per_class_f1"].items()},
                         "hparams": json.dumps(run.hparams), "best_epoch": run.best_epoch, "seconds": run.seconds})
            predictions[(name, v, seed)] = {"truth": truth, "pred": run.test_pred, "proba": run.test_proba}
            if run.curves and (name, v) not in curves:
                curves[(name, v)] = run.curves
                tmp = curves_path.with_name(".curves.json.tmp")
                tmp.write_text(json.dumps({f"{k[0]}|{k[1]}": c for k, c in curves.items()}, default=float))
                tmp.replace(curves_path)
            _atomic_csv(pd.DataFrame(rows), results_path)
            _save_predictions(predictions, pred_path)

    results = pd.DataFrame(rows)
    summary = summarize(results)
    chance = {m: above_chance(g["balanced_accuracy"].to_numpy(), len(cohorts[0].label_names))
              for m, g in results.groupby("model")}
    summary["above_chance_flag"] = summary["model"].map(lambda m: chance[m]["flag"])
    summary["test_level"] = summary["model"].map(results.groupby("model")["test_level"]
                                                 .agg(lambda t: "/".join(sorted(set(t)))))
    comparison = compare_with_best(results, predictions)
    comparison["above_chance"] = chance
    comparison["test_level"] = "/".join(sorted(set(results["test_level"])))
    _atomic_csv(summary, out / "summary.csv")
    (out / "comparison.json").write_text(json.dumps(comparison, indent=2))
    label_names = cohorts[0].label_names
    figures = {"confusion": plot_confusions(predictions, label_names, out, models=[FM, comparison.get("best_other")]),
               "curves": plot_training_curves(curves, out / "curves.png", title=spec.name)}
    if umap_inputs is None and not (out / "umap.png").exists():
        umap_inputs = _umap_inputs_from_checkpoint(out / "checkpoints" / "celltosg_fm_finetuned", inputs, cohorts,
                                                   graph)
    if umap_inputs is not None:
        figures["umap"] = plot_umaps(*umap_inputs, out / "umap.png", label_column=spec.label_column)
    elif (out / "umap.png").exists():  # resumed with the FM already trained: keep the earlier figure
        figures["umap"] = out / "umap.png"
    if heatmap is not None:
        figures["embedding_heatmap"] = heatmap
    elif (out / "embedding_heatmap.png").exists():
        figures["embedding_heatmap"] = out / "embedding_heatmap.png"
    write_evaluation_report(spec, settings, cohorts, results, summary, comparison, figures, dataset, out / "report.md")
    _update_model_card(out / "checkpoints" / "celltosg_fm_finetuned", spec, summary, comparison, dataset)
    return {"results": results, "summary": summary, "comparison": comparison, "figures": figures, "cohorts": cohorts}


def _umap_inputs_from_checkpoint(checkpoint: Path, inputs: dict, cohorts: dict, graph) -> tuple | None:
    """UMAP inputs from the saved fine-tuned FM when the run that trained it was an earlier process (a
    resumed evaluation interrupted before its figures were drawn); ``None`` without a checkpoint."""
    run_file = checkpoint / "evaluation_run.json"
    if not run_file.exists():
        return None
    from modeling_celltosg import CellTOSGForCellClassification

    v = int(json.loads(run_file.read_text())["variant"])
    if v not in inputs:
        return None
    x, m, _, xe, _ = inputs[v]
    model = CellTOSGForCellClassification.from_pretrained(checkpoint).eval()
    return cell_embeddings(model, x, m, graph), xe, cohorts[v], v


def _update_model_card(checkpoint: Path, spec: EvaluationSpec, summary: pd.DataFrame, comparison: dict,
                       dataset: Path) -> None:
    """Render the fine-tuned FM checkpoint's ``README.md`` (model card) with this evaluation's metrics."""
    from modeling_celltosg import CellTOSGConfig

    from .report import write_model_card

    if not (checkpoint / "config.json").exists() or FM not in set(summary["model"]):
        return
    info = json.loads((dataset / "build_info.json").read_text())
    run_file = checkpoint / "evaluation_run.json"
    run = json.loads(run_file.read_text()) if run_file.exists() else {"variant": "?", "seed": "?"}
    row = summary.set_index("model").loc[FM]
    metrics = {f"test {k} (mean ± sd, {int(row['n_runs'])} runs)": f"{row[k + '_mean']:.3f} ± {row[k + '_sd']:.3f}"
               for k in ("macro_f1", "accuracy", "balanced_accuracy", "auroc")}
    if comparison.get("best_other"):
        metrics[f"best other model ({comparison['best_other']}) test macro-F1"] = comparison["best_other_macro_f1_mean"]
    write_model_card(checkpoint, name=f"fine-tuned: {spec.name}", config=CellTOSGConfig.from_pretrained(checkpoint),
                     dataset={"entity_version": info["entity_version"], "n_transcripts": info["n_transcripts"],
                              "n_proteins": info["n_proteins"], "n_ppi_edges": info["n_ppi_edges"]},
                     training_data=f"`{json.dumps(spec.conditions)}` → `{spec.label_column}`; split variants "
                                   f"{spec.split_variants}; this checkpoint: split {run['variant']}, seed {run['seed']}",
                     metrics=metrics)


def _check_resume(out: Path, spec: EvaluationSpec, settings: dict, dataset: Path) -> None:
    """Record what this folder's runs were made with (``run_config.json``); refuse to add runs made
    with other settings, cohort or dataset to it (the results would mix incomparable runs)."""
    info = json.loads((dataset / "build_info.json").read_text()) if (dataset / "build_info.json").exists() else {}
    current = {"settings": settings, "conditions": spec.conditions, "label_column": spec.label_column,
               "split_variants": spec.split_variants, "cohort_kwargs": spec.cohort_kwargs,
               "dataset": str(dataset.resolve()), "entity_version": info.get("entity_version")}
    current = json.loads(json.dumps(current, default=str))
    path = out / "run_config.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != current:
            changed = sorted(k for k in current if previous.get(k) != current[k])
            raise ValueError(f"{out} holds runs made with different {changed}; use another --out, or the same "
                             f"settings to resume ({path}).")
        return
    path.write_text(json.dumps(current, indent=1))


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over runs of each test metric, per model (sorted by mean macro-F1, best first)."""
    metrics = ["macro_f1", "accuracy", "balanced_accuracy", "auroc", "val_macro_f1"]
    g = results.groupby("model")[metrics]
    summary = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_sd")).join(g.size().rename("n_runs"))
    return summary.sort_values("macro_f1_mean", ascending=False).reset_index()


def compare_with_best(results: pd.DataFrame, predictions: dict) -> dict:
    """CellTOSG-FM against the best other model by mean TEST macro-F1 (the hardest competitor, chosen
    after the fact on purpose: a conservative comparison for the FM), on the runs both completed."""
    if FM not in set(results["model"]):
        return {}
    means = results.groupby("model")["macro_f1"].mean()
    others = means.drop(FM)
    if others.empty:
        return {}
    best = str(others.idxmax())
    fm = results[results["model"] == FM].set_index(["variant", "seed"])["macro_f1"]
    ot = results[results["model"] == best].set_index(["variant", "seed"])["macro_f1"]
    common = fm.index.intersection(ot.index)
    runs = [(predictions[(FM, v, s)]["truth"], predictions[(FM, v, s)]["pred"], predictions[(best, v, s)]["pred"])
            for v, s in common if (FM, v, s) in predictions and (best, v, s) in predictions]
    return {"fm": FM, "best_other": best, "fm_macro_f1_mean": float(fm.mean()), "best_other_macro_f1_mean": float(ot.mean()),
            "fm_wins": bool(fm.mean() > ot.mean()),
            "paired_t_test": paired_test(fm.loc[common].to_numpy(), ot.loc[common].to_numpy()),
            "bootstrap": bootstrap_difference(runs) if runs else None,
            "ranking": [(str(k), float(val)) for k, val in means.sort_values(ascending=False).items()]}


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)


def _save_predictions(predictions: dict, path: Path) -> None:
    arrays = {f"{m}|{v}|{s}|{what}": arr for (m, v, s), d in predictions.items() for what, arr in d.items()}
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def spec_from_dict(d: dict) -> EvaluationSpec:
    """An :class:`EvaluationSpec` from a parsed YAML/JSON mapping (unknown keys are an error)."""
    allowed = set(EvaluationSpec.__dataclass_fields__)
    unknown = set(d) - allowed
    if unknown:
        raise ValueError(f"Unknown evaluation spec keys {sorted(unknown)}; accepted keys: {sorted(allowed)}.")
    return EvaluationSpec(**d)


__all__ = ["EvaluationSpec", "PRESETS", "GRAPH_MODELS", "ALL_MODELS", "run_evaluation", "summarize",
           "compare_with_best", "cell_embeddings", "spec_from_dict"]
