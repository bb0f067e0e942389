"""Issue 20, without a built dataset: output folders are never someone else's, identifiers never
become paths outside the output, model files never run code, concurrent writers never both "win",
and bad inputs and recipe values are clear errors naming what is wrong (defects 1-4, 7-10)."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from dataset_script.build.annotate import annotate, load_model, train_model
from dataset_script.build.ingest import read_dataset
from dataset_script.build.recipe import DatasetEntry, load_recipe
from dataset_script.files import (
    MARKER,
    atomic_directory,
    check_output_folder,
    check_safe_name,
    path_inside,
    remove_stale_temporaries,
)

from .conftest import KANG, RECIPE, small_recipe


def _kang_entry(path, **extra) -> dict:
    entry = next(d for d in yaml.safe_load(RECIPE.read_text())["datasets"] if d["dataset_id"] == "kang2018_muscat")
    return {**entry, "path": str(path), **extra}


def _write_recipe(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _users_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "D"
    (folder / "mywork").mkdir(parents=True)
    (folder / "thesis.tex").write_text("\\chapter{years of work}")
    (folder / "mywork" / "notes.md").write_text("notes")
    return folder


def _assert_users_folder_intact(folder: Path) -> None:
    assert (folder / "thesis.tex").read_text() == "\\chapter{years of work}"
    assert (folder / "mywork" / "notes.md").read_text() == "notes"
    assert not (folder / MARKER).exists()


# --- defect 1: CellTOSGDataLoader(output_dir=D) removed whatever D held

@pytest.mark.parametrize("overwrite", [False, True])
def test_loader_output_dir_never_removes_a_users_folder(tmp_path, overwrite):
    from dataset_script.cohorts.original_api import CellTOSGDataLoader

    folder = _users_folder(tmp_path)
    with pytest.raises(FileExistsError, match=r"not an OmniCellTOSG export folder.*even with overwrite"):
        # refused before anything is loaded: the root does not even need to exist
        CellTOSGDataLoader(root=tmp_path / "no-dataset", conditions={}, task="sex", output_dir=str(folder),
                           overwrite=overwrite)
    _assert_users_folder_intact(folder)


def test_export_folder_is_replaced_only_when_ours_and_asked(tmp_path):
    out = tmp_path / "export"
    with atomic_directory(out, replace=False, kind="export") as tmp:
        (tmp / "v1").write_text("1")
    assert (out / MARKER).exists() and (out / "v1").exists()
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        check_output_folder(out, kind="export", overwrite=False)
    with pytest.raises(FileExistsError, match="it is a 'export' folder"):
        check_output_folder(out, kind="dataset", overwrite=True)  # an export is not a dataset
    with atomic_directory(out, replace=True, kind="export") as tmp:
        (tmp / "v2").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "v2"])
    check_output_folder(tmp_path / "empty", kind="export", overwrite=False)  # absent: fine
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty", kind="export", overwrite=False)  # empty: fine


# --- defect 2: dataset_id was used as a path

@pytest.mark.parametrize("bad", ["../../x", "/tmp/abs", "", ".", "..", "a/b", "a\\b", ".hidden", "x" * 200, 101])
def test_unsafe_dataset_ids_are_refused_by_the_recipe(tmp_path, bad):
    recipe = small_recipe()
    recipe["datasets"][0]["dataset_id"] = bad
    with pytest.raises(ValueError, match=r"datasets\[0\].*dataset_id") as err:
        load_recipe(_write_recipe(tmp_path, recipe))
    assert repr(bad)[:40] in str(err.value) or "valid string" in str(err.value)
    with pytest.raises(ValueError, match="dataset_id"):
        DatasetEntry.of({**recipe["datasets"][0]})


def test_paths_are_proven_to_lie_under_their_root(tmp_path):
    assert check_safe_name("kang2018_muscat.v2-1") == "kang2018_muscat.v2-1"
    assert path_inside(tmp_path, "reports", "a", "b.tsv") == tmp_path.resolve() / "reports" / "a" / "b.tsv"
    for parts in (("..", "x"), ("/etc/passwd",), ("a", "..", "..", "x"), ("",)):
        with pytest.raises(ValueError, match="outside|Refusing"):
            path_inside(tmp_path / "root", *parts)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="outside"):
        path_inside(tmp_path / "root", "link", "escape.tsv")


def test_writer_refuses_report_names_outside_the_dataset(tmp_path):
    from dataset_script.build.writer import write_dataset
    from dataset_script.schema import embedding_schema

    empty = {name: pd.DataFrame() for name in ("cells", "entities", "edges", "gene_panels")}
    with pytest.raises((ValueError, KeyError)):
        write_dataset(tmp_path / "out", **empty, embeddings=embedding_schema({"name": 2, "description": 2})
                      .empty_table(), card="", configs=[], build_info={},
                      reports={"../../escaped": pd.DataFrame({"a": [1]})})
    assert not (tmp_path / "escaped.tsv").exists() and not (tmp_path.parent / "escaped.tsv").exists()
    assert not (tmp_path / "out").exists()


# --- defect 3: a CellTypist .pkl was unpickled with pickle (a payload ran)

class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A CellTypist model trained here on a tiny two-class problem, and its training cells."""
    rng = np.random.default_rng(0)
    labels = np.array(["T cell", "B cell"] * 30)
    X = rng.poisson(1.0, (60, 12)).astype(np.float32)
    X[labels == "B cell", :4] += 8
    adata = ad.AnnData(X=sp.csr_matrix(X), var=pd.DataFrame(index=[f"G{i}" for i in range(12)]))
    path = tmp_path_factory.mktemp("model") / "small.pkl"
    train_model(adata, labels, path, alpha_grid=(0.1,))
    return path, adata, labels


