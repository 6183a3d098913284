"""Hostile input: every kind in fixtures/hostile gets a typed error or a correct result, in
bounded time and memory; a scan of all of them completes with one line per input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import imgverify
from imgverify.errors import (
    CorruptImageError,
    EmptyInputError,
    ImageTooLargeError,
    InputError,
    NotAnImageError,
    SourceNotFoundError,
    TruncatedImageError,
)

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fixtures" / "hostile" / "corpus"
sys.path.insert(0, str(ROOT / "fixtures" / "hostile"))
import make_corpus  # noqa: E402

INPUT_KINDS = {c.kind for c in (InputError, EmptyInputError, NotAnImageError, CorruptImageError,
                                TruncatedImageError, ImageTooLargeError, SourceNotFoundError)}
INPUT_KINDS |= {"unsupported_format", "fetch_error"}

EXPECTED = {
    "zero_bytes.jpg": {"empty_input"},
    "truncated_jpeg_10.jpg": {"corrupt_image", "truncated_image"},
    "truncated_jpeg_half.jpg": {"truncated_image"},
    "truncated_jpeg_tail.jpg": {"truncated_image"},
    "truncated_png_header.png": {"not_an_image", "corrupt_image", "truncated_image"},
    "truncated_png_half.png": {"truncated_image", "corrupt_image"},
    "truncated_webp_half.webp": {"corrupt_image", "truncated_image"},
    "truncated_gif.gif": {"not_an_image", "corrupt_image", "truncated_image"},
    "bmp_truncated.bmp": {"truncated_image", "corrupt_image"},
    "random_bytes.jpg": {"not_an_image"},
    "html_page.jpg": {"not_an_image"},
    "pdf_document.jpg": {"not_an_image"},
    "svg_text.jpg": {"not_an_image"},
    "utf16_text.jpg": {"not_an_image"},
    "jpeg_only_soi.jpg": {"not_an_image", "corrupt_image", "truncated_image"},
    "tiff_bad_ifd.tif": {"not_an_image", "corrupt_image"},
    "png_zero_size.png": {"not_an_image", "corrupt_image"},
    "png_bomb_gigapixel.png": {"image_too_large"},
    "gif_bomb_65535.gif": {"image_too_large"},
    "png_claims_100000x100000.png": {"image_too_large"},
}
VALID = {"garbage_appended.jpg", "polyglot_jpeg_zip.jpg", "gif_10000_frames.gif",
         "animated.webp", "png_16bit_grey.png", "png_palette_trns.png",
         "png_rgba_half_transparent.png", "cmyk.jpg", "ycck.jpg", "one_pixel.png",
         "strip_60000x10.png",
         "exif_loop.jpg", "exif_huge_count.jpg", "exif_wrong_types.jpg",
         "exif_makernote_claims_1mb.jpg", "exif_invalid_dates.jpg"}


def test_corpus_is_complete_and_reproducible() -> None:
    on_disk = {p.name: p.read_bytes() for p in CORPUS.iterdir()}
    generated = make_corpus.corpus()
    assert set(on_disk) == set(generated) == set(EXPECTED) | VALID
    assert len(on_disk) >= 30
    assert all(on_disk[k] == v for k, v in generated.items())


@pytest.mark.parametrize("name", sorted(set(EXPECTED) | VALID))
def test_each_kind_gives_typed_error_or_result(name: str) -> None:
    archive = imgverify.Archive.default()
    result = imgverify.check(CORPUS / name, archive)  # time per file: bench/hostile.py
    if name in EXPECTED:
        assert result.verdict == "error"
        assert result.error is not None and result.error["kind"] in EXPECTED[name], result.error
        assert result.error["message"]
    else:
        assert result.verdict == "no_match", (name, result.error)
        assert result.sha256 and result.hashes["pdq"]
    json.dumps(result.to_dict())  # always serialisable


def test_malformed_exif_is_empty_evidence_not_an_error() -> None:
    for name in ("exif_loop.jpg", "exif_huge_count.jpg", "exif_wrong_types.jpg",
                 "exif_makernote_claims_1mb.jpg", "exif_invalid_dates.jpg"):
        exif = imgverify.check(CORPUS / name, imgverify.Archive.default()).exif
        assert exif["datetime_original"] is None, name  # 0000:00:00 is no date


def test_whole_corpus_in_bounded_memory() -> None:
    # the peak of this process's own memory (VmHWM): ru_maxrss also counts the parent's
    # resident set at the fork (Linux keeps the larger across exec), so it failed whenever
    # the test run itself had grown past 1 GB, whatever the corpus cost
    code = (
        "import re, sys, imgverify\n"
        "from pathlib import Path\n"
        "a = imgverify.Archive.default()\n"
        "for p in sorted(Path(sys.argv[1]).iterdir()):\n"
        "    imgverify.check(p, a)\n"
        "status = Path('/proc/self/status').read_text()\n"
        "print(re.search(r'VmHWM:\\s*(\\d+) kB', status).group(1))\n")
    out = subprocess.run([sys.executable, "-c", code, str(CORPUS)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    peak_kb = int(out.stdout.strip().splitlines()[-1])
    assert peak_kb < 1024 * 1024, f"peak RSS {peak_kb} kB"


def test_scan_of_hostile_folder(tmp_path: Path) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    for p in CORPUS.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    runtime = make_corpus.make_runtime_cases(folder / "runtime")
    out = tmp_path / "scan.jsonl"
    proc = subprocess.run([sys.executable, "-m", "imgverify", "scan", str(folder), "--format",
                           "jsonl", "--all-files", "--out", str(out), "--workers", "2",
                           "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr  # completed; some inputs could not be checked
    assert "Traceback" not in proc.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    inputs = [r["input"] for r in lines]
    assert len(inputs) == len(set(inputs))
    files = [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]
    walked = {os.fsdecode(os.fsencode(str(p))) for p in files
              if "loop_" not in p.name and p.name != "up"}
    assert set(inputs) >= {w for w in walked if "dir_loop" not in w}
    by_name = {Path(r["input"]).name: r for r in lines}
    assert by_name["dangling.jpg"]["error"]["kind"] == "not_found"
    assert by_name["makernote_1mb.tif"]["verdict"] == "no_match"
    bad = [r for r in lines if "bad-" in r["input"]]
    assert len(bad) == 1 and bad[0]["verdict"] == "no_match"
    unreadable = by_name["unreadable.jpg"]
    if os.geteuid() != 0:  # root reads anything; otherwise it is a typed error
        assert unreadable["error"]["kind"] == "input_error"
    for r in lines:
        assert r["verdict"] in ("error", "no_match", "likely_recycled", "possibly_recycled")
        if r["verdict"] == "error":
            assert r["error"]["kind"] in INPUT_KINDS, r
    assert len(runtime) >= 5


def test_file_changing_while_read(tmp_path: Path) -> None:
    target = tmp_path / "changing.jpg"
    good = (CORPUS / "cmyk.jpg").read_bytes()
    target.write_bytes(good)
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            target.write_bytes(good[: 100 + (i * 997) % len(good)] if i % 2 else good)
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(30):
            r = imgverify.check(target, imgverify.Archive.default())
            assert r.verdict in ("no_match", "error")
            if r.error:
                assert r.error["kind"] in INPUT_KINDS
    finally:
        stop.set()
        t.join()


def test_folder_of_many_empty_files(tmp_path: Path) -> None:
    n = 30_000  # thousands of bad files in one run; the count changes nothing else
    folder = tmp_path / "empties"
    folder.mkdir()
    for i in range(n):
        (folder / f"{i:06d}.jpg").touch()
    out = tmp_path / "e.jsonl"
    proc = subprocess.run([sys.executable, "-m", "imgverify", "scan", str(folder), "--out",
                           str(out), "--workers", "1", "--no-progress"], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 3
    with out.open() as fh:
        count = sum(1 for line in fh if '"empty_input"' in line)
    assert count == n


def test_user_limits_frames_and_timeout(tmp_path: Path) -> None:
    archive = imgverify.Archive.default()
    r = imgverify.check(CORPUS / "gif_10000_frames.gif", archive,
                        limits=imgverify.Limits(max_frames=100))
    assert r.error is not None and r.error["kind"] == "image_too_large"
    assert "10,000 frames" in r.error["message"]
    out = tmp_path / "t.jsonl"
    proc = subprocess.run([sys.executable, "-m", "imgverify", "scan", str(CORPUS / "cmyk.jpg"),
                           str(CORPUS / "one_pixel.png"), "--timeout", "0.0005", "--out",
                           str(out), "--workers", "1", "--no-progress"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    kinds = [json.loads(line)["error"]["kind"] for line in out.read_text().splitlines()]
    assert kinds == ["timeout", "timeout"]
    for flag in ("--max-pixels", "--max-bytes", "--max-frames", "--timeout"):
        helptext = subprocess.run([sys.executable, "-m", "imgverify", "scan", "--help"],
                                  capture_output=True, text=True).stdout
        assert flag in helptext
