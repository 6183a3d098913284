"""How the global-hash verdict thresholds are chosen, with the numbers behind them.

    python bench/thresholds.py [--quick] [--photos ../shared/data/photos]

Data: bsds500 + coco128 from ../shared/data/photos, split deterministically (sha256 of the
relative path) into a TUNE half and a REPORT half. Within each half, a random half of the
photos is "archived" and the other half is never archived (negatives).

Measured, per query, with imgverify's own pipeline (`load` -> `match.QueryHashes` ->
`match.find`, i.e. every hashed part and all 8 orientations): the combined distance (mean of
normalised Hamming distances over PDQ, pHash, dHash, wHash) to every archived reference.
 * positives: edited copies of archived photos -> distance to their own original, and
   whether the original ranks first;
 * negatives: unedited and edited copies of non-archived photos -> distance to every
   reference (per-pair rate) and to the nearest one (per-query rate).

Thresholds are chosen on TUNE only and reported on REPORT. What matters at scale is the
per-pair false-positive rate: an archive of N references turns a per-pair rate p into a
per-query rate of about N x p. The lower tail of the TUNE non-matching pair distances is
fitted with an exponential (log of the empirical CDF against distance, over its lowest 1 %)
and extrapolated:
 * likely   = the distance where the fitted per-pair rate is 1e-9 (1 false "likely" in 1,000
              queries at 1 M references), capped at 0.8 x the closest TUNE negative;
 * possible = the distance where it is 1e-8 (1 in 100 at 1 M references), capped likewise;
both rounded down to 0.005. The rule of three bounds observed rates when none is seen.
Local-feature thresholds (crops, insets) are measured by bench/robustness.py.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imgverify.match.search import QueryHashes, find  # noqa: E402
from imgverify.match.verdict import DEFAULT_THRESHOLDS, Thresholds  # noqa: E402
from imgverify.media.load import load  # noqa: E402
from imgverify.store.index import HashIndex  # noqa: E402
from imgverify.store.sqlite import reference_hashes  # noqa: E402

WIDE = Thresholds(pdq_radius=256)


def _jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _crop(im: Image.Image, keep: float, rnd: random.Random) -> Image.Image:
    w, h = im.size
    cw, ch = int(w * keep ** 0.5), int(h * keep ** 0.5)
    x, y = rnd.randint(0, w - cw), rnd.randint(0, h - ch)
    return im.crop((x, y, x + cw, y + ch))


def _letterbox(im: Image.Image) -> Image.Image:
    w, h = im.size
    target = max(w, int(h * 16 / 9))
    canvas = Image.new("RGB", (target, h), (0, 0, 0))
    canvas.paste(im, ((target - w) // 2, 0))
    return canvas


EDITS = {
    "jpeg_q30": lambda im, r: _jpeg(im, 30),
    "jpeg_q20": lambda im, r: _jpeg(im, 20),
    "half_size": lambda im, r: _jpeg(im.resize((im.width // 2, im.height // 2))),
    "quarter_size": lambda im, r: _jpeg(im.resize((im.width // 4, im.height // 4))),
    "grayscale": lambda im, r: _jpeg(im.convert("L")),
    "mirror": lambda im, r: _jpeg(ImageOps.mirror(im)),
    "rotate90": lambda im, r: _jpeg(im.transpose(Image.Transpose.ROTATE_90)),
    "brightness+25%": lambda im, r: _jpeg(ImageEnhance.Brightness(im).enhance(1.25)),
    "contrast-25%": lambda im, r: _jpeg(ImageEnhance.Contrast(im).enhance(0.75)),
    "gamma_1.6": lambda im, r: _jpeg(im.point(lambda v: int(255 * (v / 255) ** 1.6))),
    "blur_r1.5": lambda im, r: _jpeg(im.filter(ImageFilter.GaussianBlur(1.5))),
    "letterbox": lambda im, r: _jpeg(_letterbox(im)),
    "crop_keep90%": lambda im, r: _jpeg(_crop(im, 0.9, r)),
    "crop_keep80%": lambda im, r: _jpeg(_crop(im, 0.8, r)),
}
NEGATIVE_EDITS = ("none", "jpeg_q30", "mirror", "letterbox", "crop_keep80%")


def _split(path: Path, photos: Path) -> str:
    digest = hashlib.sha256(str(path.relative_to(photos)).encode()).digest()
    return "tune" if digest[0] % 2 == 0 else "report"


def _ref_rows(args: tuple[int, str]) -> list[tuple[int, str, object]]:
    key, path = args
    loaded = load(path)
    return [(key, name, hs) for name, hs in reference_hashes(loaded.image, loaded.scale)]


_INDEX: HashIndex | None = None


def _init(index: HashIndex) -> None:
    global _INDEX
    _INDEX = index


def _measure(task: tuple[str, int, str, int]) -> tuple[str, int, dict[int, float]]:
    """(edit, owner key or -1, {ref key: combined distance}) for one query."""
    edit, owner, path, seed = task
    rnd = random.Random(seed)
    im = Image.open(path).convert("RGB")
    data = _jpeg(im) if edit == "none" else EDITS[edit](im, rnd)
    loaded = load(data)
    qh = QueryHashes(loaded.image, loaded.scale)
    assert _INDEX is not None
    found = find(qh, _INDEX, WIDE, limit=10 ** 9)
    return edit, owner, {m.ref_key: m.combined for m in found}


def run_split(name: str, files: list[Path], workers: int) -> dict[str, object]:
    rnd = random.Random(1234)
    files = sorted(files)
    rnd.shuffle(files)
    archived, negatives = files[: len(files) // 2], files[len(files) // 2:]
    with ProcessPoolExecutor(workers) as pool:
        rows = [r for rs in pool.map(_ref_rows, enumerate(map(str, archived)), chunksize=8)
                for r in rs]
    index = HashIndex.from_rows(rows)  # type: ignore[arg-type]
    tasks = [(e, k, str(p), k * 97 + i) for k, p in enumerate(archived)
             for i, e in enumerate(EDITS)]
    tasks += [(e, -1, str(p), 7 + i) for p in negatives for i, e in enumerate(NEGATIVE_EDITS)]
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(index,)) as pool:
        results = list(pool.map(_measure, tasks, chunksize=16))
    pos: dict[str, list[tuple[float, bool]]] = {e: [] for e in EDITS}
    neg_best: list[float] = []
    neg_pairs: list[float] = []
    for edit, owner, dists in results:
        if owner >= 0:
            own = dists.get(owner, 1.0)
            first = min(dists.items(), key=lambda kv: kv[1])[0] == owner if dists else False
            pos[edit].append((own, first))
        else:
            values = list(dists.values())
            neg_pairs.extend(values)
            neg_best.append(min(values) if values else 1.0)
    pairs_total = len([t for t in tasks if t[1] < 0]) * len(archived)
    return {"name": name, "archived": len(archived), "negatives": len(negatives),
            "pos": pos, "neg_best": np.array(neg_best), "neg_pairs": np.array(neg_pairs),
            "pairs_total": pairs_total}


def tail_fit(pairs: np.ndarray) -> tuple[float, float]:
    """(a, b) with log10(per-pair rate at distance d) ~ a + b * d over the lowest 1 %."""
    d = np.sort(pairs)
    n = len(d)
    k = max(20, n // 100)
    ranks = np.arange(1, k + 1) / n
    b, a = np.polyfit(d[:k], np.log10(ranks), 1)
    return float(a), float(b)


def distance_at_rate(fit: tuple[float, float], rate: float) -> float:
    a, b = fit
    return (np.log10(rate) - a) / b


def choose(tune: dict[str, object]) -> tuple[float, float]:
    neg_best, pairs = tune["neg_best"], tune["neg_pairs"]
    assert isinstance(neg_best, np.ndarray) and isinstance(pairs, np.ndarray)
    cap = 0.8 * float(neg_best.min())
    fit = tail_fit(pairs)
    likely = min(cap, distance_at_rate(fit, 1e-9))
    possible = min(cap, distance_at_rate(fit, 1e-8))
    print(f"TUNE tail fit: log10(rate) = {fit[0]:.2f} + {fit[1]:.2f} d; rate 1e-6 at d="
          f"{distance_at_rate(fit, 1e-6):.3f}, 1e-8 at {distance_at_rate(fit, 1e-8):.3f}, "
          f"1e-9 at {distance_at_rate(fit, 1e-9):.3f}; 0.8 x closest negative = {cap:.3f}")
    return float(np.floor(likely / 0.005) * 0.005), float(np.floor(possible / 0.005) * 0.005)


def report(split: dict[str, object], likely: float, possible: float, label: str) -> None:
    pos = split["pos"]
    neg_best = split["neg_best"]
    neg_pairs = split["neg_pairs"]
    assert isinstance(pos, dict) and isinstance(neg_best, np.ndarray)
    assert isinstance(neg_pairs, np.ndarray)
    print(f"\n{label}: split={split['name']} archived={split['archived']} "
          f"non-archived={split['negatives']}; likely <= {likely:.3f}, possible <= "
          f"{possible:.3f}")
    print(f"{'edit':<16}{'n':>5}{'likely%':>9}{'lik|pos%':>10}{'median d':>10}{'max d':>8}")
    for edit, vals in pos.items():
        d = np.array([v for v, _ in vals])
        first = np.array([f for _, f in vals])
        lk = ((d <= likely) & first).mean() * 100
        lp = ((d <= possible) & first).mean() * 100
        print(f"{edit:<16}{len(d):>5}{lk:>9.1f}{lp:>10.1f}{np.median(d):>10.3f}{d.max():>8.3f}")
    nq = len(neg_best)
    fl = int((neg_best <= likely).sum())
    fp = int((neg_best <= possible).sum())
    pairs = int(split["pairs_total"])  # type: ignore[call-overload]
    pl = int((neg_pairs <= likely).sum())
    pp = int((neg_pairs <= possible).sum())
    print(f"negatives: {nq} queries; false likely {fl} ({fl / nq:.2%}), false likely-or-"
          f"possible {fp} ({fp / nq:.2%}); closest negative {neg_best.min():.3f}")
    print(f"non-matching pairs: {pairs:,}; at likely {pl} (per-pair rate "
          f"{'< %.1e' % (3 / pairs) if pl == 0 else '%.1e' % (pl / pairs)}), at possible "
          f"{pp} ({'< %.1e' % (3 / pairs) if pp == 0 else '%.1e' % (pp / pairs)})")
    for q in (0.0001, 0.001, 0.01):
        print(f"  negative pair distance quantile {q:.2%}: {np.quantile(neg_pairs, q):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos")
    ap.add_argument("--quick", action="store_true", help="~150 photos per split")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if not args.photos.exists():
        sys.exit(f"{args.photos} not found: this benchmark needs ../shared/data/photos")
    started = time.perf_counter()
    files = sorted((args.photos / "bsds500").rglob("*.jpg")) + sorted(
        (args.photos / "coco128").rglob("*.jpg"))
    halves: dict[str, list[Path]] = {"tune": [], "report": []}
    for f in files:
        halves[_split(f, args.photos)].append(f)
    if args.quick:
        halves = {k: v[:150] for k, v in halves.items()}
    tune = run_split("tune", halves["tune"], args.workers)
    likely, possible = choose(tune)
    print("chosen on TUNE:", f"likely <= {likely:.3f}, possible <= {possible:.3f}",
          f"(defaults in imgverify.verdict: likely <= {DEFAULT_THRESHOLDS.likely}, "
          f"possible <= {DEFAULT_THRESHOLDS.possible})")
    report(tune, likely, possible, "TUNE (used for choosing)")
    held = run_split("report", halves["report"], args.workers)
    report(held, likely, possible, "REPORT (held out), chosen thresholds")
    report(held, DEFAULT_THRESHOLDS.likely, DEFAULT_THRESHOLDS.possible,
           "REPORT (held out), current defaults")
    print(f"\ntime {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
