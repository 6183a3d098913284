"""`check`: one submitted image against one archive, from any source to a typed result.

This is the library's front door. It never prints, never exits and keeps no global state;
it is safe to call from many threads on one open `Archive`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from PIL import Image

from imgverify.errors import ArchiveError, ImgVerifyError
from imgverify.ingest.firstseen import add_first_seen, split_desk_checks
from imgverify.match.result import ERROR, LIKELY, CheckResult, Match, SceneMatch
from imgverify.match.search import QueryHashes, RawMatch, find, find_local, reference_outline
from imgverify.match.verdict import (
    DEFAULT_THRESHOLDS,
    Thresholds,
    decide,
    local_thresholds,
    notes_for,
    order_matches,
    parse_claimed_date,
    pdq_only_strength,
    score_of,
    strength_of,
)
from imgverify.media.evidence import ExifEvidence, read_exif
from imgverify.media.fetch import is_url
from imgverify.media.load import (
    Limits,
    LoadedImage,
    Source,
    describe_source,
    load,
    picture_for_features,
    read_source,
)
from imgverify.media.provenance import read_credentials
from imgverify.report.chance import chance_of
from imgverify.report.claims import check_claims, timeline
from imgverify.report.outline import Box, keypoint_box, refine_region
from imgverify.signals.features import (
    FEATURE_SIDE,
    INSIDE_LARGER_IMAGE,
    MIN_FEATURE_SIDE,
    QUERY_FEATURES,
    GeometricMatch,
    QueryExtraction,
    aligned_agreement,
    extract,
    photo_box,
)
from imgverify.signals.hashing import DIHEDRAL_TRANSPOSE
from imgverify.store.sqlite import Archive, shared_default_archive
from imgverify.threads import native_threads

#: Said when a large archive's crop index has not been built (`PendingLocalIndex`).
LOCAL_INDEX_PENDING_NOTE = (
    "Crops, screenshots and collages were not searched: this archive's local-feature index "
    "has not been built for this version (run `imgverify archive index --archive ARCHIVE` "
    "once). Whole-picture matches were searched as usual.")
#: Said when the caller turned the local stage off (`Thresholds.use_local_features`).
LOCAL_OFF_NOTE = (
    "Crops, screenshots and collages were not searched: local features were turned off for "
    "this check (--no-local; local=false in the service). Only whole-picture matches "
    "(re-encoded, resized, mirrored, bordered copies, memes with a caption bar) were "
    "searched.")


def prepare_local_index(archive: Archive) -> Any:
    """The archive's local-feature index, built now if it never was (a service's or batch
    scan's start-up: preparation, not a user's query) and with its scan compiled."""
    local = archive.feature_index()
    if getattr(local, "pending", False):
        archive.build_local_index()
        local = archive.feature_index()
    if hasattr(local, "warm"):
        local.warm()  # a compact index: compile its scan (a noise picture may vote nothing)
    return local


def warm_up(archive: Archive | None = None, claimed_place: bool = False,
            local: bool = True) -> None:
    """Import what `check` would otherwise import on first use (OpenCV, faiss, the EXIF and
    C2PA readers, the fetch stack), build the archive's indexes, and with `claimed_place`
    load the gazetteer: before a caller arms a per-input time limit. A time-out that lands in
    the middle of a module import leaves that module half-imported for the rest of the
    process (OpenCV then refuses to load: "recursion is detected"), so a batch runner calls
    this once per process before its first timed check. With `local` False (a --no-local
    scan) the local-feature index is neither built nor loaded: it would not be read."""
    import exifread  # noqa: F401

    import imgverify.media.fetch as fetch_module
    from imgverify.threads import preload

    preload()  # cheap once done: every later call returns at once
    fetch_module.preload()
    try:
        import c2pa  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency; provenance says when it is absent
        pass
    Image.init()  # every decoder plugin: identifying an input walks them
    if archive is not None:
        # one real check of a made-up picture walks the whole path once (decoders, hashes
        # and the libraries they import, the index, local features): nothing of it is
        # imported later under a time limit
        import numpy as np

        noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noise).save(buf, "JPEG", quality=90)
        check(buf.getvalue(), archive, claimed_date="2000-01-01", max_matches=1,
              name="warm-up", thresholds=local_thresholds(local))
        if local:
            prepare_local_index(archive)
    if claimed_place:
        from imgverify.report import places

        try:
            places.gazetteer()
        except Exception:  # noqa: BLE001 - claims then fall back to text, as they would anyway
            pass


def check(source: Source, archive: Archive | None = None, *,
          claimed_date: str | dt.date | None = None, claimed_place: str | None = None,
          thresholds: Thresholds = DEFAULT_THRESHOLDS, limits: Limits | None = None,
          max_matches: int = 10, name: str | None = None, align: bool = True,
          native_thread_limit: int | None = 1) -> CheckResult:
    """Check one image (path, URL, bytes, PIL image or '-') against the archive.

    Input problems do not raise: they come back as a result with verdict "error" and a typed
    `error`, so a batch can go on. Archive problems (ArchiveError), a malformed claimed
    date (ValueError) and an archive passed as a path instead of an open `Archive`
    (TypeError) do raise: they are the caller's to fix, not the input's.
    Without an archive, the shipped default is used, opened once per process and reused.

    `align` (default on) fits the local-feature transform of a match its hashes found, so a
    report can outline the part of the archived photo a crop kept and show the alignment;
    throughput-bound callers (scans) turn it off: it costs a feature extraction per find.

    While it runs, BLAS/OpenCV/OpenMP pools are held at `native_thread_limit` threads and
    the caller's settings are restored afterwards (`threads.native_threads`); None leaves
    them alone.
    """
    with native_threads(native_thread_limit):
        return _check(source, archive, claimed_date=claimed_date, claimed_place=claimed_place,
                      thresholds=thresholds, limits=limits, max_matches=max_matches, name=name,
                      align=align)


def _check(source: Source, archive: Archive | None, *, claimed_date: str | dt.date | None,
           claimed_place: str | None, thresholds: Thresholds, limits: Limits | None,
           max_matches: int, name: str | None, align: bool) -> CheckResult:
    started = time.perf_counter()
    if isinstance(archive, (str, os.PathLike)):
        raise TypeError(f"archive must be an open imgverify.Archive, not the path "
                        f"{os.fspath(archive)!r}: open it once with "
                        "imgverify.Archive.open(path) and pass it to every check")
    archive = archive if archive is not None else shared_default_archive()
    claimed = parse_claimed_date(claimed_date)
    label = name or describe_source(source)
    try:
        # a check that may search local features decodes a large original once, at the
        # scale they need, and reduces the hash picture from it
        loaded = load(source, limits, feature_side=_feature_side
                      if thresholds.use_local_features else None)
    except ImgVerifyError as exc:
        sha256, exif = _salvage(source, limits)
        notes = notes_for(ERROR, [], exif, claimed, claimed_place)
        return CheckResult(input=label, verdict=ERROR, error=exc.to_dict(), sha256=sha256,
                           exif=exif.to_dict(), notes=notes,
                           claimed_date=claimed.isoformat() if claimed else None,
                           claimed_place=claimed_place, archive=_summary(archive),
                           elapsed_ms=(time.perf_counter() - started) * 1000)
    if name is None and label in ("<bytes>", "<PIL image>", "-"):
        label = loaded.name
    return check_loaded(loaded, archive, label=label, claimed=claimed,
                        claimed_place=claimed_place, thresholds=thresholds,
                        max_matches=max_matches, started=started, align=align)


def check_loaded(loaded: LoadedImage, archive: Archive, *, label: str, claimed: dt.date | None,
                 claimed_place: str | None, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                 max_matches: int = 10, started: float | None = None, align: bool = True
                 ) -> CheckResult:
    started = started if started is not None else time.perf_counter()
    exif = read_exif(loaded.data) if loaded.format != "PIL" else ExifEvidence()
    query = QueryHashes(loaded.image, loaded.scale)
    index = archive.index()
    raw = find(query, index, thresholds)
    exact = archive.find_sha256(loaded.sha256)
    accepted = [(r, pdq_only_strength(r.distances["pdq"], thresholds) if r.hash_only
                 else strength_of(r.combined, thresholds)) for r in raw]
    kept = [(r, s) for r, s in accepted if s is not None][: max_matches * 3]
    refs = archive.references([r.ref_key for r, _ in kept] + ([exact.key] if exact else []))
    if exact is not None and exact.key not in refs:
        exact = None  # removed between the two look-ups: nothing left to cite
    matches: list[Match] = []
    scenes: list[SceneMatch] = []
    pictures = _ReferencePictures(archive)
    for r, strength in kept:
        ref = refs.get(r.ref_key)
        if ref is None or strength is None:
            continue  # removed since the index snapshot
        is_exact = exact is not None and exact.key == ref.key
        agreement = None if is_exact else _global_agreement(query, r, pictures(ref.key),
                                                            archive, thresholds)
        if agreement is not None and \
                thresholds.scene_agreement <= agreement < thresholds.copy_agreement:
            # the hashes agree (same framing, same place) but the pixels do not: another
            # frame of a fixed camera, or another shot from the same spot
            scenes.append(_scene(ref, {"method": "global_hashes",
                                       "agreement": round(agreement, 3), **r.distances}))
            continue
        if agreement is not None and agreement < thresholds.scene_agreement:
            continue  # hashes collided by chance: laid over each other, nothing agrees
        m = _match(ref, 1.0 if is_exact else score_of(r.combined),
                   "likely" if is_exact else strength, r.distances,
                   "identical file" if is_exact else r.transform, claimed, is_exact)
        m.agreement = agreement
        matches.append(m)
        if not is_exact and r.query_part != "full":
            # the photo band, collage tile or bordered picture whose hashes matched
            m.region = _part_box(query, r.query_part)
    if exact is not None and all(m.key != exact.key for m in matches):
        zero = {"pdq": 0, "phash": 0, "dhash": 0, "whash": 0}
        matches.append(_match(refs[exact.key], 1.0, "likely", zero, "identical file", claimed,
                              True))
    local_pending = False
    # the local-feature picture is decoded again from the original bytes at most once per
    # check, though both the crop search and the report's alignment may need it
    local_picture = functools.cache(lambda: _local_picture(loaded))
    # and its keypoints found once: the crop search and the alignment see the same picture
    local_extraction = functools.cache(
        lambda: QueryExtraction(local_picture()[0], QUERY_FEATURES, side=local_picture()[1]))
    local_state = "off"
    if thresholds.use_local_features and not any(m.strength == "likely" for m in matches):
        local_pending = bool(getattr(archive.feature_index(), "pending", False))
        local_state = "pending" if local_pending else "searched"
        if not local_pending:  # a pending index finds nothing: no keypoints to extract
            _add_local_matches(loaded, archive, thresholds, matches, claimed, query, scenes,
                               pictures, local_picture()[0], local_extraction())
    elif thresholds.use_local_features:
        local_state = "not_needed"
    matches, desk_checks = split_desk_checks(matches)
    matches = order_matches(matches)[:max_matches]
    if align and thresholds.use_local_features and matches:
        _align_top(loaded, archive, thresholds, matches[0], local_extraction)
    verdict = decide(matches)
    matched = {m.key for m in matches}
    scenes = _unique_scenes(s for s in scenes if s.key not in matched)[:max_matches]
    summary = _summary(archive)
    notes = notes_for(verdict, matches, exif, claimed, claimed_place, summary)
    notes[-1:-1] = [s.note() for s in scenes[:3]]
    if local_pending:
        notes[-1:-1] = [LOCAL_INDEX_PENDING_NOTE]
    elif local_state == "off" and verdict != LIKELY:
        notes[-1:-1] = [LOCAL_OFF_NOTE]  # a likely whole-picture match needs no more search
    hs = query.default_hashset()
    findings = [f.to_dict() for f in check_claims(matches, exif, claimed, claimed_place)]
    credentials = read_credentials(loaded.data, loaded.format) if loaded.format != "PIL" else None
    if credentials is not None and credentials.present:
        broken = credentials.signature_valid is False or credentials.content_intact is False
        findings.insert(0, {"check": "content_credentials", "finding": credentials.summary(),
                            "strength": "strong" if broken else "info",
                            "supports": "neutral"})
    events = [e.to_dict() for e in timeline(matches, exif, claimed)]
    for m in matches:
        m.chance = chance_of(m, summary.get("references") if summary else None)
    result = CheckResult(
        input=label, verdict=verdict, sha256=loaded.sha256, matches=matches,
        exif=exif.to_dict(), notes=notes, same_scene=scenes,
        claimed_date=claimed.isoformat() if claimed else None, claimed_place=claimed_place,
        hashes=hs.to_hex(), image_size=loaded.original_size, claim_checks=findings,
        timeline=events,
        content_credentials=credentials.to_dict() if credentials is not None else None,
        elapsed_ms=(time.perf_counter() - started) * 1000, picture=loaded.image,
        archive=summary, searched={"global_hashes": "searched", "local_features": local_state},
    )
    add_first_seen(result, archive, desk_checks)
    return result


def _locate(loaded: LoadedImage, archive: Archive, g: GeometricMatch
            ) -> tuple[Box, Box | None]:
    """The outline of the photo in the submitted image (the fitted frame trimmed to where
    the image still shows the archived photo) and the part of the archived photo it shows."""
    region: Box = g.region
    core = keypoint_box(g.pairs or [])
    thumb = archive.thumbnail(g.ref_key)
    if g.matrix is not None and core is not None and thumb:
        try:
            with Image.open(io.BytesIO(thumb)) as im:
                region = refine_region(loaded.image, im.convert("RGB"), g.matrix, g.region,
                                       core)
        except (OSError, ValueError):
            pass  # an unreadable thumbnail: keep the fitted frame
    return region, reference_outline(g.matrix, region)


def _align_top(loaded: LoadedImage, archive: Archive, thresholds: Thresholds,
               top: Match, local_extraction: Callable[[], QueryExtraction]) -> None:
    """Where a match found by its global hashes sits, for the report: fit the local-feature
    transform against that one reference. A crop matched by its hashes then outlines the
    part of the archived photo it kept, and the HTML shows the alignment. Strength, score
    and distances are left as the hashes decided them."""
    if top.exact_copy or top.alignment is not None:
        return
    try:
        features = archive.feature_index()
    except ArchiveError:
        return
    if getattr(features, "pending", False):
        return  # nothing to align against until the index is built
    best = None
    extraction = local_extraction()
    for mirrored in (False, True):
        g = features.verify(extraction.mirrored() if mirrored else extraction.features,
                            top.key, mirrored=mirrored)
        if g is not None and g.inliers >= thresholds.local_possible and (
                best is None or g.inliers > best.inliers):
            best = g
        if best is not None and not mirrored and best.inliers >= thresholds.local_likely:
            break  # clearly aligned as it is: no need to try the mirror image
    if best is None:
        return
    top.region, top.reference_region = _locate(loaded, archive, best)
    top.alignment = _alignment(best)


def _alignment(g: GeometricMatch) -> dict[str, Any] | None:
    """The fitted transform and inlier pairs, normalised, as the JSON carries them."""
    if g.matrix is None:
        return None
    return {"reference_to_query": [[round(v, 6) for v in row] for row in g.matrix],
            "coordinates": "normalised: x / width and y / height of each image",
            "inliers": [[[round(q[0], 4), round(q[1], 4)], [round(r[0], 4), round(r[1], 4)]]
                        for q, r in g.pairs or []]}


def _in_tile(transform: str | None, region: Box | None, query: QueryHashes) -> str | None:
    """Say "one tile of a collage" when the outline is one of the collage cells found."""
    if not transform or region is None or INSIDE_LARGER_IMAGE not in transform:
        return transform
    for name, _box in query.boxes:
        tile = _part_box(query, name) if name.startswith("tile-") else None
        if tile is not None and _inside(region, tile) >= 0.9 and _inside(tile, region) >= 0.6:
            return transform.replace(INSIDE_LARGER_IMAGE,
                                     f"{INSIDE_LARGER_IMAGE}: one tile of a collage")
    return transform


def _inside(a: Box, b: Box) -> float:
    """Share of box `a` that lies inside box `b` (a tile found with its gutters is a little
    larger than the photo in it)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return ix * iy / area if area > 0 else 0.0


