"""An index that follows a changing archive without being rebuilt: base + delta + tombstones.

A matcher serving queries from a shared archive must see other writers' additions and
removals within moments, and must not stop answering while it catches up. Rebuilding the
multi-index over millions of rows for every batch would do both wrong. So the index is
layered: the large `base` (built once), a small `delta` of rows added or changed since
(a linear scan: no multi-index to rebuild), and the set of reference keys whose base rows
are no longer current (removed or re-hashed). A refresh replaces only the delta and the
tombstones; when the delta outgrows a linear scan, `compacted()` folds everything into a
new base, which the owner builds off the query path and swaps in whole.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from imgverify.signals.hashing import HashSet
from imgverify.store.index import LINEAR_MAX, Candidate, HashIndex


def _concat(layers: list[tuple[HashIndex, frozenset[int]]]) -> HashIndex:
    """One index of the rows of each layer whose reference key is not in that layer's drop."""
    keys, parts, pdq, ph, dh, wh = [], [], [], [], [], []
    for ix, drop in layers:
        if len(ix) == 0:
            continue
        ref_keys = np.asarray(ix.ref_keys).astype(np.int64)
        keep = (~np.isin(ref_keys, np.fromiter(drop, np.int64, len(drop))) if drop
                else np.ones(len(ref_keys), bool))
        keys.append(ref_keys[keep])
        names = np.array(ix.part_names, dtype=object)
        parts.extend(names[np.asarray(ix.part_codes)[keep]].tolist())
        pdq.append(np.asarray(ix.pdq)[keep])
        ph.append(np.asarray(ix.phash)[keep])
        dh.append(np.asarray(ix.dhash)[keep])
        wh.append(np.asarray(ix.whash)[keep])
    if not keys or sum(len(k) for k in keys) == 0:
        return HashIndex.empty()
    return HashIndex.from_arrays(np.concatenate(keys), parts, np.concatenate(pdq),
                                 np.concatenate(ph), np.concatenate(dh), np.concatenate(wh))


class LayeredIndex:
    """Answers like a `HashIndex` over (base minus tombstoned keys) plus delta; immutable."""

    def __init__(self, base: HashIndex, delta: HashIndex | None = None,
                 removed: Iterable[int] = (), base_keys: np.ndarray | None = None) -> None:
        self.base = base
        self.delta = delta if delta is not None else HashIndex.empty()
        self.removed = frozenset(int(k) for k in removed)
        self._offset = len(base)
        # sorted distinct keys of the base: only keys that have base rows need a tombstone
        self._base_keys = (base_keys if base_keys is not None
                           else np.unique(np.asarray(base.ref_keys).astype(np.int64)))

    def __len__(self) -> int:
        return len(self.base) + len(self.delta)

    @property
    def nbytes(self) -> int:
        return int(self.base.nbytes + self.delta.nbytes + 16 * len(self.removed))

    @property
    def needs_compaction(self) -> bool:
        """The delta no longer fits a linear scan, or tombstones hide a tenth of the base."""
        return len(self.delta) > LINEAR_MAX or len(self.removed) * 10 > max(1, len(self.base))

    def updated(self, changed: Iterable[int], rows: HashIndex) -> LayeredIndex:
        """A new index in which every key in `changed` has exactly the rows in `rows` (none if
        it was removed). The old index stays valid for queries already running on it."""
        gone = frozenset(int(k) for k in changed)
        delta = _concat([(self.delta, gone), (rows, frozenset())])
        probe = np.fromiter(gone, np.int64, len(gone))
        in_base = probe[np.isin(probe, self._base_keys, assume_unique=True)]
        return LayeredIndex(self.base, delta, self.removed | frozenset(in_base.tolist()),
                            self._base_keys)

    def compacted(self) -> LayeredIndex:
        """Everything folded into one base (the slow step, done off the query path)."""
        return LayeredIndex(_concat([(self.base, self.removed), (self.delta, frozenset())]))

    def search(self, query_variants: list[int], pdq_radius: int, limit: int = 50,
               path: str = "auto") -> list[Candidate]:
        found = []
        if len(self.base):
            for c in self.base.search(query_variants, pdq_radius,
                                      limit + min(len(self.removed), 10 * limit), path):
                if c.ref_key not in self.removed:
                    found.append(c)
        if len(self.delta):
            for c in self.delta.search(query_variants, pdq_radius, limit, path):
                c.row += self._offset
                found.append(c)
        found.sort(key=lambda c: (c.pdq_distance, c.row))
        return found[:limit]

    def distances(self, row: int, query: HashSet) -> dict[str, int]:
        if row >= self._offset:
            return self.delta.distances(row - self._offset, query)
        return self.base.distances(row, query)


__all__ = ["LayeredIndex"]
