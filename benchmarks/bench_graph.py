"""Benchmark: shared-topology message passing (``modeling_celltosg`` layers) vs PyG on replicated graphs.

A batch of B cells shares ONE Text-Omic Signaling Graph. ``SharedGCNConv`` / ``SharedGATConv`` keep the
features as ``[N, B, F]`` and pass messages once over the shared edge list; the original OmniCellTOSG
code built a PyG ``Batch`` of B copies of the graph (edge list replicated B times, offset per copy) and
ran ``GCNConv`` / ``GATConv`` on it. This script measures both implementations of the SAME computation.

Model (both parts): a 2-layer stack ``conv2(relu(conv1(x)))``, input width F = 16.
  GCN: 16 → 16 → 16 (``SharedGCNConv`` vs ``torch_geometric.nn.GCNConv``, default arguments).
  GAT: 16 → 2 heads × 8 (concatenated = 16) → 2 heads × 8 (``SharedGATConv`` vs ``GATConv(heads=2)``).
One training step = forward of the stack + ``loss = out.pow(2).mean()`` + ``loss.backward()``
(gradients w.r.t. all parameters; the input features are constants).

Part A — real entity graph (``--dataset``): transcript→protein internal edges + BOTH directions of every
PPI pair (``ppi_directed``), no self-loops (each layer adds them as its PyG counterpart does).
For each layer ∈ {gcn, gat}, B ∈ {1, 4, 16, 64} and implementation ∈ {shared, pyg}, a FRESH subprocess
(``torch.set_num_threads(2)`` by default, address space capped with ``RLIMIT_AS = --guard-gib``):
  * builds the inputs: shared → ``x [N, B, 16]``; pyg → ``Batch.from_data_list`` of B ``Data`` copies
    (built once, outside the timed region; the build itself is timed separately as "batch build / step",
    median of 3 builds — the original rebuilt it every step);
  * weights: both implementations draw the shared stack's weights from the same seed and the PyG stack
    gets a copy (parameter names are identical), biases are set non-zero; the first step's output and
    parameter gradients of both implementations are saved and the parent ASSERTS they agree
    (outputs rtol 1e-4 / atol 1e-5, gradients max|Δ| ≤ 1e-3·max|ref|) before reporting any number;
  * library warm-up (``--no-library-warmup`` skips it) and memory (peak RSS above the RSS before the first
    forward, the reported "MiB" from a second, live-memory process; ``torch.cuda`` peaks on a GPU):
    how and why is told in ``benchmarks/graph_bench_child.py`` (the measuring side);
  * speed: ``--warmup`` steps (first one = the memory/check step), then ``--steps`` timed steps;
    cells/s = B × steps / wall time (the best single step is reported too, as a noise check).
    Measurement processes run with ``OMP_WAIT_POLICY=PASSIVE`` (``--omp-active`` disables it): on a
    2-core machine shared with other work, OpenMP's default spin-waiting made 2-thread torch ops up to
    10× slower (a 19.6k-node GCNConv step: 0.6 s vs 0.06 s) for both implementations alike.
  A config that hits the guard (allocation failure under RLIMIT_AS) is reported "exceeds limit".
  Targets stated against the measurements at B = 16: shared ≥ 5× PyG cells/s, shared ≤ ¼ PyG peak memory.

Part B — original size: a random graph with 533,458 nodes and 16,600,000 directed edges whose degrees
follow the real TOSG: every node draws a real out-degree and (independently) a real in-degree from the
empirical distributions of the Part-A graph; the 16.6M edges are then drawn as (source ∝ drawn
out-degree, target ∝ drawn in-degree), self-loops and duplicate edges dropped and re-drawn until exactly
16.6M distinct edges exist (so the out-/in-degree profiles are the real ones rescaled to mean ≈ 31.1,
including the real fraction of nodes that never send / never receive). For the shared GCN and GAT
stacks, the largest B whose forward+backward fits in ``--budget-gib`` is searched with every trial in
a fresh subprocess whose WHOLE address space (interpreter + torch + graph + inputs + step) is capped
with ``RLIMIT_AS = budget`` (a refused allocation = "does not fit"). ``--search double`` is the plain
doubling-then-bisection (stop when hi − lo ≤ max(1, lo/8)); the default ``--search fit`` starts the
same way (B = 1, 2) but jumps to the B where the measured peak address space extrapolates to the
budget, then confirms — exact answer, a fitting trial at B and a failing one at B + 1, in 3–7 trials
instead of 6–10, because one fitting trial at B ≈ 60 costs ~1.5 min (GCN) and at B ≈ 8 ~5 min (GAT)
here (see `search_max_b`). cells/s at the largest B is that trial's single forward+backward step
(``--steps-b N`` re-times it with 1 warm-up + N steps). The PyG side (replicated offset edge_index,
equivalent to a ``Batch``, built inside the budget) is searched the same way (``--no-pyg-scale`` skips
it). Note: RLIMIT_AS bounds VIRTUAL memory (≈1.1 GiB of it is mapped right after importing torch), so it is a
slightly stricter budget than the same amount of RSS.

GPU (``--device cuda``): the same measurements on the GPU (no RLIMIT_AS; a Part-B trial fits when its
step raises no CUDA out-of-memory error, the budget being the whole GPU, and the trials run in the
parent process, the allocator emptied between them). ``--save-graph-file F`` / ``--graph-file F`` carry
the real edge list to a machine without the built dataset. Part A was run this way on an H100
(``benchmarks/results/graph_A_cuda_h100.txt``); the Part-B GPU path has not been run yet (the GPU lease
ended before it could be).

Runtime on the 2-core reference machine (shared with other jobs, load 3–7): Part A ≈ 10 min, Part B
≈ 27 min at a 16 GiB budget (18 trials, 14 of them complete steps on the 16.6M-edge graph).

Run (repository root; the machine needs ≈ budget + 2 GiB free RAM):
    python benchmarks/bench_graph.py --dataset runs/demo/dataset --part A --json benchmarks/results/graph_A.json
    python benchmarks/bench_graph.py --dataset runs/demo/dataset --part B --budget-gib 16 \
        --json benchmarks/results/graph_B.json
The tables are printed and, with ``--json X.json``, also written to ``X.txt``.
``--profile-gat B`` additionally profiles one shared and one PyG GAT step (torch.profiler) on the
Part-A graph and prints the top operators by self CPU time.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from graph_bench_child import GIB, MIB, ROOT, child_main, mem_available, real_edge_index

CHILD_SCRIPT = Path(__file__).resolve().with_name("graph_bench_child.py")
OMP_WAIT_POLICY = "PASSIVE"  # see the module docstring; main() may clear it (--omp-active)


def run_child(spec: dict, limit_bytes: int, timeout: float, live_memory: bool = False) -> dict:
    """Run a measurement (`graph_bench_child.py`) in a fresh interpreter with RLIMIT_AS = limit_bytes (CPU
    only: a CUDA process maps far more address space than it uses, so GPU runs are bounded by the GPU's memory).

    `live_memory=True` runs the child with glibc's mmap threshold fixed at 64 KiB
    (``MALLOC_MMAP_THRESHOLD_``; ``MALLOC_TRIM_THRESHOLD_=0``): every tensor-sized allocation is then its
    own mapping, returned to the OS when freed, so the peak RSS is the peak of LIVE memory instead of
    also counting what the default allocator keeps after frees (see `part_a`)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    spec = dict(spec, result=result_path)
    on_cpu = spec.get("device", "cpu") == "cpu"

    def limit():
        if on_cpu:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    cmd = [sys.executable, str(CHILD_SCRIPT), json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        env = dict(os.environ)
        if OMP_WAIT_POLICY:
            env["OMP_WAIT_POLICY"] = OMP_WAIT_POLICY
        if live_memory:
            env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
        proc = subprocess.run(cmd, preexec_fn=limit, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env=env)
    except subprocess.TimeoutExpired:
        os.unlink(result_path)
        return {"status": "timeout", "wall_s": timeout}
    wall = time.perf_counter() - t0
    try:
        res = json.loads(Path(result_path).read_text())
    except (OSError, ValueError):
        tail = (proc.stderr or "")[-600:]
        oom = any(s in tail for s in ("MemoryError", "std::bad_alloc", "can't allocate", "Cannot allocate"))
        res = {"status": "exceeds limit" if oom else f"failed (rc={proc.returncode})", "stderr": tail}
    finally:
        if os.path.exists(result_path):
            os.unlink(result_path)
    res["process_wall_s"] = wall
    return res


# ---------------------------------------------------------------------------------------------------------
# Part A
# ---------------------------------------------------------------------------------------------------------


def prepare_graph(which: str, gpath: Path, args) -> dict:
    spec = {"mode": "prep", "which": which, "dataset": str(Path(args.dataset).resolve()), "graph": str(gpath),
            "seed": args.seed, "graph_file": str(args.graph_file.resolve()) if args.graph_file else None}
    info = run_child(spec, int(min(args.guard_gib, 8) * GIB), args.timeout)
    if "num_nodes" not in info:
        sys.exit(f"graph preparation failed: {info}")
    info.pop("process_wall_s", None)
    return info


def check_same(layer: str, b: int, shared_path: str, pyg_path: str) -> dict:
    import torch

    s, p = torch.load(shared_path), torch.load(pyg_path)
    torch.testing.assert_close(s["out"], p["out"], rtol=1e-4, atol=1e-5,
                               msg=lambda m: f"{layer} B={b}: outputs differ: {m}")
    out_diff = float((s["out"] - p["out"]).abs().max())
    grad_rel = {}
    for name, gs in s["grads"].items():
        gp = p["grads"][name].view_as(gs)
        rel = float((gs - gp).abs().max() / gp.abs().max().clamp_min(1e-30))
        grad_rel[name] = rel
        assert rel <= 1e-3, f"{layer} B={b}: gradient of {name} differs (max rel {rel:.2e})"
    return {"max_abs_out_diff": out_diff, "max_rel_grad_diff": max(grad_rel.values())}


def fmt(v, spec="{:.1f}"):
    return spec.format(v) if isinstance(v, (int, float)) else str(v)


def _part_a_measure(impl: str, layer: str, b: int, gpath: Path, tmp: Path, args, log) -> dict:
    """One Part-A config: the timing process, then (CPU) the live-memory process whose peaks replace the
    timing process's (kept as ``rss_peak_delta_mib``)."""
    guard = int(args.guard_gib * GIB)
    spec = {
        "impl": impl, "layer": layer, "B": b, "graph": str(gpath), "seed": args.seed,
        "threads": args.threads, "warmup": args.warmup, "steps": args.steps, "batch": "data",
        "check": str(tmp / f"check_{impl}.pt"), "device": args.device,
        "library_warmup": not args.no_library_warmup,
    }
    res = run_child(spec, guard, args.timeout)
    if res["status"] == "ok" and args.device == "cpu":  # live-memory peak, in its own process
        mem = run_child(dict(spec, check=None, warmup=1, steps=2), guard, args.timeout, live_memory=True)
        res["rss_peak_delta_mib"] = res["peak_delta_mib"]  # glibc defaults (allocator retention)
        res["peak_delta_mib"] = mem.get("peak_delta_mib", mem["status"])
        res["steady_peak_delta_mib"] = mem.get("steady_peak_delta_mib", mem["status"])
        res["topology_cache_mib"] = mem.get("topology_cache_mib", mem["status"])
        res["library_warmup_mib"] = mem.get("library_warmup_mib", "-")
    log(f"  {layer} B={b:<3d} {impl:6s}: " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                                        for k, v in res.items() if k != "stderr"}))
    if res["status"] not in ("ok", "exceeds limit"):
        log(res.get("stderr", ""))
    return res


