"""Masked-edge pretraining of CellTOSG-FM on one device (CPU by default), fixed seeds, tqdm progress.

Pretraining follows OmniCellTOSG (arXiv 2504.02148, §4.4): a held-out fraction of PPI pairs is removed
from the graph for good (never used for message passing nor as training positives); each step masks
`mask_ratio` of the remaining training pairs, encodes a mini-batch of cells on the visible graph and
scores the masked pairs against sampled non-interacting protein pairs (see
:class:`~omnicelltosg.train.arguments.PretrainingArguments`).

:class:`MaskedEdgeTask` (the split, the training graph, the number of masked pairs) and its
:meth:`~MaskedEdgeTask.draw_batch` (one step's cells, masked pairs and negatives) are shared with the
Accelerate loop (:mod:`omnicelltosg.train.accelerated`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from modeling_celltosg.modeling_celltosg import (
    CellTOSGForPreTraining,
    CellTOSGForPreTrainingOutput,
)
from modeling_celltosg.tosg_graph import TOSGGraph
from omnicelltosg.evaluation.link_prediction import (
    evaluate_link_prediction,
    sample_training_negatives,
    split_ppi_edges,
)
from omnicelltosg.train.arguments import PretrainingArguments

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainingBatch:
    """One step's draw: `cells` LongTensor `[B]` (rows of the expression matrix), `positives` `[2, M]`
    (masked training pairs), `visible` `[2, E_train - M]` (the pairs messages pass over), `negatives`
    `[2, M']` (sampled non-interacting pairs), all on CPU, global node indices; and `gene_noise` float
    `[B, Nt]` uniform draws (a measured gene is masked where its draw is below `gene_mask_ratio`) or None."""

    cells: Tensor
    positives: Tensor
    visible: Tensor
    negatives: Tensor
    gene_noise: Tensor | None = None


@dataclass(frozen=True)
class MaskedEdgeTask:
    """The fixed part of masked-edge pretraining, built once per run by :meth:`build`.

    Attributes:
        train_edges: LongTensor `[2, E_train]` (CPU), the PPI pairs training may see.
        test_edges: LongTensor `[2, E_test]` (CPU), held out of the graph for good.
        train_graph: the graph with `ppi_edge_index = train_edges`, on the training device.
        all_pairs: LongTensor `[2, E]` (CPU), the full PPI: never drawn as a negative.
        protein_range: `(Nt, Nt + Np)`, the global index range of protein nodes.
        num_masked: training pairs masked per step, `max(1, round(mask_ratio · E_train))`.
        negatives: the kind of training negatives (`PretrainingArguments.negatives`).
        gene_mask_ratio: fraction of measured genes masked per cell and step (0 = no masked-expression loss).
    """

    train_edges: Tensor
    test_edges: Tensor
    train_graph: TOSGGraph
    all_pairs: Tensor
    protein_range: tuple[int, int]
    num_masked: int
    negatives: str
    gene_mask_ratio: float = 0.0

    @classmethod
    def build(cls, graph: TOSGGraph, args: PretrainingArguments, device: str | torch.device) -> MaskedEdgeTask:
        """Validate `graph`, hold out `args.held_out_fraction` of its PPI pairs (seeded by `args.seed`) and
        move the training graph to `device`."""
        graph.validate()
        train_edges, test_edges = split_ppi_edges(graph.ppi_edge_index.cpu(), args.held_out_fraction, args.seed)
        return cls(train_edges=train_edges, test_edges=test_edges,
                   train_graph=replace(graph, ppi_edge_index=train_edges).to(device),
                   all_pairs=graph.ppi_edge_index.cpu(), protein_range=(graph.num_transcripts, graph.num_nodes),
                   num_masked=max(1, int(round(args.mask_ratio * train_edges.size(1)))), negatives=args.negatives,
                   gene_mask_ratio=args.gene_mask_ratio)

    @property
    def num_nodes(self) -> int:
        return self.protein_range[1]

    def draw_batch(self, num_cells: int, batch_size: int, generator: torch.Generator, rank: int = 0,
                   world: int = 1) -> PretrainingBatch:
        """Draw one step from `generator`: `batch_size · world` of the `num_cells` cells dealt out
        round-robin (this process, `rank` of `world`, gets every `world`-th), one edge mask and its
        negatives (the same on every process). With `world = 1` the first `batch_size` cells of a
        permutation."""
        cells = torch.randperm(num_cells, generator=generator)[: batch_size * world][rank::world]
        perm = torch.randperm(self.train_edges.size(1), generator=generator)
        positives = self.train_edges[:, perm[: self.num_masked]]
        negatives = sample_training_negatives(positives, self.train_edges, self.all_pairs, self.num_nodes,
                                              self.protein_range, self.negatives, generator)
        noise = (torch.rand(len(cells), self.protein_range[0], generator=generator) if self.gene_mask_ratio > 0
                 else None)
        return PretrainingBatch(cells, positives, self.train_edges[:, perm[self.num_masked :]], negatives, noise)

    def forward(self, model: CellTOSGForPreTraining, batch: PretrainingBatch, expression: Tensor,
                measured_mask: Tensor, device: str | torch.device) -> CellTOSGForPreTrainingOutput:
        """The model's losses on `batch`: its cells encoded on the visible pairs, its positives scored
        against its negatives; degree targets come from the visible pairs (held-out pairs excluded); with
        `gene_noise`, the measured genes drawn below `gene_mask_ratio` are hidden and predicted."""
        measured = measured_mask[batch.cells]
        masked = None if batch.gene_noise is None else (measured & (batch.gene_noise < self.gene_mask_ratio)).to(device)
        return model(expression[batch.cells].to(device), self.train_graph, batch.positives.to(device),
                     batch.negatives.to(device), measured_mask=measured.to(device),
                     ppi_edge_index=batch.visible.to(device), masked_genes=masked)


def check_objective(expression_loss_weight: float, args: PretrainingArguments) -> None:
    """`ValueError` unless gene masking (`args.gene_mask_ratio > 0`) and the model's masked-expression head
    (`CellTOSGConfig.expression_loss_weight > 0`, passed as `expression_loss_weight`) come together: a head
    without masking would train nothing (and DistributedDataParallel refuses parameters without a
    gradient), masking without a head has no loss."""
    if (expression_loss_weight > 0) != (args.gene_mask_ratio > 0):
        raise ValueError(f"gene_mask_ratio={args.gene_mask_ratio} with expression_loss_weight="
                         f"{expression_loss_weight}: masked-expression modelling needs both > 0 "
                         f"(or both 0 for edge masking alone).")


def check_expression(expression: Tensor, measured_mask: Tensor) -> None:
    """`ValueError` unless `expression` and `measured_mask` are both `[M, Nt]`."""
    if expression.shape != measured_mask.shape:
        raise ValueError(f"expression {tuple(expression.shape)} and measured_mask {tuple(measured_mask.shape)} differ; "
                         "both must be [cells, transcripts].")


@torch.no_grad()
def _mean_node_embeddings(model, expression, measured_mask, graph, batch_size, device) -> Tensor:
    """Node embeddings `[N, d]` averaged over all given cells, encoded in chunks of `batch_size`."""
    total, count = None, 0
    for i in range(0, expression.size(0), batch_size):
        rows = slice(i, i + batch_size)
        out = model.celltosg(expression[rows].to(device), graph, measured_mask=measured_mask[rows].to(device))
        part = out.last_hidden_state.sum(dim=0)
        total = part if total is None else total + part
        count += out.last_hidden_state.size(0)
    return total / count


def _held_out_evaluation(model, task: MaskedEdgeTask, expression, measured_mask, cells, args, device) -> dict:
    """:func:`evaluate_link_prediction` of the model's edge scores on the embeddings averaged over `cells`."""
    model.eval()
    embeddings = _mean_node_embeddings(model, expression[cells], measured_mask[cells], task.train_graph,
                                       args.batch_size, device)
    return evaluate_link_prediction(lambda pairs: model.score_edges(embeddings, pairs.to(device)).cpu().numpy(),
                                    task.train_edges, task.test_edges, task.all_pairs, task.num_nodes,
                                    task.protein_range, args.seed)


