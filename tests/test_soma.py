"""SOMA input (``format: soma``): cells selected from a SOMA experiment by an ``obs_value_filter``, read
with tiledbsoma's axis query, ingest exactly like the h5ad the experiment was written from.

The experiment is written here with :func:`tiledbsoma.io.from_h5ad` from a CELLxGENE-schema file made
from the real Kang data (conftest ``cellxgene_schema_kang``). The CELLxGENE Census itself cannot be
reached offline: its opening is tested as a clear ``ConnectionError``, and the code after the opening
on a local collection laid out like the Census."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tiledbsoma
import tiledbsoma.io
import yaml

from dataset_script.build.ingest import read_dataset
from dataset_script.build.readers import detect_format
from dataset_script.build.recipe import load_recipe

from .conftest import cellxgene_schema_kang

#: The h5ad entry and the SOMA entry share dataset_id and columns, so their harmonised obs can be compared.
H5AD = {"dataset_id": "kang_cxg", "path": "cxg.h5ad", "columns": {"condition": "stim"}}
SOMA = {**H5AD, "path": "kang_soma", "format": "soma"}
#: Donor 101 without its CD8 T cells: a filter over two obs columns that keeps a strict subset.
FILTER = "donor_id == '101' and cell_type_ontology_term_id != 'CL:0000625'"


@pytest.fixture(scope="module")
def root(tmp_path_factory, data_dir, kang):
    """A data folder: the CELLxGENE-schema h5ad, the SOMA experiment written from it (``.X``, log-normalised,
    as the layer ``normalized`` of measurement ``RNA``; ``.raw`` counts as the layer ``raw`` of measurement
    ``raw``), and the real ontologies."""
    root = tmp_path_factory.mktemp("soma")
    (root / "ontology").symlink_to(data_dir / "ontology")
    cellxgene_schema_kang(kang).write_h5ad(root / "cxg.h5ad")
    tiledbsoma.io.from_h5ad(str(root / "kang_soma"), str(root / "cxg.h5ad"), "RNA", X_layer_name="normalized",
                            raw_X_layer_name="raw")
    return root


@pytest.fixture(scope="module")
def norm(kang):
    return cellxgene_schema_kang(kang)


@pytest.fixture(scope="module")
def reference(root, genes):
    """The h5ad read directly (all cells)."""
    return read_dataset(H5AD, root, genes)


def _expected_cells(norm) -> np.ndarray:
    obs = norm.obs
    return ((obs["donor_id"] == "101") & (obs["cell_type_ontology_term_id"] != "CL:0000625")).to_numpy()


def test_soma_entry_equals_the_h5ad_subset(root, norm, reference, genes):
    keep = _expected_cells(norm)
    assert 0 < keep.sum() < norm.n_obs and norm.obs["donor_id"][keep].nunique() == 1
    a = read_dataset({**SOMA, "obs_value_filter": FILTER, "measurement_name": "raw"}, root, genes)
    ref = reference[keep].copy()  # not a view: its obs must be a plain DataFrame
    assert list(a.obs_names) == list(ref.obs_names)  # the same cells, in the same order
    assert list(a.var_names) == list(ref.var_names)
    assert (a.var["entrez_id"].to_numpy() == ref.var["entrez_id"].to_numpy()).all()
    np.testing.assert_array_equal(a.X.toarray(), ref.X.toarray())  # the raw counts, as in the h5ad's .raw
    pd.testing.assert_frame_equal(a.obs, ref.obs)  # harmonised from the CELLxGENE columns
    info = a.uns["omnicelltosg"]
    assert info["schema"] == "cellxgene" and info["value_transform"] == "counts"
    assert set(a.obs["cell_type"]) == set(ref.obs["cell_type"]) and "CD8-positive, alpha-beta T cell" not in set(
        a.obs["cell_type"])
    record = info["input"]
    assert (record["format"], record["uri"], record["obs_value_filter"]) == ("soma", "kang_soma", FILTER)
    assert (record["measurement_name"], record["X_name"], record["var_value_filter"]) == ("raw", "raw", None)
    assert "census_version" not in record  # a local experiment has none


def test_var_value_filter_restricts_genes_and_x_name_picks_the_layer(root, norm, genes):
    chosen = list(norm.var_names[1::50])
    assert "ENSG00000187608" in chosen  # ISG15
    entry = {**SOMA, "obs_value_filter": "donor_id == '107'", "var_value_filter": f"var_id in {chosen!r}",
             "X_name": "normalized"}  # measurement RNA (the default) holds the file's log-normalised .X
    a = read_dataset(entry, root, genes)
    cells = (norm.obs["donor_id"] == "107").to_numpy()
    assert list(a.var_names) == chosen and list(a.obs_names) == list(norm.obs_names[cells])
    np.testing.assert_allclose(a.X.toarray(), norm[cells, chosen].X.toarray(), rtol=1e-6)
    assert a.uns["omnicelltosg"]["value_transform"] == "log"
    assert a.uns["omnicelltosg"]["input"]["var_value_filter"] == f"var_id in {chosen!r}"


@pytest.mark.parametrize("extra, error, message", [
    ({"obs_value_filter": "donor_id === '101'"}, ValueError,
     r"kang_soma: obs_value_filter .*donor_id === '101'.* cannot be applied \(Could not parse.*Columns: .*donor_id \("),
    ({"obs_value_filter": "donour_id == '101'"}, ValueError,
     r"obs_value_filter .*cannot be applied \(.*donour_id does not exist.*Columns: .*cell_type_ontology_term_id"),
    ({"obs_value_filter": "donor_id == 101"}, ValueError,  # unquoted: the column types say it is text
     r"obs_value_filter 'donor_id == 101' cannot be applied .*text values are quoted.*donor_id \(text\)"),
    ({"obs_value_filter": "donor_id == 'D999'"}, ValueError, r"obs_value_filter .*D999.* matched no cells"),
    ({"obs_value_filter": FILTER, "var_value_filter": "symbol == 'ISG15'"}, ValueError,
     r"var_value_filter .*cannot be applied.*Columns: .*SYMBOL \("),
    ({"obs_value_filter": FILTER, "measurement_name": "protein"}, ValueError,
     r"measurement_name 'protein' is not in the experiment; its measurements: \['RNA', 'raw'\]"),
    ({"obs_value_filter": FILTER, "measurement_name": "raw", "X_name": "normalized"}, ValueError,
     r"X_name 'normalized' is not an X layer of measurement 'raw'; its X layers: \['raw'\]"),
    ({"obs_value_filter": FILTER, "path": "no_such_experiment"}, FileNotFoundError,
     r"'kang_cxg' not found: .*no_such_experiment"),
    ({"obs_value_filter": FILTER, "path": "ontology"}, ValueError, r"ontology is not a SOMA experiment"),
])
def test_bad_soma_reads_are_clear_errors(root, genes, extra, error, message):
    with pytest.raises(error, match=message):
        read_dataset({**SOMA, "measurement_name": "raw", **extra}, root, genes)


def test_soma_keys_need_format_soma_and_obs_value_filter(root, genes):
    recipe = {"datasets": [{**H5AD, "obs_value_filter": FILTER, "X_name": "raw"}]}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ValueError, match=r"datasets\[0\] \(kang_cxg\): sets \['obs_value_filter', 'X_name'\], "
                                         r"which only a SOMA input reads; add 'format: soma'"):
        load_recipe(path)
    with pytest.raises(ValueError, match=r"'format: soma' needs 'obs_value_filter'"):
        read_dataset(SOMA, root, genes)
    with pytest.raises(ValueError, match=r"sets \['census_version'\], which apply to 'path: census'"):
        read_dataset({**SOMA, "obs_value_filter": FILTER, "census_version": "latest"}, root, genes)
    with pytest.raises(ValueError, match=r"'use_raw'\s+and 'layer' do not apply"):
        read_dataset({**SOMA, "obs_value_filter": FILTER, "use_raw": True}, root, genes)
    # a SOMA folder is recognised, but without 'format: soma' it has no filter: read whole by accident? no
    assert detect_format(root / "kang_soma") == "soma" and detect_format(root / "cxg.h5ad") == "h5ad"
    with pytest.raises(ValueError, match=r"kang_soma needs an obs_value_filter .*'format: soma'"):
        read_dataset({**H5AD, "path": "kang_soma"}, root, genes)


def test_census_offline_is_a_clear_error(root, genes, monkeypatch):
    """Every request goes to a closed local proxy port: the Census release directory cannot be fetched,
    whether this machine is online or not."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    entry = {"dataset_id": "census_blood", "path": "census", "format": "soma",
             "obs_value_filter": "tissue_general == 'blood' and disease == 'normal'"}
    with pytest.raises(ConnectionError, match=r"Cannot open the CELLxGENE Census \(census_version='stable'\): "
                                              r".*offline, export the cells once"):
        read_dataset(entry, root, genes)


