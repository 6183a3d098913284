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
embedded bits agree (lists are sorted by embedding and the long ones bucketed by its top
bits, so only buckets that can agree are read: lists grow with the archive, the buckets
read per lookup much less; a long list allows fewer bits, so the postings that agree by
chance per lookup stay within a budget, `HE_HIT_BUDGET`); it votes once per reference
it hits, with weight 1/sqrt(references it hits, over what the query's typical descriptor
hits) (burstiness: a logo or ticker on many
references lifts none of them, whatever the archive size). A reference with enough votes
then counts one vote per word it shares with the query (votes through one word agree with
each other: they are one piece of evidence). It is a candidate when its weighted votes are
well above what chance gives a reference with as many keypoints, and so many that chance
would give them to almost no reference of the whole archive (`CHANCE_REFERENCES`). Words
held by far more references than the mean are not looked up at all (a stop list).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from imgverify.signals.features import GeometricMatch, LocalFeatures, verify_pair
from imgverify.signals.vocabulary import Vocabulary, default_vocabulary

#: Keypoints per reference that get a posting (the strongest, as stored): all of them.
#: Bumped whenever the saved arrays change meaning (3: lists sorted by embedding, buckets).
COMPACT_FORMAT = 3
#: Query-side words per descriptor: nearest centroids per half (so up to its square words).
QUERY_PER_HALF = 2
#: A query word further than this (summed half distances, bits) from the descriptor than its
#: nearest word is not looked up: it would hold nothing the descriptor resembles.
WORD_SLACK = 10
#: Postings whose embedded bits differ from the query descriptor's in more places are no vote.
HE_MAX_DISTANCE = 3
#: Chance-hit budget per lookup. A list allows the largest embedding distance, from
#: HE_MAX_DISTANCE down to HE_MIN_DISTANCE, at which its length times the share of random
#: 16-bit embeddings that close stays within HE_HIT_BUDGET postings. Nearly all chance
#: agreement comes from the few long lists, where a true match is one posting among
#: thousands. Short lists (every list of a small archive) keep 3 bits. Chosen on TUNE at
#: 1 M references (bench/throughput.py and bench/vote_tune.py, see CHANGELOG): tighter
#: budgets (50, or a floor of 1 bit) were cheaper still but lost 0.3 MP crop_40 positives;
#: recall comes before speed.
HE_HIT_BUDGET = 200.0
HE_MIN_DISTANCE = 2
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
#: Chance, counted over the archive: a reference is a candidate only when fewer than this many
#: of the archive's references would reach its word votes by chance (Poisson, with its share
#: of the query's hits: `poisson_log_tail`). The ratio test above does not see the archive's
#: size: at a million references a query's hits give hundreds of references 2 or 3 votes by
#: chance, each a verification after a full vote and a pass after a probe. Chosen on TUNE at
#: 1 M references (bench/vote_tune.py, bench/throughput.py; CHANGELOG): 10 keeps every
#: positive the checker found; 1 was cheaper still but lost two.
CHANCE_REFERENCES = 10.0
#: The same bar for a region's probe (`probe`): its strongest descriptors must lift some
#: reference so far above chance that fewer than this many references of the archive would
#: get there by chance, before the region is described and voted in full. At the full
#: vote's 10, some reference passes by chance nearly every time at a million references
#: (the region of a picture that is not archived was voted in full anyway). Chosen on TUNE
#: at 1 M references with `search.REGION_PROBE_FEATURES` (bench/scale.py --set,
#: bench/throughput.py --variant): 1 with 250 descriptors found every positive the checker
#: found before; 1 or 0.1 with 160 lost 4-5 of 120 collages and a story, 0.1 with 250 one
#: collage.
PROBE_CHANCE_REFERENCES = 1.0
#: Candidates verified per query picture. On TUNE at 10 k and 1 M references the true
#: reference, when voted at all, came first (bench/vote_tune.py); 4 leave margin.
TOP = 4
#: Long lists are sorted by embedding and cut into 2**b buckets by its top b bits, about
#: BUCKET_TARGET postings each (b from BUCKET_MIN_BITS to BUCKET_MAX_BITS; shorter lists
#: are scanned whole). A lookup then reads only the buckets whose prefix is within
#: HE_MAX_DISTANCE bits of the query's, and inside a bucket whose prefix already uses the
#: whole allowance, only the postings equal to the query in the remaining bits (a binary
#: search): the same postings as a full scan, at a fraction of the reads. Each bucket costs
#: 4 bytes, under 1/32 byte per posting. (Measured in bench/scale.py: at a million
#: references the scan is memory-latency bound, and 32 to 512 postings per bucket cost the
#: same; the gain grows with list length, so with the archive.)
BUCKET_TARGET = 128
BUCKET_MIN_BITS = 3
BUCKET_MAX_BITS = 12
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
                 postings: np.ndarray, he: np.ndarray, buckets: np.ndarray, loader: Loader,
                 vocabulary: Vocabulary | None = None) -> None:
        """Arrays as `finish_lists` leaves them (each list sorted by embedding, `buckets`
        its bucket tables); use `build`, `from_postings`, `from_chunks` or `load`."""
        self.ref_keys = ref_keys  # (N,) int64: archive key per row
        self.ref_counts = ref_counts  # (N,) uint16: postings per reference
        self.offsets = offsets  # (W + 1,) int64 into postings
        self.postings = postings  # (P,) uint32 row numbers, grouped by word
        self.he = he  # (P,) uint16 Hamming embedding
        self.buckets = buckets  # bucket tables of the long lists, in word order
        # where each bucketed list's table starts, for those lists only (a per-word array
        # would outweigh a small archive's postings); a list's bits follow from its length
        bits = bucket_bits(np.diff(np.asarray(offsets, np.int64)))
        self.bucketed_words = np.flatnonzero(bits).astype(np.int32)
        starts = _table_starts(bits)
        self.table_starts = starts[self.bucketed_words]
        self.tables_size = int(starts[-1])
        self.loader = loader
        self.vocabulary = vocabulary or default_vocabulary()
        self._cache: OrderedDict[int, LocalFeatures | None] = OrderedDict()
        self._lock = threading.Lock()
        self._key_set: set[int] | None = None
        self._mean_list: float | None = None

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
        postings = rows[order].astype(np.uint32)
        he_all = he[order].astype(np.uint16)
        buckets = finish_lists(offsets, postings, he_all)
        return cls(ref_keys, ref_counts, offsets, postings, he_all, buckets, loader, vocab)

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
        buckets = finish_lists(offsets, postings, he_all)
        return cls(ref_keys, ref_counts, offsets, postings, he_all, buckets, loader, vocab)

    # -- persistence ------------------------------------------------------------------------
    _ARRAYS = ("ref_keys", "ref_counts", "offsets", "postings", "he", "buckets")

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
        index = cls(arrs["ref_keys"], arrs["ref_counts"], arrs["offsets"], arrs["postings"],
                    arrs["he"], arrs["buckets"], loader, vocab)
        if index.tables_size != len(arrs["buckets"]):
            return None
        return index

    # -- size -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.postings.shape[0])

    @property
    def references(self) -> int:
        return int(self.ref_keys.shape[0])

    @property
    def nbytes(self) -> int:
        """Everything the index holds: postings, embeddings, word offsets, bucket tables,
        per-row keys and counts (the vocabulary is shared by every archive and not counted)."""
        return int(sum(np.asarray(getattr(self, n)).nbytes for n in self._ARRAYS)
                   + self.bucketed_words.nbytes + self.table_starts.nbytes)

    def tables_of(self, words: np.ndarray, lengths: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(bucket bits, table start) of the lists of `words` (of `lengths`)."""
        bits = bucket_bits(lengths)
        starts = np.zeros(bits.shape, np.int64)
        sel = bits > 0
        if sel.any():
            starts[sel] = self.table_starts[np.searchsorted(self.bucketed_words, words[sel])]
        return bits, starts

    @property
    def mean_list(self) -> float:
        """Mean length of the lists that hold any posting."""
        if self._mean_list is None:
            offsets = np.asarray(self.offsets)
            used = int(np.count_nonzero(offsets[1:] != offsets[:-1]))
            self._mean_list = len(self) / max(1, used)
        return self._mean_list

    @property
    def stop_length(self) -> int:
        """Lists longer than this are stop words (see STOP_FACTOR)."""
        return max(STOP_MIN, int(STOP_FACTOR * self.mean_list))

    def keys(self) -> set[int]:
        if self._key_set is None:
            self._key_set = set(np.asarray(self.ref_keys).tolist())
        return self._key_set

    # -- search -----------------------------------------------------------------------------
    def lookups(self, desc: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(descriptor, word, list start, list length) of every list a vote reads for these
        descriptors: their near words (`query_words`), stop words left out."""
        q_idx, w = query_words(self.vocabulary, desc)
        lo = np.asarray(self.offsets[w], dtype=np.int64)
        lengths = np.asarray(self.offsets[w + 1], dtype=np.int64) - lo
        useful = lengths <= self.stop_length
        return q_idx[useful], w[useful], lo[useful], lengths[useful]

    def _hits(self, query: LocalFeatures) -> Hits:
        """Every agreeing posting of the query's lookups, with per-lookup sums (`Hits`)."""
        desc = np.ascontiguousarray(query.descriptors)
        q_idx, w, lo, lengths = self.lookups(desc)
        # in the order the lists lie in memory: the scan then walks the postings forwards
        # (neighbouring lookups often share pages), not jumping back and forth
        order = np.argsort(lo, kind="stable")
        q_idx, w, lo, lengths = q_idx[order], w[order], lo[order], lengths[order]
        if int(lengths.sum()) == 0:
            empty = np.zeros(0, np.int64)
            return Hits(q_idx, w, empty, empty, empty, np.zeros(q_idx.shape, np.int64),
                        np.zeros(q_idx.shape, np.float64))
        # the embedding depends on the word: one per (descriptor, word looked up)
        query_he = self.vocabulary.embed(desc[q_idx], w)
        bits, starts = self.tables_of(w, lengths)
        return Hits(q_idx, w, *_scan(
            lo, lengths, query_he, bits, starts, np.asarray(self.buckets),
            np.asarray(self.he), np.asarray(self.postings), distance_limits(lengths)))

    def probe(self, query: LocalFeatures) -> bool:
        """Whether a region's strongest descriptors (`query`) point at some reference
        clearly enough to search the region in full (`match.search.find_local`)."""
        return bool(self.vote(query, 1, self.probe_votes, PROBE_CHANCE_REFERENCES))

    def vote(self, query: LocalFeatures, top: int = TOP, min_votes: int = MIN_VOTES,
             chance_references: float | None = None) -> list[tuple[int, int]]:
        """[(ref_key, votes)] of the references whose votes clearly exceed chance.

        A vote weighs more the closer the embedded bits agree (soft Hamming embedding) and
        less the more references the same query descriptor hits, relative to the query's
        typical descriptor (burstiness).

        Nearly every agreeing posting of a picture that is not archived is chance, and only
        the few of references with `min_votes` hits are looked at one by one: the rest are
        summed per lookup by the scan (`Hits.counts`, `Hits.sums`), never weighed singly.
        """
        if len(query) == 0 or self.references == 0 or len(self) == 0:
            return []
        h = self._hits(query)
        if h.rows.size == 0:
            return []
        # burstiness relative to the query's typical descriptor: a descriptor that hits far
        # more references than its siblings (a logo, a ticker, flat sky) counts less, but
        # the typical one keeps weight 1 however large the archive (its fan-out grows with
        # the archive; an absolute 1/sqrt(hits) made true votes fade as the archive grew)
        per_q = np.bincount(h.q_idx, weights=h.counts, minlength=len(query))
        typical = max(1.0, float(np.median(per_q[per_q > 0])))
        burst = 1.0 / np.sqrt(np.maximum(1.0, per_q / typical))
        near = rows_with_votes(h.rows, min_votes, self.references)
        # the references with enough votes count again, one vote per word they share with
        # the query: several query descriptors on one texture, or a reference with several
        # keypoints on one frequent word, agree with each other and are one piece of evidence
        sel = np.flatnonzero(near)
        if sel.size == 0:
            return []
        lookup = h.lookup[sel]
        rows = h.rows[sel]
        weight = _HE_WEIGHT[h.dist[sel]] * burst[h.q_idx[lookup]]
        key = rows * np.int64(self.vocabulary.words) + h.words[lookup]
        order = np.lexsort((-weight, key))
        first = np.ones(order.size, bool)
        first[1:] = key[order[1:]] != key[order[:-1]]
        best = order[first]
        uniq, inverse = np.unique(rows[best], return_inverse=True)
        votes = np.bincount(inverse)
        weighted = np.bincount(inverse, weights=weight[best])
        keep = votes >= min_votes
        uniq, votes, weighted = uniq[keep], votes[keep], weighted[keep]
        if uniq.size == 0:
            return []
        # chance: the votes land on references in proportion to their postings
        share = np.asarray(self.ref_counts[uniq], np.float64) / max(1, len(self))
        expected = float(np.dot(burst[h.q_idx], h.sums)) * share
        ok = weighted >= CHANCE_FACTOR * expected + MIN_WEIGHT
        chance = CHANCE_REFERENCES if chance_references is None else chance_references
        if math.isfinite(chance):
            tail = poisson_log_tail(votes, h.rows.size * share)
            ok &= math.log(self.references) + tail <= math.log(chance)
        if not ok.any():
            return []
        cand = np.flatnonzero(ok)
        order = cand[np.argsort(-weighted[cand], kind="stable")][:top]
        return [(int(self.ref_keys[uniq[i]]), int(votes[i])) for i in order]

    def warm(self) -> None:
        """Compile the posting scan for this index's arrays (memory-mapped ones are read-only,
        a type of their own) now, at a service's or batch worker's start-up, rather than on
        the first query that reaches it."""
        none = np.zeros(0, np.int64)
        _scan(none, none, np.zeros(0, np.uint16), none, none, np.asarray(self.buckets),
              np.asarray(self.he), np.asarray(self.postings), HE_MAX_DISTANCE)
        rows_with_votes(none, MIN_VOTES, self.references)

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


#: log k! for the vote counts a query can give; a larger count is clamped, which overstates
#: its chance (the tail only shrinks with k), never understates it
_LOG_FACTORIAL = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, 4096)))])


