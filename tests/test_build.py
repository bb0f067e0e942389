"""The dataset build on real data: meta-cells, entity graph, text priors, configs, bad input."""

from __future__ import annotations

import gzip
import re

import anndata as ad
import datasets
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dataset_script.build import harmonize
from dataset_script.build.ingest import (
    detect_value_transform,
    read_dataset,
    values_are_counts,
)
from dataset_script.build.knowledge import load_gene_table
from dataset_script.build.pipeline import build_dataset
from dataset_script.build.recipe import (
    RECIPE_DIR,
    MetacellSettings,
    Recipe,
    load_recipe,
)

from .conftest import RECIPE, small_recipe


def _cells(path, config="all"):
    return datasets.load_dataset(str(path), config, split="train").to_pandas()


def test_every_declared_config_loads(built):
    out, info, _ = built
    names = datasets.get_dataset_config_names(str(out))
    assert set(info["configs"]) == set(names)
    assert {"all", "blood", "blood_sle", "blood_normal", "entities", "edges", "embeddings", "gene_panels"} <= set(names)
    cells = _cells(out)
    assert len(cells) == info["n_metacells"]
    sle = _cells(out, "blood_sle")
    normal = _cells(out, "blood_normal")
    assert set(sle["disease"]) == {"systemic lupus erythematosus"} and set(normal["disease"]) == {"normal"}
    assert len(sle) + len(normal) == len(_cells(out, "blood")) == len(cells)
    assert len(datasets.load_dataset(str(out), "entities", split="train")) == info["n_transcripts"] + info["n_proteins"]


def test_metacells_conserve_counts_per_partition(built, data_dir):
    """Summed meta-cell expression of each (donor, condition) equals the raw counts of that
    partition over the mapped genes, computed independently from the h5ad."""
    out, info, recipe = built
    cells = _cells(out)
    kang = cells[cells["dataset_id"] == "kang2018_muscat"]
    raw = ad.read_h5ad(data_dir / recipe["datasets"][0]["path"])
    genes = load_gene_table(data_dir / "knowledge")
    adata = read_dataset(recipe["datasets"][0], data_dir, genes)
    entities = _cells(out, "entities")
    measured_symbols = set(entities.loc[entities["entity_type"] == "transcript", "entity_id"])
    entity_of = genes.table.set_index("entrez_id")["entity_id"]
    mapped = np.array([bool(e) and entity_of[e] in measured_symbols for e in adata.var["entrez_id"]])
    for (donor, cond), group in kang.groupby(["donor_id", "condition"]):
        sel = (raw.obs["donor_id"].astype(str) == donor.split(":")[1]).to_numpy() & \
              (raw.obs["condition"].astype(str).map({"ctrl": "control", "stim": "stim"}) == cond).to_numpy()
        expected = raw.X[sel][:, mapped].sum()
        got = sum(float(np.sum(v)) for v in group["expression_values"])
        assert got == pytest.approx(float(expected), rel=1e-6)
        assert group["n_cells"].sum() == sel.sum()
        assert group["donor_id"].nunique() == 1
    assert ((cells["purity"] > 0) & (cells["purity"] <= 1)).all()
    assert (cells["n_cells"] >= 1).all()


def test_entity_graph_contract(built, data_dir):
    out, info, _ = built
    ent = _cells(out, "entities")
    edges = _cells(out, "edges")
    nt = info["n_transcripts"]
    assert (ent["entity_type"].iloc[:nt] == "transcript").all() and (ent["entity_type"].iloc[nt:] == "protein").all()
    internal = edges[edges["relation"] == "internal"]
    ppi = edges[edges["relation"] == "ppi"]
    assert (internal["source"] < nt).all() and (internal["target"] >= nt).all()
    assert (ppi["source"] >= nt).all() and (ppi["target"] >= nt).all()
    assert not ppi.duplicated(["source", "target"]).any() and (ppi["source"] < ppi["target"]).all()
    assert (ppi["weight"] >= 0.9).all()
    # An independent read of STRING: every pair among the graph's proteins' genes is present.
    string = pd.read_csv(data_dir / "knowledge" / "string_human_score900_symbols_mossn.tsv.gz", sep="\t")
    sym = ent.set_index("entity_index")["symbol"]
    got = {frozenset((sym[s], sym[t])) for s, t in zip(ppi["source"], ppi["target"])}
    proteins = set(ent.loc[ent["entity_type"] == "protein", "symbol"])
    expected = {frozenset((a, b)) for a, b in zip(string["gene_a"], string["gene_b"])
                if a in proteins and b in proteins and a != b}
    assert len(expected) > 100
    assert len(expected - got) / len(expected) < 0.02  # symbols shared by two proteins may merge a pair
    # Descriptions carry GO text; proteins carry Swiss-Prot sequences.
    assert ent.loc[ent["symbol"] == "ISG15", "description"].iloc[0].lower().count("process") >= 1
    prot = ent[ent["entity_type"] == "protein"]
    assert (prot["sequence"].str.len() > 0).mean() > 0.85


