"""The reference archive: dated past-event images with their context, stored in SQLite.

The archive is the system of record. Each reference keeps its context, its sha256, its
perceptual hashes (one row per hashed variant of the picture) and a small thumbnail for
reports. Writes are transactional per batch (a crash loses nothing committed and leaves no
half-record); readers keep working while a writer ingests (WAL). The in-memory `HashIndex`
is derived from it on demand and rebuilt when another writer has changed the archive.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from imgverify.errors import ArchiveError, ImgVerifyError
from imgverify.media.load import Limits, load, reduction_scale
from imgverify.signals.compact import LayeredLocalIndex
from imgverify.signals.features import (
    FEATURE_CACHE_FORMAT,
    FeatureIndex,
    LocalFeatures,
    LocalIndex,
)
from imgverify.signals.hashing import (
    FULL_SCALE,
    HASH_PIPELINE,
    HashSet,
    PictureHasher,
    Scale,
    hex_of,
)
from imgverify.signals.regions import picture_variants
from imgverify.store.cache import CacheKey, open_cache, publish_cache
from imgverify.store.index import CACHE_FORMAT, LINEAR_MAX, PDQ_ONLY_PART, HashIndex
from imgverify.store.local_index import (
    COMPACT_MIN_REFS,
    PendingLocalIndex,
    build_compact,
    latest_compact,
    open_compact,
    publish_compact,
)
from imgverify.store.local_index import stats as local_stats
from imgverify.store.manifest import CONTEXT_FIELDS, RowError
from imgverify.store.sightings import SIGHTING_COLUMNS, Sighting, sighting_from_row

SCHEMA_VERSION = 2
#: Versions this code opens: version 1 archives gain the sightings tables in place when opened
#: writable, and are read as they are when opened read-only (no sightings yet).
READABLE_SCHEMA_VERSIONS = (1, 2)
#: Archives with at least this many hash rows keep their index cached beside the file.
CACHE_MIN_ROWS = 20_000
THUMBNAIL_SIDE = 256
#: The key (in the sha256 column) of a hash-only reference is this prefix + its PDQ in hex:
#: deterministic, so re-importing a hash list updates instead of duplicating.
HASH_KEY_PREFIX = "pdq:"

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

#: added by schema version 2 (sightings.py); also created on first use by an older archive
_SIGHTINGS_SCHEMA = """
CREATE TABLE IF NOT EXISTS sightings (
    id INTEGER PRIMARY KEY,
    ref_id INTEGER REFERENCES refs(id) ON DELETE SET NULL,
    sha256 TEXT,
    origin TEXT NOT NULL,
    source_key TEXT NOT NULL,
    evidence TEXT NOT NULL,
    seen_at TEXT,
    url TEXT, account TEXT, text TEXT, media_url TEXT, source_sha1 TEXT,
    own_record INTEGER NOT NULL DEFAULT 0,
    match_score REAL,
    extra TEXT,
    added_at TEXT NOT NULL,
    UNIQUE (origin, source_key)
);
CREATE INDEX IF NOT EXISTS sightings_ref ON sightings(ref_id);
CREATE INDEX IF NOT EXISTS sightings_sha256 ON sightings(sha256);
CREATE TABLE IF NOT EXISTS import_state (
    job TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at TEXT NOT NULL
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

    @property
    def hash_only(self) -> bool:
        """Known only by a PDQ from a hash list: no image, thumbnail or local features."""
        return self.sha256.startswith(HASH_KEY_PREFIX)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"reference_id": self.reference_id, "sha256": self.sha256}
        d.update(self.context())
        d.update(image_uri=self.image_uri, width=self.width, height=self.height,
                 format=self.format, added_at=self.added_at, updated_at=self.updated_at,
                 hash_only=self.hash_only)
        return d


def hash_key(pdq: int) -> str:
    """The sha256-column key of the hash-only reference with this PDQ."""
    return HASH_KEY_PREFIX + hex_of(pdq, 256)


def hash_reference_id(pdq: int) -> str:
    """A short stable id for a hash-only reference (hashed: two near-identical PDQs share
    long prefixes, so a prefix of the PDQ itself would collide)."""
    import hashlib

    return "pdq-" + hashlib.sha256(hex_of(pdq, 256).encode()).hexdigest()[:16]


@dataclass
class HashOnlyReference:
    """A reference imported from a hash list: a PDQ and its context, no image."""

    pdq: int
    pdq_quality: int
    context: dict[str, str | None]
    line: int = 0

    @property
    def key(self) -> str:
        return hash_key(self.pdq)

    @property
    def hashes(self) -> list[tuple[str, HashSet]]:
        """The one stored hash row; the other families are unknown, stored as zeros and never
        compared (the row's part name says so, see index.PDQ_ONLY_PART)."""
        return [(PDQ_ONLY_PART, HashSet(pdq=self.pdq, pdq_quality=self.pdq_quality,
                                        phash=0, dhash=0, whash=0))]


