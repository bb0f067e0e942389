"""``omnicelltosg`` command line: ``build`` a dataset from a recipe, run the end-to-end ``demo``, run the
masked-edge pretraining ``pretrain-sweep``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from dataset_script.pipeline import DEFAULT_RECIPE

    p = argparse.ArgumentParser(prog="omnicelltosg", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a TOSG dataset folder from a recipe")
    b.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="YAML recipe (default: build/demo.yaml)")
    b.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data folder")
    b.add_argument("--out", type=Path, default=Path("runs/dataset"), help="dataset folder to write")
    b.add_argument("--cells-per-metacell", type=int, default=None, help="override the recipe's meta-cell size")
    b.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    d = sub.add_parser("demo", help="build → pretrain → fine-tune → signaling → report, on real data")
    d.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data folder")
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (report.md, metrics.json)")
    d.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="YAML recipe (default: build/demo.yaml)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--rebuild", action="store_true", help="rebuild the dataset even if a matching build exists")
    w = sub.add_parser("pretrain-sweep", help="masked-edge pretraining at several mask ratios vs link-prediction "
                                              "baselines on the same held-out PPI pairs")
    w.add_argument("--dataset", type=Path, required=True, help="dataset folder (omnicelltosg build output)")
    w.add_argument("--out", type=Path, default=Path("runs/pretrain_sweep"))
    w.add_argument("--ratios", type=float, nargs="+", default=[1e-3, 0.1, 0.5, 0.7])
    w.add_argument("--steps", type=int, default=60)
    w.add_argument("--batch-size", type=int, default=8)
    w.add_argument("--negatives", choices=["random", "degree_matched", "mixed"], default="mixed")
    w.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``omnicelltosg`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    # Everything is local: never let datasets / transformers try a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        if args.command == "build":
            from dataset_script.pipeline import build_dataset

            info = build_dataset(args.recipe, args.data, args.out, cells_per_metacell=args.cells_per_metacell,
                                 overwrite=args.overwrite)
            print(f"wrote {args.out}: {info['n_metacells']} meta-cells, configs {info['configs']}")
        elif args.command == "demo":
            from .demo import run_demo

            run_demo(args.data, args.out, recipe=args.recipe, seed=args.seed, rebuild=args.rebuild)
        elif args.command == "pretrain-sweep":
            from .pretrain_sweep import run_sweep

            run_sweep(args.dataset, args.out, ratios=args.ratios, steps=args.steps, batch_size=args.batch_size,
                      negatives=args.negatives, seed=args.seed)
            print((args.out / "pretraining_sweep.md").read_text())
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as err:
        print(f"omnicelltosg {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
