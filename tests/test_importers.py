"""Importers against local servers answering in the real APIs' shapes (no traffic off the
machine): Commons/MediaWiki, then export folders, feeds and Wayback CDX."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest
from conftest import coco
from import_fixtures import FixtureWiki, WikiFile, jpeg_of, serve
from PIL import Image
from typer.testing import CliRunner

from imgverify import __version__
from imgverify.cli import app
from imgverify.ingest import ingest_manifest
from imgverify.ingest.importers.commons import CommonsOptions, import_commons
from imgverify.ingest.importers.feed import import_feed
from imgverify.ingest.importers.folder import import_folder
from imgverify.ingest.importers.http import PROJECT_URL, ClientConfig, ImportHTTPError, PoliteClient
from imgverify.ingest.importers.ingest import Importer
from imgverify.store.sightings import Sighting
from imgverify.store.sqlite import Archive

HERAT = "Category:2023 Herat earthquakes"
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>\x1b[2J\x1b]8;;evil\x07"


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
        if i == 3:  # the shape iiextmetadatamultilang gives
            meta["ImageDescription"] = {"en": "<p>Rescue work in Zindajan district, photo 3</p>",
                                        "fa": "<p>امدادرسانی در زنده‌جان</p>", "_type": "lang"}
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
    assert all(q["maxlag"] == ["5"] and q["iiurlwidth"] == ["960"] and q["iiprop"] == [
        "url|sha1|extmetadata|size|mime|timestamp|user"] for q in api_calls)
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
        assert any(r.caption == "Rescue work in Zindajan district, photo 3"
                   for r in arch.iter_references())
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
        ingest_manifest(arch, tmp_path / "m.csv")
    with sqlite3.connect(path) as conn:  # what an archive from the previous release holds
        conn.execute("DROP TABLE sightings")
        conn.execute("DROP TABLE import_state")
        conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    with Archive(path, readonly=True) as ro:  # read-only: readable as it is, no sightings
        assert len(ro) == 1 and ro.sightings_for([1]) == {}
        assert ro.sighting_stats()["sightings"] == 0
    with Archive.open(path) as arch:  # writable: migrated in place, references kept
        assert len(arch) == 1
        arch.add_sightings([Sighting(origin="check", source_key="k", evidence="desk_check")])
        assert arch.has_sightings_table() and len(list(arch.iter_sightings())) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'"
                            ).fetchone()[0] == "2"
        conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    with pytest.raises(Exception, match="newer imgverify"):
        Archive(path, readonly=True)


def make_exports(root: Path, photos: list[Path]) -> Path:
    """One folder holding the four tool formats as those tools write them, with hostile text,
    a malformed entry, a path escaping the export and a 'photo' that is not an image."""
    root.mkdir(parents=True, exist_ok=True)
    # Telegram Desktop: a channel export (photos/ beside result.json)
    tg = root / "ChatExport_2024-12-25"
    (tg / "photos").mkdir(parents=True)
    (tg / "photos" / "photo_1@24-12-2024_10-15-00.jpg").write_bytes(jpeg_of(photos[0], 800, 70))
    (tg / "photos" / "photo_2@24-12-2024_11-00-00.jpg").write_bytes(jpeg_of(photos[1], 800))
    (tg / "result.json").write_text(json.dumps({
        "name": "Paktika News " + HOSTILE, "type": "public_channel", "id": 1790000001,
        "username": "paktika_news",
        "messages": [
            {"id": 101, "type": "message", "date": "2024-12-24T10:15:00",
             "date_unixtime": "1735035300", "from": "Paktika News", "from_id": "channel1790",
             "photo": "photos/photo_1@24-12-2024_10-15-00.jpg", "width": 800, "height": 600,
             "text": ["Children killed in last night's airstrike ",
                      {"type": "hashtag", "text": "#Paktika"}],
             "text_entities": []},
            {"id": 102, "type": "message", "date": "2024-12-24T11:00:00",
             "date_unixtime": "1735038000", "from": HOSTILE,
             "photo": "photos/photo_2@24-12-2024_11-00-00.jpg", "text": HOSTILE},
            "this message is malformed",
            {"id": 103, "type": "message", "date_unixtime": "1735039000",
             "photo": "../../../etc/passwd", "text": "escape attempt"},
            {"id": 104, "type": "service", "date_unixtime": "1735039000", "action": "pin"},
        ]}), encoding="utf-8")
    # gallery-dl: NAME.EXT + NAME.EXT.json
    gdl = root / "gallery-dl" / "twitter" / "relief_desk"
    gdl.mkdir(parents=True)
    (gdl / "1870000000000000001_1.jpg").write_bytes(jpeg_of(photos[2], 900))
    (gdl / "1870000000000000001_1.jpg.json").write_text(json.dumps({
        "category": "twitter", "subcategory": "user", "tweet_id": 1870000000000000001,
        "date": "2024-12-24 12:30:00", "author": {"name": "relief_desk", "nick": HOSTILE},
        "content": "Airstrike aftermath " + HOSTILE, "num": 1, "filename": "G1abc",
        "extension": "jpg"}), encoding="utf-8")
    (gdl / "notes.jpg").write_bytes(b"this is a text file with a .jpg name")
    (gdl / "notes.jpg.json").write_text(json.dumps({"category": "twitter",
                                                    "tweet_id": 187, "date":
                                                    "2024-12-24 13:00:00"}), encoding="utf-8")
    (gdl / "broken.jpg.json").write_text("{not json", encoding="utf-8")
    # yt-dlp: NAME.info.json + NAME.jpg (--write-info-json --write-thumbnail)
    yt = root / "yt-dlp"
    yt.mkdir()
    (yt / "Herat quake footage [dQw4w9WgXcQ].info.json").write_text(json.dumps({
        "id": "dQw4w9WgXcQ", "title": "Herat quake footage", "description": HOSTILE,
        "uploader": "Some Channel", "channel": "Some Channel", "upload_date": "20231009",
        "timestamp": 1696850000, "webpage_url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
        "extractor": "youtube", "extractor_key": "Youtube",
        "thumbnail": "https://i.ytimg.com/vi/dQw4w9WgXcQ/maxresdefault.jpg"}),
        encoding="utf-8")
    (yt / "Herat quake footage [dQw4w9WgXcQ].jpg").write_bytes(jpeg_of(photos[3], 1280))
    # X/Twitter archive: data/tweets.js, data/account.js, data/tweets_media/
    x = root / "twitter-2024-12-30" / "data"
    (x / "tweets_media").mkdir(parents=True)
    (x / "account.js").write_text('window.YTD.account.part0 = [{"account": {"username": '
                                  '"desk_account", "accountId": "42"}}]', encoding="utf-8")
    (x / "tweets_media" / "1871111111111111111-GfXyZ123.jpg").write_bytes(
        jpeg_of(photos[4], 1200))
    (x / "tweets.js").write_text("window.YTD.tweets.part0 = " + json.dumps([
        {"tweet": {"id_str": "1871111111111111111", "created_at":
                   "Tue Dec 24 15:00:00 +0000 2024", "full_text": "Paktika " + HOSTILE,
                   "extended_entities": {"media": [{"id_str": "1", "type": "photo",
                                                    "media_url_https":
                                                    "https://pbs.twimg.com/media/GfXyZ123.jpg"}]
                                         }}},
        {"tweet": "malformed"}]), encoding="utf-8")
    return root


def test_folder_import_four_formats(tmp_path: Path) -> None:
    photos = coco(5, start=20)
    folder = make_exports(tmp_path / "exports", photos)
    path = tmp_path / "a.sqlite"
    (tmp_path / "m.csv").write_text(f"image,date,event\n{photos[0]},2023-10-07,Herat\n",
                                    encoding="utf-8")
    with Archive.open(path) as arch:
        ingest_manifest(arch, tmp_path / "m.csv")
        report = import_folder(Importer(arch), folder).to_dict()
        by_origin = {s.origin: s for s in arch.iter_sightings()}
        assert set(by_origin) == {"telegram", "gallery-dl/twitter", "yt-dlp/youtube", "x"}
        assert report["sightings_added"] == 5
        assert report["linked_to_references"] == 1  # the recompressed copy of the reference
        assert report["unverified_records"] == 4
        errors = {e["entry"]: e["error"] for e in report["errors"]}  # type: ignore[union-attr]
        assert any("notes.jpg.json" in k for k in errors)  # not an image
        assert any("broken.jpg.json" in k and "invalid JSON" in v for k, v in errors.items())
        assert any("malformed message" in v for v in errors.values())
        assert any("not a file inside the export" in v for v in errors.values())
        assert any("malformed tweet" in v for v in errors.values())
        tg = [s for s in arch.iter_sightings("telegram")]
        first = next(s for s in tg if s.source_key.endswith(":101"))
        assert first.seen_at == "2024-12-24T10:15:00+00:00"
        assert first.url == "https://t.me/paktika_news/101" and first.account == "Paktika News"
        assert first.text == "Children killed in last night's airstrike #Paktika"
        herat = next(r for r in arch.iter_references() if r.event == "Herat")
        assert not first.own_record and first.ref_key == herat.key
        assert first.match_score is not None and first.sha256 != herat.sha256
        x = by_origin["x"]
        assert x.url == "https://x.com/desk_account/status/1871111111111111111"
        assert x.seen_at == "2024-12-24T15:00:00+00:00" and x.own_record
        yt = by_origin["yt-dlp/youtube"]
        assert yt.seen_at == "2023-10-09T11:13:20+00:00" and yt.account == "Some Channel"
        assert yt.url == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
        g = by_origin["gallery-dl/twitter"]
        assert g.url == "https://x.com/relief_desk/status/1870000000000000001"
        assert g.seen_at == "2024-12-24T12:30:00+00:00"
        # an unverified record is dated by its publication and says where it comes from
        rec = arch.references([x.ref_key or 0])[x.ref_key or 0]
        assert (rec.date, rec.source) == ("2024-12-24", "unverified sighting (x)")
        again = import_folder(Importer(arch), folder).to_dict()  # re-run: nothing duplicated
        assert again["sightings_added"] == 0 and again["already_imported"] == 5
        assert sum(1 for _ in arch.iter_sightings()) == 5 and len(arch) == 5


def test_generic_sidecars_by_config(tmp_path: Path) -> None:
    photos = coco(2, start=26)
    folder = tmp_path / "inbox"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "a.jpg").write_bytes(jpeg_of(photos[0], 700))
    (folder / "img" / "a.jpg.meta.json").write_text(json.dumps({
        "post": {"id": "p-1", "when": "2024-12-24T08:00:00Z", "link": "https://example.net/p/1",
                 "by": {"name": "stringer"}, "caption": "hospital " + HOSTILE}}),
        encoding="utf-8")
    (folder / "b.jpg").write_bytes(jpeg_of(photos[1], 700))
    (folder / "index.csv").write_text("file,posted,link,user,text,pid\n"
                                      "b.jpg,1735000000,javascript:alert(1),desk,hello,77\n"
                                      "missing.jpg,1735000000,,desk,gone,78\n", encoding="utf-8")
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps({
        "origin": "desk-inbox", "json_suffix": ".meta.json", "csv": "index.csv",
        "image": "file", "fields": {"seen_at": "posted", "url": "link", "account": "user",
                                    "text": "text", "id": "pid"}}), encoding="utf-8")
    json_cfg = tmp_path / "cfg2.json"
    json_cfg.write_text(json.dumps({
        "origin": "desk-json", "json_suffix": ".meta.json",
        "fields": {"seen_at": "post.when", "url": "post.link", "account": "post.by.name",
                   "text": "post.caption", "id": "post.id"}}), encoding="utf-8")
    runner = CliRunner()
    path = tmp_path / "a.sqlite"
    res = runner.invoke(app, ["archive", "import", "folder", str(folder), "--archive",
                              str(path), "--config", str(cfg_path)])
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert res.exit_code == 3, res.output  # the missing image is an error line, the rest in
    assert [e["entry"] for e in out["errors"]] == ["index.csv:3"]
    res2 = runner.invoke(app, ["archive", "import", "folder", str(folder), "--archive",
                               str(path), "--config", str(json_cfg)])
    assert res2.exit_code == 0, res2.output
    with Archive.open(path) as arch:
        csv_s = next(arch.iter_sightings("desk-inbox"))
        assert (csv_s.source_key, csv_s.account, csv_s.url) == ("77", "desk", None)
        assert csv_s.seen_at == "2024-12-24T00:26:40+00:00"
        js = next(arch.iter_sightings("desk-json"))
        assert (js.source_key, js.account, js.url) == ("p-1", "stringer",
                                                       "https://example.net/p/1")
    bad = runner.invoke(app, ["archive", "import", "folder", str(folder), "--archive",
                              str(path), "--config", str(tmp_path / "nope.json")])
    assert bad.exit_code == 2 and "cannot read sidecar config" in bad.stderr


def repost_of(photo: Path, out: Path) -> Path:
    """A social-media repost: cropped a little, downsized, recompressed."""
    with Image.open(photo) as im:
        im = im.convert("RGB")
        w, h = im.size
        im = im.crop((int(w * 0.04), int(h * 0.04), int(w * 0.97), int(h * 0.96)))
        im = im.resize((int(im.width * 0.6), int(im.height * 0.6)))
        im.save(out, "JPEG", quality=72)
    return out


def test_herat_walkthrough_end_to_end(tmp_path: Path) -> None:
    """The README walkthrough, with --api-url pointing at the local fixture server."""
    photos = coco(7)
    wiki = herat_wiki(photos)
    runner = CliRunner()
    archive = str(tmp_path / "herat.sqlite")
    repost = repost_of(photos[1], tmp_path / "repost.jpg")
    with serve(wiki) as base:
        res = runner.invoke(app, [
            "archive", "import", "commons", "Category:2023 Herat earthquakes", "--depth", "1",
            "--archive", archive, "--contact", "desk@example.org",
            "--api-url", f"{base}/w/api.php", "--allow-private-urls", "--min-interval", "0"])
    assert res.exit_code == 3, res.output  # the malformed entry is reported, the rest imported
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["references_added"] == 7 and len(report["errors"]) == 1
    res = runner.invoke(app, ["check", str(repost), "--archive", archive, "--claimed-date",
                              "2024-12-24", "--claimed-place", "Paktika", "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["verdict"] == "likely_recycled"
    top = out["matches"][0]
    assert (top["event"], top["date"], top["published"]) == ("2023 Herat earthquakes",
                                                              "2023-10-08", "2023-10-11")
    assert top["source_url"] == f"{base}/wiki/File:Herat_earthquake_1.jpg"
    findings = {f["check"]: f for f in out["claim_checks"]}
    assert findings["date"]["strength"] == "strong" and "15 months" in findings["date"]["finding"]
    # the reference's place is its GPS position, some 650 km from Paktika
    assert findings["place"]["supports"] == "recycled"
    taken, upload = [t for t in out["timeline"] if t["kind"] != "claim"]
    assert (taken["date"], taken["evidence"], taken["strength"]) == (
        "2023-10-08", "stated_capture_date", "moderate")
    assert (upload["source"], upload["date"], upload["strength"]) == (
        "commons", "2023-10-11T08:00:00", "moderate")
    assert any(n.startswith("Earliest known publication: 2023-10-11, uploaded to 127.0.0.1 "
                            "by Uploader") for n in out["notes"])
    # a match ends with the match caveat: "not in this archive" belongs to no-match results
    assert out["notes"][-1].startswith("A match shows when and with what context")
    assert not any("not in this archive" in n for n in out["notes"])
    hostile = runner.invoke(app, ["check", str(repost_of(photos[4], tmp_path / "h.jpg")),
                                  "--archive", archive, "--format", "html"]).stdout
    assert "likely_recycled" in hostile and "<script>" not in hostile
    assert "<img src=x" not in hostile and hostile.count("&lt;script&gt;alert(1)") >= 3
    stats = json.loads(runner.invoke(app, ["archive", "stats", "--archive", archive]).stdout)
    assert stats["references_by_source"] == {f"MediaWiki ({base}/w/api.php)": 7}
    assert stats["sightings_by_origin"]["commons"]["sightings"] == 7


def test_no_contact_warns_and_names_the_project(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMGVERIFY_CONTACT", raising=False)
    wiki = herat_wiki(coco(7))
    with serve(wiki) as base:
        res = CliRunner().invoke(app, [
            "archive", "import", "commons", HERAT, "--archive", str(tmp_path / "a.sqlite"),
            "--api-url", f"{base}/w/api.php", "--allow-private-urls", "--min-interval", "0",
            "--limit", "1"])
    assert "no --contact" in res.stderr and PROJECT_URL in res.stderr
    agents = {h.get("User-Agent") for _, _, h in wiki.log}
    assert agents == {f"imgverify/{__version__} ({PROJECT_URL})"}


def test_sighting_only_image_desk_record_and_retroactive_match(tmp_path: Path,
                                                               location: str) -> None:
    """On both backends (SQLite and PostgreSQL): `location` is an empty archive of each."""
    photos = coco(5, start=20)
    folder = make_exports(tmp_path / "exports", photos)
    archive = location
    runner = CliRunner()
    res = runner.invoke(app, ["archive", "import", "folder", str(folder), "--archive", archive])
    assert res.exit_code == 3  # malformed entries reported
    # a copy of an image seen only in the Telegram export: published before, with that post
    copy = repost_of(photos[1], tmp_path / "copy.jpg")
    res = runner.invoke(app, ["check", str(copy), "--archive", archive, "--format", "json",
                              "--claimed-date", "2025-01-05"])
    out = json.loads(res.stdout)
    assert out["verdict"] == "likely_recycled"
    first = next(t for t in out["timeline"] if t["kind"] == "sighting")
    assert (first["source"], first["url"], first["date"]) == (
        "telegram", "https://t.me/paktika_news/102", "2024-12-24T11:00:00")
    assert any("Earliest known publication: 2024-12-24" in n for n in out["notes"])
    for i in (1, 2, 3, 4):  # Telegram, gallery-dl, yt-dlp, X: hostile text in every field
        html_res = runner.invoke(app, ["check", str(repost_of(photos[i], tmp_path / f"{i}.jpg")),
                                       "--archive", archive, "--format", "html"])
        assert "likely_recycled" in html_res.stdout
        assert "<script>" not in html_res.stdout and "<img src=x" not in html_res.stdout
        assert "\x1b" not in html_res.stdout and "\x07" not in html_res.stdout
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_res.stdout  # shown, inert
    # a desk check of a new image, recorded; a later copy says when and from where
    new = coco(1, start=40)[0]
    res = runner.invoke(app, ["check", str(new), "--archive", archive, "--record",
                              "--source-url", "https://example.com/post/9"])
    assert res.exit_code == 0, res.output
    later = repost_of(new, tmp_path / "later.jpg")
    out = json.loads(runner.invoke(app, ["check", str(later), "--archive", archive,
                                         "--format", "json"]).stdout)
    assert out["verdict"] == "no_match"  # a desk check is not a publication
    assert any(n.startswith("First submitted to this desk on ") and
               n.endswith("from https://example.com/post/9.") for n in out["notes"])
    # a Commons import of that image now reports the earlier desk check (retroactive)
    wiki = FixtureWiki()
    wiki.add_file(HERAT, WikiFile("File:Later found.jpg", jpeg_of(new, 1400),
                                  extmetadata={"DateTimeOriginal": "2023-10-07"}))
    with serve(wiki) as base:
        res = runner.invoke(app, ["archive", "import", "commons", HERAT, "--archive", archive,
                                  "--api-url", f"{base}/w/api.php", "--allow-private-urls",
                                  "--contact", "x@example.org", "--min-interval", "0"])
    rep = json.loads(res.stdout.strip().splitlines()[-1])
    assert [(r["matches_earlier"], r["url"]) for r in rep["retroactive"]] == [
        ("check", "https://example.com/post/9")]
    out = json.loads(runner.invoke(app, ["check", str(later), "--archive", archive,
                                         "--format", "json"]).stdout)
    assert out["verdict"] == "likely_recycled"
    kinds = [t.get("evidence") for t in out["timeline"] if t["kind"] != "claim"]
    assert kinds[0] == "stated_capture_date" and "desk_check" in kinds


def rss_feed(base: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"
     xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel><title>Agency photos</title><link>{base}/</link>
<item><title>Quake survivors</title><link>{base}/story/1</link>
  <guid isPermaLink="false">agency-1</guid><pubDate>Mon, 09 Oct 2023 14:00:00 +0000</pubDate>
  <media:group>
    <media:content url="{base}/img/a.jpg" medium="image" type="image/jpeg">
      <media:credit role="photographer">Agency / Photographer A</media:credit>
      <media:description>Survivors in Zindajan</media:description></media:content>
    <media:content url="{base}/img/clip.mp4" medium="video" type="video/mp4"/>
  </media:group></item>
<item><title>&lt;script&gt;alert(1)&lt;/script&gt;</title><link>{base}/story/2</link>
  <guid>agency-2</guid><pubDate>Tue, 10 Oct 2023 09:30:00 GMT</pubDate>
  <dc:creator>&lt;img src=x onerror=alert(2)&gt;</dc:creator>
  <enclosure url="{base}/img/b.jpg" type="image/jpeg" length="1"/></item>
<item><title>Text only</title><link>{base}/story/3</link><guid>agency-3</guid>
  <pubDate>Tue, 10 Oct 2023 10:00:00 GMT</pubDate></item>
<item><title>Broken picture</title><link>{base}/story/4</link><guid>agency-4</guid>
  <pubDate>Tue, 10 Oct 2023 11:00:00 GMT</pubDate>
  <media:content url="{base}/img/page.jpg" medium="image"/></item>
</channel></rss>""".encode()


