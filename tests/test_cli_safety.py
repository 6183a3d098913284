"""Issue 13, items 8-10: a CLI that never surprises.

Output files are never silently replaced, appended to in the wrong format, or filled with
duplicate lines; user mistakes get a clear message and the documented exit code (never a
traceback); progress shows in logs; scan takes claims, per input from a CSV list. Everything
runs the real command line on real photos.
"""

from __future__ import annotations

import csv
import html
import http.server
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SmallArchive, bsds, coco, needs_shared, write_manifest
from typer.testing import CliRunner

from imgverify.cli import app

pytestmark = needs_shared
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
NOT_ARCHIVED = sorted((ROOT / "fixtures" / "not_archived").glob("*.jpg"))


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def scan(*args: str) -> Any:
    return cli("scan", *args, "--no-progress", "--workers", "1")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def no_traceback(res: Any) -> None:
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output


@pytest.fixture()
def folder(small_archive: SmallArchive, tmp_path: Path) -> Path:
    """Two archived photos and two that are not archived."""
    d = tmp_path / "in"
    d.mkdir()
    for p in small_archive.photos[:2]:
        shutil.copy(p, d / p.name)
    for p in NOT_ARCHIVED:
        shutil.copy(p, d / p.name)
    return d


# -- 8. output files are safe --------------------------------------------------------------------
def test_existing_out_needs_resume_or_overwrite(small_archive: SmallArchive, folder: Path,
                                                tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text("{\"input\": \"yesterday's work\", \"verdict\": \"no_match\"}\n")
    before = out.read_bytes()
    res = scan(str(folder), "--archive", str(small_archive.path), "--out", str(out))
    assert res.exit_code == 2, res.output
    assert "already exists" in res.stderr and "--overwrite" in res.stderr
    assert out.read_bytes() == before  # nothing lost
    res = scan(str(folder), "--archive", str(small_archive.path), "--out", str(out),
               "--resume", "--overwrite")
    assert res.exit_code == 2 and out.read_bytes() == before
    res = scan(str(folder), "--archive", str(small_archive.path), "--out", str(out),
               "--overwrite")
    assert res.exit_code == 0, res.output
    assert sorted(Path(r["input"]).name for r in read_jsonl(out)) == sorted(
        p.name for p in folder.iterdir())


def test_resume_into_another_format_is_refused(small_archive: SmallArchive, folder: Path,
                                               tmp_path: Path) -> None:
    out = tmp_path / "results.out"
    base = [str(folder), "--archive", str(small_archive.path), "--out", str(out)]
    assert scan(*base, "--format", "jsonl").exit_code == 0
    lines = out.read_bytes()
    res = scan(*base, "--format", "csv", "--resume")
    assert res.exit_code == 2, res.output
    assert "--format jsonl" in res.stderr
    assert out.read_bytes() == lines
    # and a file that is no scan output at all (here the archive's manifest) is left alone
    manifest = tmp_path / "manifest.csv"
    shutil.copy(small_archive.manifest, manifest)
    res = scan(str(folder), "--archive", str(small_archive.path), "--out", str(manifest),
               "--format", "csv", "--resume")
    assert res.exit_code == 2 and "not an imgverify scan output" in res.stderr
    assert manifest.read_bytes() == small_archive.manifest.read_bytes()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_retry_errors_replaces_the_failed_lines(small_archive: SmallArchive, tmp_path: Path,
                                                fmt: str) -> None:
    """Files that failed (still being copied: truncated) are checked again once whole; their
    new lines take the place of the error lines; one line per input, in input order."""
    d = tmp_path / "in"
    d.mkdir()
    photos = small_archive.photos[:4]
    for p in photos:
        shutil.copy(p, d / p.name)
    broken = [d / photos[1].name, d / photos[2].name]
    for b in broken:
        b.write_bytes(b.read_bytes()[:3000])
    out = tmp_path / f"R.{fmt}"
    base = [str(d), "--archive", str(small_archive.path), "--format", fmt, "--out", str(out)]
    assert scan(*base).exit_code == 3

    def lines() -> list[tuple[str, str]]:
        if fmt == "jsonl":
            return [(Path(r["input"]).name, r["verdict"]) for r in read_jsonl(out)]
        return [(Path(r["input"]).name, r["verdict"])
                for r in csv.DictReader(out.read_text(encoding="utf-8").splitlines())]

    names = [p.name for p in photos]
    assert [v for _, v in lines()] == ["likely_recycled", "error", "error", "likely_recycled"]
    for p, b in zip(photos[1:3], broken, strict=True):
        shutil.copy(p, b)  # the copies finished
    report = tmp_path / "summary.html"
    res = scan(*base, "--resume", "--retry-errors", "--report", str(report))
    assert res.exit_code == 0, res.output
    assert lines() == [(n, "likely_recycled") for n in names]
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".") or "retry" in f.name]
    page = report.read_text(encoding="utf-8")  # all four finds, not only the two retried
    assert all(html.escape(str(d / n)) in page for n in names)
    if fmt == "csv":
        assert out.read_text(encoding="utf-8").count("input,verdict,") == 1


