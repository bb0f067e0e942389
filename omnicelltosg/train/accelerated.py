"""Masked-edge pretraining with 🤗 Accelerate: one or many processes (``torchrun``/``accelerate launch``),
mixed precision, gradient accumulation, checkpoint + resume, metrics gathered across processes.

Every random choice of optimiser step ``t`` (its cells, its masked PPI pairs, its negatives) is drawn
from a generator seeded with ``(seed, t)``, so training is a function of the step number only: a run
resumed from a checkpoint at step ``t`` continues the very loss curve the uninterrupted run would
have produced. Across ``P`` processes the step's ``P × batch_size`` cells are dealt out round-robin;
the edge masks and negatives are the same on every process (they describe the one shared graph);
DDP averages the gradients. The split, the masks and the negatives are those of the single-process
loop (:class:`~omnicelltosg.train.pretraining.MaskedEdgeTask`).

Run on two CPU processes (``omnicelltosg pretrain`` takes the same flags)::

    torchrun --nproc_per_node 2 -m omnicelltosg.train.accelerated --dataset runs/demo/dataset --out runs/pre

Checkpoints: ``<out>/checkpoints/step_<t>`` (``Accelerator.save_state``: model, optimiser, RNG states)
plus ``trainer_state.json`` (step, loss curve). The trained model is saved with ``save_pretrained``
in ``<out>/model`` by the main process.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from dataset_script.files import atomic_write_text
from modeling_celltosg.configuration_celltosg import LAYER_TYPES, CellTOSGConfig
from modeling_celltosg.modeling_celltosg import CellTOSGForPreTraining
from modeling_celltosg.tosg_graph import TOSGGraph
from omnicelltosg.evaluation.link_prediction import evaluation_negatives, link_metrics
from omnicelltosg.train.arguments import (
    PretrainingArguments,
    add_arguments,
    from_namespace,
)
from omnicelltosg.train.pretraining import (
    MaskedEdgeTask,
    check_expression,
    check_objective,
)

logger = logging.getLogger(__name__)

#: Held-out pairs scored per batch of the sharded evaluation.
EVALUATION_BATCH_PAIRS = 2048


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def make_accelerator(mixed_precision: str = PretrainingArguments.mixed_precision,
                     gradient_accumulation_steps: int = PretrainingArguments.gradient_accumulation_steps) -> Accelerator:
    """An ``Accelerator`` that also forms a process group on CPU-only machines: Accelerate only sets up
    multi-process CPU training (gloo) when asked with ``cpu=True``, so that is passed when no CUDA
    device is present."""
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=gradient_accumulation_steps,
                       cpu=not torch.cuda.is_available())


def _latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    return found[-1] if found else None


def _restore(accelerator: Accelerator, out: Path, resume: bool) -> tuple[dict, int | None]:
    """The trainer state (``step``, ``loss_curve``) and the step resumed from: the latest checkpoint's
    (model, optimiser and RNG states loaded into the prepared objects) when ``resume``, else a fresh start."""
    checkpoint = _latest_checkpoint(out) if resume else None
    if checkpoint is None:
        return {"step": 0, "loss_curve": []}, None
    accelerator.load_state(str(checkpoint))
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return state, state["step"]


def _save_checkpoint(accelerator: Accelerator, out: Path, state: dict) -> None:
    path = out / "checkpoints" / f"step_{state['step']}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        atomic_write_text(path / "trainer_state.json", json.dumps(state))
    accelerator.wait_for_everyone()


def _train_step(accelerator, model, optimizer, task: MaskedEdgeTask, expression, measured_mask, args, step) -> float:
    """One optimiser step of ``args.gradient_accumulation_steps`` micro-batches; the loss averaged over
    processes and micro-batches."""
    generator = _step_generator(args.seed, step)
    loss_sum = 0.0
    for _ in range(args.gradient_accumulation_steps):
        batch = task.draw_batch(expression.size(0), args.batch_size, generator, accelerator.process_index,
                                accelerator.num_processes)
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss = task.forward(model, batch, expression, measured_mask, accelerator.device).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        loss_sum += accelerator.reduce(loss.detach().float(), reduction="mean").item()
    return loss_sum / args.gradient_accumulation_steps


@torch.no_grad()
def _mean_node_embeddings(accelerator, model, task: MaskedEdgeTask, expression, measured_mask, args) -> Tensor:
    """Node embeddings ``[N, d]`` averaged over ``args.eval_max_cells`` cells, shared out over processes."""
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    cells = torch.randperm(expression.size(0), generator=_step_generator(args.seed, -1))[: args.eval_max_cells]
    mine = cells[rank::world]
    hidden = model.celltosg(expression[mine].to(device), task.train_graph,
                            measured_mask=measured_mask[mine].to(device)).last_hidden_state
    total = accelerator.reduce(hidden.float().sum(0), reduction="sum")
    return total / accelerator.reduce(torch.tensor(float(len(mine)), device=device), reduction="sum")


@torch.no_grad()
def _held_out_evaluation(accelerator, model, task: MaskedEdgeTask, embeddings: Tensor, seed: int) -> dict:
    """AUROC / AP / Hits@50 of the held-out pairs against the evaluation negatives of ``seed``, plus
    ``n_scored``: the pairs are sharded by a prepared ``DataLoader`` (which pads the last batch with
    repeats) and ``gather_for_metrics`` drops the repeats, so every pair is scored exactly once."""
    if task.test_edges.size(1) == 0:
        return {}
    evaluation = {}
    negatives = evaluation_negatives(task.train_edges, task.test_edges, task.all_pairs, task.num_nodes,
                                     task.protein_range, seed)
    for kind, neg in negatives.items():
        pairs = torch.cat([task.test_edges, neg], dim=1)
        truth = torch.cat([torch.ones(task.test_edges.size(1)), torch.zeros(neg.size(1))])
        loader = accelerator.prepare(DataLoader(TensorDataset(torch.arange(pairs.size(1))),
                                                batch_size=EVALUATION_BATCH_PAIRS))
        scores, labels = [], []
        for (idx,) in loader:
            idx = idx.cpu()
            s = model.score_edges(embeddings, pairs[:, idx].to(accelerator.device)).float()
            s, y = accelerator.gather_for_metrics((s, truth[idx].to(accelerator.device)))
            scores.append(s.cpu())
            labels.append(y.cpu())
        scores, labels = torch.cat(scores).numpy(), torch.cat(labels).numpy()
        evaluation[kind] = link_metrics(scores[labels == 1], scores[labels == 0]) | {"n_scored": int(len(scores))}
    return evaluation


@torch.no_grad()
def replica_max_difference(accelerator: Accelerator, model: torch.nn.Module) -> float:
    """Largest difference across processes of any parameter tensor's float64 sum: 0 when DDP kept the
    replicas identical (the same on every process; 0 for one process)."""
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()]).to(accelerator.device)
    gathered = accelerator.gather(sums.unsqueeze(0))  # [processes, tensors]
    return float((gathered - gathered[0]).abs().max())


def pretrain_accelerated(
    model: CellTOSGForPreTraining,
    expression: Tensor,
    measured_mask: Tensor,
    graph: TOSGGraph,
    out: str | Path,
    args: PretrainingArguments | None = None,
    *,
    resume: bool = True,
    accelerator: Accelerator | None = None,
    **overrides,
) -> dict:
    """Pretrain ``model`` (masked PPI pairs + degree regression) under Accelerate.

    Args:
        model: a [`CellTOSGForPreTraining`].
        expression: float32 ``[M, Nt]``; measured_mask: bool ``[M, Nt]`` (same on every process).
        graph: the shared [`TOSGGraph`] with the full PPI (``held_out_fraction`` is removed first).
        out: output folder (checkpoints, ``trainer_state.json``, ``model/``).
        args: the training settings (default ``PretrainingArguments()``): each of the ``steps`` takes
            ``gradient_accumulation_steps`` micro-batches of ``batch_size`` cells per process;
            ``mixed_precision`` ``"bf16"`` (CPU or GPU) or ``"fp16"`` (GPU); ``checkpoint_every`` steps
            (0 = only at the end). Mixed precision and accumulation are read when no ``accelerator``
            is given.
        resume: continue from the latest checkpoint in ``out`` if there is one.
        accelerator: an existing ``Accelerator`` (default: :func:`make_accelerator` of ``args``).
        **overrides: ``PretrainingArguments`` fields replacing those of ``args``.

    Returns:
        dict (identical on every process): ``loss_curve`` (one value per optimiser step, averaged over
        processes and micro-batches), ``resumed_from`` (step or None), ``evaluation`` (held-out pairs
        vs random / degree-matched negatives: AUROC, AP, Hits@50, and ``n_scored`` — pairs scored
        after ``gather_for_metrics``), ``num_processes``, ``seconds_per_step``, ``n_test_edges`` and
        ``replica_max_difference`` (:func:`replica_max_difference` after training).
    """
    args = (args or PretrainingArguments()).with_overrides(**overrides)
    out = Path(out)
    accelerator = accelerator or make_accelerator(args.mixed_precision, args.gradient_accumulation_steps)
    check_expression(expression, measured_mask)
    check_objective(model.config.expression_loss_weight, args)
    task = MaskedEdgeTask.build(graph, args, accelerator.device)
    torch.manual_seed(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    model, optimizer = accelerator.prepare(model, optimizer)
    state, resumed_from = _restore(accelerator, out, resume)
    model.train()
    start, done = time.perf_counter(), 0
    for step in range(state["step"], args.steps):
        state["loss_curve"].append(_train_step(accelerator, model, optimizer, task, expression, measured_mask, args,
                                               step))
        state["step"], done = step + 1, done + 1
        if args.checkpoint_every and state["step"] % args.checkpoint_every == 0 and state["step"] < args.steps:
            _save_checkpoint(accelerator, out, state)
    seconds_per_step = (time.perf_counter() - start) / max(done, 1)
    _save_checkpoint(accelerator, out, state)
    replica_difference = replica_max_difference(accelerator, model)

    unwrapped = accelerator.unwrap_model(model).eval()
    embeddings = _mean_node_embeddings(accelerator, unwrapped, task, expression, measured_mask, args)
    evaluation = _held_out_evaluation(accelerator, unwrapped, task, embeddings, args.seed)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(out / "model")
    accelerator.wait_for_everyone()
    return {"loss_curve": state["loss_curve"], "resumed_from": resumed_from, "evaluation": evaluation,
            "num_processes": accelerator.num_processes, "seconds_per_step": seconds_per_step,
            "n_test_edges": int(task.test_edges.size(1)), "replica_max_difference": replica_difference}


def add_command_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of the pretraining command (``omnicelltosg pretrain`` and ``python -m
    omnicelltosg.train.accelerated``): data and output, one flag per ``PretrainingArguments`` field, and
    the model's width and layer type (defaults: ``CellTOSGConfig``)."""
    parser.add_argument("--dataset", type=Path, required=True, help="dataset folder (omnicelltosg build output)")
    parser.add_argument("--out", type=Path, required=True, help="output folder: checkpoints, model/, result.json")
    parser.add_argument("--max-cells", type=int, default=256, help="meta-cells loaded for pretraining, sampled "
                                                                   "with --seed (default: %(default)s)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    add_arguments(parser, PretrainingArguments)
    model = parser.add_argument_group("model (defaults: CellTOSGConfig)")
    model.add_argument("--hidden-size", type=int, default=CellTOSGConfig.hidden_size,
                       help="node embedding width (default: %(default)s)")
    model.add_argument("--layer-type", choices=LAYER_TYPES, default=CellTOSGConfig.layer_type,
                       help="message-passing layer (default: %(default)s)")
    return parser


def run_command(namespace: argparse.Namespace) -> dict:
    """Run the pretraining command parsed by :func:`add_command_arguments` (in every process under
    ``torchrun``); the main process writes ``<out>/result.json`` and the model card. Returns the result."""
    from dataset_script.cohorts.loader import (
        _build_info,
        expression_tensors,
        gene_panels,
        load_cells,
        load_graph,
    )
    from omnicelltosg.workflows.report import write_model_card

    args = from_namespace(PretrainingArguments, namespace)
    graph, _ = load_graph(namespace.dataset)
    cells = load_cells(namespace.dataset)
    rows = np.sort(np.random.default_rng(args.seed).permutation(len(cells))[: namespace.max_cells])
    x, m = expression_tensors(cells.select(rows), graph.num_transcripts, gene_panels(namespace.dataset))
    torch.manual_seed(args.seed)
    config = CellTOSGConfig.for_graph(graph, hidden_size=namespace.hidden_size, layer_type=namespace.layer_type)
    accelerator = make_accelerator(args.mixed_precision, args.gradient_accumulation_steps)
    result = pretrain_accelerated(CellTOSGForPreTraining(config), x, m, graph, namespace.out, args,
                                  resume=not namespace.no_resume, accelerator=accelerator)
    if accelerator.is_main_process:
        atomic_write_text(namespace.out / "result.json", json.dumps(result, indent=2))
        ev = result["evaluation"]
        write_model_card(
            namespace.out / "model", name="pretrained with Accelerate (PPI edge masking)", config=config,
            pretraining=args, dataset=_build_info(namespace.dataset),
            training_data=f"{len(x):,} meta-cells of {namespace.dataset}; {args.steps} steps × {args.batch_size} "
                          f"cells × {result['num_processes']} process(es), mask ratio {args.mask_ratio}, "
                          f"mixed precision {args.mixed_precision}",
            metrics={f"held-out PPI {m} ({kind.replace('_', '-')} negatives)": ev[kind][m]
                     for kind in ev for m in ("auroc", "ap", "hits@50")})
    return result


def main(argv: list[str] | None = None) -> None:
    """CLI (works under ``torchrun`` and ``accelerate launch``): the flags of :func:`add_command_arguments`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    run_command(add_command_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    main()
