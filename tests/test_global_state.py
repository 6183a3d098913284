"""The library leaves the host process as it found it.

A moderation pipeline imports imgverify next to its own code: turning off Pillow's
decompression-bomb guard, or leaving BLAS, OpenCV and OpenMP pools capped, or changing
logger levels or warning filters, would change that application's behaviour.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import PHOTOS, coco, manifest_rows, require, write_manifest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import io, json, logging, signal, sys, threading, warnings
    from pathlib import Path
    import cv2, faiss
    from PIL import Image
    from threadpoolctl import threadpool_info

    def snapshot():
        return {
            "pillow_max_pixels": Image.MAX_IMAGE_PIXELS,
            "warning_filters": [repr(f) for f in warnings.filters],
            "exifread_level": logging.getLogger("exifread").level,
            "root_handlers": len(logging.getLogger().handlers),
            "cv2_threads": cv2.getNumThreads(),
            "omp_threads": faiss.omp_get_max_threads(),
            "blas": sorted((i["filepath"], i["num_threads"]) for i in threadpool_info()),
            "sigalrm": repr(signal.getsignal(signal.SIGALRM)),
        }

    manifest, workdir, crop_source = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    # third-party import-time effects (scipy adds a warning filter) are theirs, not ours
    import exifread, imagehash, pdqhash, requests, scipy.fft, scipy.special  # noqa: F401
    before = snapshot()
    import imgverify
    from imgverify.batch import LineWriter, ScanConfig, scan
    after_import = snapshot()

    archive = imgverify.Archive.open(workdir / "desk.sqlite")
    from imgverify.ingest import ingest_manifest
    report = ingest_manifest(archive, manifest)  # in this process (workers=1)
    assert report.added > 0, report.to_dict()
    im = Image.open(crop_source).convert("RGB")
    w, h = im.size
    crop = im.crop((int(w * 0.3), int(h * 0.3), w, h))  # found by local features (faiss, cv2)
    hostile = b"\\x89PNG\\r\\n\\x1a\\n" + b"\\0" * 40
    results = []
    def work():
        results.append(imgverify.check(crop, archive).verdict)
        results.append(imgverify.check(hostile, archive).verdict)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    buf = io.StringIO()
    scan([crop_source], ScanConfig(archive_path=str(workdir / "desk.sqlite")),
         LineWriter(buf, "jsonl", False), workers=1)  # an in-process scan
    archive.close()
    after_use = snapshot()
    print(json.dumps({"before": before, "after_import": after_import,
                      "after_use": after_use, "results": sorted(results),
                      "scan": json.loads(buf.getvalue())["verdict"]}))
""")


def test_import_and_use_leave_global_state_unchanged(tmp_path: Path) -> None:
    require(PHOTOS)
    photos = coco(6)
    manifest = write_manifest(tmp_path / "m.csv", manifest_rows(photos))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(manifest), str(tmp_path),
                          str(photos[1])], capture_output=True, text=True, timeout=600,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["results"] == ["error"] * 4 + ["likely_recycled"] * 4, got["results"]
    assert got["scan"] == "likely_recycled"
    before = got["before"]
    assert before["pillow_max_pixels"] is not None  # Pillow's own default guard
    for stage in ("after_import", "after_use"):
        for key, value in before.items():
            assert got[stage][key] == value, f"{key} changed {stage}: {value} -> {got[stage][key]}"


def test_own_pixel_cap_applies_without_touching_pillows(tmp_path: Path) -> None:
    """A declared canvas over imgverify's limit is refused by imgverify's own check, and one
    under it is not refused by Pillow's global guard (which stays as the host set it)."""
    import struct
    import zlib

    from PIL import Image

    import imgverify
    from imgverify.media.load import Limits

    def png(w: int, h: int) -> bytes:
        def chunk(kind: bytes, body: bytes) -> bytes:
            return (struct.pack(">I", len(body)) + kind + body
                    + struct.pack(">I", zlib.crc32(kind + body)))
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IEND", b""))

    default = Image.MAX_IMAGE_PIXELS
    big = png(15_000, 15_000)  # 225 MP: over Pillow's 179 MP error limit and our 200 MP cap
    refused = imgverify.check(big, imgverify.Archive.default())
    assert refused.error is not None and refused.error["kind"] == "image_too_large"
    assert "--max-pixels" in refused.error["message"]
    # raised above it, our cap admits the canvas: the header is read, then the missing pixel
    # data is the problem; Pillow's global guard was not consulted and is unchanged
    allowed = imgverify.check(big, imgverify.Archive.default(), limits=Limits(max_pixels=10**9))
    assert allowed.error is not None and allowed.error["kind"] != "image_too_large"
    assert Image.MAX_IMAGE_PIXELS == default


@pytest.mark.parametrize("limit", [None, 1])
def test_native_thread_cap_is_restored(limit: int | None) -> None:
    from imgverify.threads import native_settings, native_threads

    before = native_settings()
    with native_threads(limit):
        inside = native_settings()
        with native_threads(limit):  # nested (another thread's call): still capped
            assert native_settings() == inside
        assert native_settings() == inside
    assert native_settings() == before
    if limit == 1:
        assert inside["cv2"] == 1 and inside["omp"] == 1
        assert all(n == 1 for _path, n in inside["pools"])


WARM = textwrap.dedent("""
    import json, sys
    from PIL import Image
    import imgverify
    from imgverify.checker import warm_up

    archive = imgverify.Archive.default()
    warm_up(archive)
    before = set(sys.modules)
    im = Image.open(sys.argv[1]).convert("RGB")
    w, h = im.size
    for source in (sys.argv[1], im.crop((w // 3, h // 3, w, h)), b"not an image",
                   sys.argv[2], sys.argv[3]):
        imgverify.check(source, archive, claimed_date="2024-01-01")
    print(json.dumps(sorted(set(sys.modules) - before)))
""")


def test_warm_up_leaves_nothing_to_import_under_a_time_limit() -> None:
    """A scan's per-input time-out lands anywhere, also inside a module's first import, which
    leaves that module broken for the rest of the process (OpenCV: "recursion is detected").
    After `warm_up`, which batch runners call before their first timed input, checks of every
    kind (global match, local match, not an image, CMYK, PNG) import nothing more."""
    fixtures = ROOT / "fixtures"
    out = subprocess.run([sys.executable, "-c", WARM,
                          str(fixtures / "examples" / "viral_rocket_repost.jpg"),
                          str(fixtures / "hostile" / "corpus" / "cmyk.jpg"),
                          str(fixtures / "hostile" / "corpus" / "one_pixel.png")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_scan_time_outs_never_break_a_later_input(tmp_path: Path) -> None:
    """Every input of an in-process scan times out at once; each is a `timeout` line, never an
    internal error left behind by an import the time-out interrupted."""
    corpus = ROOT / "fixtures" / "hostile" / "corpus"
    inputs = [str(corpus / name) for name in ("cmyk.jpg", "one_pixel.png", "cmyk.jpg",
                                               "one_pixel.png")]
    out = tmp_path / "t.jsonl"
    run = subprocess.run([sys.executable, "-m", "imgverify", "scan", *inputs, "--timeout",
                          "0.0005", "--out", str(out), "--workers", "1", "--no-progress"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 3, run.stderr[-2000:]
    kinds = [json.loads(line)["error"]["kind"] for line in out.read_text().splitlines()]
    assert kinds == ["timeout"] * 4
