"""A fixed visual vocabulary for ORB descriptors: the words of the compact local index.

Why a vocabulary: holding every reference's descriptors in memory for nearest-neighbour
votes costs several KB per reference, which does not fit ten million references on one
machine. Quantising each descriptor to a word and keeping, per word, only which references
hold it (an inverted file, as in Video Google / bag-of-words instance retrieval) costs a few
bytes per keypoint; the exact descriptors stay in the store and are read back only for the
handful of candidates that are verified geometrically.

Why a *product* vocabulary: the 256-bit descriptor is cut into two 128-bit halves, each
quantised to one of `HALF_WORDS` binary centroids, and the word is the pair (Babenko and
Lempitsky's inverted multi-index). That gives about a million words, so posting lists stay
short at ten million references, while training and assignment only ever compare against
two small codebooks.

Why fixed and shipped (not trained per archive): ORB descriptors are generic (DBoW2 ships
one ORB vocabulary for every scene), words can then be computed when a reference is added,
and an archive's index never depends on which photos happened to be in it when it was
trained. The codebooks are trained by `reference_index/train_vocabulary.py` on photos whose
licences allow redistribution (see its docstring); no test or benchmark photo is used.

Hamming embedding (Jegou et al.): next to its word, each posting keeps `HE_BITS` raw bits of
the descriptor at fixed positions; a query descriptor and a posting whose embedded bits
differ in many places are far apart in full too, so that chance collision casts no vote.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

#: Centroids per descriptor half; words = HALF_WORDS ** 2.
HALF_WORDS = 1024
HALF_BYTES = 16
#: Raw descriptor bits kept per posting (Hamming embedding).
HE_BITS = 16
#: Identifies the shipped codebooks; part of every derived cache's key.
VOCABULARY_VERSION = 1
_PACKAGE_FILE = "orb_vocabulary.npz"


def _he_positions() -> np.ndarray:
    """Fixed bit positions (of 256) for the Hamming embedding: 8 from each half, spread."""
    rng = np.random.default_rng(20261127)
    first = np.sort(rng.choice(128, HE_BITS // 2, replace=False))
    second = np.sort(rng.choice(128, HE_BITS // 2, replace=False)) + 128
    return np.concatenate([first, second])


HE_POSITIONS = _he_positions()


def he_codes(descriptors: np.ndarray) -> np.ndarray:
    """(N,) uint16: the descriptor bits at `HE_POSITIONS` (bit 0 = most significant in
    numpy's unpackbits order, as everywhere in this module)."""
    if descriptors.shape[0] == 0:
        return np.zeros(0, np.uint16)
    bits = np.unpackbits(np.ascontiguousarray(descriptors, dtype=np.uint8), axis=1)
    picked = bits[:, HE_POSITIONS]  # (N, 16)
    packed = np.packbits(picked, axis=1)  # (N, 2)
    return (packed[:, 0].astype(np.uint16) << 8) | packed[:, 1].astype(np.uint16)


@dataclass(frozen=True)
class Vocabulary:
    """Two binary codebooks, (HALF_WORDS, 16) uint8 each."""

    first: np.ndarray
    second: np.ndarray
    version: int = VOCABULARY_VERSION

    @property
    def words(self) -> int:
        return int(self.first.shape[0] * self.second.shape[0])

    def _searchers(self) -> tuple[Any, Any]:
        return _flat(self.first.tobytes(), self.first.shape[0]), \
            _flat(self.second.tobytes(), self.second.shape[0])

    def assign(self, descriptors: np.ndarray, per_half: int = 1
               ) -> tuple[np.ndarray, np.ndarray]:
        """Words of each descriptor: (N, per_half**2) int64 words, nearest first by the
        summed half distances, with those distances (N, per_half**2) int32."""
        n = int(descriptors.shape[0])
        if n == 0:
            return np.zeros((0, per_half ** 2), np.int64), np.zeros((0, per_half ** 2), np.int32)
        desc = np.ascontiguousarray(descriptors, dtype=np.uint8)
        s1, s2 = self._searchers()
        d1, i1 = s1.search(np.ascontiguousarray(desc[:, :HALF_BYTES]), per_half)
        d2, i2 = s2.search(np.ascontiguousarray(desc[:, HALF_BYTES:]), per_half)
        words = (i1[:, :, None].astype(np.int64) * self.second.shape[0]
                 + i2[:, None, :].astype(np.int64)).reshape(n, -1)
        dist = (d1[:, :, None] + d2[:, None, :]).reshape(n, -1).astype(np.int32)
        if per_half > 1:
            order = np.argsort(dist, axis=1, kind="stable")
            words = np.take_along_axis(words, order, axis=1)
            dist = np.take_along_axis(dist, order, axis=1)
        return words, dist

    def save(self, path: Any) -> None:
        np.savez_compressed(path, first=self.first, second=self.second,
                            version=np.array(self.version))


@lru_cache(maxsize=8)
def _flat(codebook: bytes, count: int) -> Any:
    """A faiss exact binary index over one codebook (SIMD popcount), built once per process
    and shared: faiss searches on a built index are thread-safe."""
    import faiss

    index = faiss.IndexBinaryFlat(HALF_BYTES * 8)
    index.add(np.frombuffer(codebook, np.uint8).reshape(count, HALF_BYTES))
    return index


@lru_cache(maxsize=1)
def default_vocabulary() -> Vocabulary:
    """The vocabulary shipped with imgverify."""
    with resources.files("imgverify.signals").joinpath(_PACKAGE_FILE).open("rb") as fh:
        data = np.load(fh)
        return Vocabulary(np.ascontiguousarray(data["first"], np.uint8),
                          np.ascontiguousarray(data["second"], np.uint8),
                          int(data["version"]))


def train_codebook(halves: np.ndarray, k: int = HALF_WORDS, iterations: int = 12,
                   seed: int = 0) -> np.ndarray:
    """Binary k-means ("k-majority"): assign each half-descriptor to its nearest centroid by
    Hamming distance, move each centroid to the bitwise majority of its members; empty
    centroids are re-seeded from the points furthest from their centroid."""
    import faiss

    rng = np.random.default_rng(seed)
    data = np.ascontiguousarray(halves, dtype=np.uint8)
    n = data.shape[0]
    if n < k:
        raise ValueError(f"need at least {k} descriptors to train {k} centroids, got {n}")
    centroids = data[rng.choice(n, k, replace=False)].copy()
    bits = np.unpackbits(data, axis=1).astype(np.uint16)  # (n, 128)
    for _ in range(iterations):
        index = faiss.IndexBinaryFlat(HALF_BYTES * 8)
        index.add(centroids)
        dist, assign = index.search(data, 1)
        assign = assign.ravel()
        counts = np.bincount(assign, minlength=k)
        order = np.argsort(assign, kind="stable")
        present = np.flatnonzero(counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[present]
        sums = np.zeros((k, 128), np.int64)
        sums[present] = np.add.reduceat(bits[order], starts, axis=0)
        majority = (2 * sums > counts[:, None]).astype(np.uint8)
        new = np.packbits(majority, axis=1)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            far = np.argsort(-dist.ravel())[:empty.size]
            new[empty] = data[far]
        centroids = new
    return centroids
