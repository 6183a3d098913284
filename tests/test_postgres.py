"""The shared PostgreSQL archive: same behaviour as SQLite, plus what sharing needs.

Runs against the real server at 127.0.0.1:5432 (database `test`), each test in a schema of
its own. On CI the server must be there (these tests fail rather than skip); elsewhere they
skip with a message saying how to get one (README).
"""

from __future__ import annotations

import io
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from conftest import coco, manifest_rows, write_manifest
from PIL import Image

import imgverify
from imgverify.errors import ArchiveError
from imgverify.ingest import ingest_manifest


def _jpeg(image: Image.Image, quality: int = 75) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _crop(photo: Path) -> Image.Image:
    im = Image.open(photo).convert("RGB")
    w, h = im.size
    return im.crop((int(w * 0.3), int(h * 0.3), w, h))


# -- the same behaviour on both backends ---------------------------------------------------------
def test_ingest_check_remove_on_each_backend(location: str, tmp_path: Path) -> None:
    photos = coco(8)
    rows = manifest_rows(photos)
    rows.append({"image": "missing.jpg", "date": "2016-01-01"})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    with imgverify.Archive.open(location) as arch:
        report = ingest_manifest(arch, manifest)
        assert (report.added, report.updated) == (8, 0)
        assert [e.line for e in report.errors] == [10]
        again = ingest_manifest(arch, manifest)  # idempotent by sha256
        assert (again.added, again.updated) == (0, 8) and len(arch) == 8
        assert arch.archive_id() and arch.generation() == "2"
        copy = imgverify.check(_jpeg(Image.open(photos[2]).convert("RGB")), arch)
        assert copy.verdict == "likely_recycled"
        assert copy.matches[0].caption == rows[2]["caption"]
        crop = imgverify.check(_crop(photos[5]), arch)
        assert crop.matches and crop.matches[0].caption == rows[5]["caption"]
        ref = arch.get(copy.matches[0].reference_id)
        assert ref is not None and arch.find_sha256(ref.sha256) is not None
        assert arch.thumbnail(ref.key)
        assert [r.date for r in arch.iter_references()] == sorted(r["date"] for r in rows[:8])
        exported = list(arch.export())
        assert len(exported) == 8 and all(len(d["pdq"]) == 64 for d in exported)
        assert arch.integrity_check() == []
        stats = arch.stats()
        assert stats["references"] == 8 and stats["earliest_date"] == "2016-05-01"
        assert arch.remove([ref.reference_id]) == 1 and len(arch) == 7
        gone = imgverify.check(_jpeg(Image.open(photos[2]).convert("RGB")), arch)
        assert gone.verdict == "no_match"


def test_cli_on_each_backend(location: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from imgverify.cli import app

    photos = coco(3)
    manifest = write_manifest(tmp_path / "m.csv", manifest_rows(photos))
    runner = CliRunner()
    added = runner.invoke(app, ["archive", "add", str(manifest), "--archive", location])
    assert added.exit_code == 0, added.output
    query = tmp_path / "q.jpg"
    query.write_bytes(_jpeg(Image.open(photos[1]).convert("RGB"), 60))
    res = runner.invoke(app, ["check", str(query), "--archive", location, "--format", "json"])
    assert res.exit_code == 0, res.output
    assert '"likely_recycled"' in res.stdout


# -- what sharing needs --------------------------------------------------------------------------
def _writer(url: str, manifest: str, start: Any) -> None:
    start.wait()
    with imgverify.Archive.open(url) as arch:
        ingest_manifest(arch, manifest, batch_size=2)


def test_concurrent_writers_never_duplicate(pg_url: str, tmp_path: Path) -> None:
    """Three processes ingest overlapping manifests at once: every image exactly once, and the
    change log holds one generation per batch."""
    photos = coco(9)
    manifests = [write_manifest(tmp_path / f"m{i}.csv", manifest_rows(photos[i * 3:i * 3 + 6]))
                 for i in range(3)]  # each overlaps the next by three photos
    with imgverify.Archive.open(pg_url):
        pass  # create the schema first: migrations are tested on their own below
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=_writer, args=(pg_url, str(m), start)) for m in manifests]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    with imgverify.Archive.open(pg_url) as arch:
        assert len(arch) == 9
        assert arch.integrity_check() == []
        shas = [r.sha256 for r in arch.iter_references()]
        assert len(set(shas)) == 9


def test_matcher_follows_other_writers_incrementally(pg_url: str, tmp_path: Path) -> None:
    """A long-lived matcher sees another writer's additions and removals with only the touched
    rows re-read: the base layer of its index is the same object before and after."""
    photos = coco(8)
    rows = manifest_rows(photos)
    first = write_manifest(tmp_path / "a.csv", rows[:5])
    later = write_manifest(tmp_path / "b.csv", rows[5:])
    with imgverify.Archive.open(pg_url) as matcher, imgverify.Archive.open(pg_url) as writer:
        ingest_manifest(writer, first)
        base = matcher.index().base
        query = _jpeg(Image.open(photos[6]).convert("RGB"))
        assert imgverify.check(query, matcher).verdict == "no_match"
        ingest_manifest(writer, later)  # another connection, as another process would
        found = imgverify.check(query, matcher)
        assert found.verdict == "likely_recycled"
        assert found.matches[0].caption == rows[6]["caption"]
        index = matcher.index()
        assert index.base is base and len(index.delta) >= 3
        writer.remove([found.matches[0].reference_id])
        assert imgverify.check(query, matcher).verdict == "no_match"
        crop = imgverify.check(_crop(photos[7]), matcher)  # features follow too
        assert crop.matches and crop.matches[0].caption == rows[7]["caption"]


def test_migrations_are_versioned_and_idempotent(pg_url: str) -> None:
    from imgverify.store.postgres import SCHEMA_VERSION, PostgresArchive

    with pytest.raises(ArchiveError, match="holds no imgverify archive"):
        PostgresArchive(pg_url, readonly=True)  # a reader never creates a schema
    with PostgresArchive(pg_url) as arch:
        first_id = arch.archive_id()
    with PostgresArchive(pg_url) as again:  # nothing to migrate the second time
        assert again.archive_id() == first_id
        versions = again._query("SELECT version FROM imgverify_migrations")
        assert [v for (v,) in versions] == list(range(1, SCHEMA_VERSION + 1))


def test_password_never_shown(pg_url: str) -> None:
    from imgverify.store.postgres import redact

    assert redact("postgresql://desk:s3cret@db.example:5432/arch") == \
        "postgresql://desk:***@db.example:5432/arch"
    bad = pg_url.replace("postgres@", "nobody:s3cret@")
    with pytest.raises(ArchiveError) as info:
        imgverify.Archive.open(bad)
    assert "s3cret" not in info.value.message


def test_readonly_archive_refuses_writes(pg_url: str, tmp_path: Path) -> None:
    photos = coco(2)
    manifest = write_manifest(tmp_path / "m.csv", manifest_rows(photos))
    with imgverify.Archive.open(pg_url) as arch:
        ingest_manifest(arch, manifest)
    with imgverify.Archive.open(pg_url, readonly=True) as ro:
        assert len(ro) == 2
        with pytest.raises(ArchiveError, match="read-only"):
            ro.remove([next(ro.iter_references()).reference_id])
