"""`check`: one submitted image against one archive, from any source to a typed result.

This is the library's front door. It never prints, never exits and keeps no global state;
it is safe to call from many threads on one open `Archive`.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import time
from collections.abc import Iterable
from typing import Any

from PIL import Image

from .archive import Archive
from .claims import check_claims, timeline
from .errors import ImgVerifyError
from .evidence import ExifEvidence, read_exif
from .features import FEATURE_SIDE, QUERY_FEATURES, GeometricMatch, aligned_agreement, extract
from .hashing import DIHEDRAL_TRANSPOSE
from .load import Limits, LoadedImage, Source, describe_source, load, picture_for_features
from .match import QueryHashes, RawMatch, find, find_local
from .provenance import read_credentials
from .result import ERROR, NOT_AUTHENTIC_NOTE, CheckResult, Match, SceneMatch
from .verdict import (
    DEFAULT_THRESHOLDS,
    Thresholds,
    decide,
    notes_for,
    order_matches,
    parse_claimed_date,
    score_of,
    strength_of,
)


def check(source: Source, archive: Archive | None = None, *,
          claimed_date: str | dt.date | None = None, claimed_place: str | None = None,
          thresholds: Thresholds = DEFAULT_THRESHOLDS, limits: Limits | None = None,
          max_matches: int = 10, name: str | None = None) -> CheckResult:
    """Check one image (path, URL, bytes, PIL image or '-') against the archive.

    Input problems do not raise: they come back as a result with verdict "error" and a typed
    `error`, so a batch can go on. Archive problems (ArchiveError) and a malformed claimed
    date (ValueError) do raise: they are the caller's to fix, not the input's.
    """
    started = time.perf_counter()
    archive = archive if archive is not None else Archive.default()
    claimed = parse_claimed_date(claimed_date)
    label = name or describe_source(source)
    try:
        loaded = load(source, limits)
    except ImgVerifyError as exc:
        return CheckResult(input=label, verdict=ERROR, error=exc.to_dict(),
                           notes=[NOT_AUTHENTIC_NOTE],
                           claimed_date=claimed.isoformat() if claimed else None,
                           claimed_place=claimed_place,
                           elapsed_ms=(time.perf_counter() - started) * 1000)
    if name is None and label in ("<bytes>", "<PIL image>", "-"):
        label = loaded.name
    return check_loaded(loaded, archive, label=label, claimed=claimed,
                        claimed_place=claimed_place, thresholds=thresholds,
                        max_matches=max_matches, started=started)


def check_loaded(loaded: LoadedImage, archive: Archive, *, label: str, claimed: dt.date | None,
                 claimed_place: str | None, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                 max_matches: int = 10, started: float | None = None) -> CheckResult:
    started = started if started is not None else time.perf_counter()
    exif = read_exif(loaded.data) if loaded.format != "PIL" else ExifEvidence()
    query = QueryHashes(loaded.image, loaded.scale)
    index = archive.index()
    raw = find(query, index, thresholds)
    exact = archive.find_sha256(loaded.sha256)
    accepted = [(r, strength_of(r.combined, thresholds)) for r in raw]
    kept = [(r, s) for r, s in accepted if s is not None][: max_matches * 3]
    refs = archive.references([r.ref_key for r, _ in kept] + ([exact.key] if exact else []))
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
    if exact is not None and all(m.key != exact.key for m in matches):
        zero = {"pdq": 0, "phash": 0, "dhash": 0, "whash": 0}
        matches.append(_match(refs[exact.key], 1.0, "likely", zero, "identical file", claimed,
                              True))
    if thresholds.use_local_features and not any(m.strength == "likely" for m in matches):
        _add_local_matches(loaded, archive, thresholds, matches, claimed, query, scenes,
                           pictures)
    matches = order_matches(matches)[:max_matches]
    verdict = decide(matches)
    matched = {m.key for m in matches}
    scenes = _unique_scenes(s for s in scenes if s.key not in matched)[:max_matches]
    notes = notes_for(verdict, matches, exif, claimed, claimed_place)
    notes[-1:-1] = [s.note() for s in scenes[:3]]
    hs = query.default_hashset()
    findings = [f.to_dict() for f in check_claims(matches, exif, claimed, claimed_place)]
    credentials = read_credentials(loaded.data, loaded.format) if loaded.format != "PIL" else None
    if credentials is not None and credentials.present:
        broken = credentials.signature_valid is False or credentials.content_intact is False
        findings.insert(0, {"check": "content_credentials", "finding": credentials.summary(),
                            "strength": "strong" if broken else "info",
                            "supports": "neutral"})
    events = [e.to_dict() for e in timeline(matches, exif, claimed)]
    return CheckResult(
        input=label, verdict=verdict, sha256=loaded.sha256, matches=matches,
        exif=exif.to_dict(), notes=notes, same_scene=scenes,
        claimed_date=claimed.isoformat() if claimed else None, claimed_place=claimed_place,
        hashes=hs.to_hex(), image_size=loaded.original_size, claim_checks=findings,
        timeline=events,
        content_credentials=credentials.to_dict() if credentials is not None else None,
        elapsed_ms=(time.perf_counter() - started) * 1000, picture=loaded.image,
    )


def _add_local_matches(loaded: LoadedImage, archive: Archive, thresholds: Thresholds,
                       matches: list[Match], claimed: dt.date | None,
                       query: QueryHashes, scenes: list[SceneMatch],
                       pictures: _ReferencePictures) -> None:
    """Crops, insets and screenshots: local features with geometric verification, then the
    aligned pixels decide between "copy of the archived photo" and "same place, another
    photo" (see Thresholds.copy_agreement)."""
    # tall or wide layouts (phone screenshots, stories) get more pixels on their long side,
    # so the photo inside them keeps about the resolution the references were indexed at
    w, h = loaded.original_size
    aspect = max(w, h) / max(1, min(w, h))
    side = int(min(2.2 * FEATURE_SIDE, FEATURE_SIDE * max(1.0, aspect / 1.2)))
    picture = picture_for_features(loaded, side)
    found = find_local(picture, archive.feature_index(), thresholds, query.inner_regions(),
                       pictures)
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
            existing.region = g.region
            existing.distances["local_inliers"] = g.inliers
            existing.transform = g.describe()
            existing.method = "global_hashes+local_features"
            existing.local_evidence = g.to_evidence()
            continue
        m = _match(ref, score, strength, {"local_inliers": g.inliers}, g.describe(), claimed,
                   False)
        m.region = g.region
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
    plain = aligned_agreement(oriented, reference, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    if plain is None or plain >= thresholds.copy_agreement:
        return plain
    gm = archive.feature_index().verify(extract(oriented, QUERY_FEATURES), r.ref_key)
    if gm is None or gm.matrix is None or gm.inliers < thresholds.local_confirmed:
        return plain
    best = plain
    for matrix in (gm.matrix, gm.homography):
        if matrix is not None:
            aligned = aligned_agreement(oriented, reference, matrix)
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
        days_before_claim=days, exact_copy=exact, sha256=ref.sha256, key=ref.key,
    )
