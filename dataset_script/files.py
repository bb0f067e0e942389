"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Every writer of the project goes through these helpers: write into a temporary sibling (same folder,
so the final rename never crosses a file system), then `os.replace` it onto the target. On an error the
temporary is removed and the target is left as it was. Temporary names start with a dot and carry the
process id, so concurrent writers never share one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def _temporary_sibling(path: Path, kind: str = "tmp") -> Path:
    """`.<name>.<kind>-<pid>-<random><suffix>` next to `path` (not created). The suffix is kept so writers
    that pick a format by extension (matplotlib, numpy `.npz`, AnnData `.h5ad`) still do. Not made with
    `tempfile.mkstemp`/`mkdtemp`: those create mode 0600/0700, and what we write must get the user's
    usual permissions (umask), like any file they write."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


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


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder; on leaving the block without an error it becomes `path`.

    Args:
        path: the final folder.
        replace: if True, an existing folder at `path` is swapped out and removed only after the new one is
            in place; if False, an existing `path` raises `FileExistsError` (checked before the block
            runs, and again at the commit).

    Raises:
        FileExistsError: `replace=False` and `path` exists.
    """
    path = Path(path)
    if not replace and path.exists():
        raise FileExistsError(f"{path} exists; refusing to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            if not replace:
                raise FileExistsError(f"{path} appeared while it was being written; refusing to replace it.")
            old = _temporary_sibling(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
