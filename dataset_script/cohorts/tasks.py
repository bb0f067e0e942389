"""The label tasks a cohort can be built for (ARCHITECTURE.md §5): the one registry.

A task names the metadata column to predict and how a cohort for it is sampled and, when asked,
matched: ``cell_type``, ``disease``, ``sex`` (alias ``gender``, the original loader's name) and
``condition``. :func:`dataset_script.cohorts.loader.load_cohort` (and through it the original-API
facade, :mod:`dataset_script.cohorts.original_api`) resolves a task name with :func:`resolve_task`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MatchPreset:
    """Default arguments of :func:`dataset_script.cohorts.matching.match_case_control` for a task.

    ``balance_field`` separates cases from controls, ``control_value`` is its control value,
    ``match_keys`` are matched exactly, and ``stage_key`` (``None`` = off) is the ordered age-stage key.
    """

    balance_field: str
    control_value: str
    match_keys: tuple[str, ...] = ()
    stage_key: str | None = None

    def as_kwargs(self) -> dict:
        """The preset as ``match_case_control`` keyword arguments (``match_keys`` as a list)."""
        return {"balance_field": self.balance_field, "control_value": self.control_value,
                "match_keys": list(self.match_keys), "stage_key": self.stage_key}


@dataclass(frozen=True)
class CohortTask:
    """What a task sets in :func:`dataset_script.cohorts.loader.load_cohort`.

    Attributes
    ----------
    label_column : the metadata column to predict (``None`` only for :data:`NO_TASK`).
    min_per_class : per-class minimum when a cohort is down-sampled (``sample_ratio`` / ``sample_size``).
    upsample : classes below ``min_per_class`` are up-sampled with replacement.
    match : the stratified case/control matching preset, or ``None`` (the task cannot be matched
        without an explicit ``balance_field`` / ``control_value``).
    """

    label_column: str | None
    min_per_class: int = 0
    upsample: bool = False
    match: MatchPreset | None = None


#: The label tasks (names of the original loader).
TASKS: dict[str, CohortTask] = {
    "cell_type": CohortTask("cell_type", min_per_class=10, upsample=True),
    "disease": CohortTask("disease", match=MatchPreset(
        "disease", "normal", match_keys=("cell_type", "sex"), stage_key="development_stage_category")),
    "sex": CohortTask("sex", match=MatchPreset(
        "sex", "male", match_keys=("cell_type",), stage_key="development_stage_category")),
    "condition": CohortTask("condition", match=MatchPreset("condition", "control", match_keys=("cell_type",))),
}
#: Other names accepted for a task.
TASK_ALIASES: dict[str, str] = {"gender": "sex"}
#: The settings of a cohort built without a task (from an explicit ``label_column``, or unlabelled).
NO_TASK = CohortTask(label_column=None)


def resolve_task(task: str | None) -> tuple[str | None, CohortTask]:
    """``(canonical task name, its settings)``; ``(None, NO_TASK)`` for ``task=None``.

    Raises
    ------
    ValueError
        ``task`` is neither a task of :data:`TASKS` nor an alias of :data:`TASK_ALIASES` (the message
        lists the tasks).
    """
    if task is None:
        return None, NO_TASK
    if not isinstance(task, str) or TASK_ALIASES.get(task, task) not in TASKS:
        raise ValueError(f"Unknown task {task!r}; tasks: {sorted(TASKS)} (or None with a label_column)")
    task = TASK_ALIASES.get(task, task)
    return task, TASKS[task]


def match_presets() -> dict[str, dict]:
    """Task → its matching preset as keyword arguments, for the tasks that have one (for error messages)."""
    return {name: t.match.as_kwargs() for name, t in TASKS.items() if t.match is not None}
