"""Storage: the archive protocol and its backends (SQLite embedded, PostgreSQL shared)."""

from __future__ import annotations

from imgverify.store.protocol import ArchiveStore, HashSearch

__all__ = ["ArchiveStore", "HashSearch"]
