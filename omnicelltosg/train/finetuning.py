"""Cell-classification fine-tuning of CellTOSG-FM and prediction.

One plain PyTorch loop (:func:`train_classifier`) on one device (CPU by default), fixed seeds, tqdm
progress, shared by every trainable classifier of the project so that budgets are equal. Model selection
uses the validation split only; the test split is scored once, with the best-on-validation weights.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from modeling_celltosg.modeling_celltosg import CellTOSGForCellClassification
from modeling_celltosg.tosg_graph import TOSGGraph
from omnicelltosg.evaluation.metrics import bootstrap_difference
from omnicelltosg.train.arguments import FinetuningArguments
from omnicelltosg.train.wide import WIDE_WEIGHTS, balanced_class_weights, fit_wide_path


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
    return _predict_outputs(model, expression, measured_mask, graph, batch_size, device, ("logits",))[0]


@torch.no_grad()
def _predict_outputs(model, expression: Tensor, measured_mask: Tensor, graph: TOSGGraph, batch_size: int, device,
                     names: tuple[str, ...]) -> list[Tensor]:
    """The classifier outputs `names` (fields of its output, each `[M, num_labels]`, CPU float) in eval mode,
    encoded in chunks of `batch_size` cells."""
    model.to(device).eval()
    graph = graph.to(device)
    chunks = {name: [] for name in names}
    for i in range(0, expression.size(0), batch_size):
        rows = slice(i, i + batch_size)
        out = model(expression[rows].to(device), graph, measured_mask=measured_mask[rows].to(device))
        for name in names:
            chunks[name].append(getattr(out, name).cpu())
    return [torch.cat(c) if c else torch.empty(0, model.config.num_labels) for c in chunks.values()]


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


def _val_macro_f1(logits: Tensor, labels: Tensor) -> float:
    return float(f1_score(labels.cpu().numpy(), logits.argmax(-1).numpy(), average="macro", zero_division=0))


def _best_output(outputs, labels: Tensor) -> tuple[float, object]:
    """(macro-F1, key) of the best of several validation outputs (`{key: logits}`), or (F1, None) for one tensor."""
    if isinstance(outputs, Tensor):
        return _val_macro_f1(outputs, labels), None
    scored = [(_val_macro_f1(logits, labels), key) for key, logits in outputs.items()]
    return max(scored, key=lambda fk: fk[0])  # ties: the first key


def one_standard_error_rule(labels, linear_pred, selected_pred, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The one-standard-error rule between a wide & deep model's fitted linear path and the model selected
    by validation maximum: keep the graph part only when it beats the linear model on validation macro-F1 by
    more than one bootstrap standard error of that difference, else prefer the simpler model (Breiman et
    al. 1984, *Classification and Regression Trees* §3.4.3; Hastie, Tibshirani & Friedman, *The Elements of
    Statistical Learning*, 2nd ed., §7.10).

    Args:
        labels, linear_pred, selected_pred: int class indices `[V]` of the validation cells: the truth, the
            linear path's predictions, the selected model's predictions.
        n_boot, seed: bootstrap replicates over validation cells and their numpy seed
            (:func:`omnicelltosg.evaluation.metrics.bootstrap_difference`).

    Returns:
        `difference` (selected − linear validation macro-F1), `standard_error` (of that difference) and
        `keeps_linear` (True when `difference <= standard_error`: the graph part is dropped).
    """
    labels, linear_pred, selected_pred = (np.asarray(a) for a in (labels, linear_pred, selected_pred))
    b = bootstrap_difference([(labels, selected_pred, linear_pred)], n_boot=n_boot, seed=seed)
    return {"difference": b["mean_difference"], "standard_error": b["standard_error"],
            "keeps_linear": bool(b["mean_difference"] <= b["standard_error"])}


def _predict_paths(model, expression: Tensor, measured_mask: Tensor, graph: TOSGGraph, batch_size: int,
                   device) -> tuple[Tensor, Tensor]:
    """`(wide_logits, deep_logits)`, each `[M, num_labels]` (CPU float), of a wide & deep model in eval mode:
    one graph pass, from which every readout `wide_weight · wide + deep` follows (the model's own formula)."""
    wide, deep = _predict_outputs(model, expression, measured_mask, graph, batch_size, device,
                                  ("wide_logits", "deep_logits"))
    return wide, deep


