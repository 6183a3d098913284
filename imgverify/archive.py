"""The reference archive: dated past-event images with their context, stored in SQLite.

The archive is the system of record. Each reference keeps its context, its sha256, its
perceptual hashes (one row per hashed variant of the picture) and a small thumbnail for
reports. Writes are transactional per batch (a crash loses nothing committed and leaves no
half-record); readers keep working while a writer ingests (WAL). The in-memory `HashIndex`
is derived from it on demand and rebuilt when another writer has changed the archive.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import ArchiveError, ImgVerifyError
from .evidence import read_exif
from .features import REF_FEATURES, FeatureIndex, LocalFeatures, extract
from .hashing import FULL_SCALE, HASH_PIPELINE, HashSet, PictureHasher, Scale, hex_of
from .index import LINEAR_MAX, HashIndex
from .load import Limits, load, reduction_scale
from .manifest import CONTEXT_FIELDS, ManifestRow, RowError, read_manifest
from .regions import picture_variants

SCHEMA_VERSION = 1
#: Archives with at least this many hash rows keep their index cached beside the file.
CACHE_MIN_ROWS = 20_000
THUMBNAIL_SIDE = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refs (
    id INTEGER PRIMARY KEY,
    reference_id TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL UNIQUE,
    date TEXT NOT NULL,
    event TEXT, place TEXT, caption TEXT, source TEXT, source_url TEXT,
    credit TEXT, license TEXT, published TEXT,
    image_uri TEXT, width INTEGER, height INTEGER, format TEXT,
    exif TEXT, thumbnail BLOB,
    added_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hashes (
    ref_id INTEGER NOT NULL REFERENCES refs(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,
    pdq BLOB NOT NULL, pdq_quality INTEGER NOT NULL,
    phash BLOB NOT NULL, dhash BLOB NOT NULL, whash BLOB NOT NULL,
    PRIMARY KEY (ref_id, variant)
);
CREATE INDEX IF NOT EXISTS refs_date ON refs(date);
CREATE TABLE IF NOT EXISTS features (
    ref_id INTEGER PRIMARY KEY REFERENCES refs(id) ON DELETE CASCADE,
    width INTEGER NOT NULL, height INTEGER NOT NULL,
    points BLOB NOT NULL, descriptors BLOB NOT NULL
);
"""


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


@dataclass
class Reference:
    """One archived image and the context a journalist needs."""

    key: int
    reference_id: str
    sha256: str
    date: str
    event: str | None = None
    place: str | None = None
    caption: str | None = None
    source: str | None = None
    source_url: str | None = None
    credit: str | None = None
    license: str | None = None
    published: str | None = None
    image_uri: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    exif: dict[str, Any] | None = None
    added_at: str | None = None
    updated_at: str | None = None

    def context(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in CONTEXT_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"reference_id": self.reference_id, "sha256": self.sha256}
        d.update(self.context())
        d.update(image_uri=self.image_uri, width=self.width, height=self.height,
                 format=self.format, added_at=self.added_at, updated_at=self.updated_at)
        return d


@dataclass
class PreparedReference:
    """Everything computed from an image before it is written; picklable for worker processes."""

    sha256: str
    image_uri: str
    context: dict[str, str | None]
    width: int
    height: int
    format: str
    thumbnail: bytes
    exif: dict[str, Any]
    hashes: list[tuple[str, HashSet]]
    features: LocalFeatures | None = None
    line: int = 0


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.added + self.updated

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated,
                "errors": [e.to_dict() for e in self.errors]}


def make_thumbnail(rgb: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    thumb = rgb.copy()
    thumb.thumbnail((side, side))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=75, optimize=True)
    return buf.getvalue()


def reference_hashes(rgb: Image.Image, scale: Scale = FULL_SCALE
                     ) -> list[tuple[str, HashSet]]:
    """The stored hashes of a reference: one set per part (full frame, trimmed photo)."""
    return [(name, PictureHasher(pic, scale).hashset(0)) for name, pic in picture_variants(rgb)]


