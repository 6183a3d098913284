"""The issue's acceptance run, through the command line only:

    imgverify archive add M.csv --archive A
    imgverify scan DIR --archive A --format jsonl --out R

DIR holds edited copies of archived photos (JPEG quality 30, half size, grayscale, mirrored),
photos that are not archived, a truncated and an empty file. Plus CSV output, --resume,
--workers 2, `check --format json|html` and the documented exit codes.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import html
import json
import re
import shutil
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import PG_URL, _server_or_skip, bsds, coco, needs_shared, write_manifest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from imgverify.batch import CSV_COLUMNS, LEGACY_CSV_COLUMNS
from imgverify.cli import app

pytestmark = needs_shared
runner = CliRunner()

EDITS = ("q30", "half", "gray", "mirror")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_edits(src: Path, folder: Path, stem: str) -> dict[str, Path]:
    im = Image.open(src).convert("RGB")
    made = {
        "q30": (im, {"quality": 30}),
        "half": (im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
                 {"quality": 90}),
        "gray": (ImageOps.grayscale(im), {"quality": 90}),
        "mirror": (ImageOps.mirror(im), {"quality": 90}),
    }
    out = {}
    for name, (pic, kw) in made.items():
        path = folder / f"{stem}-{name}.jpg"
        pic.save(path, "JPEG", **kw)
        out[name] = path
    return out


@dataclass
class Workspace:
    root: Path
    archive: str  # a file (SQLite) or a postgresql:// URL
    manifest: Path
    scan_dir: Path
    #: scanned path -> manifest row of the archived photo it was made from (+ "sha256")
    recycled: dict[str, dict[str, str]]
    negatives: list[str]
    broken: dict[str, str]  # path -> expected error kind
    results_path: Path
    results: list[dict[str, Any]]
    exit_code: int
    stderr: str

    @property
    def inputs(self) -> list[str]:
        """Every scanned file in walk order: a folder's files (sorted), then its sub-folders."""
        return sorted([*self.recycled, *self.negatives, *self.broken],
                      key=lambda p: (Path(p).parent != self.scan_dir, p))


def scan(*args: str) -> Any:
    return runner.invoke(app, ["scan", *args, "--no-progress"])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ws(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Workspace]:
    """The acceptance workspace, on each backend: the CLI behaves the same on both."""
    root = tmp_path_factory.mktemp("e2e")
    if request.param == "sqlite":
        yield _workspace(root, str(root / "A.sqlite"))
        return
    admin = _server_or_skip()
    schema = f"t_e2e_{uuid.uuid4().hex[:10]}"
    try:
        yield _workspace(root, f"{PG_URL}?schema={schema}")
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


