"""Ingest of every input format (10x, dense CSV either way round, h5ad, CELLxGENE schema), the value
scale and gene-mapping reports, and metadata harmonisation (fuzzy matching, disease categories,
development stages) on real data."""

from __future__ import annotations

import gzip
import math
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
import yaml

from dataset_script.build import harmonize
from dataset_script.build.development_stages import (
    CARNEGIE_DAYS,
    parse_development_stage,
)
from dataset_script.build.ingest import read_dataset
from dataset_script.build.knowledge import resolve_gene_ids
from dataset_script.build.readers import detect_format, read_matrix

from .conftest import KANG, RECIPE


def _kang_entry(path, **extra):
    entry = next(d for d in yaml.safe_load(RECIPE.read_text())["datasets"] if d["dataset_id"].startswith("kang"))
    return {**entry, "path": str(path), **extra}


def _write_10x(folder, adata, *, features_name="features.tsv.gz", prefix=""):
    folder.mkdir(parents=True)
    with gzip.open(folder / f"{prefix}matrix.mtx.gz", "wb") as fh:
        scipy.io.mmwrite(fh, sp.csr_matrix(adata.X).T.tocoo().astype(np.int64))  # genes × cells on disk
    genes = pd.DataFrame({"id": adata.var["ENSEMBL"].to_numpy(), "symbol": adata.var_names,
                          "type": "Gene Expression"})
    cols = ["id", "symbol", "type"] if features_name.startswith("features") else ["id", "symbol"]
    genes[cols].to_csv(folder / f"{prefix}{features_name}", sep="\t", header=False, index=False)
    pd.Series(adata.obs_names).to_csv(folder / f"{prefix}barcodes.tsv.gz", header=False, index=False)


@pytest.mark.parametrize("layout", ["cellranger3", "cellranger2_geo_prefix"])
def test_10x_folder_equals_the_h5ad(tmp_path, data_dir, kang, genes, layout):
    folder = tmp_path / "tenx"
    if layout == "cellranger3":
        _write_10x(folder, kang)
    else:  # older layout (genes.tsv, 2 columns) with a GEO sample prefix
        _write_10x(folder, kang, features_name="genes.tsv", prefix="GSM0000_")
    assert detect_format(folder) == "10x"
    kang.obs.to_csv(tmp_path / "obs.csv")
    entry = _kang_entry(folder.relative_to(tmp_path), obs_table="obs.csv")
    # data_dir = tmp_path for the inputs; the ontologies come from the real folder via a symlink
    (tmp_path / "ontology").symlink_to(data_dir / "ontology")
    a = read_dataset(entry, tmp_path, genes)
    ref = read_dataset(_kang_entry(KANG), data_dir, genes)
    assert a.uns["omnicelltosg"]["input"]["format"] == "10x" and a.uns["omnicelltosg"]["value_transform"] == "counts"
    np.testing.assert_array_equal(a.X.toarray(), ref.X.toarray())
    assert (a.var["entrez_id"].to_numpy() == ref.var["entrez_id"].to_numpy()).all()
    pd.testing.assert_frame_equal(a.obs.reset_index(drop=True), ref.obs.reset_index(drop=True))


@pytest.mark.parametrize("orientation", ["genes_x_cells", "cells_x_genes"])
def test_dense_csv_orientation_is_detected_and_stated(tmp_path, data_dir, genes, orientation):
    tirosh = ad.read_h5ad(data_dir / "scrna" / "oligodendroglioma_tirosh2016_infercnvpy.h5ad")
    sub = tirosh[:30, :400]
    X = sub.X.toarray() if sp.issparse(sub.X) else np.asarray(sub.X)
    frame = pd.DataFrame(X, index=sub.obs_names, columns=sub.var_names)
    if orientation == "genes_x_cells":
        frame = frame.T  # the usual GEO layout
    path = tmp_path / "GSE70630_subset.csv.gz"
    frame.to_csv(path)
    a = read_matrix(path, genes)
    assert a.uns["omnicelltosg_input"]["orientation"] == orientation
    assert list(a.obs_names) == list(sub.obs_names) and list(a.var_names) == list(sub.var_names)
    np.testing.assert_allclose(a.X.toarray(), X, rtol=1e-6)
    with pytest.raises(ValueError, match="orientation 'sideways' not supported"):
        read_matrix(path, genes, orientation="sideways")


