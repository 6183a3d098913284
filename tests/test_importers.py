"""Importers against local servers answering in the real APIs' shapes (no traffic off the
machine): Commons/MediaWiki, then export folders, feeds and Wayback CDX."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import coco
from import_fixtures import FixtureWiki, WikiFile, jpeg_of, serve

from imgverify.archive import Archive
from imgverify.importers.commons import CommonsOptions, import_commons
from imgverify.importers.http import ClientConfig, ImportHTTPError, PoliteClient
from imgverify.importers.ingest import Importer

HERAT = "Category:2023 Herat earthquakes"
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def herat_wiki(photos: list[Path]) -> FixtureWiki:
    """Five photos in the category, two in a subcategory, a PDF and a malformed entry."""
    wiki = FixtureWiki(page_size=3)
    for i, p in enumerate(photos[:5]):
        meta = {"DateTimeOriginal": f"2023-10-0{7 + i % 2} 11:{10 + i}:00",
                "ImageDescription": f"<p>Rescue work in Zindajan district, photo {i}</p>",
                "Artist": f"<a href='https://commons.wikimedia.org/wiki/User:P{i}'>"
                          f"Photographer {i}</a>",
                "LicenseShortName": "CC BY-SA 4.0",
                "GPSLatitude": "34.34820", "GPSLongitude": "61.76510"}
        if i == 4:  # hostile strings in every text field, entity-encoded as the API sends
            esc = HOSTILE.replace("<", "&lt;").replace(">", "&gt;")
            meta.update(ImageDescription=esc, Artist=esc, LicenseShortName=esc)
        wiki.add_file(HERAT, WikiFile(f"File:Herat earthquake {i}.jpg", jpeg_of(p, 1600),
                                      timestamp=f"2023-10-{10 + i}T08:00:00Z",
                                      user="Uploader" if i != 4 else HOSTILE,
                                      extmetadata=meta))
    wiki.add_file(HERAT, WikiFile("File:Herat report.pdf", b"%PDF-1.4 not an image",
                                  mime="application/pdf"))
    wiki.add_file(HERAT, WikiFile("File:Broken entry.jpg", b"", malformed=True))
    wiki.add_subcategory(HERAT, "Category:Zindajan District")
    for i, p in enumerate(photos[5:7]):
        wiki.add_file("Category:Zindajan District",
                      WikiFile(f"File:Zindajan {i}.jpg", jpeg_of(p, 1600),
                               timestamp="2023-10-12T10:00:00Z",
                               extmetadata={"DateTimeOriginal": "2023-10-11"}))
    return wiki


def client(**kw: object) -> PoliteClient:
    waits: list[float] = []
    c = PoliteClient(ClientConfig(contact="desk@example.org", min_interval=0.0,
                                  allow_private=True, **kw),  # type: ignore[arg-type]
                     sleep=waits.append)
    c.waits = waits  # type: ignore[attr-defined]
    return c


def run_commons(path: Path, base: str, cl: PoliteClient, depth: int = 1,
                **kw: object) -> dict[str, object]:
    with Archive.open(path) as arch:
        report = import_commons(Importer(arch), cl, HERAT,
                                CommonsOptions(api_url=f"{base}/w/api.php", depth=depth,
                                               **kw))  # type: ignore[arg-type]
        return report.to_dict()


def test_commons_category_paging_faults_and_fields(tmp_path: Path) -> None:
    wiki = herat_wiki(coco(7))
    # the first API call is rate limited, the second meets replica lag, one download fails once
    wiki.faults["/w/api.php"] = [
        (429, {"Retry-After": "7"}, b"slow down"),
        (200, {"Retry-After": "3", "Content-Type": "application/json"},
         b'{"error": {"code": "maxlag", "info": "Waiting for db1: 6 seconds lagged", '
         b'"lag": 6}}')]
    wiki.faults["/thumb/Herat_earthquake_1.jpg"] = [(503, {}, b"busy")]
    with serve(wiki) as base:
        cl = client()
        report = run_commons(tmp_path / "a.sqlite", base, cl)
    assert cl.waits[:2] == [7.0, 3.0]  # type: ignore[attr-defined]
    assert report["references_added"] == 7
    assert [s["entry"] for s in report["skipped"]] == ["File:Herat report.pdf"]  # type: ignore
    assert [e["entry"] for e in report["errors"]] == ["File:Broken entry.jpg"]  # type: ignore
    api_calls = [q for p, q, _ in wiki.log if p == "/w/api.php"]
    assert all(q["maxlag"] == ["5"] for q in api_calls)
    assert any("gcmcontinue" in q for q in api_calls)  # paging followed
    assert any(q.get("gcmtitle") == ["Category:Zindajan District"] for q in api_calls)
    agents = {h.get("User-Agent") for _, _, h in wiki.log}
    assert all(a and "desk@example.org" in a and a.startswith("imgverify/") for a in agents)
    assert not wiki.paths("/orig/")  # only reduced renditions were downloaded
    with Archive.open(tmp_path / "a.sqlite") as arch:
        ref = next(r for r in arch.iter_references() if r.caption and "photo 0" in r.caption)
        assert (ref.date, ref.published, ref.event) == ("2023-10-07", "2023-10-10",
                                                        "2023 Herat earthquakes")
        assert ref.caption == "Rescue work in Zindajan district, photo 0"
        assert ref.credit == "Photographer 0" and ref.license == "CC BY-SA 4.0"
        assert ref.place == "34.34820, 61.76510"
        assert ref.source == "MediaWiki (" + base + "/w/api.php)"
        assert ref.source_url == f"{base}/wiki/File:Herat_earthquake_0.jpg"
        sub = next(r for r in arch.iter_references() if r.event == "Zindajan District")
        assert sub.date == "2023-10-11"
        sightings = list(arch.iter_sightings("commons"))
        assert len(sightings) == 7 and all(s.evidence == "platform_timestamp" for s in sightings)
        assert sightings[0].seen_at == "2023-10-10T08:00:00+00:00"


def test_commons_interrupted_import_resumes_without_duplicates(tmp_path: Path) -> None:
    wiki = herat_wiki(coco(7))
    wiki.broken_api_after = 0  # the second page of the category keeps failing
    path = tmp_path / "a.sqlite"
    with serve(wiki) as base:
        with pytest.raises(ImportHTTPError, match="500"):
            run_commons(path, base, client(retries=2))
        with Archive.open(path) as arch:
            assert len(arch) == 3 and arch.import_state(
                f"commons|{base}/w/api.php|{HERAT}|1") is not None
        first_downloads = len(wiki.paths("/thumb/"))
        wiki.broken_api_after = None
        report = run_commons(path, base, client())
        assert len(wiki.paths("/thumb/")) - first_downloads == 4  # page 1 not fetched again
        assert report["references_added"] == 4
        again = run_commons(path, base, client())  # idempotent: nothing new, nothing fetched
        assert again["references_added"] == 0 and again["already_imported"] == 7
        assert len(wiki.paths("/thumb/")) - first_downloads == 4
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM refs").fetchone()[0] == 7
        assert conn.execute("SELECT COUNT(*) FROM sightings").fetchone()[0] == 7
        assert conn.execute("SELECT COUNT(*) FROM import_state").fetchone()[0] == 0


def test_version_1_archive_migrates_in_place_and_still_opens_read_only(
        tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    photo = coco(1)[0]
    (tmp_path / "m.csv").write_text(f"image,date\n{photo},2016-05-01\n", encoding="utf-8")
    with Archive.open(path) as arch:
        arch.ingest(tmp_path / "m.csv")
    with sqlite3.connect(path) as conn:  # what an archive from the previous release holds
        conn.execute("DROP TABLE sightings")
        conn.execute("DROP TABLE import_state")
        conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    with Archive(path, readonly=True) as ro:  # read-only: readable as it is, no sightings
        assert len(ro) == 1 and ro.sightings_for([1]) == {}
        assert ro.sighting_stats()["sightings"] == 0
    with Archive.open(path) as arch:  # writable: migrated in place, references kept
        assert len(arch) == 1 and arch.has_sightings_table()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'"
                            ).fetchone()[0] == "2"
        conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    with pytest.raises(Exception, match="newer imgverify"):
        Archive(path, readonly=True)
