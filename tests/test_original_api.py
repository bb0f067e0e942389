"""``CellTOSGDataset`` (the original README §4.4 interface) on the small real build (Kang + OneK1K, blood).

Checked against the dataset's own tables, read here with ``datasets`` (not through the class): the
subset's meta-cells, the label column, the per-class ratio, the expression of each row, the edges
table, the entities table and the stored embeddings.
"""

from __future__ import annotations

import datasets
import numpy as np
import pandas as pd
import pytest

from dataset_script.cohorts.original_api import (
    CATEGORIES,
    LABEL_TYPES,
    CellTOSGDataLoader,
    CellTOSGDataset,
    _resolve,
)

SLE = "systemic lupus erythematosus"


def _table(root, config: str, columns: list[str] | None = None) -> pd.DataFrame:
    ds = datasets.load_dataset(str(root), config, split="train")
    return (ds.select_columns(columns) if columns else ds).to_pandas()


@pytest.fixture(scope="module")
def tables(built):
    root = built[0]
    cells = _table(root, "all", ["cell_id", "tissue_general", "disease", "cell_type", "expression_indices",
                                 "expression_values", "values_are_counts"]).set_index("cell_id")
    return {"cells": cells, "entities": _table(root, "entities").sort_values("entity_index", ignore_index=True),
            "edges": _table(root, "edges"), "embeddings": _table(root, "embeddings").sort_values("entity_index")}


@pytest.fixture(scope="module")
def blood_ct(built):
    return CellTOSGDataset(built[0], categories="get_organ", name="blood", label_type="ct", seed=3, ratio=0.3,
                           shuffle=True)


