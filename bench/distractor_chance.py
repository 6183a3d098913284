"""How often unrelated keypoints agree by chance: real photos against the scale bench's
synthetic distractors.

    python bench/distractor_chance.py [--queries 60]

Why: bench/scale.py makes distractor keypoints from real pool keypoints (REPORT split, 400
photos) with every bit flipped with p = 1/4, so the distractors' embeddings are rarer
copies of real ones. A vote's cost and its chance candidates scale with how often an
unrelated posting agrees with a query descriptor within `HE_MAX_DISTANCE` bits; if real
unrelated photos agree more often than the distractors, the bench understates both.

Measured: ORB features of `--queries` TUNE photos (500 keypoints) looked up as `vote` does
(2 words per half, slack) in the pool's own postings, once with the pool keypoints' real
embeddings and once with the distractor flips (`Pool._he_mask`); printed is the share of
scanned postings that agree, for each, and their ratio. No timing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import scale as S  # noqa: E402
from robustness import split_of  # noqa: E402

from imgverify.signals import compact as C  # noqa: E402
from imgverify.signals.features import QUERY_FEATURES, extract  # noqa: E402
from imgverify.signals.vocabulary import default_vocabulary  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=60)
    args = ap.parse_args()
    if not S.PHOTOS.is_dir():
        sys.exit(f"skipped: {S.PHOTOS} not found")
    pool_paths = [p for p in S.pool_photos(set(), 2000) if split_of(p) == "report"][:400]
    pool = S.make_pool(pool_paths)
    vocab = default_vocabulary()
    words = pool.words.astype(np.int64)
    order = np.argsort(words, kind="stable")
    by_word = words[order]
    offsets = np.searchsorted(by_word, np.arange(vocab.words + 1))
    seeds = np.arange(pool.n, dtype=np.uint64) * np.uint64(1024)
    embeddings = {"real pool keypoints": pool.he[order],
                  "distractors (p = 1/4 flips)": (pool.he ^ pool._he_mask(seeds))[order]}
    agree = dict.fromkeys(embeddings, 0)
    scanned = 0
    photos = [p for p in S.pool_photos(set(), 3000) if split_of(p) == "tune"][:args.queries]
    for p in photos:
        with Image.open(p) as im:
            desc = np.ascontiguousarray(extract(im.convert("RGB"), QUERY_FEATURES).descriptors)
        q_idx, w = C.query_words(vocab, desc)
        query_he = vocab.embed(desc[q_idx], w)
        for k in range(w.size):
            s, e = offsets[w[k]], offsets[w[k] + 1]
            scanned += int(e - s)
            for name, he in embeddings.items():
                agree[name] += int((C._POPCOUNT16[he[s:e] ^ query_he[k]]
                                    <= C.HE_MAX_DISTANCE).sum())
    print(f"{len(photos)} TUNE query photos, {pool.n:,} pool keypoints, {scanned:,} postings "
          f"scanned; share within {C.HE_MAX_DISTANCE} bits:")
    for name, n in agree.items():
        print(f"  {name:<28} {n / max(1, scanned):.4f}")
    real, syn = agree.values()
    print(f"  ratio real / distractor: {real / max(1, syn):.2f}")


if __name__ == "__main__":
    main()
