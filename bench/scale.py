"""Scale benchmark: does the whole checker keep finding crops, screenshots, stories, caption
bars and collage tiles as the archive grows from 10 thousand to 10 million references, at
what cost per query and per reference, and without false alarms?

    python bench/scale.py [--sizes 10000,100000,1000000] [--split tune|report]
                          [--originals 120] [--negatives 5000] [--workers 2]
                          [--design compact|flat] [--set NAME=VALUE (tune only)]
    python bench/scale.py --sizes 10000000          # the 10 M row, on its own

Data (../shared/data/photos, see its README): bsds500 + coco128, split into TUNE and REPORT
halves by bench/robustness.py's rule. From the chosen split: `--originals` photos are
archived for real (a temporary SQLite archive: hashes, thumbnails, stored ORB features), and
the next photos of the split are the negatives' sources. The distractor *content* comes from
the remaining photos of both splits (never an original, never a negative's source).

Distractors, to reach each size (stated in the output):
* global hashes: synthetic rows with independent bits at the per-bit frequencies of the
  pool photos' real PDQ, pHash, dHash and wHash (as bench/speed.py does for PDQ);
* local features: each distractor has as many keypoints as a random pool photo, each one a
  random keypoint of a random pool photo (real ORB descriptor, position and word: words
  and embeddings occur as often as in real photos), with every descriptor bit flipped with
  probability 1/4 (embedding bits included, the word kept), so no two distractors share a
  descriptor exactly; co-occurrence within a photo is not modelled. A distractor that gets
  verified is rebuilt from its number (`Pool.features`): the descriptors its postings
  were made from;
* a distractor matched by the checker is a false alarm like any other; it has no thumbnail,
  so nothing but its inliers speaks for it (harsher than a real reference).

Queries (encoded as the JPEG a user uploads, bench/edits.py): every original through the
crop (75/60/40 % kept), screenshot, story, caption_bar and collage edits; found = likely or
possible with the right reference first. Negatives: at least `--negatives` edited copies
(every edit of bench/edits.py in turn) of photos that are not archived; any likely or
possible verdict is a false alarm. Each query is one `imgverify.check(data, archive,
align=False)` (what a scan runs), timed, one at a time unless `--workers` asks for threads.

Bytes per reference are the in-memory indexes divided by the archive size: global = the hash
rows and the multi-index tables; local = the compact index (postings, embeddings, word
offsets, per-reference keys and counts) or, with `--design flat`, every descriptor, owner
and the faiss index (the design before; only feasible up to about 100 k here).
"""

from __future__ import annotations

import os

# one OpenMP thread from the start, as check() holds it while it runs anyway
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import edits as E  # noqa: E402
from robustness import (  # noqa: E402
    PHOTOS,
    decodable,
    fake_date,
    images_under,
    rel,
    split_of,
    stable_key,
    write_manifest,
)

import imgverify  # noqa: E402
from imgverify.ingest import ingest_manifest  # noqa: E402
from imgverify.signals.compact import CompactFeatureIndex  # noqa: E402
from imgverify.signals.features import REF_FEATURES, FeatureIndex, LocalFeatures, extract  # noqa: E402
from imgverify.signals.vocabulary import default_vocabulary  # noqa: E402
from imgverify.store.index import HashIndex  # noqa: E402
from imgverify.store.sqlite import reference_hashes  # noqa: E402

GROUPS = {"crop": ("crop_75", "crop_60", "crop_40"), "screenshot": ("screenshot",),
          "story": ("story",), "caption_bar": ("caption_bar",), "collage": ("collage",)}
SYN_BASE = 2_000_000_000  # keys of synthetic distractors (real keys are small)
LIKELY, POSSIBLY = "likely_recycled", "possibly_recycled"


