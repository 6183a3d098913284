"""`imgverify.check` as a library: sources, typed results, thread safety, silence, EXIF
evidence, and the earliest-dated reference shown as the likely original."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import PHOTOS, SmallArchive, bsds, coco, needs_shared, require, write_manifest
from PIL import Image, ImageOps
from typer.testing import CliRunner

import imgverify
from imgverify.cli import app
from imgverify.ingest import ingest_manifest
from imgverify.match.verdict import Thresholds

pytestmark = needs_shared
runner = CliRunner()

CAMERA = PHOTOS / "camera_exif"
GPS_PHOTO = CAMERA / "exif-samples" / "gps" / "DSCN0010.jpg"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archive(request: pytest.FixtureRequest, small_archive: SmallArchive) -> imgverify.Archive:
    """The library contract holds on both backends: the same photos, rows and answers."""
    if request.param == "sqlite":
        return imgverify.Archive.open(small_archive.path, readonly=True)
    return imgverify.Archive.open(request.getfixturevalue("pg_small_archive"), readonly=True)


def summary(r: imgverify.CheckResult) -> tuple[Any, ...]:
    """Everything a check decides (not timings)."""
    return (r.input, r.verdict, r.sha256, r.error and r.error["kind"], tuple(r.notes),
            json.dumps(r.hashes, sort_keys=True), r.image_size,
            tuple((m.reference_id, round(m.score, 6), m.strength, m.role, m.transform,
                   json.dumps(m.distances, sort_keys=True)) for m in r.matches))


# -- sources and typed results -----------------------------------------------------------------
def test_check_returns_a_typed_result_for_every_source(small_archive: SmallArchive,
                                                       archive: imgverify.Archive) -> None:
    photo = small_archive.photos[2]
    row = small_archive.row_of(photo)
    pil = Image.open(photo)
    pil_size, pil_mode = pil.size, pil.mode
    for source in (photo, str(photo), photo.read_bytes(), pil):
        result = imgverify.check(source, archive, claimed_date=dt.date(2024, 3, 1))
        assert isinstance(result, imgverify.CheckResult)
        assert result.verdict == "likely_recycled" and result.recycled
        assert all(isinstance(m, imgverify.Match) for m in result.matches)
        top = result.top
        assert top is not None and top.event == row["event"] and top.date == row["date"]
        assert top.days_before_claim == (dt.date(2024, 3, 1)
                                         - dt.date.fromisoformat(row["date"])).days
        d = result.to_dict()
        json.dumps(d)  # plain JSON types only
        assert d["verdict"] == "likely_recycled" and d["matches"][0]["event"] == row["event"]
        assert d["claimed_date"] == "2024-03-01"
    assert (pil.size, pil.mode) == (pil_size, pil_mode)  # the caller's image is left alone


def test_to_dict_is_what_the_cli_prints(small_archive: SmallArchive,
                                        archive: imgverify.Archive) -> None:
    photo = small_archive.photos[6]
    lib = imgverify.check(photo, archive, claimed_date="2023-01-01").to_dict()
    res = runner.invoke(app, ["check", str(photo), "--archive", str(archive.path),
                              "--format", "json", "--claimed-date", "2023-01-01"])
    cli = json.loads(res.stdout)
    for d in (lib, cli):
        d.pop("elapsed_ms")
        d.pop("checked_at")
    assert cli == lib


def test_input_problems_are_results_and_caller_errors_raise(archive: imgverify.Archive,
                                                             tmp_path: Path) -> None:
    result = imgverify.check(b"GIF89a-broken", archive)
    assert result.verdict == "error" and result.error is not None
    assert result.error["kind"] == "corrupt_image" and not result.recycled
    assert result.to_dict()["error"] == result.error
    with pytest.raises(ValueError):
        imgverify.check(coco(1)[0], archive, claimed_date="31/12/2024")
    with pytest.raises(imgverify.ArchiveError):
        imgverify.Archive.open(tmp_path / "nope.sqlite", readonly=True)
    for path in (tmp_path / "a.sqlite", str(tmp_path / "a.sqlite")):  # not an AttributeError
        with pytest.raises(TypeError, match=r"Archive\.open\(path\)"):
            imgverify.check(coco(1)[0], path)  # type: ignore[arg-type]


# -- threads and silence -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_inputs(small_archive: SmallArchive,
                 tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    folder = tmp_path_factory.mktemp("mixed")
    a, b, c = small_archive.photos[10:13]
    im = Image.open(b).convert("RGB")
    half = folder / "half.jpg"
    im.resize((im.width // 2, im.height // 2)).save(half, quality=80)
    mirrored = folder / "mirror.png"
    ImageOps.mirror(im).save(mirrored)
    broken = folder / "broken.jpg"
    broken.write_bytes(c.read_bytes()[:4000])
    return [a, half, mirrored, c.read_bytes(), broken, *coco(3, split="val2017"),
            bsds(1, split="test")[0], str(c)]


def test_eight_threads_on_one_archive_equal_sequential(small_archive: SmallArchive,
                                                       mixed_inputs: list[Any]) -> None:
    assert len(mixed_inputs) == 10
    with imgverify.Archive.open(small_archive.path, readonly=True) as shared:
        expected = [summary(imgverify.check(s, shared)) for s in mixed_inputs]
    verdicts = {e[1] for e in expected}
    assert verdicts == {"likely_recycled", "no_match", "error"}

    shared = imgverify.Archive.open(small_archive.path, readonly=True)  # one open archive
    results: dict[int, list[tuple[Any, ...]]] = {}
    failures: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            order = [(t + i) % 10 for i in range(10)]  # every thread in a different order
            got = {i: summary(imgverify.check(mixed_inputs[i], shared)) for i in order}
            results[t] = [got[i] for i in range(10)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not failures, failures
    assert sorted(results) == list(range(8))
    for t in range(8):
        assert results[t] == expected, f"thread {t} differs from the sequential run"


def test_check_prints_nothing(archive: imgverify.Archive, mixed_inputs: list[Any],
                              capfd: pytest.CaptureFixture[str]) -> None:
    camera = require(GPS_PHOTO)
    for source in [*mixed_inputs, camera, b"", b"<html></html>",
                   require(PHOTOS / "imagededup_ukbench" / "mixed_images"
                           / "ukbench09268_corrupt.jpg")]:
        imgverify.check(source, archive, claimed_date="2024-01-01")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# -- EXIF evidence -----------------------------------------------------------------------------
def _pillow_exif(path: Path) -> dict[str, Any]:
    """The same facts read independently with Pillow."""
    with Image.open(path) as im:
        exif = im.getexif()
        sub = exif.get_ifd(0x8769)
        gps = exif.get_ifd(0x8825)
    when = sub.get(0x9003)
    lat = lon = None
    if gps.get(2) and gps.get(4):
        lat = sum(float(v) / 60 ** i for i, v in enumerate(gps[2]))
        lon = sum(float(v) / 60 ** i for i, v in enumerate(gps[4]))
        lat = -lat if gps.get(1) == "S" else lat
        lon = -lon if gps.get(3) == "W" else lon
    return {"datetime_original": dt.datetime.strptime(when, "%Y:%m:%d %H:%M:%S").isoformat()
            if when else None, "make": (exif.get(0x010F) or "").strip(),
            "model": (exif.get(0x0110) or "").strip(), "lat": lat, "lon": lon}


@pytest.mark.parametrize("name", [
    "exif-samples/gps/DSCN0010.jpg",                 # Nikon, GPS north/east
    "metadata-extractor-images/Apple_iPhone_6.jpg",  # phone, GPS west (negative longitude)
    "metadata-extractor-images/Canon_PowerShot_G11.jpg",  # 10 MP, no GPS
    "exif-samples/mobile/jolla.jpg",                 # make == model
])
def test_exif_evidence_from_camera_photos(name: str, archive: imgverify.Archive) -> None:
    path = require(CAMERA / name)
    truth = _pillow_exif(path)
    result = imgverify.check(path, archive, claimed_date="2024-06-01")
    assert result.verdict == "no_match"
    exif = result.exif
    assert set(exif) >= {"datetime_original", "camera", "software", "gps"}
    assert exif["datetime_original"] == truth["datetime_original"] is not None
    assert exif["camera"] is not None and truth["model"] in exif["camera"]
    assert truth["make"].split()[0].lower() in exif["camera"].lower()
    if truth["lat"] is None:
        assert exif["gps"] is None
    else:
        assert exif["gps"]["lat"] == pytest.approx(truth["lat"], abs=1e-5)
        assert exif["gps"]["lon"] == pytest.approx(truth["lon"], abs=1e-5)
    # capture date before the claimed date: said in a note, with the gap in days
    capture = dt.date.fromisoformat(truth["datetime_original"][:10])
    gap = (dt.date(2024, 6, 1) - capture).days
    notes = [n for n in result.notes if "EXIF says the photo was taken" in n]
    assert len(notes) == 1
    assert capture.isoformat() in notes[0] and f"{gap} days before the claimed date" in notes[0]
    assert any(c["check"] == "exif_date" and c["supports"] == "recycled"
               for c in result.claim_checks)
    assert any(t["kind"] == "exif" and t["date"] == capture.isoformat()
               for t in result.timeline)


def test_no_exif_note_when_the_claim_is_not_later(archive: imgverify.Archive) -> None:
    path = require(GPS_PHOTO)  # taken 2008-10-22
    for claimed in ("2008-10-22", "2008-01-01", None):
        result = imgverify.check(path, archive, claimed_date=claimed)
        assert result.exif["datetime_original"] == "2008-10-22T16:28:39"
        assert not any("EXIF says the photo was taken" in n for n in result.notes)


def test_stripped_photo_has_empty_exif(small_archive: SmallArchive,
                                       archive: imgverify.Archive) -> None:
    result = imgverify.check(small_archive.photos[0], archive, claimed_date="2024-01-01")
    assert {k: result.exif[k] for k in ("datetime_original", "camera", "software", "gps")} \
        == dict.fromkeys(("datetime_original", "camera", "software", "gps"))
    assert any(c["check"] == "metadata" and c["supports"] == "neutral"
               for c in result.claim_checks)


# -- the same photo archived twice -------------------------------------------------------------
@pytest.fixture(scope="module")
def twice(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One bsds500 photo archived twice: a poor early copy (2012) and a good later one (2018),
    ingested in both orders (so order of insertion cannot decide)."""
    folder = tmp_path_factory.mktemp("twice")
    original = bsds(1, split="val")[0]
    im = Image.open(original).convert("RGB")
    early = folder / "early.jpg"
    im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS).save(early, quality=30)
    later = folder / "later.png"  # the pixels themselves: the later copy is the closer one
    im.save(later)
    rows = [{"image": "early.jpg", "date": "2012-06-01", "event": "Early publication"},
            {"image": "later.png", "date": "2018-01-01", "event": "Later publication"}]
    archives = []
    for i, ordered in enumerate((rows, rows[::-1])):
        manifest = write_manifest(folder / f"m{i}.csv", ordered)
        arch = imgverify.Archive.open(folder / f"a{i}.sqlite")
        assert ingest_manifest(arch, manifest).added == 2
        archives.append(arch)
    return {"original": original, "early": early, "later": later, "archives": archives}


