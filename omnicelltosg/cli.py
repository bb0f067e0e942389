"""``omnicelltosg`` command line: ``build`` a dataset from a recipe, run the end-to-end ``demo``, ``pretrain``
one model (Accelerate), run the masked-edge ``pretrain-sweep``, ``evaluate`` every model on the same splits,
run the ``signaling`` analysis of a fine-tuned model, ``predict`` labels and embeddings of a user's AnnData,
``download`` raw files listed in a ``links.txt``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from dataset_script.build.recipe import DEFAULT_RECIPE
    from omnicelltosg.train.accelerated import add_command_arguments

    p = argparse.ArgumentParser(prog="omnicelltosg", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a TOSG dataset folder from a recipe")
    b.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="YAML recipe (default: build/demo.yaml)")
    b.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data folder")
    b.add_argument("--out", type=Path, default=Path("runs/dataset"), help="dataset folder to write")
    b.add_argument("--cells-per-metacell", type=int, default=None, help="override the recipe's meta-cell size")
    b.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    b.add_argument("--scheduler", help="run meta-cell partitions on Dask: 'local' (embedded LocalCluster) or "
                                       "tcp://HOST:PORT (existing cluster); default: in this process")
    b.add_argument("--workers", type=int, help="LocalCluster workers (default: one per 2 cores)")
    b.add_argument("--memory-limit", help="LocalCluster memory per worker, e.g. 8GiB (default: machine memory / workers)")
    b.add_argument("--priors-from", type=Path, metavar="DIR",
                   help="seed the per-entity prior cache with the text/sequence embeddings of this existing dataset "
                        "folder (used only where its build_info.json shows the same encoders); the cache lives in "
                        "$OMNICELLTOSG_CACHE, else $XDG_CACHE_HOME/omnicelltosg, else ~/.cache/omnicelltosg")
    d = sub.add_parser("demo", help="build → pretrain → fine-tune → signaling → report, on real data")
    d.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data folder")
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (report.md, metrics.json)")
    d.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="YAML recipe (default: build/demo.yaml)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--rebuild", action="store_true", help="rebuild the dataset even if a matching build exists")
    add_command_arguments(sub.add_parser(
        "pretrain", help="masked-edge pretraining of one model with Accelerate (several processes: torchrun or "
                         "accelerate launch -m omnicelltosg.train.accelerated, same flags)"))
    _add_pretrain_sweep(sub)
    _add_evaluate(sub)
    t = sub.add_parser("evaluation-table", help="one table of every finished evaluate task folder: FM vs every model")
    t.add_argument("tasks", type=Path, nargs="+", help="task folders written by `omnicelltosg evaluate`")
    t.add_argument("--out", type=Path, required=True, help="folder for evaluation_table.md / .csv")
    a = sub.add_parser("annotate", help="CellTypist cell-type calls for the unlabelled datasets of a recipe "
                                        "(tables, confidence figure, summary)")
    a.add_argument("--recipe", type=Path, required=True, help="YAML recipe whose datasets have cell_type_annotation")
    a.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data folder")
    a.add_argument("--out", type=Path, default=Path("runs/annotate"))
    _add_signaling(sub)
    _add_predict(sub)
    _add_download(sub)
    return p


def _add_pretrain_sweep(sub) -> None:
    from omnicelltosg.train.arguments import NEGATIVE_KINDS, PretrainingArguments
    from omnicelltosg.workflows.pretrain_sweep import DEFAULT_RATIOS

    pretraining = PretrainingArguments()
    w = sub.add_parser("pretrain-sweep", help="masked-edge pretraining at several mask ratios vs link-prediction "
                                              "baselines on the same held-out PPI pairs")
    w.add_argument("--dataset", type=Path, required=True, help="dataset folder (omnicelltosg build output)")
    w.add_argument("--out", type=Path, default=Path("runs/pretrain_sweep"))
    w.add_argument("--ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS))
    w.add_argument("--steps", type=int, help=f"pretraining steps per ratio (default {pretraining.steps})")
    w.add_argument("--batch-size", type=int, help=f"meta-cells per step (default {pretraining.batch_size})")
    w.add_argument("--negatives", choices=NEGATIVE_KINDS, help=f"training negatives (default {pretraining.negatives})")
    w.add_argument("--seed", type=int, help=f"seed of the cell sample, edge split, masks (default {pretraining.seed})")
    _add_pretraining_objective(w, pretraining.gene_mask_ratio, {})


def _add_pretraining_objective(parser, gene_mask_ratio: float, model: dict) -> None:
    """The pretraining-objective options shared by ``pretrain-sweep`` and ``evaluate`` (see
    :func:`_objective_overrides`); ``gene_mask_ratio`` / ``model``: the command's defaults, for the help."""
    from modeling_celltosg import CellTOSGConfig

    config = {**CellTOSGConfig().to_dict(), **model}
    parser.add_argument("--gene-mask-ratio", type=float,
                        help="fraction of each cell's measured genes masked and predicted in pretraining (masked-"
                             f"expression modelling; needs --expression-loss-weight > 0; default {gene_mask_ratio})")
    parser.add_argument("--expression-loss-weight", type=float,
                        help=f"weight of the masked-expression loss (model field; default {config['expression_loss_weight']})")
    parser.add_argument("--per-cell-edges", action=argparse.BooleanOptionalAction, default=None,
                        help="score each masked PPI pair in every cell, not on cell-averaged node states (model field; "
                             f"default {config['per_cell_edges']})")