# -- counter-based randomness: a distractor is rebuilt from its number alone ----------------
def set_constants(module: Any, assignments: list[str]) -> None:
    """Apply NAME=VALUE settings of a module's constants for one bench run (`--set`, for
    tuning on TUNE: the library itself never changes them)."""
    for item in assignments:
        name, _, value = item.partition("=")
        current = getattr(module, name)
        kind = float if current is None else type(current)  # an unset optional: a number
        setattr(module, name, value.lower() in ("1", "true", "yes") if kind is bool
                else kind(value))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (uint64 wrap-around is the point)."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _quarter_bits(seed: np.ndarray, salt: int) -> np.ndarray:
    """64 random bits per seed, each set with probability 1/4 (AND of two draws)."""
    a = _mix(seed * np.uint64(4) + np.uint64(salt))
    b = _mix(seed * np.uint64(4) + np.uint64(salt + 1))
    return a & b


class Pool:
    """The distractor content: every keypoint of the pool photos, with its position, word and
    embedding. A distractor's keypoints are drawn one by one from it (so words and
    embeddings occur as often as in real photos), never a block of one photo copied into
    thousands of distractors."""

    def __init__(self, feats: list[LocalFeatures]) -> None:
        vocab = default_vocabulary()
        self.desc = np.concatenate([f.descriptors for f in feats])
        self.points = np.concatenate([f.points for f in feats])
        self.words = vocab.assign(self.desc, 1)[0][:, 0].astype(np.int32)
        self.bits = np.unpackbits(self.desc, axis=1)  # (n, 256) 0/1
        self.he_pos = vocab.positions(self.words).astype(np.uint8)  # embedded bits per word
        self.he = vocab.embed(self.desc, self.words)
        self.counts = np.array([len(f) for f in feats], np.int64)  # keypoints per photo
        self.n = int(self.desc.shape[0])

    def _layout(self, js: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pool keypoint per posting, owner within js, keypoints per distractor)."""
        js64 = js.astype(np.uint64)
        per = self.counts[(_mix(js64 * np.uint64(7) + np.uint64(3))
                           % np.uint64(self.counts.size)).astype(np.int64)]
        owner = np.repeat(np.arange(js.size), per)
        rank = np.arange(owner.size) - np.repeat(np.cumsum(per) - per, per)
        seeds = js64[owner] * np.uint64(1024) + rank.astype(np.uint64)
        pick = (_mix(seeds * np.uint64(5) + np.uint64(1)) % np.uint64(self.n)).astype(np.int64)
        return pick, owner, per

    def postings(self, js: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(words, distractor index within js, embeddings, counts per distractor): each
        embedding is that of the descriptor `features` rebuilds, under its word."""
        pick, owner, per = self._layout(js)
        rank = np.arange(owner.size) - np.repeat(np.cumsum(per) - per, per)
        seeds = js.astype(np.uint64)[owner] * np.uint64(1024) + rank.astype(np.uint64)
        return self.words[pick], owner, self.he[pick] ^ self._he_mask(seeds), per

    @staticmethod
    def _he_mask(seeds: np.ndarray) -> np.ndarray:
        """The flips of the embedded bits (p = 1/4 each), 16 per keypoint."""
        return (_quarter_bits(seeds, 11) & np.uint64(0xFFFF)).astype(np.uint16)

    def features(self, j: int) -> LocalFeatures:
        """The distractor's descriptors, every bit flipped with probability 1/4, all from its
        number: the embedded bits (at its word's positions) by `_he_mask`, so they match its
        postings, the others by further draws."""
        idx, _owner, _per = self._layout(np.array([j]))
        seeds = np.uint64(j) * np.uint64(1024) + np.arange(idx.size, dtype=np.uint64)
        other = np.stack([_quarter_bits(seeds, 20 + 2 * k) for k in range(4)], axis=1)
        bits = self.bits[idx] ^ np.unpackbits(other.astype(">u8").view(np.uint8), axis=1)
        pos = self.he_pos[idx].astype(np.int64)
        he_flip = np.unpackbits(self._he_mask(seeds).astype(">u2").view(np.uint8)
                                .reshape(-1, 2), axis=1)
        np.put_along_axis(bits, pos, np.take_along_axis(self.bits[idx], pos, axis=1) ^ he_flip,
                          axis=1)
        return LocalFeatures(self.points[idx].copy(), np.packbits(bits, axis=1), 640, 480)