def _part_a_row(layer: str, b: int, gpath: Path, tmp: Path, args, log) -> dict:
    """Both implementations of one (layer, B); when both ran, their outputs and gradients are checked
    equal and the speed and memory ratios added."""
    row = {"layer": layer, "B": b}
    for impl in ("shared", "pyg"):
        row[impl] = _part_a_measure(impl, layer, b, gpath, tmp, args, log)
    if row["shared"]["status"] == "ok" and row["pyg"]["status"] == "ok" and all(
            isinstance(row[i]["peak_delta_mib"], float) for i in ("shared", "pyg")):
        row["check"] = check_same(layer, b, str(tmp / "check_shared.pt"), str(tmp / "check_pyg.pt"))
        row["speedup"] = row["shared"]["cells_per_s"] / row["pyg"]["cells_per_s"]
        row["mem_ratio"] = row["shared"]["peak_delta_mib"] / max(row["pyg"]["peak_delta_mib"], 1e-9)
        if all(isinstance(row[i].get("steady_peak_delta_mib"), float) for i in ("shared", "pyg")):
            row["steady_mem_ratio"] = (row["shared"]["steady_peak_delta_mib"]
                                       / max(row["pyg"]["steady_peak_delta_mib"], 1e-9))
        log(f"  {layer} B={b}: outputs/gradients agree {row['check']}")
    for impl in ("shared", "pyg"):
        Path(tmp / f"check_{impl}.pt").unlink(missing_ok=True)
    return row