def test_a_crashed_retry_run_is_completed_by_the_next_resume(small_archive: SmallArchive,
                                                             tmp_path: Path) -> None:
    """A --retry-errors run killed before its final rename leaves its new lines beside the
    output: the original file is untouched, and the next --resume puts them in place."""
    d = tmp_path / "in"
    d.mkdir()
    photos = small_archive.photos[:3]
    for p in photos:
        shutil.copy(p, d / p.name)
    (d / photos[1].name).write_bytes(b"")
    out = tmp_path / "R.jsonl"
    base = [str(d), "--archive", str(small_archive.path), "--out", str(out)]
    assert scan(*base).exit_code == 3
    shutil.copy(photos[1], d / photos[1].name)
    # what a killed retry run leaves: its output so far (one whole line and half a line)
    good = tmp_path / "good.jsonl"
    assert scan(str(d / photos[1].name), "--archive", str(small_archive.path), "--out",
                str(good)).exit_code == 0
    line = good.read_text(encoding="utf-8")
    (tmp_path / "R.jsonl.retrying").write_text(line + line[:40], encoding="utf-8")
    res = scan(*base, "--resume")
    assert res.exit_code == 0, res.output
    assert [(Path(r["input"]).name, r["verdict"]) for r in read_jsonl(out)] == [
        (p.name, "likely_recycled") for p in photos]
    assert not (tmp_path / "R.jsonl.retrying").exists()


def test_report_after_resume_covers_the_whole_output(small_archive: SmallArchive, folder: Path,
                                                     tmp_path: Path) -> None:
    out, report = tmp_path / "R.csv", tmp_path / "summary.html"
    base = [str(folder), "--archive", str(small_archive.path), "--format", "csv", "--out",
            str(out)]
    assert scan(*base).exit_code == 0
    rows = out.read_text(encoding="utf-8").splitlines(keepends=True)
    first = rows[1].split(",")[0]
    assert "likely_recycled" in rows[1]
    out.write_text("".join(rows[:3]), encoding="utf-8")  # a crash after two inputs
    res = scan(*base, "--resume", "--report", str(report))
    assert res.exit_code == 0, res.output
    assert "2 skipped as already done" in res.stderr
    page = report.read_text(encoding="utf-8")
    # the find of the first run is summarised too, with its thumbnails
    assert html.escape(first) in page
    assert html.escape(rows[2].split(",")[0]) in page
    assert page.count("data:image/jpeg;base64,") >= 4


class _Stall(http.server.BaseHTTPRequestHandler):
    """Serves a photo, or holds the connection open (a slow server) until released."""

    release = threading.Event()
    photo = b""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/slow.jpg":
            self.release.wait(60)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.photo)))
        self.end_headers()
        self.wfile.write(self.photo)


@pytest.fixture()
def stall_server(small_archive: SmallArchive) -> Iterator[str]:
    _Stall.photo = small_archive.photos[0].read_bytes()
    _Stall.release = threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stall)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        _Stall.release.set()
        server.shutdown()
        server.server_close()


