"""Find the archived references a picture matches: index candidates, then re-scoring.

For each hashed part of the query (the full frame, the photo inside flat borders) the index
returns references near it by PDQ over the 8 rotation/flip variants. Each
candidate is re-scored with all four families in the orientation that found it; the best
part and orientation per reference is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from imgverify.match.verdict import Thresholds, combined_distance
from imgverify.signals.features import (
    FEATURE_SIDE,
    INSIDE_LARGER_IMAGE,
    MIN_FEATURE_SIDE,
    QUERY_FEATURES,
    GeometricMatch,
    LocalFeatures,
    LocalIndex,
    QueryExtraction,
    aligned_agreement,
    photo_box,
)
from imgverify.signals.hashing import (
    EDIT_DESCRIPTION,
    FULL_SCALE,
    HashSet,
    PictureHasher,
    Scale,
)
from imgverify.signals.regions import find_parts, photo_region
from imgverify.store.index import PDQ_ONLY_PART, HashIndex

#: An inner region (photo band, collage tile) is searched with all its descriptors only
#: when its REGION_PROBE_FEATURES strongest point at some reference (the index's `probe`:
#: `FeatureIndex.probe_votes` nearest-neighbour votes, or for the compact index a chance
#: bar of its own, `compact.PROBE_CHANCE_REFERENCES`, chosen with this number).
REGION_PROBE_FEATURES = 250


@dataclass
class RawMatch:
    ref_key: int
    combined: float
    distances: dict[str, int]
    dihedral: int  # query variant that matched
    query_part: str  # "full" | "trimmed"
    ref_part: str
    crop_fraction: float | None = None  # area of the query part relative to the query

    @property
    def hash_only(self) -> bool:
        """Matched a reference known only by its PDQ (from a hash list): no image to verify."""
        return self.ref_part == PDQ_ONLY_PART

    @property
    def transform(self) -> str | None:
        bits: list[str] = []
        rotation = EDIT_DESCRIPTION[self.dihedral]
        if rotation:
            bits.append(rotation)
        if self.query_part == "photo":
            bits.append(INSIDE_LARGER_IMAGE)
        elif self.query_part == "band":
            bits.append("with a caption bar added")
        elif self.query_part.startswith("tile-"):
            bits.append(f"{INSIDE_LARGER_IMAGE}: one tile of a collage")
        elif self.query_part == "trimmed" and self.ref_part == "full":
            bits.append("framed with borders")
        elif self.query_part == "full" and self.ref_part == "trimmed":
            bits.append("borders of the original removed")
        return ", ".join(bits) or None


class QueryHashes:
    """Hashes of every part of one query picture, computed once and reused across searches."""

    def __init__(self, rgb: Image.Image, scale: Scale = FULL_SCALE) -> None:
        """`scale`: original pixels per pixel of `rgb` (`LoadedImage.scale`)."""
        self.size = rgb.size
        self.boxes = find_parts(rgb, query=True)
        self.parts = [(name, pic, PictureHasher(pic, scale))
                      for (name, box) in self.boxes
                      for pic in [rgb if name == "full" else rgb.crop(box)]]
        self.area = rgb.width * rgb.height

    def inner_regions(self) -> list[tuple[str, tuple[float, float, float, float]]]:
        """Photo band and collage tiles as (name, normalised box), for the local stage."""
        w, h = self.size
        return [(name, (b[0] / w, b[1] / h, b[2] / w, b[3] / h)) for name, b in self.boxes
                if name == "photo" or name.startswith("tile-")]

    def default_hashset(self) -> HashSet:
        return self.parts[0][2].hashset(0)


def find(query: QueryHashes, index: HashIndex, thresholds: Thresholds,
         limit: int = 50) -> list[RawMatch]:
    """Best match per reference among all query parts and orientations, best first."""
    best: dict[int, RawMatch] = {}
    for part_name, pic, hasher in query.parts:
        cands = index.search(hasher.pdq_variants, thresholds.pdq_radius, limit)
        for c in cands:
            qh = hasher.hashset(c.dihedral)
            if c.ref_part == PDQ_ONLY_PART and qh.pdq_quality < thresholds.pdq_only_min_quality:
                continue  # PDQ alone is unreliable on flat pictures, and nothing else checks it
            distances = index.distances(c.row, qh)
            combined = combined_distance(distances)
            prev = best.get(c.ref_key)
            if prev is None or combined < prev.combined:
                best[c.ref_key] = RawMatch(
                    c.ref_key, combined, distances, c.dihedral, part_name, c.ref_part,
                    crop_fraction=(pic.width * pic.height) / query.area)
    return sorted(best.values(), key=lambda m: m.combined)


def find_local(picture: Image.Image, features: LocalIndex, thresholds: Thresholds,
               regions: list[tuple[str, tuple[float, float, float, float]]] | None = None,
               reference_picture: Callable[[int], Image.Image | None] | None = None,
               whole: QueryExtraction | None = None,
               sharper: Callable[[tuple[float, float, float, float]], Image.Image | None]
               | None = None) -> list[GeometricMatch]:
    """References found by local features + RANSAC, strongest first.

    The whole picture is tried first, then (if nothing verified) its mirror image, then each
    inner region (photo band, collage tiles) on its own so the photo's keypoints are not
    crowded out by the rest of the layout. Regions are reported in whole-picture terms.

    A verified match whose inliers sit in one small patch of the matched region (a shared
    logo, badge or ticker) is dropped. `reference_picture(key)` gives a reference's pixels
    (the archive's thumbnail) to measure how well the aligned query reproduces them
    (`GeometricMatch.agreement`), which tells a copy from another photo of the same place.
    `whole` is the picture's own extraction when the caller has one (the report's alignment
    uses the same keypoints). `sharper(box)` gives a region (normalised box) from a larger
    decode of the same image, when there is one: a small region (the photo inside a
    screenshot of a screenshot, a tile of a large collage) would otherwise be enlarged
    from the few pixels `picture` has, and its keypoints found on interpolated pixels.
    """
    if len(features) == 0:
        return []
    found: dict[int, GeometricMatch] = {}
    boxes: dict[int, tuple[int, int, int, int]] = {}  # archived photo inside its borders

    def extraction(pic: Image.Image) -> QueryExtraction:
        # the caller sized the picture (larger for tall screenshots); do not shrink it again
        return QueryExtraction(pic, QUERY_FEATURES, side=max(FEATURE_SIDE, *pic.size))

    def attempt(query: LocalFeatures, pic: Image.Image, mirrored: bool,
                box: tuple[float, float, float, float] | None) -> None:
        for key, _votes in features.vote(query):
            gm = features.verify(query, key, mirrored=mirrored)
            if gm is None or gm.inliers < min(thresholds.local_possible,
                                              thresholds.local_confirmed):
                continue
            if gm.coverage < thresholds.local_min_coverage:
                continue  # clustered in one patch: an overlay or a logo, not the photo
            ref_pic = reference_picture(key) if reference_picture is not None else None
            ref_box = None
            if ref_pic is not None:
                if key not in boxes:  # a reference verified again for a region or mirror
                    boxes[key] = photo_box(ref_pic)
                ref_box = boxes[key]
            if ref_pic is not None and gm.matrix is not None:
                # the matrices already map onto the unmirrored picture
                base = picture if mirrored else pic
                gm.similarity_agreement = aligned_agreement(base, ref_pic, gm.matrix,
                                                            reference_box=ref_box)
                gm.agreement = gm.similarity_agreement
                if gm.homography is not None:
                    perspective = aligned_agreement(base, ref_pic, gm.homography,
                                                    reference_box=ref_box)
                    if perspective is not None and (gm.agreement is None
                                                    or perspective > gm.agreement):
                        gm.agreement = perspective
            if box is not None:
                gm = _in_parent(gm, box)
                if ref_pic is not None and gm.agreement is not None and confirmed(gm):
                    gm.agreement = _agreement_beyond(picture, ref_pic, ref_box, gm,
                                                     gm.agreement, box,
                                                     thresholds.scene_agreement)
            if gm.inliers < thresholds.local_possible and (
                    gm.agreement is None or gm.agreement < thresholds.copy_agreement):
                continue  # few inliers count only when the pixels confirm them
            prev = found.get(key)
            if prev is None or (confirmed(gm), gm.inliers) > (confirmed(prev), prev.inliers):
                found[key] = gm

    def confirmed(g: GeometricMatch) -> bool:
        return g.agreement is None or g.agreement >= thresholds.copy_agreement

    def strong() -> bool:
        # a few pixel-confirmed inliers are kept, but the inner regions may do better; a
        # match the pixels reject (the whole collage laid over one photo) stops nothing
        return any(g.inliers >= thresholds.local_likely and confirmed(g)
                   for g in found.values())

    def promising(region: QueryExtraction) -> bool:
        # a region's strongest, spread-out descriptors vote first (only they are described
        # so far); only when they lift some reference above chance are the rest described
        # and all of them vote (most inner regions of a picture that is not archived stop
        # here, at half the cost of a full vote)
        if len(region) <= REGION_PROBE_FEATURES:
            return True  # that is all there is: the full vote is the probe
        return features.probe(region.head(REGION_PROBE_FEATURES))

    # (not `whole or ...`: an extraction with no keypoints has length 0, and is still done)
    whole = whole if whole is not None else extraction(picture)
    attempt(whole.features, picture, False, None)
    if not any(confirmed(g) for g in found.values()):
        # the mirror image's descriptors at the mirrored keypoints: no second detection
        attempt(whole.mirrored(), picture, True, None)
    if not strong():
        w, h = picture.size
        todo = list(regions or [])
        while todo and not strong():
            name, (x0, y0, x1, y1) = todo.pop(0)
            box = (int(x0 * w), int(y0 * h), int(x1 * w), int(y1 * h))
            if box[2] - box[0] < 48 or box[3] - box[1] < 48:
                continue
            crop = picture.crop(box)
            if sharper is not None and max(crop.size) < MIN_FEATURE_SIDE:
                better = sharper((x0, y0, x1, y1))
                if better is not None and max(better.size) > max(crop.size):
                    crop = better
            local = extraction(crop)
            if promising(local):
                attempt(local.features, crop, False, (x0, y0, x1, y1))
            if not strong() and name == "photo":
                # a screenshot of a screenshot: the photo band holds another layout, with
                # the photo inside it; one level deeper is enough in practice
                inner = photo_region(crop, cut=True)
                if inner is not None and (inner[2] - inner[0]) * (inner[3] - inner[1]) \
                        < 0.8 * crop.width * crop.height:
                    bw, bh = x1 - x0, y1 - y0
                    todo.insert(0, ("photo-inner", (
                        x0 + inner[0] / crop.width * bw, y0 + inner[1] / crop.height * bh,
                        x0 + inner[2] / crop.width * bw, y0 + inner[3] / crop.height * bh)))
    return sorted(found.values(), key=lambda g: -g.inliers)


def _agreement_beyond(picture: Image.Image, reference: Image.Image,
                      reference_box: tuple[int, int, int, int] | None, gm: GeometricMatch,
                      agreement: float, box: tuple[float, float, float, float],
                      scene: float) -> float:
    """The pixel agreement of a region's match (`agreement`, judged on the region, in
    whole-picture terms `gm`), judged on more than the region when the archived photo
    goes on beyond it.

    A region is searched on its own because the rest of the picture is not the photo
    (app chrome, other collage tiles), so its match is checked on its own pixels. But the
    region finder also cuts plain photos (a sky or a dark wall read as a border): there
    the archived scene goes on beyond the region, and another frame of a fixed camera,
    judged on the region alone, can agree like a copy (its sky, people and light, which
    differ, left out). So the submitted picture beyond the region is laid over the
    archived photo by the same fit: where it still shows the archived scene (agreement at
    the same-place level or more), the match is judged on all of the picture that lies
    over the photo, as the whole picture's own match is; where it shows something else
    (chrome, other tiles) or too little to say, on the region, as before.
    """
    matrices = [m for m in (gm.matrix, gm.homography) if m is not None]
    beyond = [a for m in matrices
              if (a := aligned_agreement(picture, reference, m, query_box=box,
                                         outside=True, reference_box=reference_box))
              is not None]
    if not beyond or max(beyond) < scene:
        return agreement
    whole = [a for m in matrices
             if (a := aligned_agreement(picture, reference, m,
                                        reference_box=reference_box)) is not None]
    return min(agreement, max(whole)) if whole else agreement


def reference_outline(matrix: list[list[float]] | None,
                      region: tuple[float, float, float, float]
                      ) -> tuple[float, float, float, float] | None:
    """The part of the archived photo that appears in `region` of the submitted image (both
    normalised), through the inverse of the fitted reference -> query transform."""
    if matrix is None:
        return None
    import numpy as np

    m = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    try:
        inv = np.linalg.inv(m)
    except np.linalg.LinAlgError:
        return None
    x0, y0, x1, y1 = region
    corners = np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x1, y1, 1.0], [x0, y1, 1.0]]).T
    back = (inv @ corners)[:2]
    rx0, ry0 = (max(0.0, float(v)) for v in back.min(axis=1))
    rx1, ry1 = (min(1.0, float(v)) for v in back.max(axis=1))
    if rx1 <= rx0 or ry1 <= ry0:
        return None
    return (rx0, ry0, rx1, ry1)


def _in_parent(gm: GeometricMatch, box: tuple[float, float, float, float]) -> GeometricMatch:
    """Express a match found inside `box` (normalised) in whole-picture terms."""
    bx0, by0, bx1, by1 = box
    bw, bh = bx1 - bx0, by1 - by0
    rx0, ry0, rx1, ry1 = gm.region
    gm.region = (bx0 + rx0 * bw, by0 + ry0 * bh, bx0 + rx1 * bw, by0 + ry1 * bh)
    gm.region_fraction = gm.region_fraction * bw * bh
    to_parent = np.array([[bw, 0.0, bx0], [0.0, bh, by0], [0.0, 0.0, 1.0]])
    if gm.matrix is not None:
        gm.matrix = (to_parent @ np.vstack([np.asarray(gm.matrix), [0.0, 0.0, 1.0]]))[
            :2].tolist()
    if gm.pairs is not None:
        gm.pairs = [((bx0 + qx * bw, by0 + qy * bh), r) for (qx, qy), r in gm.pairs]
    if gm.homography is not None:
        gm.homography = (to_parent @ np.asarray(gm.homography)).tolist()
    return gm
