"""Loading: every bad or unusual input gives the right typed error, or a correct result, through
both `imgverify.load.load` and `imgverify.check` (which never raises for input problems)."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import BRIDGE, PDQ_REF, PHOTOS, SmallArchive, coco, needs_shared, require
from PIL import Image, ImageOps
from typer.testing import CliRunner

import imgverify
from imgverify import errors
from imgverify.cli import app
from imgverify.media.load import Limits, load
from imgverify.signals.hashing import DIHEDRAL_NAMES, PictureHasher, compute_hashes, hamming
from imgverify.signals.hashprint import hash_file

pytestmark = needs_shared
runner = CliRunner()

MISC = PDQ_REF / "pdq" / "data" / "misc-images"
EXIF_ROTN = PDQ_REF / "pdq" / "data" / "reg-test-input" / "exif-rotn"
CORRUPT = PHOTOS / "imagededup_ukbench" / "mixed_images" / "ukbench09268_corrupt.jpg"


@pytest.fixture(scope="module")
def archive(small_archive: SmallArchive) -> imgverify.Archive:
    return imgverify.Archive.open(small_archive.path, readonly=True)


def expect_error(source: object, error_type: type[errors.InputError], kind: str,
                 archive: imgverify.Archive, limits: Limits | None = None) -> str:
    """`load` raises the typed error; `check` returns it as an error verdict. Returns the
    message (for content checks)."""
    with pytest.raises(error_type) as caught:
        load(source, limits)  # type: ignore[arg-type]
    assert caught.value.kind == kind
    result = imgverify.check(source, archive, limits=limits)  # type: ignore[arg-type]
    assert result.verdict == "error"
    assert result.error == {"kind": kind, "message": caught.value.message}
    assert result.matches == []
    # the bytes that could be read are identified (sha256) for the audit trail; an input
    # that could not be read at all has none
    if isinstance(source, (bytes, bytearray)) and kind != "image_too_large":
        assert result.sha256 == hashlib.sha256(source).hexdigest()
    assert result.checked_at and result.tool["version"] and result.archive is not None
    assert "could not be checked" in result.notes[-1]
    assert not any("not in this archive" in n for n in result.notes)
    return caught.value.message


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR (valid CRC) declares width x height RGB pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


# -- broken files ------------------------------------------------------------------------------
def test_truncated_jpeg(tmp_path: Path, archive: imgverify.Archive) -> None:
    data = coco(1)[0].read_bytes()
    cut = tmp_path / "truncated.jpg"
    cut.write_bytes(data[: len(data) // 2])
    message = expect_error(cut, errors.TruncatedImageError, "truncated_image", archive)
    assert str(cut) in message and "truncated" in message
    expect_error(data[: len(data) // 2], errors.TruncatedImageError, "truncated_image", archive)


def test_jpeg_cut_inside_its_header(archive: imgverify.Archive) -> None:
    data = BRIDGE.read_bytes()
    expect_error(data[:200], errors.CorruptImageError, "corrupt_image", archive)
    expect_error(data[:3], errors.CorruptImageError, "corrupt_image", archive)


def test_zero_byte_file(tmp_path: Path, archive: imgverify.Archive) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    expect_error(empty, errors.EmptyInputError, "empty_input", archive)
    expect_error(b"", errors.EmptyInputError, "empty_input", archive)


def test_text_renamed_jpg(tmp_path: Path, archive: imgverify.Archive) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_text("This is a caption, not a photo.\nSecond line.\n")
    message = expect_error(fake, errors.NotAnImageError, "not_an_image", archive)
    assert "text" in message


def test_html_renamed_jpg(tmp_path: Path, archive: imgverify.Archive) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_text("<!DOCTYPE html>\n<html><head><title>404</title></head>"
                    "<body><img src='x.jpg'></body></html>\n")
    message = expect_error(fake, errors.NotAnImageError, "not_an_image", archive)
    assert "HTML" in message


def test_missing_file_and_folder(tmp_path: Path, archive: imgverify.Archive) -> None:
    expect_error(tmp_path / "nope.jpg", errors.SourceNotFoundError, "not_found", archive)
    expect_error(tmp_path, errors.InputError, "input_error", archive)


def test_corrupt_shared_jpeg_is_an_error_verdict(archive: imgverify.Archive) -> None:
    corrupt = require(CORRUPT)
    result = imgverify.check(corrupt, archive)  # must not raise
    assert result.verdict == "error"
    assert result.error is not None
    assert result.error["kind"] in ("corrupt_image", "not_an_image")
    with pytest.raises(errors.InputError):
        load(corrupt)
    res = runner.invoke(app, ["check", str(corrupt), "--archive", str(archive.path),
                              "--format", "json"])
    assert res.exit_code == 3
    assert json.loads(res.stdout)["error"]["kind"] == result.error["kind"]


# -- decompression bombs and limits -------------------------------------------------------------
def test_png_declaring_ten_gigapixels_is_refused_before_decoding(
        archive: imgverify.Archive) -> None:
    bomb = png_declaring(100_000, 100_000)
    assert len(bomb) < 200
    # really a PNG declaring that size (read from its IHDR chunk: Pillow's own global cap,
    # which imgverify leaves alone, would refuse to open it at all)
    assert bomb[12:16] == b"IHDR" and struct.unpack(">II", bomb[16:24]) == (100_000, 100_000)
    # refused from the header: the file holds no pixel data that could be decoded
    message = expect_error(bomb, errors.ImageTooLargeError, "image_too_large", archive)
    assert "100000x100000" in message and "--max-pixels" in message


def test_lowered_pixel_limit_on_a_real_image(tmp_path: Path,
                                             archive: imgverify.Archive) -> None:
    # bridge-1-original.jpg is 1600x1004 = 1,606,400 pixels
    expect_error(BRIDGE, errors.ImageTooLargeError, "image_too_large", archive,
                 Limits(max_pixels=1_600_000))
    assert load(BRIDGE, Limits(max_pixels=1_606_400)).original_size == (1600, 1004)
    res = runner.invoke(app, ["check", str(BRIDGE), "--archive", str(archive.path),
                              "--max-pixels", "1000000", "--format", "json"])
    assert res.exit_code == 3
    assert json.loads(res.stdout)["error"]["kind"] == "image_too_large"
    big_pil = Image.open(BRIDGE)
    with pytest.raises(errors.ImageTooLargeError):
        load(big_pil, Limits(max_pixels=1_000_000))


def test_byte_limit(archive: imgverify.Archive) -> None:
    data = BRIDGE.read_bytes()
    expect_error(data, errors.ImageTooLargeError, "image_too_large", archive,
                 Limits(max_bytes=len(data) - 1))


# -- odd but valid images ----------------------------------------------------------------------
def test_gif_first_frame_is_used(tmp_path: Path, archive: imgverify.Archive) -> None:
    a, b = (Image.open(p).convert("RGB").resize((320, 240)) for p in coco(2, start=30))
    gif = tmp_path / "two-frames.gif"
    a.save(gif, "GIF", save_all=True, append_images=[b], duration=200, loop=0)
    with Image.open(gif) as im:
        assert im.n_frames == 2
        im.seek(0)
        first = im.convert("RGB")
        im.seek(1)
        second = im.convert("RGB")
    loaded = load(gif)
    assert loaded.format == "GIF" and loaded.original_size == (320, 240)
    assert np.array_equal(np.asarray(loaded.image), np.asarray(first))
    got = compute_hashes(loaded.image).pdq
    assert got == compute_hashes(first).pdq
    assert hamming(got, compute_hashes(second).pdq) > 64  # the frames really differ
    result = imgverify.check(gif, archive)
    assert result.verdict in ("no_match", "likely_recycled", "possibly_recycled")
    assert result.hashes["pdq"] == format(got, "064x")


def test_png_with_alpha_is_flattened_on_white(tmp_path: Path,
                                              archive: imgverify.Archive) -> None:
    rgb = Image.open(coco(1, start=31)[0]).convert("RGB").resize((300, 200))
    rgba = np.array(rgb.convert("RGBA"))
    rgba[:, :150, 3] = 0  # left half fully transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    loaded = load(path)
    out = np.asarray(loaded.image)
    assert loaded.image.mode == "RGB" and loaded.format == "PNG"
    assert (out[:, :150] == 255).all()
    assert np.array_equal(out[:, 150:], np.asarray(rgb)[:, 150:])
    assert imgverify.check(path, archive).verdict != "error"
    pen = require(PDQ_REF / "pdq" / "data" / "reg-test-input" / "pen-and-coaster.png")
    assert Image.open(pen).mode == "RGBA"
    assert load(pen).image.mode == "RGB"
    assert imgverify.check(pen, archive).verdict != "error"


def test_cmyk_jpeg_hashes_like_the_original() -> None:
    cmyk = require(MISC / "modes" / "CMYK.jpg")
    assert Image.open(cmyk).mode == "CMYK"
    loaded = load(cmyk)
    assert loaded.image.mode == "RGB" and loaded.original_size == (1600, 1004)
    assert hamming(compute_hashes(loaded.image).pdq, compute_hashes(load(BRIDGE).image).pdq) <= 10
    ours = int(hash_file(str(cmyk), ["pdq"])["pdq"], 16)
    original = int(hash_file(str(BRIDGE), ["pdq"])["pdq"], 16)
    assert hamming(ours, original) <= 10


@pytest.mark.parametrize("name", ["P.png", "1.png"])
def test_palette_and_bilevel_pngs(name: str) -> None:
    path = require(MISC / "modes" / name)
    loaded = load(path)
    assert loaded.image.mode == "RGB" and loaded.original_size == (1600, 1004)
    assert hamming(compute_hashes(loaded.image).pdq,
                   compute_hashes(load(BRIDGE).image).pdq) <= 16


def test_exif_rotated_photo_is_shown_upright(archive: imgverify.Archive) -> None:
    path = require(EXIF_ROTN / "exif-rotn-6.jpg")
    with Image.open(path) as raw:
        assert raw.size == (4032, 3024)  # stored sideways
        assert raw.getexif().get(0x0112) == 6
        raw.draft("RGB", (504, 378))
        stored = raw.convert("RGB")
    loaded = load(path)
    assert loaded.original_size == (3024, 4032)  # portrait, orientation applied
    assert loaded.image.height > loaded.image.width
    # the pixels are the stored ones turned 90 degrees clockwise (Pillow ROTATE_270)
    upright = PictureHasher(loaded.image).pdq_variants[0]
    stored_variants = PictureHasher(stored).pdq_variants
    assert hamming(upright, stored_variants[DIHEDRAL_NAMES.index("rotate270")]) <= 16
    assert hamming(upright, stored_variants[0]) > 64
    result = imgverify.check(path, archive)
    assert result.verdict != "error" and result.image_size == (3024, 4032)
    # a PIL image carrying the same EXIF orientation is turned the same way
    from_pil = load(Image.open(path))
    assert from_pil.original_size == (3024, 4032)
    assert hamming(compute_hashes(from_pil.image).pdq, compute_hashes(loaded.image).pdq) <= 16
    # `imgverify hash` follows Meta's tools: stored orientation, full resolution
    assert hash_file(str(path), ["pdq"])["pdq"] != format(upright, "064x")


def test_upright_photo_keeps_its_size() -> None:
    path = require(EXIF_ROTN / "exif-rotn-1.jpg")
    loaded = load(path)
    assert loaded.original_size == (4032, 3024)
    assert loaded.image.width > loaded.image.height


# -- sources: path, bytes, PIL image, standard input ------------------------------------------
def test_sources_agree(small_archive: SmallArchive, archive: imgverify.Archive) -> None:
    photo = small_archive.photos[3]
    by_path = imgverify.check(photo, archive)
    by_str = imgverify.check(str(photo), archive)
    by_bytes = imgverify.check(photo.read_bytes(), archive)
    by_pil = imgverify.check(Image.open(photo), archive)
    assert by_path.verdict == "likely_recycled"
    assert by_path.input == by_str.input == str(photo)
    assert by_bytes.input == "<bytes>" and by_pil.input == "<PIL image>"
    for r in (by_str, by_bytes, by_pil):
        assert r.verdict == by_path.verdict
        assert r.matches[0].reference_id == by_path.matches[0].reference_id
    assert by_bytes.sha256 == by_path.sha256 == by_path.matches[0].sha256
    assert by_bytes.hashes == by_path.hashes
    assert by_path.matches[0].exact_copy and by_bytes.matches[0].exact_copy
    assert not by_pil.matches[0].exact_copy  # a decoded picture is not the archived file
    assert hamming(int(by_pil.hashes["pdq"], 16), int(by_path.hashes["pdq"], 16)) <= 16


def test_standard_input(small_archive: SmallArchive, archive: imgverify.Archive) -> None:
    photo = small_archive.photos[4]
    res = runner.invoke(app, ["check", "-", "--archive", str(small_archive.path),
                              "--format", "json"], input=photo.read_bytes())
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    direct = imgverify.check(photo, archive)
    assert got["input"] == "-"
    assert got["verdict"] == direct.verdict == "likely_recycled"
    assert got["sha256"] == direct.sha256
    assert got["matches"][0]["reference_id"] == direct.matches[0].reference_id
    res = runner.invoke(app, ["hash", "--algorithm", "pdq", "-"], input=BRIDGE.read_bytes())
    assert res.exit_code == 0
    assert json.loads(res.stdout)["pdq"] == hash_file(str(BRIDGE), ["pdq"])["pdq"]
    res = runner.invoke(app, ["check", "-", "--archive", str(small_archive.path),
                              "--format", "json"], input=b"")
    assert res.exit_code == 3
    assert json.loads(res.stdout)["error"]["kind"] == "empty_input"


def test_grayscale_and_mirrored_pil_images(small_archive: SmallArchive,
                                           archive: imgverify.Archive) -> None:
    photo = Image.open(small_archive.photos[5])
    for edited in (ImageOps.grayscale(photo), ImageOps.mirror(photo.convert("RGB"))):
        result = imgverify.check(edited, archive)
        assert result.verdict == "likely_recycled"
        assert result.matches[0].event == small_archive.rows[5]["event"]


# -- one decode for hashes and local features -------------------------------------------------
def _opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the images opened for decoding from now on (the observer, not a stand-in:
    the real function still runs)."""
    from imgverify.media import load as load_module

    seen: list[str] = []
    real = load_module.open_image

    def counting(data: bytes, name: str, limits: Limits) -> Image.Image:
        seen.append(name)
        return real(data, name, limits)

    monkeypatch.setattr(load_module, "open_image", counting)
    return seen