def test_celltypist_models_written_here_and_logistic_models_still_load(small_model, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    path, adata, labels = small_model
    calls = annotate(adata, path, min_confidence=0.5)
    assert (calls["cell_type"].to_numpy() == labels).mean() > 0.9
    # the layout of CellTypist's published models: LogisticRegression + StandardScaler + description
    X = np.asarray(adata.X.todense())
    clf = LogisticRegression(max_iter=200).fit(X, labels)
    clf.features = np.asarray(adata.var_names)
    published = tmp_path / "Immune_like.pkl"
    published.write_bytes(pickle.dumps({"Model": clf, "Scaler_": StandardScaler().fit(X),
                                        "description": {"date": "2022", "number_celltypes": 2}}))
    model = load_model(published)
    assert list(model.cell_types) == sorted(set(labels)) and model.description["number_celltypes"] == 2


@pytest.mark.parametrize("where", ["recipe_model", "cached_model"])
def test_crafted_model_pickle_is_refused_and_never_run(tmp_path, where):
    marker = tmp_path / "payload_ran"
    name = "evil.pkl" if where == "recipe_model" else "celltypist-kang-0123456789ab.pkl"
    evil = tmp_path / name
    evil.write_bytes(pickle.dumps({"Model": _Payload(marker), "Scaler_": None, "description": {}}))
    adata = ad.AnnData(X=sp.csr_matrix(np.ones((3, 2), np.float32)), var=pd.DataFrame(index=["A", "B"]))
    with pytest.raises(ValueError, match=rf"Refusing CellTypist model .*{name}.*posix\.system.*nothing from this file"):
        annotate(adata, evil, min_confidence=0.5)
    assert not marker.exists()
    # nor a pickle of the right classes with the wrong structure, nor random bytes
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="is not a CellTypist model"):
        load_model(tmp_path / "list.pkl")
    (tmp_path / "junk.pkl").write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="Refusing CellTypist model"):
        load_model(tmp_path / "junk.pkl")


# --- defect 4: two concurrent writers into one output both "won"

def _writer(out: str, name: str, barrier, results) -> None:
    try:
        with atomic_directory(out, replace=False, kind="dataset") as tmp:
            (tmp / "who").write_text(name)
            barrier.wait(timeout=60)  # both are inside, past every early check, before either commits
        results.put((name, "ok"))
    except FileExistsError as err:
        results.put((name, f"FileExistsError: {err}"))


