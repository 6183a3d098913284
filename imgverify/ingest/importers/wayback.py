"""The Internet Archive's first capture of a page, as publication evidence.

For each URL we know an image from (a reference's source_url, a sighting's url), the CDX API
(``output=json``: a header row of field names, then one row per capture, oldest first) is
asked for the first successful capture. A capture is independent of whoever handed us the
export: "the page existed by then" is strong evidence. Each found capture becomes a
sighting (origin ``wayback``) of the same image, with the capture URL
``https://web.archive.org/web/TIMESTAMP/ORIGINAL``. Looked-up URLs are remembered, so a
re-run asks only about new ones.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from imgverify.ingest.importers.http import ImportHTTPError, PoliteClient
from imgverify.store.sightings import Sighting
from imgverify.store.sqlite import Archive

CDX_API = "https://web.archive.org/cdx/search/cdx"
WAYBACK_WEB = "https://web.archive.org/web"


@dataclass
class WaybackReport:
    looked_up: int = 0
    found: int = 0
    already_known: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"looked_up": self.looked_up, "captures_found": self.found,
                "already_known": self.already_known, "errors": self.errors}


def first_capture(client: PoliteClient, url: str, cdx_url: str = CDX_API
                  ) -> tuple[str, str] | None:
    """(ISO time, capture URL) of the earliest 200 capture of `url`, or None."""
    rows = client.get_json(cdx_url, {"url": url, "output": "json", "limit": "1",
                                     "fl": "timestamp,original,statuscode",
                                     "filter": "statuscode:200"})
    if not isinstance(rows, list) or len(rows) < 2 or not isinstance(rows[0], list):
        return None
    header = [str(h) for h in rows[0]]
    try:
        ti, oi = header.index("timestamp"), header.index("original")
    except ValueError:
        raise ImportHTTPError(f"{cdx_url} answered CDX rows without timestamp/original") \
            from None
    best = None
    for row in rows[1:]:
        if not isinstance(row, list) or len(row) <= max(ti, oi):
            continue
        ts = str(row[ti])
        if len(ts) < 8 or not ts.isdigit():
            continue
        if best is None or ts < best[0]:
            best = (ts, str(row[oi]))
    if best is None:
        return None
    ts, original = best
    ts14 = ts.ljust(14, "0")[:14]
    try:
        when = dt.datetime.strptime(ts14, "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return when.isoformat(), f"{WAYBACK_WEB}/{ts14}/{original}"


def enrich_wayback(archive: Archive, client: PoliteClient, cdx_url: str = CDX_API
                   ) -> WaybackReport:
    """Look up the first capture of every reference and sighting URL not yet looked up."""
    report = WaybackReport()
    targets: dict[str, int | None] = {}
    for ref in archive.iter_references():
        if ref.source_url:
            targets.setdefault(ref.source_url, ref.key)
    for s in archive.iter_sightings():
        if s.url and s.origin not in ("wayback", "check") and s.ref_key is not None:
            targets.setdefault(s.url, s.ref_key)
    for url, key in targets.items():
        if not url.startswith(("http://", "https://")):
            continue
        if archive.find_sighting("wayback", url) is not None or \
                archive.import_state(f"wayback|{url}") is not None:
            report.already_known += 1
            continue
        report.looked_up += 1
        try:
            found = first_capture(client, url, cdx_url)
        except ImportHTTPError as exc:
            report.errors.append({"entry": url, "error": exc.message})
            continue
        if found is None:
            archive.save_import_state(f"wayback|{url}", {"captures": 0})
            continue
        when, capture = found
        linked = archive.references([key]).get(key) if key is not None else None
        archive.add_sightings([Sighting(
            origin="wayback", source_key=url, evidence="wayback_capture", seen_at=when,
            url=capture, ref_key=key, sha256=linked.sha256 if linked else None,
            extra={"original": url})])
        report.found += 1
    return report


__all__ = ["CDX_API", "WaybackReport", "enrich_wayback", "first_capture"]