def test_an_interrupted_scan_writes_a_partial_summary(small_archive: SmallArchive,
                                                      stall_server: str, tmp_path: Path) -> None:
    """Ctrl-C while the third input (a server that never answers) is being fetched: the two
    finished lines stay, and --report still summarises them."""
    listing = tmp_path / "links.txt"
    listing.write_text(f"{stall_server}/archived.jpg\n{NOT_ARCHIVED[0]}\n"
                       f"{stall_server}/slow.jpg\n{NOT_ARCHIVED[1]}\n")
    out, report = tmp_path / "R.jsonl", tmp_path / "summary.html"
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgverify", "scan", "--urls", str(listing), "--archive",
         str(small_archive.path), "--out", str(out), "--report", str(report), "--workers", "1",
         "--allow-private-urls", "--no-progress"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a user's shell starts commands with SIGINT at its default; a disposition this test
        # process happens to hold (SIG_IGN is inherited across exec, and Python then never
        # installs its KeyboardInterrupt handler) is not what is under test
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    masks = ""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_text(encoding="utf-8").count("\n") >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.3)  # into the stalled fetch
        status = Path(f"/proc/{proc.pid}/status")
        if status.exists():  # for the failure message: ignored / caught signal masks
            masks = " ".join(line.strip() for line in status.read_text().splitlines()
                             if line.startswith(("SigIgn", "SigCgt", "SigBlk", "Threads")))
        proc.send_signal(signal.SIGINT)
        _stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (masks, stderr)
    assert "Traceback" not in stderr and "--resume" in stderr
    results = read_jsonl(out)
    assert [r["verdict"] for r in results] == ["likely_recycled", "no_match"]
    page = report.read_text(encoding="utf-8")
    assert html.escape(f"{stall_server}/archived.jpg") in page
    assert "slow.jpg" not in page


# -- 9. clear errors -----------------------------------------------------------------------------
def test_a_bad_out_path_is_a_clear_usage_error(small_archive: SmallArchive, folder: Path,
                                               tmp_path: Path) -> None:
    photo = str(folder / NOT_ARCHIVED[0].name)
    archive = ["--archive", str(small_archive.path)]
    for out, words in ((tmp_path / "no-such-folder" / "r.jsonl", "does not exist"),
                       (tmp_path, "is a folder")):
        res = scan(photo, *archive, "--out", str(out))
        assert res.exit_code == 2 and words in res.stderr, res.output
        no_traceback(res)
        res = scan(photo, *archive, "--report", str(out))
        assert res.exit_code == 2 and words in res.stderr, res.output
        res = cli("check", photo, *archive, "--format", "html", "--out", str(out))
        assert res.exit_code == 2 and words in res.stderr, res.output
        no_traceback(res)
    assert not (tmp_path / "no-such-folder").exists()


def test_an_impossible_date_is_not_a_real_date(small_archive: SmallArchive, folder: Path,
                                               tmp_path: Path) -> None:
    photo = str(folder / NOT_ARCHIVED[0].name)
    archive = ["--archive", str(small_archive.path)]
    for res in (cli("check", photo, *archive, "--claimed-date", "2023-02-30"),
                scan(photo, *archive, "--claimed-date", "2023-02-30")):
        assert res.exit_code == 2
        assert "not a real date" in res.stderr and "February 2023 has 28 days" in res.stderr
    res = cli("check", photo, *archive, "--claimed-date", "last week")
    assert res.exit_code == 2 and "YYYY-MM-DD" in res.stderr
    # a manifest row dated 2023-02-30 is a row error that says the same
    manifest = write_manifest(tmp_path / "m.csv", [
        {"image": str(bsds(1)[0]), "date": "2023-02-30"},
        {"image": str(bsds(2)[1]), "date": "2023-02-28"}])
    res = cli("archive", "add", str(manifest), "--archive", str(tmp_path / "a.sqlite"),
              "--workers", "1", "--no-progress")
    assert res.exit_code == 3
    assert f"{manifest}:2: date '2023-02-30' is not a real date" in res.stderr
    assert json.loads(res.stdout)["added"] == 1


def test_negative_workers_are_rejected(small_archive: SmallArchive, folder: Path,
                                       tmp_path: Path) -> None:
    res = cli("scan", str(folder), "--archive", str(small_archive.path), "--workers", "-1",
              "--no-progress")
    assert res.exit_code == 2 and "--workers" in res.output
    manifest = write_manifest(tmp_path / "m.csv", [{"image": str(bsds(1)[0]),
                                                     "date": "2020-01-01"}])
    res = cli("archive", "add", str(manifest), "--archive", str(tmp_path / "a.sqlite"),
              "--workers", "-1")
    assert res.exit_code == 2 and "--workers" in res.output
    assert not (tmp_path / "a.sqlite").exists()