def test_get_organ_ct_shapes_labels_and_expression(built, tables, blood_ct):
    info, ds, cells = built[1], blood_ct, tables["cells"]
    nt, n = info["n_transcripts"], info["n_transcripts"] + info["n_proteins"]
    m = len(ds)
    assert ds.data.shape == (m, n) and ds.data.dtype == np.float32 and ds.x is ds.data
    assert ds.labels.shape == (m,) and ds.labels.dtype == np.int64 and ds.y is ds.labels
    assert len(ds.metadata) == m and ds.metadata["cell_id"].is_unique
    assert (ds.num_transcripts, ds.num_nodes) == (nt, n)
    # the rows are meta-cells of the organ, ratio 0.3 per cell type with at least one each
    blood = cells[cells["tissue_general"] == "blood"]
    assert set(ds.metadata["cell_id"]) <= set(blood.index)
    expected = {ct: max(int(np.floor(k * 0.3)), 1) for ct, k in blood["cell_type"].value_counts().items()}
    assert ds.metadata["cell_type"].value_counts().to_dict() == expected
    # y encodes the cell_type column, row by row (after the shuffle)
    assert ds.label_column == "cell_type" and ds.label_names == sorted(expected)
    assert list(np.asarray(ds.label_names)[ds.labels]) == list(ds.metadata["cell_type"])
    assert ds.label_mapping == {name: i for i, name in enumerate(ds.label_names)}
    # x: CP10k + log1p of each row's stored counts on the transcript columns, zero protein columns
    assert not ds.data[:, nt:].any()
    for i in (0, m // 2, m - 1):
        row = cells.loc[ds.metadata["cell_id"].iloc[i]]
        assert row["values_are_counts"]
        v = np.asarray(row["expression_values"], dtype=np.float64)
        want = np.zeros(nt, dtype=np.float32)
        want[np.asarray(row["expression_indices"])] = np.log1p(v / v.sum() * 1e4)
        np.testing.assert_allclose(ds.data[i, :nt], want, rtol=1e-5, atol=1e-6)
    # the original's per-sample tuple and length
    x0, y0, ei, _, _, s_name, _ = ds[0]
    assert np.array_equal(x0, ds.data[0]) and y0 == ds.labels[0] and ei is ds.edge_index and s_name is ds.s_name
    assert len(ds.as_tuple()) == 8 and ds.as_tuple()[-1] is ds.s_bio


def test_edges_and_embeddings_follow_the_dataset_tables(built, tables, blood_ct):
    info, ds, ents = built[1], blood_ct, tables["entities"]
    nt, n = info["n_transcripts"], info["n_transcripts"] + info["n_proteins"]
    for ei in (ds.edge_index, ds.internal_edge_index, ds.ppi_edge_index):
        assert ei.dtype == np.int64 and ei.ndim == 2 and ei.shape[0] == 2
        assert ei.min() >= 0 and ei.max() < n
    assert ds.internal_edge_index.shape[1] == info["n_internal_edges"] > 0
    assert ds.ppi_edge_index.shape[1] == info["n_ppi_edges"] > 0
    assert np.array_equal(ds.edge_index, np.concatenate([ds.internal_edge_index, ds.ppi_edge_index], axis=1))
    # internal edges: transcript node → protein node, exactly the edges table's internal relation
    types = ents["entity_type"].to_numpy()
    assert (types[ds.internal_edge_index[0]] == "transcript").all() and (ds.internal_edge_index[0] < nt).all()
    assert (types[ds.internal_edge_index[1]] == "protein").all() and (ds.internal_edge_index[1] >= nt).all()
    assert (types[ds.ppi_edge_index] == "protein").all()
    internal = tables["edges"].query("relation == 'internal'")
    assert set(zip(*ds.internal_edge_index.tolist())) == set(zip(internal["source"], internal["target"]))
    # embedding mode: the stored embeddings by node index
    emb = tables["embeddings"]
    assert ds.s_name.shape == ds.s_desc.shape == (n, 384) and ds.s_name.dtype == np.float32
    np.testing.assert_array_equal(ds.s_name, np.stack(emb["name_embedding"].to_numpy()))
    np.testing.assert_array_equal(ds.s_desc, np.stack(emb["description_embedding"].to_numpy()))
    if "sequence_embedding" in emb:
        np.testing.assert_array_equal(ds.s_bio, np.stack(emb["sequence_embedding"].to_numpy()))
    else:
        assert ds.s_bio is None
    assert ds.x_name_emb is ds.s_name and ds.x_desc_emb is ds.s_desc and ds.x_bio_emb is ds.s_bio


def test_seed_and_ratio_are_reproducible_and_seeds_differ(built, blood_ct):
    args = {"categories": "get_organ", "name": "blood", "label_type": "ct", "ratio": 0.3, "shuffle": True}
    again = CellTOSGDataset(built[0], seed=3, **args)
    assert list(again.metadata["cell_id"]) == list(blood_ct.metadata["cell_id"])
    assert np.array_equal(again.data, blood_ct.data) and np.array_equal(again.labels, blood_ct.labels)
    other = CellTOSGDataset(built[0], seed=4, **args)
    assert len(other) == len(blood_ct)  # the same per-class quotas …
    assert set(other.metadata["cell_id"]) != set(blood_ct.metadata["cell_id"])  # … drawn differently


def test_status_cases_and_controls_in_text_mode(built, tables):
    n = built[1]["n_transcripts"] + built[1]["n_proteins"]
    ds = CellTOSGDataset(built[0], categories="get_organ_disease", name="blood-SLE", label_type="status", seed=1,
                         ratio=0.25, train_text=True, train_bio=True, shuffle=False)
    meta = ds.metadata
    assert ds.organ == ["blood"] and ds.disease == [SLE]
    assert ds.label_names == ["control", "case"] and set(meta["tissue_general"]) == {"blood"}
    assert np.array_equal(ds.labels, (meta["disease"] != "normal").to_numpy().astype(np.int64))
    assert set(meta.loc[ds.labels == 1, "disease"]) == {SLE} and set(meta.loc[ds.labels == 0, "disease"]) == {"normal"}
    # cases sampled at the ratio, one control each, no repeated meta-cell
    n_sle = int((tables["cells"]["disease"] == SLE).sum())
    assert (ds.labels == 1).sum() == (ds.labels == 0).sum() == int(np.floor(n_sle * 0.25))
    assert meta["cell_id"].is_unique
    # text mode: lists by node index, from the entities table
    ents = tables["entities"]
    assert isinstance(ds.s_name, list) and ds.s_name == ents["name"].tolist()
    assert ds.s_desc == ents["description"].tolist() and ds.s_bio == ents["sequence"].tolist() and len(ds.s_bio) == n
    assert ds.x_name_emb is None and ds.x_desc_emb is None and ds.x_bio_emb is None
    assert any(ds.s_bio) and not any(ds.s_bio[: built[1]["n_transcripts"]])  # sequences on proteins only


def test_the_other_original_interface_gives_the_same_rows(built, blood_ct):
    """CellTOSGDataLoader (inference mode) with the same query, sampling and seed: the same shuffled rows,
    matrix, edges and embeddings (both interfaces share one layout)."""
    loader = CellTOSGDataLoader(built[0], conditions={"tissue_general": "blood"}, label_column="cell_type",
                                sample_ratio=0.3, shuffle=True, random_state=3, extract_mode="inference",
                                min_per_class=1)
    assert list(loader.metadata["cell_id"]) == list(blood_ct.metadata["cell_id"])
    assert np.array_equal(loader.data, blood_ct.data) and np.array_equal(loader.edge_index, blood_ct.edge_index)
    assert np.array_equal(loader.x_name_emb, blood_ct.s_name) and np.array_equal(loader.x_bio_emb, blood_ct.s_bio)


def test_names_resolve_to_dataset_values(built, tables):
    meta = tables["cells"].reset_index()
    for name in ("SLE", "sle", "Systemic_Lupus_Erythematosus", SLE):
        assert CellTOSGDataset._resolve_subset(meta, "get_disease", name) == (None, [SLE])
    assert CellTOSGDataset._resolve_subset(meta, "get_disease", "general") == (None, ["normal"])
    assert CellTOSGDataset._resolve_subset(meta, "get_organ", "Blood") == (["blood"], None)
    assert CellTOSGDataset._resolve_subset(meta, "get_organ_disease", "blood-normal") == (["blood"], ["normal"])
    # an abbreviation naming two diseases of a dataset is refused, naming both
    with pytest.raises(ValueError, match=r"'RCC' is ambiguous.*clear cell renal carcinoma.*renal cell carcinoma"):
        _resolve("RCC", ["renal cell carcinoma", "clear cell renal carcinoma", "normal"], "disease", "here", True)
    assert _resolve("ccRCC", ["renal cell carcinoma", "clear cell renal carcinoma"], "disease", "here", True) == \
        ["clear cell renal carcinoma"]
    assert _resolve("alzheimer's_disease", ["Alzheimer disease"], "disease", "here", True) == ["Alzheimer disease"]


@pytest.mark.parametrize("kwargs, message", [
    ({"categories": "get_tissue", "name": "blood"},
     r"Unknown categories 'get_tissue'; accepted: \['get_organ', 'get_disease', 'get_organ_disease'\]"),
    ({"categories": list(CATEGORIES), "name": "blood"}, "Unknown categories"),
    ({"categories": "get_organ", "name": "blood", "label_type": "cell_type"},
     r"Unknown label_type 'cell_type'; accepted: \['ct', 'og', 'ds', 'status'\]"),
    ({"categories": "get_organ", "name": "brain"}, r"Unknown organ 'brain' in this dataset; accepted: \['blood'\]"),
    ({"categories": "get_disease", "name": "AD"},
     r"Unknown disease 'AD' in this dataset; accepted: \['normal', 'systemic lupus erythematosus', 'general', 'SLE'\]"),
    ({"categories": "get_organ_disease", "name": "blood-AD"}, r"Unknown disease 'AD' in organ 'blood'; accepted: \["),
    ({"categories": "get_organ_disease", "name": "brain-SLE"}, r"'<organ>-<disease>'.*organs: \['blood'\]"),
    ({"categories": "get_organ_disease", "name": "blood"}, r"'<organ>-<disease>'"),
    ({"categories": "get_organ", "name": "blood", "label_type": "og"},
     r"label_type 'og' \(tissue_general\) has a single class \['blood'\].*two or more classes here: \['ct', 'ds', 'status'\]"),
    ({"categories": "get_disease", "name": "general", "label_type": "status"}, r"'status' needs cases.*no case"),
    ({"categories": "get_organ", "name": "blood", "ratio": 1.5}, r"sample_ratio must be .*in \(0, 1\]"),
])
def test_bad_arguments_name_the_accepted_values(built, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CellTOSGDataset(built[0], **kwargs)


def test_label_types_cover_the_schema_columns():
    from dataset_script.schema import CELL_SCHEMA

    assert set(LABEL_TYPES) == {"ct", "og", "ds", "status"}
    assert set(LABEL_TYPES.values()) <= set(CELL_SCHEMA.names)
