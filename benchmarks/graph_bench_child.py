"""The measuring side of ``benchmarks/bench_graph.py`` (see its docstring for what is measured and why).

Every measurement runs in a fresh interpreter started by ``bench_graph.run_child``::

    python benchmarks/graph_bench_child.py SPEC_JSON

``SPEC_JSON`` says what to do (``mode``: ``"prep"`` builds the benchmark graph file, ``"profile"`` profiles
one GAT step per implementation, otherwise one (implementation, layer, B) measurement) and where to
write the result dict as JSON (``spec["result"]``). The graph builders (the real TOSG edge list, the
original-size random graph) and the Linux memory counters live here too; the parent imports them.

How a Part-A measurement treats libraries and memory:

  * library warm-up (``--no-library-warmup`` skips it): each process first runs one forward+backward of
    its own stack on an 8-node ring (one cell), so code and pools needed once per process (numba's
    cached kernels: 66–69 MiB measured, ~62 MiB of it set up by the first call of any cached kernel;
    MKL / OpenMP pools) are paged in before the baseline, for both implementations alike; the RSS it
    added is reported ("lib MiB");
  * memory: ``/proc/self/status`` VmRSS is read right before the first forward (graph, inputs and
    modules built, library warm-up and ``gc.collect()`` done), then the kernel's peak-RSS counter is reset
    (``echo 5 > /proc/self/clear_refs``, Linux ≥ 4.0) and VmHWM is read after the step(s):
    peak memory of forward+backward = VmHWM − RSS-before (max over all steps). Torch CPU allocations are
    invisible to tracemalloc, but they are resident pages, so this counts them. The reported "MiB" (and
    the target ratio) come from a SECOND process per config (1 + 2 steps) run with glibc's mmap
    threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_=65536``, ``MALLOC_TRIM_THRESHOLD_=0``): every
    tensor-sized block is then its own mapping and leaves RSS when freed, so the delta is the peak of
    LIVE memory. With glibc defaults the RSS also keeps what the allocator retains after frees, which
    grew from step to step here (a shared GCN step: +115 MiB live, but RSS after each step rising
    695 → 993 MiB); that figure is still reported ("RSS-HWM", from the timing process), and the timing
    process keeps glibc defaults so that page faults of fresh mappings do not slow either side.
    (``ru_maxrss`` is not usable: Linux carries the parent's peak into a fork+exec'd child.) The
    replicated inputs of the PyG side are NOT in the delta (they are built before the baseline); their
    size is reported separately ("inputs MiB"). With ``--device cuda`` memory is
    ``torch.cuda.max_memory_allocated`` above the allocation before the first forward (exact live peak).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 1 << 30
MIB = 1 << 20
F_IN = 16
N_SCALE = 533_458
E_SCALE = 16_600_000


# ---------------------------------------------------------------------------------------------------------
# Memory helpers (Linux /proc)
# ---------------------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def hwm_bytes() -> int:
    return _status_kib("VmHWM") * 1024


def reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False if not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------------------------------------------------
# Graphs
# ---------------------------------------------------------------------------------------------------------


def real_edge_index(dataset: str):
    import torch

    from dataset_script.cohorts.loader import load_graph
    from modeling_celltosg.tosg_graph import ppi_directed

    graph, _ = load_graph(dataset)
    ei = torch.cat([graph.internal_edge_index, ppi_directed(graph.ppi_edge_index)], dim=1).contiguous()
    return ei, graph.num_nodes, {
        "num_nodes": graph.num_nodes,
        "num_transcripts": graph.num_transcripts,
        "num_proteins": graph.num_proteins,
        "internal_edges": int(graph.internal_edge_index.size(1)),
        "ppi_pairs": int(graph.ppi_edge_index.size(1)),
        "directed_edges": int(ei.size(1)),
    }


def scale_graph(real_ei, real_n: int, n: int, e: int, seed: int):
    """Random [2, e] edge_index on n nodes following the real out-/in-degree profiles (bench_graph docstring)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    src_r, dst_r = real_ei.numpy()
    out_deg = np.bincount(src_r, minlength=real_n)
    in_deg = np.bincount(dst_r, minlength=real_n)
    w_out = rng.choice(out_deg, size=n).astype(np.float64)
    w_in = rng.choice(in_deg, size=n).astype(np.float64)
    p_out, p_in = w_out / w_out.sum(), w_in / w_in.sum()
    keys = np.empty(0, dtype=np.int64)
    rounds = 0
    while keys.size < e:
        rounds += 1
        need = e - keys.size
        draw = int(need * 1.02) + 1000 if rounds > 1 else need
        counts = rng.multinomial(draw, p_out)  # out-degree of every node in this round
        s = np.repeat(np.arange(n, dtype=np.int64), counts)
        d = rng.choice(n, size=draw, p=p_in).astype(np.int64)
        k = s * n + d
        k = k[s != d]
        del s, d
        keys = np.unique(np.concatenate([keys, k]))
        if keys.size > e:  # drop a random surplus
            keys = np.sort(rng.choice(keys, size=e, replace=False))
    src, dst = keys // n, keys % n
    del keys
    od, idg = np.bincount(src, minlength=n), np.bincount(dst, minlength=n)
    info = {
        "num_nodes": n,
        "directed_edges": int(src.size),
        "generation": (
            f"each node draws an out-degree and (independently) an in-degree from the empirical "
            f"distributions of the real TOSG ({real_n} nodes, {real_ei.size(1)} directed edges); "
            f"{e} distinct edges are drawn with source ~ drawn out-degree, target ~ drawn in-degree "
            f"(multinomial), self-loops and duplicates dropped and re-drawn ({rounds} rounds); "
            f"edges sorted by (source, target); numpy seed {seed}"
        ),
        "mean_out_degree": float(od.mean()),
        "max_out_degree": int(od.max()),
        "frac_no_out": float((od == 0).mean()),
        "max_in_degree": int(idg.max()),
        "frac_no_in": float((idg == 0).mean()),
        "real_mean_out_degree": float(out_deg.mean()),
        "real_max_out_degree": int(out_deg.max()),
        "real_frac_no_out": float((out_deg == 0).mean()),
        "real_max_in_degree": int(in_deg.max()),
        "real_frac_no_in": float((in_deg == 0).mean()),
    }
    ei = torch.from_numpy(np.stack([src, dst]))
    return ei, info