def _part_a_table(rows: list[dict], args) -> list[str]:
    hdr = (f"{'layer':5s} {'B':>3s} | {'shared cells/s':>14s} {'PyG cells/s':>11s} {'ratio':>6s} | "
           f"{'best-step ratio':>15s} | "
           f"{'shared MiB':>10s} {'PyG MiB':>8s} {'ratio':>6s} | {'steady shared':>13s} {'PyG':>6s} {'ratio':>6s} | "
           f"{'RSS-HWM shared':>14s} {'PyG':>6s} | {'lib MiB shared':>14s} {'PyG':>5s} | "
           f"{'PyG batch build ms/step':>23s} "
           f"{'PyG inputs MiB':>14s} | {'max|Δout|':>9s}")
    table = [hdr, "-" * len(hdr)]
    for r in rows:
        s, p = r["shared"], r["pyg"]
        ok_s, ok_p = s["status"] == "ok", p["status"] == "ok"
        table.append(
            f"{r['layer']:5s} {r['B']:>3d} | "
            f"{fmt(s.get('cells_per_s', s['status'])):>14s} {fmt(p.get('cells_per_s', p['status'])):>11s} "
            f"{fmt(r.get('speedup', '-'), '{:.2f}'):>6s} "
            f"{fmt(s['cells_per_s_best_step'] / p['cells_per_s_best_step'] if ok_s and ok_p else '-', '{:.2f}'):>15s} | "
            f"{fmt(s.get('peak_delta_mib', s['status'])):>10s} {fmt(p.get('peak_delta_mib', p['status'])):>8s} "
            f"{fmt(r.get('mem_ratio', '-'), '{:.3f}'):>6s} | "
            f"{fmt(s.get('steady_peak_delta_mib', '-')):>13s} {fmt(p.get('steady_peak_delta_mib', '-')):>6s} "
            f"{fmt(r.get('steady_mem_ratio', '-'), '{:.3f}'):>6s} | "
            f"{fmt(s.get('rss_peak_delta_mib', '-'), '{:.0f}'):>14s} {fmt(p.get('rss_peak_delta_mib', '-'), '{:.0f}'):>6s} | "
            f"{fmt(s.get('library_warmup_mib', '-'), '{:.0f}'):>14s} {fmt(p.get('library_warmup_mib', '-'), '{:.0f}'):>5s} | "
            f"{fmt(p['batch_build_s'] * 1e3 if ok_p else '-'):>23s} "
            f"{fmt(p['inputs_mib'] if ok_p else '-'):>14s} | "
            f"{fmt(r['check']['max_abs_out_diff'] if 'check' in r else '-', '{:.1e}'):>9s}"
        )
    if args.device == "cpu":
        mem_note = ("MiB = peak of LIVE memory during forward+backward above the RSS right before the first forward "
                    "(a separate process with glibc's mmap threshold fixed at 64 KiB, so freed tensors leave RSS at "
                    "once; max over 3 steps, the first included); steady = the same over the steps after the first, "
                    "above the RSS they start from, plus the topology cache the shared layers keep (the first step "
                    "also pays one-off costs: thread workspaces, building that cache); library code is paged in before the baseline by a "
                    "tiny-graph step in both processes (its RSS: 'lib MiB'; --no-library-warmup charges it to the first step); RSS-HWM = the same delta in the timing process with glibc defaults, "
                    "which also counts memory the allocator keeps after frees")
    else:
        mem_note = "MiB = torch.cuda.max_memory_allocated during forward+backward above the allocation before it"
    table.append("cells/s = B x timed steps / wall time; best-step ratio = the same ratio from each side's fastest "
                 f"step (noise check); {mem_note} (inputs excluded; the PyG side's replicated Batch is in "
                 "'PyG inputs MiB').")
    return table