def test_text_priors_match_sentence_transformers(built):
    """The stored MiniLM embeddings equal sentence-transformers' own encoding of the same texts."""
    from sentence_transformers import SentenceTransformer

    from dataset_script.build.text_encoder import default_text_encoder_path

    out, _, _ = built
    ent = _cells(out, "entities")
    emb = datasets.load_dataset(str(out), "embeddings", split="train").with_format("numpy")
    desc = np.asarray(emb["description_embedding"])
    assert desc.shape == (len(ent), 384)
    pick = [0, 5, len(ent) - 1]
    st = SentenceTransformer(str(default_text_encoder_path()), device="cpu")
    st.max_seq_length = 96
    ref = st.encode([ent["description"].iloc[i] for i in pick], normalize_embeddings=True)
    np.testing.assert_allclose(desc[pick], ref, atol=2e-4)


def test_non_count_input_is_detected(data_dir):
    recipe = yaml.safe_load(RECIPE.read_text())
    oligo = next(d for d in recipe["datasets"] if d["dataset_id"].startswith("tirosh"))
    kang = next(d for d in recipe["datasets"] if d["dataset_id"].startswith("kang"))
    genes = load_gene_table(data_dir / "knowledge")
    a = read_dataset(oligo, data_dir, genes)
    assert a.uns["omnicelltosg"]["values_are_counts"] is False
    assert set(a.obs["condition"]) == {"malignant", "non-malignant"}
    assert set(a.obs["tissue_general"]) == {"brain"}
    assert values_are_counts(read_dataset(kang, data_dir, genes).X)
    assert a.uns["omnicelltosg"]["value_transform"] == "linear"  # TPM/10: values up to ~34,000


def test_value_transform_detection_hand_checked():
    import scipy.sparse as sp

    assert detect_value_transform(sp.csr_matrix(np.array([[0, 3, 1], [2, 0, 7]], dtype=np.float32))) == "counts"
    logged = np.log1p(np.array([[0, 3, 1], [2, 0, 7]], dtype=np.float32))
    assert detect_value_transform(sp.csr_matrix(logged)) == "log"
    assert detect_value_transform(np.array([[0.0, 150.5, 20.25]])) == "linear"  # TPM-like, above LOG_SCALE_MAX
    with pytest.raises(ValueError, match="use_raw"):
        detect_value_transform(np.array([[-0.3, 1.2], [0.4, -1.1]]))


def test_pbmc68k_reads_raw_log_values_without_donors(data_dir):
    """pbmc68k_reduced: X is scaled (rejected), .raw is log-normalised; no donor column."""
    from dataset_script.build.metacells import metacells_of_partition, partitions

    recipe = yaml.safe_load((RECIPE.parent / "pbmc68k.yaml").read_text())
    entry = recipe["datasets"][0]
    genes = load_gene_table(data_dir / "knowledge")
    a = read_dataset(entry, data_dir, genes)
    raw = ad.read_h5ad(data_dir / "scrna" / "pbmc68k_reduced_scanpy.h5ad").raw
    assert a.uns["omnicelltosg"]["value_transform"] == "log" and a.uns["omnicelltosg"]["matrix"] == "raw"
    assert a.n_vars == raw.n_vars and np.allclose(a.X.toarray(), raw.X.toarray() if hasattr(raw.X, "toarray") else raw.X)
    assert set(a.obs["donor_id"]) == {"pbmc68k_reduced:unknown"}
    assert a.obs["cell_type_ontology_id"].str.startswith("CL:").all() and a.obs["cell_type"].nunique() == 10
    with pytest.raises(ValueError, match="negative values"):
        read_dataset({k: v for k, v in entry.items() if k != "use_raw"}, data_dir, genes)
    first = a[:40].copy()
    assert len(partitions(first)) == 1  # no donors, one condition: one partition
    X, obs = metacells_of_partition(first, "pbmc", cells_per_metacell=1, min_cells_per_partition=10,
                                    max_cells_per_partition=MetacellSettings().max_cells_per_partition,
                                    value_transform="log")
    assert X.shape == (40, a.n_vars) and (obs["n_cells"] == 1).all()  # single-cell TOSGs
    np.testing.assert_allclose(X.toarray(), a.X[:40].toarray())