def pretrain(
    model: CellTOSGForPreTraining,
    expression: Tensor,
    measured_mask: Tensor,
    graph: TOSGGraph,
    args: PretrainingArguments | None = None,
    *,
    device: str | torch.device = "cpu",
    log_every: int = 10,
    **overrides,
) -> dict:
    """Self-supervised pretraining by masked PPI edge reconstruction + degree regression (+ masked-expression
    modelling when `args.gene_mask_ratio > 0`).

    Args:
        model: a [`CellTOSGForPreTraining`].
        expression: float32 `[M, Nt]` log-normalised expression of `M` cells (rows are cells).
        measured_mask: bool `[M, Nt]`, False where the dataset did not measure the gene.
        graph: the shared [`TOSGGraph`] with the FULL PPI; `args.held_out_fraction` of it is removed first.
        args: steps, batch size, learning rate, mask ratio, held-out fraction, negatives, evaluation cells
            and seed (default `PretrainingArguments()`); the Accelerate-only fields are ignored.
        device: where to train.
        log_every: log the mean loss every this many steps (0 = never).
        **overrides: `PretrainingArguments` fields replacing those of `args` (`TypeError` on unknown names).

    Returns:
        dict with `loss_curve` (per-step loss), `edge_loss_curve`, `degree_loss_curve`,
        `expression_loss_curve` (empty without gene masking); `evaluation`:
        held-out pairs (absent from the graph throughout) against as many random and as many
        degree-matched negatives, each with AUROC / AP / Hits@50 (:func:`evaluate_link_prediction`);
        `auroc`, `ap` (random negatives); `train_edges`, `test_edges` (for baselines on the same pairs);
        `n_train_edges`, `n_test_edges`, `n_cells`, `seconds_per_step`.

    Raises:
        ValueError: `expression` and `measured_mask` differ in shape, the graph is inconsistent, or gene
            masking and the model's expression head do not come together (:func:`check_objective`).
    """
    args = (args or PretrainingArguments()).with_overrides(**overrides)
    check_expression(expression, measured_mask)
    check_objective(model.config.expression_loss_weight, args)
    task = MaskedEdgeTask.build(graph, args, device)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    num_cells = expression.size(0)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    curves = {"loss_curve": [], "edge_loss_curve": [], "degree_loss_curve": [], "expression_loss_curve": []}
    start = time.perf_counter()
    for step in tqdm(range(args.steps), desc="pretrain", leave=False):
        out = task.forward(model, task.draw_batch(num_cells, args.batch_size, generator), expression, measured_mask,
                           device)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        curves["loss_curve"].append(out.loss.item())
        curves["edge_loss_curve"].append(out.edge_loss.item())
        curves["degree_loss_curve"].append(out.degree_loss.item())
        if out.expression_loss is not None:
            curves["expression_loss_curve"].append(out.expression_loss.item())
        if log_every and (step + 1) % log_every == 0:
            logger.info("pretrain step %d/%d loss %.4f", step + 1, args.steps,
                        np.mean(curves["loss_curve"][-log_every:]))
    seconds_per_step = (time.perf_counter() - start) / max(args.steps, 1)
    eval_cells = torch.randperm(num_cells, generator=generator)[: args.eval_max_cells]
    evaluation = _held_out_evaluation(model, task, expression, measured_mask, eval_cells, args, device)
    return {
        **curves,
        "evaluation": evaluation,
        "auroc": evaluation["random"]["auroc"] if evaluation else float("nan"),
        "ap": evaluation["random"]["ap"] if evaluation else float("nan"),
        "train_edges": task.train_edges,
        "test_edges": task.test_edges,
        "n_train_edges": int(task.train_edges.size(1)),
        "n_test_edges": int(task.test_edges.size(1)),
        "n_cells": int(num_cells),
        "seconds_per_step": seconds_per_step,
    }


__all__ = ["pretrain", "MaskedEdgeTask", "PretrainingBatch", "check_expression", "check_objective"]