def _part_a_targets(rows: list[dict]) -> list[str]:
    """The B = 16 targets (speed ≥ 5×, memory ≤ ¼ of PyG), MET or NOT MET."""
    targets = []
    for layer in ("gcn", "gat"):
        r = next((r for r in rows if r["layer"] == layer and r["B"] == 16), None)
        if r is None or "speedup" not in r:
            targets.append(f"{layer.upper()} B=16: not measured")
            continue
        sp, mr, smr = r["speedup"], r["mem_ratio"], r.get("steady_mem_ratio")
        steady = (f"; steady-state (steps after the first, cache included) = {smr:.3f} "
                  f"({'MET' if smr <= 0.25 else 'NOT MET'})" if smr is not None else "")
        targets.append(
            f"{layer.upper()} B=16: cells/s shared/PyG = {sp:.2f}x (target >= 5x: {'MET' if sp >= 5 else 'NOT MET'}); "
            f"peak memory shared/PyG, first step included = {mr:.3f} (target <= 0.25: "
            f"{'MET' if mr <= 0.25 else 'NOT MET'}){steady}"
        )
    return targets


def part_a(args, tmp: Path, log) -> dict:
    gpath = tmp / "graph_A.pt"
    ginfo = prepare_graph("A", gpath, args)
    log(f"Part A graph: {ginfo}")
    rows = [_part_a_row(layer, b, gpath, tmp, args, log) for layer in ("gcn", "gat") for b in args.batch_sizes]
    return {"graph": ginfo, "rows": rows, "table": _part_a_table(rows, args), "targets": _part_a_targets(rows)}


