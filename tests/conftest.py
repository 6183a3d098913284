"""Shared fixtures: where the shared photo sets live, manifests, and one small archive of real
photos built once per session.

The shared data sits beside the checkout (``../shared/data``); tests that need it skip with a
clear message when it is absent.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import imgverify
from imgverify.ingest import ingest_manifest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PDQ_REF = SHARED / "pdq-reference"
PHOTOS = SHARED / "photos"
DIH = PDQ_REF / "pdq" / "data" / "reg-test-input" / "dih"
BRIDGE = DIH / "bridge-1-original.jpg"

SHARED_MISSING = (f"shared test data not found at {SHARED} (expected ../shared/data beside the "
                  "repository root): tests that need real photos are skipped")
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=SHARED_MISSING)

MANIFEST_FIELDS = ("image", "date", "event", "place", "caption", "source", "source_url",
                   "credit")


def require(path: Path) -> Path:
    """`path` inside the shared data, or skip the test with a clear reason."""
    if not path.exists():
        pytest.skip(f"{path} is absent: {SHARED_MISSING}")
    return path


def coco(n: int, start: int = 0, split: str = "train2017") -> list[Path]:
    folder = require(PHOTOS / "coco128" / split)
    files = sorted(folder.glob("*.jpg"))[start:start + n]
    assert len(files) == n, f"coco128/{split} has fewer than {start + n} photos"
    return files


def bsds(n: int, start: int = 0, split: str = "train") -> list[Path]:
    folder = require(PHOTOS / "bsds500" / split)
    files = sorted(folder.glob("*.jpg"))[start:start + n]
    assert len(files) == n, f"bsds500/{split} has fewer than {start + n} photos"
    return files


def jpeg_bytes(picture: Any, quality: int = 85) -> bytes:
    """`picture` (a PIL image) as a JPEG file's bytes, as it would be uploaded."""
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_manifest(path: Path, rows: Sequence[dict[str, str]]) -> Path:
    """A CSV (header + rows) or JSONL manifest, chosen by the file suffix."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                        encoding="utf-8")
    else:
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, MANIFEST_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return path


def manifest_rows(photos: Sequence[Path], year: int = 2016) -> list[dict[str, str]]:
    """One row per photo with distinct, known context (dates in `year`, day = index + 1)."""
    return [{"image": str(p), "date": f"{year}-05-{i + 1:02d}", "event": f"Event {i} <b>&</b>",
             "place": f"Place {i}", "caption": f"Caption {i}", "source": "Desk archive",
             "source_url": f"https://example.org/photo/{i}", "credit": f"Photographer {i}"}
            for i, p in enumerate(photos)]


def copy_archive(src: Path, dst: Path) -> Path:
    """A consistent copy of an archive (SQLite backup API: WAL content included)."""
    source, target = sqlite3.connect(str(src)), sqlite3.connect(str(dst))
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return dst


@dataclass
class SmallArchive:
    """20 coco128 photos ingested from a CSV manifest; read-only for the tests that share it."""

    path: Path
    manifest: Path
    photos: list[Path]
    rows: list[dict[str, str]]

    def row_of(self, photo: Path) -> dict[str, str]:
        return self.rows[self.photos.index(photo)]


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallArchive]:
    photos = coco(20)
    folder = tmp_path_factory.mktemp("small_archive")
    rows = manifest_rows(photos)
    manifest = write_manifest(folder / "manifest.csv", rows)
    path = folder / "desk.sqlite"
    with imgverify.Archive.open(path) as arch:
        report = ingest_manifest(arch, manifest)
    assert (report.added, report.updated, report.errors) == (20, 0, [])
    yield SmallArchive(path, manifest, photos, rows)


@pytest.fixture()
def archive_copy(small_archive: SmallArchive, tmp_path: Path) -> Path:
    """A private, writable copy of the session archive for tests that change it."""
    return copy_archive(small_archive.path, tmp_path / "copy.sqlite")


# -- both archive backends -------------------------------------------------------------------
PG_URL = os.environ.get("IMGVERIFY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _server_or_skip() -> Any:
    try:
        import psycopg

        conn = psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        message = (f"PostgreSQL not reachable at {PG_URL} ({exc}); see README "
                   "'A shared archive on PostgreSQL'")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return conn


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh schema for this test, dropped afterwards."""
    admin = _server_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{PG_URL}?schema={schema}"
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty archive location on each backend."""
    if request.param == "sqlite":
        yield str(tmp_path / "desk.sqlite")
    else:
        yield request.getfixturevalue("pg_url")


# -- the shipped archive is never written by a test --------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def shipped_archive_untouched() -> Iterator[None]:
    """Every test may read reference_index/default.sqlite; none may change it (a test that
    opened it writable once would switch it to WAL mode or worse)."""
    import hashlib

    shipped = Path(__file__).resolve().parents[1] / "reference_index" / "default.sqlite"
    before = hashlib.sha256(shipped.read_bytes()).hexdigest() if shipped.exists() else None
    yield
    after = hashlib.sha256(shipped.read_bytes()).hexdigest() if shipped.exists() else None
    assert after == before, f"{shipped} was changed by the test run"


@pytest.fixture(scope="session")
def pg_small_archive(small_archive: SmallArchive) -> Iterator[str]:
    """The session's small archive again, in a PostgreSQL schema of its own: the same 20
    photos and rows, so a test can run on both backends and expect the same answers."""
    admin = _server_or_skip()
    schema = f"t_small_{uuid.uuid4().hex[:10]}"
    url = f"{PG_URL}?schema={schema}"
    try:
        with imgverify.Archive.open(url) as arch:
            report = ingest_manifest(arch, small_archive.manifest)
        assert (report.added, report.errors) == (20, [])
        yield url
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def small_location(request: pytest.FixtureRequest, small_archive: SmallArchive) -> str:
    """The session's small archive (read-only use) on each backend."""
    if request.param == "sqlite":
        return str(small_archive.path)
    return str(request.getfixturevalue("pg_small_archive"))


@pytest.fixture(params=["sqlite", "postgresql"])
def copy_location(request: pytest.FixtureRequest, small_archive: SmallArchive,
                  tmp_path: Path) -> str:
    """A private, writable copy of the small archive on each backend (PostgreSQL: the same
    manifest ingested into a fresh schema)."""
    if request.param == "sqlite":
        return str(copy_archive(small_archive.path, tmp_path / "copy.sqlite"))
    url = str(request.getfixturevalue("pg_url"))
    with imgverify.Archive.open(url) as arch:
        report = ingest_manifest(arch, small_archive.manifest)
    assert (report.added, report.errors) == (20, [])
    return url


# -- caches of PostgreSQL archives go to a private folder, not the user's cache ---------------
@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`store.cache.user_cache_dir` (PostgreSQL's compact index cache): a folder of this run,
    for every test and the processes they start."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGVERIFY_CACHE_DIR", str(tmp_path_factory.mktemp("user-cache")))
        yield
