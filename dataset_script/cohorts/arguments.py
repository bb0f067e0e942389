"""Checks of :func:`dataset_script.cohorts.loader.load_cohort`'s arguments, made before any data is read:
each bad value is a ``ValueError`` that names the argument and what is accepted."""

from __future__ import annotations

import inspect

import numpy as np

from dataset_script.cohorts.matching import match_case_control
from dataset_script.cohorts.sampling import check_sampling_request
from dataset_script.cohorts.splits import check_split_request
from dataset_script.cohorts.tasks import TASKS, CohortTask, match_presets


def check_request(label_column: str | None, split_by: str, correction: str | None, *, conditions=None,
                   test_donors=None, seed=0, sample_ratio=None, sample_size=None, min_per_class=None,
                   val_fraction=0.15, test_fraction=0.2, validation_by="donor", config="all") -> None:
    """Raise ``ValueError`` naming the argument for a bad ``split_by`` / ``correction``, a missing label
    column, ``conditions`` that is not a dict, ``test_donors`` given as one string (it would be read
    character by character) or not a list, a ``seed`` that is not an integer, a bad sampling request
    (:func:`~dataset_script.cohorts.sampling.check_sampling_request`), bad split fractions or
    ``validation_by`` (:func:`~dataset_script.cohorts.splits.check_split_request`), or a ``config`` or
    ``label_column`` that is not a name — all before anything is loaded."""
    if not isinstance(split_by, str) or split_by not in ("donor", "meta-cell", "none"):
        raise ValueError(f"split_by must be 'donor', 'meta-cell' or 'none'; got {split_by!r}")
    if label_column is None and split_by != "none":
        raise ValueError(f"Give a label_column or a task ({sorted(TASKS)}); only split_by='none' works unlabelled")
    if correction not in (None, "combat_seq"):
        raise ValueError(f"correction must be None or 'combat_seq'; got {correction!r}")
    if conditions is not None and not isinstance(conditions, dict):
        raise ValueError(f"conditions must be a dict of field → value(s); got {type(conditions).__name__} {conditions!r}")
    if isinstance(test_donors, (str, bytes)):
        raise ValueError(f"test_donors must be a list of donor keys; got the string {test_donors!r} "
                         f"(did you mean [{test_donors!r}]?)")
    if test_donors is not None and not isinstance(test_donors, (list, tuple, set, np.ndarray)):
        raise ValueError(f"test_donors must be a list of donor keys; got {type(test_donors).__name__} {test_donors!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    if not isinstance(config, str) or not config:
        raise ValueError(f"config must be the name of a dataset config (e.g. 'all'); got {config!r}")
    if label_column is not None and (not isinstance(label_column, str) or not label_column):
        raise ValueError(f"label_column must be a metadata field name or None; got {label_column!r}")
    check_sampling_request(sample_ratio, sample_size, min_per_class)
    check_split_request(val_fraction, test_fraction, validation_by)


def check_sample_size(sample_size: int | None, available: int) -> None:
    """Raise ``ValueError`` if ``sample_size`` asks for more meta-cells than the cohort has (it would be
    filled by repeating rows)."""
    if sample_size is not None and sample_size > available:
        raise ValueError(f"sample_size={sample_size} exceeds the {available} meta-cells with a known label in this "
                         "query; ask for at most that many (sample_ratio=1 keeps every one)")


def match_arguments(match: bool | dict, task: str | None, settings: CohortTask) -> dict | None:
    """Arguments of :func:`match_case_control`: the task's preset updated by ``match`` when it is a dict;
    ``None`` when no matching is asked for. Raises ``ValueError`` for a ``match`` that is neither a bool
    nor a dict, a dict key that is not a matching argument, or no balance field and control value."""
    if match is not None and not isinstance(match, (bool, np.bool_, dict)):
        raise ValueError(f"match must be True/False or a dict of matching arguments; got {match!r}")
    if not match:
        return None
    spec = settings.match.as_kwargs() if settings.match else {}
    if isinstance(match, dict):
        accepted = sorted(set(inspect.signature(match_case_control).parameters) - {"meta", "seed"})
        unknown = sorted(map(str, set(match) - set(accepted)))
        if unknown:
            raise ValueError(f"match has unknown key(s) {unknown}; accepted: {accepted}")
        spec.update(match)
    if "balance_field" not in spec or "control_value" not in spec:
        raise ValueError(f"Matching needs balance_field and control_value (task {task!r} has no preset); "
                         f"presets: {match_presets()}")
    return spec


__all__ = ["check_request", "check_sample_size", "match_arguments"]