# -- the archive as the checker sees it -----------------------------------------------------
class ScaledArchive:
    """The real archive of originals, seen through indexes that also hold the distractors."""

    def __init__(self, real: Any, hash_index: HashIndex, local: Any, size: int) -> None:
        self.real = real
        self.hash_index = hash_index
        self.local = local
        self.size = size
        first = int(np.asarray(real.index().ref_keys)[0])
        self._template = real.references([first])[first]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def __len__(self) -> int:
        return self.size

    def index(self) -> HashIndex:
        return self.hash_index

    def feature_index(self) -> Any:
        return self.local

    def references(self, keys: Any) -> dict[int, Any]:
        keys = list(keys)
        out = self.real.references([k for k in keys if k < SYN_BASE])
        for k in keys:
            if k >= SYN_BASE:
                out[k] = dataclasses.replace(
                    self._template, key=k, reference_id=f"synthetic-{k - SYN_BASE}",
                    sha256=f"{k:064x}", event="synthetic distractor", caption=None)
        return out

    def thumbnail(self, key: int) -> bytes | None:
        return None if key >= SYN_BASE else self.real.thumbnail(key)  # type: ignore[no-any-return]

    def summary(self) -> dict[str, Any]:
        s = dict(self.real.summary())
        s["references"] = self.size
        return s


# -- building one size ----------------------------------------------------------------------
def bit_frequencies(pool_paths: list[Path]) -> dict[str, np.ndarray]:
    fams: dict[str, list[np.ndarray]] = defaultdict(list)
    for p in pool_paths:
        with Image.open(p) as im:
            hs = dict(reference_hashes(im.convert("RGB")))["full"]
        fams["pdq"].append(np.unpackbits(np.frombuffer(hs.pdq.to_bytes(32, "big"), np.uint8)))
        for f in ("phash", "dhash", "whash"):
            fams[f].append(np.unpackbits(np.frombuffer(
                getattr(hs, f).to_bytes(8, "big"), np.uint8)))
    return {k: np.mean(v, axis=0).astype(np.float32) for k, v in fams.items()}