def test_cellxgene_schema_file_is_recognised_and_validated(tmp_path, data_dir, kang, kang_cellxgene, genes):
    """A CELLxGENE-schema file written from the real Kang data (conftest ``cellxgene_schema_kang``: Ensembl
    var names, log-normalised X, raw counts in .raw, ontology-ID columns); the IDs are used as they are,
    not re-matched."""
    norm = kang_cellxgene
    (tmp_path / "ontology").symlink_to(data_dir / "ontology")
    norm.write_h5ad(tmp_path / "cxg.h5ad")
    a = read_dataset({"dataset_id": "kang_cxg", "path": "cxg.h5ad", "columns": {"condition": "stim"}}, tmp_path, genes)
    info = a.uns["omnicelltosg"]
    assert info["schema"] == "cellxgene" and info["matrix"] == "raw" and info["value_transform"] == "counts"
    assert info["gene_mapping"]["id_type"] == "ensembl" and info["gene_mapping"]["unmapped_fraction"] < 0.05
    np.testing.assert_array_equal(a.X.toarray(), sp.csr_matrix(kang.X).toarray())
    assert (a.obs["cell_type_ontology_id"].to_numpy() == norm.obs["cell_type_ontology_term_id"].to_numpy()).all()
    assert set(a.obs["cell_type"]) >= {"B cell", "CD14-positive monocyte"}
    assert set(a.obs["disease"]) == {"systemic lupus erythematosus"} and set(a.obs["tissue_general"]) == {"blood"}
    assert set(a.obs["age_years"]) == {40.0} and set(a.obs["development_stage_category"]) == {"adult"}
    assert set(a.obs["assay"]) == {"10x 3' v1"} and set(a.obs["condition"]) == {"ctrl", "stim"}
    bad = norm.copy()
    bad.obs["cell_type_ontology_term_id"] = bad.obs["cell_type_ontology_term_id"].replace("CL:0000236", "CL:9999999")
    bad.write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(ValueError, match=r"cell_type_ontology_term_id.*CL:9999999"):
        read_dataset({"dataset_id": "bad", "path": "bad.h5ad"}, tmp_path, genes)


def test_gene_mapping_report_ambiguous_versions_and_warning(tmp_path, data_dir, genes):
    table = pd.read_csv(data_dir / "knowledge" / "orgHsEgDb_3.16_gene_table.tsv.gz", sep="\t", dtype=str,
                        keep_default_na=False)
    owners = table.assign(alias=table["aliases"].str.upper().str.split(";")).explode("alias")
    counts = owners[owners["alias"] != ""].groupby("alias")["entrez_id"].nunique()
    shared = next(a for a in counts[counts > 1].index if a not in genes.by_symbol)  # an alias of >1 genes
    ifit1 = table.loc[table["symbol"] == "IFIT1"].iloc[0]
    ids = ["ISG15", shared, "NOT_A_GENE_1"]
    entrez, report, per_gene = resolve_gene_ids(ids, "symbol", genes, return_table=True)
    assert entrez[0] == table.loc[table["symbol"] == "ISG15", "entrez_id"].item() and entrez[1] is None
    assert (report["by_symbol"], report["ambiguous"], report["unmapped"]) == (1, 1, 1)
    assert per_gene.loc[1, "how"] == "ambiguous" and len(per_gene.loc[1, "candidates"].split(";")) == counts[shared]
    ens = ifit1["ensembl_gene"].split(";")[0]
    got, rep = resolve_gene_ids([ens + ".7", ens], "auto", genes)  # versioned Ensembl ID
    assert got == [ifit1["entrez_id"]] * 2 and rep["id_type"] == "ensembl"
    # the celltypist sample has many non-coding genes: the build warns and the report says how many
    adata = ad.read_h5ad(data_dir / "scrna" / "celltypist_sample_559cells_rawcounts.h5ad")
    adata.obs["label"] = "leukocyte"
    adata.write_h5ad(tmp_path / "sample.h5ad")
    (tmp_path / "ontology").symlink_to(data_dir / "ontology")
    entry = {"dataset_id": "celltypist_sample", "path": "sample.h5ad", "columns": {"cell_type": "label"},
             "constants": {"tissue": "blood"}}
    expected = 1 - np.mean([e is not None for e in resolve_gene_ids(list(adata.var_names), "symbol", genes)[0]])
    with pytest.warns(UserWarning, match="did not resolve"):
        out = read_dataset(entry, tmp_path, genes)
    assert expected > 0.2
    assert out.uns["omnicelltosg"]["gene_mapping"]["unmapped_fraction"] == pytest.approx(expected, abs=1e-4)
    per_gene = out.uns["omnicelltosg_tables"]["gene_mapping"]
    assert len(per_gene) == adata.n_vars and (per_gene["how"] != "unmapped").mean() == pytest.approx(
        1 - out.uns["omnicelltosg"]["gene_mapping"]["unmapped"] / adata.n_vars)


