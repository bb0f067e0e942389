"""Recipes for real-world files: a constant cell type for a sorted population, the warning for partitions
smaller than one meta-cell, and the recipe reference generated from the typed recipe."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from dataset_script.build.ingest import read_dataset
from dataset_script.build.metacells import small_partition_warning
from dataset_script.build.recipe import DatasetEntry, Recipe
from tests.conftest import KANG


@pytest.fixture()
def sorted_b_cells(tmp_path, data_dir):
    """The Kang cells labelled B cells by the authors, written WITHOUT a cell-type column, as a sorted
    population would arrive (data folder = tmp_path, ontologies linked in)."""
    kang = ad.read_h5ad(data_dir / KANG)
    b = kang[kang.obs["cell_type"] == "B cells"].copy()
    b.obs = b.obs.drop(columns=["cell_type"])
    b.write_h5ad(tmp_path / "b_cells.h5ad")
    (tmp_path / "ontology").symlink_to(data_dir / "ontology")
    return tmp_path, b


def _entry(**extra) -> dict:
    return {"dataset_id": "kang_sorted_b", "path": "b_cells.h5ad", "gene_id_type": "symbol",
            "columns": {"donor_id": "donor_id", "sample_id": "sample_id", "condition": "condition"},
            "constants": {"tissue": "blood"}, **extra}


@pytest.mark.parametrize("value", ["B cell", "CL:0000236", "B-lymphocyte"])  # label, ID, synonym
def test_constant_cell_type_is_mapped_to_the_cell_ontology(sorted_b_cells, genes, value):
    folder, b = sorted_b_cells
    out = read_dataset(_entry(constants={"tissue": "blood", "cell_type": value}), folder, genes)
    assert out.n_obs == b.n_obs
    assert set(out.obs["cell_type_ontology_id"]) == {"CL:0000236"} and set(out.obs["cell_type"]) == {"B cell"}
    assert set(out.obs["cell_type_original"]) == {value}
    assert set(out.obs["cell_type_source"]) == {"recipe constant"}
    table = out.uns["omnicelltosg_tables"]["harmonisation"]
    row = table[table["field"] == "cell_type"].iloc[0]
    assert row["ontology_id"] == "CL:0000236" and not row["needs_review"]


def test_constant_cell_type_errors(sorted_b_cells, genes):
    folder, _ = sorted_b_cells
    with pytest.raises(ValueError, match="constant cell_type 'zzqx' matches no Cell Ontology term"):
        read_dataset(_entry(constants={"cell_type": "zzqx"}), folder, genes)
    with pytest.raises(ValueError, match="constant 'cell_type' and 'cell_type_annotation'; choose one"):
        DatasetEntry.of(_entry(constants={"cell_type": "B cell"}, cell_type_annotation={"model": "m.pkl"}))
    with pytest.raises(ValueError, match="both mapped from obs"):
        DatasetEntry.of({**_entry(constants={"cell_type": "B cell"}),
                         "columns": {"cell_type": "condition"}})
    # without a cell-type column, constant or annotation, the error names all three ways
    with pytest.raises(ValueError, match="constants: {cell_type:"):
        read_dataset(_entry(), folder, genes)


def test_small_partitions_warn_and_name_the_column(sorted_b_cells, genes):
    folder, b = sorted_b_cells
    b.obs["barcode"] = b.obs_names.astype(str)
    b.write_h5ad(folder / "b_cells.h5ad")
    good = read_dataset(_entry(constants={"tissue": "blood", "cell_type": "B cell"}), folder, genes)
    # four samples (2 donors × 2 conditions) of ~50 cells each: no warning at 5 cells per meta-cell
    assert small_partition_warning(good.obs, 5, dataset_id="kang_sorted_b") is None
    entry = _entry(constants={"tissue": "blood", "cell_type": "B cell"},
                   columns={"donor_id": "donor_id", "sample_id": "barcode", "condition": "condition"})
    per_cell = read_dataset(entry, folder, genes)
    message = small_partition_warning(per_cell.obs, 5, dataset_id="kang_sorted_b",
                                      source_columns=DatasetEntry.of(entry).columns)
    assert message is not None
    assert "100% of its" in message and f"{b.n_obs} partitions" in message
    assert "'sample_id' (mapped from the file's column 'barcode')" in message
    # single cells (1 cell per meta-cell) are never "too small"
    assert small_partition_warning(per_cell.obs, 1, dataset_id="kang_sorted_b") is None
    # the threshold is "most partitions": with 2 of 4 partitions small it stays quiet
    obs = good.obs.copy()
    sizes = obs.groupby("sample_id", observed=True).size()
    assert len(sizes) == 4
    keep = np.concatenate([np.flatnonzero(obs["sample_id"] == s)[: (2 if i < 2 else None)]
                           for i, s in enumerate(sizes.index)])
    assert small_partition_warning(obs.iloc[keep], 5, dataset_id="x") is None
    keep3 = np.concatenate([np.flatnonzero(obs["sample_id"] == s)[: (2 if i < 3 else None)]
                            for i, s in enumerate(sizes.index)])
    assert "75% of its 4 partitions" in small_partition_warning(obs.iloc[keep3], 5, dataset_id="x")


def test_recipe_reference_lists_every_field():
    from dataset_script.build.recipe_docs import recipe_reference

    text = recipe_reference()
    for section in (Recipe, DatasetEntry):
        for name, f in section.model_fields.items():
            assert f"`{f.alias or name}`" in text, name
    # defaults and accepted values come from the typed recipe itself
    assert "`cells_per_metacell`" in text and "| 5 |" in text
    assert "unirep64" in text and "cellxgene" in text


def test_docs_recipe_md_is_generated_from_the_code():
    from pathlib import Path

    from dataset_script.build.recipe_docs import recipe_reference

    page = Path(__file__).resolve().parents[1] / "docs" / "recipe.md"
    assert page.read_text() == recipe_reference(), (
        "docs/recipe.md is stale: python -m dataset_script.build.recipe_docs > docs/recipe.md")
