"""Named evaluation tasks: what to predict on which cohort, how to split it, and which models to compare.

A *task* here is one named prediction experiment, e.g. ``kang_condition`` (condition on the Kang cohort,
each donor as test once). It is not the *kind of label* a cohort can have — ``cell_type``, ``disease``,
``sex``, ``condition`` — that ``load_cohort(task=...)`` accepts (:mod:`dataset_script.cohorts.tasks`): a
:class:`TaskSpec` may name one of those as its ``task`` to take that label kind's label column,
per-class sampling minimum and case/control matching preset.

:data:`TASKS` is the one registry of named tasks: ``omnicelltosg evaluate --preset NAME`` and
``omnicelltosg demo`` read it. :data:`GRAPH_MODELS` / :data:`ALL_MODELS` name the models a task can run
(trained by :mod:`omnicelltosg.workflows.evaluate`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

from omnicelltosg.evaluation.baselines import EXPRESSION_BASELINES

#: Graph models of the evaluation (paper §2.4): the architecture variant (`modeling_celltosg.ARCHITECTURES`:
#: "v2" = CellTOSG-FM now, "v1" = the paper-style design first shipped), message-passing layer, where node
#: identity comes from (``CellTOSGConfig.prior_source``), whether the encoder is pretrained by PPI edge
#: masking first, and ``head``: CellTOSGConfig classifier fields (the wide/deep switches of the ablations).
GRAPH_MODELS = {
    "celltosg_fm": {"architecture": "v2", "layer_type": "gat", "prior_source": "text", "pretrained": True},
    # Ablations of CellTOSG-FM: no pretraining, no priors, the linear (wide) part alone, the graph part
    # alone, and the v1 architecture (the paper's design).
    "celltosg_scratch": {"architecture": "v2", "layer_type": "gat", "prior_source": "text", "pretrained": False},
    "celltosg_no_priors": {"architecture": "v2", "layer_type": "gat", "prior_source": "learned", "pretrained": True},
    "celltosg_wide_only": {"architecture": "v2", "layer_type": "gat", "prior_source": "text", "pretrained": False,
                           "head": {"deep_path": False}},
    "celltosg_deep_only": {"architecture": "v2", "layer_type": "gat", "prior_source": "text", "pretrained": True,
                           "head": {"wide_path": False}},
    "celltosg_v1": {"architecture": "v1", "layer_type": "gat", "prior_source": "text", "pretrained": True},
    # Plain GNN baselines: the v1 encoder with a learned node embedding instead of priors, no pretraining.
    "gcn": {"architecture": "v1", "layer_type": "gcn", "prior_source": "learned", "pretrained": False},
    "gat": {"architecture": "v1", "layer_type": "gat", "prior_source": "learned", "pretrained": False},
    "unimp": {"architecture": "v1", "layer_type": "transformer", "prior_source": "learned", "pretrained": False},
}
#: The ablation models of CellTOSG-FM (the ablation table), with what each removes.
ABLATIONS = {"celltosg_wide_only": "graph part (wide/linear path only)",
             "celltosg_deep_only": "linear path (graph part only)",
             "celltosg_no_priors": "text priors (learned node embedding)",
             "celltosg_scratch": "pretraining",
             "celltosg_v1": "v2 architecture (the v1, paper-style design)",
             "celltosg_fm_one_se": "graph part unless it beats the linear path by > 1 SE on validation"}
#: Rows an evaluation derives from CellTOSG-FM's own training run (no model of their own, never trained
#: alone): ``celltosg_fm_one_se`` is the FM selected by the one-standard-error rule instead of the validation
#: maximum (:func:`omnicelltosg.train.finetuning.one_standard_error_rule`).
DERIVED_FROM_FM = ("celltosg_fm_one_se",)
#: Every model a task can run: the graph models, then the expression baselines.
ALL_MODELS = [*GRAPH_MODELS, *EXPRESSION_BASELINES]
#: The foundation model every other model is compared with.
FM = "celltosg_fm"


@dataclass
class TaskSpec:
    """One named evaluation task.

    Attributes:
        name: task name, used in file and folder names.
        conditions: metadata query (:func:`dataset_script.cohorts.loader.load_cohort`).
        label_column: the metadata column to predict; None = the label column of ``task``.
        task: the kind of label (``load_cohort(task=...)``: ``cell_type``, ``disease``, ``sex``,
            ``condition``), for its sampling minimum and matching preset; None = none.
        split_variants: one dict of ``load_cohort`` split arguments per variant (``seed``,
            ``test_donors``, ``split_by``, ``validation_by``, fractions); ``[{"seed": 0}]`` by default.
        seeds: model seeds per split variant (initialisation, shuffling, dropout).
        models: subset of :data:`ALL_MODELS` (default: all).
        cohort_kwargs: further ``load_cohort`` arguments shared by all variants (``sample_size``, ``match`` …).
        note: free text carried into the report (e.g. why a split is at the meta-cell level).
        genes_support_task: False for a task the measured genes cannot support (e.g. sex on a panel
            without X/Y-linked genes): any model flagged above chance is then reported as a suspected
            leak (:func:`omnicelltosg.evaluation.metrics.above_chance`).
    """

    name: str
    conditions: dict
    label_column: str | None = None
    task: str | None = None
    split_variants: list[dict] = field(default_factory=lambda: [{"seed": 0}])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    models: list[str] = field(default_factory=lambda: list(ALL_MODELS))
    cohort_kwargs: dict = field(default_factory=dict)
    note: str = ""
    genes_support_task: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` for a field of the wrong type (the name must be a safe folder name:
        :func:`dataset_script.files.check_safe_name`), unknown models, no label, or an empty run plan."""
        from dataset_script.files import check_safe_name

        check_safe_name(self.name, "task name")
        expected = (("conditions", dict, "a dict of field → value(s)"), ("cohort_kwargs", dict, "a dict"),
                    ("split_variants", list, "a list of dicts of split arguments"),
                    ("seeds", list, "a list of integers"), ("models", list, f"a list of names of {ALL_MODELS}"),
                    ("label_column", (str, type(None)), "a column name or null"),
                    ("task", (str, type(None)), "a label kind or null"), ("note", str, "text"),
                    ("genes_support_task", bool, "true or false"))
        for name, kind, what in expected:
            value = getattr(self, name)
            if isinstance(value, tuple) and kind is list:
                value = list(value)
            if not isinstance(value, kind):  # a spec file's error: ValueError, which the command line reports
                raise ValueError(  # noqa: TRY004
                    f"Task {self.name!r}: {name} must be {what}; got {type(value).__name__} {value!r}.")
        if not all(isinstance(v, dict) for v in self.split_variants):
            raise ValueError(f"Task {self.name!r}: split_variants must be a list of dicts; got {self.split_variants!r}.")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in self.seeds):
            raise ValueError(f"Task {self.name!r}: seeds must be a list of integers; got {self.seeds!r}.")
        unknown = [m for m in self.models if not isinstance(m, str) or m not in ALL_MODELS]
        if unknown:
            raise ValueError(f"Unknown models {unknown}; accepted values: {ALL_MODELS}.")
        if self.label_column is None and self.task is None:
            raise ValueError(f"Task {self.name!r} names neither a label_column nor a task (kind of label).")
        if not self.seeds or not self.split_variants:
            raise ValueError("An evaluation needs at least one seed and one split variant.")

    def cohort_arguments(self, variant: int | dict) -> dict:
        """``load_cohort`` keyword arguments (besides the dataset path) of split variant ``variant``: its
        position in ``split_variants``, or a dict of split arguments given directly."""
        split = self.split_variants[variant] if isinstance(variant, int) else variant
        return {"conditions": self.conditions, "task": self.task, "label_column": self.label_column,
                **self.cohort_kwargs, **split}

    @classmethod
    def from_dict(cls, d: dict) -> TaskSpec:
        """A spec from a parsed YAML/JSON mapping.

        Raises:
            ValueError: not a mapping, unknown or missing keys (lists the accepted ones), or an invalid
                spec (:meth:`validate`).
        """
        allowed = {f.name for f in fields(cls)}
        if not isinstance(d, dict):  # a spec file's error: ValueError, which the command line reports
            raise ValueError(  # noqa: TRY004
                f"A task spec must be a mapping with keys {sorted(allowed)}; got {type(d).__name__}.")
        unknown = set(map(str, d)) - allowed
        if unknown:
            raise ValueError(f"Unknown task spec keys {sorted(unknown)}; accepted keys: {sorted(allowed)}.")
        missing = sorted({"name", "conditions"} - set(d))
        if missing:
            raise ValueError(f"Task spec lacks required key(s) {missing}; accepted keys: {sorted(allowed)}.")
        spec = cls(**d)
        spec.validate()
        return spec


