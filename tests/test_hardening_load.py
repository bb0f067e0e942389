"""Issue 20 on a real built dataset: the build records each file's size, rows and SHA-256; loading
checks them, refuses repeated cell_id, and never serves a changed folder from the cache (defects
1, 5, 6; the tampering cases: extra, truncated and modified shard)."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from dataset_script.cohorts.loader import load_cells, load_cohort, load_graph
from dataset_script.cohorts.storage import DatasetIntegrityError, dataset_cache_dir
from dataset_script.files import MARKER

KANG = {"dataset_id": "kang2018_muscat"}


@pytest.fixture()
def copy_of(built, tmp_path):
    """A private copy of the small real build (the tests tamper with it)."""
    out = tmp_path / "dataset"
    shutil.copytree(built[0], out)
    return out


def _shards(path):
    return sorted((path / "data" / "cells").glob("*.parquet"))


def test_build_records_every_data_file_and_marks_its_folder(built):
    path, info, _ = built
    assert json.loads((path / MARKER).read_text())["kind"] == "dataset"
    records = json.loads((path / "build_info.json").read_text())["files"]
    assert records == info["files"]
    assert {"data/entities.parquet", "data/edges.parquet", "data/embeddings.parquet",
            "data/gene_panels.parquet"} <= set(records)
    assert sum(r["rows"] for f, r in records.items() if f.startswith("data/cells/")) == info["n_metacells"]
    for name, rec in records.items():
        assert rec["bytes"] == (path / name).stat().st_size and len(rec["sha256"]) == 64
    load_graph(path, verify=True)  # an untouched build passes the full check


def _assert_refused(path, match):
    for load in (lambda: load_cohort(path, conditions=KANG, task="condition"), lambda: load_graph(path)):
        with pytest.raises(DatasetIntegrityError, match=match):
            load()


def test_extra_shard_is_refused(copy_of):
    shard = _shards(copy_of)[0]
    shutil.copy(shard, shard.with_name("cells-99999.parquet"))
    _assert_refused(copy_of, r"extra file data/cells/cells-99999\.parquet \(not written by the build\)")


def test_truncated_shard_is_refused(copy_of):
    shard = _shards(copy_of)[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    _assert_refused(copy_of, r"cells-00000\.parquet has [\d,]+ bytes, the build wrote [\d,]+ \(truncated or changed\)")


def test_modified_shard_is_never_served_from_the_cache(copy_of):
    before = len(load_cells(copy_of, conditions=KANG))
    key = dataset_cache_dir(copy_of)
    shard = _shards(copy_of)[0]
    table = pq.read_table(shard)
    pq.write_table(table.slice(0, table.num_rows - 5), shard, compression="zstd")  # 5 rows fewer
    assert dataset_cache_dir(copy_of) != key  # the cache follows the files, not the folder name
    _assert_refused(copy_of, r"cells-00000\.parquet has [\d,]+ bytes")
    assert before > 0


def test_same_size_change_is_caught_with_verify(copy_of):
    records = json.loads((copy_of / "build_info.json").read_text())["files"]
    shard = _shards(copy_of)[0]
    key = dataset_cache_dir(copy_of)
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert shard.stat().st_size == records["data/cells/cells-00000.parquet"]["bytes"]
    assert dataset_cache_dir(copy_of) != key  # modification time is part of the key
    with pytest.raises(DatasetIntegrityError, match="content differs from the build's"):
        load_cohort(copy_of, conditions=KANG, task="condition", verify=True)
    with pytest.raises(DatasetIntegrityError, match="content differs from the build's"):
        load_graph(copy_of, verify=True)


def test_duplicate_cell_ids_are_refused_even_without_file_records(copy_of):
    info = json.loads((copy_of / "build_info.json").read_text())
    del info["files"]  # a folder built before the records existed
    (copy_of / "build_info.json").write_text(json.dumps(info))
    shard = _shards(copy_of)[0]
    shutil.copy(shard, shard.with_name("cells-99999.parquet"))
    with pytest.warns(UserWarning, match="built without file records"):
        with pytest.raises(DatasetIntegrityError, match=r"cell_id value\(s\) repeat"):
            load_cohort(copy_of, conditions=KANG, task="condition")


def test_loader_export_is_refused_then_replaced_only_with_overwrite(built, tmp_path):
    from dataset_script.cohorts.original_api import CellTOSGDataLoader

    out = tmp_path / "export"
    args = dict(root=built[0], conditions={"dataset_id": "kang2018_muscat"}, task="condition",
                extract_mode="inference", output_dir=str(out))
    CellTOSGDataLoader(**args)
    assert (out / MARKER).exists() and (out / "expression_matrix.npy").exists()
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        CellTOSGDataLoader(**args)
    CellTOSGDataLoader(**args, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_sample_size_above_the_cohort_is_an_error_not_silent_repeats(built):
    with pytest.raises(ValueError, match=r"sample_size=100000 exceeds the \d+ meta-cells"):
        load_cohort(built[0], conditions={"dataset_id": "onek1k_scdesignpop"}, task="cell_type", sample_size=100_000)
