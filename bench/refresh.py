"""Index refresh on a shared PostgreSQL archive: incremental vs full rebuild.

A matcher process holds the in-memory index of a 1,000,000-reference archive; another
writer adds 10,000 references. How long until the matcher answers with them, and what
would a full rebuild from the database cost instead?

Data: synthetic references (random PDQ/pHash/dHash/wHash, one hash row each, no image,
thumbnail or local features), bulk-loaded with COPY into a fresh schema of the database at
IMGVERIFY_TEST_PG (default postgresql://postgres@127.0.0.1:5432/test), dropped afterwards.
The 10,000 new references go through `write_batch` (the normal transactional path, change
log included), in batches of 500.

    python bench/refresh.py [--rows 1000000] [--added 10000]

Prints times; never fails on a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imgverify.signals.hashing import HashSet  # noqa: E402
from imgverify.store.postgres import PostgresArchive  # noqa: E402
from imgverify.store.sqlite import PreparedReference  # noqa: E402

PG_URL = os.environ.get("IMGVERIFY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
NOW = "2026-01-01T00:00:00+00:00"


def _bulk_load(url: str, rows: int, rng: np.random.Generator) -> None:
    import psycopg

    arch = PostgresArchive(url)  # creates the schema (migrations)
    arch.close()
    conninfo, schema = url.split("?schema=")
    with psycopg.connect(conninfo, autocommit=False) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        words = rng.integers(0, 2**63, size=(rows, 7), dtype=np.uint64)
        with conn.cursor().copy("COPY refs (id, reference_id, sha256, date, added_at, "
                                "updated_at) FROM STDIN") as copy:
            for i in range(rows):
                sha = f"{i:064x}"
                copy.write_row((i + 1, sha[-16:], sha, "2015-01-01", NOW, NOW))
        with conn.cursor().copy("COPY hashes FROM STDIN") as copy:
            for i in range(rows):
                w = words[i]
                copy.write_row((i + 1, "full", b"".join(int(x).to_bytes(8, "big")
                                                      for x in w[:4]), 90,
                                int(w[4]).to_bytes(8, "big"), int(w[5]).to_bytes(8, "big"),
                                int(w[6]).to_bytes(8, "big")))
        conn.execute("SELECT setval(pg_get_serial_sequence('refs', 'id'), %s)", (rows,))
        conn.execute("UPDATE meta SET value='1' WHERE key='generation'")
        conn.commit()


def _prepared(i: int, rng: np.random.Generator) -> PreparedReference:
    w = rng.integers(0, 2**63, size=7, dtype=np.uint64)
    pdq = int.from_bytes(b"".join(int(x).to_bytes(8, "big") for x in w[:4]), "big")
    hs = HashSet(pdq=pdq, pdq_quality=90, phash=int(w[4]), dhash=int(w[5]), whash=int(w[6]))
    sha = uuid.uuid4().hex * 2
    return PreparedReference(sha256=sha, image_uri=f"synthetic:{i}",
                             context={"date": "2024-01-01", "event": f"added {i}"},
                             width=1, height=1, format="JPEG", thumbnail=b"", exif={},
                             hashes=[("full", hs)], features=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--added", type=int, default=10_000)
    args = parser.parse_args()
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    url = f"{PG_URL}?schema={schema}"
    rng = np.random.default_rng(5)
    admin = psycopg.connect(PG_URL, autocommit=True)
    try:
        t = time.perf_counter()
        _bulk_load(url, args.rows, rng)
        print(f"bulk load of {args.rows:,} synthetic references: {time.perf_counter() - t:.1f} s")
        matcher = PostgresArchive(url, readonly=True)
        t = time.perf_counter()
        index = matcher.index()
        full = time.perf_counter() - t
        print(f"matcher's first (full) build: {full:.2f} s, {len(index):,} rows")
        probe = [_prepared(-1, rng).hashes[0][1]]

        def query_ms(ix: object) -> float:
            times = []
            for _ in range(20):
                t0 = time.perf_counter()
                ix.search([probe[0].pdq], 31)  # type: ignore[attr-defined]
                times.append((time.perf_counter() - t0) * 1000)
            return statistics.median(times)

        before = query_ms(index)
        writer = PostgresArchive(url)
        t = time.perf_counter()
        added = [_prepared(i, rng) for i in range(args.added)]
        for start in range(0, len(added), 500):
            writer.write_batch(added[start:start + 500])
        print(f"writer added {args.added:,} references in {time.perf_counter() - t:.1f} s "
              f"({args.added // 500} transactions)")
        t = time.perf_counter()
        refreshed = matcher.index()
        incremental = time.perf_counter() - t
        assert len(refreshed) == args.rows + args.added, len(refreshed)
        found = refreshed.search([added[123].hashes[0][1].pdq], 31)
        assert found and found[0].pdq_distance == 0, "a new reference is not found"
        after = query_ms(refreshed)
        print(f"matcher's incremental refresh: {incremental:.2f} s "
              f"(delta {len(refreshed.delta):,} rows, base untouched: "
              f"{refreshed.base is index.base})")
        fresh = PostgresArchive(url, readonly=True)
        t = time.perf_counter()
        fresh.index()
        rebuild = time.perf_counter() - t
        print(f"full rebuild from the database instead: {rebuild:.2f} s")
        t = time.perf_counter()
        compacted = refreshed.compacted()
        print(f"folding the delta into a new base (background, queries go on): "
              f"{time.perf_counter() - t:.2f} s")
        print(f"query p50 (PDQ radius 31, one variant): {before:.2f} ms before, {after:.2f} ms "
              f"with the delta layer, {query_ms(compacted):.2f} ms after folding")
        print(f"summary: refresh {incremental:.2f} s vs full rebuild {rebuild:.2f} s "
              f"({rebuild / max(incremental, 1e-9):.0f}x) after adding {args.added:,} to "
              f"{args.rows:,}")
        for arch in (matcher, writer, fresh):
            arch.close()
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


if __name__ == "__main__":
    main()
