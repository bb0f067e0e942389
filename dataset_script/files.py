"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Every writer of the project goes through these helpers: write into a temporary sibling (same folder,
so the final rename never crosses a file system), then rename it onto the target. On an error the
temporary is removed and the target is left as it was. Temporary names start with a dot and carry the
process id, so concurrent writers never share one, and a temporary folder left by a killed process
(its process id no longer running on this machine) is removed by the next write of the same folder.

Folders the project owns (dataset folders, exports) carry a marker file (:data:`MARKER`, naming their
kind). :func:`atomic_directory` with ``kind=`` writes it, refuses to write into a non-empty folder
that is not of that kind, replaces one only when asked, and commits with a rename that fails when
something appeared under the final name meanwhile (of two concurrent writers, exactly one wins).
Names that become paths are checked with :func:`check_safe_name`, and :func:`path_inside` proves a
path lies under its root.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

#: File that marks a folder written by this project: JSON ``{"kind": …, "writer": "omnicelltosg"}``.
MARKER = ".omnicelltosg"
#: A name that is one plain path component: a letter or digit, then letters, digits, ``.``, ``_``, ``-``.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Files that identify a dataset folder written before the marker existed.
_LEGACY_DATASET = ("build_info.json", "README.md", "data/cells")


def check_safe_name(value, what: str = "name") -> str:
    """``value`` if it can be used as one file or folder name, unchanged.

    Raises
    ------
    ValueError
        Naming ``what`` and the value, if it is not a string matching :data:`SAFE_NAME` (so never
        empty, ``.``, ``..``, absolute, or holding ``/`` or ``\\``).
    """
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a safe name: it names files and folders, so use 1-128 letters, "
                         "digits, '.', '_' or '-', starting with a letter or digit (no '/', no '..', not empty)")
    return value


def path_inside(root: str | os.PathLike, *parts: str) -> Path:
    """``root / parts…``, proven (after resolving ``..`` and links) to lie strictly under ``root``.

    Raises
    ------
    ValueError
        If the joined path resolves outside ``root`` or onto it; the message names both.
    """
    base = Path(root).resolve()
    target = base.joinpath(*parts).resolve()
    if target == base or not target.is_relative_to(base):
        raise ValueError(f"Refusing to write {'/'.join(map(str, parts))!r}: it resolves to {target}, outside {base}")
    return target


def _temporary_sibling(path: Path, kind: str = "tmp") -> Path:
    """`.<name>.<kind>-<pid>-<random><suffix>` next to `path` (not created). The suffix is kept so writers
    that pick a format by extension (matplotlib, numpy `.npz`, AnnData `.h5ad`) still do. Not made with
    `tempfile.mkstemp`/`mkdtemp`: those create mode 0600/0700, and what we write must get the user's
    usual permissions (umask), like any file they write."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB blocks (file records, download manifests, caches)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def pid_running(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove temporary folders of ``path`` (``.<name>.tmp-<pid>-…``) whose process is gone; returns them.

    Only names this module makes are touched, and only when their process id is not running on this
    machine (a writer on another machine sharing the folder is not seen: do not share one ``--out``
    between machines).
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp-(\d+)-[0-9a-f]{{8}}{re.escape(path.suffix)}")
    removed = []
    if not path.parent.is_dir():
        return removed
    for p in path.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m and p.is_dir() and not p.is_symlink() and int(m[1]) != os.getpid() and not pid_running(int(m[1])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on leaving the block without an error it replaces `path`.

    The parent folder is created if missing. Any existing file at `path` is replaced only at the end,
    in one `os.replace`; on an exception the temporary is deleted and the exception propagates.

    Example::

        with atomic_file(out / "summary.csv") as tmp:
            df.to_csv(tmp, index=False)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path` as a `Path`."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path` as a `Path`."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def folder_kind(path: str | os.PathLike) -> str | None:
    """The kind recorded in ``path``'s :data:`MARKER` (``"dataset"``, ``"export"``, …), ``"dataset"``
    for a dataset folder written before markers existed, else None."""
    path = Path(path)
    try:
        return str(json.loads((path / MARKER).read_text())["kind"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if all((path / name).exists() for name in _LEGACY_DATASET):
        return "dataset"
    return None


def check_output_folder(path: str | os.PathLike, *, kind: str, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that :func:`atomic_directory` would refuse at the end.

    Accepted: a missing path, an empty folder, or (with ``overwrite``) a folder of this ``kind``.

    Raises
    ------
    FileExistsError
        If ``path`` is a file; a non-empty folder not marked as an OmniCellTOSG ``kind`` folder (never
        replaced, even with ``overwrite``); or such a folder and ``overwrite`` is False.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise FileExistsError(f"{path} exists and is not a folder; choose another output {kind} folder")
    if not any(path.iterdir()):
        return
    found = folder_kind(path)
    if found != kind:
        raise FileExistsError(f"{path} is not empty and is not an OmniCellTOSG {kind} folder (no {MARKER} marker of "
                              f"kind {kind!r}{'; it is a ' + repr(found) + ' folder' if found else ''}); refusing to "
                              "write into it or replace it, even with overwrite. Choose a new or empty folder.")
    if not overwrite:
        raise FileExistsError(f"{path} holds an OmniCellTOSG {kind} already; pass overwrite=True (--overwrite) to "
                              "replace it")


def _commit(tmp: Path, path: Path, *, replace: bool, kind: str | None) -> None:
    """Rename ``tmp`` onto ``path``. The rename fails (EEXIST / ENOTEMPTY / ENOTDIR) when a non-empty
    folder or a file is at ``path``; a folder there is moved aside first only when ``replace``."""
    try:
        os.rename(tmp, path)
        return
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise
    if not replace:
        raise FileExistsError(f"{path} appeared while it was being written (another writer?); refusing to "
                              "replace it. Nothing was written.")
    if kind is not None:
        check_output_folder(path, kind=kind, overwrite=True)
    old = _temporary_sibling(path, "old")
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.rename(old, path)
        raise FileExistsError(f"{path} changed while it was being replaced (another writer?); nothing was written"
                              f"{'' if path.exists() else f'; the previous folder is at {old}'}") from err
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, replace: bool = True, kind: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder; on leaving the block without an error it becomes `path`.

    Args:
        path: the final folder.
        replace: if True, an existing folder at `path` is swapped out and removed only after the new one is
            in place; if False, an existing non-empty `path` raises `FileExistsError` (checked before the
            block runs, and again by the final rename, which fails if something appeared meanwhile).
        kind: a folder kind the project owns (``"dataset"``, ``"export"``): the folder gets the
            :data:`MARKER` of that kind, and a non-empty `path` that is not of that kind is never
            written into or replaced (:func:`check_output_folder`, before the block and at the commit).

    Temporary folders of `path` left by killed writers are removed first (:func:`remove_stale_temporaries`).

    Raises:
        FileExistsError: `path` may not be replaced (see above), or something appeared at `path` meanwhile.
    """
    path = Path(path)
    if kind is not None:
        check_output_folder(path, kind=kind, overwrite=replace)
    elif not replace and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists; refusing to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _temporary_sibling(path)
    tmp.mkdir()
    try:
        if kind is not None:
            (tmp / MARKER).write_text(json.dumps({"kind": kind, "writer": "omnicelltosg"}) + "\n")
        yield tmp
        _commit(tmp, path, replace=replace, kind=kind)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