def test_an_archive_path_that_is_not_an_archive_says_what_to_do(small_archive: SmallArchive,
                                                                folder: Path,
                                                                tmp_path: Path) -> None:
    photo = str(folder / NOT_ARCHIVED[0].name)
    manifest = small_archive.manifest
    res = cli("check", photo, "--archive", str(manifest))
    assert res.exit_code == 4, res.output
    assert "looks like a manifest" in res.stderr
    assert f"imgverify archive add {manifest} --archive" in res.stderr
    res = cli("check", photo, "--archive", photo)  # a photo given as the archive
    assert res.exit_code == 4 and "not an imgverify archive" in res.stderr
    assert "imgverify archive add MANIFEST --archive PATH" in res.stderr
    res = cli("check", photo, "--archive", str(folder))
    assert res.exit_code == 4 and "is a folder" in res.stderr
    # another program's SQLite database is neither read nor written
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    before = other.read_bytes()
    new_manifest = write_manifest(tmp_path / "m.csv", [{"image": str(bsds(1)[0]),
                                                         "date": "2020-01-01"}])
    res = cli("archive", "add", str(new_manifest), "--archive", str(other), "--no-progress")
    assert res.exit_code == 4 and "not an imgverify archive" in res.stderr, res.output
    assert other.read_bytes() == before
    no_traceback(res)


def test_a_manifest_with_a_wrong_header_creates_no_archive(tmp_path: Path) -> None:
    photo = bsds(1)[0]
    archive = tmp_path / "new.sqlite"
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(f"picture,when,event\n{photo},2020-01-01,Flood\n", encoding="utf-8")
    res = cli("archive", "add", str(wrong), "--archive", str(archive), "--no-progress")
    assert res.exit_code == 3, res.output
    assert "'picture', 'when', 'event'" in res.stderr and "image, date" in res.stderr
    assert not archive.exists()
    jsonl = tmp_path / "wrong.jsonl"
    jsonl.write_text(json.dumps({"file": str(photo), "when": "2020-01-01"}) + "\n")
    res = cli("archive", "add", str(jsonl), "--archive", str(archive), "--no-progress")
    assert res.exit_code == 3 and "file, when" in res.stderr, res.output
    assert not archive.exists()


def test_a_semicolon_manifest_is_read_and_unknown_keys_are_warned(tmp_path: Path) -> None:
    photos = bsds(2)
    semi = tmp_path / "excel.csv"
    semi.write_text("image;date;event;photographer\n"
                    f"{photos[0]};2020-01-01;Flood, river;Ann\n"
                    f"{photos[1]};2020-01-02;Fire;Bo\n", encoding="utf-8")
    archive = tmp_path / "a.sqlite"
    res = cli("archive", "add", str(semi), "--archive", str(archive), "--workers", "1",
              "--no-progress")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == 2
    assert "unknown column(s) 'photographer'" in res.stderr
    events = [json.loads(x)["event"] for x in cli("archive", "list", "--archive",
                                                   str(archive)).stdout.splitlines()]
    assert events == ["Flood, river", "Fire"]
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"image": str(photos[0]), "date": "2020-01-01",
                                 "evnt": "typo"}) + "\n")
    res = cli("archive", "add", str(jsonl), "--archive", str(archive), "--workers", "1",
              "--no-progress")
    assert res.exit_code == 0 and "unknown key(s) 'evnt' (line 1)" in res.stderr


