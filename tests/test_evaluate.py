"""Tests of ``omnicelltosg evaluate``: metrics against hand-checked cases and scikit-learn, statistics,
baselines, and an end-to-end evaluation on the real Kang data (split integrity, resume, report)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from omnicelltosg.evaluation.baselines import logistic_regression, majority_class, mlp
from omnicelltosg.evaluation.metrics import (
    above_chance,
    bootstrap_difference,
    classification_metrics,
    paired_test,
)


def test_classification_metrics_hand_checked():
    # per-class F1: class 0 P=1 R=1/2 → 2/3; class 1 P=2/3 R=1 → 4/5; class 2 → 1
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 2], label_names=["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["per_class_f1"] == pytest.approx({"a": 2 / 3, "b": 0.8, "c": 1.0})
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert np.isnan(m["auroc"])  # no probabilities given
    # binary AUROC: of the 4 (positive, negative) pairs, 3 are ordered correctly
    b = classification_metrics([0, 0, 1, 1], [0, 1, 0, 1], proba=np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]]),
                               label_names=["ctrl", "stim"])
    assert b["auroc"] == pytest.approx(0.75)
    # a class absent from the test split still gets its (zero) per-class F1 entry
    c = classification_metrics([0, 0], [0, 1], label_names=["x", "y"])
    assert c["per_class_f1"]["y"] == 0.0 and np.isnan(c["auroc"])


def test_bootstrap_difference_and_paired_test():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 200)
    wrong = (truth + 1) % 3
    same = bootstrap_difference([(truth, truth, truth)], n_boot=200)
    assert same["mean_difference"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0
    better = bootstrap_difference([(truth, truth, wrong), (truth, truth, np.where(rng.random(200) < 0.5, truth, wrong))],
                                  n_boot=200)
    assert better["ci_low"] > 0.2 and better["p_two_sided"] <= 1 / 200 + 1e-12
    a, b = np.array([0.8, 0.7, 0.9, 0.85]), np.array([0.6, 0.65, 0.7, 0.8])
    t = paired_test(a, b)
    ref = stats.ttest_rel(a, b)
    assert t["p_value"] == pytest.approx(ref.pvalue) and t["statistic"] == pytest.approx(ref.statistic)
    assert np.isnan(paired_test(a, a + 0.1)["p_value"])  # identical differences: undefined, not p = 0


def test_expression_baselines_select_on_validation_only():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 60)
    x = rng.normal(size=(180, 20)) + np.eye(3)[y] @ rng.normal(scale=3, size=(3, 20))
    idx = rng.permutation(180)
    splits = {"train": idx[:100], "validation": idx[100:140], "test": idx[140:]}
    maj = majority_class(x, y, splits, num_classes=3)
    assert maj.test_pred.tolist() == [np.bincount(y[splits["train"]]).argmax()] * 40
    lr = logistic_regression(x, y, splits, num_classes=3, c_grid=(1e-4, 1.0))
    assert lr.hparams["C"] in (1e-4, 1.0)
    assert lr.val_macro_f1 == pytest.approx(max(
        f1_score(y[splits["validation"]],
                 __import__("sklearn.linear_model", fromlist=["x"]).LogisticRegression(C=c, max_iter=2000, random_state=0)
                 .fit(x[splits["train"]], y[splits["train"]]).predict(x[splits["validation"]]), average="macro")
        for c in (1e-4, 1.0)))
    assert f1_score(y[splits["test"]], lr.test_pred, average="macro") > 0.9
    from omnicelltosg.train import FinetuningArguments

    net = mlp(x, y, splits, num_classes=3, training=FinetuningArguments(epochs=8, early_stopping_patience=0),
              learning_rates=(1e-3, 1e-2))
    assert net.best_epoch == int(np.argmax(net.curves["validation macro-F1"]))
    assert net.hparams["lr"] in (1e-3, 1e-2) and net.hparams["epochs_run"] == 8
    assert net.test_proba.shape == (40, 3) and np.allclose(net.test_proba.sum(1), 1)


def test_evaluate_kang_condition_end_to_end(built, tmp_path):
    demo_dataset = built[0]  # conftest: the real Kang + OneK1K build
    from omnicelltosg.tasks import get_task
    from omnicelltosg.train import FinetuningArguments, PretrainingArguments
    from omnicelltosg.workflows.evaluate import EvaluationSettings, run_evaluation

    spec = get_task("kang_condition")
    spec.seeds, spec.models = [0], ["celltosg_fm", "gcn", "logistic_regression", "majority_class"]
    from omnicelltosg.workflows.evaluate import PRETRAINING

    # the default pretraining recipe (masked expression + per-cell edges), cut to 2 steps
    settings = EvaluationSettings(pretraining=PRETRAINING.with_overrides(steps=2, eval_max_cells=16),
                                  finetuning=FinetuningArguments(epochs=1), learning_rates=(3e-3,))
    out = tmp_path / "kang"
    res = run_evaluation(demo_dataset, spec, out, settings=settings, log=lambda *_: None)
    for pretrained in (out / "checkpoints").glob("split*/pretrained_*"):  # the FM's pretraining had both objectives
        config = json.loads((pretrained / "config.json").read_text())
        assert config["expression_loss_weight"] == 1.0 and config["per_cell_edges"] is True
    assert len(list((out / "checkpoints").glob("split*/pretrained_*"))) == 2
    results = res["results"]
    # every model ran on both directions (donor 101 → 107 and back), plus the FM's one-SE row from its own run
    assert len(results) == 5 * 2 and set(results["model"]) == {*spec.models, "celltosg_fm_one_se"}
    # split integrity: in each direction the test donor never trains, and all models saw the same test rows
    for v, cohort in res["cohorts"].items():
        donors = np.asarray(cohort.cells["donor_id"])
        assert set(donors[cohort.splits["test"]]).isdisjoint(donors[cohort.splits["train"]])
        assert set(donors[cohort.splits["test"]]) == {spec.split_variants[v]["test_donors"][0]}
        assert results[results["variant"] == v]["n_test"].nunique() == 1
    # the reported metrics are the ones sklearn gives on the saved predictions
    with np.load(out / "predictions.npz") as z:
        for _, row in results.iterrows():
            key = f"{row['model']}|{row['variant']}|{row['seed']}|"
            assert row["macro_f1"] == pytest.approx(f1_score(z[key + "truth"], z[key + "pred"], average="macro"))
        # the one-SE row is either the FM as selected or its linear path, which is logistic regression
        for v in res["cohorts"]:
            rule = json.loads(results.query("model == 'celltosg_fm_one_se' and variant == @v")["hparams"].iloc[0])
            one_se = z[f"celltosg_fm_one_se|{v}|0|pred"]
            if rule["keeps linear (1-SE)"]:
                assert (one_se == z[f"logistic_regression|{v}|0|pred"]).mean() >= 0.99
            else:
                assert rule["val difference"] > rule["val SE"]
                np.testing.assert_array_equal(one_se, z[f"celltosg_fm|{v}|0|pred"])
    report = (out / "report.md").read_text()
    assert "kang_condition" in report and ("does not win" in report or "highest mean" in report)
    assert (out / "confusion_celltosg_fm.png").stat().st_size > 10_000
    assert (out / "umap.png").stat().st_size > 10_000
    card = (out / "checkpoints" / "celltosg_fm_finetuned" / "README.md").read_text()
    fm = res["summary"].set_index("model").loc["celltosg_fm"]
    assert f"{fm['macro_f1_mean']:.3f} ± {fm['macro_f1_sd']:.3f}" in card
    # resume: a second call reuses every finished run instead of training again; a UMAP lost with an
    # interrupted process is redrawn from the saved fine-tuned checkpoint
    (out / "umap.png").unlink()
    again = run_evaluation(demo_dataset, spec, out, settings=settings, log=lambda *_: pytest.fail("re-ran a run"))
    pd.testing.assert_frame_equal(again["results"], results, check_dtype=False)
    assert (out / "umap.png").stat().st_size > 10_000 and again["figures"]["umap"] == out / "umap.png"


def test_task_spec_errors_list_accepted_values():
    from omnicelltosg.tasks import TASKS, TaskSpec, get_task

    with pytest.raises(ValueError, match="accepted values"):
        TaskSpec("x", {}, "condition", models=["svm"]).validate()
    with pytest.raises(ValueError, match="neither a label_column nor a task"):
        TaskSpec("x", {}).validate()
    with pytest.raises(ValueError, match="accepted keys"):
        TaskSpec.from_dict({"name": "x", "conditions": {}, "label_column": "y", "epochs": 3})
    with pytest.raises(ValueError, match="accepted values: \\['demo_onek1k_cell_type'"):
        get_task("kang")
    for spec in TASKS.values():
        spec.validate()
    copy = get_task("kang_condition")
    copy.split_variants[0]["seed"] = 5  # a copy: the registry is unchanged
    assert "seed" not in TASKS["kang_condition"].split_variants[0]


def test_demo_tasks_build_the_demo_cohorts(built):
    """The demo's registry entries give exactly the cohorts the demo built with explicit arguments."""
    from dataset_script.cohorts.loader import load_cohort
    from omnicelltosg.tasks import get_task
    from omnicelltosg.workflows.demo import DEMO_TASKS

    explicit = {
        "demo_onek1k_cell_type": {"conditions": {"dataset_id": "onek1k_scdesignpop"}, "label_column": "cell_type"},
        "demo_kang_condition": {"conditions": {"dataset_id": "kang2018_muscat"}, "label_column": "condition",
                                "validation_by": "meta-cell"},
    }
    assert set(DEMO_TASKS) == set(explicit)
    for name, kwargs in explicit.items():
        task = get_task(name)
        for seed in (0, 1):
            a = load_cohort(built[0], **task.cohort_arguments({**task.split_variants[0], "seed": seed}))
            b = load_cohort(built[0], seed=seed, **kwargs)
            assert list(a.cells["cell_id"]) == list(b.cells["cell_id"]) and a.label_names == b.label_names
            for split in ("train", "validation", "test"):
                np.testing.assert_array_equal(a.splits[split], b.splits[split])