def prepare_reference(row: ManifestRow, limits: Limits | None = None) -> PreparedReference:
    """Load, hash and thumbnail one manifest row (raises InputError on a bad image)."""
    loaded = load(row.image, limits)
    hashes = reference_hashes(loaded.image, loaded.scale)
    exif = read_exif(loaded.data).to_dict()
    return PreparedReference(
        sha256=loaded.sha256, image_uri=row.image, context=dict(row.context),
        width=loaded.original_size[0], height=loaded.original_size[1], format=loaded.format,
        thumbnail=make_thumbnail(loaded.image), exif=exif, hashes=hashes,
        features=extract(loaded.image, REF_FEATURES), line=row.line,
    )


def prepare_row_safely(row: ManifestRow, limits: Limits | None = None
                       ) -> PreparedReference | RowError:
    try:
        return prepare_reference(row, limits)
    except ImgVerifyError as exc:
        return RowError(row.line, exc.message, row.image)
    except Exception as exc:  # noqa: BLE001 - one bad row never stops an ingest
        return RowError(row.line, f"unexpected {type(exc).__name__}: {exc}", row.image)


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


class Archive:
    """An open reference archive. Thread-safe: one SQLite connection per thread."""

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False,
                 create: bool = True) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._index: HashIndex | None = None
        self._index_generation: str | None = None
        self._features: FeatureIndex | None = None
        self._features_generation: str | None = None
        if not self.path.exists():
            if readonly or not create:
                raise ArchiveError(f"no archive at {self.path}; create one with "
                                   "`imgverify archive add MANIFEST --archive PATH`")
            if not self.path.parent.exists():
                raise ArchiveError(f"folder {self.path.parent} does not exist")
        conn = self._conn()
        if not readonly:
            self._init_schema(conn)
        else:
            self._check_schema(conn)

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], readonly: bool = False) -> Archive:
        return cls(path, readonly=readonly)

    @classmethod
    def default(cls) -> Archive:
        """The shipped reference archive, read-only."""
        return cls(default_archive_path(), readonly=True)

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                uri = f"file:{self.path.resolve().as_posix()}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
            else:
                conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.row_factory = sqlite3.Row
            return conn
        except sqlite3.DatabaseError as exc:
            raise ArchiveError(f"cannot open archive {self.path}: {exc}") from None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        try:
            with self._write_lock, conn:
                conn.executescript(_SCHEMA)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
                # an archive from before the stamp holds pipeline-1 hashes
                has_refs = conn.execute("SELECT 1 FROM refs LIMIT 1").fetchone() is not None
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('hash_pipeline', ?)",
                             ("1" if has_refs else str(HASH_PIPELINE),))
        except sqlite3.DatabaseError as exc:
            raise ArchiveError(f"{self.path} is not a usable imgverify archive: {exc}") from None
        self._check_schema(conn)

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ArchiveError(f"{self.path} is not an imgverify archive: {exc}") from None
        if row is None or int(row[0]) != SCHEMA_VERSION:
            raise ArchiveError(f"{self.path} has an unsupported schema version")

    def hash_pipeline(self) -> int:
        """How this archive's hashes were computed (`hashing.HASH_PIPELINE`)."""
        rows = self._query("SELECT value FROM meta WHERE key='hash_pipeline'")
        if rows:
            return int(rows[0][0])
        return 1 if self._query("SELECT 1 FROM refs LIMIT 1") else HASH_PIPELINE

    def _require_current_hashes(self) -> None:
        found = self.hash_pipeline()
        if found != HASH_PIPELINE:
            raise ArchiveError(
                f"{self.path} holds hashes from an older imgverify (hash pipeline {found}, "
                f"this version uses {HASH_PIPELINE}); they would not match reliably. Run "
                f"`imgverify archive rehash --archive {self.path}` once to update them")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------------------
    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self._conn().execute(sql, tuple(params)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise ArchiveError(f"archive {self.path}: {exc}") from None

    def generation(self) -> str:
        rows = self._query("SELECT value FROM meta WHERE key='generation'")
        return rows[0][0] if rows else "0"

    def __len__(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM refs")[0][0])

    @staticmethod
    def _reference(row: sqlite3.Row) -> Reference:
        exif = json.loads(row["exif"]) if row["exif"] else None
        return Reference(
            key=row["id"], reference_id=row["reference_id"], sha256=row["sha256"],
            date=row["date"], event=row["event"], place=row["place"], caption=row["caption"],
            source=row["source"], source_url=row["source_url"], credit=row["credit"],
            license=row["license"], published=row["published"], image_uri=row["image_uri"],
            width=row["width"], height=row["height"], format=row["format"], exif=exif,
            added_at=row["added_at"], updated_at=row["updated_at"],
        )

    _COLUMNS = ("id, reference_id, sha256, date, event, place, caption, source, source_url, "
                "credit, license, published, image_uri, width, height, format, exif, "
                "added_at, updated_at")

    def references(self, keys: Iterable[int]) -> dict[int, Reference]:
        keys = list(keys)
        out: dict[int, Reference] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._query(f"SELECT {self._COLUMNS} FROM refs WHERE id IN ({marks})",
                                   chunk):
                out[row["id"]] = self._reference(row)
        return out

    def get(self, reference_id: str) -> Reference | None:
        rows = self._query(f"SELECT {self._COLUMNS} FROM refs WHERE reference_id=? OR sha256=?",
                           (reference_id, reference_id))
        return self._reference(rows[0]) if rows else None

    def find_sha256(self, sha256: str) -> Reference | None:
        rows = self._query(f"SELECT {self._COLUMNS} FROM refs WHERE sha256=?", (sha256,))
        return self._reference(rows[0]) if rows else None

    def iter_references(self, limit: int | None = None, offset: int = 0) -> Iterator[Reference]:
        sql = f"SELECT {self._COLUMNS} FROM refs ORDER BY date, id"
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params = [limit, offset]
        for row in self._query(sql, params):
            yield self._reference(row)

    def thumbnail(self, key: int) -> bytes | None:
        rows = self._query("SELECT thumbnail FROM refs WHERE id=?", (key,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def hashes_of(self, key: int) -> list[tuple[str, HashSet]]:
        rows = self._query("SELECT variant, pdq, pdq_quality, phash, dhash, whash FROM hashes "
                           "WHERE ref_id=? ORDER BY variant", (key,))
        return [(r[0], _hashset(r)) for r in rows]

    def stats(self) -> dict[str, Any]:
        refs = len(self)
        hash_rows = int(self._query("SELECT COUNT(*) FROM hashes")[0][0])
        dates = self._query("SELECT MIN(date), MAX(date) FROM refs")[0]
        thumb = self._query("SELECT COALESCE(SUM(LENGTH(thumbnail)),0) FROM refs")[0][0]
        size = self.path.stat().st_size if self.path.exists() else 0
        pipeline = self.hash_pipeline()
        return {
            "archive": str(self.path), "references": refs, "hash_rows": hash_rows,
            "earliest_date": dates[0], "latest_date": dates[1],
            "file_bytes": size, "thumbnail_bytes": int(thumb),
            "bytes_per_reference": round(size / refs) if refs else None,
            "index_bytes": self.index().nbytes if pipeline == HASH_PIPELINE else None,
            "hash_pipeline": pipeline, "readonly": self.readonly,
        }

    # -- the derived index ------------------------------------------------------------------
    @property
    def index_cache_dir(self) -> Path:
        return self.path.with_name(self.path.name + ".index")

    def index(self) -> HashIndex:
        """The current in-memory index, rebuilt if the archive changed since it was built.

        Large archives keep a cache beside the file (ARCHIVE.index/), memory-mapped on open
        and rebuilt when the archive's generation counter has moved on.
        """
        gen = self.generation()
        with self._index_lock:
            if self._index is None or gen != self._index_generation:
                self._require_current_hashes()
                cache = self.index_cache_dir
                index = HashIndex.load(cache, gen) if cache.exists() else None
                if index is None:
                    index = self._build_index()
                    if len(index) >= CACHE_MIN_ROWS and not self.readonly:
                        try:
                            index.save(cache, gen, with_mih=len(index) > LINEAR_MAX)
                        except OSError:
                            pass  # a cache we cannot write only costs time
                self._index = index
                self._index_generation = gen
            return self._index

    def feature_index(self) -> FeatureIndex:
        """Local features of every reference (for crops, insets, screenshots), cached.

        Large archives keep the trained faiss index in ARCHIVE.index/ (keyed by the
        archive's generation), so each process, CLI run or scan worker skips the training;
        after the archive changes, its centroids are reused and only the descriptors are
        assigned again (0.2 s instead of 4.4 s for 60k descriptors here).
        """
        gen = self.generation()
        with self._index_lock:
            if self._features is None or gen != self._features_generation:
                keys: list[int] = []
                feats: list[LocalFeatures] = []
                cur = self._conn().execute("SELECT ref_id, width, height, points, descriptors "
                                           "FROM features ORDER BY ref_id")
                for r in cur:
                    keys.append(r[0])
                    feats.append(LocalFeatures.from_blobs(r[3], r[4], r[1], r[2]))
                cache = self.index_cache_dir / "features.faiss"
                stamp = self.index_cache_dir / "features.generation"
                centroids = self.index_cache_dir / "features.centroids.faiss"
                prebuilt = trained = None
                try:
                    if stamp.read_text() == gen:
                        prebuilt = FeatureIndex.load_faiss(cache)
                except (OSError, RuntimeError):
                    prebuilt = None  # no cache, or an unreadable one: rebuild
                if prebuilt is None:
                    try:
                        trained = FeatureIndex.load_faiss(centroids)
                    except (OSError, RuntimeError):
                        trained = None  # train from scratch
                index = FeatureIndex(keys, feats, prebuilt, trained)
                if prebuilt is None and index.trained and not self.readonly:
                    try:
                        self.index_cache_dir.mkdir(exist_ok=True)
                        stamp.unlink(missing_ok=True)
                        index.save_faiss(cache)
                        stamp.write_text(gen)  # written last: a crash leaves no stamp
                        if trained is None:
                            index.save_centroids(centroids)
                    except (OSError, RuntimeError):
                        pass  # a cache we cannot write only costs time
                self._features = index
                self._features_generation = gen
            return self._features

    def _build_index(self) -> HashIndex:
        import numpy as np

        cur = self._conn().execute("SELECT ref_id, variant, pdq, phash, dhash, whash "
                                   "FROM hashes ORDER BY ref_id, variant")
        keys: list[int] = []
        parts: list[str] = []
        pdq, ph, dh, wh = bytearray(), bytearray(), bytearray(), bytearray()
        while True:
            rows = cur.fetchmany(10_000)
            if not rows:
                break
            for r in rows:
                keys.append(r[0])
                parts.append(r[1])
                pdq += r[2]
                ph += r[3]
                dh += r[4]
                wh += r[5]
        if not keys:
            return HashIndex.empty()

        def u64(buf: bytearray) -> np.ndarray:
            return np.frombuffer(bytes(buf), dtype=">u8").astype(np.uint64)

        return HashIndex.from_arrays(np.array(keys, np.int64), parts,
                                     u64(pdq).reshape(-1, 4), u64(ph), u64(dh), u64(wh))

    # -- writing ----------------------------------------------------------------------------
    def _require_writable(self) -> None:
        if self.readonly:
            raise ArchiveError(f"{self.path} is open read-only (the shipped default archive is "
                               "read-only: pass --archive PATH to build your own)")

    def write_batch(self, batch: list[PreparedReference]) -> tuple[int, int]:
        """Insert or update references in one transaction; returns (added, updated)."""
        self._require_writable()
        self._require_current_hashes()
        added = updated = 0
        conn = self._conn()
        now = _now()
        try:
            with self._write_lock, conn:
                for ref in batch:
                    existing = conn.execute("SELECT id FROM refs WHERE sha256=?",
                                            (ref.sha256,)).fetchone()
                    ctx = [ref.context.get(k) for k in CONTEXT_FIELDS]
                    exif = json.dumps(ref.exif, ensure_ascii=False)
                    if existing:
                        key = existing[0]
                        sets = ", ".join(f"{k}=?" for k in CONTEXT_FIELDS)
                        conn.execute(
                            f"UPDATE refs SET {sets}, image_uri=?, width=?, height=?, format=?, "
                            "exif=?, thumbnail=?, updated_at=? WHERE id=?",
                            (*ctx, ref.image_uri, ref.width, ref.height, ref.format, exif,
                             ref.thumbnail, now, key))
                        conn.execute("DELETE FROM hashes WHERE ref_id=?", (key,))
                        updated += 1
                    else:
                        cols = ", ".join(CONTEXT_FIELDS)
                        marks = ", ".join("?" * len(CONTEXT_FIELDS))
                        cur = conn.execute(
                            f"INSERT INTO refs (reference_id, sha256, {cols}, image_uri, width, "
                            f"height, format, exif, thumbnail, added_at, updated_at) "
                            f"VALUES (?, ?, {marks}, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (ref.sha256[:16], ref.sha256, *ctx, ref.image_uri, ref.width,
                             ref.height, ref.format, exif, ref.thumbnail, now, now))
                        key = cur.lastrowid
                        added += 1
                    _insert_hashes(conn, key, ref.hashes)
                    conn.execute("DELETE FROM features WHERE ref_id=?", (key,))
                    if ref.features is not None and len(ref.features):
                        pts, desc = ref.features.to_blobs()
                        conn.execute("INSERT INTO features VALUES (?, ?, ?, ?, ?)",
                                     (key, ref.features.width, ref.features.height, pts, desc))
                self._bump_generation(conn)
        except sqlite3.OperationalError as exc:
            raise ArchiveError(_explain_write_error(self.path, exc)) from None
        except sqlite3.DatabaseError as exc:
            raise ArchiveError(f"archive {self.path}: {exc}") from None
        return added, updated

    @staticmethod
    def _bump_generation(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) "
                     "WHERE key='generation'")

    def remove(self, reference_ids: Iterable[str]) -> int:
        self._require_writable()
        conn = self._conn()
        removed = 0
        try:
            with self._write_lock, conn:
                for rid in reference_ids:
                    cur = conn.execute("DELETE FROM refs WHERE reference_id=? OR sha256=?",
                                       (rid, rid))
                    removed += cur.rowcount
                self._bump_generation(conn)
        except sqlite3.OperationalError as exc:
            raise ArchiveError(_explain_write_error(self.path, exc)) from None
        return removed

    def ingest(self, manifest: str | os.PathLike[str], batch_size: int = 100,
               limits: Limits | None = None, workers: int = 1,
               progress: Any = None) -> IngestReport:
        """Add every good row of a manifest; bad rows are reported with their line numbers."""
        from .batch import prepare_references

        self._require_writable()
        self._require_current_hashes()
        report = IngestReport()
        batch: list[PreparedReference] = []
        for item in prepare_references(read_manifest(manifest), limits, workers):
            if progress is not None:
                progress(item)
            if isinstance(item, RowError):
                report.errors.append(item)
                continue
            batch.append(item)
            if len(batch) >= batch_size:
                a, u = self.write_batch(batch)
                report.added += a
                report.updated += u
                batch = []
        if batch:
            a, u = self.write_batch(batch)
            report.added += a
            report.updated += u
        return report

    def rehash(self, limits: Limits | None = None,
               on_progress: Callable[[int, int], None] | None = None,
               batch_size: int = 200) -> RehashReport:
        """Recompute every reference's hashes with this version's pipeline.

        Each reference is re-read from its image_uri when that still holds the same bytes
        (sha256), else hashed from its stored thumbnail, scaled to stand for the original.
        Batches are transactions and the pipeline stamp is written last, so an interrupted
        rehash leaves a consistent archive that a re-run finishes.
        """
        self._require_writable()
        limits = limits or Limits()
        report = RehashReport()
        rows = self._query("SELECT id, sha256, image_uri, width, height FROM refs ORDER BY id")
        conn = self._conn()
        for start in range(0, len(rows), batch_size):
            updates: list[tuple[int, list[tuple[str, HashSet]]]] = []
            for i, r in enumerate(rows[start:start + batch_size], start + 1):
                hashes = self._fresh_hashes(r, limits, report)
                if hashes is not None:
                    updates.append((r["id"], hashes))
                if on_progress is not None:
                    on_progress(i, len(rows))  # hashed; written with the batch below
            try:
                with self._write_lock, conn:
                    for key, hashes in updates:
                        conn.execute("DELETE FROM hashes WHERE ref_id=?", (key,))
                        _insert_hashes(conn, key, hashes)
                    self._bump_generation(conn)
            except sqlite3.OperationalError as exc:
                raise ArchiveError(_explain_write_error(self.path, exc)) from None
        if not report.failed:
            with self._write_lock, conn:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('hash_pipeline', ?)",
                             (str(HASH_PIPELINE),))
        return report

    def _fresh_hashes(self, row: sqlite3.Row, limits: Limits, report: RehashReport
                      ) -> list[tuple[str, HashSet]] | None:
        uri = row["image_uri"]
        if uri:
            try:
                loaded = load(uri, limits)
                if loaded.sha256 == row["sha256"]:
                    report.from_source += 1
                    return reference_hashes(loaded.image, loaded.scale)
            except ImgVerifyError:
                pass  # gone or changed: the thumbnail stands in
        thumb = self.thumbnail(row["id"])
        try:
            if thumb is None:
                raise ArchiveError("no thumbnail")
            image = load(thumb, limits).image
            scale = reduction_scale((row["width"] or image.width, row["height"] or image.height),
                                    image.size)
            report.from_thumbnail += 1
            return reference_hashes(image, scale)
        except ImgVerifyError as exc:
            report.failed.append(f"reference key {row['id']}: {exc.message}")
            return None

    def export(self) -> Iterator[dict[str, Any]]:
        """Every reference with its context and hashes, as manifest-compatible dicts."""
        for ref in self.iter_references():
            d = ref.to_dict()
            d["image"] = ref.image_uri
            for name, hs in self.hashes_of(ref.key):
                if name == "full":
                    d.update(hs.to_hex())
            yield d

    def integrity_check(self) -> list[str]:
        """Problems found (empty when healthy): SQLite's own check plus our invariants."""
        problems: list[str] = []
        for row in self._query("PRAGMA integrity_check"):
            if row[0] != "ok":
                problems.append(f"sqlite: {row[0]}")
        for row in self._query("SELECT reference_id FROM refs WHERE id NOT IN "
                               "(SELECT ref_id FROM hashes WHERE variant='full')"):
            problems.append(f"reference {row[0]} has no hashes")
        for row in self._query("SELECT DISTINCT ref_id FROM hashes WHERE ref_id NOT IN "
                               "(SELECT id FROM refs)"):
            problems.append(f"orphan hashes for ref key {row[0]}")
        for row in self._query("SELECT reference_id FROM refs WHERE thumbnail IS NULL OR "
                               "length(sha256) != 64 OR date IS NULL"):
            problems.append(f"reference {row[0]} is incomplete")
        return problems

    _summary_cache: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """What a report names as "checked against": identity, backend, size, date range and
        generation. Cheap (unlike `stats`, it builds no index) and cached per generation, so
        a scan of millions of inputs asks SQLite one small query per input."""
        generation = self.generation()
        cached = self._summary_cache
        if cached is not None and cached["generation"] == generation:
            return dict(cached)
        refs = int(self._query("SELECT COUNT(*) FROM refs")[0][0])
        dates = self._query("SELECT MIN(date), MAX(date) FROM refs")[0]
        identity = getattr(self, "archive_id", None)
        summary: dict[str, Any] = {
            "id": identity() if callable(identity) else None,
            "name": self.path.name, "backend": "sqlite", "references": refs,
            "earliest_date": dates[0], "latest_date": dates[1],
            "generation": generation, "hash_pipeline": self.hash_pipeline(),
        }
        self._summary_cache = summary
        return dict(summary)


@dataclass
class RehashReport:
    """What `Archive.rehash` did: sources re-read, thumbnails used, references it could not."""

    from_source: int = 0
    from_thumbnail: int = 0
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"from_source": self.from_source, "from_thumbnail": self.from_thumbnail,
                "failed": self.failed, "hash_pipeline": HASH_PIPELINE}


