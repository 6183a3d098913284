"""The reference archive: ingest from CSV and JSONL manifests of real photos, idempotent
re-adds, per-row errors with line numbers, and the `archive` sub-commands."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PHOTOS,
    SmallArchive,
    coco,
    manifest_rows,
    needs_shared,
    require,
    write_manifest,
)
from PIL import Image
from typer.testing import CliRunner

import imgverify
from imgverify.cli import app
from imgverify.ingest import ingest_manifest

pytestmark = needs_shared
runner = CliRunner()


def cli(*args: str, input: bytes | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def stats(path: Path | str) -> dict[str, Any]:
    res = cli("archive", "stats", "--archive", str(path))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def listing(path: Path | str) -> list[dict[str, Any]]:
    res = cli("archive", "list", "--archive", str(path), "--limit", "1000")
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines()]


# -- building ---------------------------------------------------------------------------------
def test_session_archive_from_csv(small_archive: SmallArchive, small_location: str) -> None:
    with imgverify.Archive.open(small_location, readonly=True) as arch:
        assert len(arch) == 20
        assert arch.integrity_check() == []
        refs = list(arch.iter_references())
        by_sha = {r.sha256: r for r in refs}
        for photo, row in zip(small_archive.photos, small_archive.rows, strict=True):
            ref = arch.find_sha256(imgverify.load(photo).sha256)
            assert ref is not None, photo
            assert (ref.date, ref.event, ref.place, ref.caption, ref.source, ref.source_url,
                    ref.credit) == (row["date"], row["event"], row["place"], row["caption"],
                                    row["source"], row["source_url"], row["credit"])
            assert Path(str(ref.image_uri)).resolve() == photo.resolve()  # paths are resolved
            assert ref.reference_id == ref.sha256[:16]
            with Image.open(photo) as im:
                assert (ref.width, ref.height) == im.size
            # a thumbnail for reports: a real JPEG of at most 256 px
            thumb = arch.thumbnail(ref.key)
            assert thumb is not None
            with Image.open(io.BytesIO(thumb)) as t:
                assert t.format == "JPEG" and max(t.size) <= 256 and min(t.size) > 32
            assert [name for name, _ in arch.hashes_of(ref.key)][0] == "full"
        assert len(by_sha) == 20
        assert [r.date for r in refs] == sorted(r.date for r in refs)  # listed oldest first


def test_jsonl_manifest_gives_the_same_archive(small_archive: SmallArchive,
                                               tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", small_archive.rows)
    with imgverify.Archive.open(tmp_path / "j.sqlite") as arch:
        report = ingest_manifest(arch, manifest)
        assert (report.added, report.updated, report.errors) == (20, 0, [])
        jsonl = {r.sha256: (r.date, r.event) for r in arch.iter_references()}
    with imgverify.Archive.open(small_archive.path, readonly=True) as arch:
        assert jsonl == {r.sha256: (r.date, r.event) for r in arch.iter_references()}


def test_readding_updates_never_duplicates(small_archive: SmallArchive,
                                           copy_location: str, tmp_path: Path) -> None:
    archive_copy = copy_location
    before = {r["sha256"]: r for r in listing(archive_copy)}
    hash_rows = stats(archive_copy)["hash_rows"]
    res = cli("archive", "add", str(small_archive.manifest), "--archive", str(archive_copy),
              "--workers", "1")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"archive": location_of(archive_copy), "added": 0,
                                      "updated": 20, "errors": []}
    after = {r["sha256"]: r for r in listing(archive_copy)}
    assert after.keys() == before.keys()
    assert stats(archive_copy)["hash_rows"] == hash_rows
    assert all(after[k]["reference_id"] == before[k]["reference_id"] for k in after)
    assert all(after[k]["added_at"] == before[k]["added_at"] for k in after)
    # the same images with corrected context (JSONL this time): updated in place
    rows = manifest_rows(small_archive.photos[:5], year=2009)
    for r in rows:
        r["event"] = "Corrected " + r["event"]
    with imgverify.Archive.open(archive_copy) as arch:
        report = ingest_manifest(arch, write_manifest(tmp_path / "fix.jsonl", rows))
        assert (report.added, report.updated) == (0, 5)
        assert len(arch) == 20
        assert arch.integrity_check() == []
        for photo, row in zip(small_archive.photos[:5], rows, strict=True):
            ref = arch.find_sha256(imgverify.load(photo).sha256)
            assert ref is not None
            assert (ref.date, ref.event) == (row["date"], row["event"])
    assert stats(archive_copy)["earliest_date"] == "2009-05-01"


def location_of(archive: str) -> str:
    """How the CLI names an archive in its JSON: the path, or the URL without a password."""
    with imgverify.Archive.open(archive, readonly=True) as arch:
        return str(arch.location)


def test_same_photo_twice_in_one_manifest_is_one_reference(tmp_path: Path) -> None:
    photo = coco(1, start=40)[0]
    rows = [{"image": str(photo), "date": "2001-01-01", "event": "first row"},
            {"image": str(photo), "date": "2002-02-02", "event": "second row"}]
    with imgverify.Archive.open(tmp_path / "a.sqlite") as arch:
        report = ingest_manifest(arch, write_manifest(tmp_path / "m.csv", rows))
        assert (report.added, report.updated, len(arch)) == (1, 1, 1)
        (ref,) = arch.iter_references()
        assert (ref.date, ref.event) == ("2002-02-02", "second row")


# -- bad rows ---------------------------------------------------------------------------------
def test_bad_csv_rows_are_reported_with_their_line_numbers(tmp_path: Path) -> None:
    good = coco(3, start=50)
    for p in good:
        shutil.copy(p, tmp_path / p.name)
    a, b, c = (p.name for p in good)  # relative to the manifest
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "image,date,event,caption\n"               # 1 header
        f"{a},2019-01-01,good a,plain\n"           # 2 good
        "missing.jpg,2019-01-02,missing file,x\n"  # 3 image file does not exist
        f"{b},2019-13-45,bad date,x\n"             # 4 impossible date
        f"{c},,no date,x\n"                        # 5 empty date
        f'{b},2019-01-05,good b,"two\nlines"\n'    # 6-7 good, caption spans two lines
        f"{c},yesterday,bad date 2,x\n"            # 8 not a date
        ",2019-01-01,no image,x\n"                 # 9 empty image
        f"{c},2019-01-07,good c,x\n",              # 10 good
        encoding="utf-8")
    archive = tmp_path / "a.sqlite"
    res = cli("archive", "add", str(manifest), "--archive", str(archive), "--workers", "1")
    assert res.exit_code == 3, res.output  # completed, some rows failed
    report = json.loads(res.stdout)
    assert (report["added"], report["updated"]) == (3, 0)
    lines = {e["line"]: e for e in report["errors"]}
    assert sorted(lines) == [3, 4, 5, 8, 9]
    assert "no such file" in lines[3]["error"] and lines[3]["image"].endswith("missing.jpg")
    assert "2019-13-45" in lines[4]["error"]
    assert "date" in lines[5]["error"] and "missing" in lines[5]["error"]
    assert "yesterday" in lines[8]["error"]
    assert "image" in lines[9]["error"]
    for n in (3, 4, 5, 8, 9):
        assert f"{manifest}:{n}: " in res.stderr
    with imgverify.Archive.open(archive, readonly=True) as arch:
        events = {r.event: r for r in arch.iter_references()}
        assert set(events) == {"good a", "good b", "good c"}
        assert events["good b"].caption == "two\nlines"
        assert events["good a"].image_uri == str((tmp_path / a).resolve())


def test_bad_jsonl_rows_are_reported_with_their_line_numbers(tmp_path: Path) -> None:
    a, b, c = (str(p) for p in coco(3, start=60))
    lines = [
        json.dumps({"image": a, "date": "2018-03-01", "event": "good a"}),     # 1
        json.dumps({"image": "/nonexistent/x.jpg", "date": "2018-03-02"}),     # 2
        "",                                                                    # 3 blank
        json.dumps({"image": b, "date": "2018-02-30"}),                        # 4 bad date
        '{"image": "' + b + '", "date": ',                                     # 5 invalid JSON
        json.dumps({"image": c, "event": "no date"}),                          # 6 no date
        json.dumps({"image": c, "date": ""}),                                  # 7 empty date
        json.dumps([a, "2018-03-01"]),                                         # 8 not an object
        json.dumps({"image": b, "date": "2018-03-09T10:00:00Z", "event": "good b"}),  # 9
        json.dumps({"image": c, "date": "2018-03-10", "event": "good c"}),     # 10
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with imgverify.Archive.open(tmp_path / "a.sqlite") as arch:
        report = ingest_manifest(arch, manifest)
        errs = {e.line: e.message for e in report.errors}
        assert sorted(errs) == [2, 4, 5, 6, 7, 8]
        assert "no such file" in errs[2]
        assert "2018-02-30" in errs[4]
        assert "invalid JSON" in errs[5]
        assert "date" in errs[6] and "date" in errs[7]
        assert "object" in errs[8]
        assert (report.added, report.updated) == (3, 0)
        assert {r.event: r.date for r in arch.iter_references()} == {
            "good a": "2018-03-01", "good b": "2018-03-09", "good c": "2018-03-10"}
        assert arch.integrity_check() == []


def test_manifest_without_a_date_column_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,event\n{coco(1)[0]},x\n", encoding="utf-8")
    res = cli("archive", "add", str(manifest), "--archive", str(tmp_path / "a.sqlite"),
              "--workers", "1")
    assert res.exit_code == 3
    assert "date" in res.stderr


# -- the archive sub-commands ------------------------------------------------------------------
def test_stats_list_export_check_agree(small_archive: SmallArchive,
                                      small_location: str) -> None:
    path = small_location
    st = stats(path)
    listed = listing(path)
    res = cli("archive", "export", "--archive", path)
    assert res.exit_code == 0
    exported = [json.loads(line) for line in res.stdout.splitlines()]
    res = cli("archive", "export", "--archive", path, "--format", "csv")
    assert res.exit_code == 0
    exported_csv = list(csv.DictReader(io.StringIO(res.stdout)))
    res = cli("archive", "check", "--archive", path)
    assert res.exit_code == 0
    health = json.loads(res.stdout)
    dates = sorted(r["date"] for r in small_archive.rows)
    assert st["references"] == len(listed) == len(exported) == len(exported_csv) == 20
    assert health == {"archive": location_of(path), "references": 20, "healthy": True,
                      "problems": []}
    assert st["hash_rows"] >= 20
    assert (st["earliest_date"], st["latest_date"]) == (dates[0], dates[-1])
    assert st["thumbnail_bytes"] > 0 and st.get("file_bytes", 1) > 0  # PostgreSQL: no file
    assert [r["sha256"] for r in listed] == [r["sha256"] for r in exported]
    assert [r["sha256"] for r in exported] == [r["sha256"] for r in exported_csv]
    page = cli("archive", "list", "--archive", path, "--limit", "5", "--offset", "5")
    assert [json.loads(x)["sha256"] for x in page.stdout.splitlines()] == \
        [r["sha256"] for r in listed[5:10]]
    with imgverify.Archive.open(path, readonly=True) as arch:
        for row in exported:
            ref = arch.get(row["reference_id"])
            assert ref is not None
            full = dict(arch.hashes_of(ref.key))["full"].to_hex()
            assert {k: row[k] for k in full} == full
            assert row["image"] == ref.image_uri and row["event"] == ref.event


def test_export_can_be_ingested_again(small_archive: SmallArchive, small_location: str,
                                      tmp_path: Path) -> None:
    res = cli("archive", "export", "--archive", small_location)
    manifest = tmp_path / "export.jsonl"
    manifest.write_text(res.stdout, encoding="utf-8")
    with imgverify.Archive.open(tmp_path / "again.sqlite") as arch:
        report = ingest_manifest(arch, manifest)
        assert (report.added, report.errors) == (20, [])
        again = {r.sha256: r.context() for r in arch.iter_references()}
    with imgverify.Archive.open(small_archive.path, readonly=True) as arch:
        assert again == {r.sha256: r.context() for r in arch.iter_references()}


def test_remove_then_check_no_longer_matches(small_archive: SmallArchive,
                                             copy_location: str) -> None:
    archive_copy = copy_location
    gone, kept = small_archive.photos[7], small_archive.photos[8]
    held = imgverify.Archive.open(archive_copy)  # stays open: its index must notice
    assert imgverify.check(gone, held).verdict == "likely_recycled"
    ref = held.find_sha256(imgverify.load(gone).sha256)
    assert ref is not None
    res = cli("archive", "remove", ref.reference_id, "--archive", str(archive_copy))
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"removed": 1}
    assert stats(archive_copy)["references"] == 19
    assert ref.sha256 not in {r["sha256"] for r in listing(archive_copy)}
    after = imgverify.check(gone, held)
    assert after.verdict == "no_match", [m.to_dict() for m in after.matches]
    assert imgverify.check(kept, held).verdict == "likely_recycled"
    # and through the command line
    res = cli("check", str(gone), "--archive", str(archive_copy), "--format", "json")
    assert res.exit_code == 0 and json.loads(res.stdout)["verdict"] == "no_match"
    # nothing left behind: no orphan hashes, thumbnails gone with the row
    assert held.integrity_check() == []
    assert held.thumbnail(ref.key) is None and held.hashes_of(ref.key) == []
    res = cli("archive", "check", "--archive", str(archive_copy))
    assert res.exit_code == 0 and json.loads(res.stdout)["references"] == 19
    # removing by sha256 works too; an unknown id is reported
    other = held.find_sha256(imgverify.load(kept).sha256)
    assert other is not None
    res = cli("archive", "remove", other.sha256, "no-such-id", "--archive", str(archive_copy))
    assert res.exit_code == 3
    assert json.loads(res.stdout) == {"removed": 1, "not_found": ["no-such-id"]}
    assert stats(archive_copy)["references"] == 18
    held.close()


def test_missing_or_broken_archive_is_exit_code_4(tmp_path: Path) -> None:
    for cmd in ("stats", "list", "export", "check"):
        res = cli("archive", cmd, "--archive", str(tmp_path / "nope.sqlite"))
        assert res.exit_code == 4, (cmd, res.output)
        assert "no archive" in res.stderr
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database\n" * 100)
    res = cli("archive", "stats", "--archive", str(junk))
    assert res.exit_code == 4
    res = cli("archive", "add", str(tmp_path / "m.csv"), "--archive",
              str(tmp_path / "no-such-folder" / "a.sqlite"))
    assert res.exit_code == 4


def test_default_archive_is_read_only(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", manifest_rows(coco(1)))
    with pytest.raises(imgverify.ArchiveError):
        ingest_manifest(imgverify.Archive.default(), manifest)
    # the deprecated method still works as before, and says it is deprecated
    with pytest.warns(DeprecationWarning, match="ingest_manifest"), \
            pytest.raises(imgverify.ArchiveError):
        imgverify.Archive.default().ingest(manifest)


def test_export_rejects_an_unknown_format(small_archive: SmallArchive) -> None:
    res = cli("archive", "export", "--archive", str(small_archive.path), "--format", "xml")
    assert res.exit_code == 2, res.stdout[:200]


def test_trained_feature_index_is_cached_and_follows_the_generation(
        small_archive: SmallArchive, archive_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training the faiss IVF index is the slow part of opening a large archive: the first
    process caches it beside the archive, later ones reuse it until the archive changes."""
    import imgverify.signals.features as features

    monkeypatch.setattr(features, "IVF_MIN_DESCRIPTORS", 1000)  # 20 photos, ~3,000 descriptors
    builds: list[bool] = []  # one entry per build: were earlier centroids reused?
    real_build = features.build_descriptor_index

    def counting_build(data: Any, trained: Any = None) -> Any:
        builds.append(trained is not None)
        return real_build(data, trained)

    monkeypatch.setattr(features, "build_descriptor_index", counting_build)
    photo = small_archive.photos[3]
    crop = Image.open(photo).convert("RGB")
    w, h = crop.size
    crop = crop.crop((int(w * 0.3), int(h * 0.3), w, h))

    with imgverify.Archive.open(archive_copy) as first:
        index = first.feature_index()
        assert index.trained and len(builds) == 1
        expected = imgverify.check(crop, first)
    cache = archive_copy.with_name(archive_copy.name + ".index")
    assert [p.stat().st_size > 0 for p in cache.glob("features-*/features.faiss")] == [True]
    with imgverify.Archive.open(archive_copy) as second:
        again = imgverify.check(crop, second)
        assert len(builds) == 1, "the cached index should have been loaded, not rebuilt"
    assert again.verdict == expected.verdict == "likely_recycled"
    assert [(m.reference_id, m.method) for m in again.matches] == \
        [(m.reference_id, m.method) for m in expected.matches]
    assert expected.matches[0].caption == small_archive.row_of(photo)["caption"]
    assert expected.matches[0].method == "local_features"

    with imgverify.Archive.open(archive_copy) as third:
        victim = next(r.reference_id for r in third.iter_references()
                      if r.caption != small_archive.row_of(photo)["caption"])
        assert third.remove([victim]) == 1
        rebuilt = third.feature_index()
        assert builds == [False, True], "a changed archive is re-indexed, reusing centroids"
        assert len(rebuilt) < len(index)
        assert imgverify.check(crop, third).matches[0].caption == \
            small_archive.row_of(photo)["caption"]
    assert [p.stat().st_size > 0 for p in cache.glob("centroids-*/centroids.faiss")] == [True]
    assert len(list(cache.glob("features-*"))) == 1, "older generations' caches are removed"