def test_manifest_messages_echo_the_users_own_paths(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "store" / "manifests"
    real.mkdir(parents=True)
    (tmp_path / "desk").symlink_to(real)
    shutil.copy(bsds(1)[0], real / "here.jpg")
    (real / "m.csv").write_text("image,date\nmissing.jpg,2020-01-01\nhere.jpg,2020-01-02\n",
                                encoding="utf-8")
    (real / "bad.csv").write_text("photo,date\nhere.jpg,2020-01-01\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    res = cli("archive", "add", "desk/m.csv", "--archive", "a.sqlite", "--workers", "1",
              "--no-progress")
    assert res.exit_code == 3, res.output
    assert "desk/m.csv:2: no such file: desk/missing.jpg" in res.stderr
    assert "store" not in res.output
    assert json.loads(res.stdout)["errors"][0]["image"] == "desk/missing.jpg"
    res = cli("archive", "add", "desk/bad.csv", "--archive", "b.sqlite", "--no-progress")
    assert res.exit_code == 3 and res.stderr.startswith("imgverify: desk/bad.csv: ")
    assert "store" not in res.output


def test_removing_an_unknown_reference_says_so(archive_copy: Path,
                                               small_archive: SmallArchive) -> None:
    known = json.loads(cli("archive", "list", "--archive", str(archive_copy), "--limit", "1"
                           ).stdout)["reference_id"]
    res = cli("archive", "remove", known, "0123456789abcdef", "--archive", str(archive_copy))
    assert res.exit_code == 3, res.output
    assert "no reference '0123456789abcdef'" in res.stderr
    assert json.loads(res.stdout) == {"removed": 1, "not_found": ["0123456789abcdef"]}
    res = cli("archive", "remove", known, "--archive", str(archive_copy))
    assert res.exit_code == 3 and f"no reference '{known}'" in res.stderr


# -- 10. batch ergonomics ------------------------------------------------------------------------
def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    """The CLI with stderr on a pipe, as under a batch scheduler or `2> log`."""
    return subprocess.run([sys.executable, "-m", "imgverify", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_COLOR": "1"})


def test_progress_lines_when_stderr_is_not_a_terminal(small_archive: SmallArchive,
                                                      folder: Path, tmp_path: Path) -> None:
    args = ["scan", str(folder), "--archive", str(small_archive.path), "--workers", "1"]
    res = _run([*args, "--out", str(tmp_path / "a.jsonl"), "--progress-interval", "0"])
    assert res.returncode == 0, res.stderr
    progress = [x for x in res.stderr.splitlines() if x.startswith("imgverify: scanning ")]
    assert len(progress) == 4, res.stderr  # one per input at interval 0
    assert progress[-1].startswith("imgverify: scanning 4"), progress
    assert "img/s" in progress[-1] and "elapsed" in progress[-1]
    assert "\r" not in res.stderr and "\x1b" not in res.stderr  # plain lines for a log
    res = _run([*args, "--out", str(tmp_path / "b.jsonl"), "--no-progress"])
    assert res.returncode == 0 and "scanning" not in res.stderr, res.stderr
    # at most one line per interval (the default is a few seconds): none within the first hour
    res = _run([*args, "--out", str(tmp_path / "c.jsonl"), "--progress-interval", "3600"])
    assert res.returncode == 0 and "scanning" not in res.stderr, res.stderr
    res = _run(["archive", "add", str(write_manifest(tmp_path / "m.csv", [
        {"image": str(p), "date": "2020-01-01"} for p in coco(3, start=40)])),
        "--archive", str(tmp_path / "n.sqlite"), "--workers", "1", "--progress-interval", "0"])
    assert res.returncode == 0, res.stderr
    assert sum(x.startswith("imgverify: ingesting ") for x in res.stderr.splitlines()) == 3


def test_scan_takes_claims_for_all_and_per_input(small_archive: SmallArchive, folder: Path,
                                                 tmp_path: Path) -> None:
    archived = [str(folder / p.name) for p in small_archive.photos[:2]]
    fresh = [str(folder / p.name) for p in NOT_ARCHIVED]
    archive = ["--archive", str(small_archive.path)]
    res = scan(archived[0], *archive, "--claimed-date", "2024-12-24", "--claimed-place",
               "Herat")
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout)
    assert (line["claimed_date"], line["claimed_place"]) == ("2024-12-24", "Herat")
    assert any(c["check"] == "date" and c["supports"] == "recycled"
               for c in line["claim_checks"])
    listing = tmp_path / "claims.csv"
    with listing.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "claimed_date", "claimed_place"])
        w.writerow([archived[0], "2024-12-24", "Herat, Afghanistan"])
        w.writerow([archived[1], "", ""])  # empty: the command line's claim
        w.writerow([fresh[0], "2023-02-30", ""])  # an impossible date: an error line
    res = scan("--urls", str(listing), *archive, "--claimed-date", "2001-01-01",
               "--claimed-place", "Kabul")
    assert res.exit_code == 3, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["input"] for r in lines] == [archived[0], archived[1], fresh[0]]
    assert [(r["claimed_date"], r["claimed_place"]) for r in lines[:2]] == [
        ("2024-12-24", "Herat, Afghanistan"), ("2001-01-01", "Kabul")]
    assert lines[2]["verdict"] == "error" and lines[2]["error"]["kind"] == "invalid_claim"
    assert "not a real date" in lines[2]["error"]["message"]
    # the plain one-per-line list still works, with or without a one-word header (and a
    # comma in a name is part of the name)
    comma = folder / "a,b.jpg"
    shutil.copy(NOT_ARCHIVED[0], comma)
    for head in ("# downloads\n", "path\n"):
        plain = tmp_path / "list.txt"
        plain.write_text(head + "\n".join([*fresh, str(comma)]) + "\n")
        res = scan("--urls", str(plain), *archive)
        assert res.exit_code == 0, res.output
        assert [json.loads(x)["input"] for x in res.stdout.splitlines()] == [*fresh, str(comma)]