@pytest.mark.parametrize("path", sorted(RECIPE_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe) and recipe.datasets
    assert all(recipe.cells_per_metacell_for(d) >= 1 for d in recipe.datasets)
    raw = yaml.safe_load(path.read_text())  # what the recipe leaves out comes with the model's default
    assert recipe.metacells == MetacellSettings.model_validate(raw["metacells"])


def _set(recipe: dict, key: str, value) -> None:
    """``_set(recipe, "datasets.0.use_raw", True)``: set a nested key of a recipe dict."""
    *parents, last = [int(k) if k.isdigit() else k for k in key.split(".")]
    for k in parents:
        recipe = recipe[k]
    recipe[last] = value


def _recipe_error(tmp_path, change) -> str:
    recipe = small_recipe()
    change(recipe)
    with pytest.raises(ValueError) as err:
        load_recipe(_write_recipe(tmp_path, recipe))
    return str(err.value)


def test_unknown_recipe_keys_are_named_with_their_place_and_the_accepted_keys(tmp_path):
    message = _recipe_error(tmp_path, lambda r: r.update(dataset="x"))
    assert "top level: unknown key(s) ['dataset']; accepted: ['datasets', 'knowledge', 'metacells', 'name']" in message
    message = _recipe_error(tmp_path, lambda r: r["metacells"].update(cells_per_metacel=5))
    assert re.search(r"metacells: unknown key\(s\) \['cells_per_metacel'\]; accepted: \['cells_per_metacell', "
                     r"'max_cells_per_partition', 'min_cells_per_partition'\]", message)
    message = _recipe_error(tmp_path, lambda r: r["datasets"][1].update(cell_type_mapping={}))
    assert "datasets[1] (onek1k_scdesignpop): unknown key(s) ['cell_type_mapping']; accepted: [" in message
    assert "'cell_type_map'" in message
    message = _recipe_error(tmp_path, lambda r: r["datasets"][0]["columns"].update(celltype="cell_type"))
    assert "datasets[0] (kang2018_muscat).columns: maps unknown schema columns ['celltype']; mappable:" in message


@pytest.mark.parametrize("key, value, expected", [
    ("metacells.cells_per_metacell", 0, r"metacells.cells_per_metacell: Input should be greater than or equal to 1 \(got 0\)"),
    ("metacells.min_cells_per_partition", -3, r"metacells.min_cells_per_partition: .* greater than or equal to 1"),
    ("metacells.max_cells_per_partition", 1, r"metacells.max_cells_per_partition: .* greater than or equal to 2"),
    ("datasets.0.cells_per_metacell", -1, r"datasets\[0\] \(kang2018_muscat\).cells_per_metacell: .* greater than or equal to 1"),
    ("knowledge.min_ppi_score", 1.5, r"knowledge.min_ppi_score: Input should be less than or equal to 1 \(got 1.5\)"),
    ("knowledge.min_ppi_score", -0.1, r"knowledge.min_ppi_score: Input should be greater than or equal to 0"),
    ("knowledge.sequence_model", "esm2", r"knowledge.sequence_model: 'esm2' not supported; accepted: \['unirep64', 'unirep256', 'none'\]"),
    ("knowledge.gene_universe", "every", r"knowledge.gene_universe: 'every' not supported; accepted: \['measured', 'all'\]"),
    ("knowledge.ppi", ["string", "biogrid"], r"knowledge.ppi: source\(s\) \['biogrid'\] not supported; accepted: \["),
    ("datasets.0.gene_id_type", "entrez", r"gene_id_type: 'entrez' not supported; accepted: \['symbol', 'ensembl', 'auto'\]"),
    ("datasets.0.cell_type_annotation", {"min_confidence": 0.5},
     r"cell_type_annotation: needs exactly one of 'model' .* or 'train_from'"),
])
def test_out_of_range_recipe_values_name_the_key_and_what_is_accepted(tmp_path, key, value, expected):
    assert re.search(expected, _recipe_error(tmp_path, lambda recipe: _set(recipe, key, value)))


@pytest.mark.parametrize("key, value, expected", [
    ("metacells.cells_per_metacell", "five", r"metacells.cells_per_metacell: Input should be a valid integer \(got 'five'\)"),
    ("metacells.cells_per_metacell", 2.5, r"metacells.cells_per_metacell: Input should be a valid integer"),
    ("knowledge.min_ppi_score", "high", r"knowledge.min_ppi_score: Input should be a valid number"),
    ("datasets.0.use_raw", "yes", r"datasets\[0\] \(kang2018_muscat\).use_raw: Input should be a valid boolean"),
    ("datasets.0.columns", ["donor_id"], r"datasets\[0\] \(kang2018_muscat\).columns: Input should be a valid dictionary"),
    ("knowledge", "string", r"knowledge: Input should be a valid dictionary"),
])
def test_wrong_recipe_types_name_the_key(tmp_path, key, value, expected):
    assert re.search(expected, _recipe_error(tmp_path, lambda recipe: _set(recipe, key, value)))


def test_missing_and_repeated_datasets_are_errors(tmp_path):
    assert "datasets: required key missing" in _recipe_error(tmp_path, lambda r: r.pop("datasets"))
    assert "datasets[0] (kang2018_muscat).path: required key missing" in _recipe_error(
        tmp_path, lambda r: r["datasets"][0].pop("path"))
    assert "repeats dataset_id ['kang2018_muscat']" in _recipe_error(
        tmp_path, lambda r: r["datasets"].append(r["datasets"][0]))
    assert "datasets: List should have at least 1 item" in _recipe_error(tmp_path, lambda r: r.update(datasets=[]))


@pytest.mark.parametrize("value", [0, -2, 2.5])
def test_cells_per_metacell_override_is_validated_before_any_work(tmp_path, data_dir, value):
    with pytest.raises(ValueError, match=r"cells_per_metacell \(--cells-per-metacell\)"):
        build_dataset(_write_recipe(tmp_path, small_recipe()), data_dir, tmp_path / "out", cells_per_metacell=value,
                      progress=False)
    _assert_nothing_written(tmp_path)


def _write_recipe(tmp_path, recipe):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _assert_nothing_written(tmp_path):
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_missing_input_file(tmp_path, data_dir):
    recipe = small_recipe()
    recipe["datasets"][0]["path"] = "scrna/no_such_file.h5ad"
    with pytest.raises(FileNotFoundError, match="no_such_file.h5ad"):
        build_dataset(_write_recipe(tmp_path, recipe), data_dir, tmp_path / "out", progress=False)
    _assert_nothing_written(tmp_path)


def test_missing_metadata_column(tmp_path, data_dir):
    recipe = small_recipe()
    recipe["datasets"][0]["columns"]["donor_id"] = "patient"
    with pytest.raises(ValueError, match=r"lacks obs column\(s\) \['patient'\].*available columns: .*donor_id"):
        build_dataset(_write_recipe(tmp_path, recipe), data_dir, tmp_path / "out", progress=False)
    _assert_nothing_written(tmp_path)


def test_condition_value_not_in_data(tmp_path, data_dir):
    recipe = small_recipe()
    recipe["datasets"][0]["values"]["condition"] = {"ctrl": "control", "stimulated": "stim"}
    with pytest.raises(ValueError, match=r"not in the data: \['stimulated'\]; values present: \['ctrl', 'stim'\]"):
        build_dataset(_write_recipe(tmp_path, recipe), data_dir, tmp_path / "out", progress=False)
    _assert_nothing_written(tmp_path)


def test_gene_table_with_duplicate_ids(tmp_path, data_dir):
    knowledge = tmp_path / "knowledge"
    knowledge.mkdir()
    path = knowledge / "orgHsEgDb_3.16_gene_table.tsv.gz"
    with gzip.open(data_dir / "knowledge" / path.name, "rt") as fh:
        lines = fh.readlines()
    with gzip.open(path, "wt") as fh:
        fh.writelines(lines + [lines[1]])  # repeat the first gene
    with pytest.raises(ValueError, match=r"duplicate entrez_id values .*\['1'\]"):
        load_gene_table(knowledge)


def test_cell_type_label_missing_from_the_map_is_fuzzy_matched_and_reported(data_dir):
    recipe = small_recipe()
    entry = recipe["datasets"][0]
    del entry["cell_type_map"]["B cells"]
    a = read_dataset(entry, data_dir, load_gene_table(data_dir / "knowledge"))
    table = a.uns["omnicelltosg_tables"]["harmonisation"].set_index("original")
    assert table.loc["B cells", "method"] == "fuzzy" and table.loc["B cells", "label"] == "B cell"
    assert harmonize.FUZZY_ACCEPT <= table.loc["B cells", "score"] < 100 and table.loc["B cells", "needs_review"]
    assert set(a.obs.loc[a.obs["cell_type_original"] == "B cells", "cell_type_ontology_id"]) == {"CL:0000236"}


def test_build_writes_reviewable_tables(built):
    out, info, _ = built
    for dataset_id in info["datasets"]:
        folder = out / "reports" / dataset_id
        harmonisation = pd.read_csv(folder / "harmonisation.tsv", sep="\t")
        assert {"field", "original", "ontology_id", "method", "score", "needs_review"} <= set(harmonisation.columns)
        genes = pd.read_csv(folder / "gene_mapping.tsv", sep="\t", keep_default_na=False)
        report = info["datasets"][dataset_id]
        assert len(genes) == report["n_input"] and (genes["how"] == "unmapped").sum() == report["unmapped"]
    cells = _cells(out)
    card = (out / "README.md").read_text()
    assert (out / "summary.png").stat().st_size > 20_000 and "![summary](summary.png)" in card
    flat = re.sub(r" +", " ", card)
    for cell_type, group in cells.groupby("cell_type"):  # the card's statistics are the data's
        assert f"| {cell_type} | {len(group)} | {int(group['n_cells'].sum())} |" in flat
    assert f"`{info['entity_version']}`" in card and "| string |" in card
    assert set(cells.loc[cells["disease"] == "systemic lupus erythematosus", "disease_category"]) == {
        "systemic lupus erythematosus"}
    assert set(cells.loc[cells["disease"] == "normal", "disease_category"]) == {"normal"}


def test_cli_reports_bad_input_with_exit_status_2(tmp_path, data_dir, capsys):
    from omnicelltosg.cli import main

    recipe = small_recipe()
    recipe["datasets"][1]["path"] = "scrna/missing.h5ad"
    status = main(["build", "--recipe", str(_write_recipe(tmp_path, recipe)), "--data", str(data_dir),
                   "--out", str(tmp_path / "out")])
    assert status == 2
    assert "missing.h5ad" in capsys.readouterr().err
    _assert_nothing_written(tmp_path)


def test_protein_sequence_priors_are_unirep_h_avg(built, data_dir):
    from dataset_script.build.unirep import UniRep
    from dataset_script.cohorts.loader import load_graph

    graph, entities = load_graph(built[0])
    assert graph.sequence_embeddings.shape == (graph.num_nodes, 64)
    has_seq = (entities["entity_type"] == "protein") & (entities["sequence"].fillna("").str.len() > 0)
    assert np.array_equal(graph.sequence_present.numpy(), has_seq.to_numpy())
    assert not graph.sequence_embeddings[~graph.sequence_present].any()  # placeholders, never read
    rows = np.flatnonzero(has_seq.to_numpy())[[0, 7, 42]]
    net = UniRep.from_npz(data_dir / "models" / "unirep_uniref50_64units_jax-unirep3.0.0.npz")
    direct = net.embed(entities["sequence"].iloc[rows].tolist())
    torch.testing.assert_close(graph.sequence_embeddings[rows], direct, rtol=1e-4, atol=1e-5)
    assert "UniRep 64" in built[1]["encoders"]["sequence"]
