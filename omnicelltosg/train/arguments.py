"""Training arguments: HOW a model is trained, apart from what the model IS (`CellTOSGConfig`).

One typed, validated dataclass per training phase; every training default of the project is defined
here and nowhere else. Workflows (demo, evaluation, pretraining sweep, the Accelerate command line)
pass these objects; a caller overrides a field with `dataclasses.replace(args, field=value)` or the
`**overrides` of the loop functions. Command lines get one flag per field from `add_arguments` (defaults,
choices and help taken from the dataclass) and read them back with `from_namespace`.

The defaults are sized for the project's CPU machines (2 cores): the demo and the evaluation run with them.
"""

from __future__ import annotations

import argparse
import inspect
import re
from dataclasses import asdict, dataclass, field, fields, replace

#: Training negatives of the masked-edge objective (`PretrainingArguments.negatives`).
NEGATIVE_KINDS = ("random", "degree_matched", "mixed")
#: Accelerate mixed-precision modes (`PretrainingArguments.mixed_precision`).
MIXED_PRECISION = ("no", "bf16", "fp16")


def _check(condition: bool, name: str, value, accepted: str) -> None:
    if not condition:
        raise ValueError(f"{name}={value!r} is not accepted; accepted values: {accepted}.")


class _Arguments:
    """Shared helpers: `to_dict`, and `with_overrides` that names unknown fields."""

    def to_dict(self) -> dict:
        """Plain dict of every field (for JSON reports and model cards)."""
        return asdict(self)  # type: ignore[call-overload]

    def with_overrides(self, **overrides):
        """A copy with `overrides` applied; `TypeError` naming the unknown keys and the accepted ones."""
        names = {f.name for f in fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"Unknown {type(self).__name__} fields {unknown}; accepted: {sorted(names)}.")
        return replace(self, **overrides)  # type: ignore[type-var]


@dataclass(frozen=True)
class PretrainingArguments(_Arguments):
    """Masked PPI edge pretraining (OmniCellTOSG, arXiv 2504.02148, §4.4; MaskGAE, Li et al. 2023).

    Attributes:
        steps: optimiser steps.
        batch_size: meta-cells per step (per process under Accelerate).
        learning_rate: AdamW learning rate.
        mask_ratio: fraction of the training PPI pairs masked per step, in (0, 1).
        gene_mask_ratio: fraction of each cell's measured genes hidden and predicted per step (masked-expression
            modelling, weighted by `CellTOSGConfig.expression_loss_weight`), in [0, 1); 0 = off.
        held_out_fraction: fraction of PPI pairs removed for good and scored at the end, in [0, 1).
        negatives: training negatives per step, one of `NEGATIVE_KINDS` (`mixed` = half random, half
            degree-matched).
        eval_max_cells: meta-cells whose node embeddings are averaged for the held-out evaluation.
        seed: seeds cell sampling, the edge split, masks and negatives.
        gradient_accumulation_steps: micro-batches per optimiser step (Accelerate only).
        mixed_precision: one of `MIXED_PRECISION` (Accelerate only).
        checkpoint_every: save a checkpoint every this many steps, 0 = only at the end (Accelerate only).
    """

    steps: int = 60
    batch_size: int = 8
    learning_rate: float = 3e-3
    mask_ratio: float = 0.1
    gene_mask_ratio: float = 0.0
    held_out_fraction: float = 0.1
    negatives: str = field(default="mixed", metadata={"choices": NEGATIVE_KINDS})
    eval_max_cells: int = 256
    seed: int = 0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = field(default="no", metadata={"choices": MIXED_PRECISION})
    checkpoint_every: int = 0

    def __post_init__(self):
        _check(self.steps >= 0, "steps", self.steps, "an integer >= 0")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        _check(self.learning_rate > 0, "learning_rate", self.learning_rate, "a number > 0")
        _check(0.0 < self.mask_ratio < 1.0, "mask_ratio", self.mask_ratio, "a number in (0, 1)")
        _check(0.0 <= self.gene_mask_ratio < 1.0, "gene_mask_ratio", self.gene_mask_ratio, "a number in [0, 1)")
        _check(0.0 <= self.held_out_fraction < 1.0, "held_out_fraction", self.held_out_fraction,
               "a number in [0, 1)")
        _check(self.negatives in NEGATIVE_KINDS, "negatives", self.negatives, str(list(NEGATIVE_KINDS)))
        _check(self.eval_max_cells >= 1, "eval_max_cells", self.eval_max_cells, "an integer >= 1")
        _check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps",
               self.gradient_accumulation_steps, "an integer >= 1")
        _check(self.mixed_precision in MIXED_PRECISION, "mixed_precision", self.mixed_precision,
               str(list(MIXED_PRECISION)))
        _check(self.checkpoint_every >= 0, "checkpoint_every", self.checkpoint_every, "an integer >= 0")


