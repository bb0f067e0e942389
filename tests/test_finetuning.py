"""The shared training loop, the wide (linear) path and the v2 expression encoding of CellTOSG-FM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.utils.class_weight import compute_class_weight

from modeling_celltosg import (
    CellTOSGConfig,
    CellTOSGForCellClassification,
    CellTOSGModel,
)
from modeling_celltosg.configuration_celltosg import ARCHITECTURES
from omnicelltosg.train import FinetuningArguments, finetune
from omnicelltosg.train.finetuning import one_standard_error_rule, train_classifier
from omnicelltosg.train.wide import balanced_class_weights
from tests.test_model import toy_config, toy_graph


def test_balanced_class_weights_match_sklearn():
    y = torch.tensor([0, 0, 0, 1, 2, 2, 0, 1])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y.numpy())
    np.testing.assert_allclose(balanced_class_weights(y, 3).numpy(), expected, rtol=1e-6)
    assert balanced_class_weights(y, 4)[3] == 0  # a class absent from training gets no weight


def _toy_problem(seed=0, n=90):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g) * 4
    y = (x[:, 0] > x[:, 1]).long()
    return x, torch.ones(n, 3, dtype=torch.bool), y


def test_early_stopping_keeps_the_validation_best_epoch():
    torch.manual_seed(0)
    x, _, y = _toy_problem()
    net = torch.nn.Linear(3, 2)
    train_idx, val_idx = torch.arange(60), torch.arange(60, 90)

    def forward(rows, train):
        with torch.set_grad_enabled(train):
            return net(x[rows])

    args = FinetuningArguments(epochs=40, early_stopping_patience=3, batch_size=8, learning_rate=0.05)
    res = train_classifier(net.parameters(), forward, y, args, train_idx=train_idx, val_idx=val_idx, state=net,
                           num_classes=2)
    curve = res["val_macro_f1_curve"]
    assert res["best_epoch"] == int(np.argmax(curve)) and res["val_macro_f1"] == max(curve)
    # the restored weights are the best epoch's: re-scoring validation gives its F1, not the last epoch's
    rescored = f1_score(y[val_idx].numpy(), forward(val_idx, False).argmax(-1).numpy(), average="macro")
    assert rescored == pytest.approx(curve[res["best_epoch"]])
    # stopped after `patience` epochs without improvement (or ran to the cap)
    assert res["epochs_run"] == len(curve) and res["steps"] == res["epochs_run"] * 8
    if res["stopped_early"]:
        assert res["epochs_run"] - 1 - res["best_epoch"] == 3
        assert max(curve[res["best_epoch"] + 1:]) <= curve[res["best_epoch"]]


def test_wide_and_deep_starts_as_its_linear_path():
    torch.manual_seed(0)
    model = CellTOSGForCellClassification(toy_config(num_labels=2)).eval()
    x, m, _ = _toy_problem(n=6)
    with torch.no_grad():
        model.wide.weight.normal_()
        out = model(x, toy_graph(), measured_mask=m)
        np.testing.assert_allclose(out.logits.numpy(), model.wide(x).numpy(), atol=1e-6)  # deep output is 0
    assert out.cell_embeddings.shape == (6, model.config.hidden_size)


def test_gene_affine_encoding_keeps_magnitude():
    """v2: a gene at value 3 and at value 6 gives clearly different node states; v1's LayerNorm fusion made
    them almost parallel (the defect v2 fixes)."""
    graph = toy_graph()
    cosines = {}
    for arch in ("v1", "v2"):
        torch.manual_seed(0)
        model = CellTOSGModel(toy_config(**ARCHITECTURES[arch])).eval()
        with torch.no_grad():
            states = model.embeddings(torch.tensor([[3.0, 1.0, 1.0], [6.0, 1.0, 1.0]]), None, graph)  # [N, 2, d]
        cosines[arch] = float(torch.cosine_similarity(states[0, 0], states[0, 1], dim=0))
        if arch == "v2":
            assert (states[0, 1] - states[0, 0]).norm() > 0.5 * states[0, 0].norm()
    assert cosines["v1"] > 0.99 > cosines["v2"]


def test_finetune_wide_only_is_logistic_regression(built):
    """The wide path alone (deep_path=False) reproduces scikit-learn's logistic regression on a real cohort."""
    from dataset_script.cohorts.loader import load_cohort, load_graph

    cohort = load_cohort(built[0], conditions={"dataset_id": "kang2018_muscat"}, task="condition",
                         test_donors=["kang2018_muscat:101"], validation_by="meta-cell")
    graph, _ = load_graph(built[0])
    x, m, y = cohort.tensors()
    config = CellTOSGConfig.for_graph(graph, num_labels=len(cohort.label_names), deep_path=False)
    model = CellTOSGForCellClassification(config)
    res = finetune(model, x, m, y, graph, train_idx=cohort.splits["train"], val_idx=cohort.splits["validation"],
                   test_idx=cohort.splits["test"])
    assert res["steps"] == 0 and res["wide"]["C"] in (0.01, 0.1, 1.0, 10.0)
    measured = m.any(0).numpy()
    features = x.numpy()[:, measured]  # the baseline's features: every measured gene, as evaluate passes them
    ref = LogisticRegression(C=res["wide"]["C"], max_iter=10_000).fit(
        features[cohort.splits["train"]], y.numpy()[cohort.splits["train"]])
    test = cohort.splits["test"]
    agreement = (ref.predict(features[test]) == res["test_predictions"]).mean()
    assert agreement >= 0.99
    np.testing.assert_allclose(res["test_probabilities"], ref.predict_proba(features[test]), atol=1e-3)


