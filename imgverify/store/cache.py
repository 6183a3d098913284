"""Caches derived from an archive, published as whole directories.

A cache that answers for the wrong archive turns into a wrong attribution: a hash row of one
archive read back as a reference key of another carries the other's event, date and credit.
So every cache is keyed by the archive's identity (a random id written at creation), its
generation counter and the random change token written with every change, plus the cache's
own format and the hash pipeline. Each cache is one directory, written under a temporary name
and renamed into place; its manifest records the key and every file's size and CRC-32, and
is checked before anything is read. Two processes saving at once each write their own
directory, and the rename lets exactly one of them publish; a truncated or damaged file fails
the check, and the cache is rebuilt and published in its place. (The local index's large files
carry a sampled checksum: see `publish_cache`.) Publishing removes the
archive's caches of older states, never a newer one that a faster process already wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
_CHUNK = 1 << 22
_ABANDONED_AFTER_S = 6 * 3600


@dataclass(frozen=True)
class CacheKey:
    """Everything a derived cache depends on; any difference means another cache."""

    archive_id: str
    generation: str
    change_token: str
    hash_pipeline: int

    def slug(self) -> str:
        return (f"{self.archive_id}-g{self.generation}-{self.change_token[:16]}"
                f"-p{self.hash_pipeline}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


#: a sampled checksum reads this many blocks of `_SAMPLE_BLOCK` bytes, evenly spread from the
#: first block to the last
_SAMPLE_BLOCKS = 256
_SAMPLE_BLOCK = 1 << 16


def _sampled_crc32(path: Path, blocks: int = _SAMPLE_BLOCKS, block: int = _SAMPLE_BLOCK
                   ) -> int:
    """CRC-32 of `blocks` blocks spread evenly over the file (its first and last included).

    Why: a full checksum of a ten-million-reference local index reads about 10 GB before a
    desk's first check can start, though a query touches a few MB of it (it is memory-mapped).
    Used only for caches whose damage cannot attribute (`publish_cache(sample_over=...)`).
    """
    size = path.stat().st_size
    crc = 0
    with path.open("rb") as fh:
        last = max(0, size - block)
        for i in range(blocks):
            fh.seek(last * i // max(1, blocks - 1))
            crc = zlib.crc32(fh.read(block), crc)
    return crc


def _file_entry(path: Path, sample_over: int | None) -> dict[str, Any]:
    size = path.stat().st_size
    if sample_over is not None and size > sample_over:
        return {"bytes": size, "sampled_crc32": _sampled_crc32(path),
                "sample": [_SAMPLE_BLOCKS, _SAMPLE_BLOCK]}
    return {"bytes": size, "crc32": _crc32(path)}


def _file_whole(path: Path, info: dict[str, Any], sampled_ok: bool) -> bool:
    if "crc32" in info:
        return _crc32(path) == int(info["crc32"])
    if not sampled_ok:
        return False  # a kind that attributes is never opened on a sampled check
    blocks, block = (int(v) for v in info["sample"])
    if blocks < 2 or block < 1:
        return False
    return _sampled_crc32(path, blocks, block) == int(info["sampled_crc32"])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def user_cache_dir() -> Path:
    """Where caches of archives without a file of their own (PostgreSQL) are kept:
    $IMGVERIFY_CACHE_DIR, else $XDG_CACHE_HOME/imgverify, else ~/.cache/imgverify."""
    explicit = os.environ.get("IMGVERIFY_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imgverify"


def cache_dir_name(kind: str, fmt: int, key: CacheKey) -> str:
    return f"{kind}-f{fmt}-{key.slug()}"


def open_cache(root: Path, kind: str, fmt: int, key: CacheKey, sampled_ok: bool = False
               ) -> tuple[Path, dict[str, Any]] | None:
    """The published cache directory for `key` and its manifest's `extra`, if it is whole.

    None when there is none, when its manifest names another key or format, or when any
    file's size or checksum differs from the manifest (truncated, damaged, tampered with).
    Sampled checksums (`publish_cache(sample_over=...)`) are accepted only with
    `sampled_ok`, from a caller whose cache cannot attribute.
    """
    folder = root / cache_dir_name(kind, fmt, key)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if (manifest.get("kind") != kind or manifest.get("format") != fmt
                or manifest.get("key") != key.to_dict()):
            return None
        files = manifest["files"]
        for name, info in files.items():
            path = folder / name
            if path.parent != folder or path.stat().st_size != int(info["bytes"]):
                return None
            if not _file_whole(path, info, sampled_ok):
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return folder, dict(manifest.get("extra") or {})


def publish_cache(root: Path, kind: str, fmt: int, key: CacheKey,
                  write: Callable[[Path], dict[str, Any] | None],
                  sample_over: int | None = None) -> Path | None:
    """Write a cache with `write(folder)` into a private folder, then rename it into place.

    Every file's size is recorded, and its CRC-32; files over `sample_over` bytes get a
    sampled one instead (`_sampled_crc32`: size and spread blocks checked on open). Only a
    cache whose damage can cost recall but never attribute a wrong reference may ask for it:
    the local index, whose every candidate is verified against the store's own features.

    Returns the published folder, or None when it could not be written (a cache we cannot
    write only costs time). Older caches of the same kind are removed afterwards; a process
    that has one of them memory-mapped keeps reading it (the files live on until unmapped).
    """
    final = root / cache_dir_name(kind, fmt, key)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", suffix=".tmp", dir=root))
    except OSError:
        return None
    try:
        extra = write(tmp)
        files = {}
        for path in sorted(tmp.iterdir()):
            if path.is_file():
                _fsync(path)
                files[path.name] = _file_entry(path, sample_over)
        manifest = {"kind": kind, "format": fmt, "key": key.to_dict(), "files": files,
                    "extra": extra or {}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _fsync(tmp / MANIFEST)
        try:
            os.rename(tmp, final)
        except OSError:
            if open_cache(root, kind, fmt, key, sampled_ok=sample_over is not None) is not None:
                # another process published the same key first: theirs is as good as ours
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            # a damaged cache under our name (truncated by a full disk, say) would otherwise
            # be rebuilt by every process that opens the archive, for as long as the archive
            # does not change: set it aside and publish ours in its place
            _discard(root, kind, final)
            os.rename(tmp, final)
    except (OSError, RuntimeError, ValueError):
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    _prune(root, kind, keep=final.name, key=key, fmt=fmt)
    return final


def _discard(root: Path, kind: str, folder: Path) -> None:
    """Move `folder` out of the published names first (so no reader opens it half-deleted),
    then delete it; another process discarding the same folder at once is not an error."""
    try:
        aside = Path(tempfile.mkdtemp(prefix=f".{kind}-", suffix=".tmp", dir=root))
    except OSError:
        return
    try:
        os.rename(folder, aside / "damaged")
    except OSError:
        pass  # gone already (another process discarded or pruned it): nothing to move
    shutil.rmtree(aside, ignore_errors=True)  # never left behind, moved into or not


def generation_order(generation: str) -> tuple[bool, int]:
    """Sort key of generations: by number ("g10" after "g9", which names would not give),
    any that is not a number first."""
    return generation.isdigit(), int(generation) if generation.isdigit() else 0


def _older(theirs: str, ours: str) -> bool:
    """Whether generation `theirs` precedes `ours` (anything that is not a number and
    differs counts as older, so it is replaced as before)."""
    if theirs.isdigit() and ours.isdigit():
        return generation_order(theirs) < generation_order(ours)
    return theirs != ours


def _their_key(folder: Path) -> dict[str, Any] | None:
    """The key in a published folder's manifest (None when it cannot be read)."""
    try:
        key = json.loads((folder / MANIFEST).read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return key if isinstance(key, dict) else None


def _ours(theirs: dict[str, Any] | None, key: CacheKey) -> bool:
    """Whether a cache with key `theirs` is this archive's (not unreadable, not another
    archive's in a copied folder: never ours to keep)."""
    return theirs is not None and theirs.get("archive_id") == key.archive_id


def _newer(theirs: dict[str, Any] | None, key: CacheKey) -> bool:
    """Whether a cache with key `theirs` is this archive's at a newer generation than `key`."""
    if theirs is None or not _ours(theirs, key):
        return False
    generation = str(theirs.get("generation"))
    return generation != key.generation and not _older(generation, key.generation)


def _format_of(name: str, kind: str) -> int | None:
    """The cache format in a published folder's name (`cache_dir_name`)."""
    digits = name[len(kind) + 2:].split("-", 1)[0]
    return int(digits) if name.startswith(f"{kind}-f") and digits.isdigit() else None


def _prune(root: Path, kind: str, keep: str, key: CacheKey, fmt: int) -> None:
    """Best effort: drop the caches of this kind that an older state of the archive (or an
    older format) left, and stale private folders.

    A cache of a newer generation is kept: a process still on an older state that publishes
    late must not delete what a newer one just wrote (two writers of different generations
    would otherwise delete each other's caches and leave none). So is this archive's cache
    in a newer format: an older imgverify sharing the archive's folder with a newer one
    must not make the newer rebuild its index on every run.
    """
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    now = time.time()
    for entry in entries:
        if entry.name == keep or not entry.is_dir():
            continue
        if entry.name.startswith(f"{kind}-f"):
            theirs = _their_key(entry)
            version = _format_of(entry.name, kind)
            if version is not None and version > fmt and _ours(theirs, key):
                continue
            if not _newer(theirs, key):
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(f".{kind}-") and entry.name.endswith(".tmp"):
            try:
                abandoned = now - entry.stat().st_mtime > _ABANDONED_AFTER_S
            except OSError:
                continue
            if abandoned:  # a writer that died mid-way; a live one finishes within this
                shutil.rmtree(entry, ignore_errors=True)


__all__ = ["CacheKey", "open_cache", "publish_cache", "cache_dir_name", "user_cache_dir",
           "generation_order"]
