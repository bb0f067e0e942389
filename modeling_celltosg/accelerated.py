"""Masked-edge pretraining with 🤗 Accelerate: one or many processes (``torchrun``/``accelerate launch``),
mixed precision, gradient accumulation, checkpoint + resume, metrics gathered across processes.

Every random choice of optimiser step ``t`` (its cells, its masked PPI pairs, its negatives) is drawn
from a generator seeded with ``(seed, t)``, so training is a function of the step number only: a run
resumed from a checkpoint at step ``t`` continues the very loss curve the uninterrupted run would
have produced. Across ``P`` processes the step's ``P × batch_size`` cells are dealt out round-robin;
the edge masks and negatives are the same on every process (they describe the one shared graph);
DDP averages the gradients.

Run on two CPU processes::

    torchrun --nproc_per_node 2 -m modeling_celltosg.accelerated --dataset runs/demo/dataset --out runs/pre

Checkpoints: ``<out>/checkpoints/step_<t>`` (``Accelerator.save_state``: model, optimiser, RNG states)
plus ``trainer_state.json`` (step, loss curve). The trained model is saved with ``save_pretrained``
in ``<out>/model`` by the main process.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from .graph import TOSGGraph
from .link_prediction import link_metrics
from .modeling_celltosg import CellTOSGForPretraining
from .training import _training_negatives, evaluation_negatives, split_ppi_edges

logger = logging.getLogger(__name__)


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def make_accelerator(mixed_precision: str = "no", gradient_accumulation_steps: int = 1) -> Accelerator:
    """An ``Accelerator`` that also forms a process group on CPU-only machines: Accelerate only sets up
    multi-process CPU training (gloo) when asked with ``cpu=True``, so that is passed when no CUDA
    device is present."""
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=gradient_accumulation_steps,
                       cpu=not torch.cuda.is_available())


def _latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    return found[-1] if found else None


def pretrain_accelerated(
    model: CellTOSGForPretraining,
    expression: Tensor,
    measured_mask: Tensor,
    graph: TOSGGraph,
    out: str | Path,
    *,
    steps: int = 100,
    batch_size: int = 8,
    lr: float = 1e-3,
    mask_ratio: float | None = None,
    held_out_fraction: float = 0.1,
    negatives: str = "mixed",
    gradient_accumulation_steps: int = 1,
    mixed_precision: str = "no",
    checkpoint_every: int = 0,
    resume: bool = True,
    eval_max_cells: int = 64,
    seed: int = 0,
    accelerator: Accelerator | None = None,
) -> dict:
    """Pretrain ``model`` (masked PPI pairs + degree regression) under Accelerate.

    Args:
        model: a [`CellTOSGForPretraining`].
        expression: float32 ``[M, Nt]``; measured_mask: bool ``[M, Nt]`` (same on every process).
        graph: the shared [`TOSGGraph`] with the full PPI (``held_out_fraction`` is removed first).
        out: output folder (checkpoints, ``trainer_state.json``, ``model/``).
        steps: optimiser steps; each takes ``gradient_accumulation_steps`` micro-batches of
            ``batch_size`` cells per process.
        mixed_precision: ``"no"``, ``"bf16"`` (CPU or GPU) or ``"fp16"`` (GPU).
        checkpoint_every: save a checkpoint every this many steps (0 = only at the end).
        resume: continue from the latest checkpoint in ``out`` if there is one.

    Returns:
        dict (identical on every process): ``loss_curve`` (one value per optimiser step, averaged over
        processes and micro-batches), ``resumed_from`` (step or None), ``evaluation`` (held-out pairs
        vs random / degree-matched negatives: AUROC, AP, Hits@50, and ``n_scored`` — pairs scored
        after ``gather_for_metrics``), ``num_processes``, ``seconds_per_step``.
    """
    out = Path(out)
    accelerator = accelerator or make_accelerator(mixed_precision, gradient_accumulation_steps)
    mask_ratio = model.config.mask_ratio if mask_ratio is None else mask_ratio
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}.")
    graph.validate()
    torch.manual_seed(seed)
    train_edges, test_edges = split_ppi_edges(graph.ppi_edge_index.cpu(), held_out_fraction, seed)
    device = accelerator.device
    train_graph = replace(graph, ppi_edge_index=train_edges).to(device)
    all_pairs = graph.ppi_edge_index.cpu()
    protein_range = (graph.num_transcripts, graph.num_nodes)
    num_cells, num_train = expression.size(0), train_edges.size(1)
    num_masked = max(1, int(round(mask_ratio * num_train)))
    rank, world = accelerator.process_index, accelerator.num_processes

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    state = {"step": 0, "loss_curve": []}
    resumed_from = None
    ckpt = _latest_checkpoint(out) if resume else None
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / "trainer_state.json").read_text())
        resumed_from = state["step"]

    def save(step: int) -> None:
        path = out / "checkpoints" / f"step_{step}"
        accelerator.save_state(str(path))
        if accelerator.is_main_process:
            (path / "trainer_state.json").write_text(json.dumps(state))
        accelerator.wait_for_everyone()

    model.train()
    start, done = time.perf_counter(), 0
    for step in range(state["step"], steps):
        gen = _step_generator(seed, step)
        step_loss = 0.0
        for micro in range(gradient_accumulation_steps):
            cells = torch.randperm(num_cells, generator=gen)[: batch_size * world][rank::world]
            perm = torch.randperm(num_train, generator=gen)
            positives, visible = train_edges[:, perm[:num_masked]], train_edges[:, perm[num_masked:]]
            negs = _training_negatives(positives, train_edges, all_pairs, graph.num_nodes, protein_range, negatives,
                                       gen)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = model(expression[cells].to(device), train_graph, positives.to(device), negs.to(device),
                                 measured_mask=measured_mask[cells].to(device),
                                 ppi_edge_index=visible.to(device)).loss
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            step_loss += accelerator.reduce(loss.detach().float(), reduction="mean").item() / gradient_accumulation_steps
        state["loss_curve"].append(step_loss)
        state["step"] = step + 1
        done += 1
        if checkpoint_every and state["step"] % checkpoint_every == 0 and state["step"] < steps:
            save(state["step"])
    seconds_per_step = (time.perf_counter() - start) / max(done, 1)
    save(state["step"])

    # --- held-out evaluation: cells and pairs shared out over processes, metrics on gathered scores
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    gen = _step_generator(seed, -1)
    eval_cells = torch.randperm(num_cells, generator=gen)[:eval_max_cells]
    mine = eval_cells[rank::world]
    with torch.no_grad():
        hidden = unwrapped.celltosg(expression[mine].to(device), train_graph,
                                    measured_mask=measured_mask[mine].to(device)).last_hidden_state
        total = accelerator.reduce(hidden.float().sum(0), reduction="sum")
        count = accelerator.reduce(torch.tensor(float(len(mine)), device=device), reduction="sum")
        embeddings = total / count
        evaluation = {}
        if test_edges.size(1):
            negs = evaluation_negatives(train_edges, test_edges, all_pairs, graph.num_nodes, protein_range, seed)
            for kind, neg in negs.items():
                pairs = torch.cat([test_edges, neg], dim=1)
                truth = torch.cat([torch.ones(test_edges.size(1)), torch.zeros(neg.size(1))])
                # a prepared DataLoader shards the pairs (padding the last batch with repeats);
                # gather_for_metrics drops the repeats, so every pair is scored exactly once
                loader = accelerator.prepare(DataLoader(TensorDataset(torch.arange(pairs.size(1))), batch_size=2048))
                scores, labels = [], []
                for (idx,) in loader:
                    idx = idx.cpu()
                    s = unwrapped.score_edges(embeddings, pairs[:, idx].to(device)).float()
                    s, y = accelerator.gather_for_metrics((s, truth[idx].to(device)))
                    scores.append(s.cpu())
                    labels.append(y.cpu())
                scores, labels = torch.cat(scores).numpy(), torch.cat(labels).numpy()
                evaluation[kind] = link_metrics(scores[labels == 1], scores[labels == 0]) | {"n_scored": int(len(scores))}
    if accelerator.is_main_process:
        unwrapped.save_pretrained(out / "model")
    accelerator.wait_for_everyone()
    return {"loss_curve": state["loss_curve"], "resumed_from": resumed_from, "evaluation": evaluation,
            "num_processes": world, "seconds_per_step": seconds_per_step, "n_test_edges": int(test_edges.size(1))}


def main(argv: list[str] | None = None) -> None:
    """CLI (works under ``torchrun``): pretrain on a dataset folder; the main process writes
    ``<out>/result.json``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-cells", type=int, default=256, help="meta-cells loaded for pretraining")
    p.add_argument("--mask-ratio", type=float, default=0.1)
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--hidden-size", type=int, default=16)
    p.add_argument("--layer-type", default="gat", choices=["gcn", "gat", "transformer"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from dataset_script.loader import expression_tensors, gene_panels, load_cells, load_graph

    from .configuration_celltosg import CellTOSGConfig

    graph, _ = load_graph(args.dataset)
    cells = load_cells(args.dataset)
    rows = np.sort(np.random.default_rng(args.seed).permutation(len(cells))[: args.max_cells])
    x, m = expression_tensors(cells.select(rows), graph.num_transcripts, gene_panels(args.dataset))
    torch.manual_seed(args.seed)
    config = CellTOSGConfig.for_graph(graph, hidden_size=args.hidden_size, layer_type=args.layer_type, num_heads=2,
                                      dropout=0.0)
    accelerator = make_accelerator(args.mixed_precision, args.gradient_accumulation_steps)
    result = pretrain_accelerated(
        CellTOSGForPretraining(config), x, m, graph, args.out, steps=args.steps, batch_size=args.batch_size,
        mask_ratio=args.mask_ratio, gradient_accumulation_steps=args.gradient_accumulation_steps,
        checkpoint_every=args.checkpoint_every, resume=not args.no_resume, seed=args.seed, accelerator=accelerator)
    if accelerator.is_main_process:
        (args.out / "result.json").write_text(json.dumps(result, indent=2))
        from dataset_script.loader import _build_info
        from omnicelltosg.report import write_model_card

        ev = result["evaluation"]
        write_model_card(
            args.out / "model", name="pretrained with Accelerate (PPI edge masking)", config=config,
            dataset=_build_info(args.dataset),
            training_data=f"{len(x):,} meta-cells of {args.dataset}; {args.steps} steps × {args.batch_size} cells × "
                          f"{result['num_processes']} process(es), mask ratio {args.mask_ratio}, "
                          f"mixed precision {args.mixed_precision}",
            metrics={f"held-out PPI {m} ({kind.replace('_', '-')} negatives)": ev[kind][m]
                     for kind in ev for m in ("auroc", "ap", "hits@50")})
    # every process saves its parameters: DDP must keep the replicas identical (checked by the tests)
    params = torch.cat([q.detach().flatten().double() for q in accelerator._models[0].parameters()])
    torch.save(params, args.out / f"params_rank{accelerator.process_index}.pt")


if __name__ == "__main__":
    main()
