"""Download the raw files of a ``links.txt`` list (GEO supplementary files) into one folder, resumably.

The links file is the format of the original OmniCellTOSG release: one file per line,
whitespace-separated ``GSM_ID path URL``, optionally a fourth column with the file's known SHA-256
(``<64 hex>`` or ``sha256:<64 hex>``). Blank lines and lines starting with ``#`` are skipped. ``path``
is where the file goes, relative to the output folder (``GSM5706853/GSM5706853_P1_matrix.mtx.gz``).

Downloads go through `pooch <https://www.fatiando.org/pooch/>`_ (:func:`pooch.create` /
:meth:`pooch.Pooch.fetch` with :class:`pooch.HTTPDownloader` or :class:`pooch.FTPDownloader`): each file
streams into a temporary name, is checked against the known SHA-256 when one is given, and only then
renamed onto its final name, so an interrupted or failed download never leaves a partial file under the
final name. Transient failures are retried by pooch (``retry_if_failed``). One failing file does not
stop the others: failures are collected, summarised at the end, and raised as :class:`DownloadError`.

``<out>/download_manifest.tsv`` records every file (GSM ID, path, URL, SHA-256, size, status, error). It
is how a rerun resumes: a file already present whose SHA-256 matches its manifest row (same path and
URL), or the links file's fourth column, is skipped; anything else is downloaded again. The manifest is
written atomically (:func:`dataset_script.files.atomic_file`), at the end of a run and at most every
``manifest_interval`` seconds during it. Do not run two downloads into the same folder at once.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from dataset_script.files import atomic_file, path_inside, pid_running, sha256_file

#: The manifest written into the output folder.
MANIFEST = "download_manifest.tsv"
#: Columns of :data:`MANIFEST`, in order.
MANIFEST_COLUMNS = ("gsm_id", "path", "url", "sha256", "size", "status", "error")
#: What a links-file line must look like (named in parse errors).
LINE_FORMAT = "GSM_ID path URL [sha256]  (whitespace-separated; path relative to the output folder)"
#: Statuses of a manifest row: fetched in this run, already present and verified, or failed.
DOWNLOADED, PRESENT, FAILED = "downloaded", "present", "failed"
#: Default number of retries of a failed download (pooch waits 1 s, 2 s, … between attempts).
DEFAULT_RETRIES = 3
#: Default seconds requests waits for the server to connect / send the next bytes.
DEFAULT_TIMEOUT = 60.0
_SCHEMES = ("http", "https", "ftp")
_SHA256 = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")
_STAGING_PREFIX = ".download-staging-"
_STAGING = re.compile(re.escape(_STAGING_PREFIX) + r"(\d+)-[0-9a-f]{8}")


@dataclass(frozen=True)
class Link:
    """One line of a links file: the sample, where the file goes (relative POSIX path), its URL,
    the known SHA-256 (lower-case hex) or None, and the line number it came from."""

    gsm_id: str
    path: str
    url: str
    sha256: str | None = None
    line: int = 0


@dataclass
class FileResult:
    """What happened to one file: ``status`` is :data:`DOWNLOADED`, :data:`PRESENT` (skipped: already
    there with the expected SHA-256) or :data:`FAILED` (``error`` says why)."""

    link: Link
    status: str
    sha256: str = ""
    size: int | None = None
    error: str = ""


@dataclass
class DownloadReport:
    """The results of one :func:`download_links` run, in links-file order, and the manifest path."""

    results: list[FileResult] = field(default_factory=list)
    manifest: Path | None = None

    @property
    def failures(self) -> list[FileResult]:
        """The results whose status is :data:`FAILED`."""
        return [r for r in self.results if r.status == FAILED]

    def count(self, status: str) -> int:
        """Number of results with this status."""
        return sum(r.status == status for r in self.results)

    def summary(self) -> str:
        """A few lines for the terminal: counts per status, then one line per failed file and why."""
        head = (f"{len(self.results)} files: {self.count(DOWNLOADED)} downloaded, {self.count(PRESENT)} already "
                f"present (SHA-256 verified, skipped), {self.count(FAILED)} failed; manifest {self.manifest}")
        lines = [head]
        if self.failures:
            lines.append("Failed (rerun the same command to retry only these):")
            lines += [f"  line {r.link.line}: {r.link.path} <- {r.link.url}\n      {r.error}" for r in self.failures]
        return "\n".join(lines)


class DownloadError(RuntimeError):
    """Raised by :func:`download_links` when at least one file failed; ``report`` holds every result
    (the manifest has been written and the other files downloaded)."""

    def __init__(self, report: DownloadReport):
        self.report = report
        super().__init__(f"{len(report.failures)} of {len(report.results)} downloads failed:\n{report.summary()}")


def _check_relative_path(value: str, line: int) -> str:
    """``value`` normalised to a relative POSIX path, or ValueError if it could leave the output folder."""
    where = f"line {line}: path {value!r}"
    if "\\" in value or re.match(r"[A-Za-z]:", value):
        raise ValueError(f"{where} has a backslash or a drive letter; use a relative path with '/'")
    pure = PurePosixPath(value)
    if pure.is_absolute():
        raise ValueError(f"{where} is absolute; it must be relative to the output folder")
    if ".." in pure.parts:
        raise ValueError(f"{where} contains '..'; it must stay inside the output folder")
    if not pure.parts or str(pure) == ".":
        raise ValueError(f"{where} names no file")
    if pure.parts[0] == MANIFEST or pure.parts[0].startswith(_STAGING_PREFIX):
        raise ValueError(f"{where} collides with the downloader's own {pure.parts[0]!r}")
    return str(pure)


def parse_links(text: str) -> list[Link]:
    """Parse the text of a links file (see the module docstring for the format).

    Args:
        text: the whole file.

    Returns:
        list[Link]: one per non-blank, non-comment line, in order.

    Raises:
        ValueError: naming the line number, for a line without 3 or 4 fields (and the expected
            format :data:`LINE_FORMAT`), a path that is absolute, holds ``..`` or a backslash, a URL
            that is not http(s) or ftp, a fourth column that is not a SHA-256, or a path listed twice.
    """
    links: list[Link] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) not in (3, 4):
            raise ValueError(f"line {number}: expected {LINE_FORMAT}; got {len(fields)} field(s): {line[:200]!r}")
        gsm_id, path, url = fields[:3]
        path = _check_relative_path(path, number)
        parts = urlsplit(url)
        if parts.scheme.lower() not in _SCHEMES or not parts.netloc:
            raise ValueError(f"line {number}: URL {url!r} is not an http(s):// or ftp:// URL (expected {LINE_FORMAT})")
        sha = None
        if len(fields) == 4:
            m = _SHA256.fullmatch(fields[3])
            if not m:
                raise ValueError(f"line {number}: fourth column {fields[3]!r} is not a SHA-256 (64 hex digits, "
                                 f"optionally 'sha256:' first); expected {LINE_FORMAT}")
            sha = m[1].lower()
        if path in seen:
            raise ValueError(f"line {number}: path {path!r} is already listed on line {seen[path]}")
        seen[path] = number
        links.append(Link(gsm_id, path, url, sha, number))
    return links


def read_links(path: str | os.PathLike) -> list[Link]:
    """:func:`parse_links` of a file (UTF-8). Raises OSError if unreadable, ValueError as parse_links."""
    return parse_links(Path(path).read_text(encoding="utf-8"))


def read_manifest(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """The rows of a download manifest keyed by ``path``; an empty dict if the file does not exist.

    Raises:
        ValueError: if the file exists but lacks the :data:`MANIFEST_COLUMNS` header (it is not a
            manifest this module wrote; move it away to start afresh).
    """
    path = Path(path)
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise ValueError(f"{path} is not a download manifest (header {reader.fieldnames}, expected "
                             f"{list(MANIFEST_COLUMNS)}); move it away to start a fresh one")
        return {row["path"]: row for row in reader}


def _write_manifest(path: Path, rows: dict[str, dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    for key in sorted(rows):
        writer.writerow({c: " ".join(str(rows[key].get(c, "")).split()) for c in MANIFEST_COLUMNS})
    with atomic_file(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")


def _row(result: FileResult) -> dict[str, str]:
    link = result.link
    return {"gsm_id": link.gsm_id, "path": link.path, "url": link.url, "sha256": result.sha256,
            "size": "" if result.size is None else str(result.size), "status": result.status, "error": result.error}


def _verified_present(link: Link, target: Path, previous: dict[str, str] | None) -> FileResult | None:
    """A PRESENT result if ``target`` exists with the SHA-256 the links file or the manifest expects."""
    if not target.is_file():
        return None
    expected = link.sha256
    size = None
    recorded = bool(previous) and previous.get("url") == link.url and previous.get("status") in (DOWNLOADED, PRESENT)
    if recorded and (expected is None or previous.get("sha256") == expected):
        expected = previous.get("sha256") or None
        size = previous.get("size")
    if expected is None:
        return None
    actual_size = target.stat().st_size
    if size not in (None, "") and str(actual_size) != size:
        return None
    digest = sha256_file(target)
    if digest != expected:
        return None
    return FileResult(link, PRESENT, digest, actual_size)


def _downloader(url: str, *, progressbar: bool, timeout: float):
    import pooch

    if urlsplit(url).scheme.lower() == "ftp":
        return pooch.FTPDownloader(progressbar=progressbar, timeout=timeout)
    # identity: store exactly the bytes the server holds (a server that gzip-encodes a .gz in transit
    # would otherwise have requests decode it, and the file under the .gz name would be plain text).
    return pooch.HTTPDownloader(progressbar=progressbar, timeout=timeout, headers={"Accept-Encoding": "identity"})


def describe_error(err: BaseException) -> str:
    """A one-line reason for a failed download: ``HTTP 404 Not Found``, ``connection dropped …``,
    ``connection failed …``, ``timed out …``, ``checksum mismatch …`` or the exception's own text."""
    import requests

    if isinstance(err, requests.HTTPError) and err.response is not None:
        return f"HTTP {err.response.status_code} {err.response.reason or ''}".strip()
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return f"connection dropped mid-file (incomplete read): {err}"
    if isinstance(err, requests.Timeout):
        return f"timed out: {err}"
    if isinstance(err, requests.ConnectionError):
        return f"connection failed: {err}"
    if isinstance(err, ValueError) and "hash of downloaded file" in str(err):
        return f"checksum mismatch: {err}"
    return f"{type(err).__name__}: {err}"