@dataclass
class HashImportReport:
    """What importing a hash list did; `skipped` are rows of other signal types."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[RowError] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "skipped": [e.to_dict() for e in self.skipped],
                "errors": [e.to_dict() for e in self.errors]}


def export_row(ref: Reference, hashes: list[tuple[str, HashSet]]) -> dict[str, Any]:
    """One exported reference: a manifest row plus its full-frame hashes (PDQ alone for a
    hash-only reference; the other families then stay empty, the columns stay the same)."""
    d = ref.to_dict()
    d["image"] = ref.image_uri
    for name, hs in hashes:
        if name == "full":
            d.update(hs.to_hex())
        elif name == PDQ_ONLY_PART:
            d.update(hs.to_hex())
            d.update(phash=None, dhash=None, whash=None)
            if hs.pdq_quality < 0:  # the list gave none
                d["pdq_quality"] = None
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


def reference_hashes(rgb: Image.Image, scale: Scale = FULL_SCALE
                     ) -> list[tuple[str, HashSet]]:
    """The stored hashes of a reference: one set per part (full frame, trimmed photo)."""
    return [(name, PictureHasher(pic, scale).hashset(0)) for name, pic in picture_variants(rgb)]


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


class _ConnectionPool:
    """Every connection an `Archive` has opened, so `close()` reaches all threads' ones.

    Kept apart from the Archive (it holds no reference back), so a connection whose thread
    has ended is closed when that thread's local slot is dropped, not when the Archive is.
    A forked child neither uses nor closes its parent's connections (SQLite forbids carrying
    a connection across fork): it opens its own.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()  # a finalizer may run inside, on this thread
        self.open: dict[sqlite3.Connection, int] = {}  # connection -> pid that opened it
        self.closed = False

    def add(self, conn: sqlite3.Connection) -> bool:
        with self.lock:
            if self.closed:
                return False
            self.open[conn] = os.getpid()
            return True

    def release(self, conn: sqlite3.Connection) -> None:
        with self.lock:
            pid = self.open.pop(conn, None)
        if pid == os.getpid():
            conn.close()

    def close_all(self) -> None:
        with self.lock:
            self.closed = True
            conns, self.open = self.open, {}
        for conn, pid in conns.items():
            if pid == os.getpid():
                conn.close()


class _Slot:
    """One thread's connection; when the thread ends, its slot goes and the finalizer closes
    the connection (a thread-per-request server would otherwise pile them up)."""

    __slots__ = ("conn", "pid", "__weakref__")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()