def _objective_overrides(args) -> tuple[dict, dict]:
    """(``PretrainingArguments`` overrides, ``CellTOSGConfig`` overrides) of :func:`_add_pretraining_objective`."""
    return (_overrides(gene_mask_ratio=args.gene_mask_ratio),
            _overrides(expression_loss_weight=args.expression_loss_weight, per_cell_edges=args.per_cell_edges))


def _add_evaluate(sub) -> None:
    from omnicelltosg.tasks import TASKS
    from omnicelltosg.train.arguments import FinetuningArguments
    from omnicelltosg.workflows.evaluate import LEARNING_RATE_GRID, PRETRAINING, PRETRAINING_MODEL

    e = sub.add_parser("evaluate", help="every model on the same donor-level splits, seeds, statistics, figures, report")
    e.add_argument("--dataset", type=Path, required=True, help="dataset folder (omnicelltosg build output)")
    e.add_argument("--out", type=Path, default=Path("runs/evaluate"), help="output folder (one sub-folder per task)")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", nargs="+", choices=list(TASKS), metavar="TASK",
                     help="named task(s) of omnicelltosg.tasks.TASKS: " + ", ".join(TASKS))
    src.add_argument("--spec", type=Path, help="YAML/JSON task spec (keys of omnicelltosg.tasks.TaskSpec)")
    e.add_argument("--seeds", type=int, nargs="+", help="model seeds per split variant (default: the spec's, 0 1 2)")
    e.add_argument("--models", nargs="+", help="subset of models (default: all)")
    e.add_argument("--epochs", type=int,
                   help=f"epoch cap of the graph models and the MLP (default {FinetuningArguments().epochs}; early "
                        f"stopping after {FinetuningArguments().early_stopping_patience} epochs without improvement)")
    e.add_argument("--lr-grid", type=float, nargs="+",
                   help=f"learning rates tried for the graph models and the MLP, chosen on validation "
                        f"(default {' '.join(map(str, LEARNING_RATE_GRID))})")
    e.add_argument("--pretrain-steps", type=int, help=f"pretraining steps per split (default {PRETRAINING.steps})")
    _add_pretraining_objective(e, PRETRAINING.gene_mask_ratio, PRETRAINING_MODEL)


