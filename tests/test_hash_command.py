"""`imgverify hash` without Meta's pdqhash in the loop: the numpy PDQ is the exchange format.

The command used to run pdqhash on the full decode; it now runs imgverify's own PDQ (a linear
map plus the DCT) and an integer form of imagehash's wavelet hash. These tests hold the output
to the reference implementations bit for bit: PDQ and quality against Meta's published rows
with pdqhash made unimportable, and the 64-bit hashes against imagehash on the same pixels.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import imagehash
import numpy as np
import pytest
from conftest import BRIDGE, PDQ_REF, PHOTOS, SHARED_MISSING, needs_shared, require
from PIL import Image
from typer.testing import CliRunner

from imgverify.cli import app
from imgverify.media.load import reference_pixels
from imgverify.signals.hashing import _pdq_luma, imagehash_to_int, pdq_of_array, whash_default

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

#: Camera JPEGs of about 12 MP (the size the command's speed is quoted for).
CAMERA_12MP = ("metadata-extractor-images/Samsung_SM-G935L_(Galaxy_S7_Edge).jpg",
               "exifr/iptc-mess.jpg")


def _exact_rows() -> list[dict[str, str]]:
    path = PDQ_REF / "expected.csv"
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [r for r in csv.DictReader(fh)
                if r["reference"] in ("pdqhash-pillow", "java-imageio")]


@needs_shared
def test_hash_command_is_meta_exact_with_pdqhash_unimportable() -> None:
    """Every bit-exact reference row (pdqhash-pillow and java-imageio), hash and quality,
    through the real CLI in a process where `import pdqhash` fails."""
    rows = _exact_rows()
    assert len(rows) >= 20, SHARED_MISSING
    files = [str(PDQ_REF / r["file"]) for r in rows]
    code = ("import sys; sys.modules['pdqhash'] = None; from imgverify.cli import run; "
            "sys.argv[0] = 'imgverify'; run()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", code, "hash", "--algorithm", "pdq",
                           "--format", "jsonl", *files],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["input"] for r in records] == files
    for row, rec in zip(rows, records, strict=True):
        assert rec["pdq"] == row["pdq_hex"], row["file"]
        if row["quality"]:
            assert rec["pdq_quality"] == int(row["quality"]), row["file"]


@needs_shared
@pytest.mark.parametrize("name", CAMERA_12MP)
def test_hash_record_equals_the_reference_libraries(name: str) -> None:
    """A 12 MP camera JPEG through `imgverify hash` (all four hashes): PDQ and quality as
    pdqhash gives them, pHash/dHash/wHash as imagehash gives them, on the stored pixels."""
    path = require(PHOTOS / "camera_exif" / name)
    res = runner.invoke(app, ["hash", "--format", "jsonl", str(path)])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    pixels = reference_pixels(path.read_bytes())
    pdq, quality = pdq_of_array(pixels)
    img = Image.fromarray(pixels)
    assert rec == {"input": str(path), "pdq": format(pdq, "064x"), "pdq_quality": quality,
                   "phash": str(imagehash.phash(img)), "dhash": str(imagehash.dhash(img)),
                   "whash": str(imagehash.whash(img))}


def _gray_pictures() -> list[Image.Image]:
    """Real photos at the sizes whash meets: camera-size, odd, non-square, tiny."""
    bridge = Image.open(require(BRIDGE)).convert("L")
    photo = Image.open(require(PHOTOS / "camera_exif" / CAMERA_12MP[1])).convert("L")
    return [bridge, bridge.crop((3, 0, 1001, 777)), bridge.transpose(Image.Transpose.ROTATE_90),
            photo, photo.reduce(7), bridge.crop((500, 300, 531, 340)),
            bridge.crop((500, 300, 509, 313)), bridge.crop((500, 300, 504, 303))]


@needs_shared
def test_wavelet_hash_is_imagehash_bit_for_bit() -> None:
    for gray in _gray_pictures():
        assert whash_default(gray) == imagehash_to_int(imagehash.whash(gray)), gray.size


@needs_shared
def test_wavelet_hash_with_tied_middle_blocks_is_imagehash_bit_for_bit() -> None:
    """A photo on a white page wider than half the picture: the middle block sums tie, so the
    bits depend on pywt's rounding and the function must defer to imagehash."""
    photo = Image.open(require(BRIDGE)).convert("L").resize((400, 250))
    page = Image.new("L", (1024, 1024), 255)
    page.paste(photo, (40, 60))
    small = np.asarray(page.resize((1024, 1024), imagehash.ANTIALIAS), dtype=np.int64)
    sums = np.sort(small.reshape(8, 128, 8, 128).sum(axis=(1, 3)).ravel())
    assert sums[31] == sums[32]  # the case this test is about
    assert whash_default(page) == imagehash_to_int(imagehash.whash(page))


def test_pdq_luma_is_the_pdqhash_binding_formula() -> None:
    """Every (R, G) pair with 16 blue levels, in bands: the same float32 as pdqhash's binding
    (`(R*0.299 + G*0.587 + B*0.114).astype('float32')` in float64 numpy)."""
    r, g, b = np.meshgrid(np.arange(256), np.arange(256), np.arange(0, 256, 17), indexing="ij")
    rgb = np.stack([r, g, b], axis=-1).astype(np.uint8).reshape(4096, 256, 3)
    expected = (rgb[:, :, 0] * 0.299 + rgb[:, :, 1] * 0.587
                + rgb[:, :, 2] * 0.114).astype("float32")
    got = _pdq_luma(rgb)
    assert got.dtype == np.float32
    assert np.array_equal(got, expected)