# ---------------------------------------------------------------------------------------------------------
# Part B
# ---------------------------------------------------------------------------------------------------------


def _search_trial(impl: str, layer: str, b: int, gpath: Path, budget: int, args, log) -> dict:
    """One Part-B trial: a single forward+backward step at B under the budget."""
    spec = {"impl": impl, "layer": layer, "B": b, "graph": str(gpath), "seed": args.seed,
            "threads": args.threads, "warmup": 1, "steps": 0, "batch": "offset", "device": args.device}
    if args.device == "cpu":
        res = run_child(spec, budget, args.timeout)
    else:
        # On a GPU the trials run in this process (a fresh CUDA process costs ~20 s to start on the
        # lent machine); an out-of-memory error is a clean exception, and the caching allocator is
        # emptied after every trial so the next one starts from an empty GPU.
        import torch

        t0 = time.perf_counter()
        res = child_main(spec)
        res["process_wall_s"] = time.perf_counter() - t0
        gc.collect()
        torch.cuda.empty_cache()
    short = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in res.items()
             if k in ("status", "first_step_s", "vm_peak_mib", "peak_rss_mib", "peak_delta_mib", "inputs_mib",
                      "cuda_max_reserved_mib", "cells_per_s",
                      "process_wall_s", "error")}
    log(f"    {impl} {layer} B={b}: {json.dumps(short)}")
    return res