def prep_child(spec: dict) -> dict:
    """Build the benchmark graph file in a separate process (keeps the parent lean): the real TOSG
    (Part A) or the original-size random graph (Part B)."""
    import torch

    if spec.get("graph_file"):  # a saved real TOSG edge list (e.g. on a machine without the dataset)
        saved = torch.load(spec["graph_file"])
        ei, n, info = saved["edge_index"], int(saved["num_nodes"]), saved["info"]
    else:
        ei, n, info = real_edge_index(spec["dataset"])
    if spec["which"] == "B":
        t0 = time.perf_counter()
        ei, info = scale_graph(ei, n, N_SCALE, E_SCALE, spec["seed"])
        info["generation_s"] = time.perf_counter() - t0
        n = N_SCALE
    torch.save({"edge_index": ei, "num_nodes": n}, spec["graph"])
    return info


# ---------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------


GRAPH_MODULES = ("modeling_celltosg.topology", "modeling_celltosg.gcn_conv", "modeling_celltosg.gat_conv")


def import_graph_module():
    """The shared-topology layers (`gcn_conv`, `gat_conv`, the `topology` cache and the kernels they import),
    as one namespace, without running the package's
    `__init__`, which imports transformers: a bare package object pointing at the source folder stands in
    for it. This keeps each measurement process's start-up short — it matters for Part B's many fresh
    trial processes, especially on a GPU machine."""
    import importlib
    import types

    if "modeling_celltosg" not in sys.modules:
        package = types.ModuleType("modeling_celltosg")
        package.__path__ = [str(ROOT / "modeling_celltosg")]
        sys.modules["modeling_celltosg"] = package
    namespace = types.SimpleNamespace()
    for name in GRAPH_MODULES:
        vars(namespace).update(vars(importlib.import_module(name)))
    return namespace


