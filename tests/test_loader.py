"""load_cohort on the small real build (Kang + OneK1K): matching, donor splits, sampling, cache,
ComBat-seq, AnnData export and the CellTOSGDataLoader facade (issue 4)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dataset_script.cohorts.loader import load_cohort
from dataset_script.cohorts.matching import AGE_STAGES

KANG = {"dataset_id": "kang2018_muscat"}
ONEK1K = {"dataset_id": "onek1k_scdesignpop"}


def _meta(cohort) -> pd.DataFrame:
    return cohort.cells.select_columns(["cell_id", "donor_id", "dataset_id", "cell_type", "sex", "condition",
                                        "development_stage_category"]).to_pandas()


def _assert_disjoint_donors(cohort):
    meta = _meta(cohort)
    keys = (meta["dataset_id"] + "/" + meta["donor_id"]).to_numpy()
    sets = {k: set(keys[v]) for k, v in cohort.splits.items()}
    assert not sets["train"] & sets["test"] and not sets["validation"] & sets["test"]
    return sets


def test_kang_condition_matched_by_cell_type(built):
    with pytest.raises(ValueError, match="needs at least 3.*validation_by='meta-cell'"):
        load_cohort(built[0], conditions=KANG, task="condition", match=True)
    c = load_cohort(built[0], conditions=KANG, task="condition", match=True, validation_by="meta-cell", seed=0)
    assert c.label_names == ["control", "stim"]  # control first for a matched task
    meta, rows = _meta(c), c.reports["matching_rows"]
    assert len(rows) == len(meta)
    for s, grp in meta.groupby(rows["stratum"].to_numpy()):
        roles = rows.loc[grp.index, "role"]
        assert grp["cell_type"].nunique() == 1  # controls share the case's cell type
        assert (roles == "case").sum() == (roles == "control").sum()  # 1:1 per stratum
        assert set(grp.loc[roles == "case", "condition"]) == {"stim"}
        assert set(grp.loc[roles == "control", "condition"]) == {"control"}
    sets = _assert_disjoint_donors(c)
    assert len(sets["test"]) == 1 and c.split.validation_level == "meta-cell"
    for name in ("train", "validation", "test"):
        assert set(c.labels[c.splits[name]]) == {0, 1}
    summary = c.reports["matching"]
    assert summary["n_cases_kept"] + sum(summary["cases_lost"].values()) == summary["n_cases_in"]


def test_onek1k_sex_matched_by_cell_type_and_age_group(built):
    c = load_cohort(built[0], conditions=ONEK1K, task="sex", match={"tolerance": 1}, seed=0)
    assert c.label_names == ["male", "female"]
    meta, rows = _meta(c), c.reports["matching_rows"]
    stage = meta["development_stage_category"].map({s: i for i, s in enumerate(AGE_STAGES)})
    for s, grp in meta.groupby(rows["stratum"].to_numpy()):
        case = rows.loc[grp.index, "role"] == "case"
        assert grp["cell_type"].nunique() == 1
        assert grp.loc[case, "development_stage_category"].nunique() == 1
        delta = (stage[grp.index[~case.to_numpy()]] - stage[grp.index[case.to_numpy()][0]]).abs()
        assert (delta <= 1).all()
        assert np.array_equal(delta.to_numpy(), rows.loc[grp.index[~case.to_numpy()], "stage_offset"].to_numpy())
    sets = _assert_disjoint_donors(c)
    assert not sets["train"] & sets["validation"] and c.split.validation_level == "donor"
    assert len(sets["train"] | sets["validation"] | sets["test"]) == 40
    for name in ("train", "validation", "test"):
        assert set(c.labels[c.splits[name]]) == {0, 1}
    n = len(meta)
    assert abs(len(c.splits["test"]) / n - 0.2) < 0.08 and abs(len(c.splits["validation"]) / n - 0.15) < 0.08


def test_cell_type_sampling_quotas_on_real_data(built):
    full = load_cohort(built[0], conditions=ONEK1K, task="cell_type", seed=0)
    c = load_cohort(built[0], conditions=ONEK1K, task="cell_type", sample_size=120, seed=0)
    counts = pd.Series(c.labels).value_counts()
    assert len(c.labels) == 120 and counts.min() >= 10 and len(counts) == len(full.label_names)
    with pytest.raises(ValueError, match="not both"):
        load_cohort(built[0], conditions=ONEK1K, task="cell_type", sample_size=10, sample_ratio=0.1)
    with pytest.raises(ValueError, match="Unknown task 'organ'"):
        load_cohort(built[0], conditions=ONEK1K, task="organ")


def _cache_listing(cohort) -> set[str]:
    dirs = {Path(f["filename"]).parent for f in cohort.cells.cache_files}
    return {str(p) for d in dirs for p in d.iterdir()}


def test_repeated_query_is_a_cache_hit_and_seeded(built):
    kwargs = dict(conditions=ONEK1K, task="cell_type", sample_ratio=0.5, seed=3)
    first = load_cohort(built[0], **kwargs)
    assert first.cells.cache_files, "the cohort should live in datasets cache files"
    before = _cache_listing(first)
    mtimes = {f["filename"]: os.path.getmtime(f["filename"]) for f in first.cells.cache_files}
    second = load_cohort(built[0], **kwargs)
    assert _cache_listing(second) == before  # nothing new was computed and written
    assert [f["filename"] for f in second.cells.cache_files] == [f["filename"] for f in first.cells.cache_files]
    assert all(os.path.getmtime(f) == t for f, t in mtimes.items())
    assert second.cells._fingerprint == first.cells._fingerprint
    assert np.array_equal(first.labels, second.labels)
    assert all(np.array_equal(first.splits[k], second.splits[k]) for k in first.splits)
    other = load_cohort(built[0], **(kwargs | {"seed": 4}))
    assert not np.array_equal(np.asarray(other.cells["cell_id"]), np.asarray(first.cells["cell_id"]))


def test_to_anndata_matches_tensors(built, tmp_path):
    import anndata as ad

    c = load_cohort(built[0], conditions=KANG, task="condition", validation_by="meta-cell", seed=0)
    a = c.to_anndata()
    x, mask, y = c.tensors()
    assert a.shape == tuple(x.shape)
    np.testing.assert_allclose(a.X.toarray(), x.numpy(), rtol=1e-6)
    assert np.array_equal(a.obs["label"].to_numpy(), y.numpy())
    assert a.obs["split"].value_counts().to_dict() == {k: len(v) for k, v in c.splits.items()}
    assert a.uns["omnicelltosg"]["label_names"] == ["control", "stim"]
    assert a.var["measured"].sum() == len(c.measured["kang2018_muscat"])
    raw = np.asarray(c.cells[0]["expression_values"])
    assert np.isclose(a.layers["counts"][0].sum(), raw.sum())
    a.write_h5ad(tmp_path / "kang.h5ad")
    back = ad.read_h5ad(tmp_path / "kang.h5ad")
    assert back.uns["omnicelltosg"]["validation_level"] == "meta-cell"
    test_only = c.to_anndata("test")
    assert test_only.n_obs == len(c.splits["test"]) and set(test_only.obs["split"]) == {"test"}


def test_split_datasets_are_formatted(built):
    c = load_cohort(built[0], conditions=KANG, task="condition", validation_by="meta-cell", seed=0)
    dd = c.to_dataset_dict(format="torch")
    assert set(dd) == {"train", "validation", "test"}
    assert int(dd["test"][0]["label"]) == int(c.labels[c.splits["test"][0]])
    assert dd["train"].format["type"] == "torch"
    assert c.edge_index.shape[1] == c.internal_edge_index.shape[1] + c.ppi_edge_index.shape[1]
    assert c.entity_priors()["name"].shape[0] == c.graph().num_nodes


# ---------------------------------------------------------------- ComBat-seq


def _blood_rows(built, n_per_dataset=12):
    import datasets

    cells = datasets.load_dataset(str(built[0]), "blood", split="train")
    meta = cells.select_columns(["dataset_id", "tissue_general", "values_are_counts", "condition"]).to_pandas()
    pick = np.concatenate([np.flatnonzero(meta["dataset_id"] == d)[:n_per_dataset] for d in sorted(set(meta["dataset_id"]))])
    part = cells.select(pick)
    return ([np.asarray(v) for v in part["expression_indices"]], [np.asarray(v) for v in part["expression_values"]],
            meta.iloc[pick].reset_index(drop=True))


def _dense(indices, values, genes):
    """Independent densification: genes × rows via a pandas pivot."""
    long = pd.DataFrame({"row": np.repeat(np.arange(len(indices)), [len(i) for i in indices]),
                         "gene": np.concatenate(indices), "value": np.concatenate(values)})
    long = long[long["gene"].isin(genes)]
    return long.pivot(index="gene", columns="row", values="value").reindex(index=genes, columns=range(len(indices))
                                                                              ).fillna(0.0).to_numpy()


def test_combat_seq_matches_inmoose_on_real_rows(built):
    from inmoose.pycombat import pycombat_seq

    from dataset_script.cohorts.batch_correction import combat_seq_rows
    from dataset_script.cohorts.loader import gene_panels

    idx, val, meta = _blood_rows(built)
    panels = gene_panels(built[0])
    genes = np.intersect1d(panels["kang2018_muscat"], panels["onek1k_scdesignpop"])
    batches = meta["dataset_id"].to_numpy()
    covariate = np.array(["a", "b"] * (len(meta) // 2))  # estimable: both levels in both batches
    new_i, new_v, report = combat_seq_rows(idx, val, meta, panels, covariate=covariate, split="train")
    assert report[0]["status"] == "corrected" and report[0]["covariate"] == "kept"
    assert report[0]["n_genes"] == len(genes) and report[0]["batches"] == ["kang2018_muscat", "onek1k_scdesignpop"]
    direct = pycombat_seq(_dense(idx, val, genes), batches,
                          covar_mod=pd.get_dummies(pd.Series(covariate), drop_first=True).to_numpy(float))
    np.testing.assert_allclose(_dense(new_i, new_v, genes), direct, rtol=1e-5, atol=1e-3)
    # genes outside the common panel are untouched
    for r in range(len(idx)):
        outside = ~np.isin(idx[r], genes)
        kept = dict(zip(new_i[r], new_v[r]))
        assert all(kept[g] == v for g, v in zip(idx[r][outside], val[r][outside]))
    # a covariate confounded with the batch is dropped (reported) → same as inmoose without it
    conf_i, conf_v, conf_rep = combat_seq_rows(idx, val, meta, panels, covariate=batches, split="train")
    assert conf_rep[0]["covariate"].startswith("confounded")
    np.testing.assert_allclose(_dense(conf_i, conf_v, genes), pycombat_seq(_dense(idx, val, genes), batches),
                               rtol=1e-5, atol=1e-3)
    # rows that are not counts are left as they are, and reported
    meta2 = meta.assign(values_are_counts=[False] + [True] * (len(meta) - 1))
    i2, v2, rep2 = combat_seq_rows(idx, val, meta2, panels, split="x")
    assert rep2[0]["n_not_counts_left_uncorrected"] == 1
    assert np.array_equal(i2[0], idx[0]) and np.array_equal(v2[0], val[0])


def test_cohort_combat_seq_is_fitted_per_split_without_test_labels(built):
    from dataset_script.cohorts.batch_correction import combat_seq_rows
    from dataset_script.cohorts.loader import gene_panels

    kwargs = dict(conditions={"tissue_general": "blood"}, label_column="cell_type", sample_size=90, seed=0)
    plain = load_cohort(built[0], **kwargs)
    corr = load_cohort(built[0], correction="combat_seq", **kwargs)
    assert np.array_equal(np.asarray(plain.cells["cell_id"]), np.asarray(corr.cells["cell_id"]))
    groups = {g["split"]: g for g in corr.reports["correction"]["groups"]}
    assert groups["train"]["status"] == "corrected" and "covariate" in groups["train"]
    for name in ("validation", "test"):
        assert groups[name]["status"].startswith("skipped") or groups[name]["covariate"].startswith("none")
    # the test rows' corrected values come from the test rows alone (no training data, no labels)
    test = plain.splits["test"]
    part = plain.cells.select(test)
    meta = part.select_columns(["dataset_id", "tissue_general", "values_are_counts"]).to_pandas()
    exp_i, exp_v, _ = combat_seq_rows([np.asarray(v) for v in part["expression_indices"]],
                                      [np.asarray(v) for v in part["expression_values"]], meta, gene_panels(built[0]),
                                      split="test")
    got = corr.cells.select(test)
    for r in range(len(test)):
        np.testing.assert_array_equal(np.asarray(got[r]["expression_indices"]), exp_i[r])
        np.testing.assert_allclose(np.asarray(got[r]["expression_values"]), exp_v[r], rtol=1e-6)
    # normalisation happens after correction
    row = got[0]
    v = np.asarray(row["expression_values"], dtype=np.float64)
    np.testing.assert_allclose(np.asarray(row["expression_log"]), np.log1p(v / v.sum() * 1e4), rtol=1e-5)

# ---------------------------------------------------------------- facade


def test_celltosg_dataloader_facade_train_and_output_dir(built, tmp_path):
    from dataset_script.cohorts.original_api import CellTOSGDataLoader

    out = tmp_path / "export"
    loader = CellTOSGDataLoader(root=built[0], conditions={"dataset_id": "onek1k_scdesignpop"}, task="gender",
                                label_column="sex_normalized", stratified_balancing=True, extract_mode="train",
                                shuffle=True, random_state=7, output_dir=str(out))
    info = built[1]
    n_nodes = info["n_transcripts"] + info["n_proteins"]
    assert loader.label_mapping == {"male": 0, "female": 1}
    assert set(loader.data) == {"train", "validation", "test"}
    for name, x in loader.data.items():
        assert x.shape == (len(loader.labels[name]), n_nodes) and x.dtype == np.float32
        assert not x[:, info["n_transcripts"]:].any()  # protein columns are zero, as in the original
        assert (loader.metadata[name]["split"] == name).all()
        assert np.array_equal(np.load(out / name / f"labels_{name}.npy"), loader.labels[name])
        np.testing.assert_array_equal(np.load(out / name / "expression_matrix.npy"), x)
        assert len(pd.read_csv(out / name / "labels.csv")) == len(x)
    mapping = pd.read_csv(out / "label_mapping_sex.csv")
    assert dict(zip(mapping["label_name"], mapping["label_index"])) == {"male": 0, "female": 1}
    assert len(pd.read_csv(out / "labels_full_sex.csv")) == sum(len(v) for v in loader.labels.values())
    assert loader.edge_index.shape == (2, info["n_internal_edges"] + info["n_ppi_edges"])
    assert loader.x_name_emb.shape == (n_nodes, 384) and loader.x_desc_emb.shape == (n_nodes, 384)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # the labels follow the shuffled rows
    y = loader.metadata["test"]["sex"].map(loader.label_mapping).to_numpy()
    assert np.array_equal(y, loader.labels["test"])


def test_celltosg_dataloader_facade_inference_and_aliases(built):
    from dataset_script.cohorts.original_api import CellTOSGDataLoader

    loader = CellTOSGDataLoader(root=built[0], conditions={"dataset_id": "kang2018_muscat",
                                                           "CMT_name": ["B cell", "CD14-positive monocyte"]},
                                task="cell_type", extract_mode="inference", train_text=True, train_bio=True)
    assert isinstance(loader.data, np.ndarray) and loader.labels is loader.metadata
    assert set(loader.metadata["cell_type"]) == {"B cell", "CD14-positive monocyte"}
    assert {"name"} <= set(loader.s_name.columns) and loader.s_bio["sequence"].str.len().max() > 0
    with pytest.raises(ValueError, match="task='pretrain' has no labels"):
        CellTOSGDataLoader(root=built[0], conditions={}, task="pretrain")


def test_load_cohort_argument_errors(built):
    with pytest.raises(KeyError, match="label_column 'organ' is not a metadata field.*'cell_type'"):
        load_cohort(built[0], conditions=KANG, label_column="organ")
    with pytest.raises(ValueError, match="correction must be None or 'combat_seq'"):
        load_cohort(built[0], conditions=KANG, task="condition", correction="harmony")
    with pytest.raises(ValueError, match="split_by must be"):
        load_cohort(built[0], conditions=KANG, task="condition", split_by="study")
    with pytest.raises(ValueError, match="single value"):
        load_cohort(built[0], conditions=ONEK1K, label_column="disease")
    with pytest.raises(ValueError, match="Matching needs balance_field and control_value"):
        load_cohort(built[0], conditions=ONEK1K, label_column="cell_type", match=True)
    with pytest.raises(ValueError, match=r"No control rows.*'stim'"):
        load_cohort(built[0], conditions=KANG | {"condition": "stim"}, task="condition", match=True,
                    validation_by="meta-cell")


def test_cached_transforms_follow_code_changes(tmp_path, monkeypatch):
    """datasets pickles an importable function by reference, so its fingerprint ignores code edits;
    ours includes the defining file's hash: editing the function must give a new fingerprint."""
    import importlib
    import sys

    from dataset_script.cohorts import loader

    mod = tmp_path / "norm_mod.py"
    mod.write_text("def norm(batch):\n    return batch\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = importlib.import_module("norm_mod").norm
    before = loader._code_fingerprint("abc", fn)
    assert loader._code_fingerprint("abc", fn) == before  # deterministic
    mod.write_text("def norm(batch):\n    return {k: v for k, v in batch.items()}\n")
    loader._module_version.cache_clear()
    assert loader._code_fingerprint("abc", fn) != before
    sys.modules.pop("norm_mod", None)


def test_loading_a_cohort_does_not_import_the_model_stack():
    """The loader imports TOSGGraph only inside load_graph: a cohort alone must not pull in
    modeling_celltosg (and with it transformers / torch_geometric / numba)."""
    import subprocess
    import sys

    code = ("import dataset_script.cohorts.loader, sys; "
            "heavy = sorted(m for m in sys.modules if m.startswith(('modeling_celltosg', 'torch_geometric', 'numba'))); "
            "assert not heavy, heavy[:5]")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
