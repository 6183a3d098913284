"""Which local-feature index an archive uses, and how the compact one is cached.

Small archives keep every descriptor in memory (`FeatureIndex`: exact nearest-neighbour
votes, a few KB per reference, nothing to build ahead). From `COMPACT_MIN_REFS` references
on, the compact inverted file (`signals.compact`) takes over: about 1 KB per reference,
built ahead of queries (`imgverify archive index`, or at the end of an ingest) and cached
beside the archive like the hash index, keyed by the archive's identity and state so that
a cache never answers for another archive or another state of this one.

Between builds, references added since the cached build are searched exactly in a small
in-memory delta (`LayeredLocalIndex`); references removed since are not verified (their
stored features are gone), so a stale cache costs recall on the newest references at
worst, never a wrong attribution.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from imgverify.signals.compact import (
    COMPACT_FORMAT,
    MIN_VOTES,
    TOP,
    CompactFeatureIndex,
    Loader,
)
from imgverify.signals.vocabulary import default_vocabulary
from imgverify.store.cache import (
    MANIFEST,
    CacheKey,
    generation_order,
    open_cache,
    publish_cache,
)

#: From this many references with local features, the compact index is used.
COMPACT_MIN_REFS = 5_000
LOCAL_KIND = "local"


def cache_format() -> int:
    """The compact cache's format: the array layout and the vocabulary it was built with."""
    return COMPACT_FORMAT * 1000 + default_vocabulary().version


def build_compact(items: Iterable[tuple[int, np.ndarray]], loader: Loader,
                  progress: Callable[[int], None] | None = None) -> CompactFeatureIndex:
    return CompactFeatureIndex.build(items, loader, progress=progress)


#: Files of the compact cache over this size are checked by sampled checksum on open (size
#: and spread blocks), not read whole: damage to them can lose or add candidates, and every
#: candidate is verified against the reference's features read from the store, so it costs
#: recall, never a wrong attribution; a full read would cost a one-off desk check the whole
#: index (about 10 GB at ten million references) though a query touches a few MB of it.
SAMPLED_CHECK_OVER = 64 << 20


def publish_compact(root: Path, key: CacheKey, index: CompactFeatureIndex) -> Path | None:
    return publish_cache(root, LOCAL_KIND, cache_format(), key, index.save,
                         sample_over=SAMPLED_CHECK_OVER)


def open_compact(root: Path, key: CacheKey, loader: Loader) -> CompactFeatureIndex | None:
    found = open_cache(root, LOCAL_KIND, cache_format(), key, sampled_ok=True)
    if found is None:
        return None
    return CompactFeatureIndex.load(found[0], found[1], loader)


def latest_compact(root: Path, archive_id: str, hash_pipeline: int, loader: Loader
                   ) -> tuple[CompactFeatureIndex, CacheKey] | None:
    """The newest whole compact cache of this archive, whatever state it was built at, with
    the key it was built for. Usually there is one (publishing prunes older ones), but a
    writer on an older state that finished late leaves its own beside a newer one; the
    newest generation is tried first (the references changed since it are the fewest)."""
    try:
        entries = list(root.glob(f"{LOCAL_KIND}-f{cache_format()}-*"))
    except OSError:
        return None
    keys = []
    for folder in entries:
        try:
            recorded = json.loads((folder / MANIFEST).read_text())["key"]
            key = CacheKey(**recorded)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if key.archive_id != archive_id or key.hash_pipeline != hash_pipeline:
            continue  # another archive's cache (a copied folder): never read
        keys.append(key)
    keys.sort(key=lambda k: generation_order(k.generation), reverse=True)
    for key in keys:
        index = open_compact(root, key, loader)
        if index is not None:
            return index, key
    return None


class PendingLocalIndex:
    """Stands in for the compact index of a large archive that has none built for its
    current state or any earlier one (never indexed, copied without its cache, or a cache
    format older than this version's): it finds nothing, and says so (`pending`).

    Why not build it on the query: at a million references that takes minutes, at ten
    million about twenty, which no one checking one picture should wait for unwarned. It
    is built by `imgverify archive index` (or an ingest), or by `checker.warm_up` before a
    service or a batch scan starts; until then the check reports that crops, screenshots
    and collages were not searched.
    """

    pending = True
    nbytes = 0

    def __len__(self) -> int:
        return 0

    def vote(self, query: Any, top: int = TOP, min_votes: int = MIN_VOTES
             ) -> list[tuple[int, int]]:
        return []  # the same call as the compact index it stands in for

    def probe(self, query: Any) -> bool:
        return False

    def verify(self, query: Any, ref_key: int, mirrored: bool = False) -> None:
        return None


def stats(index: Any) -> dict[str, Any]:
    """What `archive index` reports about a built local index."""
    refs = getattr(index, "references", None)
    out: dict[str, Any] = {"kind": type(index).__name__, "bytes": int(index.nbytes)}
    if isinstance(refs, int):
        out["references"] = refs
        out["postings"] = len(index)
        out["bytes_per_reference"] = round(index.nbytes / max(1, refs), 1)
    return out