# -- hashes from an older imgverify -----------------------------------------------------------
def test_archive_from_an_older_hash_pipeline_is_refused_until_rehashed(tmp_path: Path) -> None:
    """An archive whose PDQ hashes came from pipeline 1 (pdqhash on the reduced decode) is not
    silently matched against pipeline-2 queries: check and add say to run `archive rehash`,
    which re-reads the originals (or the thumbnail when an original is gone)."""
    import sqlite3

    import numpy as np

    from imgverify.signals.hashing import HASH_PIPELINE, pdq_of_array

    camera = sorted(p for p in require(PHOTOS / "camera_exif").rglob("*.jpg")
                    if Image.open(p).width * Image.open(p).height >= 8e6)[:4]
    assert len(camera) == 4
    photos = []
    for p in camera:
        shutil.copy(p, tmp_path / p.name)
        photos.append(tmp_path / p.name)
    path = tmp_path / "old.sqlite"
    rows = [{"image": str(p), "date": "2019-05-01", "event": f"event {i}"}
            for i, p in enumerate(photos)]
    with imgverify.Archive.open(path) as arch:
        assert ingest_manifest(arch, write_manifest(tmp_path / "m.csv", rows)).added == 4
        assert arch.hash_pipeline() == HASH_PIPELINE
        current = {k: arch.hashes_of(k) for k in (r.key for r in arch.iter_references())}
    # turn it into what imgverify 0.1 wrote: no stamp, PDQ run by pdqhash on the reduced decode
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM meta WHERE key='hash_pipeline'")
        for (key, uri) in conn.execute("SELECT id, image_uri FROM refs").fetchall():
            old, _q = pdq_of_array(np.asarray(imgverify.load(uri).image))
            conn.execute("UPDATE hashes SET pdq=? WHERE ref_id=? AND variant='full'",
                         (old.to_bytes(32, "big"), key))
    conn.close()
    with imgverify.Archive.open(path) as arch:
        assert arch.hash_pipeline() == 1
        with pytest.raises(imgverify.ArchiveError, match="archive rehash"):
            imgverify.check(photos[0], arch)
    res = cli("check", str(photos[0]), "--archive", str(path))
    assert res.exit_code == 4 and "archive rehash" in res.output
    res = cli("archive", "add", str(tmp_path / "m.csv"), "--archive", str(path))
    assert res.exit_code == 4 and "archive rehash" in res.output
    # one original has gone since it was archived: its thumbnail stands in
    gone = photos[3].read_bytes()
    photos[3].unlink()
    res = cli("archive", "rehash", "--archive", str(path))
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"archive": str(path), "from_source": 3,
                                      "from_thumbnail": 1, "failed": [],
                                      "hash_pipeline": HASH_PIPELINE}
    assert stats(path)["hash_pipeline"] == HASH_PIPELINE
    (tmp_path / "back.jpg").write_bytes(gone)
    with imgverify.Archive.open(path) as arch:
        for ref in arch.iter_references():
            if ref.image_uri != str(photos[3]):
                assert arch.hashes_of(ref.key) == current[ref.key]  # as a fresh ingest
        assert arch.integrity_check() == []
        for p in [*photos[:3], tmp_path / "back.jpg"]:
            assert imgverify.check(p, arch).verdict == "likely_recycled", p.name