def test_fuzzy_cell_type_matching_keeps_score_and_flags(data_dir):
    from rapidfuzz import fuzz, utils

    cl = harmonize.ontology(data_dir, "CL")
    m = harmonize.match_term(cl, "CD14-positive monocytes", field="cell_type")
    assert m.method == "fuzzy" and m.ontology_id == "CL:0001054" and m.score >= harmonize.FUZZY_ACCEPT
    # the kept score is rapidfuzz's token-sort ratio against the best of the term's label and synonyms
    names = [cl.labels[m.ontology_id], *cl.synonyms.get(m.ontology_id, ())]
    best = max(fuzz.token_sort_ratio(utils.default_process("CD14-positive monocytes"), utils.default_process(n))
               for n in names)
    assert m.score == pytest.approx(round(best, 1))
    assert m.needs_review == (m.score < harmonize.FUZZY_REVIEW)
    exact = harmonize.match_term(cl, "b cell", field="cell_type")
    assert (exact.method, exact.ontology_id, exact.score, exact.needs_review) == ("exact label", "CL:0000236", 100.0, False)
    junk = harmonize.match_term(cl, "cluster 7 (unclear)", field="cell_type")
    assert junk.ontology_id == "" and junk.label == "unknown" and junk.needs_review and junk.score < harmonize.FUZZY_ACCEPT
    over = harmonize.match_term(cl, "cluster 7 (unclear)", field="cell_type", overrides={"cluster 7 (unclear)": "T cell"})
    assert (over.method, over.label) == ("override", "T cell")
    with pytest.raises(ValueError, match="not a label or exact synonym in CL"):
        harmonize.match_term(cl, "x", field="cell_type", overrides={"x": "no such cell"})


def test_override_table_wins_and_unmatched_labels_are_flagged(tmp_path, data_dir, genes):
    entry = _kang_entry(KANG)
    entry["cell_type_map"] = {k: v for k, v in entry["cell_type_map"].items() if k != "CD4 T cells"}
    (tmp_path / "ontology").symlink_to(data_dir / "ontology")
    (tmp_path / "scrna").symlink_to(data_dir / "scrna")
    pd.DataFrame({"field": ["cell_type", "development_stage"], "original": ["B cells", "unknown"],
                  "mapped": ["naive B cell", "fourth decade"]}).to_csv(tmp_path / "overrides.tsv", sep="\t", index=False)
    with pytest.warns(UserWarning, match=r"\['CD4 T cells'\] match no Cell Ontology term well enough"):
        a = read_dataset({**entry, "overrides_file": "overrides.tsv"}, tmp_path, genes)
    table = a.uns["omnicelltosg_tables"]["harmonisation"].set_index("original")
    assert table.loc["B cells", "label"] == "naive B cell" and table.loc["B cells", "method"] == "override"
    stage = a.uns["omnicelltosg_tables"]["development_stage"].set_index("original").loc["unknown"]
    assert stage["rule"].startswith("override") and stage["age_years"] == 35.0  # the table's value, not "unknown"
    assert set(a.obs["age_years"]) == {35.0} and set(a.obs["development_stage_category"]) == {"adult"}
    # no map entry and no close Cell Ontology name: kept for review with its best score, not accepted
    cd4 = table.loc["CD4 T cells"]
    assert cd4["method"].startswith("unmatched") and cd4["needs_review"] and cd4["score"] < harmonize.FUZZY_ACCEPT
    rows = a.obs[a.obs["cell_type_original"] == "CD4 T cells"]
    assert len(rows) > 0 and set(rows["cell_type"]) == {"unknown"} and set(rows["cell_type_ontology_id"]) == {"unknown"}