def _sqlite_header(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(100)
    except OSError:
        return b""


def _is_wal_file(path: Path) -> bool:
    """Bytes 18-19 of the SQLite header are 2, 2 in WAL mode and 1, 1 in rollback mode."""
    header = _sqlite_header(path)
    return len(header) >= 20 and header[18] == 2


class Archive:
    """An open reference archive. Thread-safe: one SQLite connection per thread."""

    backend = "sqlite"
    #: from this many references with local features the compact index is used (an
    #: instance may lower it, e.g. to exercise that index on a small archive)
    compact_min_refs = COMPACT_MIN_REFS

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False,
                 create: bool = True) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._local = threading.local()
        self._pool = _ConnectionPool()
        self._write_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._index: HashIndex | None = None
        self._index_generation: str | None = None
        self._features: LocalIndex | None = None
        self._features_generation: str | None = None
        if not self.path.exists():
            if readonly or not create:
                raise ArchiveError(f"no archive at {self.path}; create one with "
                                   "`imgverify archive add MANIFEST --archive PATH`")
            if not self.path.parent.exists():
                raise ArchiveError(f"folder {self.path.parent} does not exist")
        try:
            conn = self._conn()
            if not readonly:
                self._init_schema(conn)
            else:
                self._check_schema(conn)
        except BaseException:
            self.close()  # a refused archive leaves no handle open
            raise

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], readonly: bool = False) -> Any:
        """The archive at `path` (SQLite) or at a ``postgresql://`` URL (shared)."""
        from imgverify.store.postgres import PostgresArchive, is_postgres_url

        if is_postgres_url(path):
            return PostgresArchive(str(path), readonly=readonly)
        return cls(path, readonly=readonly)

    @property
    def location(self) -> str:
        return str(self.path)

    @classmethod
    def default(cls) -> Archive:
        """The shipped reference archive, read-only; a new handle the caller closes."""
        return cls(default_archive_path(), readonly=True)

    @property
    def _immutable(self) -> bool:
        # The shipped file never changes while imgverify runs, so SQLite may skip locking and
        # journal checks: it then opens from any read-only install. A user archive (or an
        # $IMGVERIFY_DEFAULT_ARCHIVE override) may be written by another process meanwhile,
        # and immutable reads of a changing file can return wrong rows: never for those.
        return self.readonly and _is_shipped(self.path)

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            if self.readonly:
                flags = "mode=ro&immutable=1" if self._immutable else "mode=ro"
                uri = f"file:{_uri_path(self.path)}?{flags}"
                conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            else:
                conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.row_factory = sqlite3.Row
            return conn
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise ArchiveError(self._explain_open_error(exc)) from None

    def _explain_open_error(self, exc: sqlite3.DatabaseError) -> str:
        no_dir = getattr(exc, "sqlite_errorname", "") == "SQLITE_READONLY_DIRECTORY"
        if self.readonly and (no_dir or ("readonly" in str(exc) and _is_wal_file(self.path))):
            return (f"cannot read archive {self.path}: it is in WAL mode, and SQLite must create "
                    f"{self.path.name}-wal and -shm beside it even to read, but its folder is "
                    "not writable. Open it once from a writable folder, or switch it to "
                    f"rollback-journal mode: sqlite3 {self.path} 'PRAGMA journal_mode=DELETE' "
                    "(no other process may have it open while you do)")
        if not self.readonly and isinstance(exc, sqlite3.OperationalError) \
                and "readonly" in str(exc):  # opening for writing writes (schema, WAL switch)
            return _explain_write_error(self.path, exc)
        return f"cannot open archive {self.path}: {exc}"

    def _conn(self) -> sqlite3.Connection:
        slot = getattr(self._local, "slot", None)
        if slot is not None and slot.pid == os.getpid() and not self._pool.closed:
            conn: sqlite3.Connection = slot.conn
            return conn
        if self._pool.closed:
            raise ArchiveError(f"archive {self.path} is closed")
        conn = self._connect()
        if not self._pool.add(conn):  # closed while this thread was connecting
            conn.close()
            raise ArchiveError(f"archive {self.path} is closed")
        slot = _Slot(conn)
        # not at interpreter exit: a forked worker must not close its parent's connection
        weakref.finalize(slot, self._pool.release, conn).atexit = False
        self._local.slot = slot
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        try:
            # an archive that has everything is only read: opening it to check an image must
            # not wait for (or block) a writer that is in the middle of a batch
            meta = {r[0]: r[1] for r in conn.execute(
                "SELECT key, value FROM meta WHERE key IN ('schema_version', 'generation', "
                "'archive_id', 'change_token', 'hash_pipeline')")}
            if len(meta) == 5 and meta["schema_version"] == str(SCHEMA_VERSION):
                self._check_schema(conn)
                return
        except sqlite3.DatabaseError:
            pass  # a new or older archive: create what is missing below
        try:
            with self._write_lock, conn:
                conn.executescript(_SCHEMA + _SIGHTINGS_SCHEMA)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
                # in-place migration: version 1 lacked only the tables created above
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version' AND value='1'",
                             (str(SCHEMA_VERSION),))
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
                # identity: caches derived from the archive are keyed by it (cache.py)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('archive_id', ?)",
                             (uuid.uuid4().hex,))
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('change_token', ?)",
                             (uuid.uuid4().hex,))
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
        if row is None or int(row[0]) not in READABLE_SCHEMA_VERSIONS:
            raise ArchiveError(f"{self.path} has an unsupported schema version"
                               + (f" ({row[0]}: made by a newer imgverify)"
                                  if row is not None and str(row[0]).isdigit()
                                  and int(row[0]) > SCHEMA_VERSION else ""))

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
        """Close every thread's connection; using the archive afterwards is an ArchiveError.

        Idempotent. A query another thread is running meanwhile fails with that error too.
        """
        self._pool.close_all()

    @property
    def closed(self) -> bool:
        return self._pool.closed

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------------------
    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self._conn().execute(sql, tuple(params)).fetchall()
        except sqlite3.DatabaseError as exc:
            if self._pool.closed:
                raise ArchiveError(f"archive {self.path} is closed") from None
            raise ArchiveError(f"archive {self.path}: {exc}") from None

    def generation(self) -> str:
        rows = self._query("SELECT value FROM meta WHERE key='generation'")
        return rows[0][0] if rows else "0"

    def archive_id(self) -> str | None:
        """The random identity written when the archive was created (None only for an
        archive from before identities that is opened read-only)."""
        rows = self._query("SELECT value FROM meta WHERE key='archive_id'")
        return rows[0][0] if rows else None

    def cache_key(self) -> CacheKey | None:
        """What every derived cache is keyed by, read in one statement (one snapshot);
        None when the archive has no identity, and then nothing is cached or loaded."""
        rows = self._query("SELECT key, value FROM meta WHERE key IN "
                           "('archive_id', 'generation', 'change_token', 'hash_pipeline')")
        meta = {r[0]: r[1] for r in rows}
        if "archive_id" not in meta or "change_token" not in meta:
            return None
        return CacheKey(archive_id=meta["archive_id"], generation=meta.get("generation", "0"),
                        change_token=meta["change_token"],
                        hash_pipeline=int(meta.get("hash_pipeline", HASH_PIPELINE)))

    def _state(self) -> tuple[str, CacheKey | None]:
        """(generation, cache key): what an in-memory index must be rebuilt for."""
        key = self.cache_key()
        if key is None:
            return self.generation(), None
        return f"{key.generation}/{key.change_token}", key

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
        hash_only = int(self._query("SELECT COUNT(*) FROM refs WHERE sha256 LIKE ?",
                                    (HASH_KEY_PREFIX + "%",))[0][0])
        return {
            "archive": str(self.path), "references": refs, "hash_rows": hash_rows,
            "hash_only_references": hash_only,
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

        Large archives keep a cache beside the file (ARCHIVE.index/), memory-mapped on open;
        it is keyed by the archive's identity, generation and change token (cache.py), so a
        cache of another archive or of another state of this one is never read.
        """
        state, key = self._state()
        with self._index_lock:
            if self._index is None or state != self._index_generation:
                self._require_current_hashes()
                root = self.index_cache_dir
                index = None
                found = open_cache(root, "index", CACHE_FORMAT, key) if key else None
                if found is not None:
                    index = HashIndex.load(*found)
                if index is None:
                    index = self._build_index()
                    if key is not None and len(index) >= CACHE_MIN_ROWS and not self.readonly:
                        mih = len(index) > LINEAR_MAX
                        built = index
                        publish_cache(root, "index", CACHE_FORMAT, key,
                                      lambda folder: built.save(folder, with_mih=mih))
                self._index = index
                self._index_generation = state
            return self._index

    def feature_index(self) -> LocalIndex:
        """Local features of every reference (for crops, insets, screenshots), cached.

        Large archives keep the trained faiss index in ARCHIVE.index/ (keyed like the hash
        index), so each process, CLI run or scan worker skips the training; after the
        archive changes, its centroids (kept per archive identity) are reused and only the
        descriptors are assigned again.
        """
        state, key = self._state()
        with self._index_lock:
            pending = getattr(self._features, "pending", False)
            if (self._features is None or state != self._features_generation
                    or pending):  # built elsewhere since?
                # pending at an unchanged state: it was large and still is; counting again
                # (a scan of the features table, about a second at ten million rows) on
                # every check of a never-indexed archive would say the same
                if (pending and state == self._features_generation) \
                        or self._feature_count() >= self.compact_min_refs:
                    self._features = self._compact_index(key)
                    self._features_generation = state
                    return self._features
                keys: list[int] = []
                feats: list[LocalFeatures] = []
                cur = self._conn().execute("SELECT ref_id, width, height, points, descriptors "
                                           "FROM features ORDER BY ref_id")
                for r in cur:
                    keys.append(r[0])
                    feats.append(LocalFeatures.from_blobs(r[3], r[4], r[1], r[2]))
                root = self.index_cache_dir
                prebuilt = trained = None
                if key is not None:
                    found = open_cache(root, "features", FEATURE_CACHE_FORMAT, key)
                    prebuilt = _read_faiss(found[0] / "features.faiss") if found else None
                    # centroids depend only on which archive they were trained for
                    ckey = CacheKey(key.archive_id, "", "", key.hash_pipeline)
                    centroids = open_cache(root, "centroids", FEATURE_CACHE_FORMAT, ckey)
                    if prebuilt is None and centroids is not None:
                        trained = _read_faiss(centroids[0] / "centroids.faiss")
                index = FeatureIndex(keys, feats, prebuilt, trained)
                if (key is not None and prebuilt is None and index.trained
                        and not self.readonly):
                    built = index

                    def write_index(folder: Path) -> None:
                        built.save_faiss(folder / "features.faiss")

                    def write_centroids(folder: Path) -> None:
                        built.save_centroids(folder / "centroids.faiss")

                    publish_cache(root, "features", FEATURE_CACHE_FORMAT, key, write_index)
                    if trained is None:
                        publish_cache(root, "centroids", FEATURE_CACHE_FORMAT, ckey,
                                      write_centroids)
                self._features = index
                self._features_generation = state
            return self._features

    def _feature_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM features")[0][0])

    def features_of(self, keys: Iterable[int]) -> dict[int, LocalFeatures]:
        """Stored local features of these references (the compact index reads back only the
        few it verifies)."""
        wanted = sorted({int(k) for k in keys})
        out: dict[int, LocalFeatures] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._query("SELECT ref_id, width, height, points, descriptors FROM "
                                 f"features WHERE ref_id IN ({marks})", chunk):
                out[int(r[0])] = LocalFeatures.from_blobs(r[3], r[4], r[1], r[2])
        return out

    def _descriptor_stream(self, after: int = -1) -> Iterator[tuple[int, Any]]:
        import numpy as np

        cur = self._conn().execute("SELECT ref_id, descriptors FROM features WHERE ref_id > ? "
                                   "ORDER BY ref_id", (after,))
        while True:
            rows = cur.fetchmany(5_000)
            if not rows:
                return
            for r in rows:
                yield int(r[0]), np.frombuffer(r[1], dtype=np.uint8).reshape(-1, 32)

    def _compact_index(self, key: CacheKey | None) -> Any:
        """The compact local index for the current state: the cache built for it; else the
        last one built for this archive plus an exact delta of the references added since;
        else (an archive never indexed) a `PendingLocalIndex`: it is never built on a
        query."""
        root = self.index_cache_dir
        if key is not None:
            exact = open_compact(root, key, self.features_of)
            if exact is not None:
                return exact
            older = latest_compact(root, key.archive_id, key.hash_pipeline, self.features_of)
            if older is not None:
                base = older[0]
                newest = int(base.ref_keys.max()) if base.references else -1
                added = self.features_of(self._keys_after(newest))
                keys = sorted(added)
                delta = FeatureIndex(keys, [added[k] for k in keys])
                return LayeredLocalIndex(base, delta, set())
        return PendingLocalIndex()

    def _keys_after(self, newest: int) -> list[int]:
        return [int(r[0]) for r in self._query(
            "SELECT ref_id FROM features WHERE ref_id > ? ORDER BY ref_id", (newest,))]

    def _build_compact(self, key: CacheKey | None,
                       progress: Callable[[int], None] | None = None) -> Any:
        index = build_compact(self._descriptor_stream(), self.features_of, progress)
        if key is not None and not self.readonly:
            publish_compact(self.index_cache_dir, key, index)
        return index

    def build_local_index(self, progress: Callable[[int], None] | None = None
                          ) -> dict[str, Any]:
        """Build (and cache) the local-feature index for the archive as it is now, so no
        query pays for it. Small archives need none ahead of time: their exact index is
        built in memory when first used, cheaply."""
        state, key = self._state()
        count = self._feature_count()
        with self._index_lock:
            if count < self.compact_min_refs:
                self._features = None
                index: Any = None
            else:
                index = self._build_compact(key, progress)
                self._features = index
                self._features_generation = state
        if index is None:
            index = self.feature_index()
        return {"references_with_features": count, **local_stats(index)}

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

    def write_hashes(self, batch: list[HashOnlyReference]) -> tuple[int, int, int]:
        """Insert or update hash-only references in one transaction, keyed by their PDQ;
        returns (added, updated, unchanged). Nothing changes when nothing differs, so
        re-importing the same list leaves the archive (and its index) as it was."""
        self._require_writable()
        added = updated = unchanged = 0
        conn = self._conn()
        now = _now()
        cols = ", ".join(CONTEXT_FIELDS)
        try:
            with self._write_lock, conn:
                for ref in batch:
                    ctx = [ref.context.get(k) for k in CONTEXT_FIELDS]
                    row = conn.execute(f"SELECT id, {cols} FROM refs WHERE sha256=?",
                                       (ref.key,)).fetchone()
                    if row is not None:
                        key = row[0]
                        quality = conn.execute(
                            "SELECT pdq_quality FROM hashes WHERE ref_id=? AND variant=?",
                            (key, PDQ_ONLY_PART)).fetchone()
                        if list(row[1:]) == ctx and quality is not None \
                                and quality[0] == ref.pdq_quality:
                            unchanged += 1
                            continue
                        sets = ", ".join(f"{k}=?" for k in CONTEXT_FIELDS)
                        conn.execute(f"UPDATE refs SET {sets}, updated_at=? WHERE id=?",
                                     (*ctx, now, key))
                        conn.execute("DELETE FROM hashes WHERE ref_id=?", (key,))
                        updated += 1
                    else:
                        marks = ", ".join("?" * len(CONTEXT_FIELDS))
                        key = conn.execute(
                            f"INSERT INTO refs (reference_id, sha256, {cols}, added_at, "
                            f"updated_at) VALUES (?, ?, {marks}, ?, ?)",
                            (hash_reference_id(ref.pdq), ref.key, *ctx, now, now)).lastrowid
                        added += 1
                    _insert_hashes(conn, key, ref.hashes)
                if added or updated:
                    self._bump_generation(conn)
        except sqlite3.OperationalError as exc:
            raise ArchiveError(_explain_write_error(self.path, exc)) from None
        except sqlite3.DatabaseError as exc:
            raise ArchiveError(f"archive {self.path}: {exc}") from None
        return added, updated, unchanged

    @staticmethod
    def _bump_generation(conn: sqlite3.Connection) -> None:
        """Every change moves the counter and draws a new random token: two archives (a
        rebuilt one, a diverged copy) can reach the same count, never the same token."""
        conn.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) "
                     "WHERE key='generation'")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('change_token', ?)",
                     (uuid.uuid4().hex,))

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
        """Deprecated: use `imgverify.ingest.ingest_manifest(archive, manifest, ...)`.

        Reading, decoding and hashing images is not storage's job (the store sits below
        ingest); kept one release for callers of 0.1.
        """
        import warnings

        from imgverify.ingest import ingest_manifest  # the one upward import: a shim

        warnings.warn("Archive.ingest is deprecated: use imgverify.ingest.ingest_manifest",
                      DeprecationWarning, stacklevel=2)
        return ingest_manifest(self, manifest, batch_size=batch_size, limits=limits,
                               workers=workers, progress=progress)

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
        # hash-only references have no image to re-read: their PDQ is kept as imported
        rows = self._query("SELECT id, sha256, image_uri, width, height FROM refs "
                           "WHERE sha256 NOT LIKE ? ORDER BY id", (HASH_KEY_PREFIX + "%",))
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
            yield export_row(ref, self.hashes_of(ref.key))

    def integrity_check(self) -> list[str]:
        """Problems found (empty when healthy): SQLite's own check plus our invariants."""
        problems: list[str] = []
        for row in self._query("PRAGMA integrity_check"):
            if row[0] != "ok":
                problems.append(f"sqlite: {row[0]}")
        for row in self._query(_NO_HASHES.replace("%s", "?"),
                               (HASH_KEY_PREFIX + "%", PDQ_ONLY_PART)):
            problems.append(f"reference {row[0]} has no hashes")
        for row in self._query("SELECT DISTINCT ref_id FROM hashes WHERE ref_id NOT IN "
                               "(SELECT id FROM refs)"):
            problems.append(f"orphan hashes for ref key {row[0]}")
        for row in self._query(_INCOMPLETE.replace("%s", "?"), (HASH_KEY_PREFIX + "%",) * 2):
            problems.append(f"reference {row[0]} is incomplete")
        return problems

    # -- sightings (see imgverify.sightings) -------------------------------------------------
    def has_sightings_table(self) -> bool:
        """False for a version-1 archive opened read-only (it has no sightings yet)."""
        return bool(self._query("SELECT 1 FROM sqlite_master WHERE type='table' "
                                "AND name='sightings'"))

    def _ensure_sightings_schema(self) -> None:
        """Create the sightings tables (and stamp schema 2) on first use, whichever way the
        archive was opened: a version-1 archive is migrated in place by its first sighting."""
        if getattr(self, "_sightings_ready", False):
            return
        conn = self._conn()
        try:
            with self._write_lock, conn:
                conn.executescript(_SIGHTINGS_SCHEMA)
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version' AND value='1'",
                             (str(SCHEMA_VERSION),))
        except sqlite3.OperationalError as exc:
            raise ArchiveError(_explain_write_error(self.path, exc)) from None
        self._sightings_ready = True


    def add_sightings(self, sightings: Iterable[Sighting]) -> int:
        """Store sightings in one transaction; one already known by (origin, source_key) is
        updated in place (its link may have changed), never duplicated. Returns how many
        were new."""
        self._require_writable()
        self._ensure_sightings_schema()
        conn = self._conn()
        now = _now()
        new = 0
        try:
            with self._write_lock, conn:
                for s in sightings:
                    values = (s.ref_key, s.sha256, s.evidence, s.seen_at, s.url, s.account,
                              s.text, s.media_url, s.source_sha1, int(s.own_record),
                              s.match_score, json.dumps(s.extra, ensure_ascii=False)
                              if s.extra else None)
                    cur = conn.execute(
                        "UPDATE sightings SET ref_id=?, sha256=?, evidence=?, seen_at=?, url=?, "
                        "account=?, text=?, media_url=?, source_sha1=?, own_record=?, "
                        "match_score=?, extra=? WHERE origin=? AND source_key=?",
                        (*values, s.origin, s.source_key))
                    if cur.rowcount == 0:
                        conn.execute(
                            f"INSERT INTO sightings ({SIGHTING_COLUMNS}) VALUES "
                            "(NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (s.ref_key, s.sha256, s.origin, s.source_key, *values[2:], now))
                        new += 1
        except sqlite3.OperationalError as exc:
            raise ArchiveError(_explain_write_error(self.path, exc)) from None
        except sqlite3.DatabaseError as exc:
            raise ArchiveError(f"archive {self.path}: {exc}") from None
        return new

    def find_sighting(self, origin: str, source_key: str) -> Sighting | None:
        if not self.has_sightings_table():
            return None
        rows = self._query(f"SELECT {SIGHTING_COLUMNS} FROM sightings WHERE origin=? "
                           "AND source_key=?", (origin, source_key))
        return sighting_from_row(rows[0]) if rows else None

    def sightings_for(self, ref_keys: Iterable[int]) -> dict[int, list[Sighting]]:
        """Sightings linked to each reference, earliest first."""
        keys = list(ref_keys)
        out: dict[int, list[Sighting]] = {}
        if not keys or not self.has_sightings_table():
            return out
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._query(f"SELECT {SIGHTING_COLUMNS} FROM sightings WHERE ref_id "
                                   f"IN ({marks}) ORDER BY seen_at IS NULL, seen_at, id", chunk):
                out.setdefault(row["ref_id"], []).append(sighting_from_row(row))
        return out

    def iter_sightings(self, origin: str | None = None) -> Iterator[Sighting]:
        if not self.has_sightings_table():
            return
        sql = f"SELECT {SIGHTING_COLUMNS} FROM sightings"
        params: tuple[Any, ...] = ()
        if origin is not None:
            sql += " WHERE origin=?"
            params = (origin,)
        for row in self._query(sql + " ORDER BY seen_at IS NULL, seen_at, id", params):
            yield sighting_from_row(row)

    def import_state(self, job: str) -> dict[str, Any] | None:
        """Where an interrupted import stopped (continuation tokens), or None."""
        if not self.has_sightings_table():
            return None
        rows = self._query("SELECT state FROM import_state WHERE job=?", (job,))
        return json.loads(rows[0][0]) if rows else None

    def save_import_state(self, job: str, state: dict[str, Any] | None) -> None:
        """Remember (or, with None, forget) an import's position; written after each page
        is committed, so a resumed import repeats at most one page."""
        self._require_writable()
        self._ensure_sightings_schema()
        conn = self._conn()
        try:
            with self._write_lock, conn:
                if state is None:
                    conn.execute("DELETE FROM import_state WHERE job=?", (job,))
                else:
                    conn.execute("INSERT OR REPLACE INTO import_state VALUES (?, ?, ?)",
                                 (job, json.dumps(state), _now()))
        except sqlite3.OperationalError as exc:
            raise ArchiveError(_explain_write_error(self.path, exc)) from None

    def has_unverified_sightings(self) -> bool:
        """Whether any sighting is an unverified record or a desk check (what retroactive
        matching looks for)."""
        return self.has_sightings_table() and bool(self._query(
            "SELECT 1 FROM sightings WHERE own_record=1 OR origin='check' LIMIT 1"))

    def sighting_stats(self) -> dict[str, Any]:
        """References by source and sightings by origin, for `archive stats`."""
        by_source = {(r[0] or "(no source)"): int(r[1]) for r in self._query(
            "SELECT source, COUNT(*) FROM refs GROUP BY source ORDER BY COUNT(*) DESC, source")}
        out: dict[str, Any] = {"references_by_source": by_source, "sightings": 0,
                               "sightings_by_origin": {}, "unverified_records": 0}
        if not self.has_sightings_table():
            return out
        out["sightings"] = int(self._query("SELECT COUNT(*) FROM sightings")[0][0])
        out["sightings_by_origin"] = {r[0]: {"sightings": int(r[1]), "linked_to_references":
                                             int(r[2]), "own_records": int(r[3])}
                                      for r in self._query(
            "SELECT origin, COUNT(*), SUM(ref_id IS NOT NULL AND own_record=0), "
            "SUM(own_record) FROM sightings GROUP BY origin ORDER BY origin")}
        out["unverified_records"] = int(self._query(
            "SELECT COUNT(DISTINCT ref_id) FROM sightings WHERE own_record=1 AND ref_id IS NOT "
            "NULL")[0][0])
        return out

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
            "name": self.path.name, "backend": self.backend, "references": refs,
            "earliest_date": dates[0], "latest_date": dates[1],
            "generation": generation, "hash_pipeline": self.hash_pipeline(),
        }
        self._summary_cache = summary
        return dict(summary)


