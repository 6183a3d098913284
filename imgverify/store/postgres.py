"""A reference archive shared by a whole desk, on PostgreSQL (psycopg 3).

Selected by URL: ``postgresql://user@host:5432/db`` (optionally ``?schema=NAME`` to keep
several archives in one database). It answers the same calls as the SQLite archive
(`store.protocol.ArchiveStore`), so the checker, ingest and reports do not know which one
they use.

What sharing needs and how it is met:
- Many writers at once, no duplicates: references are keyed by sha256 (``INSERT ... ON
  CONFLICT``); each batch is one transaction that first takes the generation row's lock, so
  batches commit one after another and every change is logged under its batch's generation.
- Readers see a consistent snapshot: an index is built inside one REPEATABLE READ, read-only
  transaction that reads the generation and the rows together.
- Matchers follow changes without a full rebuild and without pausing queries: the `changes`
  table records which reference keys each generation touched; `index()` polls the
  generation (one indexed read) and, when it moved, reads only the touched keys' rows into
  the small delta layer of a `LayeredIndex`. Queries already running keep the index object
  they started with; a new object is swapped in whole. When the delta outgrows a linear
  scan it is folded into the base in a background thread while queries go on.
- Schema migrations are versioned (`imgverify_migrations`) and applied under an advisory
  lock, so two processes opening a new database do not race.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from imgverify.errors import ArchiveError
from imgverify.media.load import Limits
from imgverify.signals.compact import CompactFeatureIndex, LayeredLocalIndex
from imgverify.signals.features import FeatureIndex, LocalFeatures, LocalIndex, empty_copy
from imgverify.signals.hashing import HASH_PIPELINE, HashSet
from imgverify.store.cache import CacheKey, user_cache_dir
from imgverify.store.index import PDQ_ONLY_PART, HashIndex
from imgverify.store.layered import LayeredIndex
from imgverify.store.local_index import (
    COMPACT_MIN_REFS,
    PendingLocalIndex,
    build_compact,
    latest_compact,
    publish_compact,
)
from imgverify.store.local_index import stats as local_stats
from imgverify.store.manifest import CONTEXT_FIELDS
from imgverify.store.sightings import SIGHTING_COLUMNS, Sighting, sighting_from_row
from imgverify.store.sqlite import (
    _INCOMPLETE,
    _NO_HASHES,
    HASH_KEY_PREFIX,
    HashOnlyReference,
    IngestReport,
    PreparedReference,
    Reference,
    RehashReport,
    export_row,
    hash_reference_id,
)

BACKEND = "postgresql"

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE refs (
    id BIGSERIAL PRIMARY KEY,
    reference_id TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL UNIQUE,
    date TEXT NOT NULL,
    event TEXT, place TEXT, caption TEXT, source TEXT, source_url TEXT,
    credit TEXT, license TEXT, published TEXT,
    image_uri TEXT, width INTEGER, height INTEGER, format TEXT,
    exif TEXT, thumbnail BYTEA,
    added_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE INDEX refs_date ON refs(date);
CREATE TABLE hashes (
    ref_id BIGINT NOT NULL REFERENCES refs(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,
    pdq BYTEA NOT NULL, pdq_quality INTEGER NOT NULL,
    phash BYTEA NOT NULL, dhash BYTEA NOT NULL, whash BYTEA NOT NULL,
    PRIMARY KEY (ref_id, variant)
);
CREATE TABLE features (
    ref_id BIGINT PRIMARY KEY REFERENCES refs(id) ON DELETE CASCADE,
    width INTEGER NOT NULL, height INTEGER NOT NULL,
    points BYTEA NOT NULL, descriptors BYTEA NOT NULL
);
CREATE TABLE changes (
    seq BIGSERIAL PRIMARY KEY,
    generation BIGINT NOT NULL,
    ref_id BIGINT NOT NULL
);
CREATE INDEX changes_generation ON changes(generation);
"""),
    (2, """
CREATE TABLE sightings (
    id BIGSERIAL PRIMARY KEY,
    ref_id BIGINT REFERENCES refs(id) ON DELETE SET NULL,
    sha256 TEXT,
    origin TEXT NOT NULL,
    source_key TEXT NOT NULL,
    evidence TEXT NOT NULL,
    seen_at TEXT,
    url TEXT, account TEXT, text TEXT, media_url TEXT, source_sha1 TEXT,
    own_record BOOLEAN NOT NULL DEFAULT FALSE,
    match_score DOUBLE PRECISION,
    extra TEXT,
    added_at TEXT NOT NULL,
    UNIQUE (origin, source_key)
);
CREATE INDEX sightings_ref ON sightings(ref_id);
CREATE INDEX sightings_sha256 ON sightings(sha256);
CREATE TABLE import_state (job TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at TEXT NOT NULL);
"""),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ArchiveError("a PostgreSQL archive needs the postgres extra: "
                           "pip install 'imgverify[postgres]'") from None
    return psycopg


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password, for reports and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def _split_schema(url: str) -> tuple[str, str | None]:
    """(conninfo URL, schema): `schema` is ours, not libpq's, so it is taken off the URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    if schema is not None and not schema.replace("_", "").isalnum():
        raise ArchiveError(f"schema name {schema!r} must be letters, digits and underscores")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


_COLUMNS = ("id, reference_id, sha256, date, event, place, caption, source, source_url, "
            "credit, license, published, image_uri, width, height, format, exif, "
            "added_at, updated_at")


def _reference(row: tuple[Any, ...]) -> Reference:
    (key, rid, sha, date, event, place, caption, source, source_url, credit, license_,
     published, image_uri, width, height, fmt, exif, added_at, updated_at) = row
    return Reference(key=int(key), reference_id=rid, sha256=sha, date=date, event=event,
                     place=place, caption=caption, source=source, source_url=source_url,
                     credit=credit, license=license_, published=published,
                     image_uri=image_uri, width=width, height=height, format=fmt,
                     exif=json.loads(exif) if exif else None, added_at=added_at,
                     updated_at=updated_at)


def _index_from_rows(rows: Iterable[tuple[Any, ...]]) -> HashIndex:
    keys: list[int] = []
    parts: list[str] = []
    pdq, ph, dh, wh = bytearray(), bytearray(), bytearray(), bytearray()
    for key, variant, p, a, b, c in rows:
        keys.append(int(key))
        parts.append(variant)
        pdq += p
        ph += a
        dh += b
        wh += c
    if not keys:
        return HashIndex.empty()

    def u64(buf: bytearray) -> np.ndarray:
        return np.frombuffer(bytes(buf), dtype=">u8").astype(np.uint64)

    return HashIndex.from_arrays(np.array(keys, np.int64), parts, u64(pdq).reshape(-1, 4),
                                 u64(ph), u64(dh), u64(wh))


class PostgresArchive:
    """An open archive in PostgreSQL. Thread-safe: one connection per thread, all tracked."""

    backend = BACKEND
    #: from this many references with local features the compact index is used (an
    #: instance may lower it, e.g. to exercise that index on a small archive)
    compact_min_refs = COMPACT_MIN_REFS

    def __init__(self, url: str, readonly: bool = False, create: bool = True) -> None:
        self.path = url  # what worker processes reopen (may hold a password: never print it)
        self.location = redact(url)
        self.readonly = readonly
        self._conninfo, self._schema = _split_schema(url)
        self._local = threading.local()
        self._connections: list[Any] = []
        self._conn_lock = threading.Lock()
        self._closed = False
        self._index_lock = threading.Lock()
        self._index: LayeredIndex | None = None
        self._index_generation = -1
        self._compacting = False
        self._features: LocalIndex | None = None
        self._compact_base: tuple[CompactFeatureIndex, int] | None = None
        self._features_generation = -1
        self._migrate(create and not readonly)

    @classmethod
    def open(cls, url: str, readonly: bool = False) -> PostgresArchive:
        return cls(url, readonly=readonly)

    # -- connections --------------------------------------------------------------------------
    def _connect(self) -> Any:
        psycopg = _psycopg()
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
            if self._schema:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"'
                             if not self.readonly else "SELECT 1")
                conn.execute(f'SET search_path TO "{self._schema}"')
            if self.readonly:
                conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            raise ArchiveError(f"cannot connect to archive {self.location}: "
                               f"{str(exc).strip().splitlines()[0]}") from None
        return conn

    def _conn(self) -> Any:
        if self._closed:
            raise ArchiveError(f"archive {self.location} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._connect()
            self._local.conn = conn
            with self._conn_lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection this archive opened, in every thread."""
        self._closed = True
        with self._conn_lock:
            for conn in self._connections:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001,S110 - closing is best effort
                    pass
            self._connections.clear()

    def __enter__(self) -> PostgresArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        psycopg = _psycopg()
        try:
            return list(self._conn().execute(sql, tuple(params)).fetchall())
        except psycopg.Error as exc:
            raise ArchiveError(f"archive {self.location}: {str(exc).strip()}") from None

    # -- schema -------------------------------------------------------------------------------
    def _migrate(self, writable: bool) -> None:
        psycopg = _psycopg()
        conn = self._conn()
        try:
            have = conn.execute("SELECT to_regclass('imgverify_migrations')").fetchone()[0]
            done = {r[0] for r in conn.execute("SELECT version FROM imgverify_migrations")} \
                if have else set()
            todo = [(v, sql) for v, sql in MIGRATIONS if v not in done]
            if not todo and done:
                return
            if not writable:
                raise ArchiveError(f"{self.location} holds no imgverify archive (or an older "
                                   "schema): open it writable once, e.g. with "
                                   "`imgverify archive add`, to create or migrate it")
            with conn.transaction():
                # one process migrates; the others wait here, then find nothing to do
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))")
                conn.execute("CREATE TABLE IF NOT EXISTS imgverify_migrations "
                             "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
                done = {r[0] for r in conn.execute("SELECT version FROM imgverify_migrations")}
                for version, sql in MIGRATIONS:
                    if version in done:
                        continue
                    conn.execute(sql)
                    conn.execute("INSERT INTO imgverify_migrations VALUES (%s, %s)",
                                 (version, _now()))
                for key, value in (("schema_version", str(SCHEMA_VERSION)),
                                   ("generation", "0"), ("archive_id", uuid.uuid4().hex),
                                   ("change_token", uuid.uuid4().hex),
                                   ("hash_pipeline", str(HASH_PIPELINE))):
                    conn.execute("INSERT INTO meta VALUES (%s, %s) ON CONFLICT DO NOTHING",
                                 (key, value))
        except psycopg.Error as exc:
            raise ArchiveError(f"{self.location} is not a usable imgverify archive: "
                               f"{str(exc).strip()}") from None

    # -- identity -----------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=%s", (key,))
        return rows[0][0] if rows else None

    def generation(self) -> str:
        return self._meta("generation") or "0"

    def archive_id(self) -> str | None:
        return self._meta("archive_id")

    def hash_pipeline(self) -> int:
        return int(self._meta("hash_pipeline") or HASH_PIPELINE)

    def __len__(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM refs")[0][0])

    # -- reading ------------------------------------------------------------------------------
    def references(self, keys: Iterable[int]) -> dict[int, Reference]:
        keys = [int(k) for k in keys]
        if not keys:
            return {}
        rows = self._query(f"SELECT {_COLUMNS} FROM refs WHERE id = ANY(%s)", (keys,))
        return {int(r[0]): _reference(r) for r in rows}

    def get(self, reference_id: str) -> Reference | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM refs WHERE reference_id=%s OR sha256=%s",
                           (reference_id, reference_id))
        return _reference(rows[0]) if rows else None

    def find_sha256(self, sha256: str) -> Reference | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM refs WHERE sha256=%s", (sha256,))
        return _reference(rows[0]) if rows else None

    def iter_references(self, limit: int | None = None, offset: int = 0) -> Iterator[Reference]:
        sql = f"SELECT {_COLUMNS} FROM refs ORDER BY date, id"
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT %s OFFSET %s"
            params = [limit, offset]
        for row in self._query(sql, params):
            yield _reference(row)

    def thumbnail(self, key: int) -> bytes | None:
        rows = self._query("SELECT thumbnail FROM refs WHERE id=%s", (key,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def hashes_of(self, key: int) -> list[tuple[str, HashSet]]:
        rows = self._query("SELECT variant, pdq, pdq_quality, phash, dhash, whash FROM hashes "
                           "WHERE ref_id=%s ORDER BY variant", (key,))
        return [(r[0], HashSet(pdq=int.from_bytes(r[1], "big"), pdq_quality=int(r[2]),
                               phash=int.from_bytes(r[3], "big"),
                               dhash=int.from_bytes(r[4], "big"),
                               whash=int.from_bytes(r[5], "big"))) for r in rows]

    def stats(self) -> dict[str, Any]:
        refs = len(self)
        dates = self._query("SELECT MIN(date), MAX(date) FROM refs")[0]
        hash_rows = int(self._query("SELECT COUNT(*) FROM hashes")[0][0])
        thumbs = int(self._query("SELECT COALESCE(SUM(LENGTH(thumbnail)), 0) FROM refs")[0][0])
        hash_only = int(self._query("SELECT COUNT(*) FROM refs WHERE sha256 LIKE %s",
                                    (HASH_KEY_PREFIX + "%",))[0][0])
        return {"archive": self.location, "backend": BACKEND, "archive_id": self.archive_id(),
                "generation": self.generation(), "references": refs, "hash_rows": hash_rows,
                "hash_only_references": hash_only,
                "earliest_date": dates[0], "latest_date": dates[1], "thumbnail_bytes": thumbs,
                "index_bytes": self.index().nbytes, "hash_pipeline": self.hash_pipeline(),
                "readonly": self.readonly}

    def summary(self) -> dict[str, Any]:
        """What a report names as "checked against" (see the SQLite archive's `summary`),
        from one snapshot, cached per generation."""
        generation = self.generation()
        cached = getattr(self, "_summary_cache", None)
        if cached is not None and cached["generation"] == generation:
            return dict(cached)

        def read(conn: Any) -> dict[str, Any]:
            meta = {k: v for k, v in conn.execute(
                "SELECT key, value FROM meta WHERE key IN ('archive_id', 'generation', "
                "'hash_pipeline')")}
            refs, first, last = conn.execute(
                "SELECT COUNT(*), MIN(date), MAX(date) FROM refs").fetchone()
            return {"id": meta.get("archive_id"), "name": self.location, "backend": BACKEND,
                    "references": int(refs), "earliest_date": first, "latest_date": last,
                    "generation": meta.get("generation", "0"),
                    "hash_pipeline": int(meta.get("hash_pipeline", HASH_PIPELINE))}

        summary: dict[str, Any] = self._snapshot(read)
        self._summary_cache = summary
        return dict(summary)

    # -- the derived indexes ------------------------------------------------------------------
    def _snapshot(self, work: Callable[[Any], Any]) -> Any:
        """Run `work(conn)` inside one REPEATABLE READ read-only transaction (one snapshot)."""
        psycopg = _psycopg()
        conn = self._conn()
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return work(conn)
        except psycopg.Error as exc:
            raise ArchiveError(f"archive {self.location}: {str(exc).strip()}") from None

    def index(self) -> LayeredIndex:
        """The in-memory index, brought up to date with the change log when the generation
        moved (only the touched references are read)."""
        current = int(self.generation())
        with self._index_lock:
            if self._index is not None and current == self._index_generation:
                return self._index
            if self._index is None:
                self._index, self._index_generation = self._snapshot(self._full_build)
            else:
                since = self._index_generation
                self._index, self._index_generation = self._snapshot(
                    lambda conn: self._delta(conn, self._index, since))  # type: ignore[arg-type]
            index = self._index
            if index.needs_compaction and not self._compacting:
                self._compacting = True
                threading.Thread(target=self._compact, args=(index,), daemon=True,
                                 name="imgverify-compact").start()
            return index

    @staticmethod
    def _full_build(conn: Any) -> tuple[LayeredIndex, int]:
        generation = int(conn.execute("SELECT value FROM meta WHERE key='generation'")
                         .fetchone()[0])
        with conn.cursor(name="imgverify_hashes") as cur:  # server-side: streamed
            cur.itersize = 20_000
            cur.execute("SELECT ref_id, variant, pdq, phash, dhash, whash FROM hashes "
                        "ORDER BY ref_id, variant")
            base = _index_from_rows(cur)
        return LayeredIndex(base), generation

    @staticmethod
    def _delta(conn: Any, index: LayeredIndex, since: int) -> tuple[LayeredIndex, int]:
        generation = int(conn.execute("SELECT value FROM meta WHERE key='generation'")
                         .fetchone()[0])
        changed = [int(r[0]) for r in conn.execute(
            "SELECT DISTINCT ref_id FROM changes WHERE generation > %s AND generation <= %s",
            (since, generation))]
        rows = conn.execute("SELECT ref_id, variant, pdq, phash, dhash, whash FROM hashes "
                            "WHERE ref_id = ANY(%s) ORDER BY ref_id, variant", (changed,))
        return index.updated(changed, _index_from_rows(rows)), generation

    def _compact(self, index: LayeredIndex) -> None:
        """Fold the delta into the base off the query path, then swap it in if nothing newer
        arrived meanwhile (a newer layered index is simply compacted next time)."""
        try:
            compacted = index.compacted()
            with self._index_lock:
                if self._index is index:
                    self._index = compacted
        finally:
            self._compacting = False

    def features_of(self, keys: Iterable[int]) -> dict[int, LocalFeatures]:
        """Stored local features of these references (the compact index reads back only the
        few it verifies)."""
        wanted = sorted({int(k) for k in keys})
        if not wanted:
            return {}

        return self._snapshot(  # type: ignore[no-any-return]
            lambda conn: _read_features(conn, wanted))

    def _feature_count(self) -> int:
        return int(self._snapshot(
            lambda conn: conn.execute("SELECT COUNT(*) FROM features").fetchone()[0]))

    def build_local_index(self, progress: Callable[[int], None] | None = None
                          ) -> dict[str, Any]:
        """Build the compact local index of the database as it is now (large archives), so
        queries only fold in what changed since; small archives need nothing ahead."""
        count = self._feature_count()
        if count < self.compact_min_refs:
            with self._index_lock:
                self._features = None
            return {"references_with_features": count, **local_stats(self.feature_index())}

        def read(conn: Any) -> tuple[CompactFeatureIndex, int, str]:
            meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN "
                                     "('generation', 'change_token')").fetchall())
            with conn.cursor(name="imgverify_features") as cur:  # server-side: streamed
                cur.itersize = 5_000
                cur.execute("SELECT ref_id, descriptors FROM features ORDER BY ref_id")
                items = ((int(r[0]), np.frombuffer(bytes(r[1]), np.uint8).reshape(-1, 32))
                         for r in cur)
                return (build_compact(items, self.features_of, progress),
                        int(meta["generation"]), str(meta.get("change_token", "")))

        base, generation, token = self._snapshot(read)
        root, archive_id = self._local_cache_root()
        if root is not None and archive_id is not None:
            # on local disk, so the next process (a CLI check, a scan worker) reads it
            # instead of building it on its first query; it is only a cache of the database
            # (readonly concerns the database), keyed by the state it was built at
            publish_compact(root, CacheKey(archive_id, str(generation), token,
                                           self.hash_pipeline()), base)
        with self._index_lock:
            self._compact_base = (base, generation)
            self._features = base
            self._features_generation = generation
        return {"references_with_features": count, **local_stats(base)}

    def feature_index(self) -> LocalIndex:
        """Local features, re-read only for references touched since the last build; the
        trained quantiser is reused so a refresh is an assignment, not a training. Large
        archives use the compact index built by `build_local_index` plus an exact delta of
        the references changed since."""
        current = int(self.generation())
        with self._index_lock:
            if (self._features is not None and current == self._features_generation
                    and not getattr(self._features, "pending", False)):
                return self._features
            base = getattr(self, "_compact_base", None)
            # pending at an unchanged generation: it was large and still is (no COUNT(*)
            # over the features table on every check of a never-indexed archive)
            still_large = (getattr(self._features, "pending", False)
                           and current == self._features_generation)
        if base is None and (still_large or self._feature_count() >= self.compact_min_refs):
            base = self._cached_compact(current)
            if base is None:
                # never built anywhere: not on a query (see PendingLocalIndex); looked for
                # again on the next one, in case `archive index` has run since
                with self._index_lock:
                    self._features = PendingLocalIndex()
                    self._features_generation = current
                    return self._features
        with self._index_lock:
            if base is not None:
                self._features, self._features_generation = self._layered(*base)
                return self._features
            old = self._features if isinstance(self._features, FeatureIndex) else None
            since = self._features_generation

            def read(conn: Any) -> tuple[dict[int, LocalFeatures], int, list[int] | None]:
                gen = int(conn.execute("SELECT value FROM meta WHERE key='generation'")
                          .fetchone()[0])
                changed: list[int] | None = None
                sql = "SELECT ref_id, width, height, points, descriptors FROM features"
                params: tuple[Any, ...] = ()
                if old is not None:
                    changed = [int(r[0]) for r in conn.execute(
                        "SELECT DISTINCT ref_id FROM changes WHERE generation > %s "
                        "AND generation <= %s", (since, gen))]
                    sql += " WHERE ref_id = ANY(%s)"
                    params = (changed,)
                feats = {int(r[0]): LocalFeatures.from_blobs(bytes(r[3]), bytes(r[4]), r[1], r[2])
                         for r in conn.execute(sql + " ORDER BY ref_id", params)}
                return feats, gen, changed

            fresh, generation, changed = self._snapshot(read)
            if old is None or changed is None:
                by_key = fresh
                trained = None
            else:
                by_key = {k: v for k, v in old.by_key.items() if k not in set(changed)}
                by_key.update(fresh)
                trained = empty_copy(old._faiss) if old.trained else None
            keys = sorted(by_key)
            self._features = FeatureIndex(keys, [by_key[k] for k in keys], None, trained)
            self._features_generation = generation
            return self._features

    def _local_cache_root(self) -> tuple[Path | None, str | None]:
        archive_id = self.archive_id()
        if not archive_id:
            return None, None
        return user_cache_dir() / f"postgres-{archive_id}", archive_id

    def _cached_compact(self, current: int) -> tuple[CompactFeatureIndex, int] | None:
        """The compact index another process built for this database (`archive index`, an
        ingest), from the local cache; the references changed since its generation are
        folded in by `_layered`. A cache of a later generation than the database's (a
        database restored from an older backup) is never used."""
        root, archive_id = self._local_cache_root()
        if root is None or archive_id is None:
            return None
        found = latest_compact(root, archive_id, self.hash_pipeline(), self.features_of)
        if found is None or int(found[1].generation) > current:
            return None
        base = (found[0], int(found[1].generation))
        with self._index_lock:
            if self._compact_base is None:
                self._compact_base = base
        return base

    def _layered(self, base: CompactFeatureIndex, built_at: int) -> tuple[LocalIndex, int]:
        def read(conn: Any) -> tuple[dict[int, LocalFeatures], set[int], int]:
            gen = int(conn.execute("SELECT value FROM meta WHERE key='generation'")
                      .fetchone()[0])
            changed = [int(r[0]) for r in conn.execute(
                "SELECT DISTINCT ref_id FROM changes WHERE generation > %s "
                "AND generation <= %s", (built_at, gen))]
            return _read_features(conn, changed), set(changed), gen

        fresh, changed, generation = self._snapshot(read)
        if not changed:
            return base, generation
        keys = sorted(fresh)
        return LayeredLocalIndex(base, FeatureIndex(keys, [fresh[k] for k in keys]),
                                 changed), generation

    # -- writing ------------------------------------------------------------------------------
    def _require_writable(self) -> None:
        if self.readonly:
            raise ArchiveError(f"{self.location} is open read-only")

    def _write(self, work: Callable[[Any, int], tuple[int, int]]) -> tuple[int, int]:
        """One transaction: take the next generation (serialising writers), do the work,
        draw a new change token."""
        psycopg = _psycopg()
        self._require_writable()
        conn = self._conn()
        try:
            with conn.transaction():
                gen = int(conn.execute(
                    "UPDATE meta SET value = (value::bigint + 1)::text "
                    "WHERE key='generation' RETURNING value").fetchone()[0])
                out = work(conn, gen)
                conn.execute("UPDATE meta SET value=%s WHERE key='change_token'",
                             (uuid.uuid4().hex,))
                return out
        except psycopg.Error as exc:
            raise ArchiveError(f"cannot write archive {self.location}: "
                               f"{str(exc).strip()}") from None

    def write_batch(self, batch: list[PreparedReference]) -> tuple[int, int]:
        """Insert or update references in one transaction; returns (added, updated)."""
        if self.hash_pipeline() != HASH_PIPELINE:
            raise ArchiveError(f"{self.location} holds hashes from another hash pipeline")
        now = _now()
        cols = ", ".join(CONTEXT_FIELDS)
        marks = ", ".join(["%s"] * len(CONTEXT_FIELDS))
        updates = ", ".join(f"{k}=EXCLUDED.{k}" for k in CONTEXT_FIELDS)

        def work(conn: Any, gen: int) -> tuple[int, int]:
            added = updated = 0
            for ref in batch:
                ctx = [ref.context.get(k) for k in CONTEXT_FIELDS]
                exif = json.dumps(ref.exif, ensure_ascii=False)
                key, inserted = conn.execute(
                    f"INSERT INTO refs (reference_id, sha256, {cols}, image_uri, width, "
                    f"height, format, exif, thumbnail, added_at, updated_at) "
                    f"VALUES (%s, %s, {marks}, %s, %s, %s, %s, %s, %s, %s, %s) "
                    f"ON CONFLICT (sha256) DO UPDATE SET {updates}, "
                    "image_uri=EXCLUDED.image_uri, width=EXCLUDED.width, "
                    "height=EXCLUDED.height, format=EXCLUDED.format, exif=EXCLUDED.exif, "
                    "thumbnail=EXCLUDED.thumbnail, updated_at=EXCLUDED.updated_at "
                    "RETURNING id, (xmax = 0)",
                    (ref.sha256[:16], ref.sha256, *ctx, ref.image_uri, ref.width, ref.height,
                     ref.format, exif, ref.thumbnail, now, now)).fetchone()
                if inserted:
                    added += 1
                else:
                    updated += 1
                conn.execute("DELETE FROM hashes WHERE ref_id=%s", (key,))
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO hashes VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        [(key, name, hs.pdq.to_bytes(32, "big"), hs.pdq_quality,
                          _u64(hs.phash), _u64(hs.dhash), _u64(hs.whash))
                         for name, hs in ref.hashes])
                conn.execute("DELETE FROM features WHERE ref_id=%s", (key,))
                if ref.features is not None and len(ref.features):
                    pts, desc = ref.features.to_blobs()
                    conn.execute("INSERT INTO features VALUES (%s, %s, %s, %s, %s)",
                                 (key, ref.features.width, ref.features.height, pts, desc))
                conn.execute("INSERT INTO changes (generation, ref_id) VALUES (%s, %s)",
                             (gen, key))
            return added, updated

        return self._write(work)

    def write_hashes(self, batch: list[HashOnlyReference]) -> tuple[int, int, int]:
        """Insert or update hash-only references in one transaction, keyed by their PDQ;
        returns (added, updated, unchanged). Only changed references enter the change log."""
        now = _now()
        cols = ", ".join(CONTEXT_FIELDS)
        marks = ", ".join(["%s"] * len(CONTEXT_FIELDS))
        sets = ", ".join(f"{k}=EXCLUDED.{k}" for k in CONTEXT_FIELDS)
        counts = [0, 0, 0]
        current = (f"SELECT r.id, {', '.join('r.' + c for c in CONTEXT_FIELDS)}, "
                   "h.pdq_quality FROM refs r LEFT JOIN hashes h ON h.ref_id = r.id "
                   "AND h.variant = %s WHERE r.sha256 = %s")

        def same(row: tuple[Any, ...] | None, ref: HashOnlyReference) -> bool:
            return row is not None and list(row[1:-1]) == [
                ref.context.get(k) for k in CONTEXT_FIELDS] and row[-1] == ref.pdq_quality

        # a list imported again changes nothing: no transaction, no new generation, so
        # matchers keep their index
        todo = [ref for ref in batch
                if not same(next(iter(self._query(current, (PDQ_ONLY_PART, ref.key))), None),
                            ref)]
        counts[2] = len(batch) - len(todo)
        if not todo:
            return 0, 0, counts[2]

        def work(conn: Any, gen: int) -> tuple[int, int]:
            for ref in todo:
                ctx = [ref.context.get(k) for k in CONTEXT_FIELDS]
                if same(conn.execute(current, (PDQ_ONLY_PART, ref.key)).fetchone(), ref):
                    counts[2] += 1  # another writer got there first
                    continue
                key, inserted = conn.execute(
                    f"INSERT INTO refs (reference_id, sha256, {cols}, added_at, updated_at) "
                    f"VALUES (%s, %s, {marks}, %s, %s) ON CONFLICT (sha256) DO UPDATE SET "
                    f"{sets}, updated_at=EXCLUDED.updated_at RETURNING id, (xmax = 0)",
                    (hash_reference_id(ref.pdq), ref.key, *ctx, now, now)).fetchone()
                counts[0 if inserted else 1] += 1
                conn.execute("DELETE FROM hashes WHERE ref_id=%s", (key,))
                for name, hs in ref.hashes:
                    conn.execute("INSERT INTO hashes VALUES (%s, %s, %s, %s, %s, %s, %s)",
                                 (key, name, hs.pdq.to_bytes(32, "big"), hs.pdq_quality,
                                  _u64(hs.phash), _u64(hs.dhash), _u64(hs.whash)))
                conn.execute("INSERT INTO changes (generation, ref_id) VALUES (%s, %s)",
                             (gen, key))
            return 0, 0

        self._write(work)
        return counts[0], counts[1], counts[2]

    def remove(self, reference_ids: Iterable[str]) -> int:
        ids = list(reference_ids)

        def work(conn: Any, gen: int) -> tuple[int, int]:
            removed = 0
            for rid in ids:
                for (key,) in conn.execute("DELETE FROM refs WHERE reference_id=%s OR "
                                           "sha256=%s RETURNING id", (rid, rid)).fetchall():
                    conn.execute("INSERT INTO changes (generation, ref_id) VALUES (%s, %s)",
                                 (gen, key))
                    removed += 1
            return removed, 0

        return self._write(work)[0]

    def ingest(self, manifest: str | os.PathLike[str], batch_size: int = 100,
               limits: Limits | None = None, workers: int = 1,
               progress: Any = None) -> IngestReport:
        """Deprecated: use `imgverify.ingest.ingest_manifest(archive, manifest, ...)`."""
        import warnings

        from imgverify.ingest import ingest_manifest  # the one upward import: a shim

        warnings.warn("Archive.ingest is deprecated: use imgverify.ingest.ingest_manifest",
                      DeprecationWarning, stacklevel=2)
        return ingest_manifest(self, manifest, batch_size=batch_size, limits=limits,
                               workers=workers, progress=progress)

    def rehash(self, limits: Limits | None = None,
               on_progress: Callable[[int, int], None] | None = None,
               batch_size: int = 200) -> RehashReport:
        """PostgreSQL archives were introduced with hash pipeline 2: nothing to redo."""
        return RehashReport()

    def export(self) -> Iterator[dict[str, Any]]:
        for ref in self.iter_references():
            yield export_row(ref, self.hashes_of(ref.key))

    def integrity_check(self) -> list[str]:
        problems = [f"reference {r[0]} has no hashes" for r in self._query(
            _NO_HASHES, (HASH_KEY_PREFIX + "%", PDQ_ONLY_PART))]
        problems += [f"reference {r[0]} is incomplete" for r in self._query(
            _INCOMPLETE, (HASH_KEY_PREFIX + "%",) * 2)]
        return problems

    # -- sightings (store/sightings.py) -------------------------------------------------------

    def has_sightings_table(self) -> bool:
        return True  # created by migration 2

    def add_sightings(self, sightings: Iterable[Sighting]) -> int:
        """Store sightings in one transaction, keyed by (origin, source_key): a known one is
        updated in place, never duplicated. Returns how many were new."""
        psycopg = _psycopg()
        self._require_writable()
        conn = self._conn()
        now = _now()
        new = 0
        try:
            with conn.transaction():
                for s in sightings:
                    inserted = conn.execute(
                        f"INSERT INTO sightings ({SIGHTING_COLUMNS}) VALUES (DEFAULT, "
                        "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (origin, source_key) DO UPDATE SET ref_id=EXCLUDED.ref_id, "
                        "sha256=EXCLUDED.sha256, evidence=EXCLUDED.evidence, "
                        "seen_at=EXCLUDED.seen_at, url=EXCLUDED.url, account=EXCLUDED.account, "
                        "text=EXCLUDED.text, media_url=EXCLUDED.media_url, "
                        "source_sha1=EXCLUDED.source_sha1, own_record=EXCLUDED.own_record, "
                        "match_score=EXCLUDED.match_score, extra=EXCLUDED.extra "
                        "RETURNING (xmax = 0)",
                        (s.ref_key, s.sha256, s.origin, s.source_key, s.evidence, s.seen_at,
                         s.url, s.account, s.text, s.media_url, s.source_sha1, s.own_record,
                         s.match_score, json.dumps(s.extra, ensure_ascii=False)
                         if s.extra else None, now)).fetchone()[0]
                    new += int(bool(inserted))
        except psycopg.Error as exc:
            raise ArchiveError(f"cannot write archive {self.location}: "
                               f"{str(exc).strip()}") from None
        return new

    def find_sighting(self, origin: str, source_key: str) -> Sighting | None:
        rows = self._query(f"SELECT {SIGHTING_COLUMNS} FROM sightings WHERE origin=%s "
                           "AND source_key=%s", (origin, source_key))
        return sighting_from_row(rows[0]) if rows else None

    def sightings_for(self, ref_keys: Iterable[int]) -> dict[int, list[Sighting]]:
        """Sightings linked to each reference, earliest first."""
        keys = [int(k) for k in ref_keys]
        out: dict[int, list[Sighting]] = {}
        if not keys:
            return out
        for row in self._query(f"SELECT {SIGHTING_COLUMNS} FROM sightings WHERE ref_id = "
                               "ANY(%s) ORDER BY seen_at IS NULL, seen_at, id", (keys,)):
            out.setdefault(int(row[1]), []).append(sighting_from_row(row))
        return out

    def iter_sightings(self, origin: str | None = None) -> Iterator[Sighting]:
        sql = f"SELECT {SIGHTING_COLUMNS} FROM sightings"
        params: tuple[Any, ...] = ()
        if origin is not None:
            sql += " WHERE origin=%s"
            params = (origin,)
        for row in self._query(sql + " ORDER BY seen_at IS NULL, seen_at, id", params):
            yield sighting_from_row(row)

    def import_state(self, job: str) -> dict[str, Any] | None:
        rows = self._query("SELECT state FROM import_state WHERE job=%s", (job,))
        return json.loads(rows[0][0]) if rows else None

    def save_import_state(self, job: str, state: dict[str, Any] | None) -> None:
        self._require_writable()
        if state is None:
            self._query("DELETE FROM import_state WHERE job=%s RETURNING job", (job,))
        else:
            self._query("INSERT INTO import_state VALUES (%s, %s, %s) ON CONFLICT (job) DO "
                        "UPDATE SET state=EXCLUDED.state, updated_at=EXCLUDED.updated_at "
                        "RETURNING job", (job, json.dumps(state), _now()))

    def has_unverified_sightings(self) -> bool:
        return bool(self._query("SELECT 1 FROM sightings WHERE own_record OR origin='check' "
                                "LIMIT 1"))

    def sighting_stats(self) -> dict[str, Any]:
        by_source = {(r[0] or "(no source)"): int(r[1]) for r in self._query(
            "SELECT source, COUNT(*) FROM refs GROUP BY source ORDER BY COUNT(*) DESC, source")}
        return {
            "references_by_source": by_source,
            "sightings": int(self._query("SELECT COUNT(*) FROM sightings")[0][0]),
            "sightings_by_origin": {r[0]: {"sightings": int(r[1]),
                                           "linked_to_references": int(r[2]),
                                           "own_records": int(r[3])} for r in self._query(
                "SELECT origin, COUNT(*), COUNT(*) FILTER (WHERE ref_id IS NOT NULL AND NOT "
                "own_record), COUNT(*) FILTER (WHERE own_record) FROM sightings GROUP BY origin "
                "ORDER BY origin")},
            "unverified_records": int(self._query(
                "SELECT COUNT(DISTINCT ref_id) FROM sightings WHERE own_record AND ref_id IS "
                "NOT NULL")[0][0]),
        }


__all__ = ["PostgresArchive", "is_postgres_url", "redact", "SCHEMA_VERSION", "MIGRATIONS"]


def _read_features(conn: Any, keys: list[int]) -> dict[int, LocalFeatures]:
    """Stored local features of these references, in the connection's snapshot."""
    return {int(r[0]): LocalFeatures.from_blobs(bytes(r[3]), bytes(r[4]), r[1], r[2])
            for r in conn.execute("SELECT ref_id, width, height, points, descriptors "
                                  "FROM features WHERE ref_id = ANY(%s)", (keys,))}