def make_stacks(layer: str, impl: str, seed: int):
    """The shared 2-layer stack (always built, from `seed`) and, for impl == 'pyg', a PyG stack with
    copied weights. Returns the module to run."""
    import torch
    from torch import nn

    graph = import_graph_module()
    SharedGATConv, SharedGCNConv = graph.SharedGATConv, graph.SharedGCNConv

    class Stack(nn.Module):
        def __init__(self, conv1, conv2):
            super().__init__()
            self.conv1, self.conv2 = conv1, conv2

        def forward(self, x, edge_index):
            return self.conv2(torch.relu(self.conv1(x, edge_index)), edge_index)

    torch.manual_seed(seed)
    if layer == "gcn":
        shared = Stack(SharedGCNConv(F_IN, 16), SharedGCNConv(16, 16))
    else:
        shared = Stack(SharedGATConv(F_IN, 8, heads=2), SharedGATConv(16, 8, heads=2))
    with torch.no_grad():
        for conv in (shared.conv1, shared.conv2):
            conv.bias.normal_(0, 0.1)
    if impl == "shared":
        return shared
    from torch_geometric.nn import GATConv, GCNConv

    if layer == "gcn":
        pyg = Stack(GCNConv(F_IN, 16), GCNConv(16, 16))
    else:
        pyg = Stack(GATConv(F_IN, 8, heads=2), GATConv(16, 8, heads=2))
    src = dict(shared.named_parameters())
    dst = dict(pyg.named_parameters())
    assert set(src) == set(dst), (sorted(src), sorted(dst))
    with torch.no_grad():
        for name, p in dst.items():
            assert p.shape == src[name].shape, name
            p.copy_(src[name])
    return pyg


def topology_cache_bytes() -> int:
    """Bytes of the tensors the shared layers cache per topology (`topology._TOPOLOGY`); 0 for PyG."""
    graph = sys.modules.get("modeling_celltosg.topology")
    if graph is None:
        return 0
    seen, total = set(), 0

    def walk(v):
        nonlocal total
        if isinstance(v, (tuple, list)):
            for item in v:
                walk(item)
        elif dataclasses.is_dataclass(v):  # e.g. graph.CSRTopology (the attention layers' cache)
            walk(list(vars(v).values()))
        elif hasattr(v, "untyped_storage") and v.untyped_storage().data_ptr() not in seen:
            seen.add(v.untyped_storage().data_ptr())
            total += v.untyped_storage().nbytes()

    for _ref, _version, values in graph._TOPOLOGY._entries.values():
        walk(list(values.values()))
    return total


def library_warmup(model, impl: str, device) -> int:
    """One forward+backward of `model` on a tiny graph (an 8-node bidirected ring, one cell), gradients
    cleared after. This pages in the code and pools each implementation needs once per process (numba
    loading its cached kernels, MKL / OpenMP thread pools, torch's autograd engine), so that the measured
    first step on the real graph is not charged for them. Returns the RSS it added (bytes)."""
    import torch

    rss0 = rss_bytes()
    ring = torch.arange(8, device=device)
    edge_index = torch.stack([torch.cat([ring, (ring + 1) % 8]), torch.cat([(ring + 1) % 8, ring])])
    x = torch.randn(8, 1, F_IN, device=device) if impl == "shared" else torch.randn(8, F_IN, device=device)
    model(x, edge_index).pow(2).mean().backward()
    for p in model.parameters():
        p.grad = None
    del x, edge_index
    gc.collect()
    return rss_bytes() - rss0


# ---------------------------------------------------------------------------------------------------------
# One measurement
# ---------------------------------------------------------------------------------------------------------