def _add_signaling(sub) -> None:
    from omnicelltosg.tools.evidence_network import DIRECTION, DIRECTIONS
    from omnicelltosg.tools.signaling import FDR_THRESHOLD, MIN_LEAVES, TOP_K
    from omnicelltosg.workflows.signaling import CLASSIFIER_EPOCHS, DEFAULT_METHOD, KNOWN_BIOLOGY, METHODS

    g = sub.add_parser("signaling", help="key proteins and interactions behind a condition: pseudobulk evidence + "
                                         "model attributions → PPI network (default), the paper method (reproduction), "
                                         "baselines, validation against GO terms, per cell type")
    g.add_argument("--dataset", type=Path, required=True, help="dataset folder (omnicelltosg build output)")
    model = g.add_mutually_exclusive_group()
    model.add_argument("--model", type=Path, help="fine-tuned CellTOSGForCellClassification folder (labels case/control)")
    model.add_argument("--finetune-epochs", type=int, nargs="?", const=CLASSIFIER_EPOCHS,
                       help=f"no model: fine-tune a small condition classifier into OUT/classifier first "
                            f"(default {CLASSIFIER_EPOCHS} epochs); without --model or this, evidence only")
    g.add_argument("--conditions", type=json.loads, required=True, help='cohort query as JSON, e.g. \'{"dataset_id": "kang2018_muscat"}\'')
    g.add_argument("--group-column", default="condition", help="metadata column holding case and control")
    g.add_argument("--case", required=True)
    g.add_argument("--control", required=True)
    g.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help=f"primary method (default {DEFAULT_METHOD}; 'paper' = the reproduction)")
    g.add_argument("--known-biology", choices=sorted(KNOWN_BIOLOGY), help="named GO gene sets to validate against")
    g.add_argument("--go", nargs="+", help="GO term IDs to validate against (instead of --known-biology)")
    g.add_argument("--direction", choices=DIRECTIONS, default=DIRECTION, help=f"ranking direction (default {DIRECTION})")
    g.add_argument("--knowledge", type=Path, default=Path("../shared/data/knowledge"), help="folder with the GO tables")
    g.add_argument("--top-k", type=int, default=TOP_K, help=f"paper method: proteins seeding the subgraph (default {TOP_K})")
    g.add_argument("--min-leaves", type=int, default=MIN_LEAVES,
                   help=f"paper method: leaves kept per hub by star-leaf pruning (default {MIN_LEAVES})")
    g.add_argument("--fdr", type=float, default=FDR_THRESHOLD,
                   help=f"paper method: FDR threshold for 'significant' (default {FDR_THRESHOLD})")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--title", help="figure / report title")
    g.add_argument("--out", type=Path, default=Path("runs/signaling"))


def _signaling(args) -> None:
    from omnicelltosg.workflows.signaling import check_signaling_arguments, finetune_condition_classifier, run_signaling

    if args.model is not None and not Path(args.model).is_dir():  # not a Hub repo id: models are local folders
        raise FileNotFoundError(f"--model {args.model}: no such model folder; give the folder of a fine-tuned "
                                "CellTOSG classifier (save_pretrained), or --finetune-epochs N to train one")
    check_signaling_arguments(case=args.case, control=args.control, method=args.method,
                              known_biology=args.known_biology, direction=args.direction, top_k=args.top_k,
                              min_leaves=args.min_leaves, fdr_threshold=args.fdr,
                              has_model=args.model is not None or args.finetune_epochs is not None)
    model = args.model
    if model is None and args.finetune_epochs is not None:
        model = finetune_condition_classifier(args.dataset, args.out / "classifier", conditions=args.conditions,
                                              group_column=args.group_column, case=args.case, control=args.control,
                                              epochs=args.finetune_epochs, seed=args.seed)
    summary = run_signaling(args.dataset, model, args.out, conditions=args.conditions, group_column=args.group_column,
                            case=args.case, control=args.control, knowledge_dir=args.knowledge, method=args.method,
                            known_biology=args.known_biology, go_ids=args.go, direction=args.direction,
                            top_k=args.top_k, min_leaves=args.min_leaves, fdr_threshold=args.fdr, title=args.title,
                            seed=args.seed)
    print(f"{args.out / 'report.md'}: network {len(summary['network']['genes'])} genes; evidence "
          f"{summary['evidence']['level']}")
    for row in summary["validation"]:
        print(f"  {row['method']:22s} AUPRC {row['auprc']:.3f}  P@50 {row.get('precision_at_50', float('nan')):.2f}")


