"""Atomic writes (`dataset_script.files`): complete or absent, never half-written, no temporaries left,
and the user's usual permissions."""

from __future__ import annotations

import os
import stat

import pytest

from dataset_script.files import atomic_directory, atomic_file, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_file_replaces_on_success_and_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    atomic_write_text(target, "first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "first"
    with atomic_file(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".csv" and tmp.name.startswith(".")
        tmp.write_text("second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.csv"]


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_directory(tmp_path / "folder") as tmp:
            (tmp / "inner.txt").write_text("y")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == 0o644
    assert _mode(tmp_path / "folder") == 0o755


def test_atomic_directory_swaps_or_refuses(tmp_path):
    target = tmp_path / "dataset"
    with atomic_directory(target) as tmp:
        (tmp / "v1").write_text("1")
    with pytest.raises(FileExistsError, match="refusing"):
        with atomic_directory(target, replace=False):
            pass
    with pytest.raises(ValueError):
        with atomic_directory(target) as tmp:
            (tmp / "v2").write_text("2")
            raise ValueError("build failed")
    assert sorted(p.name for p in target.iterdir()) == ["v1"]
    with atomic_directory(target) as tmp:
        (tmp / "v2").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["v2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_file(tmp_path / "never.txt"):
            pass
    assert not list(tmp_path.iterdir())
