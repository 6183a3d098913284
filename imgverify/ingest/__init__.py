"""Ingest: images and their context in, prepared references out, written through the store.

Decoding, hashing, local features and thumbnails happen here (in worker processes when asked);
the store only writes what it is given, one transaction per batch. Importers of published
sources (Commons, feeds, export folders) build on the same path.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from typing import Any

from PIL import Image

from imgverify.errors import ImgVerifyError
from imgverify.media.evidence import read_exif
from imgverify.media.load import Limits, LoadedImage, load
from imgverify.signals.features import REF_FEATURES, extract
from imgverify.store.local_index import COMPACT_MIN_REFS
from imgverify.store.manifest import ManifestRow, RowError, read_manifest
from imgverify.store.protocol import ArchiveStore
from imgverify.store.sqlite import (
    THUMBNAIL_SIDE,
    IngestReport,
    PreparedReference,
    reference_hashes,
)
from imgverify.threads import native_threads
from imgverify.workers import one_native_thread, ordered_map, quiet_worker


def make_thumbnail(rgb: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    thumb = rgb.copy()
    thumb.thumbnail((side, side))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=75, optimize=True)
    return buf.getvalue()


def prepare_reference(row: ManifestRow, limits: Limits | None = None) -> PreparedReference:
    """Load, hash and thumbnail one manifest row (raises InputError on a bad image)."""
    with native_threads(1):
        return _prepare_reference(row, limits)


def _prepare_reference(row: ManifestRow, limits: Limits | None) -> PreparedReference:
    return _prepared(load(row.image, limits), row)


def prepare_reference_bytes(data: bytes, row: ManifestRow, limits: Limits | None = None
                            ) -> PreparedReference:
    """`prepare_reference` for an image that arrived as bytes (an HTTP upload) rather than as
    a path or URL: `row.image` is only recorded as the reference's image_uri (a label such as
    ``upload:photo.jpg``), never opened. Raises InputError on a bad image."""
    with native_threads(1):
        return _prepared(load(bytes(data), limits), row)


def _prepared(loaded: LoadedImage, row: ManifestRow) -> PreparedReference:
    return PreparedReference(
        sha256=loaded.sha256, image_uri=row.image, context=dict(row.context),
        width=loaded.original_size[0], height=loaded.original_size[1], format=loaded.format,
        thumbnail=make_thumbnail(loaded.image), exif=read_exif(loaded.data).to_dict(),
        hashes=reference_hashes(loaded.image, loaded.scale),
        features=extract(loaded.image, REF_FEATURES), line=row.line,
    )


def prepare_row_safely(row: ManifestRow, limits: Limits | None = None
                       ) -> PreparedReference | RowError:
    try:
        return prepare_reference(row, limits)
    except ImgVerifyError as exc:
        return RowError(row.line, exc.message, row.image)
    except Exception as exc:  # noqa: BLE001 - one bad row never stops an ingest
        return RowError(row.line, f"unexpected {type(exc).__name__}: {exc}", row.image)


_ingest_limits: Limits | None = None


def _init_ingest(limits: Limits | None, own_process: bool = False) -> None:
    global _ingest_limits
    if own_process:
        one_native_thread()
        quiet_worker()
    _ingest_limits = limits


def _prepare(item: ManifestRow | RowError) -> Any:
    if isinstance(item, RowError):
        return item
    prepared = prepare_row_safely(item, _ingest_limits)
    if isinstance(prepared, RowError) and item.shown and item.shown != item.image:
        # name the image as the manifest's user would, not by its resolved symlink target
        prepared.message = prepared.message.replace(item.image, item.shown)
        prepared.image = item.shown
    return prepared


def prepare_references(rows: Iterable[ManifestRow | RowError], limits: Limits | None,
                       workers: int = 1) -> Iterator[Any]:
    """Decode and hash manifest rows in parallel; yields PreparedReference or RowError."""
    return ordered_map(_prepare, rows, workers, _init_ingest, (limits, workers > 1))


def ingest_manifest(archive: ArchiveStore, manifest: str | os.PathLike[str],
                    batch_size: int = 100, limits: Limits | None = None, workers: int = 1,
                    progress: Any = None, build_index: bool = True) -> IngestReport:
    """Add every good row of a manifest; bad rows are reported with their line numbers.

    Each batch is one transaction of the store, so a crash loses nothing committed and
    re-running the same manifest completes it (references are keyed by sha256).
    With `build_index`, a large archive's local-feature index is rebuilt at the end, so the
    next query does not pay for it (`ArchiveStore.build_local_index`).
    """
    check_writable = getattr(archive, "_require_writable", None)
    if check_writable is not None:
        check_writable()
    check_hashes = getattr(archive, "_require_current_hashes", None)
    if check_hashes is not None:
        check_hashes()
    report = IngestReport()
    batch: list[PreparedReference] = []
    for item in prepare_references(read_manifest(manifest), limits, workers):
        if progress is not None:
            progress(item)
        if isinstance(item, RowError):
            report.errors.append(item)
            continue
        batch.append(item)
        if len(batch) >= batch_size:
            added, updated = archive.write_batch(batch)
            report.added += added
            report.updated += updated
            batch = []
    if batch:
        added, updated = archive.write_batch(batch)
        report.added += added
        report.updated += updated
    large = len(archive) >= getattr(archive, "compact_min_refs", COMPACT_MIN_REFS)
    if build_index and (report.added or report.updated) and large:
        archive.build_local_index()
    return report


__all__ = ["ingest_manifest", "prepare_reference", "prepare_reference_bytes",
           "prepare_references", "prepare_row_safely",
           "make_thumbnail"]
