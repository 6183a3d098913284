"""In-memory Hamming index over every hash row of the archive.

Derived from the archive (never the only copy of anything) and cached beside it as plain
.npy files that are memory-mapped on open. Per hash row it keeps 56 bytes of hashes (4 uint64
words of PDQ, 1 each of pHash, dHash, wHash), a 4-byte reference key and a 1-byte part code.

Two search paths that return the same rows for the same query (`HashIndex.search`): the
candidate rule is PDQ within a radius over the query's 8 dihedral variants, and the size of
the archive only picks how it is computed.

* **Linear** (small archives, <= `LINEAR_MAX` rows, or a radius beyond the multi-index's):
  one vectorised XOR + popcount pass over all rows for the query's 8 PDQ variants.
* **Multi-index hashing** on PDQ (Norouzi et al.), exact to radius 31: 16 chunks of 16 bits,
  one table per chunk of packed 32-bit entries (row number, low chunk bits, 8-16 bits of the
  next chunk as a provably exact filter) with a directory on the chunk's top bits. 64 bytes
  per row for the tables + 1-4 for the directories; see `PdqMultiIndex`. Only rows that pass
  the filter are read and compared exactly, so the result equals brute force.

bench/speed.py measures both paths (synthetic hashes with real per-bit frequencies);
bench/cliff.py checks that the switch between them changes nothing that is found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgverify.signals.hashing import HashSet, hamming

PDQ_WORDS = 4
CHUNKS = 16
CHUNK_BITS = 16
MIH_MAX_RADIUS = 31  # exact with one-bit probes over 16 chunks
#: Up to this many rows a linear scan is about as fast as the multi-index and needs no
#: tables; above it the multi-index answers the same query.
LINEAR_MAX = 20_000
#: Bumped whenever the cached arrays change meaning; older caches are rebuilt.
CACHE_FORMAT = 3
#: Part name of a hash row that holds only a PDQ (a hash-only reference imported from a hash
#: list: no image, so no pHash/dHash/wHash; those columns hold zeros and are never compared).
PDQ_ONLY_PART = "pdq-only"


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
    words = np.ascontiguousarray(pdq, dtype="<u8")  # no copy on little-endian machines
    quarters = words.view("<u2").reshape(words.shape[0], PDQ_WORDS, 4)  # low quarter first
    return quarters[:, :, ::-1].reshape(words.shape[0], CHUNKS).astype(np.uint16)


@dataclass(frozen=True)
class MihLayout:
    """How each 32-bit table entry is packed: row number, the chunk bits below the
    directory, and `ext_bits` of the next chunk as a filter (see `PdqMultiIndex`)."""

    dir_bits: int  # directory on the top dir_bits of each 16-bit chunk
    ext_bits: int  # bits of the next chunk kept in each entry, for the filter
    wide: bool  # uint64 entries (only when row numbers need more than ~26 bits)

    @property
    def low_bits(self) -> int:
        return CHUNK_BITS - self.dir_bits

    @property
    def row_shift(self) -> int:
        return self.low_bits + self.ext_bits

    @classmethod
    def for_rows(cls, n: int, dir_bits: int | None = None) -> MihLayout:
        """Directory of about n/32 buckets per chunk (2-4 bytes per row) up to 16 bits; the
        rest of a uint32 entry after the row number holds filter bits (10 at 1 M rows,
        8 at 10 M)."""
        row_bits = max(1, (max(n, 2) - 1).bit_length())
        if dir_bits is None:
            dir_bits = min(CHUNK_BITS, max(8, row_bits - 5))
        low = CHUNK_BITS - dir_bits
        free = 32 - row_bits - low
        if free >= 4:
            return cls(dir_bits, min(CHUNK_BITS, free), False)
        return cls(dir_bits, CHUNK_BITS, True)

    def to_json(self) -> dict[str, int | bool]:
        return {"dir_bits": self.dir_bits, "ext_bits": self.ext_bits, "wide": self.wide}


#: Exactness of the filter: with 16 chunks and radius <= 31, some chunk c of a true
#: neighbour differs in <= 1 bit AND the first `ext_bits` of chunk c+1 (cyclic) differ in
#: <= 3. Proof: let S be the chunks within 1 bit (|S| >= 1 by pigeonhole). If every c in S
#: had >= 4 differing bits in the head of chunk c+1, those s chunks c+1 lie outside S and
#: differ in >= 4 bits each, and the other 16 - 2s chunks outside S in >= 2 each, so the
#: distance would be >= 4s + 2(16 - 2s) = 32.
EXT_MAX_DISTANCE = 3


class PdqMultiIndex:
    """Multi-index hashing over PDQ (Norouzi et al.) with a packed filter.

    The 256 bits are cut into 16 chunks of 16 bits; a row within radius 31 of a query has a
    chunk within 1 bit of the query's. Per chunk, one table lists every row sorted by that
    chunk, with a directory of bucket offsets on the chunk's top `dir_bits`. Each 32-bit
    entry packs the row number, the chunk's remaining low bits and `ext_bits` of the next
    chunk. A probe reads the directory buckets within one bit of the query's chunk, keeps the
    entries whose full chunk is within 1 bit and whose next-chunk head is within
    `EXT_MAX_DISTANCE` (exact, see above), and only those rows' hashes are read from memory
    and compared exactly. Memory: 64 bytes per row plus the directory (1-2 bytes per row).
    """

    def __init__(self, order: np.ndarray, starts: np.ndarray, n: int,
                 layout: MihLayout) -> None:
        self.order = order  # (16 * N,) packed entries, chunk after chunk
        self.starts = starts  # (16, 2**dir_bits + 1) offsets into `order`
        self.n = n
        self.layout = layout

    @classmethod
    def build(cls, pdq: np.ndarray, dir_bits: int | None = None) -> PdqMultiIndex:
        n = pdq.shape[0]
        layout = MihLayout.for_rows(n, dir_bits)
        etype = np.uint64 if layout.wide else np.uint32
        chunks = _chunks(pdq)
        low_mask = (1 << layout.low_bits) - 1
        order = np.empty(CHUNKS * n, dtype=etype)
        buckets = 1 << layout.dir_bits
        starts = np.empty((CHUNKS, buckets + 1),
                          dtype=np.int32 if CHUNKS * n < 2**31 else np.int64)
        columns = np.ascontiguousarray(chunks.T)  # (16, N): np.take on rows is fast
        shift_row, shift_ext = etype(layout.row_shift), etype(layout.ext_bits)
        for c in range(CHUNKS):
            col = columns[c]
            srt = np.argsort(col, kind="stable")  # radix sort for 16-bit keys
            packed: np.ndarray = np.left_shift(srt.astype(etype), shift_row)
            packed |= np.left_shift(np.bitwise_and(np.take(col, srt).astype(etype),
                                                   etype(low_mask)), shift_ext)
            packed |= (np.take(columns[(c + 1) % CHUNKS], srt)
                       >> (CHUNK_BITS - layout.ext_bits)).astype(etype)
            order[c * n:(c + 1) * n] = packed
            counts = np.bincount(col >> layout.low_bits, minlength=buckets)
            starts[c, 0] = c * n
            np.cumsum(counts, out=starts[c, 1:])
            starts[c, 1:] += c * n
        return cls(order, starts, n, layout)

    @property
    def nbytes(self) -> int:
        return int(self.order.nbytes + self.starts.nbytes)

    def candidates(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows that pass the chunk probe and the filter for some query variant, grouped by
        variant: (rows, bounds) where rows[bounds[v]:bounds[v + 1]] came from variant v.

        `query` is (V, 4) uint64. Rows may repeat; the caller verifies exact distances.
        """
        lay = self.layout
        etype = self.order.dtype.type
        n_var = query.shape[0]
        qc = _chunks(query).astype(np.int64)  # (V, 16)
        # directory buckets within one bit of each query chunk: no flip, or one flip in the
        # directory bits (flips in the low bits stay in the same bucket)
        flips = np.array([0] + [1 << (lay.low_bits + k) for k in range(lay.dir_bits)],
                         dtype=np.int64)
        n_probe = flips.size
        probes = (qc[:, :, None] ^ flips[None, None, :]) >> lay.low_bits  # (V, 16, P)
        chunk_ids = np.arange(CHUNKS)[None, :, None]
        lo = self.starts[chunk_ids, probes].ravel().astype(np.int64)
        hi = self.starts[chunk_ids, probes + 1].ravel().astype(np.int64)
        lengths = hi - lo
        total = int(lengths.sum())
        bounds = np.zeros(n_var + 1, np.int64)
        if total == 0:
            return np.zeros(0, np.int64), bounds
        ends = np.cumsum(lengths)
        offsets = np.repeat(lo - (ends - lengths), lengths) + np.arange(total)
        entries = np.take(self.order, offsets)
        # what each entry is compared with: the query's chunk low bits and next-chunk head,
        # packed like the entry, per (variant, chunk)
        q_low = qc & ((1 << lay.low_bits) - 1)
        q_ext = np.roll(qc, -1, axis=1) >> (CHUNK_BITS - lay.ext_bits)
        q_key = ((q_low << lay.ext_bits) | q_ext).astype(etype).ravel()  # (V * 16,)
        per_vc = lengths.reshape(n_var * CHUNKS, n_probe).sum(axis=1)
        diff = entries ^ np.repeat(q_key, per_vc)
        ext_mask = etype((1 << lay.ext_bits) - 1)
        keep = np.bitwise_count(diff & ext_mask) <= EXT_MAX_DISTANCE
        if lay.low_bits:
            # the chunk itself: within 1 bit in all, so no low-bit flip when the probe
            # already flipped a directory bit
            low = np.bitwise_count((diff >> etype(lay.ext_bits)) & etype((1 << lay.low_bits) - 1))
            allowed = np.ones((n_var * CHUNKS, n_probe), np.uint8)
            allowed[:, 1:] = 0
            keep &= low <= np.repeat(allowed.ravel(), lengths)
        hit = np.flatnonzero(keep)
        per_variant = per_vc.reshape(n_var, CHUNKS).sum(axis=1)
        np.cumsum(per_variant, out=bounds[1:])
        kept_bounds = np.searchsorted(hit, bounds)
        rows = (entries[hit] >> etype(lay.row_shift)).astype(np.int64)
        return rows, kept_bounds