# --- predict: labels and embeddings of a scientist's own AnnData (omnicelltosg.tools.predict) ---
def _add_predict(sub) -> None:
    from dataset_script.build.knowledge import GENE_ID_TYPES

    r = sub.add_parser("predict", help="cell labels, probabilities and embeddings of your own .h5ad with a fine-tuned "
                                       "model (no dataset build)")
    r.add_argument("input", type=Path, help=".h5ad (or a 10x folder / CSV table); gene symbols or Ensembl IDs; "
                                            "raw counts or log-normalised values")
    r.add_argument("--model", type=Path, required=True, help="fine-tuned CellTOSGForCellClassification folder")
    r.add_argument("--graph", type=Path, required=True, help="the dataset folder the model was trained with "
                                                             "(entity graph and text priors)")
    r.add_argument("--out", type=Path, required=True, help="annotated .h5ad to write (and <stem>.genes.tsv beside it)")
    r.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data folder (gene table)")
    r.add_argument("--gene-id-type", choices=GENE_ID_TYPES, default="auto", help="gene identifiers (default auto)")
    matrix = r.add_mutually_exclusive_group()
    matrix.add_argument("--use-raw", action="store_true", default=None, help="read .raw instead of .X")
    matrix.add_argument("--layer", help="read this layer instead of .X")
    r.add_argument("--batch-size", type=int, default=256, help="cells per forward pass")
    r.add_argument("--device", default="cpu")


def _predict(args) -> None:
    from omnicelltosg.tools.predict import LABEL_KEY, UNS_KEY, predict_adata

    adata = predict_adata(args.input, args.model, args.graph, data_dir=args.data, gene_id_type=args.gene_id_type,
                          use_raw=args.use_raw, layer=args.layer, batch_size=args.batch_size, device=args.device,
                          out=args.out)
    g = adata.uns[UNS_KEY]["gene_mapping"]
    print(f"{args.out}: {adata.n_obs} cells; genes: {g['n_mapped']} of {g['n_input_genes']} mapped onto the graph "
          f"({g['n_not_in_graph']} not in it, {g['n_unmapped']} unknown, {g['n_ambiguous']} ambiguous); "
          f"{g['n_transcripts_measured']} of the model's {g['n_transcripts_model']} transcripts measured; "
          f"per-gene table {args.out.with_name(args.out.stem + '.genes.tsv')}")
    print(adata.obs[LABEL_KEY].value_counts().to_string())


# --- download: raw files of a links.txt list (dataset_script.build.download) ---
def _add_download(sub) -> None:
    from dataset_script.build.download import (
        DEFAULT_RETRIES,
        DEFAULT_TIMEOUT,
        LINE_FORMAT,
    )

    w = sub.add_parser("download", help="download the raw files of a links.txt list (one 'GSM_ID path URL "
                                        "[sha256]' per line) with checksums, retries and resume")
    w.add_argument("links", type=Path, help=f"links file: {LINE_FORMAT}; blank lines and # comments skipped")
    w.add_argument("--out", type=Path, required=True, help="folder to download into (paths are relative to it; "
                                                           "download_manifest.tsv is written there)")
    w.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                   help=f"extra attempts per failed file (default {DEFAULT_RETRIES})")
    w.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds to wait for the server (default {DEFAULT_TIMEOUT:g})")
    w.add_argument("--no-progress", action="store_true", help="no per-file progress bars")


def _download(args) -> int:
    from dataset_script.build.download import DownloadError, download_links

    try:
        download_links(args.links, args.out, retries=args.retries, timeout=args.timeout,
                       progressbar=not args.no_progress)
    except DownloadError as err:
        print(f"omnicelltosg download: error: {len(err.report.failures)} of {len(err.report.results)} files failed "
              f"(listed above and in {err.report.manifest}); rerun to retry them", file=sys.stderr)
        return 1
    return 0


def _overrides(**values) -> dict:
    """The command-line values that were given (not None)."""
    return {k: v for k, v in values.items() if v is not None}