def _step_inputs(spec: dict, x, edge_index, n: int, device, res: dict):
    """The (features, edge_index) one step runs on: the shared `[N, B, F]` features and the shared edge
    list, or for PyG B replicated copies (Part A: a torch_geometric `Batch`, its build timed as
    `batch_build_s`; Part B: the equivalent offset edge_index)."""
    import torch

    b, impl = spec["B"], spec["impl"]
    if impl == "shared":
        return x, edge_index
    if spec.get("batch") == "data":  # Part A: the original's torch_geometric Batch
        from torch_geometric.data import Batch, Data

        times = []
        for _ in range(spec.get("build_reps", 3)):
            t0 = time.perf_counter()
            batch = Batch.from_data_list([Data(x=x[:, c], edge_index=edge_index, num_nodes=n) for c in range(b)])
            times.append(time.perf_counter() - t0)
            if _ < spec.get("build_reps", 3) - 1:
                del batch
        res["batch_build_s"] = sorted(times)[len(times) // 2]
        return batch.x, batch.edge_index
    # Part B: the equivalent offset edge_index of B copies (cell-major node order)
    t0 = time.perf_counter()
    offs = torch.arange(b, dtype=torch.long, device=device).repeat_interleave(edge_index.size(1)) * n
    ei = edge_index.repeat(1, b) + offs
    del offs
    inp = x.transpose(0, 1).reshape(b * n, F_IN)
    res["batch_build_s"] = time.perf_counter() - t0
    return inp, ei


def _run_steps(spec: dict, model, inp, ei, n: int, device, res: dict) -> tuple[int, int, int, float]:
    """The first step (memory / check step), `warmup - 1` more, then `steps` timed ones. Records timings,
    the loss and (with `spec["check"]`) saves the first step's output and gradients. Returns (peak RSS of
    the first step, RSS after it, peak RSS of the later steps, wall seconds of the timed steps)."""
    import torch

    cuda = device.type == "cuda"

    def step():
        out = model(inp, ei)
        loss = out.pow(2).mean()
        loss.backward()
        if cuda:
            torch.cuda.synchronize(device)
        return out, loss

    def clear_grads():
        for p in model.parameters():
            p.grad = None

    t0 = time.perf_counter()
    out, loss = step()
    res["first_step_s"] = time.perf_counter() - t0
    peak = hwm_bytes()
    res["loss"] = float(loss)
    if spec.get("check"):
        o = out.detach().cpu()
        if spec["impl"] != "shared":
            o = o.view(spec["B"], n, -1).transpose(0, 1)
        torch.save({"out": o.contiguous(), "grads": {k: p.grad.cpu() for k, p in model.named_parameters()}},
                   spec["check"])
        del o
    del out, loss
    clear_grads()
    gc.collect()
    rss_steady = rss_bytes()  # after the one-off first-step costs (library pages, workspaces, caches)
    reset_hwm()
    for _ in range(spec["warmup"] - 1):
        step()
        clear_grads()
    step_times = []
    t0 = time.perf_counter()
    for _ in range(spec["steps"]):
        t1 = time.perf_counter()
        step()
        clear_grads()
        step_times.append(time.perf_counter() - t1)
    dt = time.perf_counter() - t0
    res["step_times_s"] = step_times
    res["loadavg_1min"] = os.getloadavg()[0]
    return peak, rss_steady, hwm_bytes(), dt


def _measure(spec: dict, device, res: dict) -> None:
    """Load the graph, build the stack and inputs, run the steps and fill `res` with memory and speed."""
    import torch

    cuda = device.type == "cuda"
    g = torch.load(spec["graph"])
    edge_index, n = g["edge_index"].to(device), int(g["num_nodes"])
    del g
    b = spec["B"]
    model = make_stacks(spec["layer"], spec["impl"], spec["seed"]).to(device)
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    x = torch.randn(n, b, F_IN, generator=gen).to(device)
    rss_graph = rss_bytes()
    cuda_graph = torch.cuda.memory_allocated(device) if cuda else 0
    inp, ei = _step_inputs(spec, x, edge_index, n, device, res)
    del x  # the PyG side keeps only its replicated copy
    if spec.get("library_warmup"):
        res["library_warmup_mib"] = library_warmup(model, spec["impl"], device) / MIB
    gc.collect()
    rss_before = rss_bytes()
    res["inputs_mib"] = (rss_before - rss_graph - res.get("library_warmup_mib", 0.0) * MIB) / MIB
    res["rss_before_mib"] = rss_before / MIB
    res["hwm_reset"] = reset_hwm()
    if cuda:  # GPU memory: the caching allocator's exact peak of live tensors
        torch.cuda.synchronize(device)
        cuda_before = torch.cuda.memory_allocated(device)
        res["inputs_mib"] = (cuda_before - cuda_graph) / MIB
        torch.cuda.reset_peak_memory_stats(device)
    peak, rss_steady, steady_peak, dt = _run_steps(spec, model, inp, ei, n, device, res)
    peak = max(peak, steady_peak)
    res["peak_delta_mib"] = (peak - rss_before) / MIB
    # steady state: the steps after the first, above the RSS they start from, plus the per-topology
    # cache the shared layers keep between steps (built in the first step, so not in that delta)
    res["topology_cache_mib"] = topology_cache_bytes() / MIB
    res["steady_peak_delta_mib"] = (steady_peak - rss_steady) / MIB + res["topology_cache_mib"]
    res["peak_rss_mib"] = peak / MIB
    res["vm_peak_mib"] = _status_kib("VmPeak") / 1024  # lifetime peak address space (what RLIMIT_AS caps)
    res["budget_metric_mib"] = res["vm_peak_mib"]
    if cuda:
        res["peak_delta_mib"] = (torch.cuda.max_memory_allocated(device) - cuda_before) / MIB
        res["cuda_max_reserved_mib"] = torch.cuda.max_memory_reserved(device) / MIB
        res["budget_metric_mib"] = res["cuda_max_reserved_mib"]
        res["device_name"] = torch.cuda.get_device_name(device)
    if spec["steps"]:
        res["step_s"] = dt / spec["steps"]
        res["cells_per_s"] = b * spec["steps"] / dt
        res["cells_per_s_best_step"] = b / min(res["step_times_s"])
    else:
        res["step_s"] = res["first_step_s"]
        res["cells_per_s"] = b / res["first_step_s"]


def child_main(spec: dict) -> dict:
    """One (implementation, layer, B) measurement in this fresh process. Returns a result dict."""
    import torch

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec.get("device", "cpu"))
    res: dict = {"status": "ok", "rss_import_mib": rss_bytes() / MIB}
    oom_errors = (MemoryError, torch.cuda.OutOfMemoryError) if device.type == "cuda" else (MemoryError,)
    try:
        _measure(spec, device, res)
    except (MemoryError, RuntimeError) as err:  # allocation refused under RLIMIT_AS, or CUDA out of memory
        msg = str(err)
        if isinstance(err, oom_errors) or "memory" in msg.lower() or "alloc" in msg.lower():
            res = {"status": "exceeds limit", "error": msg[:300]}
        else:
            raise
    return res


