"""Local features for the edits global hashes cannot survive: heavy crops, insets, screenshots.

Each reference keeps up to `REF_FEATURES` ORB keypoints (OpenCV) with their 32-byte binary
descriptors: about 5 KB per reference, stored in the archive. At query time the query's ORB
descriptors vote for references through one exact nearest-neighbour pass over all stored
descriptors (faiss binary flat index, SIMD popcount); the few references with most votes are
verified geometrically: a similarity transform (rotation, scale, translation) fitted with
RANSAC must explain enough matches. The transform tells what was done to the photo: how much
of it is visible (crop), where it sits in the submitted image (inset, screenshot, collage),
and by how many degrees it was turned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: Keypoints kept per reference (strongest first) and extracted per query.
REF_FEATURES = 160
QUERY_FEATURES = 500
#: Long side of the picture features are computed on.
FEATURE_SIDE = 640
#: Archives this small are verified on their top-voted references outright (cheap), since
#: chance votes spread over so few references say nothing.
SMALL_ARCHIVE = 64
#: A descriptor pair further apart than this (of 256 bits) is no match.
MAX_DESCRIPTOR_DISTANCE = 64
#: The one wording of "the photo sits inside a layout", whichever stage found it.
INSIDE_LARGER_IMAGE = "shown inside a larger image (screenshot, story, caption bar or collage)"


@dataclass
class LocalFeatures:
    """Keypoint positions normalised to [0, 1] of the picture, and ORB descriptors."""

    points: np.ndarray  # (K, 2) float32, x/width and y/height
    descriptors: np.ndarray  # (K, 32) uint8
    width: int
    height: int

    def to_blobs(self) -> tuple[bytes, bytes]:
        return (self.points.astype(np.float16).tobytes(),
                np.ascontiguousarray(self.descriptors, dtype=np.uint8).tobytes())

    @classmethod
    def from_blobs(cls, points: bytes, descriptors: bytes, width: int,
                   height: int) -> LocalFeatures:
        pts = np.frombuffer(points, dtype=np.float16).astype(np.float32).reshape(-1, 2)
        desc = np.frombuffer(descriptors, dtype=np.uint8).reshape(-1, 32)
        return cls(pts, desc, width, height)

    def __len__(self) -> int:
        return int(self.descriptors.shape[0])


#: Pictures smaller than this (thumbnails) are enlarged before keypoint detection: ORB's
#: 31-pixel patches and its scale pyramid need room, and a reposted thumbnail must still
#: meet its full-size original somewhere in that pyramid.
MIN_FEATURE_SIDE = 480


def _gray_array(picture: Image.Image, side: int) -> np.ndarray:
    gray = picture.convert("L")
    if max(gray.size) > side:
        gray = gray.copy()
        gray.thumbnail((side, side), Image.Resampling.BILINEAR)
    elif max(gray.size) < MIN_FEATURE_SIDE:
        f = MIN_FEATURE_SIDE / max(gray.size)
        gray = gray.resize((round(gray.width * f), round(gray.height * f)),
                           Image.Resampling.BICUBIC)
    return np.asarray(gray)


def extract(picture: Image.Image, max_features: int, side: int = FEATURE_SIDE) -> LocalFeatures:
    """ORB keypoints of the picture, strongest first (empty for flat or tiny pictures)."""
    import cv2

    cv2.setNumThreads(1)
    arr = _gray_array(picture, side)
    h, w = arr.shape
    if min(h, w) < 32:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), w, h)
    orb = cv2.ORB_create(  # type: ignore[attr-defined]
        nfeatures=max_features * 3, fastThreshold=12, edgeThreshold=15,
                         patchSize=31)
    keypoints, desc = orb.detectAndCompute(arr, None)
    if desc is None or not keypoints:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), w, h)
    order = _spread(keypoints, w, h, max_features)
    pts = np.array([keypoints[i].pt for i in order], dtype=np.float32)
    pts[:, 0] /= w
    pts[:, 1] /= h
    return LocalFeatures(pts, desc[order], w, h)


def _spread(keypoints: Sequence[Any], w: int, h: int, limit: int, grid: int = 6) -> np.ndarray:
    """Indices of the strongest keypoints, taken round-robin from a grid of cells, so that a
    block of high-contrast text (app chrome, captions) cannot take all of them."""
    xy = np.array([k.pt for k in keypoints], dtype=np.float32)
    response = np.array([k.response for k in keypoints], dtype=np.float32)
    cell = (np.minimum(grid - 1, (xy[:, 1] * grid / h).astype(int)) * grid
            + np.minimum(grid - 1, (xy[:, 0] * grid / w).astype(int)))
    order = np.lexsort((-response, cell))  # by cell, strongest first inside a cell
    sorted_cells = cell[order]
    rank = np.arange(order.size) - np.searchsorted(sorted_cells, sorted_cells)
    chosen = order[np.lexsort((-response[order], rank))][:limit]
    return chosen


@dataclass
class GeometricMatch:
    ref_key: int
    inliers: int
    matches: int
    rotation_deg: float
    scale: float  # query pixels per reference pixel (in normalised-aspect units)
    visible_fraction: float  # share of the reference's area visible in the query
    region: tuple[float, float, float, float]  # reference's box in the query, normalised
    region_fraction: float  # share of the query's area the photo occupies
    mirrored: bool = False
    #: reference -> query in normalised coordinates (x/width, y/height of each picture):
    #: [[a, b, tx], [c, d, ty]]; mirroring and inner regions already folded in
    matrix: list[list[float]] | None = None
    #: inlier pairs, normalised: ((query x, query y), (reference x, reference y))
    pairs: list[tuple[tuple[float, float], tuple[float, float]]] | None = None

    def describe(self) -> str:
        bits = []
        if self.mirrored:
            bits.append("mirrored")
        if abs(self.rotation_deg) >= 1.5:
            # image y points down: a positive fitted angle is a clockwise turn on screen
            direction = "clockwise" if self.rotation_deg > 0 else "counter-clockwise"
            bits.append(f"rotated about {abs(self.rotation_deg):.0f}° {direction}")
        if self.visible_fraction < 0.93:
            bits.append(f"cropped to about {self.visible_fraction * 100:.0f}% of the original")
        if self.region_fraction < 0.8:
            bits.append(f"{INSIDE_LARGER_IMAGE}, filling about "
                        f"{self.region_fraction * 100:.0f}% of it")
        return ", ".join(bits) or "matched by local features"


#: Above this many descriptors, voting uses an inverted-file index (approximate nearest
#: neighbours: a vote needs most, not all, of them) instead of an exact flat scan.
IVF_MIN_DESCRIPTORS = 20_000
#: Bumped whenever a cached faiss index changes meaning; older caches are rebuilt.
FEATURE_CACHE_FORMAT = 1


def _nlist_for(n: int) -> int:
    return int(min(8192, max(64, 4 * math.sqrt(n))))


def build_descriptor_index(data: np.ndarray, trained: Any = None) -> Any:
    """faiss binary index over ORB descriptors: exact flat scan for small archives, IVF
    (nlist ~ 4 sqrt(n), nprobe 8, trained on a fixed-seed sample) beyond.

    `trained` is an empty IVF index trained on an earlier state of the archive: when its
    number of lists still suits the data (within 2x), its centroids are reused and only the
    descriptors are assigned, instead of training again (ORB descriptors are generic, so
    centroids from last week's archive partition today's as well).
    """
    import faiss

    n = int(data.shape[0])
    if n < IVF_MIN_DESCRIPTORS:
        flat = faiss.IndexBinaryFlat(256)
        if n:
            flat.add(data)
        return flat
    nlist = _nlist_for(n)
    index: Any
    if trained is not None and nlist / 2 <= int(trained.nlist) <= nlist * 2:
        index = trained  # freshly read from its file: ours to fill
        index.reset()
    else:
        quantizer: Any = faiss.IndexBinaryFlat(256)
        index = faiss.IndexBinaryIVF(quantizer, 256, nlist)
        index.own_fields = True
        quantizer.this.disown()
        rng = np.random.default_rng(12345)
        sample = data[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
        index.train(sample)
    index.add(data)
    index.nprobe = 8
    return index


def empty_copy(index: Any) -> Any:
    """An empty copy of a trained IVF index (its centroids only), or None for a flat one."""
    import faiss

    if not hasattr(index, "nlist"):
        return None
    quantizer: Any = faiss.IndexBinaryFlat(256)
    quantizer.add(index.quantizer.reconstruct_n(0, int(index.nlist)))  # the centroids only
    copy: Any = faiss.IndexBinaryIVF(quantizer, 256, int(index.nlist))
    copy.own_fields = True
    quantizer.this.disown()
    copy.is_trained = True
    return copy


class FeatureIndex:
    """All references' descriptors in one faiss binary index, with owners and positions."""

    def __init__(self, ref_keys: list[int], features: list[LocalFeatures],
                 prebuilt: Any = None, trained: Any = None) -> None:
        self.by_key = dict(zip(ref_keys, features, strict=True))
        counts = [len(f) for f in features]
        self.owner = np.repeat(np.array(ref_keys, dtype=np.int64), counts)
        self.size = int(sum(counts))
        if prebuilt is not None and int(prebuilt.ntotal) == self.size:
            self._faiss = prebuilt
        else:
            data = (np.concatenate([f.descriptors for f in features if len(f)]) if self.size
                    else np.zeros((0, 32), np.uint8))
            self._faiss = build_descriptor_index(data, trained)

    @property
    def trained(self) -> bool:
        """True when the index needed training (IVF), i.e. is worth caching."""
        return self.size >= IVF_MIN_DESCRIPTORS

    def save_centroids(self, path: Path) -> None:
        """Write an empty copy of the trained index (centroids only: a few hundred KB), for
        the next generation of the archive to reuse."""
        import faiss

        copy = empty_copy(self._faiss)
        if copy is not None:
            faiss.write_index_binary(copy, str(path))

    def save_faiss(self, path: Path) -> None:
        """Write the faiss index (into a private folder that `cache.publish_cache` renames
        into place): training it is what makes opening a large archive slow."""
        import faiss

        faiss.write_index_binary(self._faiss, str(path))

    @staticmethod
    def load_faiss(path: Path) -> Any:
        import faiss

        return faiss.read_index_binary(str(path))

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return self.size * (32 + 8 + 4) + len(self.by_key) * 64

    def vote(self, query: LocalFeatures, top: int = 5, min_votes: int = 8
             ) -> list[tuple[int, int]]:
        """[(ref_key, votes)] of the references that get clearly more nearest-neighbour votes
        than chance would give them (so verification cost does not grow with the archive)."""
        if self.size == 0 or len(query) == 0:
            return []
        dist, idx = self._faiss.search(np.ascontiguousarray(query.descriptors), 1)
        ok = (idx[:, 0] >= 0) & (dist[:, 0] <= MAX_DESCRIPTOR_DISTANCE)
        if not ok.any():
            return []
        owners = self.owner[idx[ok, 0]]
        keys, votes = np.unique(owners, return_counts=True)
        order = np.argsort(-votes)[:top]
        out = []
        small = len(self.by_key) <= SMALL_ARCHIVE  # every reference gets many chance votes
        for i in order:
            key = int(keys[i])
            expected = owners.size * len(self.by_key[key]) / max(1, self.size)
            if votes[i] >= min_votes and (small or votes[i] >= 3.0 * expected + 4.0):
                out.append((key, int(votes[i])))
        return out

    def verify(self, query: LocalFeatures, ref_key: int, mirrored: bool = False
               ) -> GeometricMatch | None:
        """Fit a similarity transform reference -> query with RANSAC over mutual matches."""
        import cv2

        ref = self.by_key.get(ref_key)
        if ref is None or len(ref) < 4 or len(query) < 4:
            return None
        matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
        pairs = [m for m in matcher.match(ref.descriptors, query.descriptors)
                 if m.distance <= MAX_DESCRIPTOR_DISTANCE]
        if len(pairs) < 6:
            return None
        # work in pixel units of each picture so that rotation and scale are meaningful
        ref_idx = np.array([m.queryIdx for m in pairs])
        qry_idx = np.array([m.trainIdx for m in pairs])
        src = ref.points[ref_idx] * np.array([ref.width, ref.height], dtype=np.float32)
        dst = query.points[qry_idx] * np.array([query.width, query.height], dtype=np.float32)
        tol = 0.02 * max(query.width, query.height)
        model, inliers = cv2.estimateAffinePartial2D(
            src.reshape(-1, 1, 2), dst.reshape(-1, 1, 2), method=cv2.RANSAC,
            ransacReprojThreshold=max(3.0, tol), maxIters=2000, confidence=0.995)
        if model is None or inliers is None:
            return None
        n_in = int(inliers.sum())
        scale = math.hypot(model[0, 0], model[1, 0])
        if not (0.05 <= scale <= 20):
            return None
        rotation = math.degrees(math.atan2(model[1, 0], model[0, 0]))
        corners = np.array([[0, 0], [ref.width, 0], [ref.width, ref.height],
                            [0, ref.height]], dtype=np.float32).reshape(-1, 1, 2)
        mapped = cv2.transform(corners, model).reshape(-1, 2)
        qw, qh = query.width, query.height
        x0, y0 = mapped.min(axis=0)
        x1, y1 = mapped.max(axis=0)
        # crop and fill estimates: the reference's mapped frame clipped to the query
        fx0, fy0 = max(0.0, float(x0)), max(0.0, float(y0))
        fx1, fy1 = min(float(qw), float(x1)), min(float(qh), float(y1))
        visible_box = max(0.0, fx1 - fx0) * max(0.0, fy1 - fy0)
        full_box = max(1e-6, float((x1 - x0) * (y1 - y0)))
        # the outline drawn for people: the reference's frame where it falls in the query
        # (the inliers' box fell short of a photo whose keypoints bunch up in one part);
        # outline.refine_region trims it to where the query still shows the photo
        region = (fx0 / qw, fy0 / qh, fx1 / qw, fy1 / qh)
        inl = inliers.ravel().astype(bool)
        src_in, dst_in = src[inl], dst[inl]
        # reference -> query in normalised units: q_n = D_q^-1 M D_r r_n
        dr = np.diag([ref.width, ref.height, 1.0])
        dq_inv = np.diag([1.0 / qw, 1.0 / qh, 1.0])
        m3 = np.vstack([model, [0.0, 0.0, 1.0]])
        norm = (dq_inv @ m3 @ dr)[:2]
        q_pts = dst_in / np.array([qw, qh], np.float32)
        r_pts = src_in / np.array([ref.width, ref.height], np.float32)
        if mirrored:
            region = (1 - region[2], region[1], 1 - region[0], region[3])
            rotation = -rotation
            norm = np.array([[-1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]) @ np.vstack(
                [norm, [0.0, 0.0, 1.0]])
            q_pts = np.column_stack([1.0 - q_pts[:, 0], q_pts[:, 1]])
        pair_list = [((float(a), float(b)), (float(c), float(d)))
                     for (a, b), (c, d) in zip(q_pts, r_pts, strict=True)]
        return GeometricMatch(
            ref_key=ref_key, inliers=n_in, matches=len(pairs), rotation_deg=rotation,
            scale=scale, visible_fraction=float(min(1.0, visible_box / full_box)),
            region=region, region_fraction=float(visible_box / (qw * qh)), mirrored=mirrored,
            matrix=norm.tolist(), pairs=pair_list)