#: An image reference needs its full-frame hash row, a hash-only one its PDQ row.
_NO_HASHES = ("SELECT reference_id FROM refs r WHERE NOT EXISTS (SELECT 1 FROM hashes h "
              "WHERE h.ref_id = r.id AND h.variant = CASE WHEN r.sha256 LIKE %s THEN %s "
              "ELSE 'full' END)")
#: Image references need a thumbnail and a sha256; hash-only ones a key of prefix + 64 hex.
_INCOMPLETE = ("SELECT reference_id FROM refs WHERE date IS NULL OR (sha256 NOT LIKE %s AND "
               "(thumbnail IS NULL OR length(sha256) != 64)) OR (sha256 LIKE %s AND "
               f"length(sha256) != {len(HASH_KEY_PREFIX) + 64})")


@dataclass
class RehashReport:
    """What `Archive.rehash` did: sources re-read, thumbnails used, references it could not."""

    from_source: int = 0
    from_thumbnail: int = 0
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"from_source": self.from_source, "from_thumbnail": self.from_thumbnail,
                "failed": self.failed, "hash_pipeline": HASH_PIPELINE}


def _read_faiss(path: Path) -> Any:
    try:
        return FeatureIndex.load_faiss(path)
    except (OSError, RuntimeError):
        return None  # unreadable: rebuilt


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


