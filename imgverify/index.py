"""In-memory Hamming index over every hash row of the archive.

Derived from the archive (never the only copy of anything). Rows are packed as uint64 words:
4 for PDQ, 1 each for pHash, dHash and wHash, i.e. 56 bytes per hash row, and scanned with
vectorised XOR + popcount (numpy's bitwise_count). The query asks for all rows whose PDQ
(over the query's 8 dihedral variants) or pHash lies within a candidate radius; the matcher
then re-scores the few candidates with every family.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hashing import HashSet

PDQ_WORDS = 4


def pdq_words(value: int) -> np.ndarray:
    return np.frombuffer(value.to_bytes(32, "big"), dtype=">u8").astype(np.uint64)


@dataclass
class Candidate:
    row: int  # position in the index
    ref_key: int  # archive primary key of the reference
    ref_part: str  # which stored hash of that reference (e.g. "full", "trimmed")
    pdq_distance: int  # best over the query's dihedral variants
    dihedral: int  # which query variant gave it


class HashIndex:
    """Immutable snapshot of the archive's hashes; safe to share between threads."""

    def __init__(self, ref_keys: np.ndarray, variants: list[str], pdq: np.ndarray,
                 phash: np.ndarray, dhash: np.ndarray, whash: np.ndarray,
                 quality: np.ndarray) -> None:
        self.ref_keys = ref_keys.astype(np.int64)
        self.variants = variants
        self.pdq = np.ascontiguousarray(pdq, dtype=np.uint64).reshape(-1, PDQ_WORDS)
        self.phash = np.ascontiguousarray(phash, dtype=np.uint64)
        self.dhash = np.ascontiguousarray(dhash, dtype=np.uint64)
        self.whash = np.ascontiguousarray(whash, dtype=np.uint64)
        self.quality = quality.astype(np.int16)

    @classmethod
    def empty(cls) -> HashIndex:
        z = np.zeros(0, dtype=np.uint64)
        return cls(np.zeros(0, np.int64), [], np.zeros((0, PDQ_WORDS), np.uint64), z, z, z,
                   np.zeros(0, np.int16))

    @classmethod
    def from_rows(cls, rows: list[tuple[int, str, HashSet]]) -> HashIndex:
        if not rows:
            return cls.empty()
        n = len(rows)
        pdq = np.zeros((n, PDQ_WORDS), np.uint64)
        ph = np.zeros(n, np.uint64)
        dh = np.zeros(n, np.uint64)
        wh = np.zeros(n, np.uint64)
        q = np.zeros(n, np.int16)
        for i, (_key, _var, hs) in enumerate(rows):
            pdq[i] = pdq_words(hs.pdq)
            ph[i], dh[i], wh[i], q[i] = hs.phash, hs.dhash, hs.whash, hs.pdq_quality
        keys = np.array([r[0] for r in rows], np.int64)
        return cls(keys, [r[1] for r in rows], pdq, ph, dh, wh, q)

    def __len__(self) -> int:
        return int(self.ref_keys.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.pdq.nbytes + self.phash.nbytes * 3 + self.ref_keys.nbytes
                   + self.quality.nbytes)

    def pdq_distances(self, query_variants: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(best distance per row, which query variant gave it) over the dihedral variants."""
        q = np.stack([pdq_words(v) for v in query_variants])  # (V, 4)
        dist = np.bitwise_count(self.pdq[None, :, :] ^ q[:, None, :]).sum(axis=2, dtype=np.int32)
        best = dist.argmin(axis=0)
        return dist[best, np.arange(dist.shape[1])], best

    def small_distances(self, family: str, value: int) -> np.ndarray:
        col = getattr(self, family)
        return np.bitwise_count(col ^ np.uint64(value)).astype(np.int32)

    def search(self, query_variants: list[int], query_phash_variants: list[int],
               pdq_radius: int, phash_radius: int, limit: int = 50) -> list[Candidate]:
        """Rows near the query by PDQ (any dihedral variant) or by pHash (given variants)."""
        if len(self) == 0:
            return []
        pdq_best, pdq_var = self.pdq_distances(query_variants)
        mask = pdq_best <= pdq_radius
        ph_best = np.full(len(self), 64, np.int32)
        ph_var = np.zeros(len(self), np.int64)
        for k, value in enumerate(query_phash_variants):
            d = self.small_distances("phash", value)
            better = d < ph_best
            ph_best[better] = d[better]
            ph_var[better] = k
        mask |= ph_best <= phash_radius
        rows = np.nonzero(mask)[0]
        if rows.size > limit:
            order = np.argsort(pdq_best[rows] / 256.0 + ph_best[rows] / 64.0, kind="stable")
            rows = rows[order[:limit]]
        out = []
        for r in rows.tolist():
            use_pdq = pdq_best[r] / 256.0 <= ph_best[r] / 64.0
            variant = int(pdq_var[r]) if use_pdq else int(ph_var[r])
            out.append(Candidate(r, int(self.ref_keys[r]), self.variants[r], int(pdq_best[r]),
                                 variant))
        return out
