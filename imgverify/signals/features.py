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
from typing import Any, Protocol

import numpy as np
from PIL import Image

from imgverify.signals.hashing import trim_uniform_borders

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


#: Burstiness: neighbours looked at per query descriptor, and how close (bits) a neighbour
#: must be to count its reference as sharing the descriptor.
BURST_NEIGHBOURS = 8
BURST_DISTANCE = 32


def burst_weights(dist: np.ndarray, idx: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """1/sqrt(distinct references holding a near-identical descriptor) per query descriptor
    (rows of a k-nearest-neighbour answer); 1 for a descriptor only one reference shares."""
    close = (idx >= 0) & (dist <= BURST_DISTANCE)
    own = np.where(close, owner[np.maximum(idx, 0)], -1)
    own.sort(axis=1)
    distinct = ((own[:, 1:] != own[:, :-1]) & (own[:, 1:] >= 0)).sum(axis=1) + (own[:, 0] >= 0)
    return 1.0 / np.sqrt(np.maximum(1, distinct))


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
    return QueryExtraction(picture, max_features, side).features


class QueryExtraction:
    """ORB keypoints of a query picture, with the mirror image's descriptors on demand.

    Keypoints are detected first and descriptors computed only for the `max_features` kept
    (the same descriptors detectAndCompute gives them). The mirror image has the mirrored
    keypoints (FAST corners and their Harris scores are symmetric): its descriptors are
    computed at those positions with the mirrored orientation, so a mirrored copy is looked
    up without detecting keypoints a second time.
    """

    def __init__(self, picture: Image.Image, max_features: int, side: int = FEATURE_SIDE
                 ) -> None:
        import cv2

        self._array = _gray_array(picture, side)
        h, w = self._array.shape
        self._chosen: list[Any] = []  # detected, strongest spread first, not yet described
        self._keypoints: list[Any] = []
        self._orb: Any = None
        self._features: LocalFeatures | None = None
        self._heads: dict[int, tuple[list[Any], LocalFeatures]] = {}  # described first n
        self._mirrored: LocalFeatures | None = None
        if min(h, w) < 32:
            return
        self._orb = cv2.ORB_create(  # type: ignore[attr-defined]
            nfeatures=max_features * 3, fastThreshold=12, edgeThreshold=15, patchSize=31)
        keypoints = self._orb.detect(self._array, None)
        if keypoints:
            self._chosen = [keypoints[i] for i in _spread(keypoints, w, h, max_features)]

    def __len__(self) -> int:
        """Keypoints kept (described or not)."""
        return len(self._chosen)

    @property
    def features(self) -> LocalFeatures:
        """All kept keypoints, described on first use."""
        if self._features is None:
            h, w = self._array.shape
            done = max(self._heads, default=0)  # a probe's head is not described again
            kept, rest = self._describe(self._array, self._chosen[done:]) \
                if len(self._chosen) > done else ([], _empty(w, h))
            if done:
                head_kept, head = self._heads[done]
                kept = head_kept + kept
                rest = LocalFeatures(np.concatenate([head.points, rest.points]),
                                     np.concatenate([head.descriptors, rest.descriptors]),
                                     w, h)
            self._keypoints, self._features = kept, rest
        return self._features

    def head(self, n: int) -> LocalFeatures:
        """The `n` strongest spread keypoints' features. Only these are described when a
        probe of them is all a picture gets (most regions of a picture not archived)."""
        if self._features is not None or len(self._chosen) <= n:
            full = self.features
            return LocalFeatures(full.points[:n], full.descriptors[:n], full.width,
                                 full.height)
        if n not in self._heads:
            self._heads[n] = self._describe(self._array, self._chosen[:n])
        return self._heads[n][1]

    def _describe(self, arr: np.ndarray, keypoints: list[Any]
                  ) -> tuple[list[Any], LocalFeatures]:
        h, w = arr.shape
        for i, k in enumerate(keypoints):
            k.class_id = i  # compute() returns them grouped by pyramid level
        kept, desc = self._orb.compute(arr, keypoints)
        if desc is None or not kept:
            return [], _empty(w, h)
        order = np.argsort([k.class_id for k in kept], kind="stable")
        kept, desc = [kept[i] for i in order], desc[order]
        pts = np.array([k.pt for k in kept], dtype=np.float32)
        pts[:, 0] /= w
        pts[:, 1] /= h
        return list(kept), LocalFeatures(pts, desc, w, h)

    def mirrored(self) -> LocalFeatures:
        """Descriptors of the picture mirrored left to right (points in its coordinates)."""
        if self._mirrored is None:
            import cv2

            self.features  # noqa: B018 - the kept keypoints, which are mirrored
            h, w = self._array.shape
            flipped = np.ascontiguousarray(self._array[:, ::-1])
            scale_factor = float(self._orb.getScaleFactor()) if self._orb is not None else 1.2
            mirrored = []
            for k in self._keypoints:
                # mirror within the pyramid level the keypoint was found on
                s = scale_factor ** k.octave
                wl = round(w / s)
                x = ((wl - 1) - k.pt[0] / s) * s
                mirrored.append(cv2.KeyPoint(x, k.pt[1], k.size, (180.0 - k.angle) % 360.0,
                                             k.response, k.octave))
            self._mirrored = (self._describe(flipped, mirrored)[1] if mirrored
                              else _empty(w, h))
        return self._mirrored


def _empty(w: int, h: int) -> LocalFeatures:
    return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), w, h)


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
    #: share of a 4x4 grid over the matched region holding inliers, the smaller of the two
    #: images: a logo, badge or ticker shared by two photos fills one or two cells
    coverage: float = 0.0
    #: convex hull of the inliers over the matched region's area (smaller of the two images)
    spread: float = 0.0
    #: reference -> query in normalised coordinates (x/width, y/height of each picture):
    #: [[a, b, tx], [c, d, ty]]; mirroring and inner regions already folded in
    matrix: list[list[float]] | None = None
    #: inlier pairs, normalised: ((query x, query y), (reference x, reference y))
    pairs: list[tuple[tuple[float, float], tuple[float, float]]] | None = None
    #: photometric agreement of the aligned overlap (see `aligned_agreement`), or None when
    #: the reference's pixels were not available
    agreement: float | None = None
    #: homography refined on the inliers (normalised, 3x3), for aligning pixels: a photo of
    #: a screen is a perspective view that a similarity only approximates
    homography: list[list[float]] | None = None
    #: agreement under the similarity alone: "same place" is judged on it, since a
    #: homography fitted to a strip of inliers can stretch anything over anything
    similarity_agreement: float | None = None

    def to_evidence(self) -> dict[str, Any]:
        """What other tools need to redraw the match: transform and inlier coordinates."""
        return {
            "reference_to_query": [[round(v, 6) for v in row] for row in self.matrix or []],
            "coordinates": "normalised: x / width and y / height of each image",
            "inliers": [[[round(q[0], 4), round(q[1], 4)], [round(r[0], 4), round(r[1], 4)]]
                        for q, r in self.pairs or []],
            "coverage": round(self.coverage, 3), "spread": round(self.spread, 3),
            "agreement": None if self.agreement is None else round(self.agreement, 3),
        }

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