def test_disease_categories_follow_mondo_ancestors(data_dir):
    matches, table = harmonize.resolve_diseases(
        data_dir, ["relapsing-remitting multiple sclerosis", "oligodendroglioma", "healthy", "systemic lupus erythematosus"])
    rows = table.set_index("original")
    assert rows.loc["relapsing-remitting multiple sclerosis", "disease_category"] == "multiple sclerosis"
    assert rows.loc["oligodendroglioma", "disease_category"] == "glioma"
    assert rows.loc["healthy", "disease_ontology_id"] == harmonize.NORMAL_ID
    assert rows.loc["systemic lupus erythematosus", "disease_category"] == "systemic lupus erythematosus"
    mondo = harmonize.ontology(data_dir, "MONDO")
    ms = mondo.resolve("multiple sclerosis", what="d")[0]
    assert ms in mondo.ancestors[matches["relapsing-remitting multiple sclerosis"].ontology_id]


@pytest.mark.parametrize("text, years, category, phase", [
    ("45", 45, "middle aged", "postnatal"),
    ("45-year-old human stage", 45, "middle aged", "postnatal"),
    ("6 months", 0.5, "infant", "postnatal"),
    ("10 days", 10 / 365.25, "newborn", "postnatal"),
    ("12 pcw", (12 * 7 - 266) / 365.25, "prenatal", "prenatal"),
    ("gestational week 14", (12 * 7 - 266) / 365.25, "prenatal", "prenatal"),
    ("Carnegie stage 16", (37 - 266) / 365.25, "prenatal", "prenatal"),
    ("fifth decade stage", 45, "middle aged", "postnatal"),
    ("20-29 year-old", 24.5, "young adult", "postnatal"),
    ("80 year-old and over stage", 80, "80 and over", "postnatal"),
    ("newborn stage (0-28 days)", 14 / 365.25, "newborn", "postnatal"),
    ("adolescent stage", math.nan, "adolescent", "postnatal"),
    ("fetal stage", math.nan, "prenatal", "prenatal"),
    ("unknown", math.nan, "unknown", "unknown"),
])
def test_development_stage_parsing_hand_checked(text, years, category, phase):
    s = parse_development_stage(text)
    assert (s.category, s.birth_phase) == (category, phase)
    assert (math.isnan(s.age_years) and math.isnan(years)) or s.age_years == pytest.approx(years)


def test_every_hsapdv_term_parses_and_prenatal_is_never_newborn(data_dir):
    hsapdv = harmonize.ontology(data_dir, "HsapDv")
    parsed = {t: parse_development_stage(t, hsapdv.labels) for t in hsapdv.labels}
    for term, label in hsapdv.labels.items():
        s = parsed[term]
        single = re.fullmatch(r"(\d+)-year-old stage", label)
        if single:
            assert s.age_years == float(single[1]), label
        span = re.fullmatch(r"(\d+)-(\d+) year-old stage", label)
        if span:
            assert s.age_years == (float(span[1]) + float(span[2])) / 2, label
        if "post-fertilization" in label or label.startswith("Carnegie stage"):
            assert (s.category, s.birth_phase) == ("prenatal", "prenatal"), label
            assert s.age_years < 0
    unparsed = sorted(hsapdv.labels[t] for t, s in parsed.items() if s.rule.endswith("unparsed"))
    assert len(unparsed) <= 5, unparsed  # only umbrella terms ("life cycle", "pediatric stage" …)
    assert max(CARNEGIE_DAYS) == 23


