"""Posting-scan cost of the compact index: bucketed lists against reading every posting.

    python bench/scan_layout.py [--size 1000000] [--queries 40] [--targets 32,128,512]

Why: `CompactFeatureIndex` sorts each long posting list by embedding and cuts it into
buckets (`compact.BUCKET_TARGET` postings each), so a lookup reads only the buckets within
`HE_MAX_DISTANCE` bits of the query. This prints what that saves, on the same index and
the same lookups, with the same hits (the count is printed for both).

Data: `--size` synthetic references built as bench/scale.py builds them (keypoints drawn
from 400 REPORT-split pool photos, every bit flipped with p = 1/4); queries are the ORB
features (500 keypoints) of `--queries` TUNE photos, looked up as `vote` does (2 words per
half, slack, stop list). Timed: the compiled scan alone, per query (all its lookups), the
best of 3 passes. Memory: the bucket tables per reference. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import scale as S  # noqa: E402
from robustness import split_of  # noqa: E402

from imgverify.signals import compact as C  # noqa: E402
from imgverify.signals.features import QUERY_FEATURES, REF_FEATURES, extract  # noqa: E402

Lookup = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def lookups(ix: C.CompactFeatureIndex, desc: np.ndarray) -> Lookup:
    """The lists `vote` would scan for these descriptors."""
    q_idx, w, lo, lengths = ix.lookups(desc)
    query_he = ix.vocabulary.embed(desc[q_idx], w)
    bits, starts = ix.tables_of(w, lengths)
    return lo, lengths, query_he, bits, starts


def timed(ix: C.CompactFeatureIndex, preps: list[Lookup], plain: bool) -> tuple[float, int]:
    best = float("inf")
    hits = 0
    for _ in range(3):
        total, hits = 0.0, 0
        for lo, lengths, query_he, bits, starts in preps:
            use = np.zeros_like(bits) if plain else bits
            t = time.perf_counter()
            k, _rows, _d = C.scan_postings(lo, lengths, query_he, use, starts, ix.buckets,
                                           ix.he, ix.postings, C.HE_MAX_DISTANCE)
            total += time.perf_counter() - t
            hits += len(k)
        best = min(best, total)
    return 1000 * best / len(preps), hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--targets", default="32,128,512", help="postings per bucket to compare")
    args = ap.parse_args()
    if not S.PHOTOS.is_dir():
        sys.exit(f"skipped: {S.PHOTOS} not found")
    pool_paths = [p for p in S.pool_photos(set(), 2000) if split_of(p) == "report"][:400]
    pool = S.make_pool(pool_paths)
    with Image.open(pool_paths[0]) as im:
        real = {1: extract(im.convert("RGB"), REF_FEATURES)}
    t0 = time.perf_counter()
    ix = S.build_compact(real, pool, args.size - 1, lambda keys: {})
    print(f"{args.size:,} references, {len(ix):,} postings, built in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    photos = [p for p in S.pool_photos(set(), 3000) if split_of(p) == "tune"][:args.queries]
    descs = []
    for p in photos:
        with Image.open(p) as im:
            descs.append(np.ascontiguousarray(extract(im.convert("RGB"),
                                                      QUERY_FEATURES).descriptors))
    print(f"{'postings/bucket':>15} {'tables B/ref':>12} | {'lists scanned':>13} | "
          f"{'whole ms':>8} {'bucketed ms':>11} | hits (both)")
    for target in (int(t) for t in args.targets.split(",")):
        C.BUCKET_TARGET = target  # the tables follow the module's setting when rebuilt
        tables = C.finish_lists(ix.offsets, ix.postings, ix.he)
        alt = C.CompactFeatureIndex(ix.ref_keys, ix.ref_counts, ix.offsets, ix.postings,
                                    ix.he, tables, ix.loader, ix.vocabulary)
        preps = [lookups(alt, d) for d in descs]
        scanned = np.mean([int(p[1].sum()) for p in preps])
        whole, hits_w = timed(alt, preps, plain=True)
        bucketed, hits_b = timed(alt, preps, plain=False)
        assert hits_w == hits_b, (hits_w, hits_b)  # the layout never changes what is found
        print(f"{target:>15} {tables.nbytes / args.size:>12.1f} | {scanned / 1e6:>11.1f} M | "
              f"{whole:>8.1f} {bucketed:>11.1f} | {hits_b / len(preps):,.0f} per query",
              flush=True)


if __name__ == "__main__":
    main()
