"""CellTOSG-FM v2 classifier at several hidden sizes on the demo dataset's real graph: parameters, training
and inference throughput (meta-cells per second, forward + backward / forward only), as ratios against
hidden size 16 measured in the same run.

    python benchmarks/bench_model_size.py --dataset runs/demo/dataset [--sizes 16 32 64] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dataset_script.cohorts.loader import load_cohort, load_graph
from modeling_celltosg import CellTOSGConfig, CellTOSGForCellClassification


def _rate(fn, cells: int, repeats: int) -> float:
    fn()  # warm-up: topology caches, allocator
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return cells * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    graph, _ = load_graph(args.dataset)
    cohort = load_cohort(args.dataset, conditions={"dataset_id": "kang2018_muscat"}, label_column="cell_type",
                         test_donors=["kang2018_muscat:101"], validation_by="meta-cell")
    x, m, y = cohort.tensors()
    x, m, y = x[: args.batch_size], m[: args.batch_size], y[: args.batch_size]
    rows = []
    for size in args.sizes:
        torch.manual_seed(0)
        model = CellTOSGForCellClassification(CellTOSGConfig.for_graph(graph, hidden_size=size,
                                                                       num_labels=len(cohort.label_names)))

        def train_step():
            model.train()
            model(x, graph, measured_mask=m, labels=y).loss.backward()

        def infer():
            model.eval()
            with torch.no_grad():
                model(x, graph, measured_mask=m)

        rows.append({"hidden_size": size, "parameters": sum(p.numel() for p in model.parameters()),
                     "train_cells_per_s": _rate(train_step, len(y), args.repeats),
                     "inference_cells_per_s": _rate(infer, len(y), args.repeats)})
    base = rows[0]
    for r in rows:
        r["train_ratio_vs_first"] = r["train_cells_per_s"] / base["train_cells_per_s"]
        r["inference_ratio_vs_first"] = r["inference_cells_per_s"] / base["inference_cells_per_s"]
        print(f"hidden {r['hidden_size']:4d}: {r['parameters']:>10,} parameters, train {r['train_cells_per_s']:.1f} "
              f"cells/s (×{r['train_ratio_vs_first']:.2f}), inference {r['inference_cells_per_s']:.1f} cells/s "
              f"(×{r['inference_ratio_vs_first']:.2f}) [{torch.get_num_threads()} threads]")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "threads": torch.get_num_threads(),
                                        "batch_size": args.batch_size}, indent=1))


if __name__ == "__main__":
    main()
