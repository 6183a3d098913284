"""How the thresholds for hash-only references (PDQ from a hash list, no image) are chosen.

    python bench/pdq_only.py [--quick] [--photos ../shared/data/photos]

A hash-only reference has one PDQ and nothing else: no pHash/dHash/wHash to average with, no
local features, no thumbnail. Its matches rest on the PDQ distance alone, so they get their
own thresholds. Measured exactly like bench/thresholds.py (same photos, same TUNE / REPORT
split, same edits, same query pipeline: every hashed part of the query and all 8
orientations), except that each archived photo is stored as a hash-only reference (the
PDQ of its full frame, as `imgverify hash` and Meta's tools compute it):
 * positives: edited copies of archived photos -> PDQ distance to their own reference;
 * negatives: copies of non-archived photos -> PDQ distance to every reference (per-pair
   rate) and to the nearest one (per-query rate).
Thresholds are chosen on TUNE only and reported on REPORT, with the rule of bench/thresholds:
`likely` at an extrapolated per-pair false-match rate of 1e-9, `possible` at 1e-8, both
capped at 0.8 x the closest TUNE negative; `possible` never above Meta's match threshold
(31, python-threatexchange's PDQ_CONFIDENT_MATCH_THRESHOLD) and `likely` never above
`LIKELY_MAX`. That last cap is a judgement, not a fit: unrelated photos sit far away
(the fit allows far more than 31), but PDQ alone cannot tell a copy from another photo of
the same fixed scene, and such look-alikes reach into Meta's band (the same_place report
below, never used for choosing, has a webcam pair at 30). With no image to check a match
against, only near-duplicates are "likely"; the rest of Meta's band is "possible".
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from thresholds import EDITS, NEGATIVE_EDITS, _jpeg, _split, distance_at_rate, tail_fit  # noqa: E402

from imgverify.match.search import QueryHashes, find  # noqa: E402
from imgverify.match.verdict import DEFAULT_THRESHOLDS, Thresholds  # noqa: E402
from imgverify.media.load import load  # noqa: E402
from imgverify.store.index import PDQ_ONLY_PART, HashIndex  # noqa: E402
from imgverify.store.sqlite import reference_hashes  # noqa: E402

WIDE = Thresholds(pdq_radius=256, pdq_only_min_quality=0)
META_MATCH = 31  # python-threatexchange PDQ_CONFIDENT_MATCH_THRESHOLD
LIKELY_MAX = 20


def _ref_row(args: tuple[int, str]) -> tuple[int, str, object, int]:
    key, path = args
    loaded = load(path)
    full = dict(reference_hashes(loaded.image, loaded.scale))["full"]
    return key, PDQ_ONLY_PART, full, full.pdq_quality


_INDEX: HashIndex | None = None


def _init(index: HashIndex) -> None:
    global _INDEX
    _INDEX = index


def _measure(task: tuple[str, int, str, int]) -> tuple[str, int, dict[int, int], int]:
    """(edit, owner key or -1, {ref key: PDQ distance}, query PDQ quality)."""
    edit, owner, path, seed = task
    rnd = random.Random(seed)
    im = Image.open(path).convert("RGB")
    data = _jpeg(im) if edit == "none" else EDITS[edit](im, rnd)
    loaded = load(data)
    qh = QueryHashes(loaded.image, loaded.scale)
    assert _INDEX is not None
    found = find(qh, _INDEX, WIDE, limit=10 ** 9)
    return edit, owner, {m.ref_key: m.distances["pdq"] for m in found}, \
        qh.default_hashset().pdq_quality


def run_split(name: str, files: list[Path], workers: int) -> dict[str, object]:
    rnd = random.Random(1234)
    files = sorted(files)
    rnd.shuffle(files)
    archived, negatives = files[: len(files) // 2], files[len(files) // 2:]
    with ProcessPoolExecutor(workers) as pool:
        refs = list(pool.map(_ref_row, enumerate(map(str, archived)), chunksize=8))
    index = HashIndex.from_rows([(k, p, hs) for k, p, hs, _q in refs])  # type: ignore[misc]
    ref_quality = np.array([q for *_r, q in refs])
    tasks = [(e, k, str(p), k * 97 + i) for k, p in enumerate(archived)
             for i, e in enumerate(EDITS)]
    tasks += [(e, -1, str(p), 7 + i) for p in negatives for i, e in enumerate(NEGATIVE_EDITS)]
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(index,)) as pool:
        results = list(pool.map(_measure, tasks, chunksize=16))
    pos: dict[str, list[int]] = {e: [] for e in EDITS}
    neg_best: list[int] = []
    neg_pairs: list[int] = []
    for edit, owner, dists, _quality in results:
        if owner >= 0:
            pos[edit].append(dists.get(owner, 256))
        else:
            values = list(dists.values())
            neg_pairs.extend(values)
            neg_best.append(min(values) if values else 256)
    pairs_total = len([t for t in tasks if t[1] < 0]) * len(archived)
    return {"name": name, "archived": len(archived), "negatives": len(negatives),
            "pos": pos, "neg_best": np.array(neg_best), "neg_pairs": np.array(neg_pairs),
            "pairs_total": pairs_total, "ref_quality": ref_quality}


def choose(tune: dict[str, object]) -> tuple[int, int]:
    neg_best, pairs = tune["neg_best"], tune["neg_pairs"]
    assert isinstance(neg_best, np.ndarray) and isinstance(pairs, np.ndarray)
    cap = 0.8 * float(neg_best.min())
    fit = tail_fit(pairs.astype(float))
    likely = min(cap, distance_at_rate(fit, 1e-9), LIKELY_MAX)
    possible = min(cap, distance_at_rate(fit, 1e-8), META_MATCH)
    print(f"TUNE tail fit: log10(rate) = {fit[0]:.2f} + {fit[1]:.3f} d; rate 1e-6 at d="
          f"{distance_at_rate(fit, 1e-6):.1f}, 1e-8 at {distance_at_rate(fit, 1e-8):.1f}, "
          f"1e-9 at {distance_at_rate(fit, 1e-9):.1f}; 0.8 x closest negative = {cap:.1f}")
    return int(np.floor(likely)), int(np.floor(possible))


def report(split: dict[str, object], likely: int, possible: int, label: str) -> None:
    pos, neg_best, neg_pairs = split["pos"], split["neg_best"], split["neg_pairs"]
    assert isinstance(pos, dict) and isinstance(neg_best, np.ndarray)
    assert isinstance(neg_pairs, np.ndarray)
    quality = split["ref_quality"]
    assert isinstance(quality, np.ndarray)
    print(f"\n{label}: split={split['name']} archived (hash-only)={split['archived']} "
          f"non-archived={split['negatives']}; likely <= {likely}, possible <= {possible}; "
          f"reference PDQ quality < 50: {int((quality < 50).sum())}")
    print(f"{'edit':<16}{'n':>5}{'likely%':>9}{'lik|pos%':>10}{'<=31 %':>8}"
          f"{'median d':>10}{'max d':>7}")
    for edit, vals in pos.items():
        d = np.array(vals)
        print(f"{edit:<16}{len(d):>5}{(d <= likely).mean() * 100:>9.1f}"
              f"{(d <= possible).mean() * 100:>10.1f}{(d <= META_MATCH).mean() * 100:>8.1f}"
              f"{np.median(d):>10.0f}{d.max():>7}")
    nq = len(neg_best)
    pairs = int(split["pairs_total"])  # type: ignore[call-overload]
    for label_, t in (("likely", likely), ("possible", possible), ("Meta's 31", META_MATCH)):
        fq = int((neg_best <= t).sum())
        fp = int((neg_pairs <= t).sum())
        rate = f"< {3 / pairs:.1e}" if fp == 0 else f"{fp / pairs:.1e}"
        print(f"negatives at {label_} (<= {t}): {fq} of {nq} queries ({fq / nq:.2%}); "
              f"{fp} of {pairs:,} pairs (per-pair rate {rate})")
    print(f"closest negative: {int(neg_best.min())}; negative pair distance quantiles "
          + ", ".join(f"{q:.2%}: {np.quantile(neg_pairs, q):.0f}" for q in (1e-4, 1e-3, 1e-2)))


def _same_place_pairs(group: str) -> list[int]:
    """PDQ distances (query pipeline as above) between each photo of one same_place group,
    stored as a hash-only reference, and every other photo of the group as a query."""
    files = sorted(p for p in Path(group).iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rows = [_ref_row((k, str(p))) for k, p in enumerate(files)]
    index = HashIndex.from_rows([(k, part, hs) for k, part, hs, _q in rows])  # type: ignore[misc]
    out = []
    for k, p in enumerate(files):
        loaded = load(_jpeg(Image.open(p).convert("RGB")))
        found = find(QueryHashes(loaded.image, loaded.scale), index, WIDE, limit=10 ** 9)
        out += [m.distances["pdq"] for m in found if m.ref_key != k]
    return out


def same_place_report(photos: Path, workers: int, likely: int, possible: int) -> None:
    """Hard negatives, reported only (never used for choosing): different photos of the same
    place or scene (webcams, landmarks, aerial pairs, indoor scans)."""
    groups = sorted(str(g) for g in (photos / "same_place").iterdir() if g.is_dir())
    with ProcessPoolExecutor(workers) as pool:
        per_group = list(pool.map(_same_place_pairs, groups))
    d = np.array([x for g in per_group for x in g])
    close = sorted((min(g), Path(name).name) for g, name in zip(per_group, groups, strict=True)
                   if g)[:5]
    print(f"\nsame_place hard negatives: {len(groups)} groups, {len(d)} ordered pairs; "
          f"at likely (<= {likely}): {int((d <= likely).sum())}, at possible (<= {possible}): "
          f"{int((d <= possible).sum())}, <= 40: {int((d <= 40).sum())}; closest groups: "
          + ", ".join(f"{n} {v}" for v, n in close))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos")
    ap.add_argument("--quick", action="store_true", help="~150 photos per split")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--same-place-only", action="store_true",
                    help="only the hard-negative report (same_place), at the default thresholds")
    args = ap.parse_args()
    if not args.photos.exists():
        sys.exit(f"{args.photos} not found: this benchmark needs ../shared/data/photos")
    started = time.perf_counter()
    if args.same_place_only:
        same_place_report(args.photos, args.workers, DEFAULT_THRESHOLDS.pdq_only_likely,
                          DEFAULT_THRESHOLDS.pdq_only_possible)
        return
    files = sorted((args.photos / "bsds500").rglob("*.jpg")) + sorted(
        (args.photos / "coco128").rglob("*.jpg"))
    halves: dict[str, list[Path]] = {"tune": [], "report": []}
    for f in files:
        halves[_split(f, args.photos)].append(f)
    if args.quick:
        halves = {k: v[:150] for k, v in halves.items()}
    tune = run_split("tune", halves["tune"], args.workers)
    likely, possible = choose(tune)
    print(f"chosen on TUNE: likely <= {likely}, possible <= {possible} (defaults in "
          f"imgverify.verdict: likely <= {DEFAULT_THRESHOLDS.pdq_only_likely}, possible <= "
          f"{DEFAULT_THRESHOLDS.pdq_only_possible})")
    report(tune, likely, possible, "TUNE (used for choosing)")
    held = run_split("report", halves["report"], args.workers)
    report(held, likely, possible, "REPORT (held out), chosen thresholds")
    same_place_report(args.photos, args.workers, likely, possible)
    print(f"\ntime {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
