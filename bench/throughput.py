"""Throughput benchmark: what one full `imgverify.check` costs per image, for matches and for
misses, beside the decode floor and `imagehash.phash` on the same bytes, in the same run.

    python bench/throughput.py [--originals 80] [--per-photo 2] [--camera 14] [--repeat 1]
                               [--classes small,camera] [--profile small-neg] [--json out]

Archive (temporary, built with ``ingest_manifest`` from a CSV as bench/robustness.py does):
`--originals` bsds500/coco128 photos of the TUNE split plus `--camera` camera_exif JPEGs of
3 MP or more (about 100 references with the defaults).

Queries, each one JPEG as a user would upload it:

* small (0.3 MP, social-media size): the photo scaled to about 640 x 480 (0.3 MP), then one
  edit of bench/edits.py (jpeg, crop_75, crop_40, mirror, screenshot, story, collage,
  caption_bar, screenshot_of_screenshot, and mirror after crop_60; layouts are phone-sized,
  so they are scaled back to 0.3 MP), saved at quality 85. Positives edit archived photos;
  negatives apply the same edits to TUNE photos that are not archived.
* camera (12 MP): camera_exif JPEGs (3 MP or more; the `_hdr_NO` twins of `_hdr_YES`
  shots left out) resampled to 12 MP (4000 x 3000 for 4:3; upscaled when
  the camera's own file is smaller, which this prints), through recompress (quality 85),
  crop_75 (resized back to 12 MP) or mirror, saved at quality 90 with the camera's EXIF.
  Positives come from the archived camera photos, negatives from the others.

Timed per query, interleaved so load from other processes hits all three alike, one native
thread (`OMP_NUM_THREADS` etc. set before numpy/OpenCV load; `check` caps its own pools):

* decode floor: ``Image.open(bytes).load()`` at full resolution (Pillow);
* phash: ``imagehash.phash(Image.open(bytes))`` (the peer, no search);
* orb: what the local stage costs before any search: ``imgverify.load`` (the reduced decode
  every check makes), the local-feature picture and its ORB keypoints and descriptors
  (``checker._local_picture`` and ``QueryExtraction``, as a check of a picture that is not
  archived makes them); a floor for any search design built on these features;
* check: ``imgverify.check(data, archive)`` with its defaults (the library call, with the
  report's alignment of a find);
* with ``--modes``, more configurations of the same call, each its own table: ``scan``
  (``align=False``, as ``imgverify scan`` runs it) and ``global`` (``align=False`` and
  ``Thresholds.use_local_features=False``: the global hashes alone, the scan's
  ``--no-local`` triage setting), and any ``--variant NAME:A=1,search.B=2`` (the check
  with those constants set for its calls only): settings compared as modes are timed on
  the same queries in the same minutes, which separate runs are not.

Per-image cost is the thread's CPU time (``time.thread_time``), so "images/s per core" is
1000 / mean CPU ms; wall-clock p50/p95 are printed beside it. Nothing asserts on time.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import cProfile  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import pstats  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from PIL import Image, ImageOps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import edits as E  # noqa: E402
import robustness as R  # noqa: E402

import imgverify  # noqa: E402
from imgverify.ingest import ingest_manifest  # noqa: E402
from imgverify.match.verdict import DEFAULT_THRESHOLDS  # noqa: E402

SMALL_EDITS = ("jpeg", "crop_75", "crop_40", "mirror", "screenshot", "story", "collage",
               "caption_bar", "screenshot_of_screenshot", "mirror_crop_60")
CAMERA_EDITS = ("recompress", "crop_75", "mirror")
SMALL_AREA = 640 * 480
CAMERA_AREA = 4000 * 3000


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as raw:
        return (ImageOps.exif_transpose(raw) or raw).convert("RGB")


def _to_area(im: Image.Image, area: int) -> Image.Image:
    f = (area / (im.width * im.height)) ** 0.5
    if abs(f - 1) < 0.02:
        return im
    return im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))),
                     Image.Resampling.LANCZOS)


def _jpeg(im: Image.Image, quality: int, exif: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def small_query(path: Path, edit: str, seed: int, registry: dict[str, Any]) -> bytes:
    im = _to_area(_rgb(path), SMALL_AREA)
    out = registry[edit](im, random.Random(seed))
    return _jpeg(_to_area(out.convert("RGB"), SMALL_AREA), 85)


def camera_query(path: Path, edit: str, seed: int) -> tuple[bytes, bool]:
    """(12 MP JPEG, whether the camera's own picture had to be upscaled)."""
    with Image.open(path) as raw:
        exif = raw.info.get("exif")
        im = (ImageOps.exif_transpose(raw) or raw).convert("RGB")
    upscaled = im.width * im.height < CAMERA_AREA * 0.98
    rnd = random.Random(seed)
    if edit == "crop_75":
        im = E.crop(0.75)(im, rnd)
    elif edit == "mirror":
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    im = _to_area(im, CAMERA_AREA)
    if exif:  # the pixels are already upright: drop the orientation tag
        ex = Image.Exif()
        ex.load(exif)
        ex.pop(0x0112, None)
        exif = ex.tobytes()
    return _jpeg(im, 85 if edit == "recompress" else 90, exif), upscaled


def build(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    halves: dict[str, list[Path]] = {"tune": [], "report": []}
    for sub in ("bsds500", "coco128"):
        for p in R.images_under(R.PHOTOS / sub):
            halves[R.split_of(p)].append(p)
    tune = sorted(halves["tune"], key=lambda p: R.stable_key("throughput" + R.rel(p)))
    originals = tune[: args.originals]
    negatives = tune[args.originals: 2 * args.originals]
    pool = tune[2 * args.originals: 2 * args.originals + 12]
    cams = []
    for p in R.images_under(R.PHOTOS / "camera_exif"):
        try:
            with Image.open(p) as im:
                # the "_hdr_NO" samples are the "_hdr_YES" shots without HDR: the same photo
                if im.format == "JPEG" and im.width * im.height >= 3_000_000 \
                        and "_hdr_NO" not in p.name:
                    cams.append(p)
        except Exception:  # noqa: BLE001 - unreadable samples are not used
            continue
    cams.sort(key=lambda p: R.stable_key("throughput-cam" + R.rel(p)))
    cam_arch, cam_neg = cams[: args.camera], cams[args.camera: 2 * args.camera]
    manifest = workdir / "manifest.csv"
    R.write_manifest(manifest, [(p, "original") for p in originals + cam_arch])
    archive_path = workdir / "archive.sqlite"
    archive = imgverify.Archive.open(archive_path)
    report = ingest_manifest(archive, manifest, workers=2)
    archive.close()
    pool_pics = []
    for p in pool:
        pic = _rgb(p)
        pic.thumbnail((640, 640))
        pool_pics.append(pic)
    return {"originals": originals, "negatives": negatives, "cam_arch": cam_arch,
            "cam_neg": cam_neg, "archive_path": archive_path, "pool": pool_pics,
            "ingest_errors": len(report.errors)}


def make_queries(sets: dict[str, Any], args: argparse.Namespace,
                 classes: list[str]) -> list[dict[str, Any]]:
    registry = E.build_edits(sets["pool"])
    registry["mirror_crop_60"] = lambda im, r: E.mirror(registry["crop_60"](im, r), r)
    queries: list[dict[str, Any]] = []
    if "small" in classes:
        for kind, photos in (("pos", sets["originals"]), ("neg", sets["negatives"])):
            for i, p in enumerate(photos):
                for k in range(args.per_photo):
                    edit = SMALL_EDITS[(i * args.per_photo + k) % len(SMALL_EDITS)]
                    seed = R.stable_key(f"{kind}|{R.rel(p)}|{edit}")
                    queries.append({"cls": "small", "kind": kind, "edit": edit,
                                    "photo": R.rel(p),
                                    "data": small_query(p, edit, seed, registry)})
    if "camera" in classes:
        ups = 0
        for kind, photos in (("pos", sets["cam_arch"]), ("neg", sets["cam_neg"])):
            for p in photos:
                for edit in CAMERA_EDITS:
                    data, up = camera_query(p, edit, R.stable_key(f"{kind}|{R.rel(p)}|{edit}"))
                    ups += up
                    queries.append({"cls": "camera", "kind": kind, "edit": edit,
                                    "photo": R.rel(p), "data": data})
        n = sum(q["cls"] == "camera" for q in queries)
        print(f"camera: {n} queries at 12 MP, {ups} of them upscaled from a smaller camera "
              "file (the others downscaled)")
    random.Random(1).shuffle(queries)
    return queries


def _cpu(fn: Any, *a: Any, **k: Any) -> tuple[Any, float, float]:
    w0, c0 = time.perf_counter(), time.thread_time()
    out = fn(*a, **k)
    return out, (time.thread_time() - c0) * 1000, (time.perf_counter() - w0) * 1000


def decode_floor(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as im:
        im.load()


def phash(data: bytes) -> None:
    import imagehash

    with Image.open(io.BytesIO(data)) as im:
        imagehash.phash(im)


#: configurations of `imgverify.check` the bench can time side by side (`--modes`)
MODES: dict[str, dict[str, Any]] = {
    "check": {},
    "scan": {"align": False},
    "global": {"align": False,
               "thresholds": dataclasses.replace(DEFAULT_THRESHOLDS, use_local_features=False)},
}


def orb_floor(data: bytes) -> None:
    from imgverify.checker import _local_picture
    from imgverify.media.load import load
    from imgverify.signals.features import QUERY_FEATURES, QueryExtraction

    loaded = load(data)
    picture, side = _local_picture(loaded)
    len(QueryExtraction(picture, QUERY_FEATURES, side=side))


def add_variant(spec: str) -> str:
    """`--variant NAME:A=1,search.B=2`: the check with these constants set (as `--set`
    does), timed per query beside the other modes, so that settings compare on the same
    queries in the same minutes (the machine's speed drifts between runs)."""
    import scale as S

    from imgverify.match import search
    from imgverify.signals import compact

    name, _, assigns = spec.partition(":")
    items = [a for a in assigns.split(",") if a]

    def apply() -> dict[tuple[Any, str], Any]:
        saved: dict[tuple[Any, str], Any] = {}
        for a in items:
            module = search if a.startswith("search.") else compact
            key = a.removeprefix("search.").partition("=")[0]
            saved[(module, key)] = getattr(module, key)
            S.set_constants(module, [a.removeprefix("search.")])
        return saved

    MODES[name] = {"_apply": apply, "_spec": assigns}
    return name


def _check_in_mode(data: bytes, archive: Any, mode: str) -> Any:
    opts = {k: v for k, v in MODES[mode].items() if k != "_spec"}
    apply = opts.pop("_apply", None)
    saved = apply() if apply is not None else {}
    try:
        return _cpu(imgverify.check, data, archive, **opts)
    finally:
        for (module, key), value in saved.items():
            setattr(module, key, value)


def run(queries: list[dict[str, Any]], archive: Any, repeat: int,
        modes: tuple[str, ...] = ("check",)) -> None:
    for q in queries:
        q.update(decode=[], phash=[], orb=[], check=[], check_wall=[])
        for mode in modes:
            q[f"mode:{mode}"] = {"check": [], "check_wall": []}
    for _ in range(repeat):
        for q in queries:
            _o, c, _w = _cpu(decode_floor, q["data"])
            q["decode"].append(c)
            _o, c, _w = _cpu(phash, q["data"])
            q["phash"].append(c)
            _o, c, _w = _cpu(orb_floor, q["data"])
            q["orb"].append(c)
            for mode in modes:
                res, c, w = _check_in_mode(q["data"], archive, mode)
                q[f"mode:{mode}"]["check"].append(c)
                q[f"mode:{mode}"]["check_wall"].append(w)
                q[f"mode:{mode}"]["verdict"] = res.verdict
    for q in queries:  # the first mode is the one the rest of the report is about
        q.update(q[f"mode:{modes[0]}"])


def _p(values: list[float], pct: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(pct / 100 * (len(s) - 1))))]


def summarise(queries: list[dict[str, Any]], mode: str | None = None) -> dict[str, Any]:
    if mode is not None:
        queries = [{**q, **q[f"mode:{mode}"]} for q in queries]
    out: dict[str, Any] = {}
    for cls in ("small", "camera"):
        rows = [q for q in queries if q["cls"] == cls]
        if not rows:
            continue
        entry: dict[str, Any] = {}
        for kind in ("pos", "neg", "all"):
            qs = [q for q in rows if kind == "all" or q["kind"] == kind]
            if not qs:
                continue
            chk = [min(q["check"]) for q in qs]
            wall = [min(q["check_wall"]) for q in qs]
            dec = [min(q["decode"]) for q in qs]
            ph = [min(q["phash"]) for q in qs]
            orb = [min(q["orb"]) for q in qs]
            found = sum(q["verdict"] in ("likely_recycled", "possibly_recycled") for q in qs)
            entry[kind] = {
                "n": len(qs), "found": found,
                "check_ips": 1000 / statistics.mean(chk), "phash_ips": 1000 / statistics.mean(ph),
                "decode_ips": 1000 / statistics.mean(dec),
                "check_p50": _p(chk, 50), "check_p95": _p(chk, 95),
                "wall_p50": _p(wall, 50), "wall_p95": _p(wall, 95),
                "decode_p50": _p(dec, 50), "phash_p50": _p(ph, 50),
                "mean_check": statistics.mean(chk), "mean_decode": statistics.mean(dec),
                "mean_phash": statistics.mean(ph), "orb_ips": 1000 / statistics.mean(orb),
                "mean_orb": statistics.mean(orb),
            }
        out[cls] = entry
    return out


def print_table(summary: dict[str, Any]) -> None:
    print("\nper image, one thread; CPU ms (thread time), images/s per core = 1000 / mean CPU ms")
    head = (f"{'class':<7}{'kind':<5}{'n':>4}{'found':>6} | {'check/s':>8}{'p50':>7}{'p95':>7}"
            f"{'wall95':>7} | {'phash/s':>8}{'decode/s':>9}{'orb/s':>7} | {'chk/phash':>9}"
            f"{'chk/decode':>11}")
    print(head)
    print("-" * len(head))
    for cls, entry in summary.items():
        for kind, e in entry.items():
            print(f"{cls:<7}{kind:<5}{e['n']:>4}{e['found']:>6} | {e['check_ips']:>8.1f}"
                  f"{e['check_p50']:>7.1f}{e['check_p95']:>7.1f}{e['wall_p95']:>7.1f} | "
                  f"{e['phash_ips']:>8.1f}{e['decode_ips']:>9.1f}{e['orb_ips']:>7.1f} | "
                  f"{e['mean_check'] / e['mean_phash']:>9.2f}"
                  f"{e['mean_check'] / e['mean_decode']:>11.2f}")
        if "pos" in entry and "neg" in entry:
            neg, pos = entry["neg"], entry["pos"]
            print(f"{cls:<7}neg/pos p95 ratio {neg['check_p95'] / pos['check_p95']:.2f}, "
                  f"mean ratio {neg['mean_check'] / pos['mean_check']:.2f}")
    print("targets: small check/s >= 100 per core; camera chk/decode <= 1.5; "
          "neg/pos p95 <= 1.5 (orb/s: load + ORB extraction alone, the local stage's floor)")


def _found_per_edit(queries: list[dict[str, Any]], mode: str
                    ) -> dict[tuple[str, str], tuple[int, int]]:
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for q in queries:
        if q["kind"] == "pos":
            f, n = out.get((q["cls"], q["edit"]), (0, 0))
            hit = q[f"mode:{mode}"]["verdict"] in ("likely_recycled", "possibly_recycled")
            out[(q["cls"], q["edit"])] = (f + hit, n + 1)
    return out


def _mode_args(mode: str) -> str:
    if "_spec" in MODES[mode]:
        return f"defaults, with {MODES[mode]['_spec']}"
    return ", ".join(f"{k}={v!r}" if k != "thresholds" else
                     "use_local_features=False" for k, v in MODES[mode].items()) or "defaults"


def profile(queries: list[dict[str, Any]], archive: Any, which: str, top: int,
            mode: str = "check") -> None:
    cls, kind, *edit = which.split("-", 2)
    qs = [q for q in queries if q["cls"] == cls and q["kind"] == kind
          and (not edit or q["edit"] == edit[0])]
    prof = cProfile.Profile()
    prof.enable()
    for q in qs:
        _check_in_mode(q["data"], archive, mode)
    prof.disable()
    print(f"\nprofile of {len(qs)} {cls} {kind} checks, mode {mode} (cumulative):")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(top)
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--originals", type=int, default=80)
    ap.add_argument("--per-photo", type=int, default=2, help="small edits per photo")
    ap.add_argument("--camera", type=int, default=14, help="archived (and negative) camera JPEGs")
    ap.add_argument("--repeat", type=int, default=1, help="timings per query (the least counts)")
    ap.add_argument("--classes", default="small,camera")
    ap.add_argument("--profile", default="",
                    help="e.g. small-neg or small-neg-collage: cProfile those checks (in the "
                         "first of --modes)")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--json", default="", help="write the summary here")
    ap.add_argument("--modes", default="check",
                    help="configurations timed side by side, the first reported in full: "
                         + ", ".join(MODES))
    ap.add_argument("--scale", type=int, default=0,
                    help="pad the archive with synthetic distractors to this many references "
                         "(bench/scale.py's generator; pool photos from the REPORT split)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:A=1,search.B=2",
                    help="another mode: the check with these constants set (as --set), "
                         "timed per query beside the others; name it in --modes")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="set a constant of imgverify.signals.compact for the run (tuning "
                         "on these TUNE photos), e.g. HE_HIT_BUDGET=100; search.NAME=VALUE "
                         "sets one of imgverify.match.search")
    args = ap.parse_args()
    if args.set:
        import scale as S

        from imgverify.match import search
        from imgverify.signals import compact

        # NAME=VALUE sets imgverify.signals.compact's constant; search.NAME=VALUE search's
        S.set_constants(compact, [a for a in args.set if not a.startswith("search.")])
        S.set_constants(search, [a.removeprefix("search.") for a in args.set
                                 if a.startswith("search.")])
    warnings.simplefilter("ignore")  # decoder warnings of odd sample files
    logging.getLogger("exifread").setLevel(logging.ERROR)
    classes = args.classes.split(",")
    with tempfile.TemporaryDirectory(prefix="imgverify-throughput-") as tmp:
        t0 = time.perf_counter()
        sets = build(args, Path(tmp))
        archive = imgverify.Archive.open(sets["archive_path"])
        n_refs = archive.stats()["references"]
        print(f"archive: {n_refs} references ({len(sets['originals'])} bsds500/coco128 tune + "
              f"{len(sets['cam_arch'])} camera_exif), built in {time.perf_counter() - t0:.0f} s")
        if args.scale:
            sys.path.insert(0, str(ROOT / "bench"))
            import scale as S
            from robustness import split_of

            used = {S.rel(p) for p in sets["originals"]}
            pool = [p for p in S.pool_photos(used, 2000) if split_of(p) == "report"][:400]
            archive, info = S.scaled_archive(archive, args.scale, pool)
            print(f"padded to {args.scale:,} references with synthetic distractors: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in info.items()), flush=True)
        queries = make_queries(sets, args, classes)
        from imgverify.checker import warm_up

        warm_up(archive)
        for spec in args.variant:
            add_variant(spec)
        modes = tuple(args.modes.split(","))
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            ap.error(f"unknown mode(s) {unknown}: choose from {', '.join(MODES)}")
        run(queries, archive, args.repeat, modes)
        summary = summarise(queries)
        extras = {}
        for mode in modes[1:]:
            print(f"\n== mode {mode}: imgverify.check(..., {_mode_args(mode)})")
            extras[f"mode_{mode}"] = summarise(queries, mode)
            print_table(extras[f"mode_{mode}"])
            print("positives found per edit: " + ", ".join(
                f"{c}/{e} {f}/{n}" for (c, e), (f, n) in sorted(_found_per_edit(
                    queries, mode).items())))
        print(f"\n== mode {modes[0]}: imgverify.check(..., {_mode_args(modes[0])})")
        print_table(summary)
        missed = [q for q in queries if q["kind"] == "pos"
                  and q["verdict"] not in ("likely_recycled", "possibly_recycled")]
        false = [q for q in queries if q["kind"] == "neg"
                 and q["verdict"] in ("likely_recycled", "possibly_recycled")]
        print(f"positives missed: {[(q['cls'], q['edit'], q['photo']) for q in missed]}")
        print(f"negatives flagged: {[(q['cls'], q['edit'], q['verdict']) for q in false]}")
        by_edit: dict[tuple[str, str, str], list[float]] = {}
        for q in queries:
            by_edit.setdefault((q["cls"], q["kind"], q["edit"]), []).append(min(q["check"]))
        print("mean CPU ms per edit: " + ", ".join(
            f"{c}/{k}/{e} {statistics.mean(v):.0f}" for (c, k, e), v in sorted(by_edit.items())))
        slow = sorted(queries, key=lambda q: -min(q["check"]))[:8]
        print("slowest: " + ", ".join(f"{q['cls']}/{q['kind']}/{q['edit']} "
                                      f"{min(q['check']):.0f} ms" for q in slow))
        if args.json:
            Path(args.json).write_text(json.dumps({**summary, **extras}, indent=1))
        if args.profile:
            for which in args.profile.split(","):
                profile(queries, archive, which, args.top, modes[0])
        archive.close()


if __name__ == "__main__":
    main()
