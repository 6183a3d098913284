"""The compact local-feature index: an inverted file of visual words, for large archives.

Why: `FeatureIndex` keeps every descriptor of every reference in memory (several KB per
reference) and votes by nearest neighbours, which neither fits ten million references on
one machine nor stays meaningful there (among billions of descriptors the nearest one is a
stranger's). Here each reference keeps, per keypoint, only a posting in the list of its
visual word (`vocabulary.py`): the reference's row number and a 16-bit Hamming embedding,
6 bytes. The exact descriptors stay in the store; the few references whose votes stand out
from chance are read back through `loader` and verified geometrically exactly as before
(`features.verify_pair`), so the evidence and the verdict rules do not change.

Voting: each query descriptor looks up the lists of its nearest words (several per
descriptor: a copy's descriptor can fall on a neighbouring word) and keeps the postings whose
embedded bits agree; it votes once per reference it hits, with weight 1/sqrt(references it
hits, over what the query's typical descriptor hits) (burstiness: a logo or ticker on many
references lifts none of them, whatever the archive size). A reference with enough votes
then counts one vote per word it shares with the query (votes through one word agree with
each other: they are one piece of evidence). It is a candidate when its weighted votes are
well above what chance gives a reference with as many keypoints. Words held by far more
references than the mean are not looked up at all (a stop list).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from imgverify.signals.features import GeometricMatch, LocalFeatures, verify_pair
from imgverify.signals.vocabulary import Vocabulary, default_vocabulary

#: Keypoints per reference that get a posting (the strongest, as stored): all of them.
#: Bumped whenever the saved arrays change meaning.
COMPACT_FORMAT = 2
#: Query-side words per descriptor: nearest centroids per half (so up to its square words).
QUERY_PER_HALF = 2
#: A query word further than this (summed half distances, bits) from the descriptor than its
#: nearest word is not looked up: it would hold nothing the descriptor resembles.
WORD_SLACK = 10
#: Postings whose embedded bits differ from the query descriptor's in more places are no vote.
HE_MAX_DISTANCE = 3
#: Width of the soft embedding weight exp(-(d / HE_SIGMA)^2) of a vote.
HE_SIGMA = 6.0
#: Stop list: a word whose list is longer than STOP_FACTOR times the mean list (and than
#: STOP_MIN) is not looked up. Such words (flat sky, blur, JPEG blocks) are in so many
#: references that they say nothing about any, yet gathering their postings was most of
#: a query's cost at a million references, growing with the archive.
STOP_FACTOR = 50.0
STOP_MIN = 2000
#: Candidates need this many votes, and `CHANCE_FACTOR` times the chance expectation.
MIN_VOTES = 4
CHANCE_FACTOR = 2.5
MIN_WEIGHT = 0.75
#: Candidates verified per query picture. On TUNE at 10 k and 1 M references the true
#: reference, when voted at all, came first (bench/vote_tune.py); 4 leave margin.
TOP = 4
#: Up to this many references, votes are counted in one dense array (no sort).
DENSE_VOTES_MAX = 16_000_000
#: References whose features are kept decoded after a verification (per index).
FEATURE_CACHE = 256

Loader = Callable[[list[int]], dict[int, LocalFeatures]]


class CompactFeatureIndex:
    """Postings per visual word (CSR), references by row; immutable once built and safe to
    share between threads (the feature cache has its own lock)."""

    #: votes a region's strongest descriptors must give a reference before the region is
    #: searched in full (`match.search.find_local`): a word shared is rarer than a
    #: nearest neighbour, so fewer votes mean as much
    probe_votes = 2

    def __init__(self, ref_keys: np.ndarray, ref_counts: np.ndarray, offsets: np.ndarray,
                 postings: np.ndarray, he: np.ndarray, loader: Loader,
                 vocabulary: Vocabulary | None = None) -> None:
        self.ref_keys = ref_keys  # (N,) int64: archive key per row
        self.ref_counts = ref_counts  # (N,) uint16: postings per reference
        self.offsets = offsets  # (W + 1,) int64 into postings
        self.postings = postings  # (P,) uint32 row numbers, grouped by word
        self.he = he  # (P,) uint16 Hamming embedding
        self.loader = loader
        self.vocabulary = vocabulary or default_vocabulary()
        self._cache: OrderedDict[int, LocalFeatures | None] = OrderedDict()
        self._lock = threading.Lock()
        self._key_set: set[int] | None = None
        self._stop_length: int | None = None

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def build(cls, items: Iterable[tuple[int, np.ndarray]], loader: Loader,
              vocabulary: Vocabulary | None = None,
              progress: Callable[[int], None] | None = None) -> CompactFeatureIndex:
        """Index (key, descriptors) pairs: each descriptor's nearest word and embedding.
        Words are assigned in batches and postings placed by a counting sort: the build holds
        the words of every posting (6 bytes each) beside the finished index."""
        vocab = vocabulary or default_vocabulary()
        keys: list[int] = []
        counts: list[int] = []
        word_parts: list[np.ndarray] = []
        he_parts: list[np.ndarray] = []
        batch: list[np.ndarray] = []
        pending = 0

        def flush() -> None:
            nonlocal batch, pending
            if not batch:
                return
            desc = np.concatenate(batch)
            words = vocab.assign(desc, 1)[0][:, 0]
            word_parts.append(words.astype(np.int32))
            he_parts.append(vocab.embed(desc, words))
            batch, pending = [], 0

        for done, (key, desc) in enumerate(items, 1):
            keys.append(int(key))
            counts.append(int(desc.shape[0]))
            if desc.shape[0]:
                batch.append(desc)
                pending += desc.shape[0]
            if pending >= 200_000:
                flush()
            if progress is not None and done % 1000 == 0:
                progress(done)
        flush()
        # rows of each batch, regenerated from the per-reference counts when placed
        row_of = np.repeat(np.arange(len(keys), dtype=np.uint32),
                           np.asarray(counts, dtype=np.int64))
        bounds = np.cumsum([0] + [p.size for p in word_parts])

        def chunk(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return word_parts[i], row_of[bounds[i]:bounds[i + 1]], he_parts[i]

        return cls.from_chunks(np.asarray(keys, np.int64), np.asarray(counts, np.uint16),
                               chunk, len(word_parts), loader, vocab)

    @classmethod
    def from_postings(cls, ref_keys: np.ndarray, ref_counts: np.ndarray, words: np.ndarray,
                      rows: np.ndarray, he: np.ndarray, loader: Loader,
                      vocabulary: Vocabulary | None = None) -> CompactFeatureIndex:
        vocab = vocabulary or default_vocabulary()
        order = np.argsort(words, kind="stable")
        counts = np.bincount(words, minlength=vocab.words)
        offsets = np.zeros(vocab.words + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(ref_keys, ref_counts, offsets, rows[order].astype(np.uint32),
                   he[order].astype(np.uint16), loader, vocab)

    @classmethod
    def from_chunks(cls, ref_keys: np.ndarray, ref_counts: np.ndarray,
                    chunk: Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]],
                    n_chunks: int, loader: Loader, vocabulary: Vocabulary | None = None
                    ) -> CompactFeatureIndex:
        """Build from postings produced in chunks, `chunk(i)` -> (words, rows, he), called
        twice per chunk (count, then place): memory stays at the index's own size plus one
        chunk, which is what lets ten million references be indexed on one machine."""
        vocab = vocabulary or default_vocabulary()
        counts = np.zeros(vocab.words, np.int64)
        for i in range(n_chunks):
            counts += np.bincount(chunk(i)[0], minlength=vocab.words)
        offsets = np.zeros(vocab.words + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        total = int(offsets[-1])
        postings = np.empty(total, np.uint32)
        he_all = np.empty(total, np.uint16)
        cursor = offsets[:-1].copy()
        for i in range(n_chunks):
            words, rows, he = chunk(i)
            order = np.argsort(words, kind="stable")
            w = words[order]
            start = np.searchsorted(w, w, side="left")  # first index of each word's run
            pos = cursor[w] + (np.arange(w.size) - start)
            postings[pos] = rows[order]
            he_all[pos] = he[order]
            cursor += np.bincount(w, minlength=vocab.words)
        return cls(ref_keys, ref_counts, offsets, postings, he_all, loader, vocab)

    # -- persistence ------------------------------------------------------------------------
    _ARRAYS = ("ref_keys", "ref_counts", "offsets", "postings", "he")

    def save(self, folder: Path) -> dict[str, Any]:
        for name in self._ARRAYS:
            np.save(folder / f"{name}.npy", np.asarray(getattr(self, name)))
        return {"references": len(self.ref_keys), "postings": int(self.postings.shape[0]),
                "vocabulary": self.vocabulary.version}

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any], loader: Loader,
             vocabulary: Vocabulary | None = None) -> CompactFeatureIndex | None:
        """The index saved in `folder`, memory-mapped (pages are read as lists are used)."""
        vocab = vocabulary or default_vocabulary()
        if int(meta.get("vocabulary", -1)) != vocab.version:
            return None
        try:
            arrs = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in cls._ARRAYS}
        except (OSError, ValueError):
            return None
        if (len(arrs["ref_keys"]) != int(meta["references"])
                or len(arrs["postings"]) != int(meta["postings"])
                or len(arrs["offsets"]) != vocab.words + 1):
            return None
        return cls(arrs["ref_keys"], arrs["ref_counts"], arrs["offsets"], arrs["postings"],
                   arrs["he"], loader, vocab)

    # -- size -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.postings.shape[0])

    @property
    def references(self) -> int:
        return int(self.ref_keys.shape[0])

    @property
    def nbytes(self) -> int:
        """Everything the index holds: postings, embeddings, word offsets, per-row keys and
        counts (the vocabulary is shared by every archive and not counted)."""
        return int(sum(np.asarray(getattr(self, n)).nbytes for n in self._ARRAYS))

    @property
    def stop_length(self) -> int:
        """Lists longer than this are stop words (see STOP_FACTOR)."""
        if self._stop_length is None:
            offsets = np.asarray(self.offsets)
            used = int(np.count_nonzero(offsets[1:] != offsets[:-1]))
            self._stop_length = max(STOP_MIN, int(STOP_FACTOR * len(self) / max(1, used)))
        return self._stop_length

    def keys(self) -> set[int]:
        if self._key_set is None:
            self._key_set = set(np.asarray(self.ref_keys).tolist())
        return self._key_set

    # -- search -----------------------------------------------------------------------------
    def _hits(self, query: LocalFeatures
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(query descriptor, reference row, embedding distance, word) of every agreeing
        posting."""
        desc = np.ascontiguousarray(query.descriptors)
        words, dist = self.vocabulary.assign(desc, QUERY_PER_HALF)
        keep = dist <= dist[:, :1] + WORD_SLACK
        q_idx = np.nonzero(keep)[0]
        w = words[keep]
        lo = np.asarray(self.offsets[w], dtype=np.int64)
        lengths = np.asarray(self.offsets[w + 1], dtype=np.int64) - lo
        useful = lengths <= self.stop_length
        q_idx, w, lo, lengths = q_idx[useful], w[useful], lo[useful], lengths[useful]
        total = int(lengths.sum())
        if total == 0:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty, empty
        # the embedding depends on the word: one per (descriptor, word looked up)
        query_he = self.vocabulary.embed(desc[q_idx], w)
        lookup, rows, dist = scan_postings(lo, lengths, query_he,
                                           np.arange(q_idx.size, dtype=np.int64),
                                           np.asarray(self.he), np.asarray(self.postings),
                                           HE_MAX_DISTANCE)
        return q_idx[lookup], rows, dist, w[lookup]

    def vote(self, query: LocalFeatures, top: int = TOP, min_votes: int = MIN_VOTES
             ) -> list[tuple[int, int]]:
        """[(ref_key, votes)] of the references whose votes clearly exceed chance.

        A vote weighs more the closer the embedded bits agree (soft Hamming embedding) and
        less the more references the same query descriptor hits, relative to the query's
        typical descriptor (burstiness).
        """
        if len(query) == 0 or self.references == 0 or len(self) == 0:
            return []
        q, rows, he_dist, words = self._hits(query)
        if rows.size == 0:
            return []
        # burstiness relative to the query's typical descriptor: a descriptor that hits far
        # more references than its siblings (a logo, a ticker, flat sky) counts less, but
        # the typical one keeps weight 1 however large the archive (its fan-out grows with
        # the archive; an absolute 1/sqrt(hits) made true votes fade as the archive grew)
        per_q = np.bincount(q, minlength=len(query)).astype(np.float64)
        typical = max(1.0, float(np.median(per_q[per_q > 0])))
        weight = (np.exp(-(he_dist / HE_SIGMA) ** 2)
                  / np.sqrt(np.maximum(1.0, per_q[q] / typical)))
        if self.references <= DENSE_VOTES_MAX:  # one pass, no sort
            votes_all = np.bincount(rows, minlength=self.references)
            near = votes_all[rows] >= min_votes
        else:
            keys, inverse, counts = np.unique(rows, return_inverse=True, return_counts=True)
            near = counts[inverse] >= min_votes
        # the references with enough votes count again, one vote per word they share with
        # the query: several query descriptors on one texture, or a reference with several
        # keypoints on one frequent word, agree with each other and are one piece of evidence
        sel = np.flatnonzero(near)
        if sel.size == 0:
            return []
        key = rows[sel] * np.int64(self.vocabulary.words) + words[sel]
        order = np.lexsort((-weight[sel], key))
        first = np.ones(order.size, bool)
        first[1:] = key[order[1:]] != key[order[:-1]]
        best = sel[order[first]]
        uniq, inverse = np.unique(rows[best], return_inverse=True)
        votes = np.bincount(inverse)
        weighted = np.bincount(inverse, weights=weight[best])
        keep = votes >= min_votes
        uniq, votes, weighted = uniq[keep], votes[keep], weighted[keep]
        if uniq.size == 0:
            return []
        # chance: the votes land on references in proportion to their postings
        share = np.asarray(self.ref_counts[uniq], np.float64) / max(1, len(self))
        expected = float(weight.sum()) * share
        ok = weighted >= CHANCE_FACTOR * expected + MIN_WEIGHT
        if not ok.any():
            return []
        cand = np.flatnonzero(ok)
        order = cand[np.argsort(-weighted[cand], kind="stable")][:top]
        return [(int(self.ref_keys[uniq[i]]), int(votes[i])) for i in order]

    def features_of(self, key: int) -> LocalFeatures | None:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        found = self.loader([key]).get(key)
        with self._lock:
            self._cache[key] = found
            while len(self._cache) > FEATURE_CACHE:
                self._cache.popitem(last=False)
        return found

    def verify(self, query: LocalFeatures, ref_key: int, mirrored: bool = False
               ) -> GeometricMatch | None:
        """The same geometric check as `FeatureIndex.verify`, on the reference's stored
        features (read from the store; a reference removed since the build has none)."""
        ref = self.features_of(ref_key)
        if ref is None:
            return None
        return verify_pair(query, ref, ref_key, mirrored)


