"""The chance that an unrelated photo matches as closely as a reported match: the null
distributions behind `imgverify.report.chance`.

    python bench/null_fit.py [--quick] [--workers 2]

Both stages are measured on the TUNE half of bsds500 + coco128 (the split of
bench/thresholds.py), between photos that are not copies of each other:

* global hashes: the combined distance of every (query, reference) pair of unrelated photos
  (the same pairs bench/thresholds.py fits its thresholds on); the lower 1 % of the
  distribution is fitted with log10(rate) = a + b * d;
* local features: the RANSAC inlier count `FeatureIndex.verify` finds between unrelated
  photos, for every pair (not only the pairs the vote would pass: an upper bound), queries
  both as they are and inside a generated phone screenshot; the upper tail of
  P(inliers >= n) is fitted with log10(rate) = c + e * n.

It prints the constants to put into imgverify/chance.py. Rates beyond the measured range are
extrapolations, which reports say ("estimated").
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import edits as E  # noqa: E402
import thresholds as T  # noqa: E402

from imgverify.signals.features import (  # noqa: E402
    FEATURE_SIDE,
    QUERY_FEATURES,
    REF_FEATURES,
    FeatureIndex,
    extract,
)


def local_null(refs: list[Path], queries: list[Path]) -> np.ndarray:
    """Inlier counts of every (query, reference) pair of unrelated photos (0: no model)."""
    feats = [extract(Image.open(p).convert("RGB"), REF_FEATURES) for p in refs]
    index = FeatureIndex(list(range(len(refs))), feats)
    counts: list[int] = []
    rnd = random.Random(7)
    for q in queries:
        im = Image.open(q).convert("RGB")
        for pic in (im, E.screenshot(im, rnd)):
            side = max(FEATURE_SIDE, int(FEATURE_SIDE * max(1.0, max(pic.size)
                                                            / min(pic.size) / 1.2)))
            qf = extract(pic, QUERY_FEATURES, side=min(side, int(2.2 * FEATURE_SIDE)))
            for key in range(len(refs)):
                gm = index.verify(qf, key)
                counts.append(0 if gm is None else gm.inliers)
    return np.array(counts)


def upper_tail_fit(counts: np.ndarray, share: float = 0.01) -> tuple[float, float]:
    """(c, e) with log10 P(inliers >= n) ~ c + e * n over the top `share` of the pairs."""
    n = len(counts)
    values = np.unique(counts)
    surv = np.array([(counts >= v).sum() / n for v in values])
    tail = surv <= max(share, 20 / n)
    if tail.sum() < 3:
        tail = np.zeros_like(tail)
        tail[-3:] = True
    e, c = np.polyfit(values[tail], np.log10(surv[tail]), 1)
    return float(c), float(e)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos")
    ap.add_argument("--quick", action="store_true", help="~150 photos for the global null")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    started = time.perf_counter()
    files = sorted((args.photos / "bsds500").rglob("*.jpg")) + sorted(
        (args.photos / "coco128").rglob("*.jpg"))
    tune = [f for f in files if T._split(f, args.photos) == "tune"]
    rnd = random.Random(99)
    shuffled = sorted(tune)
    rnd.shuffle(shuffled)
    refs, queries = shuffled[:120], shuffled[120:180]
    counts = local_null(refs, queries)
    c, e = upper_tail_fit(counts)
    print(f"local features: {len(counts):,} unrelated pairs; inliers p50 "
          f"{int(np.median(counts))}, p99 {int(np.percentile(counts, 99))}, max "
          f"{int(counts.max())}; fit log10 P(inliers >= n) = {c:.3f} + {e:.4f} n "
          f"(P(>=20) ~ {10 ** (c + e * 20):.1e}, P(>=35) ~ {10 ** (c + e * 35):.1e})")
    split = T.run_split("tune", tune[:150] if args.quick else tune, args.workers)
    pairs = split["neg_pairs"]
    assert isinstance(pairs, np.ndarray)
    a, b = T.tail_fit(pairs)
    print(f"global hashes: {len(pairs):,} unrelated pairs; closest {pairs.min():.3f}; fit "
          f"log10 rate(d) = {a:.3f} + {b:.3f} d (rate at 0.15 ~ {10 ** (a + b * 0.15):.1e})")
    print("\nfor imgverify/chance.py:")
    print(f"GLOBAL_NULL = ({a:.3f}, {b:.3f})")
    print(f"LOCAL_NULL = ({c:.3f}, {e:.4f})")
    print(f"\ntime {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
