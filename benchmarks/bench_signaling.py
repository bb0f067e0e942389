"""Benchmark: time and peak memory of signaling inference, and how they grow with the number of meta-cells.

Three modes, measured in the same run: ``evidence_network`` (the default method of issue 19: pseudobulk
DESeq2 evidence per donor × cell type × condition, gradient attributions of the classifier on a stratified subsample with their permutation
null, PCST + random walk with the rewired-network null, edge occlusion — the tool calls of
``omnicelltosg signaling``), and the two paper-pipeline modes below (the baseline of the ratio is
``streamed``, what the paper method costs).

Input: the real entity graph of a built dataset (``--dataset``) and its real Kang meta-cells, resampled
with replacement to M ∈ ``--sizes`` meta-cells (half stim, half control), and a CellTOSG-FM classifier
of the default size (``CellTOSGConfig()``: GAT, hidden 16, 2 PPI layers, 2 heads) with random weights, and
the default ``top_k`` / ``min_leaves`` / FDR threshold of ``infer_signaling`` — the cost of the pipeline
does not depend on the values of the weights. Each size runs in a FRESH process (1 warm-up call on 16
meta-cells first; 64 for the default method, whose pseudobulk fit needs both donors of each group) with
glibc's mmap threshold at 64 KiB so that freed tensors leave RSS at once; peak memory = VmHWM − VmRSS
right before the pipeline (``/proc/self/clear_refs``), i.e. the live peak of the analysis itself. Timed: the model pass (all layers and heads) + ``node_expression`` +
``infer_signaling`` (statistics, top-k, component, pruning), in two modes measured in the same run:
``streamed`` (what ``omnicelltosg signaling`` does: ``group_edge_attention`` keeps per-group sums) and
``per_cell`` (the baseline: ``edge_attention`` returns the ``[M, P]`` per-cell matrix, averaged after).

Prints seconds and MiB per size and mode, per 1,000 meta-cells, the growth exponent (log-log slope
between the smallest and largest size) and the streamed/per-cell ratios.

Run: ``python benchmarks/bench_signaling.py --dataset runs/demo/dataset --json benchmarks/results/signaling.json``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _evidence_network_pipeline(model, graph, symbols, x, mask, groups, counts, donors, cell_types):
    """The default method's tool calls on in-memory inputs (as ``run_signaling`` makes them)."""
    import numpy as np
    import pandas as pd

    from omnicelltosg.tools import attribution as attr
    from omnicelltosg.tools.differential import differential_evidence
    from omnicelltosg.tools.evidence_network import PPINetwork, infer_evidence_network
    from omnicelltosg.workflows.signaling import ATTRIBUTION_BATCH_SIZE, ATTRIBUTION_METHOD, attribution_rows

    measured = np.flatnonzero(mask.numpy().any(0))
    tsym = symbols[:graph.num_transcripts][measured]
    samples = pd.DataFrame({"donor_id": donors, "condition": groups, "cell_type": cell_types})
    evidence, _ = differential_evidence(counts=counts[:, measured], log_expression=x.numpy()[:, measured],
                                        samples=samples, symbols=tsym, group_column="condition", case="stim",
                                        control="control", donor_column="donor_id", counts_available=True,
                                        cell_type_column="cell_type")
    psym = symbols[graph.num_transcripts:]
    pairs = graph.ppi_edge_index.numpy().T - graph.num_transcripts
    ppi = PPINetwork.from_pairs(tsym, [(psym[a], psym[b]) for a, b in pairs])
    rows = attribution_rows(groups, donors, seed=0)
    per_cell = attr.expression_attributions(model, x[rows], mask[rows], graph, case_index=1, control_index=0,
                                            method=ATTRIBUTION_METHOD, batch_size=ATTRIBUTION_BATCH_SIZE)[:, measured]
    res = attr.attribution_contrast(per_cell, groups[rows], case="stim", control="control", strata=donors[rows])
    att = pd.DataFrame({"symbol": tsym, "z": res["z"], "p_value": res["p_value"]})
    out = infer_evidence_network(evidence, ppi, case="stim", control="control", attribution=att)
    index = {s: i + graph.num_transcripts for i, s in enumerate(psym)}
    edge_pairs = np.array([[index[a], index[b]] for a, b in zip(out.edges["source"], out.edges["target"])])
    if len(edge_pairs):
        attr.edge_occlusion(model, x, mask, graph, edge_pairs, groups, case="stim", control="control", case_index=1,
                            control_index=0)
    return out


MODES = ("evidence_network", "streamed", "per_cell")