def test_census_path_on_a_local_collection_laid_out_like_the_census(root, norm, reference, genes, monkeypatch):
    """``path: census`` after the opening: cellxgene_census.open_soma is pointed at a local collection
    with the Census layout (``census_data/homo_sapiens``, measurement ``RNA``, X layer ``raw``, var
    ``feature_id``), opened by the real cellxgene_census.open_soma(uri=...)."""
    import cellxgene_census

    counts = norm.raw.to_adata()
    counts.obs = norm.obs.copy()
    counts.var = pd.DataFrame({"feature_id": counts.var_names, "feature_name": counts.var["SYMBOL"].astype(str)},
                              index=pd.Index([f"g{i}" for i in range(counts.n_vars)]))  # ids only in feature_id
    uri = str(root / "census_copy")
    with tiledbsoma.Collection.create(uri) as census:
        census.metadata["census_schema_version"] = "2.1.0"
        data = census.add_new_collection("census_data")
        exp_uri = tiledbsoma.io.from_anndata(f"{uri}/census_data/homo_sapiens", counts, "RNA", X_layer_name="raw")
        with tiledbsoma.Experiment.open(exp_uri) as exp:
            data.set("homo_sapiens", exp, use_relative_uri=True)
    real_open, asked = cellxgene_census.open_soma, []

    def open_local(*, census_version):
        asked.append(census_version)
        return real_open(uri=uri)

    monkeypatch.setattr(cellxgene_census, "open_soma", open_local)
    entry = {**H5AD, "path": "census", "format": "soma", "obs_value_filter": "donor_id == '107'",
             "census_version": "2025-01-30", "organism": "Homo sapiens"}
    a = read_dataset(entry, root, genes)
    cells = np.flatnonzero((norm.obs["donor_id"] == "107").to_numpy())
    assert asked == ["2025-01-30"]
    assert list(a.obs_names) == [str(i) for i in cells]  # the Census soma_joinid
    assert list(a.var_names) == list(norm.raw.var_names)  # Ensembl feature_id
    ref = reference[cells].copy()
    np.testing.assert_array_equal(a.X.toarray(), ref.X.toarray())
    pd.testing.assert_frame_equal(a.obs.reset_index(drop=True), ref.obs.reset_index(drop=True))
    record = a.uns["omnicelltosg"]["input"]
    assert (record["uri"], record["census_version"], record["organism"]) == (uri, "2025-01-30", "homo_sapiens")
    assert record["census_metadata"] == {"census_schema_version": "2.1.0"}
    with pytest.raises(ValueError, match=r"organism 'mus_musculus' is not in the CELLxGENE Census '2025-01-30'; "
                                         r"accepted: \['homo_sapiens'\]"):
        read_dataset({**entry, "organism": "mus_musculus"}, root, genes)