def poisson_log_tail(k: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """log P(X >= k) for X ~ Poisson(lam), elementwise (k >= 1), from its first term and the
    geometric bound on the rest (tight where chance is small, which is where it matters;
    0 where lam is not below k + 1)."""
    k = np.minimum(np.asarray(k, np.int64), _LOG_FACTORIAL.size - 1)
    lam = np.maximum(np.asarray(lam, np.float64), 1e-300)
    ratio = lam / (k + 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = k * np.log(lam) - lam - _LOG_FACTORIAL[k]
        out = first - np.log1p(-np.minimum(ratio, 1.0))
    return np.where(ratio < 1.0, np.minimum(out, 0.0), 0.0)


def query_words(vocabulary: Vocabulary, desc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(descriptor, word) pairs a query looks up: each descriptor's QUERY_PER_HALF nearest
    centroids per half, the words within WORD_SLACK bits of its nearest one."""
    words, dist = vocabulary.assign(desc, QUERY_PER_HALF)
    keep = dist <= dist[:, :1] + WORD_SLACK
    return np.nonzero(keep)[0], words[keep]


class Hits(NamedTuple):
    """What one vote's scan found. Per lookup (a query descriptor and one of its words):
    `q_idx` the descriptor, `words` the word, `counts` its agreeing postings and `sums`
    their embedding weights (`_HE_WEIGHT`) summed; per agreeing posting: `lookup`, the
    reference `rows` and the embedding distance `dist`."""

    q_idx: np.ndarray
    words: np.ndarray
    lookup: np.ndarray
    rows: np.ndarray
    dist: np.ndarray
    counts: np.ndarray
    sums: np.ndarray


def scan_postings(lo: np.ndarray, lengths: np.ndarray, query_he: np.ndarray,
                  bits: np.ndarray, table_start: np.ndarray, buckets: np.ndarray,
                  he: np.ndarray, postings: np.ndarray, max_distance: int | np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lookup number, reference row, embedding distance) of every posting in the lists
    looked up (`lo`, `lengths`; bucketed by `bits`, `table_start` into `buckets`) whose
    embedding is within `max_distance` bits (one for all lookups, or one per lookup) of that
    lookup's `query_he`.

    Why compiled: at a million references one query walks millions of postings, and each
    numpy pass over them (positions, owners, embeddings, distances, filter) allocates and
    reads them again; one fused loop reads each posting once and keeps only the few percent
    that agree, and skips the buckets that cannot agree.
    """
    return _scan(lo, lengths, query_he, bits, table_start, buckets, he, postings,
                 max_distance)[:3]


def _scan(lo: np.ndarray, lengths: np.ndarray, query_he: np.ndarray, bits: np.ndarray,
          table_start: np.ndarray, buckets: np.ndarray, he: np.ndarray, postings: np.ndarray,
          max_distance: int | np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`scan_postings`, and per lookup the count and summed embedding weight of its hits
    (the vote's chance figures, summed while the hits are found instead of in more passes
    over them)."""
    total = int(lengths.sum())
    capacity = min(total, total // 8 + 1024)  # a few percent agree; rescanned if not
    if np.ndim(max_distance) == 0:
        limit = np.full(np.shape(lo), int(max_distance), np.int64)
    else:
        limit = np.array(max_distance, np.int64)  # a writable copy: one compiled type
    widest = int(limit.max()) if limit.size else 0
    while True:
        out_q = np.empty(capacity, np.int64)
        out_row = np.empty(capacity, np.int64)
        out_d = np.empty(capacity, np.int64)
        counts = np.zeros(limit.shape, np.int64)
        sums = np.zeros(limit.shape, np.float64)
        n = _compiled_scan()(
            np.ascontiguousarray(lo, np.int64), np.ascontiguousarray(lengths, np.int64),
            np.ascontiguousarray(query_he, np.uint16), np.ascontiguousarray(bits, np.int64),
            np.ascontiguousarray(table_start, np.int64), buckets, he, postings,
            limit, _POPCOUNT16, _near_masks(widest), _HE_WEIGHT, out_q, out_row, out_d,
            counts, sums)
        if n >= 0:
            return out_q[:n], out_row[:n], out_d[:n], counts, sums
        capacity = total


def _scan_py(lo: Any, lengths: Any, query_he: Any, bits: Any, table_start: Any, buckets: Any,
             he: Any, postings: Any, limit: Any, popcount: Any, masks: Any, weights: Any,
             out_q: Any, out_row: Any, out_d: Any, counts: Any, sums: Any) -> int:
    n = 0
    cap = out_q.shape[0]
    for k in range(lo.shape[0]):
        h = np.int64(query_he[k])
        max_distance = limit[k]
        start = lo[k]
        b = bits[k]  # 0: a short list, one range read whole (the mask loop runs once)
        shift = 16 - b
        low = h & ((1 << shift) - 1)
        prefix = h >> shift
        t = table_start[k]
        for mi in range(masks.shape[0]):
            m = masks[mi]
            if m >= (1 << b):
                break  # masks ascend: the rest do not fit in b bits
            if popcount[m] > max_distance:
                continue  # this lookup allows fewer bits than the widest one
            p = prefix ^ m
            if b == 0:
                s, e = start, start + lengths[k]
            else:
                s = start + np.int64(buckets[t + p])
                e = start + np.int64(buckets[t + p + 1])
            exact = popcount[m] == max_distance
            target = (p << shift) | low
            if exact:
                # the prefix used the whole allowance: only an exact tail agrees, and the
                # range is sorted, so bisect to it and read only its run
                z = e
                while s < z:
                    mid = (s + z) >> 1
                    if np.int64(he[mid]) < target:
                        s = mid + 1
                    else:
                        z = mid
            for i in range(s, e):
                value = np.int64(he[i])
                if exact and value != target:
                    break
                d = popcount[value ^ h]
                if d <= max_distance:
                    if n == cap:
                        return -1
                    out_q[n] = k
                    out_row[n] = postings[i]
                    out_d[n] = d
                    n += 1
                    counts[k] += 1
                    sums[k] += weights[d]
    return n


#: share of random 16-bit embeddings within d bits of a given one
_CHANCE_SHARE = np.cumsum([math.comb(16, d) for d in range(17)]) / 65536.0
#: the soft embedding weight of each distance a vote can have
_HE_WEIGHT = np.exp(-(np.arange(17) / HE_SIGMA) ** 2)
#: bits set in every 16-bit value (a 64 KB table stays in cache; faster than bit tricks)
_POPCOUNT16 = np.bitwise_count(np.arange(1 << 16, dtype=np.uint16)).astype(np.uint8)


@lru_cache(maxsize=4)
def _near_masks(max_distance: int) -> np.ndarray:
    """Every 16-bit value with at most `max_distance` bits set, ascending."""
    return np.flatnonzero(_POPCOUNT16 <= max_distance).astype(np.int64)


#: per thread: one saturating vote counter per reference, all zero between calls
_COUNTERS = threading.local()


def rows_with_votes(rows: np.ndarray, min_votes: int, references: int) -> np.ndarray:
    """Mask of the hits whose reference row has at least `min_votes` hits.

    Why not np.bincount: it allocates and zeroes a counter per reference on every vote
    (8 bytes each, 80 MB at ten million references) to count a few thousand hits; this
    counts in a per-thread byte array and clears only the entries it touched.
    """
    if min_votes > 255:  # beyond what a byte counts (never asked for by the vote)
        return np.asarray(np.bincount(rows, minlength=references)[rows] >= min_votes)
    counters = getattr(_COUNTERS, "array", None)
    if counters is None or counters.shape[0] < references:
        counters = _COUNTERS.array = np.zeros(references, np.uint8)
    out = np.empty(rows.shape[0], np.bool_)
    _compiled_votes()(np.ascontiguousarray(rows, np.int64), int(min_votes), counters, out)
    return out


def _votes_py(rows: Any, min_votes: int, counters: Any, out: Any) -> None:
    for i in range(rows.shape[0]):
        r = rows[i]
        if counters[r] < 255:
            counters[r] += 1
    for i in range(rows.shape[0]):
        out[i] = counters[rows[i]] >= min_votes
    for i in range(rows.shape[0]):
        counters[rows[i]] = 0


def distance_limits(lengths: np.ndarray) -> np.ndarray:
    """The embedding distance each lookup allows, by its list's length (see
    HE_HIT_BUDGET)."""
    lengths = np.asarray(lengths, np.int64)
    limits = np.full(lengths.shape, HE_MAX_DISTANCE, np.int64)
    for d in range(HE_MAX_DISTANCE, HE_MIN_DISTANCE, -1):
        over = (limits == d) & (lengths * _CHANCE_SHARE[d] > HE_HIT_BUDGET)
        limits[over] = d - 1
    return limits


def bucket_bits(lengths: np.ndarray) -> np.ndarray:
    """Prefix bits of each list's buckets (0: scanned whole), from its length alone, so the
    tables need no index of their own (see BUCKET_TARGET)."""
    lengths = np.asarray(lengths, np.int64)
    bits = np.zeros(lengths.shape, np.int64)
    for b in range(BUCKET_MAX_BITS, BUCKET_MIN_BITS - 1, -1):
        bits[(bits == 0) & (lengths >= BUCKET_TARGET << b)] = b
    return bits


def _table_starts(bits: np.ndarray) -> np.ndarray:
    sizes = np.where(bits > 0, (np.int64(1) << bits.astype(np.int64)) + 1, 0)
    starts = np.zeros(bits.shape[0] + 1, np.int64)
    np.cumsum(sizes, out=starts[1:])
    return starts


def finish_lists(offsets: np.ndarray, postings: np.ndarray, he: np.ndarray) -> np.ndarray:
    """Sort every list by embedding (in place) and return the bucket tables of the long
    ones: per list, the offset of the first posting of each prefix, and its length."""
    offsets = np.asarray(offsets, np.int64)
    bits = bucket_bits(np.diff(offsets))
    starts = _table_starts(bits)
    buckets = np.zeros(int(starts[-1]), np.uint32)
    _compiled_finish()(offsets, postings, he, bits, starts, buckets)
    return buckets


def _finish_py(offsets: Any, postings: Any, he: Any, bits: Any, starts: Any,
               buckets: Any) -> None:
    for w in range(offsets.shape[0] - 1):
        s = offsets[w]
        e = offsets[w + 1]
        if e - s > 1:
            order = np.argsort(he[s:e], kind="mergesort")  # stable: rows stay ascending
            he[s:e] = he[s:e][order]
            postings[s:e] = postings[s:e][order]
        b = bits[w]
        if b == 0:
            continue
        t = starts[w]
        shift = 16 - b
        j = s
        for p in range(1 << b):
            while j < e and (np.int64(he[j]) >> shift) < p:
                j += 1
            buckets[t + p] = j - s
        buckets[t + (1 << b)] = e - s


@lru_cache(maxsize=1)
def _compiled_scan() -> Callable[..., int]:
    """`_scan_py` compiled on first use (importing numba and compiling take about a second,
    which a CLI call that never searches a large archive should not pay)."""
    import numba

    # nogil: threads of a service or batch scan walk postings in parallel
    return numba.njit(nogil=True)(_scan_py)  # type: ignore[no-any-return]


@lru_cache(maxsize=1)
def _compiled_votes() -> Callable[..., None]:
    import numba

    return numba.njit(nogil=True)(_votes_py)  # type: ignore[no-any-return]


@lru_cache(maxsize=1)
def _compiled_finish() -> Callable[..., None]:
    import numba

    return numba.njit(nogil=True)(_finish_py)  # type: ignore[no-any-return]


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

    def warm(self) -> None:
        self.base.warm()

    def __len__(self) -> int:
        return len(self.base) + len(self.delta)

    @property
    def nbytes(self) -> int:
        return int(self.base.nbytes + self.delta.nbytes)

    def vote(self, query: LocalFeatures, top: int = TOP, min_votes: int = MIN_VOTES
             ) -> list[tuple[int, int]]:
        """The base's best and the delta's best, each up to `top`, base first.

        Their vote counts are not comparable: the delta's are exact nearest neighbours among
        a few references (a handful of new references take every query descriptor's nearest
        neighbour and so many votes), the base's are weighted word votes. Cutting the merged
        list at `top` let a small delta crowd every base candidate out, so an old reference
        was not verified at all until the next `archive index`."""
        found = self._base_vote(query, top, min_votes, None)
        if len(self.delta):
            found += self.delta.vote(query, top)
        return found

    def probe(self, query: LocalFeatures) -> bool:
        """`CompactFeatureIndex.probe` over the base (its stale references left out), or
        any candidate of the delta."""
        if self._base_vote(query, 1, self.probe_votes, PROBE_CHANCE_REFERENCES):
            return True
        return bool(len(self.delta) and self.delta.vote(query, TOP))

    def _base_vote(self, query: LocalFeatures, top: int, min_votes: int,
                   chance_references: float | None) -> list[tuple[int, int]]:
        """The base's best `top` that are not stale (it is asked for more, so stale ones
        do not crowd the rest out)."""
        return [(k, v) for k, v in self.base.vote(query, top + min(len(self.stale), 16),
                                                  min_votes, chance_references)
                if k not in self.stale][:top]

    def verify(self, query: LocalFeatures, ref_key: int, mirrored: bool = False
               ) -> GeometricMatch | None:
        if ref_key in self.delta.by_key:
            return self.delta.verify(query, ref_key, mirrored)  # type: ignore[no-any-return]
        if ref_key in self.stale:
            return None
        return self.base.verify(query, ref_key, mirrored)