_KANG = {"dataset_id": "kang2018_muscat"}
_KANG_BOTH_DIRECTIONS = [{"test_donors": ["kang2018_muscat:101"], "validation_by": "meta-cell"},
                         {"test_donors": ["kang2018_muscat:107"], "validation_by": "meta-cell"}]
_ONEK1K = {"dataset_id": "onek1k_scdesignpop"}

#: The named tasks (on the demo build, ``build/demo.yaml``, unless the note says otherwise).
TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    # The demo's two fine-tuning tasks: one split each, its seed = the demo's --seed.
    TaskSpec("demo_onek1k_cell_type", _ONEK1K, "cell_type",
             note="The demo's cell-type task: one donor-level split of every OneK1K meta-cell (no sampling)."),
    TaskSpec("demo_kang_condition", _KANG, "condition", split_variants=[{"seed": 0, "validation_by": "meta-cell"}],
             note="The demo's condition task. Kang has two donors: test = one donor, validation carved from the "
                  "other donor's meta-cells (flagged)."),
    TaskSpec("kang_condition", _KANG, "condition", split_variants=_KANG_BOTH_DIRECTIONS,
             note="Kang has two donors: train on one, test on the other, both directions; validation meta-cells "
                  "come from the training donor (flagged)."),
    TaskSpec("kang_cell_type", _KANG, "cell_type", split_variants=_KANG_BOTH_DIRECTIONS,
             note="Train on one Kang donor, test on the other, both directions."),
    TaskSpec("onek1k_cell_type", _ONEK1K, "cell_type", split_variants=[{"seed": 0}, {"seed": 1}],
             cohort_kwargs={"sample_size": 400},
             note="40 donors: two donor-level splits (split seeds 0 and 1: different test donors) × 3 model seeds; "
                  "400 meta-cells sampled per class-stratified quota, the split still by donor."),
    TaskSpec("oligodendroglioma_malignant", {"dataset_id": "tirosh2016_oligodendroglioma"}, "condition",
             split_variants=[{"seed": 0, "validation_by": "meta-cell"}, {"seed": 1, "validation_by": "meta-cell"}],
             note="Malignant vs non-malignant; donor = patient. Five patients: the test split holds whole patients, "
                  "validation meta-cells come from the training patients (flagged)."),
    # OneK1K's 1,000-gene panel holds no X- or Y-linked gene (checked against org.Hs.eg.db chromosomes in
    # tests/test_evaluate.py): sex is a donor property the input cannot support, so donor-level splits should
    # give chance and anything far above it is a leak to find.
    TaskSpec("onek1k_sex", _ONEK1K, "sex", cohort_kwargs={"sample_size": 400}, genes_support_task=False,
             note="Sex on OneK1K with donor-level splits. The gene panel has no X- or Y-linked gene (no XIST, "
                  "no RPS4Y1 …), so the input cannot support this task: chance is the expected result and a model "
                  "far above chance is a suspected leak (see 'Above chance?')."),
    # The same task split at the meta-cell level, for expression baselines only: the leak the donor-level
    # split prevents (a donor's meta-cells on both sides carry its sex through donor-specific expression).
    TaskSpec("onek1k_sex_metacell_split", _ONEK1K, "sex", split_variants=[{"seed": 0, "split_by": "meta-cell"}],
             cohort_kwargs={"sample_size": 400}, models=["mlp", "logistic_regression", "majority_class"],
             genes_support_task=False,
             note="LEAK DEMONSTRATION, not a result: meta-cells of the same donor on both sides of the split. "
                  "Compare with onek1k_sex (donor-level)."),
    # Built by build/pbmc68k.yaml (single-cell rows; the file has no donors).
    TaskSpec("pbmc68k_cell_type", {"dataset_id": "pbmc68k_reduced"}, "cell_type",
             split_variants=[{"seed": 0, "split_by": "meta-cell"}, {"seed": 1, "split_by": "meta-cell"}],
             note="pbmc68k_reduced has NO donor information: stratified CELL-level splits (one cell per row). "
                  "Test cells share donors with training cells, so scores are not donor-independent."),
)}


def get_task(name: str) -> TaskSpec:
    """A copy of the registered task ``name`` (safe to modify).

    Raises:
        ValueError: ``name`` is not in :data:`TASKS` (lists the accepted names).
    """
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; accepted values: {list(TASKS)}.")
    return copy.deepcopy(TASKS[name])


__all__ = ["TaskSpec", "TASKS", "get_task", "GRAPH_MODELS", "ABLATIONS", "ALL_MODELS", "FM", "DERIVED_FROM_FM"]
