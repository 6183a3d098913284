"""In-memory Hamming index over every hash row of the archive.

Derived from the archive (never the only copy of anything) and cached beside it as plain
.npy files that are memory-mapped on open. Per hash row it keeps 56 bytes of hashes (4 uint64
words of PDQ, 1 each of pHash, dHash, wHash), a 4-byte reference key, a 1-byte part code and
a 1-byte PDQ quality.

Two search paths, both exact for what they promise:

* **Linear** (small archives, <= `LINEAR_MAX` rows): one vectorised XOR + popcount pass over
  all rows for the query's 8 PDQ variants and pHash variants, with wide radii (a wide net
  helps edited copies; it is cheap at this size).
* **Multi-index hashing** on PDQ (Norouzi et al.): the 256 bits are cut into 16 chunks of 16
  bits; for radius r <= 31 at least one chunk of a true neighbour differs in <= 1 bit, so
  probing each chunk's bucket and its 16 one-bit neighbours finds every row within r.
  Tables: per chunk a permutation of row numbers sorted by chunk value (uint32, 4 bytes per
  row per chunk = 64 bytes per row) and bucket offsets (65,537 per chunk, fixed 8 MB).
  Candidates are verified with the exact distance, so the result equals brute force.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .hashing import HashSet

PDQ_WORDS = 4
CHUNKS = 16
CHUNK_BITS = 16
MIH_MAX_RADIUS = 31  # exact with one-bit probes over 16 chunks
#: Below this many rows a linear scan is fast enough (about a millisecond) and keeps the
#: wide candidate net that edited copies need.
LINEAR_MAX = 20_000
_PROBE_MASKS = np.array([0] + [1 << b for b in range(CHUNK_BITS)], dtype=np.int64)


def pdq_words(value: int) -> np.ndarray:
    return np.frombuffer(value.to_bytes(32, "big"), dtype=">u8").astype(np.uint64)


@dataclass
class Candidate:
    row: int  # position in the index
    ref_key: int  # archive primary key of the reference
    ref_part: str  # which stored hash of that reference (e.g. "full", "trimmed")
    pdq_distance: int  # best over the query's dihedral variants
    dihedral: int  # which query variant gave it


def _word_distances(xored: np.ndarray) -> np.ndarray:
    """Row popcounts of (C, 4) uint64 XOR words, as uint16."""
    per_word = np.bitwise_count(xored)  # (C, 4) uint8, contiguous
    pairs = per_word.view(np.uint16)  # (C, 2): two byte counts each (<= 128 per pair)
    sums = (pairs & np.uint16(0xFF)) + (pairs >> np.uint16(8))
    return sums[:, 0] + sums[:, 1]


def _chunks(pdq: np.ndarray) -> np.ndarray:
    """(N, 16) uint16 chunk values of (N, 4) uint64 PDQ words, most significant first."""
    shifts = np.array([48, 32, 16, 0], dtype=np.uint64)
    parts = (pdq[:, :, None] >> shifts[None, None, :]) & np.uint64(0xFFFF)
    return parts.reshape(pdq.shape[0], CHUNKS).astype(np.uint16)


class PdqMultiIndex:
    """Multi-index hashing tables over PDQ (see module docstring)."""

    def __init__(self, order: np.ndarray, starts: np.ndarray, n: int) -> None:
        self.order = order  # (16 * N,) uint32: rows sorted by chunk value, chunk after chunk
        self.starts = starts  # (16, 65537) offsets into `order` (int32 while they fit)
        self.n = n

    @classmethod
    def build(cls, pdq: np.ndarray) -> PdqMultiIndex:
        n = pdq.shape[0]
        chunks = _chunks(pdq)
        order = np.empty(CHUNKS * n, dtype=np.uint32)
        starts = np.empty((CHUNKS, (1 << CHUNK_BITS) + 1),
                          dtype=np.int32 if CHUNKS * n < 2**31 else np.int64)
        for c in range(CHUNKS):
            col = chunks[:, c]
            order[c * n:(c + 1) * n] = np.argsort(col, kind="stable").astype(np.uint32)
            counts = np.bincount(col, minlength=1 << CHUNK_BITS)
            starts[c, 0] = c * n
            np.cumsum(counts, out=starts[c, 1:])
            starts[c, 1:] += c * n
        return cls(order, starts, n)

    @property
    def nbytes(self) -> int:
        return int(self.order.nbytes + self.starts.nbytes)

    def candidates(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose PDQ shares a chunk within one bit with a query variant, grouped by
        variant: (rows, bounds) where rows[bounds[v]:bounds[v + 1]] came from variant v.

        `query` is (V, 4) uint64. Rows may repeat; the caller verifies exact distances.
        """
        qc = _chunks(query).astype(np.int64)  # (V, 16)
        probes = qc[:, :, None] ^ _PROBE_MASKS[None, None, :]  # (V, 16, 17)
        chunk_ids = np.arange(CHUNKS)[None, :, None]
        lo = self.starts[chunk_ids, probes].ravel().astype(np.int64)
        hi = self.starts[chunk_ids, probes + 1].ravel().astype(np.int64)
        lengths = hi - lo
        bounds = np.zeros(query.shape[0] + 1, np.int64)
        np.cumsum(lengths.reshape(query.shape[0], -1).sum(axis=1), out=bounds[1:])
        total = int(bounds[-1])
        if total == 0:
            return np.zeros(0, np.int64), bounds
        ends = np.cumsum(lengths)
        offsets = np.repeat(lo - (ends - lengths), lengths) + np.arange(total)
        return np.take(self.order, offsets), bounds