def _uri_path(path: Path) -> str:
    """An absolute path quoted for a file: URI ('?' or '#' in a folder name would cut it)."""
    from urllib.parse import quote

    return quote(path.resolve().as_posix(), safe="/")


def _shipped_candidates() -> list[Path]:
    import sys

    here = Path(__file__).resolve().parents[1]  # the imgverify package folder
    return [here.parent / "reference_index" / "default.sqlite",
            here / "data" / "default.sqlite",
            Path(sys.prefix) / "share" / "imgverify" / "default.sqlite"]


def default_archive_path() -> Path:
    """The shipped archive: env override, the source tree, then the installed data folder."""
    env = os.environ.get("IMGVERIFY_DEFAULT_ARCHIVE")
    if env:
        return Path(env)
    candidates = _shipped_candidates()
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]


_shared_defaults: dict[Path, Archive] = {}
_shared_defaults_lock = threading.Lock()


def shared_default_archive() -> Archive:
    """One read-only default archive per process (per default path), for `check()` without
    an archive: opening one per call would leave a handle behind each time. Callers must not
    close it; it is opened lazily, once, however many threads ask at the same moment."""
    path = default_archive_path()
    with _shared_defaults_lock:
        archive = _shared_defaults.get(path)
        if archive is None or archive.closed:
            archive = Archive(path, readonly=True)
            _shared_defaults[path] = archive
        return archive


