"""Robustness benchmark: does imgverify find a recycled photo after realistic repost edits,
without raising false alarms on photos that are not archived?

    python bench/robustness.py [--quick] [--split report|tune] [--workers 2]

Data (../shared/data/photos): bsds500 + coco128 are split by sha256 of the relative path into
TUNE and REPORT halves (thresholds are tuned on TUNE; REPORT is held out). From the chosen
half: N originals are archived; the rest of that half are never archived and give the
negatives (several edits per photo, >= 1,000 queries). Distractors (>= 1,000) are archived
too: the other half's photos, the other shared sets, and 50-70 % crops of camera photos.

Every query (an edited copy, JPEG-encoded) goes through `imgverify.check(bytes, archive)`
and, in the same process on the same bytes, three peers: imagehash pHash alone (linear scan,
distance <= 10), PDQ alone (pdqhash full resolution, <= 31) and PDQ with its 8
rotations/flips (<= 31). Recall counts only the right reference ranked first.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import edits as E  # noqa: E402

import imgverify  # noqa: E402
from imgverify.verdict import Thresholds  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "photos"
GLOBAL_ONLY = Thresholds(use_local_features=False)


def _split(path: Path) -> str:
    digest = hashlib.sha256(str(path.relative_to(PHOTOS)).encode()).digest()
    return "tune" if digest[0] % 2 == 0 else "report"


def _jpeg_bytes(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# -- peers ----------------------------------------------------------------------------------
def _pdq_bits(rgb: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    import pdqhash

    h, _q = pdqhash.compute(rgb)
    dih, _q = pdqhash.compute_dihedral(rgb)
    return np.packbits(h.astype(np.uint8)), [np.packbits(d.astype(np.uint8)) for d in dih]


def peer_hashes(data: bytes) -> dict[str, Any]:
    import imagehash

    im = Image.open(io.BytesIO(data)).convert("RGB")
    pdq, dih = _pdq_bits(np.asarray(im))
    return {"phash": int(str(imagehash.phash(im)), 16), "pdq": pdq, "pdq_dih": dih}


# -- workers --------------------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _init(archive_path: str, ref_peer: dict[str, Any], pool_paths: list[str]) -> None:
    archive = imgverify.Archive.open(archive_path)
    archive.index()
    archive.feature_index()
    _STATE.update(archive=archive, peers=ref_peer,
                  pool=[Image.open(p).convert("RGB") for p in pool_paths])


def _nearest_peer(q: dict[str, Any]) -> dict[str, tuple[str, int]]:
    refs = _STATE["peers"]
    ph = np.array(refs["phash"], dtype=np.uint64)
    d_ph = np.bitwise_count(ph ^ np.uint64(q["phash"]))
    pdq = refs["pdq"]  # (N, 32) uint8
    d_pdq = np.unpackbits(pdq ^ q["pdq"], axis=1).sum(axis=1)
    d_dih = np.min([np.unpackbits(pdq ^ v, axis=1).sum(axis=1) for v in q["pdq_dih"]], axis=0)
    out = {}
    for name, d, limit in (("phash", d_ph, 10), ("pdq", d_pdq, 31), ("pdq_rot", d_dih, 31)):
        i = int(np.argmin(d))
        out[name] = (refs["sha"][i] if int(d[i]) <= limit else "", int(d[i]))
    return out


def _query(task: tuple[str, str, str, int, bool]) -> dict[str, Any]:
    """One edited query through imgverify (timed) and the peers."""
    kind, path, edit, seed, time_global = task
    rnd = random.Random(seed)
    im = Image.open(path).convert("RGB")
    edited, desc = E.EDITS[edit](im, rnd, _STATE["pool"])
    data = _jpeg_bytes(edited, rnd.randint(70, 90))
    archive = _STATE["archive"]
    t0 = time.perf_counter()
    result = imgverify.check(data, archive)
    latency = (time.perf_counter() - t0) * 1000
    global_latency = None
    if time_global:
        t0 = time.perf_counter()
        imgverify.check(data, archive, thresholds=GLOBAL_ONLY)
        global_latency = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    peers = _nearest_peer(peer_hashes(data))
    peer_latency = (time.perf_counter() - t0) * 1000
    top = result.matches[0] if result.matches else None
    return {"kind": kind, "edit": edit, "desc": desc, "verdict": result.verdict,
            "top_sha": top.sha256 if top else None, "top_method": top.method if top else None,
            "top_distances": top.distances if top else None,
            "truth": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
            "latency_ms": latency, "global_latency_ms": global_latency,
            "peer_latency_ms": peer_latency, "peers": peers}


# -- the run --------------------------------------------------------------------------------
def build(args: argparse.Namespace, workdir: Path) -> tuple[Path, list[Path], list[Path],
                                                             list[Path], dict[str, Any]]:
    halves: dict[str, list[Path]] = {"tune": [], "report": []}
    for f in sorted((PHOTOS / "bsds500").rglob("*.jpg")) + sorted(
            (PHOTOS / "coco128").rglob("*.jpg")):
        halves[_split(f)].append(f)
    rnd = random.Random(2024)
    mine = sorted(halves[args.split])
    rnd.shuffle(mine)
    originals = mine[: args.originals]
    negatives = mine[args.originals:]
    other = "tune" if args.split == "report" else "report"
    distractors = sorted(halves[other])
    for sub in ("camera_exif", "pkg_samples", "thorn_perception", "imagededup_ukbench/base_images",
                "augly_tests/inputs"):
        distractors += sorted(p for p in (PHOTOS / sub).rglob("*")
                              if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    camera = sorted((PHOTOS / "camera_exif").rglob("*.jpg"))
    extra = workdir / "distractor-crops"
    extra.mkdir()
    i = 0
    while len(distractors) < args.distractors and camera:
        src = camera[i % len(camera)]
        im = Image.open(src).convert("RGB")
        im.thumbnail((1024, 1024))
        keep = rnd.uniform(0.5, 0.7)
        w, h = im.size
        cw, ch = int(w * keep ** 0.5), int(h * keep ** 0.5)
        x, y = rnd.randint(0, w - cw), rnd.randint(0, h - ch)
        p = extra / f"crop{i:04d}.jpg"
        im.crop((x, y, x + cw, y + ch)).save(p, quality=90)
        distractors.append(p)
        i += 1
    distractors = distractors[: max(args.distractors, len(distractors))]
    manifest = workdir / "manifest.csv"
    with manifest.open("w") as fh:
        fh.write("image,date,event\n")
        for k, p in enumerate(originals + distractors):
            fh.write(f"{p},2020-01-{1 + k % 28:02d},ref {k}\n")
    archive_path = workdir / "bench.sqlite"
    t0 = time.perf_counter()
    report = imgverify.Archive.open(archive_path).ingest(manifest, workers=args.workers)
    ingest_s = time.perf_counter() - t0
    if report.errors:
        print(f"ingest: {len(report.errors)} rows rejected, e.g. {report.errors[0]}")
    # peers' reference hashes (full-resolution originals, as the peers would store them)
    ref_files = originals + distractors
    with ProcessPoolExecutor(args.workers) as pool:
        hashed = list(pool.map(peer_hashes, (p.read_bytes() for p in ref_files), chunksize=8))
    peers = {"phash": [h["phash"] for h in hashed],
             "pdq": np.stack([h["pdq"] for h in hashed]),
             "sha": [hashlib.sha256(p.read_bytes()).hexdigest() for p in ref_files]}
    info = {"archived": report.added + report.updated, "ingest_s": ingest_s,
            "archive_bytes": archive_path.stat().st_size}
    return archive_path, originals, negatives, distractors, {**info, "peers": peers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--split", choices=("report", "tune"), default="report")
    ap.add_argument("--originals", type=int, default=150)
    ap.add_argument("--distractors", type=int, default=1000)
    ap.add_argument("--negatives", type=int, default=1000, help="negative queries")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--edits", default="", help="comma-separated subset of edits")
    args = ap.parse_args()
    if not PHOTOS.exists():
        sys.exit(f"{PHOTOS} not found: this benchmark needs ../shared/data/photos")
    if args.quick:
        args.originals, args.distractors, args.negatives = 40, 300, 300
    started = time.perf_counter()
    names = [e for e in E.EDITS if not args.edits or e in args.edits.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        archive_path, originals, negatives, distractors, info = build(args, workdir)
        peers = info.pop("peers")
        print(f"split={args.split}: archive of {info['archived']} references "
              f"({len(originals)} originals + {len(distractors)} distractors), ingested in "
              f"{info['ingest_s']:.0f} s; {info['archive_bytes'] / info['archived']:,.0f} "
              "bytes per reference on disk (thumbnail, hashes, local features, context)")
        pool_paths = [str(p) for p in negatives[:30]]
        tasks = [("pos", str(p), e, hash((i, e)) & 0xFFFFFFF, i < 12)
                 for i, p in enumerate(originals) for e in names]
        rnd = random.Random(99)
        neg_tasks = []
        k = 0
        while len(neg_tasks) < args.negatives and negatives:
            p = negatives[k % len(negatives)]
            e = "jpeg" if k < len(negatives) else rnd.choice(names)
            neg_tasks.append(("neg", str(p), e, 7919 * k, k < 100))
            k += 1
        with ProcessPoolExecutor(args.workers, initializer=_init,
                                 initargs=(str(archive_path), peers, pool_paths)) as pool:
            results = list(pool.map(_query, tasks + neg_tasks, chunksize=4))
    print_table(results, names)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / f"robustness-{args.split}.json").write_text(json.dumps(
        {"args": vars(args), "info": info, "results": results}, default=str))
    print(f"\ntime {time.perf_counter() - started:.0f} s; per-query results in "
          f"bench/out/robustness-{args.split}.json")


def print_table(results: list[dict[str, Any]], names: list[str]) -> None:
    by_edit: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_edit[r["edit"] if r["kind"] == "pos" else "NEGATIVES"].append(r)
    head = (f"{'edit':<20}{'n':>5}{'likely':>8}{'lik|pos':>8}{'target':>8}{'pHash':>7}"
            f"{'PDQ':>7}{'PDQrot':>7}")
    print("\nRecall (right reference first), per edit. likely = likely_recycled; lik|pos = "
          "likely or possibly recycled")
    print(head)
    totals = defaultdict(float)
    count = 0
    for e in names:
        rs = by_edit.get(e, [])
        if not rs:
            continue
        n = len(rs)
        ok_l = sum(r["verdict"] == "likely_recycled" and r["top_sha"] == r["truth"] for r in rs)
        ok_p = sum(r["verdict"] in ("likely_recycled", "possibly_recycled")
                   and r["top_sha"] == r["truth"] for r in rs)
        peer = {k: sum(r["peers"][k][0] == r["truth"] for r in rs) for k in
                ("phash", "pdq", "pdq_rot")}
        target = E.TARGETS.get(e, 0)
        flag = "" if ok_p / n >= target else "  <- below target"
        print(f"{e:<20}{n:>5}{ok_l / n:>8.1%}{ok_p / n:>8.1%}{target:>8.0%}"
              f"{peer['phash'] / n:>7.1%}{peer['pdq'] / n:>7.1%}{peer['pdq_rot'] / n:>7.1%}"
              f"{flag}")
        totals["l"] += ok_l
        totals["p"] += ok_p
        count += n
    if count:
        print(f"{'all positives':<20}{count:>5}{totals['l'] / count:>8.1%}"
              f"{totals['p'] / count:>8.1%}")
    negs = by_edit.get("NEGATIVES", [])
    if negs:
        n = len(negs)
        fl = sum(r["verdict"] == "likely_recycled" for r in negs)
        fp = sum(r["verdict"] == "possibly_recycled" for r in negs)
        peer = {k: sum(bool(r["peers"][k][0]) for r in negs) for k in ("phash", "pdq", "pdq_rot")}
        print(f"\nFalse alarms on {n} negative queries (photos not archived, edited): imgverify "
              f"likely {fl} ({fl / n:.2%}; target <= 0.10%), possibly {fp} ({fp / n:.2%}; target "
              f"<= 1%); pHash<=10 {peer['phash']}, PDQ<=31 {peer['pdq']}, PDQ+rot<=31 "
              f"{peer['pdq_rot']}")
        for r in negs:
            if r["verdict"] != "no_match":
                print(f"   false {r['verdict']}: {r['desc']} via {r['top_method']} "
                      f"{r['top_distances']}")
    lat = [r["latency_ms"] for r in results]
    glat = [r["global_latency_ms"] for r in results if r["global_latency_ms"] is not None]
    full_same = [r["latency_ms"] for r in results if r["global_latency_ms"] is not None]
    plat = [r["peer_latency_ms"] for r in results]
    print(f"\nLatency (ms, median; p95): imgverify check {statistics.median(lat):.1f} "
          f"({np.percentile(lat, 95):.1f}); on the {len(glat)} queries also run global-only: "
          f"full {statistics.median(full_same):.1f} vs global-hash path alone "
          f"{statistics.median(glat):.1f} (ratio "
          f"{statistics.median(full_same) / statistics.median(glat):.2f}, "
          f"target <= 3); peers' hashing + scan {statistics.median(plat):.1f}")
    neg_lat = [r["latency_ms"] for r in negs]
    pos_lat = [r["latency_ms"] for r in results if r["kind"] == "pos"]
    if neg_lat and pos_lat:
        print(f"  positives {statistics.median(pos_lat):.1f} ms, negatives "
              f"{statistics.median(neg_lat):.1f} ms (negatives always run the local stage)")
    misses = [r for r in results if r["kind"] == "pos" and not (
        r["verdict"] in ("likely_recycled", "possibly_recycled") and r["top_sha"] == r["truth"])]
    if misses:
        print(f"\n{len(misses)} misses, e.g.:")
        for r in misses[:25]:
            print(f"   {r['edit']:<16} {r['desc'][:60]:<60} -> {r['verdict']} "
                  f"{r['top_method'] or ''} {r['top_distances'] or ''}")


if __name__ == "__main__":
    main()