def profile_child(spec: dict) -> dict:
    """One GAT stack step per implementation under torch.profiler (runs in a measurement process)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch_geometric.data import Batch, Data

    torch.set_num_threads(spec["threads"])
    g = torch.load(spec["graph"])
    ei, n, b = g["edge_index"], int(g["num_nodes"]), spec["B"]
    out = {}
    for impl in ("shared", "pyg"):
        model = make_stacks("gat", impl, spec["seed"])
        x = torch.randn(n, b, F_IN, generator=torch.Generator().manual_seed(spec["seed"] + 1))
        if impl == "shared":
            inp, e = x, ei
        else:
            batch = Batch.from_data_list([Data(x=x[:, c], edge_index=ei, num_nodes=n) for c in range(b)])
            inp, e = batch.x, batch.edge_index
        model(inp, e).pow(2).mean().backward()  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(inp, e).pow(2).mean().backward()
        out[impl] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20,
                                              max_name_column_width=48)
    return out


def main() -> None:
    spec = json.loads(sys.argv[1])
    mode = spec.get("mode")
    res = profile_child(spec) if mode == "profile" else prep_child(spec) if mode == "prep" else child_main(spec)
    Path(spec["result"]).write_text(json.dumps(res))


if __name__ == "__main__":
    main()