def atom_feed(base: str) -> bytes:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/">
<title>Desk</title><id>urn:desk</id><updated>2023-10-11T00:00:00Z</updated>
<entry><title>Aftershock</title><id>urn:desk:1</id>
  <link rel="alternate" href="{base}/atom/1"/><published>2023-10-11T06:00:00Z</published>
  <author><name>Desk photographer</name></author>
  <link rel="enclosure" type="image/jpeg" href="{base}/img/c.jpg"/></entry>
</feed>""".encode()


def test_feed_import_rss_and_atom(tmp_path: Path) -> None:
    photos = coco(3, start=30)
    wiki = FixtureWiki()
    with serve(wiki) as base:
        for name, p in zip(("a", "b", "c"), photos, strict=True):
            wiki.static[f"/img/{name}.jpg"] = ("image/jpeg", jpeg_of(p, 900))
        wiki.static["/img/page.jpg"] = ("text/html", b"<html>login wall</html>")
        wiki.static["/rss.xml"] = ("application/rss+xml", rss_feed(base))
        wiki.static["/atom.xml"] = ("application/atom+xml", atom_feed(base))
        wiki.static["/bomb.xml"] = ("application/rss+xml", b'<?xml version="1.0"?><!DOCTYPE r '
                                    b'[<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><rss>&b;</rss>')
        path = tmp_path / "a.sqlite"
        with Archive.open(path) as arch:
            rep = import_feed(Importer(arch), client(), f"{base}/rss.xml").to_dict()
            assert rep["sightings_added"] == 2
            assert [s["entry"] for s in rep["skipped"]] == ["item 2: Text only"]  # type: ignore
            assert [e["entry"] for e in rep["errors"]] == ["item 3: Broken picture"]  # type: ignore
            first, second = list(arch.iter_sightings())
            assert (first.seen_at, first.url, first.account, first.text) == (
                "2023-10-09T14:00:00+00:00", f"{base}/story/1", "Agency / Photographer A",
                "Survivors in Zindajan")
            assert second.account == "<img src=x onerror=alert(2)>"  # kept as text, inert later
            assert second.origin == "feed/127.0.0.1"
            rep = import_feed(Importer(arch), client(), f"{base}/atom.xml").to_dict()
            assert rep["sightings_added"] == 1
            atom = next(s for s in arch.iter_sightings() if s.url == f"{base}/atom/1")
            assert (atom.seen_at, atom.account) == ("2023-10-11T06:00:00+00:00",
                                                    "Desk photographer")
            again = import_feed(Importer(arch), client(), f"{base}/rss.xml").to_dict()
            assert again["sightings_added"] == 0 and again["already_imported"] == 2
            with pytest.raises(ImportHTTPError, match="entities"):
                import_feed(Importer(arch), client(), f"{base}/bomb.xml")


def test_wayback_first_capture_enriches_the_timeline(tmp_path: Path) -> None:
    photos = coco(7)
    wiki = herat_wiki(photos)
    runner = CliRunner()
    archive = str(tmp_path / "a.sqlite")
    with serve(wiki) as base:
        page = f"{base}/wiki/File:Herat_earthquake_1.jpg"
        wiki.cdx[page] = [
            ["org,example)/wiki/file:herat_earthquake_1.jpg", "20231009120000", page,
             "text/html", "200", "AAAA", "1234"],
            ["org,example)/wiki/file:herat_earthquake_1.jpg", "20231101000000", page,
             "text/html", "200", "BBBB", "1234"]]
        wiki.faults["/cdx"] = [(502, {}, b"bad gateway")]
        res = runner.invoke(app, [
            "archive", "import", "commons", HERAT, "--archive", archive, "--contact", "d@e.org",
            "--api-url", f"{base}/w/api.php", "--allow-private-urls", "--min-interval", "0",
            "--enrich", "wayback", "--cdx-url", f"{base}/cdx"])
        out = json.loads(res.stdout.strip().splitlines()[-1])
        assert out["wayback"]["captures_found"] == 1 and out["wayback"]["errors"] == []
        cdx_calls = [q for p, q, _ in wiki.log if p == "/cdx"]
        assert all(q["output"] == ["json"] for q in cdx_calls)
        again = runner.invoke(app, ["archive", "import", "wayback", "--archive", archive,
                                    "--cdx-url", f"{base}/cdx", "--allow-private-urls"])
        assert json.loads(again.stdout)["wayback"]["looked_up"] == 0
    res = runner.invoke(app, ["check", str(repost_of(photos[1], tmp_path / "r.jpg")),
                              "--archive", archive, "--format", "json"])
    timeline = json.loads(res.stdout)["timeline"]
    wb = next(t for t in timeline if t.get("source") == "wayback")
    assert wb["date"] == "2023-10-09T12:00:00" and wb["strength"] == "strong"
    assert wb["url"] == f"https://web.archive.org/web/20231009120000/{page}"


def test_commons_search_mode_and_since(tmp_path: Path) -> None:
    wiki = herat_wiki(coco(7))
    with serve(wiki) as base, Archive.open(tmp_path / "a.sqlite") as arch:
        rep = import_commons(Importer(arch), client(), "Zindajan district",
                             CommonsOptions(api_url=f"{base}/w/api.php",
                                            since=dt.date(2023, 10, 12))).to_dict()
        searches = [q for p, q, _ in wiki.log if p == "/w/api.php"]
        assert all(q["generator"] == ["search"] and q["gsrnamespace"] == ["6"]
                   for q in searches)
        assert any("gsroffset" in q for q in searches)  # paged
        # four photos' descriptions say Zindajan; two were uploaded before --since
        assert rep["references_added"] == 2
        assert sum("before --since" in s["reason"] for s in rep["skipped"]) == 2  # type: ignore
        assert {r.event for r in arch.iter_references()} == {"Zindajan district"}


def test_archive_add_reports_earlier_sightings_it_matches(tmp_path: Path) -> None:
    photos = coco(5, start=20)
    folder = make_exports(tmp_path / "exports", photos)
    archive = str(tmp_path / "a.sqlite")
    runner = CliRunner()
    runner.invoke(app, ["archive", "import", "folder", str(folder), "--archive", archive])
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,date,event\n{photos[4]},2023-10-07,Herat\n"
                        f"{coco(1, start=45)[0]},2023-10-07,Herat\n", encoding="utf-8")
    res = runner.invoke(app, ["archive", "add", str(manifest), "--archive", archive,
                              "--workers", "1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert [(r["matches_earlier"], r["url"]) for r in out["retroactive"]] == [
        ("x", "https://x.com/desk_account/status/1871111111111111111")]
    assert "matches an earlier x sighting" in res.stderr


def test_reference_hashes_reused_from_the_match_query_are_the_stored_ones() -> None:
    """Importers hash each image once (for matching) and store those hashes: they must be
    exactly what `archive add` would store for the same image."""
    from imgverify.ingest.importers.ingest import prepare_loaded
    from imgverify.match.search import QueryHashes
    from imgverify.media.load import load

    for p in coco(3, start=50):
        loaded = load(str(p))
        reused = prepare_loaded(loaded, str(p), {"date": "2020-01-01"},
                                QueryHashes(loaded.image, loaded.scale))
        fresh = prepare_loaded(loaded, str(p), {"date": "2020-01-01"})
        assert reused.hashes == fresh.hashes and [n for n, _ in fresh.hashes][0] == "full"


def test_folder_import_interrupted_then_resumed_without_duplicates(tmp_path: Path) -> None:
    folder = make_exports(tmp_path / "exports", coco(5, start=20))
    ticks = {"n": 0}

    def stop_after_three() -> None:
        ticks["n"] += 1
        if ticks["n"] > 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the folder

    with Archive.open(tmp_path / "a.sqlite") as arch:
        with pytest.raises(KeyboardInterrupt):
            import_folder(Importer(arch), folder, on_item=stop_after_three)
        partial = sum(1 for _ in arch.iter_sightings())
        assert 0 < partial < 5
        rep = import_folder(Importer(arch), folder).to_dict()
        assert rep["already_imported"] == partial
        assert rep["sightings_added"] == 5 - partial
        assert sum(1 for _ in arch.iter_sightings()) == 5 and len(arch) == 5


def test_redirects_are_followed_and_rechecked(tmp_path: Path) -> None:
    wiki = FixtureWiki()
    with serve(wiki) as base:
        wiki.faults["/moved.jpg"] = [(301, {"Location": "/img/real.jpg"}, b"")]
        wiki.static["/img/real.jpg"] = ("image/jpeg", jpeg_of(coco(1)[0], 300))
        assert client().download(f"{base}/moved.jpg")[:2] == b"\xff\xd8"
        # with private addresses refused, a redirect into one is refused too
        wiki.faults["/moved.jpg"] = [(302, {"Location": "http://10.0.0.1/secret"}, b"")]
        strict = PoliteClient(ClientConfig(min_interval=0.0, allow_private=True))
        strict._check_host = lambda u: (  # type: ignore[method-assign]
            None if u.startswith(base) else (_ for _ in ()).throw(
                ImportHTTPError("refusing non-public address")))
        with pytest.raises(ImportHTTPError, match="non-public"):
            strict.download(f"{base}/moved.jpg")