def _remove_stale_staging(out: Path) -> None:
    """Remove staging folders of download runs whose process is gone (killed mid-run)."""
    for p in out.iterdir():
        m = _STAGING.fullmatch(p.name)
        if m and p.is_dir() and not p.is_symlink() and int(m[1]) != os.getpid() and not pid_running(int(m[1])):
            shutil.rmtree(p, ignore_errors=True)


def download_links(links: list[Link] | str | os.PathLike, out: str | os.PathLike, *,
                   retries: int = DEFAULT_RETRIES, timeout: float = DEFAULT_TIMEOUT, progressbar: bool = True,
                   manifest_interval: float = 30.0, raise_on_failure: bool = True,
                   echo: Callable[[str], None] | None = print) -> DownloadReport:
    """Download every file of a links list into ``out/<path>``, skipping those already complete.

    Every path is checked first (:func:`dataset_script.files.path_inside`: after resolving links it must
    lie under ``out``); nothing is downloaded if one is unsafe. Each file is then fetched with pooch
    (HTTP(S) via requests, or FTP) into a staging folder inside ``out`` (temporary name, hash check,
    rename), and renamed onto ``out/<path>`` only when complete. A file already at ``out/<path>`` whose
    SHA-256 matches its manifest row (same URL) or the links file's fourth column is skipped; a file whose
    download fails keeps whatever was under its final name before (nothing, for a new file).

    Args:
        links: parsed :class:`Link` list, or the path of a links file (:func:`read_links`).
        out: output folder (created if missing).
        retries: extra attempts per file after a connection error, HTTP error or checksum mismatch
            (pooch ``retry_if_failed``; it waits 1 s, 2 s, … up to 10 s between attempts).
        timeout: seconds requests waits to connect and between received bytes.
        progressbar: tqdm progress bar per file on stderr.
        manifest_interval: seconds between manifest saves during the run (it is always saved at the end).
        raise_on_failure: raise :class:`DownloadError` when any file failed (after all files were tried).
        echo: called with one line per file and the final summary; None for silence.

    Returns:
        DownloadReport: one :class:`FileResult` per link, and the manifest path.

    Raises:
        ValueError: the links file is malformed (:func:`parse_links`), a path resolves outside ``out``,
            or an existing manifest cannot be read (:func:`read_manifest`). Raised before any download.
        OSError: the links file cannot be read or ``out`` cannot be created.
        DownloadError: at least one file failed and ``raise_on_failure`` (its ``report`` has the details).
    """
    import pooch

    say = echo or (lambda _line: None)
    if not isinstance(links, list):
        links = read_links(links)
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    out = Path(out)
    targets = {}
    for link in links:
        try:
            targets[link.path] = path_inside(out, *PurePosixPath(link.path).parts)
        except ValueError as err:
            raise ValueError(f"line {link.line}: {err}") from None
    manifest_path = out / MANIFEST
    rows = read_manifest(manifest_path)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    staging = out / f"{_STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    report = DownloadReport(manifest=manifest_path)
    pup = pooch.create(path=staging, base_url="", retry_if_failed=retries,
                       registry={link.path: f"sha256:{link.sha256}" if link.sha256 else None for link in links},
                       urls={link.path: link.url for link in links})
    last_save = time.monotonic()
    try:
        for i, link in enumerate(links, start=1):
            target = targets[link.path]
            result = _verified_present(link, target, rows.get(link.path))
            if result is None:
                try:
                    fetched = Path(pup.fetch(link.path, downloader=_downloader(
                        link.url, progressbar=progressbar, timeout=timeout)))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(fetched, target)
                    result = FileResult(link, DOWNLOADED, sha256_file(target), target.stat().st_size)
                except Exception as err:  # noqa: BLE001 - one failing file must not stop the others
                    result = FileResult(link, FAILED, error=describe_error(err))
            report.results.append(result)
            rows[link.path] = _row(result)
            say(f"[{i}/{len(links)}] {result.status:10s} {link.path}" + (f"  ({result.error})" if result.error else ""))
            if time.monotonic() - last_save >= manifest_interval:
                _write_manifest(manifest_path, rows)
                last_save = time.monotonic()
    finally:
        _write_manifest(manifest_path, rows)
        shutil.rmtree(staging, ignore_errors=True)
    say(report.summary())
    if report.failures and raise_on_failure:
        raise DownloadError(report)
    return report