def scan_postings(lo: np.ndarray, lengths: np.ndarray, query_he: np.ndarray,
                  query_idx: np.ndarray, he: np.ndarray, postings: np.ndarray, max_distance: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query descriptor, reference row, embedding distance) of every posting in the lists
    looked up (`lo`, `lengths`) whose embedding is within `max_distance` bits of the query's.

    Why compiled: at a million references one query walks millions of postings, and each
    numpy pass over them (positions, owners, embeddings, distances, filter) allocates and
    reads them again; one fused loop reads each posting once and keeps only the few percent
    that agree.
    """
    total = int(lengths.sum())
    capacity = total // 8 + 1024  # a few percent agree; rescanned at full size if not
    while True:
        out_q = np.empty(capacity, np.int64)
        out_row = np.empty(capacity, np.int64)
        out_d = np.empty(capacity, np.int64)
        n = _compiled_scan()(
            np.ascontiguousarray(lo, np.int64), np.ascontiguousarray(lengths, np.int64),
            np.ascontiguousarray(query_he, np.uint16), query_idx, he, postings, max_distance,
            _POPCOUNT16, out_q, out_row, out_d)
        if n >= 0:
            return out_q[:n], out_row[:n], out_d[:n]
        capacity = total


def _scan_py(lo: Any, lengths: Any, query_he: Any, query_idx: Any, he: Any, postings: Any,
             max_distance: int, popcount: Any, out_q: Any, out_row: Any, out_d: Any) -> int:
    n = 0
    cap = out_q.shape[0]
    for k in range(lo.shape[0]):
        h = query_he[k]
        qi = query_idx[k]
        start = lo[k]
        for i in range(start, start + lengths[k]):
            d = popcount[he[i] ^ h]
            if d <= max_distance:
                if n == cap:
                    return -1
                out_q[n] = qi
                out_row[n] = postings[i]
                out_d[n] = d
                n += 1
    return n


#: bits set in every 16-bit value (a 64 KB table stays in cache; faster than bit tricks)
_POPCOUNT16 = np.bitwise_count(np.arange(1 << 16, dtype=np.uint16)).astype(np.uint8)


@lru_cache(maxsize=1)
def _compiled_scan() -> Callable[..., int]:
    """`_scan_py` compiled on first use (importing numba and compiling take about a second,
    which a CLI call that never searches a large archive should not pay)."""
    import numba

    # nogil: threads of a service or batch scan walk postings in parallel
    return numba.njit(nogil=True)(_scan_py)  # type: ignore[no-any-return]


class LayeredLocalIndex:
    """A compact base index plus the references changed since it was built.

    Why: building the base at ten million references takes minutes, so it is built by an
    explicit `archive index` (or after an ingest), never on a query; references added or
    replaced since are held exactly in a small `FeatureIndex` (`delta`), and `stale` names
    every key whose postings in the base no longer describe it (replaced or removed), so
    the base never votes for them.
    """

    def __init__(self, base: CompactFeatureIndex, delta: Any, stale: set[int]) -> None:
        self.base = base
        self.delta = delta  # a FeatureIndex over the changed references' current features
        self.stale = stale

    probe_votes = CompactFeatureIndex.probe_votes

    def __len__(self) -> int:
        return len(self.base) + len(self.delta)

    @property
    def nbytes(self) -> int:
        return int(self.base.nbytes + self.delta.nbytes)

    def vote(self, query: LocalFeatures, top: int = TOP, min_votes: int = MIN_VOTES
             ) -> list[tuple[int, int]]:
        found = [(k, v) for k, v in self.base.vote(query, top + min(len(self.stale), 16))
                 if k not in self.stale][:top]
        if len(self.delta):
            found += self.delta.vote(query, top)
        found.sort(key=lambda kv: -kv[1])
        return found[:top]

    def verify(self, query: LocalFeatures, ref_key: int, mirrored: bool = False
               ) -> GeometricMatch | None:
        if ref_key in self.delta.by_key:
            return self.delta.verify(query, ref_key, mirrored)  # type: ignore[no-any-return]
        if ref_key in self.stale:
            return None
        return self.base.verify(query, ref_key, mirrored)
