"""Find the archived references a picture matches: index candidates, then re-scoring.

For each hashed part of the query (the full frame, the photo inside flat borders) the index
returns references near it by PDQ over the 8 rotation/flip variants or by pHash. Each
candidate is re-scored with all four families in the orientation that found it; the best
part and orientation per reference is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from .features import QUERY_FEATURES, FeatureIndex, GeometricMatch, extract
from .hashing import (
    ALGORITHMS,
    DIHEDRAL_TRANSPOSE,
    EDIT_DESCRIPTION,
    HashSet,
    PictureHasher,
    hamming,
)
from .index import HashIndex
from .regions import picture_variants
from .verdict import Thresholds, combined_distance


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
    def transform(self) -> str | None:
        bits: list[str] = []
        rotation = EDIT_DESCRIPTION[self.dihedral]
        if rotation:
            bits.append(rotation)
        if self.query_part == "photo":
            bits.append("framed inside a larger layout (screenshot, story or caption bar)")
        elif self.query_part.startswith("tile-"):
            bits.append("inset as one tile of a collage")
        elif self.query_part == "trimmed" and self.ref_part == "full":
            bits.append("framed with borders")
        elif self.query_part == "full" and self.ref_part == "trimmed":
            bits.append("borders of the original removed")
        return ", ".join(bits) or None


class QueryHashes:
    """Hashes of every part of one query picture, computed once and reused across searches."""

    def __init__(self, rgb: Image.Image) -> None:
        self.parts = [(name, pic, PictureHasher(pic))
                      for name, pic in picture_variants(rgb, query=True)]
        self.area = rgb.width * rgb.height

    def default_hashset(self) -> HashSet:
        return self.parts[0][2].hashset(0)


def phash_variants(hasher: PictureHasher) -> list[int]:
    return [hasher.phash(k) for k in range(len(DIHEDRAL_TRANSPOSE))]


def find(query: QueryHashes, index: HashIndex, thresholds: Thresholds,
         limit: int = 50) -> list[RawMatch]:
    """Best match per reference among all query parts and orientations, best first."""
    best: dict[int, RawMatch] = {}
    for part_name, pic, hasher in query.parts:
        cands = index.search(hasher.pdq_variants, phash_variants(hasher),
                             thresholds.pdq_radius, thresholds.phash_radius, limit)
        for c in cands:
            qh = hasher.hashset(c.dihedral)
            ref = index.hashset(c.row)
            distances = {a: hamming(qh.get(a), ref.get(a)) for a in ALGORITHMS}
            combined = combined_distance(distances)
            prev = best.get(c.ref_key)
            if prev is None or combined < prev.combined:
                best[c.ref_key] = RawMatch(
                    c.ref_key, combined, distances, c.dihedral, part_name, c.ref_part,
                    crop_fraction=(pic.width * pic.height) / query.area)
    return sorted(best.values(), key=lambda m: m.combined)


def find_local(picture: Image.Image, features: FeatureIndex, thresholds: Thresholds,
               skip: set[int] | None = None) -> list[GeometricMatch]:
    """References found by local features + RANSAC, strongest first (mirror tried if none)."""
    if len(features) == 0:
        return []
    skip = skip or set()
    found: list[GeometricMatch] = []
    for mirrored in (False, True):
        pic = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirrored else picture
        query = extract(pic, QUERY_FEATURES)
        for key, _votes in features.vote(query):
            if key in skip:
                continue
            gm = features.verify(query, key, mirrored=mirrored)
            if gm is not None and gm.inliers >= thresholds.local_possible:
                found.append(gm)
        if found:
            break
    return sorted(found, key=lambda g: -g.inliers)