def _part_box(query: QueryHashes, name: str) -> tuple[float, float, float, float] | None:
    w, h = query.size
    for part, (x0, y0, x1, y1) in query.boxes:
        if part == name:
            return (x0 / w, y0 / h, x1 / w, y1 / h)
    return None


def _summary(archive: Archive) -> dict[str, Any] | None:
    """The archive a result was checked against, for the report; None if it cannot say."""
    try:
        return archive.summary()
    except ArchiveError:
        return None


def _salvage(source: Source, limits: Limits | None) -> tuple[str | None, ExifEvidence]:
    """The sha256 and the EXIF of an input that could not be decoded, when its bytes can be
    read again cheaply (a local file or bytes; never a second download): an editor still
    wants the camera metadata of a truncated or oversized file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)) and not is_url(os.fspath(source)) \
            and os.fspath(source) != "-":
        try:
            _name, data = read_source(source, limits or Limits())
        except ImgVerifyError:
            return None, ExifEvidence()
    else:
        return None, ExifEvidence()
    if len(data) > (limits or Limits()).max_bytes:
        return None, ExifEvidence()
    return hashlib.sha256(data).hexdigest(), read_exif(data)


def _feature_side(original_size: tuple[int, int]) -> int:
    """The long side local features look at a picture of this size at: about the resolution
    the references were indexed at (FEATURE_SIDE), more for tall or wide layouts (phone
    screenshots, stories) so the photo inside them keeps that resolution."""
    w, h = original_size
    aspect = max(w, h) / max(1, min(w, h))
    return int(min(2.2 * FEATURE_SIDE, FEATURE_SIDE * max(1.0, aspect / 1.2)))


def _local_picture(loaded: LoadedImage) -> tuple[Image.Image, int]:
    """The submitted picture as local features see it, and its long side
    (`_feature_side`)."""
    side = _feature_side(loaded.original_size)
    picture = picture_for_features(loaded, side)
    if max(picture.size) > side:
        # a large original decodes at up to twice `side` (JPEG scales by halves): more
        # pixels than the references were indexed at only make keypoint detection dearer
        picture = picture.copy()
        picture.thumbnail((side, side), Image.Resampling.BILINEAR)
    return picture, max(side, *picture.size)


#: The largest picture a region is cut from (its long side): a tile of a 200-megapixel
#: collage must not cost a full decode of it (600 MB of RGB) on a shared service.
SHARPER_MAX_SIDE = 4096


def _sharper_regions(loaded: LoadedImage, picture: Image.Image
                     ) -> Callable[[tuple[float, float, float, float]], Image.Image | None]:
    """Regions of the submitted image at up to MIN_FEATURE_SIDE pixels on their long side,
    from the largest decode they need (made at most once more per check, and only when a
    region reaches for it); None when `picture` already has every pixel of the original."""
    decoded: list[Image.Image] = []

    def region(box: tuple[float, float, float, float]) -> Image.Image | None:
        w, h = picture.size
        if max(loaded.original_size) <= max(w, h):
            return None
        x0, y0, x1, y1 = box
        long_side = max((x1 - x0) * w, (y1 - y0) * h, 1.0)
        want = min(max(loaded.original_size), SHARPER_MAX_SIDE,
                   math.ceil(max(w, h) * MIN_FEATURE_SIDE / long_side))
        if not decoded or max(decoded[0].size) < want:
            decoded[:] = [picture_for_features(loaded, want)]
        pic = decoded[0]
        crop = pic.crop((int(x0 * pic.width), int(y0 * pic.height),
                         int(x1 * pic.width), int(y1 * pic.height)))
        if max(crop.size) > MIN_FEATURE_SIDE:
            crop.thumbnail((MIN_FEATURE_SIDE, MIN_FEATURE_SIDE), Image.Resampling.BILINEAR)
        return crop

    return region


def _add_local_matches(loaded: LoadedImage, archive: Archive, thresholds: Thresholds,
                       matches: list[Match], claimed: dt.date | None,
                       query: QueryHashes, scenes: list[SceneMatch],
                       pictures: _ReferencePictures, picture: Image.Image,
                       extraction: QueryExtraction) -> None:
    """Crops, insets and screenshots: local features with geometric verification, then the
    aligned pixels decide between "copy of the archived photo" and "same place, another
    photo" (see Thresholds.copy_agreement)."""
    found = find_local(picture, archive.feature_index(), thresholds, query.inner_regions(),
                       pictures, whole=extraction, sharper=_sharper_regions(loaded, picture))
    if not found:
        return
    refs = archive.references([g.ref_key for g in found])
    by_key = {m.key: m for m in matches}
    for g in found:
        ref = refs.get(g.ref_key)
        if ref is None:
            continue
        kind = classify_local(g, thresholds)
        if kind is None or kind == "same_scene":
            if kind == "same_scene":
                scenes.append(_scene(ref, {"method": "local_features",
                                           "local_inliers": g.inliers,
                                           "coverage": round(g.coverage, 3),
                                           "agreement": round(g.agreement or 0.0, 3)}))
            continue  # the keypoints agree, the photo does not
        strength = kind
        score = min(1.0, 0.5 + g.inliers / (4.0 * thresholds.local_likely))
        existing = by_key.get(g.ref_key)
        if existing is not None:
            if existing.strength != "likely" and strength == "likely":
                existing.strength = "likely"
            existing.score = max(existing.score, score)
            existing.region, existing.reference_region = _locate(loaded, archive, g)
            existing.alignment = _alignment(g)
            existing.distances["local_inliers"] = g.inliers
            existing.transform = _in_tile(g.describe(), existing.region, query)
            existing.method = "global_hashes+local_features"
            existing.local_evidence = g.to_evidence()
            continue
        m = _match(ref, score, strength, {"local_inliers": g.inliers}, g.describe(), claimed,
                   False)
        m.region, m.reference_region = _locate(loaded, archive, g)
        m.transform = _in_tile(m.transform, m.region, query)
        m.alignment = _alignment(g)
        m.method = "local_features"
        m.local_evidence = g.to_evidence()
        m.agreement = g.agreement
        matches.append(m)
        by_key[g.ref_key] = m


