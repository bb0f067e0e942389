"""``omnicelltosg evaluate``: every model on the SAME donor-level splits, selected on validation only,
scored once on test, repeated over seeds, with statistics that say where CellTOSG-FM does not win.

Models (paper §2.4 and ARCHITECTURE.md §7; :data:`omnicelltosg.tasks.GRAPH_MODELS`):

==========================  ============  ====================  ==========  =============================
name                        architecture  node identity         pretrained  what it tests
==========================  ============  ====================  ==========  =============================
``celltosg_fm``             v2 (GAT)      text priors (MiniLM)  yes         CellTOSG-FM (wide & deep)
``celltosg_wide_only``      v2, no graph  —                     no          the linear path alone
``celltosg_deep_only``      v2, no wide   text priors           yes         the graph part alone
``celltosg_no_priors``      v2 (GAT)      learned embedding     yes         do the priors help?
``celltosg_scratch``        v2 (GAT)      text priors           no          does pretraining help?
``celltosg_v1``             v1 (GAT)      text priors           yes         the paper-style design
``celltosg_fm_one_se``      the FM's run  (no training of its own)          the one-SE rule instead of
                                                                            the validation maximum
``gcn`` / ``gat`` / ``unimp``  v1           learned embedding     no          GNN baselines
``mlp``                     expression    —                     no          the paper's DNN
``logistic_regression``     expression    —                     no          linear baseline
``majority_class``          —             —                     no          chance
==========================  ============  ====================  ==========  =============================

Every model trained by gradient descent (graph models and the MLP) gets the same budget,
:attr:`EvaluationSettings.finetuning` (epoch cap, early stopping on validation macro-F1, AdamW with weight
decay, warm-up + cosine schedule, optional class weights) for each learning rate of
:attr:`EvaluationSettings.learning_rates` (the best on validation kept); logistic regression gets its
``C`` grid, solved to convergence. Expression baselines are in :mod:`omnicelltosg.evaluation.baselines`.
Pretraining runs once per split, architecture, layer type and node identity on every meta-cell of the
dataset EXCEPT that split's test meta-cells.

A run = (split variant, seed) of a :class:`~omnicelltosg.tasks.TaskSpec`. Split variants are
``load_cohort`` arguments: split seeds, or explicit ``test_donors`` (e.g. Kang: each of the two donors as
test once). A cohort split at the meta-cell level (no donors) is flagged in every output.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from filelock import FileLock, Timeout

from dataset_script.files import atomic_directory, atomic_file, atomic_write_text
from omnicelltosg.evaluation.baselines import EXPRESSION_BASELINES, ModelRun
from omnicelltosg.evaluation.metrics import (
    above_chance,
    bootstrap_difference,
    classification_metrics,
    paired_test,
)
from omnicelltosg.tasks import ABLATIONS, DERIVED_FROM_FM, FM, GRAPH_MODELS, TaskSpec
from omnicelltosg.train import FinetuningArguments, PretrainingArguments
from omnicelltosg.train.pretraining import check_objective

#: Lock file an evaluation holds in its output folder while it writes there (one writer per folder).
LOCK_NAME = ".evaluate.lock"
#: Fine-tuning learning rates an evaluation tries for every model trained by gradient descent (graph models
#: and the MLP), the best on validation kept.
LEARNING_RATE_GRID = (1e-3, 3e-3, 1e-2)
#: The per-split pretraining of an evaluation: issue 18's recipe — masked-expression modelling (15% of each
#: meta-cell's measured genes) together with masked PPI edges scored in every cell, 200 steps (the GAE
#: baseline's update count). Adopted by the pre-registered comparison in
#: ``benchmarks/results/evaluation_pt_recipe/`` (pretrained − scratch +0.011 over pbmc68k and Kang cell type,
#: where the 60-step edge-only pretraining gave ≈ 0). Its ``CellTOSGConfig`` fields are
#: :data:`PRETRAINING_MODEL`.
PRETRAINING = PretrainingArguments(steps=200, gene_mask_ratio=0.15)
#: ``CellTOSGConfig`` fields of the pretraining model of :data:`PRETRAINING` (the masked-expression head and
#: per-cell edge scoring); they do not change the fine-tuned classifier.
PRETRAINING_MODEL = {"expression_loss_weight": 1.0, "per_cell_edges": True}


def _non_default_config_fields(fields_: Mapping) -> dict:
    """``fields_`` without the entries equal to the ``CellTOSGConfig`` defaults (one spelling per setting:
    ``{"per_cell_edges": False}`` and ``{}`` are the same model, and a folder must resume under either)."""
    from modeling_celltosg import CellTOSGConfig

    defaults = CellTOSGConfig().to_dict()
    return {k: v for k, v in fields_.items() if k not in defaults or defaults[k] != v}


@dataclass(frozen=True)
class EvaluationSettings:
    """How the models of an evaluation are trained: ONE budget for every model trained by gradient descent.

    Attributes:
        pretraining: the per-split pretraining (its ``seed`` is replaced by the split's seed); default
            :data:`PRETRAINING`.
        finetuning: the training budget of the graph models AND the MLP baseline (epoch cap, early
            stopping, weight decay, warm-up + cosine schedule, class weights; its ``seed`` is replaced by
            the run's seed and its ``learning_rate`` by each of :attr:`learning_rates`); logistic regression
            takes its ``class_weighted``.
        learning_rates: learning rates tried per model and run, the best on validation kept; None =
            ``finetuning.learning_rate`` only.
        model: ``CellTOSGConfig`` fields set for every graph model (default: none, the config's defaults);
            each model's architecture, ``layer_type`` and ``prior_source`` come from
            :data:`omnicelltosg.tasks.GRAPH_MODELS`.
        pretraining_model: ``CellTOSGConfig`` fields of the PRETRAINING model only (default
            :data:`PRETRAINING_MODEL`); ``expression_loss_weight > 0`` must come with
            ``pretraining.gene_mask_ratio > 0`` and the other way round (checked by :func:`run_evaluation`).
            Entries equal to the config's defaults are dropped (one spelling per setting).
    """

    pretraining: PretrainingArguments = PRETRAINING
    pretraining_model: Mapping = field(default_factory=lambda: dict(PRETRAINING_MODEL))
    finetuning: FinetuningArguments = field(default_factory=FinetuningArguments)
    learning_rates: tuple[float, ...] | None = LEARNING_RATE_GRID
    model: Mapping = field(default_factory=dict)

    def learning_rate_grid(self) -> tuple[float, ...]:
        """The fine-tuning learning rates tried."""
        return tuple(self.learning_rates or (self.finetuning.learning_rate,))

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (for ``run_config.json`` and the report); an empty ``pretraining_model`` is
        left out, so folders made before that field existed (edge-only pretraining) still resume."""
        out = json.loads(json.dumps(asdict(self), default=str))
        out["pretraining_model"] = _non_default_config_fields(self.pretraining_model)
        if not out["pretraining_model"]:
            del out["pretraining_model"]
        return out


@dataclass
class _Variant:
    """One split variant's cohort and dense inputs, shared by its seeds: ``x``, ``m`` ``[M, Nt]``, ``y``
    ``[M]``, ``expression`` ``[M, G]`` (the measured genes only), ``test_ids`` (test meta-cell ids)."""

    index: int
    split: dict
    cohort: object
    x: torch.Tensor
    m: torch.Tensor
    y: torch.Tensor
    expression: np.ndarray
    test_ids: set


@dataclass
class _Progress:
    """What an evaluation folder holds so far — ``results.csv`` rows, ``predictions.npz`` (model, variant,
    seed) → {truth, pred, proba}, ``curves.json`` (model, variant) → curves — read back on resume and
    rewritten atomically after every run."""

    out: Path
    rows: list[dict] = field(default_factory=list)
    predictions: dict[tuple, dict] = field(default_factory=dict)
    curves: dict[tuple, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, out: Path) -> _Progress:
        progress = cls(out)
        if (out / "results.csv").exists():
            progress.rows = pd.read_csv(out / "results.csv").to_dict("records")
        if (out / "predictions.npz").exists():
            with np.load(out / "predictions.npz", allow_pickle=False) as z:
                for key in z.files:
                    model, v, seed, what = key.split("|")
                    progress.predictions.setdefault((model, int(v), int(seed)), {})[what] = z[key]
        if (out / "curves.json").exists():  # kept across resumes so the curves figure can be redrawn
            for key, c in json.loads((out / "curves.json").read_text()).items():
                name, v = key.rsplit("|", 1)
                progress.curves[(name, int(v))] = c
        return progress

    def done(self, name: str, v: int, seed: int) -> bool:
        return any(r["model"] == name and r["variant"] == v and r["seed"] == seed for r in self.rows)

    def add(self, row: dict, prediction: dict, curves: dict | None) -> None:
        """Record one finished run and rewrite the files."""
        self.rows.append(row)
        self.predictions[(row["model"], row["variant"], row["seed"])] = prediction
        if curves and (row["model"], row["variant"]) not in self.curves:
            self.curves[(row["model"], row["variant"])] = curves
            atomic_write_text(self.out / "curves.json",
                              json.dumps({f"{k[0]}|{k[1]}": c for k, c in self.curves.items()}, default=float))
        with atomic_file(self.out / "results.csv") as tmp:
            pd.DataFrame(self.rows).to_csv(tmp, index=False)
        arrays = {f"{m}|{v}|{s}|{what}": arr for (m, v, s), d in self.predictions.items() for what, arr in d.items()}
        with atomic_file(self.out / "predictions.npz") as tmp:
            np.savez_compressed(tmp, **arrays)


@torch.no_grad()
def cell_embeddings(model, expression: torch.Tensor, measured_mask: torch.Tensor, graph, batch_size: int = 16) -> np.ndarray:
    """Pooled cell representations ``[M, d]`` of a fine-tuned classifier (eval mode), for UMAPs."""
    model.eval()
    chunks = [model(expression[i:i + batch_size], graph, measured_mask=measured_mask[i:i + batch_size]).cell_embeddings
              for i in range(0, len(expression), batch_size)]
    return torch.cat(chunks).numpy()


def _pretrain(dataset: Path, graph, variant: _Variant, model_spec: dict, settings: EvaluationSettings,
              out: Path) -> Path:
    """Pretrain on every meta-cell of the dataset except the variant's test meta-cells; returns the
    checkpoint folder (reused if it exists: resume)."""
    from dataset_script.cohorts.loader import (
        expression_tensors,
        gene_panels,
        load_cells,
    )
    from modeling_celltosg import CellTOSGConfig, CellTOSGForPreTraining
    from omnicelltosg.train import pretrain

    layer_type, prior_source, arch = model_spec["layer_type"], model_spec["prior_source"], model_spec["architecture"]
    ckpt = out / "checkpoints" / f"split{variant.index}" / f"pretrained_{arch}_{layer_type}_{prior_source}"
    if (ckpt / "config.json").exists():  # resume
        return ckpt
    cells = load_cells(dataset)
    keep = [i for i, cid in enumerate(cells["cell_id"]) if cid not in variant.test_ids]
    x, m = expression_tensors(cells.select(keep), graph.num_transcripts, gene_panels(dataset))
    config = CellTOSGConfig.for_graph(graph, **{**_model_config(model_spec, settings), **settings.pretraining_model})
    seed = int(variant.split.get("seed", variant.index))
    torch.manual_seed(seed)  # the initial weights too: without it a rerun pretrains a different model
    model = CellTOSGForPreTraining(config)
    pretrain(model, x, m, graph, settings.pretraining, seed=seed)
    with atomic_directory(ckpt) as tmp:
        model.save_pretrained(tmp)
    return ckpt


def _model_config(model_spec: dict, settings: EvaluationSettings, *, head: bool = False) -> dict:
    """``CellTOSGConfig`` fields of a :data:`GRAPH_MODELS` entry: its architecture variant, layer type and node
    identity, the evaluation's common ``settings.model``, and (``head=True``) its classifier switches."""
    from modeling_celltosg.configuration_celltosg import ARCHITECTURES

    fields_ = {**ARCHITECTURES[model_spec["architecture"]], "layer_type": model_spec["layer_type"],
               "prior_source": model_spec["prior_source"], **settings.model}
    return {**fields_, **(model_spec.get("head", {}) if head else {})}


def _graph_model_run(name: str, variant: _Variant, graph, pretrained: Path | None, settings: EvaluationSettings,
                     seed: int) -> tuple[ModelRun, object, list[ModelRun]]:
    """Fine-tune graph model ``name`` (from ``pretrained``, or from scratch when None) for each learning
    rate; keep the best on validation. Returns its run, the fine-tuned model, and the runs derived from
    the same training (:data:`omnicelltosg.tasks.DERIVED_FROM_FM`, for the FM; else none)."""
    from modeling_celltosg import CellTOSGConfig, CellTOSGForCellClassification
    from omnicelltosg.train import finetune

    spec, cohort = GRAPH_MODELS[name], variant.cohort
    labels = {"num_labels": len(cohort.label_names), "id2label": dict(enumerate(cohort.label_names)),
              "label2id": {n: i for i, n in enumerate(cohort.label_names)}}
    t0 = time.perf_counter()
    best = None
    for lr in settings.learning_rate_grid():
        torch.manual_seed(seed)
        if pretrained is not None:
            from transformers.utils import logging as hf_logging

            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # the new head's "MISSING" load report is expected here
            try:
                model = CellTOSGForCellClassification.from_pretrained(pretrained, **labels, **spec.get("head", {}))
            finally:
                hf_logging.set_verbosity(verbosity)
        else:
            config = CellTOSGConfig.for_graph(graph, **_model_config(spec, settings, head=True), **labels)
            model = CellTOSGForCellClassification(config)
        res = finetune(model, variant.x, variant.m, variant.y, graph, settings.finetuning,
                       train_idx=cohort.splits["train"], val_idx=cohort.splits["validation"],
                       test_idx=cohort.splits["test"], seed=seed, learning_rate=lr, one_se=name == FM)
        if best is None or res["val_macro_f1"] > best[0]["val_macro_f1"]:
            best = (res, lr, model)
    res, lr, model = best
    hparams = {"lr": lr, "epochs_run": res["epochs_run"], "steps": res["steps"],
               **({"wide C": res["wide"]["C"]} if res["wide"] else {}),
               **({"wide weight": res["best_output"]} if res.get("best_output") is not None else {})}
    seconds = time.perf_counter() - t0
    run = ModelRun(name, res["val_macro_f1"], res["test_predictions"], res["test_probabilities"], hparams,
                   best_epoch=res["best_epoch"],
                   curves={"train loss": res["train_loss_curve"], "validation macro-F1": res["val_macro_f1_curve"]},
                   seconds=seconds)
    derived = []
    if name == FM and res.get("one_se"):
        rule = res["one_se"]
        derived.append(ModelRun(
            DERIVED_FROM_FM[0], rule["val_macro_f1"], rule["test_predictions"], rule["test_probabilities"],
            {**hparams, "keeps linear (1-SE)": rule["keeps_linear"], "val difference": round(rule["difference"], 4),
             "val SE": round(rule["standard_error"], 4)},
            best_epoch=0 if rule["keeps_linear"] else res["best_epoch"], seconds=seconds))
    return run, model, derived


def _load_variant(dataset: Path, spec: TaskSpec, v: int) -> _Variant:
    from dataset_script.cohorts.loader import load_cohort

    cohort = load_cohort(dataset, **spec.cohort_arguments(v))
    x, m, y = cohort.tensors()
    return _Variant(v, spec.split_variants[v], cohort, x, m, y, x.numpy()[:, m.any(0).numpy()],
                    set(np.asarray(cohort.cells["cell_id"])[cohort.splits["test"]]))


def _result_row(spec: TaskSpec, name: str, variant: _Variant, seed: int, run: ModelRun) -> tuple[dict, dict]:
    """The ``results.csv`` row of one run (test metrics, split sizes, what was chosen) and its predictions."""
    cohort = variant.cohort
    truth = variant.y.numpy()[cohort.splits["test"]]
    metrics = classification_metrics(truth, run.test_pred, run.test_proba, cohort.label_names)
    row = {"task": spec.name, "model": name, "variant": variant.index, "seed": seed,
           "test_level": cohort.split.test_level, "validation_level": cohort.split.validation_level,
           "n_train": len(cohort.splits["train"]), "n_validation": len(cohort.splits["validation"]),
           "n_test": len(truth), "val_macro_f1": run.val_macro_f1,
           **{k: metrics[k] for k in ("accuracy", "macro_f1", "balanced_accuracy", "auroc")},
           **{f"f1[{k}]": val for k, val in metrics["per_class_f1"].items()},
           "hparams": json.dumps(run.hparams), "best_epoch": run.best_epoch, "seconds": run.seconds}
    return row, {"truth": truth, "pred": run.test_pred, "proba": run.test_proba}


def _fm_figures(model, variant: _Variant, graph, out: Path, seed: int) -> tuple[tuple, Path]:
    """On the first fine-tuned FM of the evaluation: UMAP inputs, the embedding heatmap, and the model
    saved as ``checkpoints/celltosg_fm_finetuned`` (with the run it came from)."""
    from omnicelltosg.plotting.evaluation import plot_embedding_heatmap

    umap_inputs = (cell_embeddings(model, variant.x, variant.m, graph), variant.expression, variant.cohort,
                   variant.index)
    heatmap = plot_embedding_heatmap(model, variant.x, variant.m, graph, variant.cohort, out / "embedding_heatmap.png",
                                     label_column=variant.cohort.label_column)
    with atomic_directory(out / "checkpoints" / "celltosg_fm_finetuned") as tmp:
        model.save_pretrained(tmp)
        (tmp / "evaluation_run.json").write_text(json.dumps({"variant": variant.index, "seed": seed,
                                                             "split": variant.split}))
    return umap_inputs, heatmap


def _train_missing_runs(dataset: Path, spec: TaskSpec, settings: EvaluationSettings, graph, progress: _Progress,
                        out: Path, log, variants: dict[int, _Variant]) -> tuple[tuple | None, Path | None]:
    """Train and score every (split variant, seed, model) of ``spec`` not yet in ``progress`` (``variants``:
    the loaded split variants); returns the UMAP inputs and heatmap of the FM when it was trained in this call."""
    umap_inputs, heatmap = None, None
    for v, variant in variants.items():
        for seed in spec.seeds:
            for name in spec.models:
                if progress.done(name, v, seed):
                    continue
                log(f"[evaluate {spec.name}] split {v} seed {seed}: {name}")
                if name in GRAPH_MODELS:
                    model_spec = GRAPH_MODELS[name]
                    pretrained = (_pretrain(dataset, graph, variant, model_spec, settings, out)
                                  if model_spec["pretrained"] else None)
                    run, model, derived = _graph_model_run(name, variant, graph, pretrained, settings, seed)
                    for extra in derived:  # rows derived from the same training run (no training of their own)
                        if not progress.done(extra.model, v, seed):
                            progress.add(*_result_row(spec, extra.model, variant, seed, extra), None)
                    if name == FM and umap_inputs is None:
                        umap_inputs, heatmap = _fm_figures(model, variant, graph, out, seed)
                else:
                    run = EXPRESSION_BASELINES[name](
                        variant.expression, variant.y.numpy(), variant.cohort.splits,
                        num_classes=len(variant.cohort.label_names), seed=seed, training=settings.finetuning,
                        learning_rates=settings.learning_rate_grid())
                row, prediction = _result_row(spec, name, variant, seed, run)
                progress.add(row, prediction, run.curves)
    return umap_inputs, heatmap


def _figures(spec: TaskSpec, progress: _Progress, variants: dict, comparison: dict, graph, out: Path,
             umap_inputs: tuple | None, heatmap: Path | None) -> dict:
    """Confusion matrices (FM and the best other model), training curves of the first split variant, the
    UMAPs and the embedding heatmap (redrawn from the saved FM when an earlier process trained it)."""
    from omnicelltosg.plotting.curves import plot_curves
    from omnicelltosg.plotting.evaluation import plot_confusions, plot_umaps

    label_names = variants[0].cohort.label_names
    figures = {"confusion": plot_confusions(progress.predictions, label_names, out,
                                            models=[FM, comparison.get("best_other")])}
    v0 = min((v for _, v in progress.curves), default=None)
    first = {name: progress.curves[(name, v)] for name, v in sorted(progress.curves) if v == v0}
    figures["curves"] = plot_curves(first, out / "curves.png", xlabel="epoch",
                                    title=f"{spec.name}: training curves (split {v0}, seed of the first run)"
                                    ) if first else None
    if umap_inputs is None and not (out / "umap.png").exists():
        umap_inputs = _umap_inputs_from_checkpoint(out / "checkpoints" / "celltosg_fm_finetuned", variants, graph)
    if umap_inputs is not None:
        figures["umap"] = plot_umaps(*umap_inputs, out / "umap.png", label_column=umap_inputs[2].label_column)
    elif (out / "umap.png").exists():  # resumed with the FM already trained: keep the earlier figure
        figures["umap"] = out / "umap.png"
    if heatmap is not None:
        figures["embedding_heatmap"] = heatmap
    elif (out / "embedding_heatmap.png").exists():
        figures["embedding_heatmap"] = out / "embedding_heatmap.png"
    return figures


@contextmanager
def _single_writer(out: Path):
    """Hold ``out/.evaluate.lock`` (``filelock``) while an evaluation writes ``out``: two processes on one
    folder would each rewrite ``results.csv`` from their own rows and lose the other's.

    Raises:
        RuntimeError: another process holds the lock (says which folder, and what to do).
    """
    lock = FileLock(out / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RuntimeError(f"{out} is being written by another `omnicelltosg evaluate` process (it holds "
                           f"{out / LOCK_NAME}); wait for it to finish, or write to another --out.") from None
    try:
        yield
    finally:
        lock.release()


def run_evaluation(dataset: str | Path, spec: TaskSpec, out: str | Path, *, settings: EvaluationSettings | None = None,
                   log=print) -> dict:
    """Run every model of ``spec`` on every (split variant, seed) and write the results into ``out``.

    Args:
        dataset: dataset folder (``omnicelltosg build`` output).
        spec: the task (:data:`omnicelltosg.tasks.TASKS` holds the named ones).
        out: the task's output folder.
        settings: how the models are trained (default :class:`EvaluationSettings`).
        log: called with one progress line per run.

    Returns {"results", "summary" (DataFrames), "comparison", "figures", "cohorts" (variant → Cohort)}.
    Writes ``results.csv`` (one row per model × run, all metrics), ``summary.csv`` (mean ± sd per
    model), ``comparison.json`` (FM vs the best other model: paired t-test over runs and
    bootstrap CI over test meta-cells), figures (``confusion_<model>.png``, ``curves.png``,
    ``umap.png``) and ``report.md``, each atomically. Rows already in ``results.csv`` (same model,
    variant, seed) are reused, so an interrupted evaluation resumes (``run_config.json`` records the
    settings, cohort and dataset; a folder made with others is refused). One process writes a folder at a
    time (``.evaluate.lock``).

    Raises:
        RuntimeError: another evaluation is writing ``out``.
        ValueError: unknown models, an empty plan, masked-expression pretraining without the expression
            head (or the head without masking), a folder holding runs made with other settings, or a
            cohort the loader rejects (e.g. a donor-level split with too few donors — the message says
            which option to use instead).
    """
    from dataset_script.cohorts.loader import check_cohort_arguments, load_graph
    from modeling_celltosg import CellTOSGConfig
    from omnicelltosg.workflows.evaluation_report import write_evaluation_report

    spec.validate()
    settings = settings or EvaluationSettings()
    pretraining_config = {**CellTOSGConfig().to_dict(), **settings.model, **settings.pretraining_model}
    check_objective(float(pretraining_config["expression_loss_weight"]), settings.pretraining)
    dataset, out = Path(dataset), Path(out)
    # Everything that can be wrong with the arguments is found before ``out`` is created: the cohort
    # arguments of every split variant, the dataset, a folder holding other runs, and every variant's
    # cohort (its query and split).
    for v in range(len(spec.split_variants)):
        check_cohort_arguments(**spec.cohort_arguments(v))
    graph, _ = load_graph(dataset)
    run_config = _check_resume(out, spec, settings, dataset)
    variants = {v: _load_variant(dataset, spec, v) for v in range(len(spec.split_variants))}
    out.mkdir(parents=True, exist_ok=True)
    with _single_writer(out):
        if run_config is not None:
            atomic_write_text(out / "run_config.json", json.dumps(run_config, indent=1))
        progress = _Progress.load(out)
        umap_inputs, heatmap = _train_missing_runs(dataset, spec, settings, graph, progress, out, log, variants)

        results = pd.DataFrame(progress.rows)
        summary = summarize(results)
        chance = {m: above_chance(g["balanced_accuracy"].to_numpy(), len(variants[0].cohort.label_names))
                  for m, g in results.groupby("model")}
        summary["above_chance_flag"] = summary["model"].map(lambda m: chance[m]["flag"])
        summary["test_level"] = summary["model"].map(results.groupby("model")["test_level"]
                                                     .agg(lambda t: "/".join(sorted(set(t)))))
        comparison = compare_with_best(results, progress.predictions)
        comparison["above_chance"] = chance
        comparison["test_level"] = "/".join(sorted(set(results["test_level"])))
        with atomic_file(out / "summary.csv") as tmp:
            summary.to_csv(tmp, index=False)
        atomic_write_text(out / "comparison.json", json.dumps(comparison, indent=2))
        figures = _figures(spec, progress, variants, comparison, graph, out, umap_inputs, heatmap)
        cohorts = {v: variant.cohort for v, variant in variants.items()}
        write_evaluation_report(spec, settings.to_dict(), cohorts, results, summary, comparison, figures, dataset,
                                out / "report.md")
        _update_model_card(out / "checkpoints" / "celltosg_fm_finetuned", spec, settings, summary, comparison, dataset)
        return {"results": results, "summary": summary, "comparison": comparison, "figures": figures, "cohorts": cohorts}


def _umap_inputs_from_checkpoint(checkpoint: Path, variants: dict[int, _Variant], graph) -> tuple | None:
    """UMAP inputs from the saved fine-tuned FM when the run that trained it was an earlier process (a
    resumed evaluation interrupted before its figures were drawn); ``None`` without a checkpoint."""
    run_file = checkpoint / "evaluation_run.json"
    if not run_file.exists():
        return None
    from modeling_celltosg import CellTOSGForCellClassification

    v = int(json.loads(run_file.read_text())["variant"])
    if v not in variants:
        return None
    variant = variants[v]
    model = CellTOSGForCellClassification.from_pretrained(checkpoint).eval()
    return cell_embeddings(model, variant.x, variant.m, graph), variant.expression, variant.cohort, v


def _update_model_card(checkpoint: Path, spec: TaskSpec, settings: EvaluationSettings, summary: pd.DataFrame,
                       comparison: dict, dataset: Path) -> None:
    """Render the fine-tuned FM checkpoint's ``README.md`` (model card) with this evaluation's metrics."""
    from modeling_celltosg import CellTOSGConfig
    from omnicelltosg.workflows.report import write_model_card

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
    versus = comparison.get("vs_logistic_regression")
    if versus and versus.get("bootstrap"):
        b = versus["bootstrap"]
        metrics["test macro-F1 − logistic regression (bootstrap 95% CI)"] = (
            f"{b['mean_difference']:+.3f} [{b['ci_low']:+.3f}, {b['ci_high']:+.3f}]")
    write_model_card(checkpoint, name=f"fine-tuned: {spec.name}", config=CellTOSGConfig.from_pretrained(checkpoint),
                     pretraining=settings.pretraining,
                     dataset={"entity_version": info["entity_version"], "n_transcripts": info["n_transcripts"],
                              "n_proteins": info["n_proteins"], "n_ppi_edges": info["n_ppi_edges"]},
                     training_data=f"`{json.dumps(spec.conditions)}` → `{spec.label_column or spec.task}`; split "
                                   f"variants {spec.split_variants}; this checkpoint: split {run['variant']}, "
                                   f"seed {run['seed']}",
                     metrics=metrics)


def _check_resume(out: Path, spec: TaskSpec, settings: EvaluationSettings, dataset: Path) -> dict | None:
    """What this folder's runs are made with (the ``run_config.json`` to write), or None when ``out``
    already records the same; refuse to add runs made with other settings, cohort or dataset to it (the
    results would mix incomparable runs). Writes nothing."""
    info = json.loads((dataset / "build_info.json").read_text()) if (dataset / "build_info.json").exists() else {}
    current = {"settings": settings.to_dict(), "conditions": spec.conditions, "task": spec.task,
               "label_column": spec.label_column, "split_variants": spec.split_variants,
               "cohort_kwargs": spec.cohort_kwargs, "dataset": str(dataset.resolve()),
               "entity_version": info.get("entity_version")}
    current = json.loads(json.dumps(current, default=str))
    path = out / "run_config.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != current:
            changed = sorted(k for k in current if previous.get(k) != current[k])
            raise ValueError(f"{out} holds runs made with different {changed}; use another --out, or the same "
                             f"settings to resume ({path}).")
        return None
    return current


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over runs of each test metric, per model (sorted by mean macro-F1, best first)."""
    metrics = ["macro_f1", "accuracy", "balanced_accuracy", "auroc", "val_macro_f1"]
    g = results.groupby("model")[metrics]
    summary = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_sd")).join(g.size().rename("n_runs"))
    return summary.sort_values("macro_f1_mean", ascending=False).reset_index()


def _fm_against(results: pd.DataFrame, predictions: dict, other: str) -> dict:
    """CellTOSG-FM − ``other`` on the runs both completed: paired t-test over runs, bootstrap CI over test rows."""
    fm = results[results["model"] == FM].set_index(["variant", "seed"])["macro_f1"]
    ot = results[results["model"] == other].set_index(["variant", "seed"])["macro_f1"]
    common = fm.index.intersection(ot.index)
    runs = [(predictions[(FM, v, s)]["truth"], predictions[(FM, v, s)]["pred"], predictions[(other, v, s)]["pred"])
            for v, s in common if (FM, v, s) in predictions and (other, v, s) in predictions]
    return {"other": other, "fm_macro_f1_mean": float(fm.loc[common].mean()),
            "other_macro_f1_mean": float(ot.loc[common].mean()),
            "paired_t_test": paired_test(fm.loc[common].to_numpy(), ot.loc[common].to_numpy()),
            "bootstrap": bootstrap_difference(runs) if runs else None}


def compare_with_best(results: pd.DataFrame, predictions: dict) -> dict:
    """CellTOSG-FM against the best other model by mean TEST macro-F1 (the hardest competitor, chosen
    after the fact on purpose: a conservative comparison for the FM), on the runs both completed; also
    against logistic regression (``vs_logistic_regression``: the issue's target) and against each of its
    ablations (``ablations``). The ablations (:data:`omnicelltosg.tasks.ABLATIONS`, parts of the FM) are not
    competitors: they are left out of ``ranking`` and ``best_other``."""
    if FM not in set(results["model"]):
        return {}
    means = results.groupby("model")["macro_f1"].mean()
    competitors = means.drop([FM, *[m for m in ABLATIONS if m in means.index]])
    out = {"fm": FM, "ablations": {m: _fm_against(results, predictions, m) for m in ABLATIONS if m in means.index}}
    if "logistic_regression" in means.index:
        out["vs_logistic_regression"] = _fm_against(results, predictions, "logistic_regression")
    if competitors.empty:
        return out
    best = str(competitors.idxmax())
    versus = _fm_against(results, predictions, best)
    ranking = means.drop([m for m in ABLATIONS if m in means.index]).sort_values(ascending=False)
    return {**out, "best_other": best, "fm_macro_f1_mean": float(means[FM]),
            "best_other_macro_f1_mean": float(means[best]), "fm_wins": bool(means[FM] > means[best]),
            "paired_t_test": versus["paired_t_test"], "bootstrap": versus["bootstrap"],
            "ranking": [(str(k), float(val)) for k, val in ranking.items()]}


__all__ = ["EvaluationSettings", "LEARNING_RATE_GRID", "run_evaluation", "summarize", "compare_with_best", "cell_embeddings"]