def test_earliest_dated_reference_comes_first(twice: dict[str, Any]) -> None:
    for arch in twice["archives"]:
        for query in (twice["original"], twice["later"], twice["early"]):
            result = imgverify.check(query, arch, claimed_date="2024-01-01")
            assert result.verdict == "likely_recycled"
            first, second = result.matches
            assert (first.event, first.date, first.role) == (
                "Early publication", "2012-06-01", "likely_original")
            assert (second.event, second.date, second.role) == (
                "Later publication", "2018-01-01", "later_publication")
            assert first.strength == second.strength == "likely"
            assert first.days_before_claim == (dt.date(2024, 1, 1) - dt.date(2012, 6, 1)).days
            assert "dated 2012-06-01" in result.notes[0]
            assert any("1 later publication" in n for n in result.notes)
            refs = [t for t in result.timeline if t["kind"] == "reference"]
            assert [t["date"] for t in refs] == ["2012-06-01", "2018-01-01"]
            assert refs[0]["what"].startswith("first archived publication")
        # the earlier copy wins although the later one is the better (here: exact) match
        exact = imgverify.check(twice["later"], arch)
        assert exact.matches[1].exact_copy and exact.matches[1].score == 1.0
        assert exact.matches[0].score < 1.0


#: Only the global hashes, and none of their matches strong enough for "likely": every match
#: lands in the "possible" tier (as edited copies near the threshold do with the defaults).
POSSIBLE_ONLY = Thresholds(likely=-1.0, use_local_features=False)


