"""The main job, end to end on real data: build → pretrain → fine-tune → signaling → report.

The model is the default :class:`~modeling_celltosg.CellTOSGConfig` (CPU-sized) trained with the default
:class:`~omnicelltosg.train.PretrainingArguments` / :class:`~omnicelltosg.train.FinetuningArguments`
(2 cores, < 20 minutes for the whole job); the fine-tuning tasks are entries of
:data:`omnicelltosg.tasks.TASKS`. Every number in ``metrics.json`` and ``report.md`` is measured in the
run that writes them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

from dataset_script.build.pipeline import build_dataset
from dataset_script.build.recipe import DEFAULT_RECIPE, load_recipe
from dataset_script.cohorts.loader import (
    expression_tensors,
    gene_panels,
    load_cells,
    load_cohort,
    load_graph,
)
from dataset_script.files import atomic_directory, atomic_write_text
from omnicelltosg.evaluation.baselines import logistic_regression, majority_class
from omnicelltosg.plotting.curves import plot_curves
from omnicelltosg.tasks import TaskSpec, get_task
from omnicelltosg.train import (
    FinetuningArguments,
    PretrainingArguments,
    finetune,
    pretrain,
)
from omnicelltosg.workflows.report import write_model_card, write_report

#: The demo's fine-tuning tasks (names in :data:`omnicelltosg.tasks.TASKS`); each uses its first split
#: variant with the demo's seed as the split seed.
DEMO_TASKS = ("demo_onek1k_cell_type", "demo_kang_condition")
#: The signaling analysis (:func:`omnicelltosg.workflows.signaling.run_signaling`, its default method and
#: parameters): which task's fine-tuned model, the cohort, the two groups compared and the known biology
#: (:data:`omnicelltosg.workflows.signaling.KNOWN_BIOLOGY`) that validates the result.
SIGNALING = {"task": "demo_kang_condition", "conditions": {"dataset_id": "kang2018_muscat"}, "case": "stim",
             "control": "control", "known_biology": "type_i_interferon"}
#: Model hyper-parameters recorded in ``metrics.json``.
MODEL_FIELDS = ("hidden_size", "num_layers", "layer_type", "num_heads", "dropout", "degree_loss_weight")


def _log(msg: str) -> None:
    print(f"[omnicelltosg demo] {msg}", flush=True)


def _same_recipe(stored: dict | None, recipe) -> bool:
    """Whether a build's recorded recipe is ``recipe``: the record is validated again first, so recipe keys
    added since that build (with their defaults) do not count as a difference."""
    from dataset_script.build.recipe import Recipe

    try:
        return stored is not None and Recipe.model_validate(stored).model_dump(mode="json") == recipe.model_dump(
            mode="json")
    except ValueError:  # pydantic's ValidationError: a key the recipe no longer has
        return False


def ensure_dataset(recipe: Path, data_dir: Path, dataset_dir: Path, *, rebuild: bool) -> dict:
    """Build the dataset unless ``dataset_dir`` already holds a build of the same recipe (resume)."""
    info_path = dataset_dir / "build_info.json"
    if info_path.exists() and not rebuild:
        info = json.loads(info_path.read_text())
        if _same_recipe(info.get("recipe_content"), load_recipe(recipe)):
            _log(f"dataset already built from this recipe at {dataset_dir}; reusing it (--rebuild to redo)")
            return info
    return build_dataset(recipe, data_dir, dataset_dir, overwrite=True)


def _baseline_metrics(run, y: np.ndarray, splits: dict) -> dict:
    """Test accuracy / macro-F1 of a :class:`~omnicelltosg.evaluation.baselines.ModelRun`, plus what it chose."""
    truth = y[splits["test"]]
    return {"accuracy": float(accuracy_score(truth, run.test_pred)),
            "macro_f1": float(f1_score(truth, run.test_pred, average="macro")),
            "val_macro_f1": run.val_macro_f1, **run.hparams}


def _save_checkpoint(model, path: Path) -> Path:
    """``save_pretrained`` into ``path`` atomically (an interrupted save leaves no half checkpoint)."""
    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
    return path


def _round_trip_difference(model, checkpoint: Path, x, m, graph) -> float:
    """Max |Δ| of the encoder's last hidden state between ``model`` and ``checkpoint`` loaded through
    ``AutoModel`` (first 4 meta-cells); 0.0 = identical outputs."""
    from transformers import AutoModel

    reloaded = AutoModel.from_pretrained(checkpoint).eval()
    model.eval()
    with torch.no_grad():
        a = model.celltosg(expression=x[:4], graph=graph, measured_mask=m[:4]).last_hidden_state
        b = reloaded(expression=x[:4], graph=graph, measured_mask=m[:4]).last_hidden_state
    return float((a - b).abs().max())


def _pretrain_stage(dataset_dir: Path, graph, cohorts: dict, metrics: dict, out: Path,
                    args: PretrainingArguments) -> Path:
    """Pretrain on every meta-cell except the fine-tuning test meta-cells; fills ``metrics["pretraining"]``
    and ``metrics["model_settings"]``, writes the checkpoint, its model card and the loss figure."""
    from modeling_celltosg import CellTOSGConfig, CellTOSGForPreTraining

    test_ids = {cid for c in cohorts.values() for cid in np.asarray(c.cells["cell_id"])[c.splits["test"]]}
    all_cells = load_cells(dataset_dir)
    keep = [i for i, cid in enumerate(all_cells["cell_id"]) if cid not in test_ids]
    x_pre, m_pre = expression_tensors(all_cells.select(keep), graph.num_transcripts, gene_panels(dataset_dir))
    config = CellTOSGConfig.for_graph(graph)
    metrics["model_settings"] = {k: getattr(config, k) for k in MODEL_FIELDS}
    model = CellTOSGForPreTraining(config)
    pre = pretrain(model, x_pre, m_pre, graph, args)
    pretrained_dir = _save_checkpoint(model, out / "checkpoints" / "pretrained")
    # Round trip: the saved encoder, loaded through the Auto class, gives identical outputs.
    roundtrip = _round_trip_difference(model, pretrained_dir, x_pre, m_pre, graph)
    metrics["pretraining"] = {
        "auroc": pre["auroc"], "ap": pre["ap"], "n_train_edges": pre["n_train_edges"],
        "n_test_edges": pre["n_test_edges"], "n_cells": pre["n_cells"],
        "negatives": "training: half random, half degree-matched; AUROC/AP above: random negatives",
        "evaluation": pre["evaluation"],
        "settings": args.to_dict(), "loss_first10": float(np.mean(pre["loss_curve"][:10])),
        "loss_last10": float(np.mean(pre["loss_curve"][-10:])), "seconds_per_step": pre["seconds_per_step"],
        "save_load_max_abs_diff": roundtrip, "save_load_identical": roundtrip == 0.0,
        "excluded_test_metacells": len(test_ids),
    }
    write_model_card(pretrained_dir, name="pretrained (PPI edge masking)", config=config, pretraining=args,
                     dataset=metrics["dataset"],
                     training_data=f"{pre['n_cells']:,} meta-cells of all datasets except the fine-tuning test "
                                   f"meta-cells; {args.steps} steps",
                     metrics={"held-out edge AUROC (random negatives)": pre["auroc"],
                              "held-out edge AP (random negatives)": pre["ap"],
                              "held-out PPI edges": pre["n_test_edges"]})
    plot_curves({"CellTOSG-FM": {"loss": pre["loss_curve"]}}, out / "pretraining_loss.png",
                title="CellTOSG-FM pretraining (PPI edge masking)", xlabel="step")
    return pretrained_dir


def _finetune_task(task: TaskSpec, cohort, graph, pretrained_dir: Path, out: Path, args: FinetuningArguments,
                   pretraining: PretrainingArguments, dataset: dict):
    """Fine-tune the pretrained model on one task next to the expression baselines; writes the checkpoint,
    its model card and the curves figure. Returns (task metrics, checkpoint folder)."""
    from modeling_celltosg import CellTOSGForCellClassification

    name = task.name
    x, m, y = cohort.tensors()
    names = cohort.label_names
    clf = CellTOSGForCellClassification.from_pretrained(
        pretrained_dir, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)})
    splits = cohort.splits
    res = finetune(clf, x, m, y, graph, args, train_idx=torch.as_tensor(splits["train"]),
                   val_idx=torch.as_tensor(splits["validation"]), test_idx=torch.as_tensor(splits["test"]))
    measured_cols = m.any(0).numpy()  # genes measured by the cohort's dataset(s)
    xn, yn = x.numpy()[:, measured_cols], y.numpy()
    metrics = {
        "label_column": cohort.label_column, "labels": names, "splits": cohort.summary(),
        "celltosg_fm": {"accuracy": res["accuracy"], "macro_f1": res["macro_f1"], "best_epoch": res["best_epoch"],
                        "val_macro_f1_curve": res["val_macro_f1_curve"]},
        "majority_class": _baseline_metrics(majority_class(xn, yn, splits, num_classes=len(names)), yn, splits),
        "logistic_regression": _baseline_metrics(
            logistic_regression(xn, yn, splits, num_classes=len(names), seed=args.seed), yn, splits),
    }
    plot_curves({"CellTOSG-FM": {"train loss": res["train_loss_curve"], "validation macro-F1": res["val_macro_f1_curve"]}},
                out / f"finetune_{name}.png", title=f"Fine-tuning: {name}", xlabel="epoch")
    checkpoint = _save_checkpoint(clf, out / "checkpoints" / name)
    write_model_card(checkpoint, name=f"fine-tuned: {name}", config=clf.config, pretraining=pretraining,
                     dataset=dataset,
                     training_data=f"{task.conditions} → `{cohort.label_column}`; donor-level split "
                                   f"(train {len(splits['train'])} / validation "
                                   f"{len(splits['validation'])} / test {len(splits['test'])} meta-cells)",
                     metrics={"test accuracy": metrics["celltosg_fm"]["accuracy"],
                              "test macro-F1": metrics["celltosg_fm"]["macro_f1"],
                              "logistic regression test macro-F1": metrics["logistic_regression"]["macro_f1"],
                              "majority class test macro-F1": metrics["majority_class"]["macro_f1"]})
    return metrics, checkpoint


def _signaling_stage(checkpoint: Path, cohort, dataset_dir: Path, data_dir: Path, out: Path) -> dict:
    """The default signaling method (:func:`omnicelltosg.workflows.signaling.run_signaling`: pseudobulk
    evidence + attributions of the fine-tuned model + prize-collecting Steiner tree, with the fold-change
    baseline and the paper method scored next to it) on the Kang cohort; writes ``out/signaling/`` and
    returns the metrics the report shows."""
    from omnicelltosg.workflows.signaling import run_signaling

    s = run_signaling(dataset_dir, checkpoint, out / "signaling", conditions=SIGNALING["conditions"],
                      group_column=cohort.label_column, case=SIGNALING["case"], control=SIGNALING["control"],
                      knowledge_dir=Path(data_dir) / "knowledge", known_biology=SIGNALING["known_biology"],
                      title="Kang 2018 PBMC: IFN-β stim vs control")
    return {
        "case": SIGNALING["case"], "control": SIGNALING["control"], "method": s["method"],
        "known_biology": s["known_biology"], "evidence": {k: s["evidence"][k] for k in ("level", "reason")},
        "n_metacells": s["cohort"]["n_metacells"], "n_genes": s["cohort"]["genes"],
        "n_ppi_edges": s["cohort"]["ppi_edges"], "network": s["network"], "validation": s["validation"],
        "files": {k: str(Path("signaling") / v) for k, v in s["files"].items()},
    }


def run_demo(data_dir: Path, out: Path, *, recipe: Path = DEFAULT_RECIPE, seed: int = 0, rebuild: bool = False) -> dict:
    """Run the whole job and write ``report.md``, ``metrics.json``, figures and checkpoints into ``out``.

    ``seed`` seeds the model initialisation, pretraining, fine-tuning, the baselines and the split of
    each demo task (:data:`DEMO_TASKS`).

    Raises
    ------
    FileNotFoundError
        If the recipe is missing or ``data_dir`` lacks the inputs it names (before ``out`` is created).
    ValueError
        If the recipe is not valid (before ``out`` is created).
    """
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    out = Path(out)  # created by the build below, after the recipe and inputs are checked (no stub on an error)
    timings: dict[str, float] = {}
    metrics: dict = {"seed": seed, "model_settings": {}}

    _log("1/6 build the TOSG dataset (ingest → SEACells meta-cells → entity graph → MiniLM priors → Parquet)")
    t = time.perf_counter()
    dataset_dir = out / "dataset"
    info = ensure_dataset(Path(recipe), Path(data_dir), dataset_dir, rebuild=rebuild)
    out.mkdir(parents=True, exist_ok=True)
    timings["build"] = time.perf_counter() - t
    metrics["dataset"] = {k: info[k] for k in ("entity_version", "n_transcripts", "n_proteins", "n_internal_edges",
                                                "n_ppi_edges", "ppi_source", "n_metacells", "datasets", "configs")}

    _log("2/6 load the shared graph and the cohorts (donor-level splits)")
    graph, _ = load_graph(dataset_dir)
    tasks = [get_task(name) for name in DEMO_TASKS]
    cohorts = {task.name: load_cohort(dataset_dir, **task.cohort_arguments({**task.split_variants[0], "seed": seed}))
               for task in tasks}
    metrics["cohorts"] = {name: c.summary() for name, c in cohorts.items()}

    _log("3/6 pretrain CellTOSG-FM by PPI edge masking")
    t = time.perf_counter()
    pretraining = PretrainingArguments(seed=seed)
    pretrained_dir = _pretrain_stage(dataset_dir, graph, cohorts, metrics, out, pretraining)
    timings["pretrain"] = time.perf_counter() - t

    _log("4/6 fine-tune for cell type (OneK1K) and condition (Kang), with baselines")
    t = time.perf_counter()
    metrics["finetuning"], finetuned = {}, {}
    for task in tasks:
        task_metrics, checkpoint = _finetune_task(task, cohorts[task.name], graph, pretrained_dir, out,
                                                 FinetuningArguments(seed=seed), pretraining, metrics["dataset"])
        metrics["finetuning"][task.name], finetuned[task.name] = task_metrics, checkpoint
    timings["finetune"] = time.perf_counter() - t

    _log("5/6 signaling inference: Kang IFN-beta stim vs control")
    t = time.perf_counter()
    metrics["signaling"] = _signaling_stage(finetuned[SIGNALING["task"]], cohorts[SIGNALING["task"]], dataset_dir,
                                            Path(data_dir), out)
    timings["signaling"] = time.perf_counter() - t

    timings["total"] = time.perf_counter() - t_start
    metrics["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    metrics["torch_threads"] = torch.get_num_threads()
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=_json_default))
    write_report(metrics, out / "report.md")
    _log(f"6/6 done in {timings['total'] / 60:.1f} min: {out / 'report.md'}")
    return metrics


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
