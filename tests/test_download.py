"""``omnicelltosg download``: real files of ../shared/data served by a local HTTP server, including a
connection dropped mid-file, a 404 and a flaky URL; checksums, manifest, resume, unsafe paths, CLI."""

from __future__ import annotations

import csv
import hashlib
import http.server
import threading
from collections import Counter
from pathlib import Path

import pytest

from dataset_script.build.download import (
    DOWNLOADED,
    FAILED,
    MANIFEST,
    MANIFEST_COLUMNS,
    PRESENT,
    DownloadError,
    download_links,
    parse_links,
    read_links,
)

#: Real files of the shared data folder served by the test server (small, so the tests stay fast).
SMALL = "ontology/cxg_organ_list.json"
MEDIUM = "ontology/HANCESTRO-ontology-v2025-10-14.tsv.gz"
LARGER = "knowledge/liana_omnipath_consensus_ligand_receptor_human.tsv.gz"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Server:
    """``/ok/<rel>`` serves ``<data>/<rel>``; ``/drop/<rel>`` announces the full Content-Length, sends half
    and closes (while ``drop`` is set); ``/flaky/<rel>`` does that on its first request only; anything
    else is a 404. ``counts`` counts requests per URL path."""

    def __init__(self, data: Path):
        self.data = data
        self.counts: Counter[str] = Counter()
        self.drop = True
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_GET(self):
                with server.lock:
                    server.counts[self.path] += 1
                    n = server.counts[self.path]
                route, _, rel = self.path.lstrip("/").partition("/")
                source = (server.data / rel).resolve()
                if route not in ("ok", "drop", "flaky") or not source.is_file() \
                        or not source.is_relative_to(server.data.resolve()):
                    self.send_error(404, "Not Found")
                    return
                body = source.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if (route == "drop" and server.drop) or (route == "flaky" and n == 1):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, route: str, rel: str) -> str:
        return f"{self.base}/{route}/{rel}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(data_dir):
    s = _Server(data_dir)
    yield s
    s.close()


