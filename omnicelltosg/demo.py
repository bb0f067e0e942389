"""The main job, end to end on real data: build → pretrain → fine-tune → signaling → report.

Every number in ``metrics.json`` and ``report.md`` is measured in the run that writes them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

from dataset_script.loader import expression_tensors, gene_panels, load_cells, load_cohort, load_graph
from dataset_script.pipeline import DEFAULT_RECIPE, build_dataset, load_recipe

from .baselines import logistic_regression, majority_class
from .figures import plot_curves
from .report import write_model_card, write_report

#: Demo model and training settings (CPU, 2 cores, < 20 minutes for the whole job).
MODEL_SETTINGS = {"hidden_size": 16, "num_layers": 2, "layer_type": "gat", "num_heads": 2, "dropout": 0.0,
                  "mask_ratio": 0.1, "degree_loss_weight": 0.1}
PRETRAIN_SETTINGS = {"steps": 60, "batch_size": 8, "lr": 3e-3, "held_out_fraction": 0.1}
FINETUNE_SETTINGS = {"epochs": 4, "batch_size": 16, "lr": 3e-3}

TASKS = (
    {"name": "onek1k_cell_type", "conditions": {"dataset_id": "onek1k_scdesignpop"}, "label_column": "cell_type"},
    # Kang has two donors: test = one donor, validation carved from the other donor's meta-cells (flagged).
    {"name": "kang_condition", "conditions": {"dataset_id": "kang2018_muscat"}, "label_column": "condition",
     "validation_by": "meta-cell"},
)
# top_k 200: on the 1,267-gene Kang panel the 40 most important proteins share few STRING edges
# (their largest connected component has 3 proteins); 200 gives a readable core network.
SIGNALING = {"task": "kang_condition", "case": "stim", "control": "control", "top_k": 200, "min_leaves": 2}


def _log(msg: str) -> None:
    print(f"[omnicelltosg demo] {msg}", flush=True)


def ensure_dataset(recipe: Path, data_dir: Path, dataset_dir: Path, *, rebuild: bool) -> dict:
    """Build the dataset unless ``dataset_dir`` already holds a build of the same recipe (resume)."""
    info_path = dataset_dir / "build_info.json"
    if info_path.exists() and not rebuild:
        info = json.loads(info_path.read_text())
        if info.get("recipe_content") == load_recipe(recipe):
            _log(f"dataset already built from this recipe at {dataset_dir}; reusing it (--rebuild to redo)")
            return info
    return build_dataset(recipe, data_dir, dataset_dir, overwrite=True)


def _baseline_metrics(run, y: np.ndarray, splits: dict) -> dict:
    """Test accuracy / macro-F1 of a :class:`~omnicelltosg.baselines.ModelRun`, plus what it chose."""
    truth = y[splits["test"]]
    return {"accuracy": float(accuracy_score(truth, run.test_pred)),
            "macro_f1": float(f1_score(truth, run.test_pred, average="macro")),
            "val_macro_f1": run.val_macro_f1, **run.hparams}


def run_demo(data_dir: Path, out: Path, *, recipe: Path = DEFAULT_RECIPE, seed: int = 0, rebuild: bool = False) -> dict:
    """Run the whole job and write ``report.md``, ``metrics.json`` and figures into ``out``.

    Raises
    ------
    FileNotFoundError
        If ``data_dir`` lacks the inputs the recipe names.
    """
    from modeling_celltosg import CellTOSGConfig, CellTOSGForCellClassification, CellTOSGForPretraining
    from modeling_celltosg.signaling import edge_attention, infer_signaling, node_expression, write_signaling
    from modeling_celltosg.training import finetune, pretrain
    from transformers import AutoModel

    t_start = time.perf_counter()
    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    metrics: dict = {"seed": seed, "model_settings": MODEL_SETTINGS}

    _log("1/6 build the TOSG dataset (ingest → SEACells meta-cells → entity graph → MiniLM priors → Parquet)")
    t = time.perf_counter()
    dataset_dir = out / "dataset"
    info = ensure_dataset(Path(recipe), Path(data_dir), dataset_dir, rebuild=rebuild)
    timings["build"] = time.perf_counter() - t
    metrics["dataset"] = {k: info[k] for k in ("entity_version", "n_transcripts", "n_proteins", "n_internal_edges",
                                                "n_ppi_edges", "ppi_source", "n_metacells", "datasets", "configs")}

    _log("2/6 load the shared graph and the cohorts (donor-level splits)")
    graph, entities = load_graph(dataset_dir)
    cohorts = {task["name"]: load_cohort(dataset_dir, conditions=task["conditions"],
                                         label_column=task["label_column"], seed=seed,
                                         validation_by=task.get("validation_by", "donor")) for task in TASKS}
    metrics["cohorts"] = {name: c.summary() for name, c in cohorts.items()}

    _log("3/6 pretrain CellTOSG-FM by PPI edge masking")
    t = time.perf_counter()
    test_ids = {cid for c in cohorts.values() for cid in np.asarray(c.cells["cell_id"])[c.splits["test"]]}
    all_cells = load_cells(dataset_dir)
    keep = [i for i, cid in enumerate(all_cells["cell_id"]) if cid not in test_ids]
    x_pre, m_pre = expression_tensors(all_cells.select(keep), graph.num_transcripts, gene_panels(dataset_dir))
    config = CellTOSGConfig.for_graph(graph, **MODEL_SETTINGS)
    model = CellTOSGForPretraining(config)
    pre = pretrain(model, x_pre, m_pre, graph, seed=seed, **PRETRAIN_SETTINGS)
    pretrained_dir = out / "checkpoints" / "pretrained"
    model.save_pretrained(pretrained_dir)
    # Round trip: the saved encoder, loaded through the Auto class, gives identical outputs.
    reloaded = AutoModel.from_pretrained(pretrained_dir).eval()
    model.eval()
    with torch.no_grad():
        a = model.celltosg(expression=x_pre[:4], graph=graph, measured_mask=m_pre[:4]).last_hidden_state
        b = reloaded(expression=x_pre[:4], graph=graph, measured_mask=m_pre[:4]).last_hidden_state
    roundtrip = float((a - b).abs().max())
    timings["pretrain"] = time.perf_counter() - t
    metrics["pretraining"] = {
        "auroc": pre["auroc"], "ap": pre["ap"], "n_train_edges": pre["n_train_edges"],
        "n_test_edges": pre["n_test_edges"], "n_cells": pre["n_cells"],
        "negatives": "training: half random, half degree-matched; AUROC/AP above: random negatives",
        "evaluation": pre["evaluation"],
        "settings": PRETRAIN_SETTINGS, "loss_first10": float(np.mean(pre["loss_curve"][:10])),
        "loss_last10": float(np.mean(pre["loss_curve"][-10:])), "seconds_per_step": pre["seconds_per_step"],
        "save_load_max_abs_diff": roundtrip, "save_load_identical": roundtrip == 0.0,
        "excluded_test_metacells": len(test_ids),
    }
    write_model_card(pretrained_dir, name="pretrained (PPI edge masking)", config=config, dataset=metrics["dataset"],
                     training_data=f"{pre['n_cells']:,} meta-cells of all datasets except the fine-tuning test "
                                   f"meta-cells; {PRETRAIN_SETTINGS['steps']} steps",
                     metrics={"held-out edge AUROC (random negatives)": pre["auroc"],
                              "held-out edge AP (random negatives)": pre["ap"],
                              "held-out PPI edges": pre["n_test_edges"]})
    plot_curves({"loss": pre["loss_curve"]}, out / "pretraining_loss.png", title="CellTOSG-FM pretraining (PPI edge masking)",
                xlabel="step")

    _log("4/6 fine-tune for cell type (OneK1K) and condition (Kang), with baselines")
    t = time.perf_counter()
    metrics["finetuning"] = {}
    finetuned = {}
    for task in TASKS:
        cohort = cohorts[task["name"]]
        x, m, y = cohort.tensors()
        clf = CellTOSGForCellClassification.from_pretrained(
            pretrained_dir, num_labels=len(cohort.label_names),
            id2label=dict(enumerate(cohort.label_names)), label2id={n: i for i, n in enumerate(cohort.label_names)})
        res = finetune(clf, x, m, y, graph, train_idx=torch.as_tensor(cohort.splits["train"]),
                       val_idx=torch.as_tensor(cohort.splits["validation"]),
                       test_idx=torch.as_tensor(cohort.splits["test"]), seed=seed, **FINETUNE_SETTINGS)
        measured_cols = m.any(0).numpy()  # genes measured by the cohort's dataset(s)
        xn, yn = x.numpy()[:, measured_cols], y.numpy()
        metrics["finetuning"][task["name"]] = {
            "label_column": task["label_column"], "labels": cohort.label_names, "splits": cohort.summary(),
            "celltosg_fm": {"accuracy": res["accuracy"], "macro_f1": res["macro_f1"], "best_epoch": res["best_epoch"],
                            "val_macro_f1_curve": res["val_macro_f1_curve"]},
            "majority_class": _baseline_metrics(
                majority_class(xn, yn, cohort.splits, num_classes=len(cohort.label_names)), yn, cohort.splits),
            "logistic_regression": _baseline_metrics(
                logistic_regression(xn, yn, cohort.splits, num_classes=len(cohort.label_names), seed=seed),
                yn, cohort.splits),
        }
        plot_curves({"train loss": res["train_loss_curve"], "validation macro-F1": res["val_macro_f1_curve"]},
                    out / f"finetune_{task['name']}.png", title=f"Fine-tuning: {task['name']}", xlabel="epoch")
        clf.save_pretrained(out / "checkpoints" / task["name"])
        fm = metrics["finetuning"][task["name"]]
        write_model_card(out / "checkpoints" / task["name"], name=f"fine-tuned: {task['name']}", config=clf.config,
                         dataset=metrics["dataset"],
                         training_data=f"{task['conditions']} → `{task['label_column']}`; donor-level split "
                                       f"(train {len(cohort.splits['train'])} / validation "
                                       f"{len(cohort.splits['validation'])} / test {len(cohort.splits['test'])} meta-cells)",
                         metrics={"test accuracy": fm["celltosg_fm"]["accuracy"],
                                  "test macro-F1": fm["celltosg_fm"]["macro_f1"],
                                  "logistic regression test macro-F1": fm["logistic_regression"]["macro_f1"],
                                  "majority class test macro-F1": fm["majority_class"]["macro_f1"]})
        finetuned[task["name"]] = (clf, x, m, cohort)
    timings["finetune"] = time.perf_counter() - t

    _log("5/6 signaling inference: Kang IFN-beta stim vs control")
    t = time.perf_counter()
    clf, x, m, cohort = finetuned[SIGNALING["task"]]
    pairs, weights = edge_attention(clf, x, m, graph)
    prot_expr = node_expression(x.numpy(), graph)
    symbols = entities["symbol"].to_numpy()[graph.num_transcripts:]
    groups = np.asarray(cohort.cells["condition"])
    result = infer_signaling(weights, pairs, prot_expr, groups, case=SIGNALING["case"], control=SIGNALING["control"],
                             symbols=symbols, num_transcripts=graph.num_transcripts, top_k=SIGNALING["top_k"],
                             min_leaves=SIGNALING["min_leaves"])
    paths = write_signaling(result, out / "signaling", title="Kang 2018 PBMC: IFN-β stim vs control")
    nodes = result.nodes
    metrics["signaling"] = {
        **SIGNALING, "n_metacells": int(len(groups)), "n_pairs_scored": int(pairs.shape[1]),
        "n_core_nodes": int(result.core.number_of_nodes()), "n_core_edges": int(result.core.number_of_edges()),
        "n_significant_fdr05": int(nodes["significant"].sum()),
        "top_nodes": nodes.head(15)[["symbol", "importance_case", "log2_fold_change", "fdr"]].to_dict("records"),
        "files": {k: str(Path(v).relative_to(out)) for k, v in paths.items()},
    }
    timings["signaling"] = time.perf_counter() - t

    timings["total"] = time.perf_counter() - t_start
    metrics["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    metrics["torch_threads"] = torch.get_num_threads()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
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