def classify_local(g: GeometricMatch, thresholds: Thresholds) -> str | None:
    """"likely" or "possible" (a copy), "same_scene" (same place, another photo) or None
    for a verified local-feature match.

    The aligned pixels decide copy versus not-a-copy; the inliers decide the strength.
    Without the reference's pixels (no thumbnail) the inliers decide alone, as before.
    """
    if g.agreement is not None and g.agreement < thresholds.copy_agreement:
        if (g.similarity_agreement or 0.0) >= thresholds.scene_agreement or (
                g.coverage >= 2 * thresholds.local_min_coverage
                and g.inliers >= thresholds.local_likely):
            return "same_scene"
        return None
    if g.inliers >= thresholds.local_likely:
        return "likely"
    if g.agreement is not None and g.agreement >= thresholds.confirmed_agreement \
            and g.inliers >= thresholds.local_possible:
        return "likely"
    return "possible"


class _ReferencePictures:
    """Archived thumbnails by reference key, decoded once per check."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.cache: dict[int, Image.Image | None] = {}

    def __call__(self, key: int) -> Image.Image | None:
        if key not in self.cache:
            data = self.archive.thumbnail(key)
            pic = None
            if data:
                try:
                    with Image.open(io.BytesIO(data)) as im:
                        pic = im.convert("RGB")
                except (OSError, ValueError):
                    pic = None  # an unreadable thumbnail only costs the pixel check
            self.cache[key] = pic
        return self.cache[key]


def _global_agreement(query: QueryHashes, r: RawMatch, reference: Image.Image | None,
                      archive: Archive, thresholds: Thresholds) -> float | None:
    """Pixel agreement of a global-hash match: the query part turned as it matched, laid
    over the archived photo (only when both are the whole frame, so they align as they are).

    Global hashes also accept light crops and shifts, which misalign the frames: when the
    frames as they are do not agree, the part is aligned on its keypoints (as the local
    stage does) and the better agreement counts.
    """
    if reference is None or r.ref_part != "full":
        return None
    part = next((pic for name, pic, _ in query.parts if name == r.query_part), None)
    if part is None:
        return None
    op = DIHEDRAL_TRANSPOSE[r.dihedral]
    oriented = part if op is None else part.transpose(op)
    ratio = (oriented.width / max(1, oriented.height)) / (reference.width
                                                         / max(1, reference.height))
    if abs(math.log(max(ratio, 1e-6))) > 0.15:
        return None  # framed differently: no identity alignment to check
    ref_box = photo_box(reference)
    plain = aligned_agreement(oriented, reference, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                              reference_box=ref_box)
    if plain is None or plain >= thresholds.copy_agreement:
        return plain
    gm = archive.feature_index().verify(extract(oriented, QUERY_FEATURES), r.ref_key)
    if gm is None or gm.matrix is None or gm.inliers < thresholds.local_confirmed:
        return plain
    best = plain
    for matrix in (gm.matrix, gm.homography):
        if matrix is not None:
            aligned = aligned_agreement(oriented, reference, matrix, reference_box=ref_box)
            if aligned is not None and aligned > best:
                best = aligned
    return best


def _scene(ref, evidence: dict[str, Any]) -> SceneMatch:  # type: ignore[no-untyped-def]
    return SceneMatch(reference_id=ref.reference_id, date=ref.date, event=ref.event,
                      place=ref.place, source_url=ref.source_url, evidence=evidence,
                      key=ref.key)


def _unique_scenes(scenes: Iterable[SceneMatch]) -> list[SceneMatch]:
    best: dict[int, SceneMatch] = {}
    for s in scenes:
        if s.key not in best:
            best[s.key] = s
    return sorted(best.values(), key=lambda s: s.date)


def _match(ref, score, strength, distances, transform, claimed, exact):  # type: ignore[no-untyped-def]
    days = None
    if claimed is not None:
        try:
            days = (claimed - dt.date.fromisoformat(ref.date)).days
        except ValueError:
            days = None
    return Match(
        reference_id=ref.reference_id, score=score, strength=strength, date=ref.date,
        event=ref.event, place=ref.place, caption=ref.caption, source=ref.source,
        source_url=ref.source_url, credit=ref.credit, license=ref.license,
        published=ref.published, distances=dict(distances), transform=transform,
        days_before_claim=days, exact_copy=exact,
        sha256=None if ref.hash_only else ref.sha256, hash_only=ref.hash_only, key=ref.key,
    )