def _evaluate(args) -> None:
    import dataclasses

    import yaml

    from omnicelltosg.tasks import TaskSpec, get_task
    from omnicelltosg.workflows.evaluate import EvaluationSettings, run_evaluation

    if args.spec:
        try:
            spec = yaml.safe_load(args.spec.read_text())
        except (yaml.YAMLError, RecursionError) as err:
            raise ValueError(f"--spec {args.spec} is not valid YAML: {err}") from None
        specs = [TaskSpec.from_dict(spec)]
    else:
        specs = [get_task(p) for p in args.preset]
    settings = EvaluationSettings()
    objective, model = _objective_overrides(args)
    settings = dataclasses.replace(
        settings, pretraining=settings.pretraining.with_overrides(**_overrides(steps=args.pretrain_steps), **objective),
        pretraining_model={**settings.pretraining_model, **model},
        finetuning=settings.finetuning.with_overrides(**_overrides(epochs=args.epochs)),
        learning_rates=tuple(args.lr_grid) if args.lr_grid else settings.learning_rates)
    for spec in specs:
        if args.seeds:
            spec.seeds = args.seeds
        if args.models:
            spec.models = args.models
        res = run_evaluation(args.dataset, spec, args.out / spec.name, settings=settings)
        print(f"{spec.name}: {args.out / spec.name / 'report.md'}")
        print(res["summary"][["model", "macro_f1_mean", "macro_f1_sd", "n_runs"]].to_string(index=False))
        print(json.dumps({k: v for k, v in res["comparison"].items() if k != "ranking"}, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``omnicelltosg`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    # Everything is local: never let datasets / transformers try a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        if args.command == "build":
            from dataset_script.build.pipeline import build_dataset

            info = build_dataset(args.recipe, args.data, args.out, cells_per_metacell=args.cells_per_metacell,
                                 overwrite=args.overwrite, scheduler=args.scheduler, n_workers=args.workers,
                                 memory_limit=args.memory_limit, priors_from=args.priors_from)
            print(f"wrote {args.out}: {info['n_metacells']} meta-cells, configs {info['configs']}")
        elif args.command == "demo":
            from omnicelltosg.workflows.demo import run_demo

            run_demo(args.data, args.out, recipe=args.recipe, seed=args.seed, rebuild=args.rebuild)
        elif args.command == "signaling":
            _signaling(args)
        elif args.command == "predict":
            _predict(args)
        elif args.command == "download":
            return _download(args)
        elif args.command == "evaluate":
            _evaluate(args)
        elif args.command == "evaluation-table":
            from omnicelltosg.workflows.evaluation_report import write_cross_task_table

            for path in write_cross_task_table(args.tasks, args.out):
                print(path)
        elif args.command == "annotate":
            from dataset_script.build.pipeline import annotate_recipe

            summary = annotate_recipe(args.recipe, args.data, args.out)
            for name, s in summary.items():
                print(f"{name}: {s['n_cells']} cells, {s['low_confidence_fraction']:.1%} low-confidence, "
                      f"labels {s['labels']}")
            print(f"{args.out / 'summary.md'}")
        elif args.command == "pretrain":
            from omnicelltosg.train.accelerated import run_command

            result = run_command(args)
            print(f"{args.out / 'model'}: " + ", ".join(
                f"held-out AUROC {e['auroc']:.3f} vs {kind} negatives" for kind, e in result["evaluation"].items()))
        elif args.command == "pretrain-sweep":
            from omnicelltosg.train.arguments import PretrainingArguments
            from omnicelltosg.workflows.pretrain_sweep import run_sweep

            objective, model = _objective_overrides(args)
            pretraining = PretrainingArguments().with_overrides(**_overrides(
                steps=args.steps, batch_size=args.batch_size, negatives=args.negatives, seed=args.seed), **objective)
            run_sweep(args.dataset, args.out, ratios=args.ratios, pretraining=pretraining, model=model)
            print((args.out / "pretraining_sweep.md").read_text())
    except (OSError, ValueError, KeyError) as err:  # OSError: missing, existing or unreadable files
        print(f"omnicelltosg {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