def test_two_concurrent_writers_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    out = tmp_path / "out"
    procs = [ctx.Process(target=_writer, args=(str(out), name, barrier, results)) for name in ("A", "B")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    outcome = dict(results.get(timeout=5) for _ in procs)
    winners = [n for n, r in outcome.items() if r == "ok"]
    assert len(winners) == 1, outcome
    loser = next(n for n in outcome if n not in winners)
    assert "appeared while it was being written" in outcome[loser]
    assert (out / "who").read_text() == winners[0]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


def test_a_folder_created_during_the_write_is_kept(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileExistsError, match="appeared while"):
        with atomic_directory(out, replace=False, kind="dataset") as tmp:
            (tmp / "data").write_text("ours")
            out.mkdir()
            (out / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]


# --- defect 7 (and 9, 10): corrupt, unreadable and non-finite matrices

@pytest.fixture(scope="module")
def kang_csr(data_dir, tmp_path_factory):
    adata = ad.read_h5ad(data_dir / KANG)
    adata.X = sp.csr_matrix(adata.X)
    return adata


def test_corrupt_h5ad_matrix_is_a_clear_error_not_a_crash(tmp_path, data_dir, kang_csr, genes):
    import h5py

    path = tmp_path / "corrupt.h5ad"
    kang_csr.write_h5ad(path)
    with h5py.File(path, "r+") as f:  # random values inside the matrix' column indices
        idx = f["X/indices"][:]
        rng = np.random.default_rng(0)
        idx[rng.integers(0, len(idx), 1000)] = rng.integers(-2**31, 2**31 - 1, 1000)
        f["X/indices"][:] = idx
    # in a child process: before the fix the build went on and died natively (segfault) later on
    code = ("import sys, yaml; from pathlib import Path; from dataset_script.build.ingest import read_dataset\n"
            "from dataset_script.build.knowledge import load_gene_table\n"
            f"entry = yaml.safe_load({yaml.safe_dump(_kang_entry(path))!r})\n"
            f"read_dataset(entry, Path({str(data_dir)!r}), load_gene_table(Path({str(data_dir)!r}) / 'knowledge'))\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert child.returncode == 1, child.stderr[-2000:]
    assert "ValueError: 'kang2018_muscat': the expression matrix is malformed (indices must be" in child.stderr


def test_unreadable_h5ad_names_the_file(tmp_path, data_dir, genes):
    path = tmp_path / "random.h5ad"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match=r"Cannot read .*random\.h5ad as h5ad"):
        read_dataset(_kang_entry(path), data_dir, genes)


def test_nan_and_inf_are_refused_and_counted_separately(tmp_path, data_dir, kang_csr, genes):
    bad = kang_csr.copy()
    bad.X.data[:3] = np.inf
    bad.X.data[-1] = np.nan  # the last cell
    path = tmp_path / "nonfinite.h5ad"
    bad.write_h5ad(path)
    with pytest.raises(ValueError, match=r"'kang2018_muscat'.* 1 NaN and 3 infinite value\(s\) in 2 cell\(s\)"):
        read_dataset(_kang_entry(path), data_dir, genes)


def test_all_zero_cells_are_dropped_with_a_warning_and_counted(tmp_path, data_dir, kang_csr, genes):
    zeroed = kang_csr.copy()
    X = zeroed.X.tolil()
    X[[0, 7, 9], :] = 0
    zeroed.X = sp.csr_matrix(X)
    path = tmp_path / "zeros.h5ad"
    zeroed.write_h5ad(path)
    with pytest.warns(UserWarning, match="3 of 1556 cells have all-zero expression and are dropped"):
        result = read_dataset(_kang_entry(path), data_dir, genes)
    assert result.n_obs == 1553 and result.uns["omnicelltosg"]["dropped_empty_cells"] == 3
    assert not set(result.obs_names) & set(kang_csr.obs_names[[0, 7, 9]])
    assert (np.asarray(result.X.sum(1)).ravel() > 0).all()


# --- defect 8: recipe values

@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["metacells"].update(cells_per_metacell=-3), r"metacells\.cells_per_metacell: .*greater than or equal to 1"),
    (lambda r: r["metacells"].update(cells_per_metacell=0), r"metacells\.cells_per_metacell: .*greater than or equal to 1"),
    (lambda r: r["metacells"].update(cells_per_metacell="five"), r"metacells\.cells_per_metacell: .*'five'"),
    (lambda r: r["datasets"][0].update(cells_per_metacell=0), r"datasets\[0\] \(kang2018_muscat\)\.cells_per_metacell"),
    (lambda r: r["metacells"].update(cells_per_metacel=5), r"metacells: unknown key\(s\) \['cells_per_metacel'\]"),
    (lambda r: r["datasets"][0].update(dataset_idd="x"), r"datasets\[0\].*unknown key\(s\) \['dataset_idd'\]"),
])
def test_bad_recipe_values_name_the_key(tmp_path, mutate, message):
    recipe = small_recipe()
    recipe.setdefault("metacells", {})
    mutate(recipe)
    with pytest.raises(ValueError, match=message):
        load_recipe(_write_recipe(tmp_path, recipe))