def _write_links(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _manifest(out: Path) -> dict[str, dict[str, str]]:
    with (out / MANIFEST).open(newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        assert tuple(reader.fieldnames) == MANIFEST_COLUMNS
        return {row["path"]: row for row in reader}


def _files_under(out: Path) -> set[str]:
    """Every file under ``out`` (temporaries included: names starting with a dot are listed too)."""
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


# --- parsing -----------------------------------------------------------------------------------------

def test_parse_links_skips_comments_and_blank_lines_and_reads_the_checksum_column():
    digest = "AB" * 32
    links = parse_links("# GEO files\n\n"
                        "GSM1 GSM1/a_matrix.mtx.gz https://ftp.ncbi.nlm.nih.gov/geo/a_matrix.mtx.gz\n"
                        "   # indented comment\n"
                        f"GSM2\tGSM2/b.tsv.gz  ftp://ftp.ncbi.nlm.nih.gov/b.tsv.gz sha256:{digest}\n")
    assert [(x.gsm_id, x.path, x.sha256, x.line) for x in links] == [
        ("GSM1", "GSM1/a_matrix.mtx.gz", None, 3), ("GSM2", "GSM2/b.tsv.gz", digest.lower(), 5)]


@pytest.mark.parametrize(("line", "message"), [
    ("GSM1 only_two_fields", "expected GSM_ID path URL"),
    ("GSM1 a b c d e", "expected GSM_ID path URL"),
    ("GSM1 ../escape.gz https://x.org/a", "'..'"),
    ("GSM1 GSM1/../../escape.gz https://x.org/a", "'..'"),
    ("GSM1 /etc/passwd https://x.org/a", "absolute"),
    ("GSM1 C:/x https://x.org/a", "drive letter"),
    ("GSM1 a\\b https://x.org/a", "backslash"),
    ("GSM1 download_manifest.tsv https://x.org/a", "collides"),
    ("GSM1 a.gz file:///etc/passwd", "not an http"),
    ("GSM1 a.gz https://x.org/a not-a-sha", "not a SHA-256"),
])
def test_parse_links_rejects_a_bad_line_naming_its_number(line, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_links(f"# header\nGSM0 ok.gz https://x.org/ok.gz\n{line}\n")
    assert str(err.value).startswith("line 3:")


def test_parse_links_rejects_a_path_listed_twice():
    with pytest.raises(ValueError, match="line 2: path 'a/b.gz' is already listed on line 1"):
        parse_links("G1 a/b.gz https://x.org/1\nG2 a//b.gz https://x.org/2\n")


def test_the_original_release_format_parses():
    """Lines in the layout of the original OmniCellTOSG data/links.txt (GEO supplementary files)."""
    text = ("GSM5706853 GSM5706853/GSM5706853_P1_barcodes.tsv.gz https://ftp.ncbi.nlm.nih.gov/geo/samples/"
            "GSM5706nnn/GSM5706853/suppl/GSM5706853_P1_barcodes.tsv.gz\n")
    (link,) = parse_links(text)
    assert link.gsm_id == "GSM5706853" and link.path == "GSM5706853/GSM5706853_P1_barcodes.tsv.gz"


# --- downloading ---------------------------------------------------------------------------------------

def test_download_reports_failures_keeps_no_partial_file_and_resumes(server, data_dir, tmp_path):
    links = _write_links(tmp_path / "links.txt", [
        "# two good files, one dropped mid-file, one missing",
        f"GSM1 GSM1/{Path(SMALL).name} {server.url('ok', SMALL)}",
        f"GSM1 GSM1/{Path(MEDIUM).name} {server.url('ok', MEDIUM)}",
        "",
        f"GSM2 GSM2/dropped.tsv.gz {server.url('drop', LARGER)}",
        f"GSM3 GSM3/missing.tsv.gz {server.url('ok', 'knowledge/no_such_file.tsv.gz')}",
    ])
    out = tmp_path / "raw"
    with pytest.raises(DownloadError) as err:
        download_links(links, out, retries=0, timeout=10, progressbar=False)
    report = err.value.report
    assert [r.status for r in report.results] == [DOWNLOADED, DOWNLOADED, FAILED, FAILED]
    dropped, missing = report.failures
    assert "connection dropped" in dropped.error and dropped.link.path == "GSM2/dropped.tsv.gz"
    assert missing.error == "HTTP 404 Not Found"
    assert "GSM2/dropped.tsv.gz" in str(err.value) and "HTTP 404" in str(err.value)

    # good files are byte-identical, their checksums are in the manifest; failures leave no file (and
    # no temporary: nothing but the two files and the manifest is under the folder)
    for rel in (SMALL, MEDIUM):
        got = out / "GSM1" / Path(rel).name
        assert sha256(got) == sha256(data_dir / rel)
    assert _files_under(out) == {f"GSM1/{Path(SMALL).name}", f"GSM1/{Path(MEDIUM).name}", MANIFEST}
    rows = _manifest(out)
    assert rows[f"GSM1/{Path(MEDIUM).name}"]["sha256"] == sha256(data_dir / MEDIUM)
    assert rows[f"GSM1/{Path(MEDIUM).name}"]["size"] == str((data_dir / MEDIUM).stat().st_size)
    assert rows[f"GSM1/{Path(MEDIUM).name}"]["status"] == DOWNLOADED
    assert rows["GSM2/dropped.tsv.gz"]["status"] == FAILED and rows["GSM2/dropped.tsv.gz"]["sha256"] == ""
    assert "connection dropped" in rows["GSM2/dropped.tsv.gz"]["error"]
    assert rows["GSM3/missing.tsv.gz"]["error"] == "HTTP 404 Not Found"
    assert rows["GSM3/missing.tsv.gz"]["gsm_id"] == "GSM3"

    # second run: the completed files are not requested again, only the failures are retried
    before = server.counts.copy()
    with pytest.raises(DownloadError) as err:
        download_links(links, out, retries=0, timeout=10, progressbar=False)
    assert [r.status for r in err.value.report.results] == [PRESENT, PRESENT, FAILED, FAILED]
    assert server.counts[f"/ok/{SMALL}"] == before[f"/ok/{SMALL}"] == 1
    assert server.counts[f"/ok/{MEDIUM}"] == before[f"/ok/{MEDIUM}"] == 1
    assert server.counts[f"/drop/{LARGER}"] == before[f"/drop/{LARGER}"] + 1 == 2
    assert server.counts["/ok/knowledge/no_such_file.tsv.gz"] == 2
    assert not (out / "GSM2/dropped.tsv.gz").exists()

    # the connection holds now: the third run fetches the remaining file, byte-identical
    server.drop = False
    report = download_links(links, out, retries=0, timeout=10, progressbar=False, raise_on_failure=False)
    assert [r.status for r in report.results] == [PRESENT, PRESENT, DOWNLOADED, FAILED]
    assert sha256(out / "GSM2/dropped.tsv.gz") == sha256(data_dir / LARGER)
    assert _manifest(out)["GSM2/dropped.tsv.gz"]["sha256"] == sha256(data_dir / LARGER)
    assert server.counts[f"/ok/{SMALL}"] == 1


def test_a_file_that_no_longer_matches_the_manifest_is_downloaded_again(server, data_dir, tmp_path):
    links = _write_links(tmp_path / "links.txt", [f"GSM1 x/{Path(MEDIUM).name} {server.url('ok', MEDIUM)}"])
    out = tmp_path / "raw"
    download_links(links, out, retries=0, timeout=10, progressbar=False)
    target = out / "x" / Path(MEDIUM).name
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF  # same size, different content
    target.write_bytes(bytes(data))
    report = download_links(links, out, retries=0, timeout=10, progressbar=False)
    assert [r.status for r in report.results] == [DOWNLOADED]
    assert server.counts[f"/ok/{MEDIUM}"] == 2
    assert sha256(target) == sha256(data_dir / MEDIUM)


def test_retries_recover_a_dropped_connection(server, data_dir, tmp_path):
    links = _write_links(tmp_path / "links.txt", [f"GSM1 flaky.tsv.gz {server.url('flaky', LARGER)}"])
    report = download_links(links, tmp_path / "raw", retries=1, timeout=10, progressbar=False)
    assert [r.status for r in report.results] == [DOWNLOADED]
    assert server.counts[f"/flaky/{LARGER}"] == 2  # dropped once, then complete
    assert sha256(tmp_path / "raw/flaky.tsv.gz") == sha256(data_dir / LARGER)


def test_a_known_checksum_is_verified(server, data_dir, tmp_path):
    right, wrong = sha256(data_dir / SMALL), "0" * 64
    links = _write_links(tmp_path / "links.txt", [
        f"GSM1 good.json {server.url('ok', SMALL)} {right}",
        f"GSM1 corrupt.json {server.url('ok', SMALL)} sha256:{wrong}",
    ])
    out = tmp_path / "raw"
    with pytest.raises(DownloadError) as err:
        download_links(links, out, retries=0, timeout=10, progressbar=False)
    good, bad = err.value.report.results
    assert good.status == DOWNLOADED and good.sha256 == right
    assert bad.status == FAILED and bad.error.startswith("checksum mismatch") and wrong in bad.error
    assert right in bad.error  # what was received is named too
    assert _files_under(out) == {"good.json", MANIFEST}
    assert _manifest(out)["corrupt.json"]["status"] == FAILED


@pytest.mark.parametrize("bad_path", ["../escape.json", "/tmp/escape.json"])
def test_an_unsafe_path_is_refused_before_anything_downloads(server, tmp_path, bad_path):
    links = _write_links(tmp_path / "links.txt", [
        f"GSM1 first.json {server.url('ok', SMALL)}",
        f"GSM2 {bad_path} {server.url('ok', SMALL)}",
    ])
    with pytest.raises(ValueError, match="line 2"):
        download_links(links, tmp_path / "raw", retries=0, progressbar=False)
    assert sum(server.counts.values()) == 0
    assert not (tmp_path / "raw").exists() and not (tmp_path / "escape.json").exists()


def test_a_path_through_a_link_leaving_the_folder_is_refused(server, tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "GSM1").symlink_to(tmp_path / "elsewhere")
    links = _write_links(tmp_path / "links.txt", [f"GSM1 GSM1/a.json {server.url('ok', SMALL)}"])
    with pytest.raises(ValueError, match="line 1: Refusing to write"):
        download_links(links, out, retries=0, progressbar=False)
    assert sum(server.counts.values()) == 0 and not any((tmp_path / "elsewhere").iterdir())


def test_read_links_names_the_line_of_a_malformed_file(tmp_path):
    links = _write_links(tmp_path / "links.txt", ["GSM1 a.gz https://x.org/a", "GSM2 b.gz"])
    with pytest.raises(ValueError, match="line 2: expected GSM_ID path URL"):
        read_links(links)


# --- command line -------------------------------------------------------------------------------------

def test_cli_download_exit_status(server, data_dir, tmp_path, capsys):
    from omnicelltosg.cli import main

    good = _write_links(tmp_path / "good.txt", [f"GSM1 a/{Path(SMALL).name} {server.url('ok', SMALL)}"])
    assert main(["download", str(good), "--out", str(tmp_path / "raw"), "--retries", "0", "--no-progress"]) == 0
    assert sha256(tmp_path / "raw/a" / Path(SMALL).name) == sha256(data_dir / SMALL)

    failing = _write_links(tmp_path / "failing.txt", [
        f"GSM1 a/{Path(SMALL).name} {server.url('ok', SMALL)}",
        f"GSM2 b/missing.gz {server.url('ok', 'nope.gz')}",
    ])
    capsys.readouterr()
    assert main(["download", str(failing), "--out", str(tmp_path / "raw"), "--retries", "0", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "b/missing.gz" in captured.out and "HTTP 404 Not Found" in captured.out
    assert "1 of 2 files failed" in captured.err
    assert server.counts[f"/ok/{SMALL}"] == 1  # the first file was skipped (already present)

    malformed = _write_links(tmp_path / "bad.txt", ["GSM1 ../x.gz https://x.org/x.gz"])
    assert main(["download", str(malformed), "--out", str(tmp_path / "raw2"), "--no-progress"]) == 2
    assert "line 1" in capsys.readouterr().err
