"""One path for every importer: hash the image, link or keep it, store the sighting.

An item is either a *reference* (a dated record from a curated source such as Commons: it
becomes a reference, and its publication a sighting of it) or a *sighting* only (a post in a
Telegram export: linked to the reference it matches, else kept as an unverified record of its
own, dated by its publication, so that later copies still match it). Before anything new is
written, the image is matched against the archive, so earlier sightings and desk checks of the
same picture are reported: retroactive matching.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from imgverify.errors import ArchiveError, ImgVerifyError
from imgverify.ingest import make_thumbnail
from imgverify.match.search import QueryHashes, find
from imgverify.match.verdict import DEFAULT_THRESHOLDS, Thresholds, score_of, strength_of
from imgverify.media.evidence import read_exif
from imgverify.media.load import Limits, LoadedImage, load
from imgverify.signals.features import REF_FEATURES, extract
from imgverify.store.sightings import Sighting
from imgverify.store.sqlite import Archive, PreparedReference, reference_hashes

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x80-\x9f]")


def clean_text(value: str | None) -> str | None:
    """Text from an export as it will be shown: control characters (terminal escapes, NUL)
    removed; everything else kept verbatim, to be escaped by each renderer."""
    if value is None:
        return None
    return _CONTROL.sub("", value) or None


#: what an own record of a sighting says in the reference's `source` column
UNVERIFIED_SOURCE = "unverified sighting ({origin})"


@dataclass
class ImportItem:
    """One image to import with what its source says about it."""

    sighting: Sighting
    image: bytes | str | None  # the bytes, or a local path
    #: reference context (date, event, place, caption, source, source_url, credit, license,
    #: published) when the item is a reference; None for a sighting only
    context: dict[str, str | None] | None = None
    label: str = ""
    image_uri: str | None = None


@dataclass
class ImportReport:
    """What an import did; `errors` and `skipped` name each entry and why."""

    references_added: int = 0
    references_updated: int = 0
    sightings_added: int = 0
    linked: int = 0
    own_records: int = 0
    already_imported: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    #: earlier sightings or checks that a newly imported image matches
    retroactive: list[dict[str, Any]] = field(default_factory=list)
    network_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    http_requests: int = 0
    http_retries: int = 0

    @property
    def imported(self) -> int:
        return self.references_added + self.references_updated + self.sightings_added

    def to_dict(self) -> dict[str, Any]:
        return {
            "references_added": self.references_added,
            "references_updated": self.references_updated,
            "sightings_added": self.sightings_added, "linked_to_references": self.linked,
            "unverified_records": self.own_records, "already_imported": self.already_imported,
            "skipped": self.skipped, "errors": self.errors, "retroactive": self.retroactive,
            "http_requests": self.http_requests, "http_retries": self.http_retries,
            "network_seconds": round(self.network_seconds, 3),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


def prepare_loaded(loaded: LoadedImage, image_uri: str, context: dict[str, str | None],
                   query: QueryHashes | None = None) -> PreparedReference:
    """A reference from an already decoded image; with the `query` the image was just
    matched with, its full-frame and trimmed hashes are reused (the same parts and scale as
    `reference_hashes`), not computed twice."""
    hashes = [(name, hasher.hashset(0)) for name, _pic, hasher in query.parts
              if name in ("full", "trimmed")] if query is not None else \
        reference_hashes(loaded.image, loaded.scale)
    return PreparedReference(
        sha256=loaded.sha256, image_uri=image_uri, context=dict(context),
        width=loaded.original_size[0], height=loaded.original_size[1], format=loaded.format,
        thumbnail=make_thumbnail(loaded.image), exif=read_exif(loaded.data).to_dict(),
        hashes=hashes, features=extract(loaded.image, REF_FEATURES))


class Importer:
    """Writes items into one archive; `report` accumulates across calls."""

    def __init__(self, archive: Archive, limits: Limits | None = None,
                 thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        if not callable(getattr(archive, "add_sightings", None)):
            raise ArchiveError(f"{getattr(archive, 'path', archive)}: imports need a SQLite "
                               "archive (this storage backend does not keep sightings yet)")
        archive._require_writable()
        self.archive = archive
        self.limits = limits
        self.thresholds = thresholds
        self.report = ImportReport()
        self._started = time.perf_counter()
        #: references are matched before they are written only to report earlier sightings
        #: (retroactive matching): with none in the archive, that work is skipped
        self._unverified = archive.has_unverified_sightings()

    def finish(self) -> ImportReport:
        self.report.elapsed_seconds = time.perf_counter() - self._started
        return self.report

    def known(self, origin: str, source_key: str, source_sha1: str | None = None) -> bool:
        """Already imported (and, when a sha1 is given, with the same file): skip it."""
        found = self.archive.find_sighting(origin, source_key)
        if found is None or (source_sha1 and found.source_sha1 != source_sha1):
            return False
        self.report.already_imported += 1
        return True

    def skip(self, label: str, reason: str) -> None:
        self.report.skipped.append({"entry": label, "reason": reason})

    def error(self, label: str, reason: str) -> None:
        self.report.errors.append({"entry": label, "error": reason})

    def add(self, item: ImportItem) -> Sighting | None:
        """Import one item; a bad image becomes an error entry, never an exception."""
        label = item.label or item.sighting.source_key
        if item.image is None:
            self.error(label, "no image file found for this entry")
            return None
        try:
            loaded = load(item.image, self.limits)
        except ImgVerifyError as exc:
            self.error(label, exc.message)
            return None
        s = item.sighting
        s.sha256 = loaded.sha256
        s.text, s.account, s.url = clean_text(s.text), clean_text(s.account), clean_text(s.url)
        if item.context is not None:
            item.context = {k: clean_text(v) for k, v in item.context.items()}
        uri = item.image_uri or (item.image if isinstance(item.image, str) else s.media_url
                                 or "")
        query = QueryHashes(loaded.image, loaded.scale) \
            if item.context is None or self._unverified else None
        matched = self._match(loaded, query) if query is not None else []
        self._retroactive(matched, s, label)
        if item.context is not None:
            added, updated = self.archive.write_batch([prepare_loaded(loaded, uri, item.context,
                                                                      query)])
            self.report.references_added += added
            self.report.references_updated += updated
            ref = self.archive.find_sha256(loaded.sha256)
            s.ref_key = ref.key if ref else None
            s.own_record = False
        else:
            likely = [(k, sc) for k, sc in matched if sc is not None]
            if likely:
                s.ref_key, s.match_score = likely[0]
                s.own_record = False
                self.report.linked += 1
            elif s.seen_at:
                ctx: dict[str, str | None] = {
                    "date": s.seen_at[:10], "published": s.seen_at[:10],
                    "caption": s.text, "source": UNVERIFIED_SOURCE.format(origin=s.origin),
                    "source_url": s.url if s.url and s.url.startswith(("http://", "https://"))
                    else None, "credit": s.account}
                self.archive.write_batch([prepare_loaded(loaded, uri, ctx, query)])
                ref = self.archive.find_sha256(loaded.sha256)
                s.ref_key = ref.key if ref else None
                s.own_record = True
                self._unverified = True
                self.report.own_records += 1
            else:
                self.skip(label, "no publication date: kept as an undated sighting, not "
                          "matchable")
        self.report.sightings_added += self.archive.add_sightings([s])
        return s

    def _match(self, loaded: LoadedImage, query: QueryHashes
               ) -> list[tuple[int, float | None]]:
        """(reference key, score when a likely match else None), the identical file first."""
        out: list[tuple[int, float | None]] = []
        exact = self.archive.find_sha256(loaded.sha256)
        if exact is not None:
            out.append((exact.key, 1.0))
        if len(self.archive) == 0:
            return out
        for r in find(query, self.archive.index(), self.thresholds):
            strength = strength_of(r.combined, self.thresholds)
            if strength is None or (exact is not None and r.ref_key == exact.key):
                continue
            out.append((r.ref_key, score_of(r.combined) if strength == "likely" else None))
        return out

    def _retroactive(self, matched: list[tuple[int, float | None]], new: Sighting,
                     label: str) -> None:
        """Earlier sightings and desk checks of this picture, now matched by a new import."""
        keys = [k for k, score in matched if score is not None]
        if not keys:
            return
        refs = self.archive.references(keys)
        for key, sightings in self.archive.sightings_for(keys).items():
            for s in sightings:
                if s.origin == new.origin and s.source_key == new.source_key:
                    continue
                if not (s.own_record or s.origin == "check"):
                    continue
                ref = refs.get(key)
                self.report.retroactive.append({
                    "imported": label, "imported_url": new.url,
                    "matches_earlier": s.origin, "seen_at": s.seen_at, "url": s.url,
                    "account": s.account, "reference_id": ref.reference_id if ref else None,
                    "evidence": s.evidence})


def retroactive_since(archive: Archive, since: str, limits: Limits | None = None,
                      thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[dict[str, Any]]:
    """Earlier sightings and desk checks matched by references added at or after `since`
    (an ISO time, as in `added_at`): what `archive add` reports after a manifest.

    The new references are hashed again from their stored thumbnails (scaled to stand for
    the original, as `rehash` does), so this needs no access to the original files."""
    from imgverify.media.load import reduction_scale

    if not callable(getattr(archive, "has_unverified_sightings", None)) or \
            not archive.has_unverified_sightings():
        return []  # nothing earlier to find: skip re-hashing the new references
    new = [r for r in archive.iter_references() if (r.added_at or "") >= since]
    if not new:
        return []
    new_keys = {r.key for r in new}
    marked = {k for k, ss in archive.sightings_for(new_keys).items()
              if any(s.own_record for s in ss)}
    out: list[dict[str, Any]] = []
    index = archive.index()
    for ref in new:
        if ref.key in marked:
            continue  # an unverified record itself, not a new reference
        thumb = archive.thumbnail(ref.key)
        if thumb is None:
            continue
        try:
            image = load(thumb, limits).image
        except ImgVerifyError:
            continue
        scale = reduction_scale((ref.width or image.width, ref.height or image.height),
                                image.size)
        keys = [r.ref_key for r in find(QueryHashes(image, scale), index, thresholds)
                if r.ref_key != ref.key and strength_of(r.combined, thresholds) == "likely"]
        earlier = archive.references(keys)
        for key, sightings in archive.sightings_for(keys).items():
            for s in sightings:
                if s.own_record or s.origin == "check":
                    out.append({"imported": ref.reference_id, "imported_url": ref.source_url,
                                "matches_earlier": s.origin, "seen_at": s.seen_at,
                                "url": s.url, "account": s.account, "evidence": s.evidence,
                                "reference_id": earlier[key].reference_id
                                if key in earlier else None})
    return out


__all__ = ["ImportItem", "ImportReport", "Importer", "UNVERIFIED_SOURCE", "prepare_loaded",
           "retroactive_since"]