def test_cli_cells_per_metacell_zero_is_an_error_not_ignored(tmp_path, data_dir, capsys):
    from omnicelltosg.cli import main

    status = main(["build", "--recipe", str(_write_recipe(tmp_path, small_recipe())), "--data", str(data_dir),
                   "--out", str(tmp_path / "out"), "--cells-per-metacell", "0"])
    assert status == 2
    assert "cells_per_metacell (--cells-per-metacell) 0 is not valid" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    recipe = load_recipe(_write_recipe(tmp_path, small_recipe()))
    with pytest.raises(ValueError, match="cells_per_metacell"):
        recipe.cells_per_metacell_for(recipe.datasets[0], 0)


# --- defect 9: --overwrite, early refusal, stale temporaries

def test_build_refuses_a_non_dataset_folder_before_any_work(tmp_path, data_dir):
    from dataset_script.build.pipeline import build_dataset

    folder = _users_folder(tmp_path)
    recipe = small_recipe()
    recipe["datasets"][0]["path"] = "scrna/does-not-exist.h5ad"  # would fail at ingest, if ingest were reached
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not an OmniCellTOSG dataset folder"):
            build_dataset(_write_recipe(tmp_path, recipe), data_dir, folder, overwrite=overwrite, progress=False)
    _assert_users_folder_intact(folder)
    with atomic_directory(tmp_path / "ds", kind="dataset") as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):  # before ingest, not after a whole build
        build_dataset(_write_recipe(tmp_path, recipe), data_dir, tmp_path / "ds", progress=False)


def test_temporaries_of_killed_writers_are_cleaned_up(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(child.stdout)
    stale = tmp_path / f".out.tmp-{dead}-0123abcd"
    (stale / "data").mkdir(parents=True)
    alive = tmp_path / f".out.tmp-{os.getppid()}-0123abcd"  # a running process: kept
    alive.mkdir()
    other = tmp_path / ".notes.tmp-1-0123abcd"  # another folder's: kept
    other.mkdir()
    assert remove_stale_temporaries(tmp_path / "out") == [stale]
    assert not stale.exists() and alive.exists() and other.exists()


# --- defect 10: loader arguments (checked before anything is loaded)

@pytest.mark.parametrize("kwargs, message", [
    (dict(test_donors="101"), r"test_donors must be a list of donor keys; got the string '101' \(did you mean \['101'\]\?\)"),
    (dict(test_donors=101), r"test_donors must be a list of donor keys; got int 101"),
    (dict(conditions=["blood"]), r"conditions must be a dict .*got list"),
    (dict(seed="0"), r"seed must be an integer; got '0'"),
    (dict(seed=True), r"seed must be an integer; got True"),
])
def test_loader_argument_types_are_named(tmp_path, kwargs, message):
    from dataset_script.cohorts.loader import load_cohort

    with pytest.raises(ValueError, match=message):
        load_cohort(tmp_path / "no-dataset", task="sex", **kwargs)


# --- property: generated recipe values give a valid recipe or a ValueError naming the key, nothing else

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ANY = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                 st.text(max_size=12), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4),
                                                                                            st.integers(), max_size=2))


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["metacells.cells_per_metacell", "metacells.min_cells_per_partition",
                            "knowledge.min_ppi_score", "knowledge.ppi", "datasets.0.dataset_id",
                            "datasets.0.cells_per_metacell", "datasets.0.columns", "datasets.0.constants",
                            "datasets.0.values", "name", "datasets"]), value=_ANY)
def test_generated_recipe_values_are_valid_or_named_errors(tmp_path, key, value):
    recipe = small_recipe()
    node = recipe
    *parents, last = key.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[last] = value
    path = tmp_path / "generated.yaml"
    path.write_text(yaml.safe_dump(recipe))
    try:
        parsed = load_recipe(path)
    except ValueError as err:
        assert f"Recipe {path} is not valid" in str(err) and last in str(err) or "top level" in str(err) or \
            "datasets" in str(err)
    else:
        for entry in parsed.datasets:
            check_safe_name(entry.dataset_id)
            assert parsed.cells_per_metacell_for(entry) >= 1