class LocalIndex(Protocol):
    """A local-feature index as the matcher uses it: `FeatureIndex` (every descriptor in
    memory), `compact.CompactFeatureIndex` or `compact.LayeredLocalIndex` (inverted file,
    descriptors read back from the store)."""

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    def vote(self, query: LocalFeatures, top: int = 5, min_votes: int = 8
             ) -> list[tuple[int, int]]: ...

    def probe(self, query: LocalFeatures) -> bool: ...

    def verify(self, query: LocalFeatures, ref_key: int, mirrored: bool = False
               ) -> GeometricMatch | None: ...


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

    #: nearest-neighbour votes a region's strongest descriptors must give some reference
    #: before the region is searched in full (`probe`)
    probe_votes = 4

    def probe(self, query: LocalFeatures) -> bool:
        """Whether a region's strongest descriptors (`query`) point at some reference
        clearly enough to search the region in full (`match.search.find_local`)."""
        return bool(self.vote(query, min_votes=self.probe_votes))

    def vote(self, query: LocalFeatures, top: int = 5, min_votes: int = 8
             ) -> list[tuple[int, int]]:
        """[(ref_key, votes)] of the references that get clearly more nearest-neighbour votes
        than chance would give them (so verification cost does not grow with the archive).

        Burstiness control, as in instance retrieval: a query descriptor that lies close to
        descriptors of several different references (a channel bug, a ticker, a badge or a
        UI glyph the archive carries on many photos) votes with weight 1/sqrt(references),
        so marks shared across the archive cannot lift a reference on their own.
        """
        if self.size == 0 or len(query) == 0:
            return []
        k = min(BURST_NEIGHBOURS, self.size)
        dist, idx = self._faiss.search(np.ascontiguousarray(query.descriptors), k)
        ok = (idx[:, 0] >= 0) & (dist[:, 0] <= MAX_DESCRIPTOR_DISTANCE)
        if not ok.any():
            return []
        weight = burst_weights(dist[ok], idx[ok], self.owner)
        owners = self.owner[idx[ok, 0]]
        keys, inverse = np.unique(owners, return_inverse=True)
        votes = np.bincount(inverse, weights=weight)
        total = float(weight.sum())
        order = np.argsort(-votes)[:top]
        out = []
        small = len(self.by_key) <= SMALL_ARCHIVE  # every reference gets many chance votes
        for i in order:
            key = int(keys[i])
            expected = total * len(self.by_key[key]) / max(1, self.size)
            if votes[i] >= min_votes and (small or votes[i] >= 3.0 * expected + 4.0):
                out.append((key, int(round(votes[i]))))
        return out

    def verify(self, query: LocalFeatures, ref_key: int, mirrored: bool = False
               ) -> GeometricMatch | None:
        """Fit a similarity transform reference -> query with RANSAC over mutual matches."""
        ref = self.by_key.get(ref_key)
        if ref is None:
            return None
        return verify_pair(query, ref, ref_key, mirrored)