def _search_double(trial, b_cap: int) -> tuple[int, int | None]:
    """``--search double``: (largest fitting B, first failing B or None) by doubling, then bisection."""
    lo, hi = 0, None
    b = 1
    while b <= b_cap:
        if trial(b):
            lo, b = b, b * 2
        else:
            hi = b
            break
    while hi is not None and hi - lo > max(1, lo // 8):
        mid = (lo + hi) // 2
        if trial(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def _search_fit(trial, trials: dict[int, dict], budget: int, b_cap: int) -> tuple[int, int | None]:
    """``--search fit``: (largest fitting B, first failing B or None) by extrapolating the measured peak
    address space of the fitting `trials` (filled by `trial`) to the budget (see `search_max_b`)."""
    lo, hi = 0, None
    for b in (1, 2):
        if trial(b):
            lo = b
        else:
            hi = b
            break
    for _ in range(16):
        if hi is not None and hi - lo <= 1:
            break
        fits = sorted(b for b, r in trials.items() if r["status"] == "ok")
        b1, b2 = fits[-2], fits[-1]
        v1, v2 = trials[b1]["budget_metric_mib"] * MIB, trials[b2]["budget_metric_mib"] * MIB
        slope = (v2 - v1) / (b2 - b1)
        pred = b2 + int((budget - v2) // slope) if slope > 0 else 2 * b2
        cand = min(max(pred, lo + 1), (hi - 1) if hi is not None else b_cap, 4 * lo)
        history = [trials[b]["status"] == "ok" for b in trials]
        if hi is not None:
            if not history[-1] and hi - lo > max(2, lo // 8):  # overshot with a wide bracket
                cand = min(cand, (lo + hi) // 2)
            if history[-1] == history[-2]:  # the model missed twice on one side: bisect
                cand = (lo + hi) // 2
        if trial(cand):
            lo = cand
        else:
            hi = cand
        if lo >= b_cap:
            break
    return lo, hi


def search_max_b(impl: str, layer: str, gpath: Path, args, log, b_cap: int = 4096) -> dict:
    """Largest B whose forward+backward runs under RLIMIT_AS = budget, each trial a fresh process.

    ``--search double``: B = 1, 2, 4, ... until a failure, then bisection until hi − lo ≤ max(1, lo/8).
    ``--search fit`` (default): B = 1 and 2, then the next candidate is the linear extrapolation of the
    measured peak address space (VmPeak, what RLIMIT_AS caps) of the two largest fitting trials to the
    budget, clamped into the open bracket (lo, hi) and to at most 4·lo — or the bisection midpoint
    after a failure in a still-wide bracket or when the last two trials fell on the same side (the
    small-B fit can be far off: fixed costs such as sorting the edge list dominate there); repeated until hi = lo + 1, i.e. the answer is exact and confirmed by a fitting trial at B
    and a failing one at B + 1. Failing trials at large B are cheap (they stop at the first refused
    allocation), fitting ones cost a full step, which is why this beats plain doubling here.
    """
    budget = int(args.budget_gib * GIB)
    trials: dict[int, dict] = {}

    def trial(b: int) -> bool:
        trials[b] = _search_trial(impl, layer, b, gpath, budget, args, log)
        return trials[b]["status"] == "ok"

    lo, hi = _search_double(trial, b_cap) if args.search == "double" else _search_fit(trial, trials, budget, b_cap)
    out = {"impl": impl, "layer": layer, "max_B": lo, "first_fail_B": hi, "search": args.search,
           "trials": [dict(r, B=b) for b, r in trials.items()]}
    if lo:
        out["final"] = trials[lo]
        if args.steps_b:
            spec = {"impl": impl, "layer": layer, "B": lo, "graph": str(gpath), "seed": args.seed,
                    "threads": args.threads, "warmup": 1, "steps": args.steps_b, "batch": "offset",
                    "device": args.device}
            out["final"] = run_child(spec, budget, args.timeout)
            log(f"    {impl} {layer} timed B={lo}: " + json.dumps(
                {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out["final"].items() if k != "stderr"}))
    return out


def part_b(args, tmp: Path, log) -> dict:
    gpath = tmp / "graph_B.pt"
    ginfo = prepare_graph("B", gpath, args)
    log(f"Part B graph: {json.dumps(ginfo, indent=1)}")
    if args.device == "cpu":
        log(f"Budget: RLIMIT_AS = {args.budget_gib} GiB on every trial process (whole address space)")
    else:
        log(f"Budget: the whole GPU ({args.budget_gib:.1f} GiB, {args.device_name}); a trial fits when forward+"
            f"backward raises no CUDA out-of-memory error; the extrapolation uses torch.cuda.max_memory_reserved")
    results = []
    impls = ["shared"] + ([] if args.no_pyg_scale else ["pyg"])
    for layer in args.scale_layers:
        for impl in impls:
            log(f"  searching {impl} {layer}")
            results.append(search_max_b(impl, layer, gpath, args, log))
    hdr = (f"{'layer':5s} {'impl':6s} | {'max B':>5s} {'first fail':>10s} {'trials':>6s} | {'cells/s':>8s} "
           f"{'s/step':>7s} | {'VmPeak MiB':>10s} {'peak RSS MiB':>12s} {'Δ fwd+bwd MiB':>13s} {'MiB/cell':>8s} "
           f"{'inputs MiB':>10s}")
    table = [hdr, "-" * len(hdr)]
    for r in results:
        f = r.get("final", {})
        ok = f.get("status") == "ok"
        table.append(
            f"{r['layer']:5s} {r['impl']:6s} | {r['max_B']:>5d} {fmt(r['first_fail_B'] or '-', '{:d}'):>10s} "
            f"{len(r['trials']):>6d} | "
            f"{fmt(f['cells_per_s'] if ok else f.get('status', '-'), '{:.3f}'):>8s} "
            f"{fmt(f['step_s'] if ok else '-', '{:.1f}'):>7s} | "
            f"{fmt(f['vm_peak_mib'] if ok else '-', '{:.0f}'):>10s} "
            f"{fmt(f['peak_rss_mib'] if ok else '-', '{:.0f}'):>12s} "
            f"{fmt(f['peak_delta_mib'] if ok else '-', '{:.0f}'):>13s} "
            f"{fmt(f['peak_delta_mib'] / r['max_B'] if ok else '-', '{:.0f}'):>8s} "
            f"{fmt(f['inputs_mib'] if ok else '-', '{:.0f}'):>10s}"
        )
    if not args.steps_b:
        table.append("cells/s and s/step: the single forward+backward step of the fitting trial at max B "
                     "(first step of a fresh process; --steps-b N re-times it with 1 warm-up + N steps).")
    return {"graph": ginfo, "budget_gib": args.budget_gib, "results": results, "table": table}


# ---------------------------------------------------------------------------------------------------------
# Profile
# ---------------------------------------------------------------------------------------------------------


def profile_gat(args, b: int, tmp: Path, log) -> dict:
    gpath = tmp / "graph_A.pt"
    if not gpath.exists():
        prepare_graph("A", gpath, args)
    spec = {"mode": "profile", "graph": str(gpath), "B": b, "seed": args.seed, "threads": args.threads}
    res = run_child(spec, int(args.guard_gib * GIB), args.timeout)
    for impl in ("shared", "pyg"):
        log(f"\n=== torch.profiler, {impl} GAT stack on the real TOSG, B={b}, one fwd+bwd step, "
            f"sorted by self CPU time ===\n{res.get(impl, res)}")
    return res


# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------


def provenance() -> dict:
    import torch
    import torch_geometric

    sources = [ROOT / "modeling_celltosg" / name for name in ("topology.py", "sparse_functions.py", "gcn_conv.py", "gat_conv.py",
                                                                  "cpu_kernels.py")]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    return {
        "torch": torch.__version__, "torch_geometric": torch_geometric.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "git_commit": commit,
        "layers_sha256": hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
    }


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="runs/demo/dataset", help="built OmniCellTOSG dataset (graph source)")
    ap.add_argument("--part", choices=["A", "B", "all"], default="all")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per Part-A config (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up steps per Part-A config (first = memory/check step)")
    ap.add_argument("--steps-b", type=int, default=0,
                    help="re-time the largest B of Part B with 1 warm-up + N steps (0: use the trial's single step)")
    ap.add_argument("--search", choices=["fit", "double"], default="fit", help="Part-B max-B search (see search_max_b)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every measurement")
    ap.add_argument("--guard-gib", type=float, default=16.0, help="RLIMIT_AS of every Part-A process")
    ap.add_argument("--budget-gib", type=float, default=24.0, help="Part-B memory budget (RLIMIT_AS per trial)")
    ap.add_argument("--no-pyg-scale", action="store_true", help="skip the PyG max-B search of Part B")
    ap.add_argument("--scale-layers", nargs="+", choices=["gcn", "gat"], default=["gcn", "gat"],
                    help="layers searched in Part B")
    ap.add_argument("--timeout", type=float, default=900, help="seconds before a measurement process is killed")
    ap.add_argument("--omp-active", action="store_true",
                    help="do not set OMP_WAIT_POLICY=PASSIVE in the measurement processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-library-warmup", action="store_true",
                    help="Part A: skip the tiny-graph step that pages in library code before the baseline RSS")
    ap.add_argument("--profile-gat", type=int, default=0, metavar="B", help="also profile one GAT step at this B")
    ap.add_argument("--force", action="store_true", help="allow a budget above the RAM available here")
    ap.add_argument("--json", type=Path, help="write results here (and the printed tables to the same name .txt)")
    ap.add_argument("--device", default="cpu", help="'cpu' (default) or 'cuda': where every measurement runs; on "
                    "cuda, memory is torch.cuda's peak and Part B's budget is the whole GPU")
    ap.add_argument("--graph-file", type=Path, help="read the real TOSG edge list from this file (written by "
                    "--save-graph-file) instead of --dataset, e.g. on a machine without the built dataset")
    ap.add_argument("--save-graph-file", type=Path, help="write the real TOSG edge list of --dataset here and exit")
    return ap.parse_args()


def _check_memory(args) -> None:
    """Exit when a guard or budget asks for more than the RAM available here (unless --force)."""
    avail = mem_available()
    for name in ("guard_gib", "budget_gib"):
        need = getattr(args, name) * GIB
        if args.device == "cpu" and need > avail - 2 * GIB and not args.force and (
                name == "guard_gib" or args.part in ("B", "all")):
            sys.exit(f"--{name.replace('_', '-')} {getattr(args, name)} GiB exceeds the RAM available here "
                     f"({avail / GIB:.1f} GiB - 2 GiB margin); lower it or pass --force.")


def _run_parts(args, result: dict, log) -> None:
    """Parts A and/or B (and the optional GAT profile) into `result`, their tables logged."""
    with tempfile.TemporaryDirectory(prefix="bench_graph_") as tmpdir:
        tmp = Path(tmpdir)
        if args.part in ("A", "all"):
            log(f"\n## Part A: shared topology vs PyG Batch on the real TOSG "
                f"(warm-up {args.warmup}, timed steps {args.steps}, guard RLIMIT_AS {args.guard_gib} GiB)")
            result["A"] = part_a(args, tmp, log)
            log("")
            for line in result["A"]["table"]:
                log(line)
            log("")
            for line in result["A"]["targets"]:
                log(line)
        if args.profile_gat:
            result["profile_gat"] = profile_gat(args, args.profile_gat, tmp, log)
        if args.part in ("B", "all"):
            log(f"\n## Part B: original-size graph, largest B under a {args.budget_gib:.1f} GiB budget ({args.device})")
            result["B"] = part_b(args, tmp, log)
            log("")
            for line in result["B"]["table"]:
                log(line)


def main() -> None:
    args = _parse_args()
    if args.save_graph_file:
        import torch

        ei, n, info = real_edge_index(args.dataset)
        args.save_graph_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"edge_index": ei, "num_nodes": n, "info": info}, args.save_graph_file)
        print(f"wrote {args.save_graph_file}: {info}")
        return
    args.device_name = "cpu"
    if args.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            sys.exit(f"--device {args.device}: no CUDA device is available here.")
        props = torch.cuda.get_device_properties(0)
        args.device_name = props.name
        if args.part in ("B", "all"):
            args.budget_gib = props.total_memory / GIB  # the whole GPU
    os.chdir(ROOT)
    global OMP_WAIT_POLICY
    if args.omp_active:
        OMP_WAIT_POLICY = ""

    _check_memory(args)

    lines: list[str] = []

    def log(msg: str = "") -> None:
        print(msg, flush=True)
        lines.append(msg)

    result: dict = {"provenance": provenance(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                          for k, v in vars(args).items()}}
    log(f"bench_graph: {json.dumps(result['provenance'])}")
    log(f"model: 2-layer stack conv2(relu(conv1(x))), F=16; GCN 16->16->16, GAT 16->2x8->2x8 (concat); "
        f"step = forward + loss=mean(out^2) + backward; torch threads={args.threads}")
    _run_parts(args, result, log)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        args.json.with_suffix(".txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
