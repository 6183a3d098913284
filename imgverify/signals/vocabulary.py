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
the descriptor; a query descriptor and a posting whose embedded bits differ in many places
are far apart in full too, so that chance collision casts no vote. The bits are chosen per
half-word (8 per half): the ones that split that centroid's training members most evenly.
Why not fixed positions (version 1): descriptors that share a word already agree on most
bits, so fixed bits agreed by chance too (a third of unrelated same-word descriptors came
within 3 of 16 bits, against about 5 % with per-word bits, for a small loss on true pairs;
`reference_index/train_vocabulary.py` prints both).
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
#: Identifies the shipped codebooks and embedding bits; part of every derived cache's key.
VOCABULARY_VERSION = 2
_PACKAGE_FILE = "orb_vocabulary.npz"


def _he_positions() -> np.ndarray:
    """Fixed bit positions (of 256): 8 from each half, spread (version 1's embedding, and the
    fallback for a codebook shipped without per-word bits)."""
    rng = np.random.default_rng(20261127)
    first = np.sort(rng.choice(128, HE_BITS // 2, replace=False))
    second = np.sort(rng.choice(128, HE_BITS // 2, replace=False)) + 128
    return np.concatenate([first, second])


HE_POSITIONS = _he_positions()


def fixed_he_tables(words_per_half: int = HALF_WORDS) -> tuple[np.ndarray, np.ndarray]:
    """Per-word tables that pick `HE_POSITIONS` for every word (version 1's embedding)."""
    half = HE_BITS // 2
    return (np.tile(HE_POSITIONS[:half].astype(np.uint8), (words_per_half, 1)),
            np.tile((HE_POSITIONS[half:] - 128).astype(np.uint8), (words_per_half, 1)))


def pack_he(bits: np.ndarray) -> np.ndarray:
    """(N, 16) 0/1 bits -> (N,) uint16, first bit most significant."""
    packed = np.packbits(np.asarray(bits, np.uint8), axis=1)  # (N, 2)
    return (packed[:, 0].astype(np.uint16) << 8) | packed[:, 1].astype(np.uint16)


@dataclass(frozen=True)
class Vocabulary:
    """Two binary codebooks, (HALF_WORDS, 16) uint8 each, and per centroid the 8 bit
    positions (0-127 within its half) that make the Hamming embedding."""

    first: np.ndarray
    second: np.ndarray
    version: int = VOCABULARY_VERSION
    he_first: np.ndarray | None = None  # (HALF_WORDS, 8) uint8; None: fixed positions
    he_second: np.ndarray | None = None

    @property
    def words(self) -> int:
        return int(self.first.shape[0] * self.second.shape[0])

    def _searchers(self) -> tuple[Any, Any]:
        return _flat(self.first.tobytes(), self.first.shape[0]), \
            _flat(self.second.tobytes(), self.second.shape[0])

    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        if self.he_first is None or self.he_second is None:
            return fixed_he_tables(self.first.shape[0])
        return self.he_first, self.he_second

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

    def positions(self, words: np.ndarray) -> np.ndarray:
        """(N, 16) bit positions (of 256) of the embedding of each word in `words`."""
        t1, t2 = self._tables()
        w = np.asarray(words, np.int64)
        second = self.second.shape[0]
        return np.concatenate([t1[w // second].astype(np.int64),
                               t2[w % second].astype(np.int64) + 128], axis=1)

    def embed(self, descriptors: np.ndarray, words: np.ndarray) -> np.ndarray:
        """(N,) uint16: the embedding of descriptor i under word i (bit 0 = most
        significant in numpy's unpackbits order, as everywhere in this module)."""
        if descriptors.shape[0] == 0:
            return np.zeros(0, np.uint16)
        bits = np.unpackbits(np.ascontiguousarray(descriptors, dtype=np.uint8), axis=1)
        return pack_he(np.take_along_axis(bits, self.positions(words), axis=1))

    def save(self, path: Any) -> None:
        t1, t2 = self._tables()
        np.savez_compressed(path, first=self.first, second=self.second,
                            version=np.array(self.version), he_first=t1, he_second=t2)


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
        tables = ((np.ascontiguousarray(data["he_first"], np.uint8),
                   np.ascontiguousarray(data["he_second"], np.uint8))
                  if "he_first" in data.files else (None, None))
        return Vocabulary(np.ascontiguousarray(data["first"], np.uint8),
                          np.ascontiguousarray(data["second"], np.uint8),
                          int(data["version"]), *tables)


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


def train_he_tables(descriptors: np.ndarray, vocabulary: Vocabulary, min_members: int = 20
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per centroid of each half, the 8 bit positions whose values split the centroid's
    training members most evenly (so two unrelated descriptors of one word disagree on them
    about half the time); a centroid with fewer than `min_members` members gets the bits most
    balanced over all training descriptors."""
    import faiss

    tables = []
    for half, codebook in enumerate((vocabulary.first, vocabulary.second)):
        data = np.ascontiguousarray(descriptors[:, half * HALF_BYTES:(half + 1) * HALF_BYTES])
        index = faiss.IndexBinaryFlat(HALF_BYTES * 8)
        index.add(np.ascontiguousarray(codebook))
        assign = index.search(data, 1)[1].ravel()
        k = codebook.shape[0]
        counts = np.bincount(assign, minlength=k)
        bits = np.unpackbits(data, axis=1)
        sums = np.zeros((k, HALF_BYTES * 8), np.float64)
        for start in range(0, data.shape[0], 100_000):
            np.add.at(sums, assign[start:start + 100_000], bits[start:start + 100_000])
        balance = -np.abs(sums / np.maximum(1, counts)[:, None] - 0.5)
        balance[counts < min_members] = -np.abs(bits.mean(axis=0) - 0.5)
        order = np.argsort(-balance, axis=1, kind="stable")[:, :HE_BITS // 2]
        tables.append(np.sort(order, axis=1).astype(np.uint8))
    return tables[0], tables[1]


def chance_agreement(vocab: Vocabulary, desc: np.ndarray, owner: np.ndarray) -> float:
    """Share of pairs of descriptors from different photos, filed under the same word, whose
    embeddings differ in at most 3 bits (what would cast a chance vote)."""
    words = vocab.assign(desc, 1)[0][:, 0]
    he = vocab.embed(desc, words)
    order = np.argsort(words, kind="stable")
    words, he, owner = words[order], he[order], owner[order]
    agree = total = 0
    for gap in range(1, 8):  # neighbours within a word's run, up to 7 apart
        same = (words[gap:] == words[:-gap]) & (owner[gap:] != owner[:-gap])
        d = np.bitwise_count(he[gap:][same] ^ he[:-gap][same])
        agree += int(np.count_nonzero(d <= 3))
        total += int(d.size)
    return agree / max(1, total)