def train_classifier(
    parameters,
    forward,
    labels: Tensor,
    args: FinetuningArguments,
    *,
    train_idx: Tensor,
    val_idx: Tensor,
    state,
    num_classes: int,
    after_epoch=None,
    select_initial: bool = False,
) -> dict:
    """The supervised loop every trainable model of the project shares (graph models and the MLP baseline):
    AdamW (`args.learning_rate`, `args.weight_decay`) with linear warm-up and cosine decay
    (`transformers.get_cosine_schedule_with_warmup`, over the capped steps), (class-weighted) cross-entropy,
    early stopping on validation macro-F1, and the validation-best weights restored at the end.

    Args:
        parameters: the parameters to train (those with `requires_grad`).
        forward: `forward(rows: LongTensor, train: bool) -> logits [len(rows), K]` — in training mode when
            `train`, in eval mode without gradients otherwise (the caller switches modes). In eval mode it may
            return `{key: logits}`, several ways to read the model out; the best on validation is selected
            with the epoch and returned as `best_output`.
        labels: LongTensor `[M]` (CPU).
        args: the budget (:class:`FinetuningArguments`).
        train_idx, val_idx: LongTensor row indices.
        state: an `nn.Module` whose `state_dict` is the model (saved at the best epoch, restored at the end).
        num_classes: the width `K` of the logits (for class weights).
        after_epoch: optional `after_epoch()` called after each epoch's updates, before validation (e.g.
            BatchNorm recalibration).
        select_initial: also score the model before any update ("epoch 0") and keep it if no epoch beats
            it on validation (for a wide & deep model that starts as its fitted linear model).

    Returns: dict with `train_loss_curve` (per epoch), `val_macro_f1_curve` (per epoch; with
    `select_initial` the first entry is the initial model), `best_epoch` (index into
    `val_macro_f1_curve`), `val_macro_f1` (best), `epochs_run`, `steps` (optimiser steps taken),
    `stopped_early`, `best_output` (the key of the selected readout, None for a single one).
    """
    generator = torch.Generator().manual_seed(args.seed)
    trainable = [p for p in parameters if p.requires_grad]
    batches_per_epoch = len(_batches(train_idx, args.batch_size))
    total = max(1, args.epochs * batches_per_epoch)
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_fraction * total), total)
    weight = balanced_class_weights(labels[train_idx], num_classes) if args.class_weighted else None
    val_f1s, losses, best = [], [], (-1.0, -1, None)
    best_output = None
    if select_initial:
        f1, best_output = _best_output(forward(val_idx, False), labels[val_idx])
        val_f1s.append(f1)
        best = (f1, 0, copy.deepcopy(state.state_dict()))
    since_best, steps = 0, 0
    for _ in tqdm(range(args.epochs), desc="train", leave=False):
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        epoch_losses = []
        for rows in _batches(order, args.batch_size):
            logits = forward(rows, True)
            loss = nn.functional.cross_entropy(logits, labels[rows].to(logits.device),
                                               weight=None if weight is None else weight.to(logits.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            steps += 1
            epoch_losses.append(loss.item())
        losses.append(float(np.mean(epoch_losses)))
        if after_epoch is not None:
            after_epoch()
        f1, output = _best_output(forward(val_idx, False), labels[val_idx])
        val_f1s.append(f1)
        if f1 > best[0]:
            best, best_output, since_best = (f1, len(val_f1s) - 1, copy.deepcopy(state.state_dict())), output, 0
        else:
            since_best += 1
            if args.early_stopping_patience and since_best >= args.early_stopping_patience:
                break
    state.load_state_dict(best[2])
    return {"train_loss_curve": losses, "val_macro_f1_curve": val_f1s, "best_epoch": best[1],
            "val_macro_f1": best[0], "epochs_run": len(losses), "steps": steps,
            "stopped_early": len(losses) < args.epochs, "best_output": best_output}


def _score_wide_and_deep(model, expression, measured_mask, labels, graph, val_idx, test_idx, args, device):
    """Test logits of a fine-tuned wide & deep model as selected, and :func:`one_standard_error_rule` between
    its fitted linear path and that selection on validation, with the `val_macro_f1`, `test_predictions`
    and `test_probabilities` of the model the rule keeps (one pass of each path per split)."""
    paths = {split: _predict_paths(model, expression[idx], measured_mask[idx], graph, args.batch_size, device)
             for split, idx in (("validation", val_idx), ("test", test_idx))}
    selected = {split: model.config.wide_weight * w + d for split, (w, d) in paths.items()}
    linear = {split: w for split, (w, _) in paths.items()}
    one_se = one_standard_error_rule(labels[val_idx].cpu().numpy(), linear["validation"].argmax(-1).numpy(),
                                     selected["validation"].argmax(-1).numpy(), seed=args.seed)
    kept = linear if one_se["keeps_linear"] else selected
    one_se.update(val_macro_f1=_val_macro_f1(kept["validation"], labels[val_idx]),
                  test_predictions=kept["test"].argmax(-1).numpy(),
                  test_probabilities=torch.softmax(kept["test"], dim=-1).numpy())
    return selected["test"], one_se


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
    one_se: bool = False,
    **overrides,
) -> dict:
    """Fine-tune a cell classifier with :func:`train_classifier`; select on validation macro-F1, then score
    test once.

    A wide & deep model (`config.wide_path`) is trained in two stages: its wide path is fitted first as
    logistic regression (:func:`omnicelltosg.train.wide.fit_wide_path`, `C` chosen on validation) and frozen;
    then the graph part (whose output starts at zero) is trained on its OWN cross-entropy (on small cohorts
    the fitted linear model already separates the training cells, so a graph part trained on the sum's
    loss has nothing left to learn — measured on Kang cell type: validation macro-F1 never moved). Each
    epoch is scored on validation twice, as the sum (`config.wide_weight = 1`) and as the graph part alone
    (`wide_weight = 0`); the best (epoch, readout) is kept and `config.wide_weight` set to it, the fitted
    linear model itself being the "epoch 0" candidate. A wide-only model (`deep_path=False`) is the fitted
    linear model.

    Args:
        model: a [`CellTOSGForCellClassification`] (e.g. from a pretraining checkpoint).
        expression: float32 `[M, Nt]`; measured_mask: bool `[M, Nt]`; labels: LongTensor `[M]`.
        graph: the shared [`TOSGGraph`].
        args: the training budget (default `FinetuningArguments()`).
        train_idx, val_idx, test_idx: disjoint row indices (array-like of int) into the `M` cells.
        device: where to train.
        one_se: also score the one-standard-error selection of a wide & deep model (`one_se` below; a
            bootstrap over validation cells, so off unless a caller reports it).
        **overrides: `FinetuningArguments` fields replacing those of `args` (`TypeError` on unknown names).

    Returns:
        the dict of :func:`train_classifier` (its `best_output`: the selected `wide_weight`, or None) plus
        `wide` ({"C", "val_macro_f1"} of the fitted linear path, or None), test `accuracy`, `macro_f1`,
        `test_predictions` (numpy int `[len(test_idx)]`) and `test_probabilities` (numpy float
        `[len(test_idx), num_labels]`, softmax) from the best-on-validation weights, which are left loaded
        in `model` (with `config.wide_weight` set to the selected readout); and `one_se` (None unless asked
        for and the model is wide & deep): :func:`one_standard_error_rule` between the fitted linear path and the
        selected model on validation, with the `val_macro_f1`, `test_predictions` and `test_probabilities`
        of the model that rule keeps — a second selection from the same training run, reported beside
        the first (no extra training).

    Raises:
        ValueError: empty training or validation indices, overlapping splits, an inconsistent graph.
    """
    args = (args or FinetuningArguments()).with_overrides(**overrides)
    train_idx, val_idx, test_idx = _split_indices(train_idx, val_idx, test_idx)
    graph.validate()
    torch.manual_seed(args.seed)
    graph = graph.to(device)
    model.to(device)
    wide = None
    if model.config.wide_path:
        wide = fit_wide_path(model, expression, measured_mask, labels, train_idx=train_idx, val_idx=val_idx,
                             class_weighted=args.class_weighted)
        model.wide.requires_grad_(False)

    def forward(rows: Tensor, train: bool) -> Tensor:
        if train:  # the graph part learns on its own loss: a fitted wide path would leave it no residual
            model.train()
            out = model(expression[rows].to(device), graph, measured_mask=measured_mask[rows].to(device))
            return out.logits if out.deep_logits is None else out.deep_logits
        if not (model.config.wide_path and model.config.deep_path):
            return predict(model, expression[rows], measured_mask[rows], graph, args.batch_size, device)
        wide_logits, deep_logits = _predict_paths(model, expression[rows], measured_mask[rows], graph,
                                                  args.batch_size, device)
        # wide & deep, and the graph part alone: chosen on validation
        return {weight: weight * wide_logits + deep_logits for weight in WIDE_WEIGHTS}

    def recalibrate() -> None:
        order = train_idx[torch.randperm(len(train_idx), generator=recalibration)]
        recalibrate_batchnorm(model, expression[order], measured_mask[order], graph, batch_size=args.batch_size,
                              device=device)

    recalibration = torch.Generator().manual_seed(args.seed + 1)
    if model.config.deep_path:
        res = train_classifier(model.parameters(), forward, labels, args, train_idx=train_idx, val_idx=val_idx,
                               state=model, num_classes=model.config.num_labels, after_epoch=recalibrate,
                               select_initial=model.config.wide_path)
        if res["best_output"] is not None:
            model.config.wide_weight = res["best_output"]
    else:  # the linear model alone: nothing left to train
        val = _val_macro_f1(forward(val_idx, False), labels[val_idx])
        res = {"train_loss_curve": [], "val_macro_f1_curve": [val], "best_epoch": 0, "val_macro_f1": val,
               "epochs_run": 0, "steps": 0, "stopped_early": False, "best_output": None}
    if model.wide is not None:
        model.wide.requires_grad_(True)
    if one_se and model.config.wide_path and model.config.deep_path:
        test_logits, one_se = _score_wide_and_deep(model, expression, measured_mask, labels, graph, val_idx, test_idx,
                                                   args, device)
    else:
        test_logits, one_se = predict(model, expression[test_idx], measured_mask[test_idx], graph, args.batch_size,
                                      device), None
    test_pred, truth = test_logits.argmax(-1).numpy(), labels[test_idx].cpu().numpy()
    return {
        **res,
        "wide": wide,
        "accuracy": float(accuracy_score(truth, test_pred)) if len(truth) else float("nan"),
        "macro_f1": float(f1_score(truth, test_pred, average="macro")) if len(truth) else float("nan"),
        "test_predictions": test_pred,
        "test_probabilities": torch.softmax(test_logits, dim=-1).numpy(),
        "one_se": one_se,
    }


__all__ = ["finetune", "train_classifier", "predict", "recalibrate_batchnorm", "one_standard_error_rule"]