def child(dataset: str, m: int, seed: int, threads: int, mode: str) -> dict:
    import numpy as np
    import torch
    from graph_bench_child import hwm_bytes, reset_hwm, rss_bytes

    from dataset_script.cohorts.loader import load_cohort
    from modeling_celltosg import CellTOSGConfig, CellTOSGForCellClassification
    from omnicelltosg.tools.signaling import (
        edge_attention,
        group_edge_attention,
        infer_signaling,
        node_expression,
    )

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cohort = load_cohort(dataset, conditions={"dataset_id": "kang2018_muscat"}, label_column="condition",
                         split_by="none")
    graph, entities = cohort.graph(), cohort.entities()
    x_all, m_all, _ = cohort.tensors()
    groups_all = np.asarray(cohort.cells["condition"]).astype(str)
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.choice(np.flatnonzero(groups_all == g), m // 2 + (m % 2) * (g == "stim"))
                           for g in ("stim", "control")])
    x, mask, groups = x_all[rows], m_all[rows], groups_all[rows]
    donors = np.asarray(cohort.cells["donor_id"]).astype(str)[rows]
    cell_types = np.asarray(cohort.cells["cell_type"]).astype(str)[rows]
    counts = _counts(cohort)[rows]
    config = CellTOSGConfig.for_graph(graph, num_labels=2, id2label={0: "control", 1: "stim"},
                                      label2id={"control": 0, "stim": 1})  # the default (demo-sized) model
    model = CellTOSGForCellClassification(config).eval()
    symbols = entities["symbol"].to_numpy()[graph.num_transcripts:]

    def pipeline(xx, mm, gg, cc=None, dd=None, tt=None):
        if mode == "evidence_network":
            return _evidence_network_pipeline(model, graph, entities["symbol"].astype(str).to_numpy(), xx, mm, gg, cc, dd, tt)
        if mode == "streamed":
            pairs, weights, _ = group_edge_attention(model, xx, mm, graph, gg)
        else:
            pairs, weights = edge_attention(model, xx, mm, graph)
        expr = node_expression(xx.numpy(), graph)
        return infer_signaling(weights, pairs, expr, gg, case="stim", control="control", symbols=symbols,
                               num_transcripts=graph.num_transcripts)  # default top_k / min_leaves / FDR

    # warm-up (imports, first kernels): 16 meta-cells; the default method needs both donors of each group
    # for its pseudobulk fit, so its warm-up takes 32 + 32 (measured on its own, not in the result)
    per_group = 32 if mode == "evidence_network" else 8
    warm = np.concatenate([np.flatnonzero(groups == g)[:per_group] for g in ("stim", "control")])
    pipeline(x[warm], mask[warm], groups[warm], counts[warm], donors[warm], cell_types[warm])
    before = rss_bytes()
    reset_hwm()
    t0 = time.perf_counter()
    res = pipeline(x, mask, groups, counts, donors, cell_types)
    seconds = time.perf_counter() - t0
    core = res.network if mode == "evidence_network" else res.core
    return {"mode": mode, "metacells": m, "seconds": seconds, "peak_mib": (hwm_bytes() - before) / 2**20,
            "core_nodes": core.number_of_nodes(), "pairs": int(len(res.edges))}


def _counts(cohort):
    """Raw counts ``[M, Nt]`` (CSR) of the cohort's meta-cells."""
    import numpy as np
    import scipy.sparse as sp

    cols = cohort.cells.select_columns(["expression_indices", "expression_values"]).with_format("numpy")
    indptr, idx, val = [0], [], []
    for row in cols:
        idx.append(row["expression_indices"])
        val.append(row["expression_values"])
        indptr.append(indptr[-1] + len(row["expression_indices"]))
    return sp.csr_matrix((np.concatenate(val), np.concatenate(idx), indptr), shape=(len(indptr) - 1, cohort.num_transcripts))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--_child":
        spec = json.loads(sys.argv[2])
        print(json.dumps(child(**spec)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="runs/demo/dataset")
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 1000])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", OMP_WAIT_POLICY="PASSIVE")
    rows = []
    for m, mode in [(m, mode) for m in args.sizes for mode in args.modes]:
        spec = {"dataset": str(Path(args.dataset).resolve()), "m": m, "seed": args.seed, "threads": args.threads,
                "mode": mode}
        proc = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], capture_output=True, text=True,
                              env=env, cwd=ROOT)
        if proc.returncode:
            sys.exit(proc.stderr[-2000:])
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"M={m:5d} {mode:9s}: {r['seconds']:7.2f} s ({r['seconds'] / m * 1000:6.2f} s per 1,000 meta-cells), "
              f"peak {r['peak_mib']:8.1f} MiB ({r['peak_mib'] / m * 1000:7.1f} MiB per 1,000), "
              f"{r['pairs']} pairs, core {r['core_nodes']} genes", flush=True)
    import math

    growth, ratios = {}, []
    for mode in args.modes:
        mine = [r for r in rows if r["mode"] == mode]
        a, b = mine[0], mine[-1]
        if a is b:
            continue
        growth[mode] = {k: math.log(b[k] / a[k]) / math.log(b["metacells"] / a["metacells"])
                        for k in ("seconds", "peak_mib")}
        print(f"{mode}: growth exponent (log-log slope, M={a['metacells']}→{b['metacells']}): "
              f"time {growth[mode]['seconds']:.2f}, memory {growth[mode]['peak_mib']:.2f}")
    for m in args.sizes:
        found = {r["mode"]: r for r in rows if r["metacells"] == m}
        for new, base in (("evidence_network", "streamed"), ("streamed", "per_cell")):
            if new in found and base in found:
                ratios.append({"metacells": m, "mode": new, "baseline": base,
                               "time_ratio": found[new]["seconds"] / found[base]["seconds"],
                               "memory_ratio": found[new]["peak_mib"] / found[base]["peak_mib"]})
                print(f"M={m:5d}: {new} / {base}: time {ratios[-1]['time_ratio']:.2f}, "
                      f"peak memory {ratios[-1]['memory_ratio']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "growth_exponent": growth, "ratios": ratios,
                                         "threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M:%S")},
                                        indent=1))


if __name__ == "__main__":
    main()