def test_celltypist_annotation_trained_here_recovers_author_labels(tmp_path, data_dir, genes):
    """CellTypist trained on the labelled seuratTools Kang file (recipe build/unlabelled.yaml),
    applied to the muscat Kang file with its author labels hidden."""
    from dataset_script.build.annotate import annotate
    from dataset_script.build.ingest import model_for_entry
    from dataset_script.build.recipe import load_recipe

    reference = load_recipe(RECIPE.parent / "unlabelled.yaml").datasets[1].cell_type_annotation
    kang_entry = _kang_entry(KANG)
    labelled = read_dataset(kang_entry, data_dir, genes)
    model, source = model_for_entry(reference, data_dir, genes, tmp_path, list(labelled.var_names))
    assert source == "celltypist:trained on kang2018_seurattools" and model.exists()
    info = yaml.safe_load(model.with_suffix(".json").read_text())
    assert info["n_genes"] <= labelled.n_vars and str(info["alpha"]) in info["validation_accuracy"]
    calls = annotate(labelled, model, min_confidence=reference.min_confidence)
    coarse = {"naive thymus-derived CD4-positive, alpha-beta T cell": "CD4-positive, alpha-beta T cell",
              "CD4-positive, alpha-beta memory T cell": "CD4-positive, alpha-beta T cell"}
    predicted = calls["cell_type"].map(lambda c: coarse.get(c, c)).to_numpy()
    accuracy = np.mean(predicted == labelled.obs["cell_type"].to_numpy())
    majority = labelled.obs["cell_type"].value_counts(normalize=True).iloc[0]
    assert accuracy > 0.75 and accuracy > majority + 0.4  # measured 0.857 (majority class 0.26)
    assert reference.min_confidence == 0.5  # the recipe default
    assert ((calls["cell_type_confidence"] < 0.5) == calls["cell_type_low_confidence"]).all()
    assert calls["cell_type_confidence"].between(0, 1).all()
    confident = ~calls["cell_type_low_confidence"].to_numpy()
    assert np.mean(predicted[confident] == labelled.obs["cell_type"].to_numpy()[confident]) >= accuracy
    # the same model through a recipe entry without cell types: calls are recorded with their source
    entry = {k: v for k, v in kang_entry.items() if k != "cell_type_map"}
    entry["columns"] = {k: v for k, v in entry["columns"].items() if k != "cell_type"}
    entry["cell_type_annotation"] = reference
    unlabelled = read_dataset(entry, data_dir, genes, cache_dir=tmp_path)
    assert set(unlabelled.obs["cell_type_source"]) == {source}
    np.testing.assert_allclose(unlabelled.obs["cell_type_confidence"].to_numpy(), calls["cell_type_confidence"].to_numpy())
    assert unlabelled.obs["cell_type_ontology_id"].str.startswith("CL:").all()  # model labels are CL labels


@pytest.mark.parametrize("defect, message", [
    ("duplicate_genes", r"gene name\(s\) appear more than once, e.g. \['ISG15'\]"),
    ("empty", r"expression matrix is empty \(0 cells"),
    ("negative", r"negative values .* 'use_raw: true'"),
    ("id_type", r"gene_id_type: 'entrez' not supported; accepted: \['symbol', 'ensembl', 'auto'\]"),
])
def test_bad_inputs_are_clear_errors(tmp_path, data_dir, kang, genes, defect, message):
    bad = kang.copy()
    entry = _kang_entry("bad.h5ad")
    if defect == "duplicate_genes":
        names = list(bad.var_names)
        names[names.index("ISG15") + 1] = "ISG15"
        bad.var_names = names
    elif defect == "empty":
        bad = bad[:0].copy()
        entry["columns"] = {}
        entry["constants"] = {**entry["constants"], "condition": "control"}
        entry.pop("values", None)
    elif defect == "negative":
        bad.X = bad.X.astype(np.float32)
        bad.X[0, 0] = -1.0
    else:
        entry["gene_id_type"] = "entrez"
    (tmp_path / "ontology").symlink_to(data_dir / "ontology")
    bad.write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(ValueError, match=message):
        read_dataset(entry, tmp_path, genes)


def test_corpus_recipe_covers_every_real_file_and_each_ingests(data_dir, genes, tmp_path):
    from dataset_script.build.recipe import load_recipe
    from dataset_script.schema import OBS_COLUMNS

    recipe = load_recipe(RECIPE.parent / "corpus.yaml")
    paths = [d.path for d in recipe.datasets]
    on_disk = sorted(f"scrna/{p.name}" for p in (data_dir / "scrna").glob("*.h5ad"))
    assert sorted(paths) == on_disk  # every file, once
    for entry in recipe.datasets:
        a = read_dataset(entry, data_dir, genes, cache_dir=tmp_path)
        assert list(a.obs.columns) == list(OBS_COLUMNS) and a.n_obs > 0
        for col in ("tissue", "disease", "condition", "cell_type"):
            assert a.obs[col].astype(str).str.len().gt(0).all(), (entry.dataset_id, col)
        assert a.uns["omnicelltosg"]["value_transform"] in ("counts", "log", "linear")