def _workspace(root: Path, archive: str) -> Workspace:
    originals = coco(6, start=100) + bsds(4)
    rows = [{"image": str(p), "date": f"2014-0{1 + i % 9}-{10 + i}",
             "event": f'Flood in "Old Town" <script>alert({i})</script> & more',
             "place": f"Town {i}", "caption": f"Caption {i}", "source": "Wire",
             "source_url": f"https://example.org/{i}", "credit": f"Credit {i}"}
            for i, p in enumerate(originals)]
    manifest = write_manifest(root / "M.csv", rows)
    res = runner.invoke(app, ["archive", "add", str(manifest), "--archive", str(archive),
                              "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == 10

    scan_dir = root / "DIR"
    (scan_dir / "nested").mkdir(parents=True)
    recycled: dict[str, dict[str, str]] = {}
    for i, (src, row) in enumerate(zip(originals, rows, strict=True)):
        folder = scan_dir / "nested" if i % 2 else scan_dir
        for path in make_edits(src, folder, f"archived{i:02d}").values():
            recycled[str(path)] = {**row, "sha256": sha256(src)}
    negatives = []
    for j, src in enumerate(coco(6, split="val2017") + bsds(4, split="test")):
        dst = scan_dir / f"fresh{j:02d}.jpg"
        shutil.copyfile(src, dst)
        negatives.append(str(dst))
    (scan_dir / "empty.jpg").write_bytes(b"")
    data = originals[0].read_bytes()
    (scan_dir / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (scan_dir / "notes.txt").write_text("not an image extension: never scanned\n")
    broken = {str(scan_dir / "empty.jpg"): "empty_input",
              str(scan_dir / "truncated.jpg"): "truncated_image"}

    out = root / "R.jsonl"
    res = scan(str(scan_dir), "--archive", str(archive), "--format", "jsonl", "--out",
               str(out), "--workers", "1")
    return Workspace(root, archive, manifest, scan_dir, recycled, negatives, broken, out,
                     read_jsonl(out), res.exit_code, res.stderr)


# -- the acceptance scan -----------------------------------------------------------------------
def test_scan_exit_code_and_one_line_per_input(ws: Workspace) -> None:
    assert ws.exit_code == 3, ws.stderr  # documented: completed, some inputs failed
    assert len(ws.recycled) == 40 and len(ws.negatives) == 10
    assert [r["input"] for r in ws.results] == ws.inputs  # walk order, each input once
    assert "52 checked" in ws.stderr and "error 2" in ws.stderr
    assert "likely_recycled 40" in ws.stderr and "no_match 10" in ws.stderr


def test_edited_copies_are_likely_recycled_with_their_context(ws: Workspace) -> None:
    by_input = {r["input"]: r for r in ws.results}
    for path, ref in ws.recycled.items():
        line = by_input[path]
        assert line["verdict"] == "likely_recycled", (path, line["matches"][:1])
        top = line["matches"][0]
        assert top["sha256"] == ref["sha256"], path  # the right reference
        assert top["reference_id"] == ref["sha256"][:16]
        assert (top["event"], top["date"], top["place"], top["caption"], top["source"],
                top["source_url"], top["credit"]) == (
            ref["event"], ref["date"], ref["place"], ref["caption"], ref["source"],
            ref["source_url"], ref["credit"])
        assert top["strength"] == "likely" and top["role"] == "likely_original"
        assert line["error"] is None and len(line["sha256"]) == 64
        if path.endswith("-mirror.jpg"):
            assert top["transform"] is not None and "mirrored" in top["transform"]


def test_unarchived_photos_are_no_match(ws: Workspace) -> None:
    by_input = {r["input"]: r for r in ws.results}
    for path in ws.negatives:
        line = by_input[path]
        assert line["verdict"] == "no_match", (path, line["matches"][:1])
        assert line["matches"] == [] and line["error"] is None
        assert any("not in this archive" in n for n in line["notes"])


def test_broken_files_are_error_lines(ws: Workspace) -> None:
    by_input = {r["input"]: r for r in ws.results}
    for path, kind in ws.broken.items():
        line = by_input[path]
        assert line["verdict"] == "error"
        assert line["error"]["kind"] == kind and path in line["error"]["message"]
        assert line["matches"] == []


# -- CSV output --------------------------------------------------------------------------------
def test_csv_output(ws: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "R.csv"
    res = scan(str(ws.scan_dir), "--archive", str(ws.archive), "--format", "csv", "--out",
               str(out), "--workers", "1")
    assert res.exit_code == 3
    text = out.read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    rows = list(csv.DictReader(text.splitlines(keepends=True)))
    assert [r["input"] for r in rows] == ws.inputs
    jsonl = {r["input"]: r for r in ws.results}
    for row in rows:
        line = jsonl[row["input"]]
        assert row["verdict"] == line["verdict"]
        top = line["matches"][0] if line["matches"] else {}
        assert row["reference_id"] == (top.get("reference_id") or "")
        assert row["event"] == (top.get("event") or "")
        assert row["date"] == (top.get("date") or "")
        assert row["error_kind"] == ((line["error"] or {}).get("kind") or "")


# -- resume ------------------------------------------------------------------------------------
def _summary_counts(stderr: str) -> tuple[int, int]:
    m = re.search(r"(\d+) checked .*?; (\d+) skipped as already done", stderr)
    assert m, stderr
    return int(m.group(1)), int(m.group(2))


def test_resume_rechecks_only_the_missing_lines(ws: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "R.jsonl"
    lines = ws.results_path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 52
    # a crash: the last two lines never written, the one before only half written
    out.write_text("".join(lines[:-3]) + lines[-3][: len(lines[-3]) // 2], encoding="utf-8")
    res = scan(str(ws.scan_dir), "--archive", str(ws.archive), "--format", "jsonl", "--out",
               str(out), "--resume", "--workers", "1")
    assert res.exit_code == 0, res.output  # the three re-checked inputs are good photos
    assert _summary_counts(res.stderr) == (3, 49)
    again = read_jsonl(out)  # every line parses: the half line was cut
    assert len(again) == 52
    assert sorted(r["input"] for r in again) == sorted(ws.inputs)
    original = {r["input"]: (r["verdict"], r["sha256"]) for r in ws.results}
    assert {r["input"]: (r["verdict"], r["sha256"]) for r in again} == original
    # a second resume has nothing left to do
    res = scan(str(ws.scan_dir), "--archive", str(ws.archive), "--format", "jsonl", "--out",
               str(out), "--resume", "--workers", "1")
    assert res.exit_code == 0
    assert _summary_counts(res.stderr) == (0, 52)
    assert len(read_jsonl(out)) == 52


def test_resume_csv_keeps_one_header(ws: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "R.csv"
    res = scan(str(ws.scan_dir), "--archive", str(ws.archive), "--format", "csv", "--out",
               str(out), "--workers", "1")
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:-4]) + lines[-4][:25], encoding="utf-8")
    res = scan(str(ws.scan_dir), "--archive", str(ws.archive), "--format", "csv", "--out",
               str(out), "--resume", "--workers", "1")
    assert _summary_counts(res.stderr) == (4, 48)
    text = out.read_text(encoding="utf-8")
    assert text.count("input,verdict,") == 1
    rows = list(csv.DictReader(text.splitlines(keepends=True)))
    assert sorted(r["input"] for r in rows) == sorted(ws.inputs)


def test_resume_of_a_csv_written_before_local_features_keeps_its_columns(
        ws: Workspace, tmp_path: Path) -> None:
    """A CSV from a version without the local_features column is continued in its own
    columns: every row of the file stays readable under its one header."""
    out = tmp_path / "R.csv"
    scan(str(ws.scan_dir), "--archive", str(ws.archive), "--format", "csv", "--out", str(out),
         "--workers", "1")
    rows = list(csv.reader(out.open(encoding="utf-8", newline="")))
    assert rows[0] == list(CSV_COLUMNS) and rows[0][-1] == "local_features"
    assert {r[-1] for r in rows[1:] if r[1] != "error"} <= {"searched", "not_needed"}
    assert {r[-1] for r in rows[1:] if r[1] == "error"} == {""}  # nothing was searched
    with out.open("w", encoding="utf-8", newline="") as fh:  # as the earlier version wrote it
        csv.writer(fh, lineterminator="\n").writerows(r[:-1] for r in rows[:-5])
    res = scan(str(ws.scan_dir), "--archive", str(ws.archive), "--format", "csv", "--out",
               str(out), "--resume", "--workers", "1")
    assert res.exit_code in (0, 3), res.output
    assert _summary_counts(res.stderr) == (5, 47)
    again = list(csv.reader(out.open(encoding="utf-8", newline="")))
    assert again[0] == list(LEGACY_CSV_COLUMNS)
    assert {len(r) for r in again} == {len(LEGACY_CSV_COLUMNS)}
    assert sorted(r[0] for r in again[1:]) == sorted(ws.inputs)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_resume_retry_errors_rechecks_failed_inputs_only(ws: Workspace, tmp_path: Path,
                                                        fmt: str) -> None:
    """A file that failed (here: still being copied, so truncated) is checked again with
    --retry-errors once it is whole; without the flag a resume leaves its error line."""
    folder = tmp_path / "in"
    folder.mkdir()
    good = bsds(2, split="val")
    shutil.copy(good[0], folder / "a.jpg")
    whole = good[1].read_bytes()
    (folder / "b.jpg").write_bytes(whole[: len(whole) // 3])
    out = tmp_path / f"R.{fmt}"
    base = [str(folder), "--archive", str(ws.archive), "--format", fmt, "--out", str(out),
            "--workers", "1"]
    res = scan(*base)
    assert res.exit_code == 3, res.output  # one input failed
    (folder / "b.jpg").write_bytes(whole)  # the copy finished
    res = scan(*base, "--resume")
    assert _summary_counts(res.stderr) == (0, 2)
    res = scan(*base, "--resume", "--retry-errors")
    assert res.exit_code == 0, res.output
    assert _summary_counts(res.stderr) == (1, 1)
    if fmt == "jsonl":
        verdicts = [(Path(r["input"]).name, r["verdict"]) for r in read_jsonl(out)]
    else:
        verdicts = [(Path(r["input"]).name, r["verdict"])
                    for r in csv.DictReader(out.read_text(encoding="utf-8").splitlines())]
    assert verdicts == [("a.jpg", "no_match"), ("b.jpg", "no_match")]  # replaced in place
    res = scan(*base, "--resume", "--retry-errors")  # nothing left to retry
    assert _summary_counts(res.stderr) == (0, 2)
    assert scan(*base, "--retry-errors").exit_code == 2  # only meaningful with --resume


def test_resume_needs_out(ws: Workspace) -> None:
    res = scan(str(ws.scan_dir), "--archive", str(ws.archive), "--resume")
    assert res.exit_code == 2


# -- parallel workers --------------------------------------------------------------------------
def test_two_workers_give_the_same_verdicts(ws: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "R2.jsonl"
    res = scan(str(ws.scan_dir), "--archive", str(ws.archive), "--format", "jsonl", "--out",
               str(out), "--workers", "2")
    assert res.exit_code == 3, res.output

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        top = r["matches"][0] if r["matches"] else {}
        return (r["input"], r["verdict"], r["sha256"], top.get("reference_id"),
                top.get("score"), (r["error"] or {}).get("kind"))

    assert [key(r) for r in read_jsonl(out)] == [key(r) for r in ws.results]


# -- check: JSON, HTML, exit codes -------------------------------------------------------------
GUIDE_MATCH_FIELDS = {"reference_id", "score", "event", "date", "place", "caption", "source",
                      "source_url", "credit", "distances", "transform", "days_before_claim"}


def test_check_json_has_the_guide_fields(ws: Workspace) -> None:
    path, ref = next((p, r) for p, r in ws.recycled.items() if p.endswith("-q30.jpg"))
    res = runner.invoke(app, ["check", path, "--archive", str(ws.archive), "--format", "json",
                              "--claimed-date", "2024-12-24", "--claimed-place", "Herat"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"input", "sha256", "verdict", "error", "matches", "exif", "notes"} <= set(out)
    assert out["input"] == path and out["sha256"] == sha256(Path(path))
    assert out["verdict"] == "likely_recycled" and out["error"] is None
    top = out["matches"][0]
    assert GUIDE_MATCH_FIELDS <= set(top)
    assert top["sha256"] == ref["sha256"] and top["event"] == ref["event"]
    assert 0.9 <= top["score"] <= 1.0
    assert set(top["distances"]) == {"pdq", "phash", "dhash", "whash"}
    expected_days = (dt.date(2024, 12, 24) - dt.date.fromisoformat(ref["date"])).days
    assert top["days_before_claim"] == expected_days > 0
    assert {"datetime_original", "camera", "software", "gps"} <= set(out["exif"])
    assert not any("not in this archive" in n for n in out["notes"])  # no-match only
    assert out["claimed_date"] == "2024-12-24" and out["claimed_place"] == "Herat"
    assert any(c["check"] == "date" and c["supports"] == "recycled"
               for c in out["claim_checks"])
    # a claim dated before the archived photo gives a negative gap
    res = runner.invoke(app, ["check", path, "--archive", str(ws.archive), "--format", "json",
                              "--claimed-date", "2000-01-01"])
    days = json.loads(res.stdout)["matches"][0]["days_before_claim"]
    assert days == (dt.date(2000, 1, 1) - dt.date.fromisoformat(ref["date"])).days < 0


def test_check_json_for_a_no_match_and_an_error(ws: Workspace) -> None:
    res = runner.invoke(app, ["check", ws.negatives[0], "--archive", str(ws.archive),
                              "--format", "json"])
    assert res.exit_code == 0
    out = json.loads(res.stdout)
    assert out["verdict"] == "no_match" and out["matches"] == []
    assert any("not in this archive" in n for n in out["notes"])
    bad = next(iter(ws.broken))
    res = runner.invoke(app, ["check", bad, "--archive", str(ws.archive), "--format", "json"])
    assert res.exit_code == 3
    out = json.loads(res.stdout)
    assert out["verdict"] == "error" and out["error"]["kind"] == ws.broken[bad]


def test_check_html_report_escapes_the_context(ws: Workspace, tmp_path: Path) -> None:
    path, ref = next((p, r) for p, r in ws.recycled.items() if p.endswith("-gray.jpg"))
    report = tmp_path / "report.html"
    res = runner.invoke(app, ["check", path, "--archive", str(ws.archive), "--format", "html",
                              "--out", str(report)])
    assert res.exit_code == 0, res.output
    assert res.stdout == ""  # the report went to the file
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert html.escape(ref["event"]) in page
    assert "<script>" not in page
    assert "data:image/jpeg;base64," in page  # both pictures embedded
    assert "likely_recycled" in page


def test_exit_codes(ws: Workspace, tmp_path: Path) -> None:
    good = ws.negatives[0]
    archive = ["--archive", str(ws.archive)]
    assert runner.invoke(app, ["check", good, *archive]).exit_code == 0
    assert runner.invoke(app, ["check", next(iter(ws.recycled)), *archive]).exit_code == 0
    assert runner.invoke(app, ["check", str(ws.scan_dir / "empty.jpg"), *archive]
                         ).exit_code == 3
    # usage errors
    assert runner.invoke(app, ["check", good, *archive, "--format", "xml"]).exit_code == 2
    assert runner.invoke(app, ["check", good, *archive, "--claimed-date", "last week"]
                         ).exit_code == 2
    assert runner.invoke(app, ["check"]).exit_code == 2
    assert runner.invoke(app, ["check", good, "--no-such-option"]).exit_code == 2
    assert scan(str(ws.scan_dir), *archive, "--format", "xml").exit_code == 2
    assert scan(*archive).exit_code == 2
    # missing archive
    missing = ["--archive", str(tmp_path / "missing.sqlite")]
    res = runner.invoke(app, ["check", good, *missing])
    assert res.exit_code == 4 and "no archive" in res.stderr
    assert scan(str(ws.scan_dir), *missing).exit_code == 4
    # a clean scan is 0
    clean = tmp_path / "clean"
    clean.mkdir()
    shutil.copyfile(good, clean / "one.jpg")
    assert scan(str(clean), *archive, "--workers", "1").exit_code == 0


def test_in_process_scan_restores_the_alarm_handler(ws: Workspace) -> None:
    def host_handler(signum: int, frame: object) -> None:  # the host program's own handler
        pass

    previous = signal.signal(signal.SIGALRM, host_handler)
    try:
        res = scan(ws.negatives[0], "--archive", str(ws.archive), "--workers", "1")
        assert res.exit_code == 0
        assert signal.getsignal(signal.SIGALRM) is host_handler
    finally:
        signal.signal(signal.SIGALRM, previous)