def verify_pair(query: LocalFeatures, ref: LocalFeatures, ref_key: int,
                mirrored: bool = False) -> GeometricMatch | None:
    """Fit a similarity transform reference -> query with RANSAC over mutual matches (the
    reference's features read from wherever its index keeps them)."""
    import cv2

    if len(ref) < 4 or len(query) < 4:
        return None
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    pairs_all = [m for m in matcher.match(ref.descriptors, query.descriptors)
                 if m.distance <= MAX_DESCRIPTOR_DISTANCE]
    if len(pairs_all) < 6:
        return None
    # work in pixel units of each picture so that rotation and scale are meaningful
    ref_idx = np.array([m.queryIdx for m in pairs_all])
    qry_idx = np.array([m.trainIdx for m in pairs_all])
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
    # the matched region in the reference: its part the query's frame covers
    back = cv2.transform(np.array([[0, 0], [qw, 0], [qw, qh], [0, qh]], np.float32)
                         .reshape(-1, 1, 2), cv2.invertAffineTransform(model)).reshape(-1, 2)
    rbox = (max(0.0, float(back[:, 0].min())), max(0.0, float(back[:, 1].min())),
            min(float(ref.width), float(back[:, 0].max())),
            min(float(ref.height), float(back[:, 1].max())))
    qbox = (fx0, fy0, fx1, fy1)
    coverage = min(grid_coverage(src_in, rbox), grid_coverage(dst_in, qbox))
    spread = min(hull_fraction(src_in, rbox), hull_fraction(dst_in, qbox))
    # reference -> query in normalised units: q_n = D_q^-1 M D_r r_n
    dr = np.diag([ref.width, ref.height, 1.0])
    dq_inv = np.diag([1.0 / qw, 1.0 / qh, 1.0])
    m3 = np.vstack([model, [0.0, 0.0, 1.0]])
    norm = (dq_inv @ m3 @ dr)[:2]
    q_pts = dst_in / np.array([qw, qh], np.float32)
    r_pts = src_in / np.array([ref.width, ref.height], np.float32)
    hom = None
    if n_in >= 8:
        h_pix, _mask = cv2.findHomography(src_in, dst_in, cv2.RANSAC, max(3.0, tol))
        if h_pix is not None and abs(float(h_pix[2, 2])) > 1e-9:
            hom = dq_inv @ h_pix @ dr
    if mirrored:
        region = (1 - region[2], region[1], 1 - region[0], region[3])
        rotation = -rotation
        norm = np.array([[-1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]) @ np.vstack(
            [norm, [0.0, 0.0, 1.0]])
        q_pts = np.column_stack([1.0 - q_pts[:, 0], q_pts[:, 1]])
        if hom is not None:
            hom = np.array([[-1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ hom
    pairs = [((float(a), float(b)), (float(c), float(d)))
             for (a, b), (c, d) in zip(q_pts, r_pts, strict=True)]
    return GeometricMatch(
        ref_key=ref_key, inliers=n_in, matches=len(pairs_all), rotation_deg=rotation,
        scale=scale, visible_fraction=float(min(1.0, visible_box / full_box)),
        region=region, region_fraction=float(visible_box / (qw * qh)), mirrored=mirrored,
        coverage=coverage, spread=spread, matrix=norm.tolist(), pairs=pairs,
        homography=None if hom is None else hom.tolist())


#: Grid laid over the matched region to tell spread-out inliers from one small patch.
COVERAGE_GRID = 4


def grid_coverage(points: np.ndarray, box: tuple[float, float, float, float],
                  grid: int = COVERAGE_GRID) -> float:
    """Share of a grid x grid partition of `box` that holds at least one of `points`: a shared
    logo or ticker puts every inlier into one or two cells, a copied photo into most."""
    x0, y0, x1, y1 = box
    if x1 - x0 <= 1 or y1 - y0 <= 1 or len(points) == 0:
        return 0.0
    gx = np.clip(((points[:, 0] - x0) * grid / (x1 - x0)).astype(int), 0, grid - 1)
    gy = np.clip(((points[:, 1] - y0) * grid / (y1 - y0)).astype(int), 0, grid - 1)
    return float(np.unique(gy * grid + gx).size / (grid * grid))


def hull_fraction(points: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Area of the inliers' convex hull over the box's area (0 for fewer than 3 points)."""
    import cv2

    x0, y0, x1, y1 = box
    area = (x1 - x0) * (y1 - y0)
    if area <= 1 or len(points) < 3:
        return 0.0
    hull = cv2.convexHull(np.ascontiguousarray(points, dtype=np.float32))
    return float(min(1.0, cv2.contourArea(hull) / area))


#: Blocks per side of the aligned overlap compared by `aligned_agreement`.
AGREEMENT_GRID = 8
#: Share of the archived photo the aligned overlap must cover for its pixels to confirm a
#: copy (a crop keeping 40 % does; a ticker strip or a corner logo does not).
MIN_AGREEMENT_OVERLAP = 0.25
#: Gaussian blur (thumbnail pixels) before comparing: JPEG blocks and resampling cost little.
AGREEMENT_BLUR = 1.0


def photo_box(reference_picture: Image.Image) -> tuple[int, int, int, int]:
    """The archived photo inside its flat borders (the whole frame when it has none), in
    the picture's pixels: what `aligned_agreement` compares. Computed once per reference
    by callers that check several fits against it."""
    box = trim_uniform_borders(reference_picture)
    return box if box is not None else (0, 0, reference_picture.width,
                                        reference_picture.height)


def aligned_agreement(query_picture: Image.Image, reference_picture: Image.Image,
                      matrix: list[list[float]],
                      query_box: tuple[float, float, float, float] | None = None,
                      outside: bool = False,
                      reference_box: tuple[int, int, int, int] | None = None
                      ) -> float | None:
    """How well the query, warped onto the reference by the fitted transform, reproduces the
    reference's pixels: the median normalised cross-correlation of textured blocks of the
    aligned overlap (grey levels, each block normalised on its own, so colour grades, gamma
    and JPEG loss cost little).

    A copy of the photo agrees almost everywhere. Another photograph of the same place
    does not: parallax moves every block that is not on the fitted plane, and light, people
    and weather change the rest. None when the overlap is too small to say.

    `matrix` maps normalised reference coordinates to normalised query coordinates (2x3
    affine or 3x3 homography: a photo of a screen is a perspective view); `query_box`
    (normalised) limits the comparison to where the photo sits in the query, so the other
    tiles of a collage or the layout of a screenshot are not compared with the photo;
    with `outside`, the comparison is limited to the rest of the query instead.
    `reference_box`: `photo_box(reference_picture)`, when the caller has it.
    """
    import cv2

    ref = np.asarray(reference_picture.convert("L"), dtype=np.float32)
    th, tw = ref.shape
    qry_im = query_picture.convert("L")
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape == (2, 3):
        m = np.vstack([m, [0.0, 0.0, 1.0]])
    # reference thumbnail pixels -> query pixels
    a = (np.diag([qry_im.width, qry_im.height, 1.0]) @ m
         @ np.diag([1.0 / tw, 1.0 / th, 1.0]))
    lin = math.sqrt(abs(np.linalg.det(a[:2, :2] / a[2, 2])))
    if lin > 1.05:  # resample the query to the thumbnail's scale first, filtered as the
        # thumbnail was (an unfiltered warp aliases fine texture: a copy would disagree)
        f = 1.0 / lin
        qry_im = qry_im.resize((max(1, round(qry_im.width * f)), max(1, round(qry_im.height * f))),
                               Image.Resampling.BICUBIC)
        a = np.diag([f, f, 1.0]) @ a
    qry = np.asarray(qry_im, dtype=np.float32)
    inside = np.ones_like(qry)
    if query_box is not None:  # only where the photo is: not the tiles or layout around it
        qh_, qw_ = qry.shape
        inside[:] = 1 if outside else 0
        inside[max(0, int(query_box[1] * qh_)):int(math.ceil(query_box[3] * qh_)),
               max(0, int(query_box[0] * qw_)):int(math.ceil(query_box[2] * qw_))] = \
            0 if outside else 1
    flags = cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(qry, a, (tw, th), flags=cv2.INTER_LINEAR | flags,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    valid = cv2.warpPerspective(inside, a, (tw, th), flags=cv2.INTER_NEAREST | flags,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0.5
    # Only the archived photo's own pixels count, not the flat borders around it (a
    # letterboxed broadcast still, a padded repost): bars agree with the query's bars, or
    # with any dark or flat area, whatever the photos show, and a block across a bar's edge
    # correlates on that edge alone. Counted, they lifted another frame of a fixed webcam
    # over the copy bar when the archived frame was letterboxed.
    px0, py0, px1, py1 = reference_box if reference_box is not None \
        else photo_box(reference_picture)
    valid[:py0] = False
    valid[py1:] = False
    valid[:, :px0] = False
    valid[:, px1:] = False
    ys, xs = np.nonzero(valid)
    if ys.size < MIN_AGREEMENT_OVERLAP * (px1 - px0) * (py1 - py0) or ys.size < 1024:
        return 0.0  # a strip or a corner (a ticker, a logo) cannot confirm a copy
    # Only the query's own pixels may be compared. Beyond the overlap the warp fills in black:
    # a blur (or the bilinear warp) that mixes it in draws a dark edge along every block at
    # the border of a crop or a collage tile, and on a mostly-flat photo (sky, snow, water)
    # those border blocks are a large share of the textured ones, so a copy's median fell
    # to "same place". Hence: the overlap loses its outermost pixel (bilinear mixes), the
    # query is blurred as a masked (normalised) convolution, and blocks use inside pixels.
    valid = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    weight = valid.astype(np.float32)
    ref = np.asarray(cv2.GaussianBlur(ref, (0, 0), AGREEMENT_BLUR), dtype=np.float32)
    spread = cv2.GaussianBlur(weight, (0, 0), AGREEMENT_BLUR)
    warped = cv2.GaussianBlur(warped * weight, (0, 0), AGREEMENT_BLUR)
    warped = np.where(valid, warped / np.maximum(spread, 1e-3), 0.0).astype(np.float32)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    scores = []
    for by in range(AGREEMENT_GRID):
        for bx in range(AGREEMENT_GRID):
            ya = y0 + (y1 - y0) * by // AGREEMENT_GRID
            yb = y0 + (y1 - y0) * (by + 1) // AGREEMENT_GRID
            xa = x0 + (x1 - x0) * bx // AGREEMENT_GRID
            xb = x0 + (x1 - x0) * (bx + 1) // AGREEMENT_GRID
            if yb - ya < 6 or xb - xa < 6 or valid[ya:yb, xa:xb].mean() < 0.9:
                continue
            mine = valid[ya:yb, xa:xb]
            r = ref[ya:yb, xa:xb][mine]
            q = warped[ya:yb, xa:xb][mine]
            rs, qs = float(r.std()), float(q.std())
            if rs < 4.0 and qs < 4.0:
                continue  # flat in both (sky, wall): says nothing
            if rs < 1e-3 or qs < 1e-3:
                scores.append(0.0)
                continue
            scores.append(float(((r - r.mean()) * (q - q.mean())).mean() / (rs * qs)))
    if len(scores) < 6:
        return None  # flat almost everywhere: the pixels cannot tell
    return float(np.median(scores))
