"""Cell-classification fine-tuning of CellTOSG-FM and prediction.

A plain PyTorch loop on one device (CPU by default), fixed seeds, tqdm progress. Model selection uses the
validation split only; the test split is scored once, with the best-on-validation weights.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import Tensor
from tqdm.auto import tqdm

from modeling_celltosg.modeling_celltosg import CellTOSGForCellClassification
from modeling_celltosg.tosg_graph import TOSGGraph
from omnicelltosg.train.arguments import FinetuningArguments


@torch.no_grad()
def predict(
    model: CellTOSGForCellClassification,
    expression: Tensor,
    measured_mask: Tensor,
    graph: TOSGGraph,
    batch_size: int = FinetuningArguments.batch_size,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Logits `[M, num_labels]` (CPU float) for `expression` `[M, Nt]` / `measured_mask` `[M, Nt]`, in eval mode,
    encoded in chunks of `batch_size` cells."""
    model.to(device).eval()
    graph = graph.to(device)
    chunks = []
    for i in range(0, expression.size(0), batch_size):
        rows = slice(i, i + batch_size)
        chunks.append(model(expression[rows].to(device), graph, measured_mask=measured_mask[rows].to(device)).logits.cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, model.config.num_labels)


@torch.no_grad()
def recalibrate_batchnorm(model, expression: Tensor, measured_mask: Tensor, graph: TOSGGraph, *,
                          batch_size: int = FinetuningArguments.batch_size, max_cells: int = 512,
                          device: str | torch.device = "cpu") -> None:
    """Recompute BatchNorm running statistics with the current weights over (up to ``max_cells``)
    training cells — as ``torch.optim.swa_utils.update_bn`` does, with our model's inputs.

    Running averages collected while the encoder was still changing describe an older model; at
    evaluation they shift the standardised pooled features and predictions collapse to one class.
    Modules use ``momentum=None`` so the statistics are exact averages over the pass.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    n = min(len(expression), max_cells)
    for i in range(0, n, batch_size):
        if n - i < 2:  # BatchNorm needs at least two cells
            break
        model(expression[i : i + batch_size].to(device), graph, measured_mask=measured_mask[i : i + batch_size].to(device))
    model.train(was_training)


def _split_indices(train_idx, val_idx, test_idx) -> tuple[Tensor, Tensor, Tensor]:
    """The three index sets as LongTensors; `ValueError` if train or validation is empty or they overlap."""
    train_idx, val_idx, test_idx = (
        torch.as_tensor(np.asarray(i), dtype=torch.long) for i in (train_idx, val_idx, test_idx)
    )
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ValueError("finetune needs non-empty train_idx and val_idx (model selection uses validation only).")
    train_set, val_set, test_set = (set(i.tolist()) for i in (train_idx, val_idx, test_idx))
    overlap = (train_set & (val_set | test_set)) | (val_set & test_set)
    if overlap:
        raise ValueError(f"train/val/test indices overlap on {len(overlap)} cells, e.g. {sorted(overlap)[:5]}.")
    return train_idx, val_idx, test_idx


def _batches(order: Tensor, batch_size: int) -> list[Tensor]:
    """`order` cut into batches of `batch_size`; a lone last cell joins the previous batch (BatchNorm needs
    >= 2 cells)."""
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] == 1:
        starts.pop()
    return [order[start : starts[i + 1] if i + 1 < len(starts) else len(order)] for i, start in enumerate(starts)]


def _train_epoch(model, optimizer, expression, measured_mask, labels, graph, order, batch_size, device) -> float:
    """One pass over the cells `order` (LongTensor); the mean training loss."""
    model.train()
    losses = []
    for rows in _batches(order, batch_size):
        out = model(expression[rows].to(device), graph, measured_mask=measured_mask[rows].to(device),
                    labels=labels[rows].to(device))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    return float(np.mean(losses))


def finetune(
    model: CellTOSGForCellClassification,
    expression: Tensor,
    measured_mask: Tensor,
    labels: Tensor,
    graph: TOSGGraph,
    args: FinetuningArguments | None = None,
    *,
    train_idx,
    val_idx,
    test_idx,
    device: str | torch.device = "cpu",
    **overrides,
) -> dict:
    """Fine-tune a cell classifier; select the epoch on validation macro-F1, then score test once.

    Args:
        model: a [`CellTOSGForCellClassification`] (e.g. from a pretraining checkpoint).
        expression: float32 `[M, Nt]`; measured_mask: bool `[M, Nt]`; labels: LongTensor `[M]`.
        graph: the shared [`TOSGGraph`].
        args: epochs, batch size, learning rate and seed (default `FinetuningArguments()`).
        train_idx, val_idx, test_idx: disjoint row indices (array-like of int) into the `M` cells.
        device: where to train.
        **overrides: `FinetuningArguments` fields replacing those of `args` (`TypeError` on unknown names).

    Returns:
        dict with `train_loss_curve` (mean loss per epoch), `val_macro_f1_curve`, `best_epoch` (0-based,
        argmax of validation macro-F1) and its `val_macro_f1`, test `accuracy`, `macro_f1`,
        `test_predictions` (numpy int `[len(test_idx)]`) and `test_probabilities` (numpy float
        `[len(test_idx), num_labels]`, softmax) from the best-on-validation weights, which are left
        loaded in `model`.

    Raises:
        ValueError: empty training or validation indices, overlapping splits, an inconsistent graph.
    """
    args = (args or FinetuningArguments()).with_overrides(**overrides)
    train_idx, val_idx, test_idx = _split_indices(train_idx, val_idx, test_idx)
    graph.validate()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    graph = graph.to(device)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    train_losses, val_f1s, best_f1, best_state, best_epoch = [], [], -1.0, None, -1
    for epoch in tqdm(range(args.epochs), desc="finetune", leave=False):
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        train_losses.append(_train_epoch(model, optimizer, expression, measured_mask, labels, graph, order,
                                         args.batch_size, device))
        recalib = train_idx[torch.randperm(len(train_idx), generator=generator)]
        recalibrate_batchnorm(model, expression[recalib], measured_mask[recalib], graph, batch_size=args.batch_size,
                              device=device)
        val_pred = predict(model, expression[val_idx], measured_mask[val_idx], graph, args.batch_size, device).argmax(-1)
        val_f1s.append(float(f1_score(labels[val_idx].cpu().numpy(), val_pred.numpy(), average="macro")))
        if val_f1s[-1] > best_f1:
            best_f1, best_epoch, best_state = val_f1s[-1], epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    test_logits = predict(model, expression[test_idx], measured_mask[test_idx], graph, args.batch_size, device)
    test_pred, truth = test_logits.argmax(-1).numpy(), labels[test_idx].cpu().numpy()
    return {
        "train_loss_curve": train_losses,
        "val_macro_f1_curve": val_f1s,
        "best_epoch": best_epoch,
        "accuracy": float(accuracy_score(truth, test_pred)) if len(truth) else float("nan"),
        "macro_f1": float(f1_score(truth, test_pred, average="macro")) if len(truth) else float("nan"),
        "val_macro_f1": best_f1,
        "test_predictions": test_pred,
        "test_probabilities": torch.softmax(test_logits, dim=-1).numpy(),
    }


__all__ = ["finetune", "predict", "recalibrate_batchnorm"]
