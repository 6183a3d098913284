"""What the checker, ingest, reports and the service need from an archive, and nothing more.

Two backends implement it: the embedded SQLite file (`archive.Archive`, the default that
needs nothing) and a shared PostgreSQL database (`store.postgres.PostgresArchive`). Nothing
here names a row type or SQL, so a third backend only has to answer these calls.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from imgverify.media.load import Limits
    from imgverify.signals.features import LocalFeatures, LocalIndex
    from imgverify.signals.hashing import HashSet
    from imgverify.store.index import Candidate
    from imgverify.store.sqlite import (
        HashOnlyReference,
        IngestReport,
        PreparedReference,
        Reference,
        RehashReport,
    )


class HashSearch(Protocol):
    """The global-hash index as the matcher uses it (`HashIndex`, `LayeredIndex`)."""

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    def search(self, query_variants: list[int], pdq_radius: int, limit: int = 50,
               path: str = "auto") -> list[Candidate]: ...

    def distances(self, row: int, query: HashSet) -> dict[str, int]: ...


@runtime_checkable
class ArchiveStore(Protocol):
    """A reference archive: dated images with context, hashes, features and thumbnails."""

    backend: str
    readonly: bool

    @property
    def location(self) -> str:
        """Where it is, fit to print (no password)."""
        ...

    # identity and state
    def archive_id(self) -> str | None: ...
    def generation(self) -> str: ...
    def hash_pipeline(self) -> int: ...
    def __len__(self) -> int: ...

    # references
    def references(self, keys: Iterable[int]) -> dict[int, Reference]: ...
    def get(self, reference_id: str) -> Reference | None: ...
    def find_sha256(self, sha256: str) -> Reference | None: ...
    def iter_references(self, limit: int | None = None,
                        offset: int = 0) -> Iterator[Reference]: ...
    def thumbnail(self, key: int) -> bytes | None: ...
    def hashes_of(self, key: int) -> list[tuple[str, HashSet]]: ...

    # derived indexes
    def index(self) -> HashSearch: ...
    def feature_index(self) -> LocalIndex: ...
    def features_of(self, keys: Iterable[int]) -> dict[int, LocalFeatures]: ...
    def build_local_index(self, progress: Callable[[int], None] | None = None
                          ) -> dict[str, Any]: ...

    # writing
    def write_batch(self, batch: list[PreparedReference]) -> tuple[int, int]: ...
    def write_hashes(self, batch: list[HashOnlyReference]) -> tuple[int, int, int]: ...
    def remove(self, reference_ids: Iterable[str]) -> int: ...
    def ingest(self, manifest: str | os.PathLike[str], batch_size: int = 100,
               limits: Limits | None = None, workers: int = 1,
               progress: Any = None) -> IngestReport: ...
    def rehash(self, limits: Limits | None = None,
               on_progress: Callable[[int, int], None] | None = None,
               batch_size: int = 200) -> RehashReport: ...

    # administration
    def summary(self) -> dict[str, Any]:
        """Identity, backend, size, date range, generation: what a report was checked
        against. Cheap: no index is built."""
        ...

    def stats(self) -> dict[str, Any]: ...
    def export(self) -> Iterator[dict[str, Any]]: ...
    def integrity_check(self) -> list[str]: ...
    def close(self) -> None: ...


__all__ = ["ArchiveStore", "HashSearch"]