def synthetic_bits(n: int, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    words = p.size // 64
    out = np.empty((n, words), np.uint64)
    for s in range(0, n, 500_000):
        m = min(500_000, n - s)
        bits = (rng.random((m, p.size), dtype=np.float32) < p).astype(np.uint8)
        out[s:s + m] = np.packbits(bits, axis=1).view(">u8").astype(np.uint64)
    return out


def build_hash_index(real: HashIndex, n_syn: int, freq: dict[str, np.ndarray], seed: int
                     ) -> HashIndex:
    rng = np.random.default_rng(seed)
    full = real.part_names.index("full") if "full" in real.part_names else 0
    keys = np.concatenate([np.asarray(real.ref_keys, np.uint32),
                           (SYN_BASE + np.arange(n_syn)).astype(np.uint32)])
    codes = np.concatenate([np.asarray(real.part_codes, np.uint8),
                            np.full(n_syn, full, np.uint8)])
    pdq = np.concatenate([np.asarray(real.pdq), synthetic_bits(n_syn, freq["pdq"], rng)])
    fam = {f: np.concatenate([np.asarray(getattr(real, f)),
                              synthetic_bits(n_syn, freq[f], rng).ravel()])
           for f in ("phash", "dhash", "whash")}
    return HashIndex(keys, codes, list(real.part_names), pdq, fam["phash"], fam["dhash"],
                     fam["whash"])


def build_compact(real_feats: dict[int, LocalFeatures], pool: Pool, n_syn: int,
                  loader: Any) -> CompactFeatureIndex:
    vocab = default_vocabulary()
    real_keys = sorted(real_feats)
    chunk_refs = 60_000
    n_chunks_syn = (n_syn + chunk_refs - 1) // chunk_refs
    syn_counts = np.empty(n_syn, np.uint16)
    for c in range(n_chunks_syn):
        js = np.arange(c * chunk_refs, min(n_syn, (c + 1) * chunk_refs))
        syn_counts[js] = pool._layout(js)[2]
    real_counts = np.array([len(real_feats[k]) for k in real_keys], np.uint16)
    n_real = len(real_keys)

    def chunk(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if i == 0:
            desc = np.concatenate([real_feats[k].descriptors for k in real_keys])
            words = vocab.assign(desc, 1)[0][:, 0]
            rows = np.repeat(np.arange(n_real, dtype=np.uint32), real_counts.astype(np.int64))
            return words.astype(np.int32), rows, vocab.embed(desc, words)
        js = np.arange((i - 1) * chunk_refs, min(n_syn, i * chunk_refs))
        words, owner, he, _per = pool.postings(js)
        return words, (n_real + js[owner]).astype(np.uint32), he

    keys = np.concatenate([np.array(real_keys, np.int64),
                           SYN_BASE + np.arange(n_syn, dtype=np.int64)])
    return CompactFeatureIndex.from_chunks(keys, np.concatenate([real_counts, syn_counts]),
                                           chunk, 1 + n_chunks_syn, loader, vocab)


def build_flat(real_feats: dict[int, LocalFeatures], pool: Pool, n_syn: int) -> FeatureIndex:
    keys = sorted(real_feats) + [SYN_BASE + j for j in range(n_syn)]
    feats = [real_feats[k] for k in sorted(real_feats)] + [pool.features(j)
                                                           for j in range(n_syn)]
    return FeatureIndex(keys, feats)


def build_scaled(real: Any, real_index: HashIndex, real_feats: dict[int, LocalFeatures],
                 pool: Pool, freq: dict[str, np.ndarray], size: int, design: str = "compact",
                 seed: int = 0) -> tuple[ScaledArchive, dict[str, float]]:
    """`real` seen with synthetic distractors up to `size` references, and what it cost."""
    n_syn = max(0, size - len(real))
    t0 = time.perf_counter()
    hidx = build_hash_index(real_index, n_syn, freq, seed=seed or size)
    if len(hidx) > 20_000:
        _ = hidx.mih
    t_global = time.perf_counter() - t0

    def loader(keys: list[int]) -> dict[int, LocalFeatures]:
        out = real.features_of(k for k in keys if k < SYN_BASE)
        out.update({k: pool.features(k - SYN_BASE) for k in keys if k >= SYN_BASE})
        return out

    t0 = time.perf_counter()
    local = (build_compact(real_feats, pool, n_syn, loader) if design == "compact"
             else build_flat(real_feats, pool, n_syn))
    return ScaledArchive(real, hidx, local, size), {
        "build_s_global": t_global, "build_s_local": time.perf_counter() - t0,
        "bytes_per_ref_global": hidx.nbytes / size, "bytes_per_ref_local": local.nbytes / size}


def make_pool(pool_paths: list[Path]) -> Pool:
    feats = []
    for p in pool_paths:
        with Image.open(p) as im:
            feats.append(extract(im.convert("RGB"), REF_FEATURES))
    return Pool(feats)


def scaled_archive(real: Any, size: int, pool_paths: list[Path], seed: int = 0
                   ) -> tuple[ScaledArchive, dict[str, float]]:
    """For other benches (bench/throughput.py --scale): the compact design at `size`."""
    real_index = real.index()
    real_feats = real.features_of(int(k) for k in np.asarray(real_index.ref_keys))
    return build_scaled(real, real_index, real_feats, make_pool(pool_paths),
                        bit_frequencies(pool_paths), size, seed=seed)


def pool_photos(exclude: set[str], count: int) -> list[Path]:
    """Pool photos for distractor content: bsds500/coco128 photos not in `exclude`."""
    photos = [p for p in images_under(PHOTOS / "bsds500") + images_under(PHOTOS / "coco128")
              if rel(p) not in exclude]
    return sorted(photos, key=lambda p: stable_key("pool" + rel(p)))[:count]


# -- queries --------------------------------------------------------------------------------
_ARCHIVE: Any = None


def _run(task: tuple[str, str, str | None, bytes]) -> dict[str, Any]:
    kind, edit, truth, data = task
    t0 = time.perf_counter()
    res = imgverify.check(data, _ARCHIVE, align=False)
    ms = (time.perf_counter() - t0) * 1000
    top = res.matches[0] if res.matches else None
    return {"kind": kind, "edit": edit, "truth": truth, "verdict": res.verdict, "ms": ms,
            "top": top.reference_id if top else None,
            "top_synthetic": bool(top and top.reference_id.startswith("synthetic-")),
            "error": res.error}


def make_queries(originals: list[Path], ref_ids: dict[str, str], neg_photos: list[Path],
                 n_neg: int, collage_pool: list[Path], salt: str = "scale"
                 ) -> list[tuple[str, str, str | None, bytes]]:
    """Positives (every original through every edit of GROUPS) then negatives. The edit
    parameters come from `salt` ("scale" gives the figures published before; any other salt
    gives a fresh draw of the same split)."""
    tag = "" if salt == "scale" else f"{salt}|"
    pool_imgs = []
    for p in collage_pool[:12]:
        with Image.open(p) as im:
            pool_imgs.append(im.convert("RGB"))
    E.set_pool(pool_imgs)
    tasks: list[tuple[str, str, str | None, bytes]] = []
    for p in originals:
        with Image.open(p) as im:
            rgb = im.convert("RGB")
        for group, names in GROUPS.items():
            for name in names:
                rnd = random.Random(stable_key(f"{tag}scale|{rel(p)}|{name}"))
                data, _q = E.query_bytes(E.EDITS[name](rgb, rnd), rnd)
                tasks.append((f"pos:{group}", name, ref_ids[rel(p)], data))
    all_edits = sorted(E.EDITS)
    i = 0
    while sum(1 for t in tasks if t[0] == "neg") < n_neg:
        p = neg_photos[i % len(neg_photos)]
        name = all_edits[(i // len(neg_photos) + stable_key(rel(p))) % len(all_edits)]
        with Image.open(p) as im:
            rnd = random.Random(stable_key(f"{tag}scale-neg|{rel(p)}|{name}|{i}"))
            data, _q = E.query_bytes(E.EDITS[name](im.convert("RGB"), rnd), rnd)
        tasks.append(("neg", name, None, data))
        i += 1
    return tasks


def pct(v: list[float], q: float) -> float:
    return float(np.percentile(v, q)) if v else float("nan")


def prepare(args: argparse.Namespace) -> tuple[Any, HashIndex, dict[int, LocalFeatures], Pool,
                                              dict[str, np.ndarray], list[Any], dict[str, int]]:
    """The real archive of `args.originals` photos of `args.split`, the distractor pool and
    statistics, and the queries; also the archive key of each reference id."""
    photos = [p for p in images_under(PHOTOS / "bsds500") + images_under(PHOTOS / "coco128")
              if decodable(p)]
    mine = sorted((p for p in photos if split_of(p) == args.split),
                  key=lambda p: stable_key(args.salt + rel(p)))
    originals = mine[:args.originals]
    neg_photos = mine[args.originals:args.originals + args.neg_photos]
    used = {rel(p) for p in originals + neg_photos}
    rest = sorted((p for p in photos if rel(p) not in used), key=lambda p: stable_key(
        "pool" + rel(p)))
    # the collage edit needs 12 filler photos beyond the pool; a large draw of the split
    # leaves fewer photos than --pool asks, and the pool gives way (said below)
    n_pool = max(0, min(args.pool, len(rest) - 12))
    pool_paths, collage_pool = rest[:n_pool], rest[n_pool:n_pool + 12]
    print(f"split={args.split} (salt {args.salt!r}): {len(originals)} archived originals, "
          f"{len(neg_photos)} negative sources, {len(pool_paths)} pool photos for distractor "
          f"content", flush=True)

    work = Path(tempfile.mkdtemp(prefix="imgverify-scale-"))
    manifest = work / "m.csv"
    write_manifest(manifest, [(p, fake_date(rel(p))) for p in originals])
    real = imgverify.Archive(work / "a.sqlite")
    ingest_manifest(real, manifest, workers=2, build_index=False)
    ref_ids = {}
    keys = {}
    for ref in real.iter_references():
        ref_ids[rel(Path(ref.image_uri or ""))] = ref.reference_id
        keys[ref.reference_id] = ref.key
    real_index = real.index()
    real_feats = real.features_of(int(k) for k in np.asarray(real_index.ref_keys))

    t0 = time.perf_counter()
    freq = bit_frequencies(pool_paths)
    pool = make_pool(pool_paths)
    print(f"pool statistics in {time.perf_counter() - t0:.0f} s; making queries", flush=True)
    tasks = make_queries(originals, ref_ids, neg_photos, args.negatives, collage_pool,
                         args.salt)
    print(f"{len(tasks)} queries ({sum(t[0] != 'neg' for t in tasks)} positives)", flush=True)
    return real, real_index, real_feats, pool, freq, tasks, keys


def main() -> None:
    global _ARCHIVE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--split", choices=("tune", "report"), default="tune")
    ap.add_argument("--originals", type=int, default=120,
                    help="archived photos per split (each edit group has this many positives; "
                         "at 40, one photo is 2.5 points of a group's recall)")
    ap.add_argument("--negatives", type=int, default=5000)
    ap.add_argument("--neg-photos", type=int, default=250)
    ap.add_argument("--pool", type=int, default=400, help="photos the distractors are made of")
    ap.add_argument("--workers", type=int, default=1,
                    help="threads running checks (1: latency on one core, no contention)")
    ap.add_argument("--design", choices=("compact", "flat"), default="compact")
    ap.add_argument("--salt", default="scale",
                    help="orders the split and draws the edits; a new salt is a fresh draw "
                    "(after a split has been looked at)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="set a constant of imgverify.signals.compact for the run, e.g. "
                         "PROBE_CHANCE_REFERENCES=1, or search.NAME=VALUE one of "
                         "imgverify.match.search (tuning: TUNE split only)")
    args = ap.parse_args()
    if args.set and args.split != "tune":
        ap.error("--set tunes: use it on --split tune, never on the held-out report split")
    if not PHOTOS.is_dir():
        sys.exit(f"skipped: {PHOTOS} not found (../shared/data/photos beside the project)")
    if args.set:
        from imgverify.match import search
        from imgverify.signals import compact

        # NAME=VALUE sets imgverify.signals.compact's constant; search.NAME=VALUE search's
        set_constants(compact, [a for a in args.set if not a.startswith("search.")])
        set_constants(search, [a.removeprefix("search.") for a in args.set
                               if a.startswith("search.")])
        print(f"constants set for this run: {', '.join(args.set)}", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    real, real_index, real_feats, pool, freq, tasks, _keys = prepare(args)

    rows = []
    for size in sizes:
        _ARCHIVE, built = build_scaled(real, real_index, real_feats, pool, freq, size,
                                       args.design)
        t_global, t_local = built["build_s_global"], built["build_s_local"]
        print(f"size {size:,}: indexes built (global {t_global:.0f} s, local {t_local:.0f} s);"
              f" querying", flush=True)
        t0 = time.perf_counter()
        if args.workers > 1:  # threads share the indexes (check() is thread-safe)
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(args.workers) as ex:
                results = list(ex.map(_run, tasks))
        else:
            results = [_run(t) for t in tasks]
        wall = time.perf_counter() - t0
        row = summarise(results, size, len(_ARCHIVE.hash_index), _ARCHIVE.hash_index.nbytes,
                        _ARCHIVE.local.nbytes, t_global, t_local, wall, args)
        rows.append(row)
        print_row(row, header=len(rows) == 1, flush=True)
        _ARCHIVE = None  # frees both indexes before the next size
    print_table(rows, args)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    salt = "" if args.salt == "scale" else f"-{args.salt}"
    path = out / f"scale-{args.design}-{args.split}{salt}-{'_'.join(map(str, sizes))}.json"
    path.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"\nwrote {path}")


def summarise(results: list[dict[str, Any]], size: int, hash_rows: int, gbytes: int,
              lbytes: int, t_global: float, t_local: float, wall: float,
              args: argparse.Namespace) -> dict[str, Any]:
    recall: dict[str, float] = {}
    for group in GROUPS:
        pos = [r for r in results if r["kind"] == f"pos:{group}"]
        ok = sum(1 for r in pos if r["verdict"] in (LIKELY, POSSIBLY) and r["top"] == r["truth"])
        recall[group] = ok / max(1, len(pos))
    neg = [r for r in results if r["kind"] == "neg"]
    verdicts = Counter(r["verdict"] for r in neg)
    pos_ms = [r["ms"] for r in results if r["kind"] != "neg"]
    neg_ms = [r["ms"] for r in neg]
    all_ms = pos_ms + neg_ms
    return {"size": size, "hash_rows": hash_rows, "recall": recall,
            "negatives": len(neg), "false_likely": verdicts.get(LIKELY, 0),
            "false_possible": verdicts.get(POSSIBLY, 0),
            "errors": sum(1 for r in results if r["verdict"] == "error"),
            "p50_ms": pct(all_ms, 50), "p95_ms": pct(all_ms, 95),
            "pos_p95_ms": pct(pos_ms, 95), "neg_p95_ms": pct(neg_ms, 95),
            "pos_p50_ms": pct(pos_ms, 50), "neg_p50_ms": pct(neg_ms, 50),
            "bytes_per_ref_global": gbytes / size, "bytes_per_ref_local": lbytes / size,
            "build_s_global": t_global, "build_s_local": t_local,
            "queries_per_s": len(results) / wall, "workers": args.workers,
            "design": args.design}


def print_row(row: dict[str, Any], header: bool, flush: bool = False) -> None:
    if header:
        print(f"{'refs':>10} " + " ".join(f"{g[:9]:>9}" for g in GROUPS)
              + f" {'FP like':>7} {'FP poss':>7} {'p50':>6} {'p95':>6} {'negp95':>6}"
              f" {'posp95':>6} {'B/ref g':>7} {'B/ref l':>7} {'build g':>7} {'build l':>7}")
    print(f"{row['size']:>10,} " + " ".join(f"{100 * row['recall'][g]:>8.1f}%" for g in GROUPS)
          + f" {row['false_likely']:>7} {row['false_possible']:>7} {row['p50_ms']:>6.0f}"
          f" {row['p95_ms']:>6.0f} {row['neg_p95_ms']:>6.0f} {row['pos_p95_ms']:>6.0f}"
          f" {row['bytes_per_ref_global']:>7.0f} {row['bytes_per_ref_local']:>7.0f}"
          f" {row['build_s_global']:>6.0f}s {row['build_s_local']:>6.0f}s", flush=flush)


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nScale ({args.design} local index, split={args.split}; recall = likely or "
          f"possible with the right reference first, {args.originals} originals per edit; "
          f"false alarms on {rows[0]['negatives']} negatives; latency in ms per query with "
          f"{args.workers} thread(s) on this machine):")
    for i, row in enumerate(rows):
        print_row(row, header=i == 0)
    if len(rows) > 1:
        first = rows[0]
        for row in rows[1:]:
            drops = {g: 100 * (first["recall"][g] - row["recall"][g]) for g in GROUPS}
            print(f"  {row['size']:,} vs {first['size']:,}: largest recall drop "
                  f"{max(drops.values()):.1f} points ({max(drops, key=lambda g: drops[g])})")


if __name__ == "__main__":
    main()
