"""Sightings: one image seen at one place and time (a post, an upload, a capture, a check).

References say what a photo shows and when it was taken; sightings say where and when a copy
was published. A check's first-seen timeline is built from both. Every sighting carries the
kind of evidence its date rests on, because a curated archive record, a platform's timestamp
in an export someone handed over, and an Internet Archive capture do not weigh the same.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: evidence kind -> (strength, what it means), shown beside each timeline entry
EVIDENCE: dict[str, tuple[str, str]] = {
    "archive_reference": ("strong", "dated record in the reference archive"),
    "wayback_capture": ("strong", "independent capture by the Internet Archive: the page "
                                  "existed by this time"),
    "platform_timestamp": ("moderate", "publication time recorded by the platform, as found in "
                                       "an export or API (exports can be edited)"),
    "stated_capture_date": ("moderate", "capture date given by the publisher (camera "
                                        "metadata or the uploader's description), not a "
                                        "publication"),
    "desk_check": ("info", "submitted to this desk for checking (not a publication)"),
}


@dataclass
class Sighting:
    """An image published at `seen_at` at `url` by `account` with `text`.

    `origin` names where we learnt of it (commons, telegram, gallery-dl, yt-dlp, x, sidecar,
    feed, wayback, check); (`origin`, `source_key`) identifies it there, so importing the same
    export twice never stores it twice.
    """

    origin: str
    source_key: str
    evidence: str = "platform_timestamp"
    seen_at: str | None = None  # ISO 8601 (date or UTC timestamp)
    url: str | None = None
    account: str | None = None
    text: str | None = None
    media_url: str | None = None
    source_sha1: str | None = None
    sha256: str | None = None
    ref_key: int | None = None
    #: True when no reference matched and this sighting's image was stored as its own record
    own_record: bool = False
    match_score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    key: int = 0
    added_at: str | None = None

    @property
    def strength(self) -> str:
        return EVIDENCE.get(self.evidence, ("weak", ""))[0]

    def describe_evidence(self) -> str:
        strength, what = EVIDENCE.get(self.evidence, ("weak", self.evidence))
        return f"{strength}: {what}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("key")
        d["reference_key"] = d.pop("ref_key")
        d["strength"] = self.strength
        return d


def now_iso() -> str:
    """UTC now to the second, as the archive stamps `added_at`."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def normalise_time(value: Any) -> str | None:
    """A timestamp from any export (epoch seconds, ISO, 'YYYYMMDD', Twitter's
    'Wed Oct 11 09:15:02 +0000 2023', RFC 822) as ISO 8601, UTC when the zone is known."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return dt.datetime.fromtimestamp(float(value), dt.UTC).replace(
                microsecond=0).isoformat()
        except (OverflowError, OSError, ValueError):
            return None
    text = str(value).strip()
    if text.isdigit() and len(text) == 8:  # yt-dlp upload_date
        try:
            return dt.date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()
        except ValueError:
            return None
    if text.isdigit() and len(text) >= 9:
        return normalise_time(int(text))
    for fmt in ("%a %b %d %H:%M:%S %z %Y", "%a, %d %b %Y %H:%M:%S %z", "%a, %d %b %Y %H:%M:%S %Z",
                "%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            parsed = dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
        return _iso(parsed)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            return dt.date.fromisoformat(text[:10]).isoformat()
        except ValueError:
            return None
    return _iso(parsed)


def _iso(parsed: dt.datetime) -> str:
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC)
    return parsed.replace(microsecond=0).isoformat()


__all__ = ["EVIDENCE", "Sighting", "normalise_time", "now_iso"]


#: The sightings table's columns in the order both backends store and read them.
SIGHTING_COLUMNS = ("id, ref_id, sha256, origin, source_key, evidence, seen_at, url, "
                    "account, text, media_url, source_sha1, own_record, match_score, "
                    "extra, added_at")


def sighting_from_row(row: Sequence[Any]) -> Sighting:
    """A stored sighting, from a row of SIGHTING_COLUMNS (any backend's row type)."""
    (key, ref_key, sha256, origin, source_key, evidence, seen_at, url, account, text,
     media_url, source_sha1, own_record, match_score, extra, added_at) = tuple(row)
    return Sighting(key=int(key), ref_key=ref_key, sha256=sha256, origin=origin,
                    source_key=source_key, evidence=evidence, seen_at=seen_at, url=url,
                    account=account, text=text, media_url=media_url, source_sha1=source_sha1,
                    own_record=bool(own_record), match_score=match_score,
                    extra=json.loads(extra) if extra else {}, added_at=added_at)