def resolve_archive(path: str | os.PathLike[str] | None, writable: bool = False) -> Archive:
    """--archive PATH, else $IMGVERIFY_ARCHIVE, else the shipped default (read-only)."""
    chosen = path or os.environ.get("IMGVERIFY_ARCHIVE")
    from imgverify.store.postgres import PostgresArchive, is_postgres_url

    if is_postgres_url(chosen):
        return PostgresArchive(str(chosen), readonly=False, create=writable)  # type: ignore[return-value]
    if chosen:
        if writable:
            if _is_shipped(Path(chosen)):
                raise ArchiveError(f"{chosen} is the shipped default archive: rebuild it with "
                                   "`python reference_index/build.py`, or pass another "
                                   "--archive PATH to build your own")
            return Archive(chosen, readonly=False, create=True)
        if not Path(chosen).exists():
            raise ArchiveError(f"no archive at {chosen}; create one with "
                               "`imgverify archive add MANIFEST --archive PATH`")
        if _is_shipped(Path(chosen)):
            return Archive(chosen, readonly=True)
        return Archive(chosen, readonly=not os.access(chosen, os.W_OK), create=False)
    if writable:
        raise ArchiveError("the shipped default archive is read-only: pass --archive PATH "
                           "(or set IMGVERIFY_ARCHIVE) to build your own")
    return Archive.default()


def _is_shipped(path: Path) -> bool:
    """The shipped file, even named by --archive: it is opened read-only, so a checkout or
    install that happens to be writable is not switched to WAL mode by a mere check."""
    try:
        return any(c.exists() and path.samefile(c) for c in _shipped_candidates())
    except OSError:
        return False


__all__ = ["Archive", "Reference", "PreparedReference", "IngestReport", "hex_of",
           "HashOnlyReference", "HashImportReport", "hash_key", "hash_reference_id",
           "export_row",
           "resolve_archive", "default_archive_path"]
