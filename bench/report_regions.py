"""Where a report outlines the matched photo, against where it really is.

Generated screenshots, crops and collages (bench/edits.py) of archived photos know the true
box of the photo in the submitted image; a crop also knows which part of the archived photo
it kept. For each query the top match's `region` (None = the whole image) is compared with
the true box by intersection over union (IoU), and a crop's `reference_region` with the kept
part of the archived photo.

    python bench/report_regions.py [--photos 12] [--seed 1] [--start 0]

Tuned on the first 12 coco128 photos (--start 0); --start 40 --photos 20 is held out.

Prints, per edit, the number of queries matched, the median and minimum IoU and how many
reach 0.8. tests/test_reports.py runs a few of the same cases.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import edits as E  # noqa: E402

import imgverify  # noqa: E402

Box = tuple[float, float, float, float]
EDIT_NAMES = ("screenshot", "crop_40", "crop_60", "crop_75", "collage")


@dataclass
class Case:
    edit: str
    photo: Path  # the archived original
    query: bytes  # the JPEG submitted
    true_box: Box  # the photo in the submitted image, normalised
    true_ref_box: Box | None  # the part of the archived photo kept (crops), normalised


def iou(a: Sequence[float] | None, b: Sequence[float] | None) -> float:
    a = a or (0.0, 0.0, 1.0, 1.0)
    b = b or (0.0, 0.0, 1.0, 1.0)
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _true_boxes(name: str, original: Image.Image, out: Image.Image) -> tuple[Box, Box | None]:
    (step, p), = [s for s in E.params(out) if s[0] == name or s[0].startswith("crop")][-1:]
    W, H = out.size
    if step == "screenshot":
        x0, y0, x1, y1 = p["photo_box"]
        return (x0 / W, y0 / H, x1 / W, y1 / H), None
    if step.startswith("crop"):
        x0, y0, x1, y1 = p["box"]
        w, h = original.size
        return (0.0, 0.0, 1.0, 1.0), (x0 / w, y0 / h, x1 / w, y1 / h)
    if step == "collage":
        n = int(p["grid"][0])
        gap, slot = int(p["gap"]), int(p["slot"])
        cell = (1080 - gap * (n + 1)) // n
        x0, y0 = gap + (slot % n) * (cell + gap), gap + (slot // n) * (cell + gap)
        return (x0 / W, y0 / H, (x0 + cell) / W, (y0 + cell) / H), None
    raise ValueError(step)


def cases(photos: Sequence[Path], pool: Sequence[Path], seed: int = 1,
          names: Sequence[str] = EDIT_NAMES) -> Iterator[Case]:
    """One query per archived photo and edit, reproducible from `seed`."""
    registry = E.build_edits([Image.open(p).convert("RGB") for p in pool])
    for k, photo in enumerate(photos):
        original = Image.open(photo).convert("RGB")
        for j, name in enumerate(names):
            rnd = random.Random(seed * 100_003 + k * 101 + j)
            out = registry[name](original, rnd)
            box, ref_box = _true_boxes(name, original, out)
            data, _quality = E.query_bytes(out, rnd)
            yield Case(name, photo, data, box, ref_box)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0,
                    help="first coco128 photo archived (0: the tuning photos; 40: held out)")
    args = ap.parse_args()
    folder = ROOT.parent / "shared" / "data" / "photos" / "coco128" / "train2017"
    files = sorted(folder.glob("*.jpg"))
    photos, pool = files[args.start:args.start + args.photos], files[100:110]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "m.csv"
        manifest.write_text("image,date\n" + "".join(f"{p},2016-05-{i % 28 + 1:02d}\n"
                                                      for i, p in enumerate(photos)))
        archive = imgverify.Archive.open(Path(tmp) / "a.sqlite")
        archive.ingest(manifest)
        by_edit: dict[str, list[float]] = {n: [] for n in EDIT_NAMES}
        ref_ious: list[float] = []
        missed: dict[str, int] = {n: 0 for n in EDIT_NAMES}
        for case in cases(photos, pool, args.seed):
            r = imgverify.check(case.query, archive)
            top = r.top
            if top is None or top.sha256 != hashlib.sha256(case.photo.read_bytes()).hexdigest():
                missed[case.edit] += 1
                continue
            by_edit[case.edit].append(iou(top.region, case.true_box))
            if case.true_ref_box is not None:
                ref_ious.append(iou(top.reference_region, case.true_ref_box))
    print(f"{'edit':<12} {'matched':>8} {'median IoU':>11} {'min IoU':>8} {'IoU>=0.8':>9}")
    for name, vals in by_edit.items():
        n = len(vals) + missed[name]
        if vals:
            print(f"{name:<12} {len(vals):>4}/{n:<3} {statistics.median(vals):>11.3f} "
                  f"{min(vals):>8.3f} {sum(v >= 0.8 for v in vals):>5}/{len(vals)}")
        else:
            print(f"{name:<12} {0:>4}/{n:<3}")
    if ref_ious:
        print(f"archived-photo outline of crops: median IoU {statistics.median(ref_ious):.3f}, "
              f"min {min(ref_ious):.3f}, {sum(v >= 0.8 for v in ref_ious)}/{len(ref_ious)} "
              ">= 0.8")


if __name__ == "__main__":
    main()