def test_evaluation_settings_defaults_and_json():
    import json

    from omnicelltosg.train import FinetuningArguments, PretrainingArguments
    from omnicelltosg.workflows.evaluate import LEARNING_RATE_GRID, EvaluationSettings

    from omnicelltosg.workflows.evaluate import PRETRAINING, PRETRAINING_MODEL

    settings = EvaluationSettings()
    assert settings.pretraining == PRETRAINING and settings.finetuning == FinetuningArguments()
    assert PRETRAINING.gene_mask_ratio > 0 and PRETRAINING_MODEL["expression_loss_weight"] > 0  # one objective
    assert settings.to_dict()["pretraining_model"] == PRETRAINING_MODEL
    # edge-only pretraining spelled with the config's defaults is the same setting as not naming them: a
    # folder made before `pretraining_model` existed resumes under it
    edge_only = EvaluationSettings(pretraining=PretrainingArguments(),
                                   pretraining_model={"expression_loss_weight": 0.0, "per_cell_edges": False})
    assert "pretraining_model" not in edge_only.to_dict()
    assert EvaluationSettings(pretraining=PretrainingArguments(), pretraining_model={}).to_dict() == edge_only.to_dict()
    assert settings.learning_rate_grid() == LEARNING_RATE_GRID and len(LEARNING_RATE_GRID) >= 2
    assert EvaluationSettings(learning_rates=None).learning_rate_grid() == (FinetuningArguments().learning_rate,)
    assert EvaluationSettings(learning_rates=(1e-2, 3e-3)).learning_rate_grid() == (1e-2, 3e-3)
    as_dict = settings.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict and as_dict["pretraining"]["steps"] == PRETRAINING.steps


