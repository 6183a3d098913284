"""Reports an editor can audit (issue 13, items 1-5): what was checked against, evidence in
each stage's own words, an outline where the photo is, a headline that follows the evidence,
and readable metadata. The HTML side of items 3 and 5 is checked in Chromium in
tests/test_browser.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import sys
from pathlib import Path

import pytest
from conftest import PHOTOS, SmallArchive, coco, needs_shared
from PIL import Image

import imgverify
from imgverify.match.result import Match
from imgverify.match.search import RawMatch
from imgverify.match.verdict import order_matches
from imgverify.report.render import headline, to_html, to_text
from imgverify.signals.features import INSIDE_LARGER_IMAGE, GeometricMatch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import report_regions as RR  # noqa: E402

pytestmark = needs_shared
GPS_PHOTO = PHOTOS / "camera_exif" / "exif-samples" / "gps" / "DSCN0010.jpg"
UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archive(request: pytest.FixtureRequest, small_archive: SmallArchive) -> imgverify.Archive:
    """Reports read the same on both backends (only the archive's name and backend differ)."""
    if request.param == "sqlite":
        return imgverify.Archive.open(small_archive.path, readonly=True)
    return imgverify.Archive.open(request.getfixturevalue("pg_small_archive"), readonly=True)


def _jpeg(im: Image.Image, quality: int = 80) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# -- 1. auditable ---------------------------------------------------------------------------
def test_every_format_states_archive_tool_time_input_and_reference(
        archive: imgverify.Archive, small_archive: SmallArchive) -> None:
    photo = small_archive.photos[3]
    data = _jpeg(Image.open(photo), 60)
    r = imgverify.check(data, archive, name="repost.jpg")
    assert r.verdict == "likely_recycled"
    d = json.loads(json.dumps(r.to_dict()))
    a = d["archive"]
    name = small_archive.path.name if archive.backend == "sqlite" else archive.location
    assert a["name"] == name and a["backend"] == archive.backend and a["id"]
    assert a["references"] == 20 and a["generation"] == archive.generation()
    assert (a["earliest_date"], a["latest_date"]) == ("2016-05-01", "2016-05-20")
    assert a["hash_pipeline"] == archive.hash_pipeline()
    assert d["tool"] == {"name": "imgverify", "version": imgverify.__version__,
                         "hash_pipeline": archive.hash_pipeline()}
    assert UTC.match(d["checked_at"])
    assert abs(dt.datetime.strptime(d["checked_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.UTC).timestamp() - dt.datetime.now(dt.UTC).timestamp()) < 3600
    assert d["sha256"] == hashlib.sha256(data).hexdigest()
    ref_id = small_archive.row_of(photo)  # the archived row; its id is in the match
    assert d["matches"][0]["date"] == ref_id["date"]
    text = to_text(r)
    page = to_html(r, None, {})
    for rendered in (text, page):
        assert d["checked_at"] in rendered and imgverify.__version__ in rendered
        assert name in rendered and archive.backend in rendered
        assert "20 references" in rendered and "2016-05-01" in rendered
        assert d["sha256"] in rendered and r.matches[0].reference_id in rendered
        assert "generation" in rendered and "hash pipeline" in rendered


def test_no_match_names_what_it_was_checked_against(archive: imgverify.Archive) -> None:
    r = imgverify.check(coco(1, start=60)[0], archive)
    assert r.verdict == "no_match"
    phrase = "not in this archive of 20 photos, dated 2016"
    assert any(phrase in n for n in r.notes)
    assert "this archive of 20 photos, dated 2016" in headline(r)
    assert phrase in to_text(r) and "this archive of 20 photos, dated 2016" in to_html(r, None, {})


# -- 2. evidence in the right words ---------------------------------------------------------
def test_each_stage_has_its_own_explanation(archive: imgverify.Archive,
                                            small_archive: SmallArchive) -> None:
    photo = Image.open(small_archive.photos[5]).convert("RGB")
    w, h = photo.size
    crop = photo.crop((int(w * 0.1), int(h * 0.2), int(w * 0.7), int(h * 0.85)))
    local = imgverify.check(_jpeg(crop), archive)
    top = local.top
    assert top is not None and "local_inliers" in top.distances
    text = to_text(local)
    evidence = [line for line in text.splitlines() if "evidence:" in line]
    local_line = next(line for line in evidence if "keypoints" in line)
    assert "Hamming" not in local_line and "bits" not in local_line
    assert f"{top.distances['local_inliers']} keypoints" in local_line
    assert re.search(r"local_inliers \d+/64", text) is None  # the old mixed-up sentence
    glob = imgverify.check(_jpeg(photo, 40), archive)
    line = next(x for x in to_text(glob).splitlines() if "evidence:" in x)
    assert "Hamming" in line and "pdq" in line and "keypoints" not in line


def test_one_wording_for_a_photo_inside_a_larger_image() -> None:
    by_global = RawMatch(1, 0.1, {}, 0, "photo", "full").transform or ""
    by_tile = RawMatch(1, 0.1, {}, 0, "tile-0-1", "full").transform or ""
    by_local = GeometricMatch(1, 50, 60, 0.0, 1.0, 1.0, (0.0, 0.3, 1.0, 0.8), 0.5).describe()
    for text in (by_global, by_tile, by_local):
        assert INSIDE_LARGER_IMAGE in text
        assert "framed inside a larger layout" not in text


# -- 3. the outline is where the photo is ---------------------------------------------------
def test_outline_bounds_the_photo_in_screenshots_crops_and_collages(
        archive: imgverify.Archive, small_archive: SmallArchive) -> None:
    photos = small_archive.photos[8:11]
    pool = coco(9, start=100)
    seen: dict[str, list[float]] = {}
    ref_ious = []
    for case in RR.cases(photos, pool, seed=5,
                         names=("screenshot", "crop_40", "crop_60", "collage")):
        r = imgverify.check(case.query, archive)
        top = r.top
        assert top is not None, case.edit
        assert top.sha256 == hashlib.sha256(case.photo.read_bytes()).hexdigest(), case.edit
        seen.setdefault(case.edit, []).append(RR.iou(top.region, case.true_box))
        if case.true_ref_box is not None:
            ref_ious.append(RR.iou(top.reference_region, case.true_ref_box))
    print({k: [round(v, 3) for v in vals] for k, vals in seen.items()}, ref_ious)
    for edit, vals in seen.items():
        assert min(vals) >= 0.8, (edit, vals)
    assert ref_ious and min(ref_ious) >= 0.8, ref_ious


def test_collage_report_marks_the_matched_tile(archive: imgverify.Archive,
                                               small_archive: SmallArchive) -> None:
    pool = coco(9, start=100)
    case = next(RR.cases(small_archive.photos[12:13], pool, seed=3, names=("collage",)))
    r = imgverify.check(case.query, archive)
    assert r.top is not None and RR.iou(r.top.region, case.true_box) >= 0.8
    page = to_html(r, _jpeg(Image.open(io.BytesIO(case.query))), {})
    assert "class='region'" in page and "matched collage tile is outlined" in page


# -- 4. the headline follows the evidence ---------------------------------------------------
def test_headline_when_the_claim_agrees_with_the_archive(
        archive: imgverify.Archive, small_archive: SmallArchive) -> None:
    photo = small_archive.photos[2]
    row = small_archive.row_of(photo)
    r = imgverify.check(_jpeg(Image.open(photo), 70), archive, claimed_date=row["date"],
                        claimed_place=row["place"])
    assert r.verdict == "likely_recycled"
    line = headline(r)
    assert "published before" not in line and "RECYCLED" not in line
    assert "the archived date and place agree with the claim" in line and row["date"] in line
    # the same photo claimed years later: recycled, with the gap
    later = imgverify.check(_jpeg(Image.open(photo), 70), archive, claimed_date="2024-01-01")
    assert headline(later).startswith("LIKELY RECYCLED") and "before the claimed date" in \
        headline(later)


def test_possible_match_is_a_candidate_not_the_likely_original() -> None:
    ms = [Match("a", 0.6, "possible", "2015-01-01"), Match("b", 0.62, "possible", "2016-01-01")]
    assert [m.role for m in order_matches(ms)] == ["candidate", "candidate"]
    ms = [Match("a", 0.9, "likely", "2015-01-01"), Match("b", 0.9, "likely", "2016-01-01"),
          Match("c", 0.6, "possible", "2010-01-01")]
    assert [m.role for m in order_matches(ms)] == ["likely_original", "later_publication",
                                                   "candidate"]
    r = imgverify.CheckResult(input="x", verdict="possibly_recycled", matches=ms[2:])
    order_matches(r.matches)
    assert "likely original" not in to_text(r) and "likely original" not in to_html(r, None, {})


def test_caveats_and_claim_line_fit_the_result(archive: imgverify.Archive,
                                               small_archive: SmallArchive) -> None:
    hit = imgverify.check(_jpeg(Image.open(small_archive.photos[0]), 70), archive,
                          claimed_place="Somewhere")
    assert hit.verdict == "likely_recycled"
    assert not any("not in this archive" in n for n in hit.notes)
    text = to_text(hit)
    assert "claimed: ?" not in text and "claimed place: Somewhere" in text
    assert "not in this archive" not in text
    miss = imgverify.check(coco(1, start=61)[0], archive, claimed_place="Somewhere")
    assert "claimed: ?" not in to_text(miss)


# -- 5. readable metadata, also when the image cannot be decoded ------------------------------
def test_exif_labels_and_an_error_report_keeps_the_exif(archive: imgverify.Archive,
                                                        tmp_path: Path) -> None:
    data = GPS_PHOTO.read_bytes()
    ok = imgverify.check(GPS_PHOTO, archive)
    text = to_text(ok)
    assert "Camera: " in text and "Taken (camera clock): " in text and "GPS position: " in text
    assert "datetime_original=" not in text
    page = to_html(ok, None, {})
    assert "<th>Camera</th>" in page and "<th>GPS position</th>" in page
    # the same file cut short: it cannot be decoded, but its EXIF header is intact
    broken = tmp_path / "cut.jpg"
    broken.write_bytes(data[: len(data) // 3])
    bad = imgverify.check(broken, archive)
    assert bad.verdict == "error"
    assert bad.exif["camera"] == ok.exif["camera"] and bad.exif["gps"] == ok.exif["gps"]
    assert bad.sha256 == hashlib.sha256(broken.read_bytes()).hexdigest()
    assert "Camera: " in to_text(bad)
    assert f"<td>{ok.exif['camera']}</td>" in to_html(bad, None, {})


# -- issue 12, items 3 and 4: a score that means something, evidence others can redraw ------
def test_local_match_json_carries_transform_and_inliers(archive: imgverify.Archive,
                                                        small_archive: SmallArchive) -> None:
    photo = Image.open(small_archive.photos[6]).convert("RGB")
    w, h = photo.size
    crop = photo.crop((int(w * 0.25), int(h * 0.2), int(w * 0.85), int(h * 0.8))).rotate(
        5, resample=Image.Resampling.BICUBIC)
    r = imgverify.check(_jpeg(crop), archive)
    top = r.to_dict()["matches"][0]
    al = top["alignment"]
    assert top["distances"]["local_inliers"] == len(al["inliers"]) >= 20
    m = al["reference_to_query"]
    assert len(m) == 2 and all(len(row) == 3 for row in m)
    # the matrix maps each inlier's archived position onto its submitted position
    errors = []
    for (qx, qy), (rx, ry) in al["inliers"]:
        px = m[0][0] * rx + m[0][1] * ry + m[0][2]
        py = m[1][0] * rx + m[1][1] * ry + m[1][2]
        errors.append(max(abs(px - qx), abs(py - qy)))
    assert sorted(errors)[len(errors) // 2] < 0.02
    # the archived photo's part that was used: about the crop window
    assert RR.iou(top["reference_region"], (0.25, 0.2, 0.85, 0.8)) >= 0.7


def test_chance_of_an_unrelated_match_in_words(archive: imgverify.Archive,
                                               small_archive: SmallArchive) -> None:
    from imgverify.report.chance import chance_of, one_in

    assert one_in(1e-7) == "about 1 in 10 million" and one_in(2e-4) == "about 1 in 5 thousand"
    near = Match("a", 0.9, "likely", "2015-01-01", distances={"pdq": 20, "phash": 4,
                                                                "dhash": 5, "whash": 3})
    far = Match("b", 0.6, "possible", "2015-01-01", distances={"pdq": 40, "phash": 10,
                                                               "dhash": 12, "whash": 10})
    c_near, c_far = chance_of(near, 1000), chance_of(far, 1000)
    assert c_near and c_far and c_near["per_pair"] < c_far["per_pair"] < 1e-3
    assert c_far["per_check"] > c_far["per_pair"]  # more references, more chances
    few = Match("c", 0.6, "possible", "2015-01-01", distances={"local_inliers": 21})
    many = Match("d", 0.9, "likely", "2015-01-01", distances={"local_inliers": 60})
    assert chance_of(few, 10)["per_pair"] > chance_of(many, 10)["per_pair"]  # type: ignore
    assert "keypoint counts" in chance_of(few, 10)["words"]  # type: ignore[index]
    assert chance_of(Match("e", 1.0, "likely", "x", exact_copy=True), 10) is None
    r = imgverify.check(_jpeg(Image.open(small_archive.photos[1]), 50), archive)
    assert r.matches[0].chance is not None
    assert "The chance that an unrelated photo matches" in to_text(r)
    assert "Chance of a false match" in to_html(r, None, {})
    assert r.to_dict()["matches"][0]["chance_unrelated"]["per_check"] < 1e-3


def test_headline_weighs_each_claim_check() -> None:
    m = Match("r1", 0.95, "likely", "2020-03-01", event="Flood", role="likely_original")

    def with_checks(*checks: tuple[str, str, str]) -> str:
        r = imgverify.CheckResult(input="x", verdict="likely_recycled", matches=[m],
                                  claim_checks=[{"check": c, "strength": s, "supports": sup,
                                                 "finding": "..."} for c, s, sup in checks])
        return headline(r)

    same_date = with_checks(("date", "weak", "claim"), ("place", "weak", "neutral"))
    assert same_date.startswith("MATCHES AN ARCHIVED PHOTO") and "date agrees" in same_date
    moved = with_checks(("date", "weak", "claim"), ("place", "strong", "recycled"))
    assert moved.startswith("LIKELY RECYCLED")
    older = with_checks(("date", "strong", "recycled"), ("place", "weak", "claim"))
    assert older.startswith("LIKELY RECYCLED")
    no_claim = with_checks()
    assert no_claim.startswith("LIKELY RECYCLED") and "2020-03-01" in no_claim


def test_crop_found_by_its_hashes_still_outlines_the_part_used(
        archive: imgverify.Archive, small_archive: SmallArchive) -> None:
    photo = Image.open(small_archive.photos[6]).convert("RGB")
    w, h = photo.size
    window = (0.02, 0.02, 0.98, 0.98)  # 92 % of the area: the hashes (PDQ within 31) find it
    crop = photo.crop((int(w * window[0]), int(h * window[1]), int(w * window[2]),
                       int(h * window[3])))
    r = imgverify.check(_jpeg(crop, 85), archive)
    top = r.top
    assert top is not None and top.method == "global_hashes" and top.strength == "likely"
    assert RR.iou(top.reference_region, window) >= 0.9, top.reference_region
    assert top.alignment is not None and top.distances.keys() == {"pdq", "phash", "dhash",
                                                                  "whash"}
    fast = imgverify.check(_jpeg(crop, 85), archive, align=False)  # what a scan does
    assert fast.top is not None and fast.top.alignment is None
    assert (fast.verdict, fast.top.score) == (r.verdict, top.score)