def test_possible_tier_never_calls_an_earlier_copy_a_later_publication(
        twice: dict[str, Any]) -> None:
    result = imgverify.check(twice["original"], twice["archives"][0], thresholds=POSSIBLE_ONLY)
    # the case this is about (asserted here, not left to another test): two possible matches,
    # the later-dated one closer
    assert result.verdict == "possibly_recycled"
    assert {m.strength for m in result.matches} == {"possible"}
    by_date = sorted(result.matches, key=lambda m: m.date)
    assert [m.date for m in by_date] == ["2012-06-01", "2018-01-01"]
    assert by_date[1].score > by_date[0].score
    # a possible match is a candidate: never "likely original", so nothing is "later" than it
    # (issue 13, item 4); the earliest candidate still comes first
    assert [m.role for m in result.matches] == ["candidate", "candidate"]
    assert [m.date for m in result.matches] == ["2012-06-01", "2018-01-01"]
    refs = [t for t in result.timeline if t["kind"] == "reference"]
    assert not refs[0]["what"].startswith("later publication")


# -- what the result says about the edit -------------------------------------------------------
def _rotated(photo: Path, degrees_ccw: float) -> bytes:
    """The photo turned `degrees_ccw` counter-clockwise (Pillow's convention), centre kept."""
    im = Image.open(photo).convert("RGB")
    rot = im.rotate(degrees_ccw, resample=Image.Resampling.BICUBIC, expand=True)
    w, h = rot.size
    buf = io.BytesIO()
    rot.crop((int(w * 0.15), int(h * 0.15), int(w * 0.85), int(h * 0.85))).save(
        buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("degrees_ccw", [8, -8])
def test_small_rotation_is_found_by_local_features(
        degrees_ccw: int, small_archive: SmallArchive, archive: imgverify.Archive) -> None:
    result = imgverify.check(_rotated(small_archive.photos[1], degrees_ccw), archive)
    assert result.verdict == "likely_recycled"
    top = result.matches[0]
    assert top.event == small_archive.rows[1]["event"]
    assert top.transform is not None
    assert re.search(r"rotated about [789]° (counter-)?clockwise", top.transform), top.transform
    assert "local_features" in top.method


@pytest.mark.parametrize("degrees_ccw", [8, -8])
def test_small_rotation_direction_is_named_correctly(
        degrees_ccw: int, small_archive: SmallArchive, archive: imgverify.Archive) -> None:
    result = imgverify.check(_rotated(small_archive.photos[1], degrees_ccw), archive)
    transform = result.matches[0].transform or ""
    if degrees_ccw > 0:
        assert "counter-clockwise" in transform, transform
    else:
        assert "clockwise" in transform and "counter-clockwise" not in transform, transform


def test_quarter_turn_direction_is_named_correctly(small_archive: SmallArchive,
                                                   archive: imgverify.Archive) -> None:
    im = Image.open(small_archive.photos[1]).convert("RGB")
    for op, words in ((Image.Transpose.ROTATE_90, "rotated 90° counter-clockwise"),
                      (Image.Transpose.ROTATE_270, "rotated 90° clockwise")):
        buf = io.BytesIO()
        im.transpose(op).save(buf, "JPEG", quality=90)
        result = imgverify.check(buf.getvalue(), archive)
        assert result.verdict == "likely_recycled"
        assert result.matches[0].transform == words


def test_notes_read_correctly_for_an_exact_copy(small_archive: SmallArchive,
                                                archive: imgverify.Archive) -> None:
    result = imgverify.check(small_archive.photos[9], archive)
    assert result.matches[0].exact_copy
    assert not any("appears identical file" in n for n in result.notes), result.notes