def _write_release(folder, kang, real_index):
    """A small dataset in the original OmniCellTOSG release layout, written from the real Kang data."""
    genes = [g for g in kang.var_names if g in real_index.index]
    n_cols = real_index.loc[genes].str.count(";").to_numpy() + 1  # the release's transcripts per gene
    starts = np.concatenate([[0], np.cumsum(n_cols)[:-1]])
    counts = kang[:, genes].X.toarray().astype(np.float32)
    dense = np.zeros((kang.n_obs, int(n_cols.sum())), dtype=np.float32)
    for j, (s, k) in enumerate(zip(starts, n_cols)):  # split each gene's counts over its transcript columns
        first = np.floor(counts[:, j] / k)
        dense[:, s] = counts[:, j] - first * (k - 1)
        dense[:, s + 1:s + k] = first[:, None]
    (folder / "expression_matrix").mkdir(parents=True)
    rng = np.random.default_rng(0)
    meta = kang.obs.copy()
    meta["matrix_file_path"], meta["matrix_row_idx"] = "", -1
    for k, rows in enumerate(np.array_split(np.arange(kang.n_obs), 2)):
        perm = rng.permutation(len(rows))  # rows stored out of order: the mapping columns must be used
        np.save(folder / "expression_matrix" / f"kang_part_{k}.npy", dense[rows][perm])
        meta.iloc[rows, meta.columns.get_loc("matrix_file_path")] = f"expression_matrix/kang_part_{k}.npy"
        meta.iloc[rows[perm], meta.columns.get_loc("matrix_row_idx")] = np.arange(len(rows))
    meta.to_parquet(folder / "cell_metadata_with_mappings.parquet")
    pd.DataFrame({"gene_name": genes, "indices": [";".join(map(str, range(s, s + k))) for s, k in zip(starts, n_cols)]}
                 ).to_csv(folder / "bmg_gene_index.csv", index=False)
    n_entities = int(n_cols.sum()) + len(genes)
    pd.DataFrame({"name": [f"e{i}" for i in range(n_entities)]}).to_csv(folder / "s_name.csv", index=False)
    np.save(folder / "internal_edge_index.npy", np.stack([np.arange(3), np.arange(3) + int(n_cols.sum())]))
    np.save(folder / "ppi_edge_index.npy", np.array([[n_entities - 2], [n_entities - 1]]))
    np.save(folder / "edge_index.npy", np.concatenate([np.load(folder / "internal_edge_index.npy"),
                                                       np.load(folder / "ppi_edge_index.npy")], axis=1))
    return genes


def test_original_release_layout_imports_into_ours(tmp_path, data_dir, kang, genes):
    real_index = pd.read_csv(data_dir / "knowledge" / "omnicelltosg_bmg_gene_index.csv.gz", dtype=str,
                             keep_default_na=False).set_index("gene_name")["indices"]
    folder = tmp_path / "release"
    kept = _write_release(folder, kang, real_index)
    assert len(kept) > 1000 and (real_index.loc[kept].str.contains(";")).any()  # multi-transcript genes exist
    assert detect_format(folder) == "omnicelltosg_release"
    (tmp_path / "ontology").symlink_to(data_dir / "ontology")
    a = read_dataset(_kang_entry("release"), tmp_path, genes)
    ref = read_dataset(_kang_entry(KANG), data_dir, genes)
    assert a.uns["omnicelltosg"]["value_transform"] == "counts"
    assert a.uns["omnicelltosg"]["input"]["release_graph_edges"] == {"edge_index": 4, "internal_edge_index": 3,
                                                                     "ppi_edge_index": 1}
    assert list(a.obs_names) == list(ref.obs_names)  # meta-cells back in metadata order
    ref_X = ref[:, kept].X.toarray()
    np.testing.assert_array_equal(a.X.toarray(), ref_X)  # transcript columns summed back per gene
    pd.testing.assert_frame_equal(a.obs.reset_index(drop=True), ref.obs.reset_index(drop=True))
    np.save(folder / "ppi_edge_index.npy", np.array([[0], [10 ** 6]]))
    with pytest.raises(ValueError, match=r"ppi_edge_index.npy refers to entity 1000000, but s_name.csv has"):
        read_dataset(_kang_entry("release"), tmp_path, genes)
