"""Train the ORB vocabulary shipped as imgverify/signals/orb_vocabulary.npz.

    python reference_index/train_vocabulary.py [--out imgverify/signals/orb_vocabulary.npz]
                                               [--tables-only]

Training photos (never the bsds500 / coco128 photos the benchmarks test on, nor the
research-only same_place set): this folder's public-domain images, Meta's PDQ conformance
images (BSD), and from ../shared/data/photos the camera_exif, pkg_samples, augly_tests,
thorn_perception and imagededup_ukbench sets. What is shipped is two sets of 1,024 binary
centroids (bitwise majorities over thousands of descriptors each), not any image.

Descriptors come from the same ORB settings as indexing (`signals.features.extract`), at
three picture sizes so the codebooks see the scales queries arrive at. Deterministic for a
given set of files (fixed seeds).

Per centroid, the bits of the Hamming embedding are then chosen on the same descriptors
(`vocabulary.train_he_tables`). `--tables-only` keeps the shipped codebooks (so words do
not move) and retrains only those bits. The run prints how often two unrelated descriptors
of one word agree within 3 of the 16 embedded bits, with per-word bits and with version 1's
fixed positions, on descriptors held out from training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from imgverify.signals.features import extract  # noqa: E402
from imgverify.signals.vocabulary import (  # noqa: E402
    HALF_BYTES,
    HALF_WORDS,
    VOCABULARY_VERSION,
    Vocabulary,
    chance_agreement,
    default_vocabulary,
    train_codebook,
    train_he_tables,
)

SETS = ("camera_exif", "pkg_samples", "augly_tests", "thorn_perception", "imagededup_ukbench")
EXTS = {".jpg", ".jpeg", ".png"}


def training_files() -> list[Path]:
    files = sorted(p for p in (ROOT / "reference_index" / "images").glob("*")
                   if p.suffix.lower() in EXTS)
    files += sorted(p for p in (SHARED / "pdq-reference").rglob("*")
                    if p.suffix.lower() in EXTS)
    for name in SETS:
        files += sorted(p for p in (SHARED / "photos" / name).rglob("*")
                        if p.suffix.lower() in EXTS)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "imgverify" / "signals" / "orb_vocabulary.npz"))
    ap.add_argument("--sample", type=int, default=400_000)
    ap.add_argument("--tables-only", action="store_true",
                    help="keep the shipped codebooks; retrain only the embedding bits")
    args = ap.parse_args()
    if not (SHARED / "photos").is_dir():
        sys.exit(f"training photos not found under {SHARED}")
    chunks = []
    files = training_files()
    for path in files:
        try:
            with Image.open(path) as im:
                im.draft("RGB", (1600, 1600))
                rgb = im.convert("RGB")
        except (OSError, ValueError):
            continue
        for side in (480, 640, 1024):
            f = extract(rgb, 1500, side=side)
            chunks.append(f.descriptors)
    data = np.concatenate(chunks)
    owner = np.concatenate([np.full(c.shape[0], i) for i, c in enumerate(chunks)]) // 3
    rng = np.random.default_rng(7)
    held = np.isin(owner, rng.choice(len(files), max(1, len(files) // 10), replace=False))
    held_data, held_owner = data[held], owner[held]
    data = data[~held]
    if data.shape[0] > args.sample:
        data = data[rng.choice(data.shape[0], args.sample, replace=False)]
    print(f"{len(files)} files, {data.shape[0]} training descriptors, {held_data.shape[0]} "
          f"held out")
    if args.tables_only:
        shipped = default_vocabulary()
        first, second = shipped.first, shipped.second
    else:
        first = train_codebook(data[:, :HALF_BYTES], HALF_WORDS, seed=1)
        second = train_codebook(data[:, HALF_BYTES:], HALF_WORDS, seed=2)
    plain = Vocabulary(first, second, VOCABULARY_VERSION)
    vocab = Vocabulary(first, second, VOCABULARY_VERSION, *train_he_tables(data, plain))
    for name, v in (("fixed positions", plain), ("per-word bits", vocab)):
        print(f"unrelated same-word pairs within 3 embedded bits, {name}: "
              f"{chance_agreement(v, held_data, held_owner):.3f}")
    vocab.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