def _insert_hashes(conn: sqlite3.Connection, key: int, hashes: list[tuple[str, HashSet]]) -> None:
    conn.executemany(
        "INSERT INTO hashes VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(key, name, hs.pdq.to_bytes(32, "big"), hs.pdq_quality,
          _u64(hs.phash), _u64(hs.dhash), _u64(hs.whash)) for name, hs in hashes])


def _hashset(row: Any) -> HashSet:
    return HashSet(
        pdq=int.from_bytes(row[1], "big"), pdq_quality=int(row[2]),
        phash=int.from_bytes(row[3], "big"), dhash=int.from_bytes(row[4], "big"),
        whash=int.from_bytes(row[5], "big"),
    )


def _explain_write_error(path: Path, exc: sqlite3.OperationalError) -> str:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return f"archive {path} is read-only: check its permissions, or pass another --archive"
    if "disk is full" in text or "full" in text:
        return f"disk full while writing {path}: nothing of this batch was written; free space " \
               "and re-run (ingest is idempotent)"
    if "locked" in text:
        return f"archive {path} is locked by another writer; retry when it has finished"
    return f"cannot write archive {path}: {text}"


def default_archive_path() -> Path:
    """The shipped archive: env override, the source tree, then the installed data folder."""
    env = os.environ.get("IMGVERIFY_DEFAULT_ARCHIVE")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "reference_index" / "default.sqlite",
                  here / "data" / "default.sqlite"]
    import sys

    candidates.append(Path(sys.prefix) / "share" / "imgverify" / "default.sqlite")
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]


def resolve_archive(path: str | os.PathLike[str] | None, writable: bool = False) -> Archive:
    """--archive PATH, else $IMGVERIFY_ARCHIVE, else the shipped default (read-only)."""
    chosen = path or os.environ.get("IMGVERIFY_ARCHIVE")
    if chosen:
        if writable:
            return Archive(chosen, readonly=False, create=True)
        if not Path(chosen).exists():
            raise ArchiveError(f"no archive at {chosen}; create one with "
                               "`imgverify archive add MANIFEST --archive PATH`")
        return Archive(chosen, readonly=not os.access(chosen, os.W_OK), create=False)
    if writable:
        raise ArchiveError("the shipped default archive is read-only: pass --archive PATH "
                           "(or set IMGVERIFY_ARCHIVE) to build your own")
    return Archive.default()


__all__ = ["Archive", "Reference", "PreparedReference", "IngestReport", "hex_of",
           "resolve_archive", "default_archive_path"]
