"""Does growing the archive past the index's switch (linear scan -> multi-index) change what
is found? Issue 16: it did (crops keeping 80 % were found by the global stage below the
switch and never above).

    python bench/cliff.py [--photos 60] [--distractors 60] [--below 19000] [--above 25000]
                          [--edits centre_80,centre_60,...] [--timing-rows 1000000]

* One archive of real photos (the TUNE split of bsds500 + coco128: `--photos` originals and
  `--distractors` others), copied twice and padded with synthetic hash rows (independent
  bits with the per-bit frequencies of real PDQ and pHash, bench/speed.py's generator) to
  `--below` and `--above` hash rows, either side of `LINEAR_MAX`.
* Every original through each edit, as a JPEG upload, checked against both archives twice:
  the global stage alone (`use_local_features=False`) and the whole checker. Found = the
  right reference ranked first with a likely or possible verdict.
* The global stage's time per query (`match.search.find`: index search + re-scoring, the
  query's hashes computed beforehand) on an index of `--timing-rows` synthetic rows.

Prints one table; nothing is asserted. Runs on any imgverify that has `imgverify.check`, so the
same file measures the code before and after a change.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import edits as E  # noqa: E402
from speed import real_bit_probabilities, synthetic  # noqa: E402

import imgverify  # noqa: E402
from imgverify.ingest import ingest_manifest  # noqa: E402
from imgverify.match.search import QueryHashes, find  # noqa: E402
from imgverify.media.load import load  # noqa: E402
from imgverify.store.index import LINEAR_MAX, HashIndex  # noqa: E402

FOUND = ("likely_recycled", "possibly_recycled")


def tune_photos() -> list[Path]:
    """bsds500 + coco128 photos of the TUNE split (bench/robustness.py's rule)."""
    files = sorted((PHOTOS / "bsds500").rglob("*.jpg")) + sorted(
        (PHOTOS / "coco128").rglob("*.jpg"))
    return [p for p in files
            if hashlib.sha256(p.relative_to(PHOTOS).as_posix().encode()).digest()[0] % 2 == 0]


def centre_crop(keep: float) -> Callable[[Image.Image, random.Random], Image.Image]:
    def edit(im: Image.Image, _r: random.Random) -> Image.Image:
        w, h = im.size
        s = math.sqrt(keep)
        cw, ch = int(round(w * s)), int(round(h * s))
        x, y = (w - cw) // 2, (h - ch) // 2
        return im.crop((x, y, x + cw, y + ch))

    return edit


def make_edits(names: list[str]) -> dict[str, Callable[[Image.Image, random.Random], Image.Image]]:
    registry = E.build_edits([])
    out: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {}
    for name in names:
        if name.startswith("centre_"):
            out[name] = centre_crop(int(name.split("_")[1]) / 100)
        else:
            out[name] = registry[name]
    return out


def upright(path: Path) -> Image.Image:
    with Image.open(path) as raw:
        return (ImageOps.exif_transpose(raw) or raw).convert("RGB")


def pad(src: Path, dst: Path, rows: int, p_pdq: np.ndarray, p_ph: np.ndarray,
        seed: int) -> None:
    """A copy of the archive at `src` with synthetic references added until it holds `rows`
    hash rows (one 'full' row each; hashes drawn with the real per-bit frequencies)."""
    shutil.copy(src, dst)
    conn = sqlite3.connect(dst)
    have = int(conn.execute("SELECT COUNT(*) FROM hashes").fetchone()[0])
    first = int(conn.execute("SELECT MAX(id) FROM refs").fetchone()[0]) + 1
    n = rows - have
    rng = np.random.default_rng(seed)
    pdq, ph = synthetic(n, p_pdq, p_ph, rng)
    other = rng.integers(0, 2**63, size=(n, 2), dtype=np.uint64)
    with conn:
        conn.executemany(
            "INSERT INTO refs (id, reference_id, sha256, date, added_at, updated_at) "
            "VALUES (?, ?, ?, '2001-01-01', '', '')",
            [(first + i, f"pad-{i}", hashlib.sha256(f"pad-{seed}-{i}".encode()).hexdigest())
             for i in range(n)])
        conn.executemany(
            "INSERT INTO hashes VALUES (?, 'full', ?, 100, ?, ?, ?)",
            [(first + i, pdq[i].astype(">u8").tobytes(), ph[i:i + 1].astype(">u8").tobytes(),
              other[i, :1].astype(">u8").tobytes(), other[i, 1:].astype(">u8").tobytes())
             for i in range(n)])
        # a new state for the archive's cache key, as any write makes
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                     "WHERE key = 'generation'")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('change_token', ?)",
                     (uuid.uuid4().hex,))
    conn.close()


