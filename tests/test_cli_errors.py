"""Issue 20: a command that stops on a bad argument leaves no ``--out`` folder behind.

Each ``omnicelltosg`` command other than ``build`` (which has its own tests in test_hardening.py) is run
through :func:`omnicelltosg.cli.main` with one bad argument: the exit status is not zero, the message
says what was wrong, and ``--out`` does not exist afterwards. Before the fix ``evaluate``,
``pretrain-sweep`` and ``demo`` created ``--out`` (``evaluate`` also wrote ``run_config.json`` into it)
before their inputs were checked. The tests at the end use the small real build (conftest ``built``)
for the errors only a real dataset can reveal (a query with no match, a case the cohort lacks).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from omnicelltosg.cli import main

from .conftest import DATA


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of ``omnicelltosg argv`` (argparse errors exit with status 2)."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


def _assert_refused(tmp_path: Path, argv: list[str], message: str, capsys) -> None:
    out = tmp_path / "out"
    status, err = _run([*argv, "--out", out], capsys)
    assert status not in (0, None), err
    assert message in err, err
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no temporary either


def _spec(tmp_path: Path, **spec) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# --- no dataset needed: arguments and inputs checked before anything is written

@pytest.mark.parametrize("extra, message", [
    (["--preset", "kang_condition"], "No OmniCellTOSG dataset at"),  # was: out/kang_condition/run_config.json
    (["--preset", "kang_condition", "--models", "svm"], "Unknown models ['svm']"),
    (["--preset", "no_such_task"], "invalid choice: 'no_such_task'"),
    (["--preset", "kang_condition", "--gene-mask-ratio", "0"], "masked-expression modelling needs both > 0"),
    (["--preset", "kang_condition", "--expression-loss-weight", "0"], "masked-expression modelling needs both > 0"),
])
def test_evaluate_refuses_before_creating_out(tmp_path, capsys, extra, message):
    _assert_refused(tmp_path, ["evaluate", "--dataset", tmp_path / "no-dataset", *extra], message, capsys)


@pytest.mark.parametrize("spec, message", [
    ({"name": "../../escaped", "conditions": {}, "task": "sex"}, "task name '../../escaped' is not a safe name"),
    ({"name": "x", "conditions": ["blood"], "task": "sex"}, "conditions must be a dict"),
    ({"name": "x", "conditions": {}, "task": "sex", "models": "mlp"}, "models must be a list"),
    ({"name": "x", "task": "sex"}, "lacks required key(s) ['conditions']"),
    ({"name": "x", "conditions": {}, "task": "sex", "cohort_kwargs": {"sample_ratio": 5}}, "sample_ratio must be"),
    ({"name": "x", "conditions": {}, "task": "sex", "split_variants": [{"val_fraction": 0.9}]},
     "val_fraction and test_fraction"),
    (["not", "a", "mapping"], "A task spec must be a mapping"),
])
def test_evaluate_bad_spec_is_named_and_writes_nothing(tmp_path, capsys, spec, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    _assert_refused(tmp_path, ["evaluate", "--dataset", tmp_path / "no-dataset", "--spec", path], message, capsys)
    assert not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize("extra, message", [
    ([], "No OmniCellTOSG dataset at"),  # was: an empty out folder
    (["--ratios", "2"], "ratios (--ratios): mask_ratio=2.0 is not accepted"),
    (["--ratios", "0.1", "nan"], "mask_ratio=nan is not accepted"),
    (["--negatives", "some"], "invalid choice: 'some'"),
])
def test_pretrain_sweep_refuses_before_creating_out(tmp_path, capsys, extra, message):
    _assert_refused(tmp_path, ["pretrain-sweep", "--dataset", tmp_path / "no-dataset", *extra], message, capsys)


@pytest.mark.parametrize("extra, message", [
    ([], "No OmniCellTOSG dataset at"),
    (["--mask-ratio", "1.5"], "mask_ratio=1.5 is not accepted"),
    (["--layer-type", "mlp"], "invalid choice: 'mlp'"),
])
def test_pretrain_refuses_before_creating_out(tmp_path, capsys, extra, message):
    _assert_refused(tmp_path, ["pretrain", "--dataset", tmp_path / "no-dataset", *extra], message, capsys)


_SIGNALING = ["signaling", "--conditions", '{"dataset_id": "kang2018_muscat"}', "--case", "stim",
              "--control", "control"]


@pytest.mark.parametrize("extra, message", [
    ([], "No OmniCellTOSG dataset at"),
    (["--finetune-epochs", "1"], "No OmniCellTOSG dataset at"),
    (["--finetune-epochs", "0"], "epochs (--finetune-epochs) must be an integer >= 1"),
    (["--top-k", "0"], "top_k (--top-k) must be an integer >= 1"),
    (["--fdr", "5"], "fdr_threshold (--fdr) must be a number in (0, 1]"),
    (["--method", "paper"], "method='paper' needs a fine-tuned model"),
    (["--case", "control"], "case and control must differ"),
    (["--model", "/nonexistent"], "--model /nonexistent: no such model folder"),  # was a misleading "Repo id" error
])
def test_signaling_refuses_before_creating_out(tmp_path, capsys, extra, message):
    argv = [*_SIGNALING, "--dataset", tmp_path / "no-dataset", *extra]
    _assert_refused(tmp_path, argv, message, capsys)


def test_signaling_bad_json_conditions_is_an_argparse_error(tmp_path, capsys):
    argv = ["signaling", "--dataset", tmp_path / "no-dataset", "--conditions", "{dataset_id: kang", "--case", "a",
            "--control", "b"]
    _assert_refused(tmp_path, argv, "argument --conditions: invalid loads value", capsys)
    argv[4] = "[1, 2]"  # valid JSON, not a query
    _assert_refused(tmp_path, argv, "conditions must be a dict", capsys)


def test_predict_refuses_before_writing(tmp_path, capsys):
    out = tmp_path / "out" / "pred.h5ad"
    for argv, message in (
            (["--model", tmp_path / "no-model", "--graph", tmp_path / "no-dataset", "--out", out], "No model at"),
            (["--model", tmp_path / "no-model", "--graph", tmp_path / "no-dataset", "--out", tmp_path / "out" / "p.csv"],
             ".h5ad")):
        status, err = _run(["predict", tmp_path / "cells.h5ad", *argv], capsys)
        assert status == 2 and message in err, err
        assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not (DATA / "scrna").exists(), reason="real data folder absent")
def test_annotate_refuses_before_creating_out(tmp_path, capsys):
    recipe = Path(__file__).resolve().parents[1] / "build" / "unlabelled.yaml"
    _assert_refused(tmp_path, ["annotate", "--recipe", tmp_path / "missing.yaml"], "Recipe not found", capsys)
    _assert_refused(tmp_path, ["annotate", "--recipe", recipe, "--data", tmp_path / "no-data"],
                    "Knowledge file not found", capsys)
    demo = Path(__file__).resolve().parents[1] / "build" / "demo.yaml"
    _assert_refused(tmp_path, ["annotate", "--recipe", demo, "--data", DATA], "has 'cell_type_annotation'", capsys)


def test_demo_refuses_before_creating_out(tmp_path, capsys):
    _assert_refused(tmp_path, ["demo", "--recipe", tmp_path / "missing.yaml"], "Recipe not found", capsys)
    # was: an empty out folder (the recipe's inputs are missing from --data)
    _assert_refused(tmp_path, ["demo", "--data", tmp_path / "no-data"], "Input file(s) named by the recipe not found",
                    capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"datasets": [{"dataset_id": "../x", "path": "a.h5ad"}]}))
    _assert_refused(tmp_path, ["demo", "--recipe", bad], "dataset_id '../x' is not a safe name", capsys)


def test_evaluation_table_refuses_before_creating_out(tmp_path, capsys):
    (tmp_path / "task").mkdir()
    _assert_refused(tmp_path, ["evaluation-table", tmp_path / "task"], "not a finished `omnicelltosg evaluate`",
                    capsys)


# --- with the small real build (conftest ``built``): errors only a real dataset reveals

def test_evaluate_query_without_match_writes_nothing(built, tmp_path, capsys):
    dataset = built[0]
    spec = _spec(tmp_path, name="nothing", conditions={"dataset_id": "no_such_dataset"}, task="condition",
                 models=["majority_class"], seeds=[0])
    # was: out/nothing/run_config.json, then the cohort error
    _assert_refused(tmp_path, ["evaluate", "--dataset", dataset, "--spec", spec], "No meta-cells match", capsys)
    spec = _spec(tmp_path, name="kang", conditions={"dataset_id": "kang2018_muscat"}, task="condition",
                 models=["majority_class"], seeds=[0], split_variants=[{"test_donors": ["nobody"]}])
    _assert_refused(tmp_path, ["evaluate", "--dataset", dataset, "--spec", spec], "test donor 'nobody'", capsys)


def test_evaluate_resume_check_comes_before_any_write(built, tmp_path, capsys):
    dataset = built[0]
    out = tmp_path / "out" / "kang"
    out.mkdir(parents=True)
    (out / "run_config.json").write_text(json.dumps({"settings": {}, "conditions": {}}))
    spec = _spec(tmp_path, name="kang", conditions={"dataset_id": "kang2018_muscat"}, task="condition",
                 models=["majority_class"], seeds=[0])
    status, err = _run(["evaluate", "--dataset", dataset, "--spec", spec, "--out", tmp_path / "out"], capsys)
    assert status == 2 and "holds runs made with different" in err
    assert sorted(p.name for p in out.iterdir()) == ["run_config.json"]


def test_evaluate_pretraining_objective_options_reach_the_run_settings(built, tmp_path, capsys):
    spec = _spec(tmp_path, name="kang", conditions={"dataset_id": "kang2018_muscat"}, task="condition",
                 models=["majority_class"], seeds=[0], split_variants=[{"test_donors": ["kang2018_muscat:101"],
                                                                        "validation_by": "meta-cell"}])
    argv = ["evaluate", "--dataset", built[0], "--spec", spec]
    status, err = _run([*argv, "--out", tmp_path / "default"], capsys)
    assert status == 0, err
    settings = json.loads((tmp_path / "default" / "kang" / "run_config.json").read_text())["settings"]
    assert (settings["pretraining"]["steps"], settings["pretraining"]["gene_mask_ratio"]) == (200, 0.15)
    assert settings["pretraining_model"] == {"expression_loss_weight": 1.0, "per_cell_edges": True}
    # edge-only pretraining, as the evaluation_v2 folders were made
    status, err = _run([*argv, "--out", tmp_path / "edges", "--pretrain-steps", "7", "--gene-mask-ratio", "0",
                        "--expression-loss-weight", "0", "--no-per-cell-edges"], capsys)
    assert status == 0, err
    settings = json.loads((tmp_path / "edges" / "kang" / "run_config.json").read_text())["settings"]
    assert (settings["pretraining"]["steps"], settings["pretraining"]["gene_mask_ratio"]) == (7, 0.0)
    assert "pretraining_model" not in settings and settings["model"] == {}


def test_signaling_finetune_checks_the_groups_before_training(built, tmp_path, capsys):
    argv = ["signaling", "--dataset", built[0], "--conditions", '{"dataset_id": "kang2018_muscat"}',
            "--case", "IFN", "--control", "control", "--finetune-epochs", "1"]
    _assert_refused(tmp_path, argv, "case='IFN' is not a value of 'condition' in this cohort", capsys)