def test_resume_refuses_other_settings(built, tmp_path):
    """A folder holding runs made with other settings must not silently receive incomparable runs."""
    from omnicelltosg.tasks import TaskSpec
    from omnicelltosg.workflows.evaluate import EvaluationSettings, run_evaluation

    spec = TaskSpec("kang", {"dataset_id": "kang2018_muscat"}, "condition", seeds=[0], models=["majority_class"],
                    split_variants=[{"test_donors": ["kang2018_muscat:101"], "validation_by": "meta-cell"}])
    run_evaluation(built[0], spec, tmp_path, log=lambda *_: None)
    other = EvaluationSettings(learning_rates=(1e-2,))
    with pytest.raises(ValueError, match="settings"):
        run_evaluation(built[0], spec, tmp_path, settings=other, log=lambda *_: None)
    # one writer per folder: while another process holds the lock, a second evaluation refuses and writes nothing
    from filelock import FileLock

    from omnicelltosg.workflows.evaluate import LOCK_NAME

    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with FileLock(tmp_path / LOCK_NAME):
        with pytest.raises(RuntimeError, match="another `omnicelltosg evaluate` process"):
            run_evaluation(built[0], spec, tmp_path, log=lambda *_: None)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    run_evaluation(built[0], spec, tmp_path, log=lambda *_: None)  # released: the folder resumes