def report(found: dict[tuple[str, str, str], int], differ: list[str], edits: list[str],
           n: int, below: int, above: int) -> None:
    print(f"\nfound (right reference first, likely or possible), of {n} per edit")
    print(f"   {'edit':<16}{'global <':>10}{'global >':>10}{'whole <':>10}{'whole >':>10}")
    for name in edits:
        cells = [found[(name, label, stage)] for stage in ("global", "whole")
                 for label in ("below", "above")]
        print(f"   {name:<16}" + "".join(f"{c:>10}" for c in cells))
    print(f"   (< = {below:,} hash rows, > = {above:,})")
    print(f"queries whose outcome differs between the two archives: {len(differ)}")
    for line in differ[:20]:
        print(f"   {line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--distractors", type=int, default=60)
    ap.add_argument("--below", type=int, default=19_000)
    ap.add_argument("--above", type=int, default=25_000)
    ap.add_argument("--edits", default="centre_80,centre_60,crop_90,small_rotation,"
                                       "caption_bar")
    ap.add_argument("--timing-rows", type=int, default=1_000_000)
    ap.add_argument("--parts", default="checks,timing",
                    help="checks (both archives, both stages) and/or timing (find() per query)")
    args = ap.parse_args()
    if not PHOTOS.exists():
        sys.exit(f"{PHOTOS} not found: this benchmark needs ../shared/data/photos")
    started = time.perf_counter()
    pool = tune_photos()
    originals = pool[:args.photos]
    distractors = pool[args.photos:args.photos + args.distractors]
    folder = Path(tempfile.mkdtemp())
    try:
        base = folder / "base.sqlite"
        manifest = folder / "m.csv"
        manifest.write_text("image,date\n" + "".join(
            f"{p},2015-05-05\n" for p in originals + distractors))
        with imgverify.Archive(base) as archive:
            ingest_manifest(archive, manifest, workers=2)
        truth = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in originals}
        p_pdq, p_ph = real_bit_probabilities()
        sizes = {"below": args.below, "above": args.above}
        archives = {}
        for label, rows in sizes.items():
            path = folder / f"{label}.sqlite"
            pad(base, path, rows, p_pdq, p_ph, seed=rows)
            archives[label] = imgverify.Archive.open(path)
            archives[label].index()
            archives[label].feature_index()
        print(f"imgverify {imgverify.__version__}; LINEAR_MAX {LINEAR_MAX:,} hash rows")
        print(f"archive: {len(originals)} originals + {len(distractors)} distractors (TUNE "
              f"split), padded with synthetic hash rows to {args.below:,} (below the switch) "
              f"and {args.above:,} (above)")
        whole = imgverify.Thresholds()
        glob = dataclasses.replace(whole, use_local_features=False)
        edits = make_edits([e for e in args.edits.split(",") if e])
        found: dict[tuple[str, str, str], int] = {}
        differ: list[str] = []
        queries: list[QueryHashes] = []
        for name, edit in edits.items():
            for i, p in enumerate(originals):
                ref = truth[p]
                out = edit(upright(p), random.Random(i))
                data = E.encode_jpeg(out, 85)
                if name in ("centre_80", "crop_90", "small_rotation"):
                    loaded = load(data)
                    queries.append(QueryHashes(loaded.image, loaded.scale))
                verdicts = {}
                for label, archive in archives.items():
                    if "checks" not in args.parts:
                        break
                    for stage, thresholds in (("global", glob), ("whole", whole)):
                        res = imgverify.check(data, archive, thresholds=thresholds)
                        ok = (res.verdict in FOUND and bool(res.matches)
                              and res.matches[0].sha256 == ref)
                        key = (name, label, stage)
                        found[key] = found.get(key, 0) + ok
                        verdicts[(label, stage)] = (ok, res.verdict)
                for stage in ("global", "whole") if verdicts else ():
                    if verdicts[("below", stage)] != verdicts[("above", stage)]:
                        differ.append(f"{name} {p.name} {stage}: below "
                                      f"{verdicts[('below', stage)]}, above "
                                      f"{verdicts[('above', stage)]}")
        n = len(originals)
        if "checks" in args.parts:
            report(found, differ, list(edits), n, args.below, args.above)
        for a in archives.values():
            a.close()
        if "timing" not in args.parts:
            return
        # global-stage time per query at --timing-rows synthetic rows (+ the linear path)
        print(f"\nglobal stage per query (find(): index search over the query's parts and 8 "
              f"orientations, then re-scoring), {len(queries)} real queries, ms")
        rng = np.random.default_rng(7)
        for rows in (args.below, args.timing_rows):
            pdq, ph = synthetic(rows, p_pdq, p_ph, rng)
            other = rng.integers(0, 2**63, size=(rows, 2), dtype=np.uint64)
            index = HashIndex(np.arange(rows, dtype=np.uint32), np.zeros(rows, np.uint8),
                              ["full"], pdq, ph, np.ascontiguousarray(other[:, 0]),
                              np.ascontiguousarray(other[:, 1]))
            if rows > LINEAR_MAX:
                _ = index.mih
            for q in queries:  # the query's hashes (cached per part) are not timed
                find(q, index, whole)
            times = []
            for q in queries:
                t = time.perf_counter()
                find(q, index, whole)
                times.append((time.perf_counter() - t) * 1000)
            how = "multi-index" if rows > LINEAR_MAX else "linear"
            print(f"   {rows:>10,} rows ({how}): median {statistics.median(times):.2f}, "
                  f"p90 {np.percentile(times, 90):.2f}")
            del index, pdq, ph
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\ntime {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