class HashIndex:
    """Immutable snapshot of the archive's hashes; safe to share between threads."""

    def __init__(self, ref_keys: np.ndarray, part_codes: np.ndarray, part_names: list[str],
                 pdq: np.ndarray, phash: np.ndarray, dhash: np.ndarray, whash: np.ndarray,
                 mih: PdqMultiIndex | None = None) -> None:
        self.ref_keys = ref_keys
        self.part_codes = part_codes
        self.part_names = part_names
        self.pdq = pdq.reshape(-1, PDQ_WORDS)
        self.phash = phash
        self.dhash = dhash
        self.whash = whash
        self._mih = mih
        self._columns: np.ndarray | None = None  # (4, N) copy for fast linear scans

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def empty(cls) -> HashIndex:
        z = np.zeros(0, dtype=np.uint64)
        return cls(np.zeros(0, np.uint32), np.zeros(0, np.uint8), [],
                   np.zeros((0, PDQ_WORDS), np.uint64), z, z, z)

    @classmethod
    def from_arrays(cls, ref_keys: np.ndarray, parts: list[str], pdq: np.ndarray,
                    phash: np.ndarray, dhash: np.ndarray, whash: np.ndarray) -> HashIndex:
        names = sorted(set(parts)) or ["full"]
        code = {n: i for i, n in enumerate(names)}
        codes = np.array([code[p] for p in parts], dtype=np.uint8)
        return cls(ref_keys.astype(np.uint32), codes, names,
                   np.ascontiguousarray(pdq, dtype=np.uint64),
                   np.ascontiguousarray(phash, dtype=np.uint64),
                   np.ascontiguousarray(dhash, dtype=np.uint64),
                   np.ascontiguousarray(whash, dtype=np.uint64))

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
        keys = np.array([r[0] for r in rows], np.int64)
        return cls.from_arrays(keys, [r[1] for r in rows], pdq, ph, dh, wh)

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
                                           self.dhash, self.whash))
        return base + (self._mih.nbytes if self._mih is not None else 0)

    def distances(self, row: int, query: HashSet) -> dict[str, int]:
        """Hamming distance per hash family between a row and a query hash set (PDQ alone
        for a hash-only row: its other families are unknown, not zero)."""
        pdq = int.from_bytes(np.asarray(self.pdq[row]).astype(">u8").tobytes(), "big")
        if self.part_names[self.part_codes[row]] == PDQ_ONLY_PART:
            return {"pdq": hamming(query.pdq, pdq)}
        return {"pdq": hamming(query.pdq, pdq),
                "phash": hamming(query.phash, int(self.phash[row])),
                "dhash": hamming(query.dhash, int(self.dhash[row])),
                "whash": hamming(query.whash, int(self.whash[row]))}

    # -- persistence ------------------------------------------------------------------------
    _ARRAYS = ("ref_keys", "part_codes", "pdq", "phash", "dhash", "whash")

    def save(self, folder: Path, with_mih: bool) -> dict[str, Any]:
        """Write the arrays into `folder` (a private one: `cache.publish_cache` renames it
        into place); returns what `load` needs besides the arrays."""
        arrays = {name: np.asarray(getattr(self, name)) for name in self._ARRAYS}
        if with_mih:
            arrays["mih_order"] = self.mih.order
            arrays["mih_starts"] = self.mih.starts
        for name, arr in arrays.items():
            np.save(folder / f"{name}.npy", arr)
        return {"rows": len(self), "parts": self.part_names, "mih": with_mih,
                "mih_layout": self.mih.layout.to_json() if with_mih else None}

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any]) -> HashIndex | None:
        """The index saved in `folder` (already checked against its manifest), memory-mapped."""
        try:
            arrs = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in cls._ARRAYS}
            mih = None
            if meta.get("mih"):
                mih = PdqMultiIndex(np.load(folder / "mih_order.npy", mmap_mode="r"),
                                    np.load(folder / "mih_starts.npy"), int(meta["rows"]),
                                    MihLayout(**meta["mih_layout"]))
            if any(len(a) != int(meta["rows"]) for a in arrs.values()):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(arrs["ref_keys"], arrs["part_codes"], list(meta["parts"]), arrs["pdq"],
                   arrs["phash"], arrs["dhash"], arrs["whash"], mih)

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
        # same-shape XOR: a (4,) broadcast over (C, 4) rows is several times slower
        words ^= np.repeat(q, np.diff(bounds), axis=0)
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

    def search(self, query_variants: list[int], pdq_radius: int, limit: int = 50,
               path: str = "auto") -> list[Candidate]:
        """Rows within `pdq_radius` of any of the query's PDQ variants, nearest first (ties
        by row), at most `limit`.

        The result depends only on the index, the query, the radius and the limit, never on
        which path computes it: growing past `LINEAR_MAX` must change speed, not what is
        found. So there is no wider net on the small path (it once added PDQ up to 80 and
        pHash up to 18, which caught crops keeping ~80 % below the switch and none above;
        neither radius can be searched exactly at millions of rows, and the local-feature
        stage finds those crops on both sides). A radius above `MIH_MAX_RADIUS` (the
        benches ask for every row) is always a linear scan.

        `path`: "auto" (linear up to `LINEAR_MAX` rows or beyond the multi-index's radius,
        multi-index above), or "linear" / "mih" to force one, for tests and benches.
        """
        if path not in ("auto", "linear", "mih"):
            raise ValueError(f"unknown search path {path!r}")
        if len(self) == 0 or pdq_radius < 0:
            return []
        use_mih = path == "mih" or (path == "auto" and len(self) > LINEAR_MAX
                                    and pdq_radius <= MIH_MAX_RADIUS)
        if use_mih:
            found = self.pdq_within(query_variants, pdq_radius)
            rows = np.fromiter(found, np.int64, len(found))
            dist = np.fromiter((d for d, _v in found.values()), np.int64, len(found))
            var = np.fromiter((v for _d, v in found.values()), np.int64, len(found))
        else:
            best, which = self.pdq_distances(query_variants)
            rows = np.flatnonzero(best <= pdq_radius)
            dist, var = best[rows].astype(np.int64), which[rows]
        order = np.lexsort((rows, dist))[:limit]  # by distance, then row: one order for both
        return [Candidate(r, int(self.ref_keys[r]), self.part_names[self.part_codes[r]], d, v)
                for r, d, v in zip(rows[order].tolist(), dist[order].tolist(),
                                   var[order].tolist(), strict=True)]