class HashIndex:
    """Immutable snapshot of the archive's hashes; safe to share between threads."""

    def __init__(self, ref_keys: np.ndarray, part_codes: np.ndarray, part_names: list[str],
                 pdq: np.ndarray, phash: np.ndarray, dhash: np.ndarray, whash: np.ndarray,
                 quality: np.ndarray, mih: PdqMultiIndex | None = None) -> None:
        self.ref_keys = ref_keys
        self.part_codes = part_codes
        self.part_names = part_names
        self.pdq = pdq.reshape(-1, PDQ_WORDS)
        self.phash = phash
        self.dhash = dhash
        self.whash = whash
        self.quality = quality
        self._mih = mih
        self._columns: np.ndarray | None = None  # (4, N) copy for fast linear scans

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def empty(cls) -> HashIndex:
        z = np.zeros(0, dtype=np.uint64)
        return cls(np.zeros(0, np.uint32), np.zeros(0, np.uint8), [],
                   np.zeros((0, PDQ_WORDS), np.uint64), z, z, z, np.zeros(0, np.uint8))

    @classmethod
    def from_arrays(cls, ref_keys: np.ndarray, parts: list[str], pdq: np.ndarray,
                    phash: np.ndarray, dhash: np.ndarray, whash: np.ndarray,
                    quality: np.ndarray) -> HashIndex:
        names = sorted(set(parts)) or ["full"]
        code = {n: i for i, n in enumerate(names)}
        codes = np.array([code[p] for p in parts], dtype=np.uint8)
        return cls(ref_keys.astype(np.uint32), codes, names,
                   np.ascontiguousarray(pdq, dtype=np.uint64),
                   np.ascontiguousarray(phash, dtype=np.uint64),
                   np.ascontiguousarray(dhash, dtype=np.uint64),
                   np.ascontiguousarray(whash, dtype=np.uint64),
                   np.clip(quality, 0, 255).astype(np.uint8))

    @classmethod
    def from_rows(cls, rows: list[tuple[int, str, HashSet]]) -> HashIndex:
        if not rows:
            return cls.empty()
        n = len(rows)
        pdq = np.frombuffer(b"".join(hs.pdq.to_bytes(32, "big") for _k, _p, hs in rows),
                            dtype=">u8").reshape(n, PDQ_WORDS).astype(np.uint64)
        ph = np.array([hs.phash for _k, _p, hs in rows], dtype=np.uint64)
        dh = np.array([hs.dhash for _k, _p, hs in rows], dtype=np.uint64)
        wh = np.array([hs.whash for _k, _p, hs in rows], dtype=np.uint64)
        q = np.array([hs.pdq_quality for _k, _p, hs in rows], dtype=np.int64)
        keys = np.array([r[0] for r in rows], np.int64)
        return cls.from_arrays(keys, [r[1] for r in rows], pdq, ph, dh, wh, q)

    def __len__(self) -> int:
        return int(self.ref_keys.shape[0])

    @property
    def mih(self) -> PdqMultiIndex:
        if self._mih is None:
            self._mih = PdqMultiIndex.build(np.asarray(self.pdq))
        return self._mih

    @property
    def nbytes(self) -> int:
        base = sum(int(a.nbytes) for a in (self.ref_keys, self.part_codes, self.pdq, self.phash,
                                           self.dhash, self.whash, self.quality))
        return base + (self._mih.nbytes if self._mih is not None else 0)

    def hashset(self, row: int) -> HashSet:
        pdq = int.from_bytes(np.asarray(self.pdq[row]).astype(">u8").tobytes(), "big")
        return HashSet(pdq, int(self.quality[row]), int(self.phash[row]),
                       int(self.dhash[row]), int(self.whash[row]))

    # -- persistence ------------------------------------------------------------------------
    _ARRAYS = ("ref_keys", "part_codes", "pdq", "phash", "dhash", "whash", "quality")

    def save(self, folder: Path, generation: str, with_mih: bool) -> None:
        """Write the cache atomically: arrays first, the manifest (meta.json) last."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").unlink(missing_ok=True)
        arrays = {name: np.asarray(getattr(self, name)) for name in self._ARRAYS}
        if with_mih:
            arrays["mih_order"] = self.mih.order
            arrays["mih_starts"] = self.mih.starts
        for name, arr in arrays.items():
            tmp = folder / f"{name}.{os.getpid()}.tmp.npy"  # concurrent writers never share it
            np.save(tmp, arr)
            os.replace(tmp, folder / f"{name}.npy")
        meta = {"generation": generation, "rows": len(self), "parts": self.part_names,
                "mih": with_mih}
        tmp_meta = folder / f"meta.{os.getpid()}.tmp.json"
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, folder / "meta.json")

    @classmethod
    def load(cls, folder: Path, generation: str) -> HashIndex | None:
        """The cached index if it matches `generation`, memory-mapped; else None."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("generation") != generation:
                return None
            arrs = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in cls._ARRAYS}
            mih = None
            if meta.get("mih"):
                mih = PdqMultiIndex(np.load(folder / "mih_order.npy", mmap_mode="r"),
                                    np.load(folder / "mih_starts.npy"), int(meta["rows"]))
        except (OSError, ValueError, KeyError):
            return None
        return cls(arrs["ref_keys"], arrs["part_codes"], list(meta["parts"]), arrs["pdq"],
                   arrs["phash"], arrs["dhash"], arrs["whash"], arrs["quality"], mih)

    # -- search -----------------------------------------------------------------------------
    def pdq_distances(self, query_variants: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(best distance per row, which query variant gave it), by linear scan."""
        q = np.stack([pdq_words(v) for v in query_variants])  # (V, 4)
        if self._columns is None:
            self._columns = np.ascontiguousarray(np.asarray(self.pdq).T)
        cols = self._columns
        best = np.full(len(self), 257, np.int32)
        which = np.zeros(len(self), np.int64)
        for v in range(q.shape[0]):
            d = np.bitwise_count(cols[0] ^ q[v, 0]).astype(np.int32)
            for w in range(1, PDQ_WORDS):
                d += np.bitwise_count(cols[w] ^ q[v, w])
            better = d < best
            best[better] = d[better]
            which[better] = v
        return best, which

    def pdq_within(self, query_variants: list[int], radius: int) -> dict[int, tuple[int, int]]:
        """{row: (distance, variant)} for rows within `radius` (<= 31) of any variant (MIH)."""
        if radius > MIH_MAX_RADIUS:
            raise ValueError(f"multi-index search is exact up to radius {MIH_MAX_RADIUS}")
        q = np.stack([pdq_words(v) for v in query_variants])
        rows, bounds = self.mih.candidates(q)
        if rows.size == 0:
            return {}
        # np.take, not fancy indexing: a row gather at memory speed (about 5x faster here)
        words = np.take(np.asarray(self.pdq), rows, axis=0)  # (C, 4) uint64
        for v in range(q.shape[0]):
            block = words[bounds[v]:bounds[v + 1]]
            for w in range(PDQ_WORDS):  # column by column: a (4,) broadcast is 3x slower
                np.bitwise_xor(block[:, w], q[v, w], out=block[:, w])
        d = _word_distances(words)
        hit = np.flatnonzero(d <= radius)
        variant = np.searchsorted(bounds, hit, side="right") - 1
        out: dict[int, tuple[int, int]] = {}
        for r, dist, v in zip(rows[hit].tolist(), d[hit].tolist(), variant.tolist(),
                              strict=True):
            if r not in out or dist < out[r][0]:
                out[r] = (int(dist), int(v))
        return out

    def small_distances(self, family: str, value: int) -> np.ndarray:
        col = getattr(self, family)
        return np.bitwise_count(col ^ np.uint64(value)).astype(np.int32)

    def search(self, query_variants: list[int], query_phash_variants: list[int],
               pdq_radius: int, phash_radius: int, limit: int = 50) -> list[Candidate]:
        """Rows near the query by PDQ (any dihedral variant) or, in linear mode, by pHash."""
        n = len(self)
        if n == 0:
            return []
        if n > LINEAR_MAX:
            found = self.pdq_within(query_variants, min(pdq_radius, MIH_MAX_RADIUS))
            ranked = sorted(found.items(), key=lambda kv: kv[1][0])[:limit]
            return [Candidate(r, int(self.ref_keys[r]), self.part_names[self.part_codes[r]],
                              d, v) for r, (d, v) in ranked]
        pdq_best, pdq_var = self.pdq_distances(query_variants)
        mask = pdq_best <= pdq_radius
        ph_best = np.full(n, 65, np.int32)
        ph_var = np.zeros(n, np.int64)
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
            out.append(Candidate(r, int(self.ref_keys[r]), self.part_names[self.part_codes[r]],
                                 int(pdq_best[r]), variant))
        return out