@dataclass(frozen=True)
class FinetuningArguments(_Arguments):
    """Supervised training of a cell classifier — the SAME budget for every trainable model of an evaluation
    (CellTOSG-FM and its ablations, the GNN baselines, the MLP): an epoch cap with early stopping on
    validation macro-F1, AdamW with weight decay, linear warm-up then cosine decay of the learning rate,
    optionally a class-weighted loss. Logistic regression takes `class_weighted` too (its budget is a
    grid of `C`, solved to convergence).

    Attributes:
        epochs: cap on the passes over the training cells.
        early_stopping_patience: stop after this many epochs without a better validation macro-F1;
            0 = run every epoch. The validation-best epoch's weights are kept either way.
        batch_size: cells (meta-cells) per step.
        learning_rate: peak AdamW learning rate (an evaluation tries a grid of them, chosen on validation).
        weight_decay: AdamW decoupled weight decay (Loshchilov & Hutter 2019).
        warmup_fraction: fraction of the capped steps (`epochs` × batches per epoch) of linear warm-up from
            0 to `learning_rate`, followed by cosine decay to 0 at the cap, in [0, 1).
        class_weighted: weight the cross-entropy by inverse training-class frequency (scikit-learn's
            `class_weight="balanced"`: n / (K · n_k)).
        seed: seeds initialisation of new heads, shuffling and dropout.
    """

    epochs: int = 30
    early_stopping_patience: int = 8
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 1e-2
    warmup_fraction: float = 0.1
    class_weighted: bool = False
    seed: int = 0

    def __post_init__(self):
        _check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        _check(self.early_stopping_patience >= 0, "early_stopping_patience", self.early_stopping_patience,
               "an integer >= 0")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        _check(self.learning_rate > 0, "learning_rate", self.learning_rate, "a number > 0")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        _check(0.0 <= self.warmup_fraction < 1.0, "warmup_fraction", self.warmup_fraction, "a number in [0, 1)")


def _field_help(cls) -> dict[str, str]:
    """Field name → its description in the `Attributes:` section of `cls`'s docstring."""
    helps, name = {}, None
    for line in inspect.cleandoc(cls.__doc__ or "").partition("Attributes:")[2].splitlines():
        match = re.match(r"    (\w+): (.*)", line)
        if match:
            name, helps[match.group(1)] = match.group(1), match.group(2)
        elif name and line.strip():
            helps[name] += " " + line.strip()
    return helps


def _parse_bool(text: str) -> bool:
    """A command-line boolean: true/false, yes/no, 1/0 (`argparse.ArgumentTypeError` otherwise)."""
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; accepted: true/false, yes/no, 1/0.")
    return value


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """Add one ``--field-name`` flag per field of the arguments dataclass `cls`, with its type, default,
    choices and the help text of its docstring."""
    helps = _field_help(cls)
    group = parser.add_argument_group(f"{cls.__name__} (defaults: omnicelltosg.train.arguments)")
    for f in fields(cls):
        kind = _parse_bool if isinstance(f.default, bool) else type(f.default)
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=f.default,
                           choices=f.metadata.get("choices"), help=f"{helps.get(f.name, '')} (default: %(default)s)")


def from_namespace(cls, namespace: argparse.Namespace):
    """The `cls` instance of the flags `add_arguments(parser, cls)` added (other attributes are ignored)."""
    return cls(**{f.name: getattr(namespace, f.name) for f in fields(cls)})


__all__ = ["PretrainingArguments", "FinetuningArguments", "NEGATIVE_KINDS", "MIXED_PRECISION", "add_arguments",
           "from_namespace"]