def test_curves_align_the_initial_validation_point_at_epoch_zero():
    from omnicelltosg.plotting.curves import curve_positions

    # train_classifier(select_initial=True): 3 epochs of loss, validation before training + after each epoch
    pos = curve_positions({"train loss": [0.9, 0.5, 0.4], "validation macro-F1": [0.6, 0.7, 0.8, 0.8]})
    assert list(pos["train loss"]) == [1, 2, 3] and list(pos["validation macro-F1"]) == [0, 1, 2, 3]
    # equal lengths (the MLP): both from epoch 1
    pos = curve_positions({"train loss": [0.9, 0.5], "validation macro-F1": [0.6, 0.7]})
    assert list(pos["validation macro-F1"]) == [1, 2]


def test_one_standard_error_rule_against_scipy_bootstrap():
    """The rule keeps the linear model unless the selected one is better by more than one bootstrap SE of
    the macro-F1 difference; that SE agrees with scipy.stats.bootstrap (paired) on the same cells."""
    from scipy import stats

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 120)
    linear = np.where(rng.random(120) < 0.7, truth, (truth + 1) % 3)
    better = np.where(rng.random(120) < 0.5, truth, linear)  # fixes about half of the linear model's errors
    rule = one_standard_error_rule(truth, linear, better, n_boot=2000)
    ref = stats.bootstrap((truth, better, linear), lambda t, a, b: f1_score(t, a, average="macro")
                          - f1_score(t, b, average="macro"), paired=True, vectorized=False, n_resamples=2000,
                          random_state=1)
    assert rule["standard_error"] == pytest.approx(ref.standard_error, rel=0.15)
    assert rule["difference"] == pytest.approx(f1_score(truth, better, average="macro")
                                               - f1_score(truth, linear, average="macro"))
    assert rule["difference"] > rule["standard_error"] and not rule["keeps_linear"]
    # a model that fixes 3 of the linear model's errors and makes 2 new ones: within the noise, the simpler
    # model is kept
    one_better = linear.copy()
    wrong, right = np.flatnonzero(linear != truth), np.flatnonzero(linear == truth)
    one_better[wrong[:3]] = truth[wrong[:3]]
    one_better[right[:2]] = (truth[right[:2]] + 1) % 3
    small = one_standard_error_rule(truth, linear, one_better)
    assert 0 < small["difference"] <= small["standard_error"] and small["keeps_linear"]
    assert one_standard_error_rule(truth, linear, linear)["keeps_linear"]  # a tie keeps the simpler model


def test_one_graph_pass_gives_every_wide_weight_readout():
    """Validation scores both readouts of a wide & deep model from one pass of each path; they must equal the
    model's own logits at each `wide_weight`."""
    from omnicelltosg.train.finetuning import _predict_paths, predict
    from omnicelltosg.train.wide import WIDE_WEIGHTS

    torch.manual_seed(0)
    model = CellTOSGForCellClassification(toy_config(num_labels=2))
    x, m, _ = _toy_problem(n=10)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # a trained-looking model: both paths non-zero
    wide, deep = _predict_paths(model, x, m, toy_graph(), batch_size=4, device="cpu")
    assert wide.abs().sum() > 0 and deep.abs().sum() > 0
    for weight in WIDE_WEIGHTS:
        model.config.wide_weight = weight
        np.testing.assert_allclose((weight * wide + deep).numpy(), predict(model, x, m, toy_graph(), 4).numpy(),
                                   rtol=0, atol=1e-6)