def test_above_chance_against_scipy():
    x = np.array([0.52, 0.48, 0.55, 0.50])
    res = above_chance(x, 2)
    assert res["p_value"] == pytest.approx(stats.ttest_1samp(x, 0.5, alternative="greater").pvalue)
    assert res["chance"] == 0.5 and not res["flag"]  # at chance
    high = above_chance(np.array([0.81, 0.86, 0.79]), 2)
    assert high["flag"] and high["p_value"] < 0.05
    assert not above_chance(np.array([0.58, 0.59, 0.57]), 2)["flag"]  # significant but within the margin
    with pytest.raises(ValueError, match="at least 2 classes"):
        above_chance(x, 1)


def test_onek1k_panel_has_no_sex_linked_gene(data_dir):
    """The premise of the onek1k_sex preset, checked independently against org.Hs.eg.db chromosomes."""
    import anndata as ad

    genes = pd.read_csv(data_dir / "knowledge" / "orgHsEgDb_3.16_gene_table.tsv.gz", sep="\t", dtype=str,
                        usecols=["symbol", "chromosome", "ensembl_gene"]).dropna(subset=["ensembl_gene"])
    genes = genes.assign(ensembl_gene=genes["ensembl_gene"].str.split(";")).explode("ensembl_gene")
    panel = ad.read_h5ad(data_dir / "scrna" / "onek1k_pbmc_7811cells_40donors_scDesignPop.h5ad", backed="r").var_names
    chrom = genes[genes["ensembl_gene"].isin(panel)]["chromosome"]
    assert len(chrom) > 900  # the panel does resolve
    assert not chrom.isin(["X", "Y"]).any()


def test_sex_task_donor_level_with_leak_screen(built, tmp_path):
    from omnicelltosg.tasks import get_task
    from omnicelltosg.workflows.evaluate import EvaluationSettings, run_evaluation

    settings = EvaluationSettings()
    outs = {}
    for name in ("onek1k_sex", "onek1k_sex_metacell_split"):
        spec = get_task(name)
        spec.seeds, spec.models, spec.cohort_kwargs = [0], ["logistic_regression", "majority_class"], {"sample_size": 200}
        outs[name] = run_evaluation(built[0], spec, tmp_path / name, settings=settings, log=lambda *_: None)
    donor = outs["onek1k_sex"]
    for cohort in donor["cohorts"].values():  # sex is a donor property: no test donor trains
        donors = np.asarray(cohort.cells["donor_id"])
        assert set(donors[cohort.splits["test"]]).isdisjoint(donors[cohort.splits["train"]])
    assert set(donor["summary"]["test_level"]) == {"donor"}
    leak = outs["onek1k_sex_metacell_split"]
    assert set(leak["summary"]["test_level"]) == {"meta-cell"} and leak["comparison"]["test_level"] == "meta-cell"
    for name, res in outs.items():
        report = (tmp_path / name / "report.md").read_text()
        assert "## Above chance?" in report and "cannot support this task" in report
        majority = res["comparison"]["above_chance"]["majority_class"]
        assert majority["mean"] == pytest.approx(0.5) and not majority["flag"]
    assert "not donor-independent" in (tmp_path / "onek1k_sex_metacell_split" / "report.md").read_text()


def test_cross_task_table_from_real_result_folders(tmp_path):
    """The cross-task table of the committed evaluation folders restates their own files: FM mean and
    rank recomputed from results.csv, the best other model, and 'FM wins?' only where the FM ranks 1st."""
    from omnicelltosg.workflows.evaluation_report import write_cross_task_table

    root = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "evaluation"
    folders = sorted(p.parent for p in root.glob("*/comparison.json"))
    assert len(folders) >= 2
    csv_path, md_path = write_cross_task_table(folders, tmp_path)
    table = pd.read_csv(csv_path).set_index("task")
    for folder in folders:
        results = pd.read_csv(folder / "results.csv")
        means = results.groupby("model")["macro_f1"].mean().sort_values(ascending=False)
        row = table.loc[folder.name]
        if "celltosg_fm" not in means:  # a baselines-only task (the sex leak demonstration)
            assert np.isnan(row["fm_macro_f1"]) and row["best_other"] == means.index[0]
            continue
        assert row["fm_macro_f1"] == pytest.approx(means["celltosg_fm"])
        assert row["fm_rank"] == list(means.index).index("celltosg_fm") + 1
        assert row["best_other"] == means.drop("celltosg_fm").index[0]
        assert bool(row["fm_wins"]) == (row["fm_rank"] == 1)
        assert row["test_level"] == "/".join(sorted(set(results["test_level"])))
    text = md_path.read_text()
    assert all(f"| {f.name} |" in text for f in folders) and "FM wins?" in text
    with pytest.raises(FileNotFoundError, match="not a finished"):
        write_cross_task_table([tmp_path], tmp_path / "x")
