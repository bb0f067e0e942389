"""Shared fixtures: the real data folder and a small real dataset built once per test session."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import pytest
import yaml

# Nothing may reach a hub at run time: datasets / transformers work from local folders only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# A fresh datasets cache per test session: datasets keys a local folder's cache by its name and
# config, so a build written to a reused path could otherwise be served from an older run's cache.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="omnicelltosg-test-hf-datasets-")
# The per-entity prior cache (dataset_script.build.prior_cache) of this test session: shared by its builds,
# never the user's own cache folder.
os.environ["OMNICELLTOSG_CACHE"] = tempfile.mkdtemp(prefix="omnicelltosg-test-priors-")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RECIPE = Path(__file__).resolve().parents[1] / "build" / "demo.yaml"

#: The Kang 2018 muscat file (two donors, stim/control), relative to the data folder.
KANG = "scrna/kang2018_ifnb_pbmc_1556cells_2donors_muscat.h5ad"

requires_data = pytest.mark.skipif(not (DATA / "scrna").exists(),
                                   reason=f"real data folder {DATA} is absent (it sits beside the checkout in CI)")


def small_recipe() -> dict:
    """The demo recipe restricted to the two blood datasets (Kang and OneK1K), 10 cells/meta-cell.

    The oligodendroglioma file alone brings ~9,400 genes, whose text priors would dominate the test
    time; it is exercised separately by the ingest tests.
    """
    recipe = copy.deepcopy(yaml.safe_load(RECIPE.read_text()))
    recipe["datasets"] = [d for d in recipe["datasets"] if d["dataset_id"] in {"kang2018_muscat", "onek1k_scdesignpop"}]
    for d in recipe["datasets"]:
        d["cells_per_metacell"] = 10
    return recipe


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "scrna").exists():
        pytest.skip(f"real data folder {DATA} is absent (it sits beside the checkout in CI)")
    return DATA


@pytest.fixture(scope="session")
def genes(data_dir):
    """The gene table of the knowledge folder (symbols, aliases, Ensembl IDs)."""
    from dataset_script.build.knowledge import load_gene_table

    return load_gene_table(data_dir / "knowledge")


@pytest.fixture(scope="module")
def kang(data_dir):
    """The Kang 2018 muscat file (:data:`KANG`): raw counts, gene symbols, Ensembl IDs in ``var["ENSEMBL"]``."""
    import anndata as ad

    return ad.read_h5ad(data_dir / KANG)


#: Cell Ontology IDs of the Kang cell-type labels.
KANG_CL = {"B cells": "CL:0000236", "CD14+ Monocytes": "CL:0001054", "CD4 T cells": "CL:0000624",
           "CD8 T cells": "CL:0000625", "FCGR3A+ Monocytes": "CL:0002396"}


def cellxgene_schema_kang(kang):
    """A CELLxGENE-schema AnnData written from the real Kang data: Ensembl var names, log-normalised X,
    raw counts in ``.raw``, the ontology-ID obs columns, and the condition in ``stim``."""
    import pandas as pd
    import scanpy as sc

    counts = kang.copy()
    counts.var_names = kang.var["ENSEMBL"].astype(str).to_numpy()
    norm = counts.copy()
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    norm.raw = counts
    norm.obs = pd.DataFrame({
        "donor_id": kang.obs["donor_id"].astype(str).to_numpy(),
        "cell_type_ontology_term_id": kang.obs["cell_type"].map(KANG_CL).astype(str).to_numpy(),
        "disease_ontology_term_id": "MONDO:0007915",
        "tissue_ontology_term_id": "UBERON:0000178",
        "development_stage_ontology_term_id": "HsapDv:0000134",  # 40-year-old stage
        "sex_ontology_term_id": "unknown",
        "assay_ontology_term_id": "EFO:0009901",
        "suspension_type": "cell",
        "stim": kang.obs["condition"].astype(str).to_numpy(),
    }, index=kang.obs_names)
    return norm


@pytest.fixture
def kang_cellxgene(kang):
    """A fresh :func:`cellxgene_schema_kang` per test."""
    return cellxgene_schema_kang(kang)


@pytest.fixture(scope="session")
def built(tmp_path_factory, data_dir) -> tuple[Path, dict, dict]:
    """(dataset folder, build_info, recipe) of the small real build."""
    from dataset_script.build.pipeline import build_dataset

    root = tmp_path_factory.mktemp("build")
    recipe = small_recipe()
    recipe_path = root / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    out = root / "dataset"
    info = build_dataset(recipe_path, data_dir, out, progress=False)
    return out, info, recipe