@pytest.mark.parametrize("kind", ["rotated-jpeg", "tall-png"])
def test_large_picture_is_decoded_once_for_hashes_and_local_features(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that searches local features used to decode a large original twice (the hash
    picture, then a larger one for keypoints); one decode now serves both, with the same
    feature picture and hashes within a few bits of the old hash picture's."""
    from imgverify.checker import _feature_side, _local_picture

    if kind == "rotated-jpeg":
        path = require(EXIF_ROTN / "exif-rotn-6.jpg")  # 12 MP, stored sideways
    else:  # a phone screenshot saved as PNG: no DCT scaling, every decode is a full one
        with Image.open(require(coco(1, 7)[0])) as photo:
            shot = Image.new("RGB", (1080, 2400), (250, 250, 250))
            shot.paste(photo.convert("RGB").resize((1080, 810)), (0, 700))
        path = tmp_path / "screenshot.png"
        shot.save(path)
    data = path.read_bytes()
    opened = _opened(monkeypatch)
    twice = load(data)
    old_picture, old_side = _local_picture(twice)
    assert len(opened) == 2  # the hash picture, then the features' re-decode
    opened.clear()
    once = load(data, feature_side=_feature_side)
    picture, side = _local_picture(once)
    assert len(opened) == 1
    assert once.larger is not None and max(once.larger.size) >= side
    assert (once.original_size, once.image.size, side) == \
        (twice.original_size, twice.image.size, old_side)
    assert picture.size == old_picture.size
    # same pixels up to the resampling path (JPEG: the same DCT scale, so identical)
    diff = np.abs(np.asarray(picture, np.int16) - np.asarray(old_picture, np.int16))
    assert float(diff.mean()) < (0.01 if kind == "rotated-jpeg" else 3.0)
    new_hashes, old_hashes = compute_hashes(once.image), compute_hashes(twice.image)
    assert hamming(new_hashes.pdq, old_hashes.pdq) <= 8
    assert hamming(new_hashes.phash, old_hashes.phash) <= 4


def test_small_picture_has_no_second_copy() -> None:
    from imgverify.checker import _feature_side

    photo = require(coco(1, 3)[0])
    loaded = load(photo, feature_side=_feature_side)
    assert loaded.larger is None  # the hash picture is already large enough for keypoints
