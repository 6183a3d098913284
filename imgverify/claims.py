"""Claim checks and the first-seen timeline: evidence a journalist can state in plain words.

Each finding says what was compared, what was found and how strong that is. Absence of
metadata is normal on social media and is said to be so, never presented as a red flag.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from .evidence import ExifEvidence
from .result import Match

_COORDS = re.compile(r"^\s*(-?\d{1,2}(?:\.\d+)?)\s*[,; ]\s*(-?\d{1,3}(?:\.\d+)?)\s*$")


@dataclass
class Finding:
    check: str  # "date" | "place" | "exif_date" | "exif_gps" | "metadata" | "software"
    finding: str  # one plain sentence
    strength: str  # "strong" | "moderate" | "weak" | "info"
    supports: str  # "recycled" | "claim" | "neutral"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class TimelineEntry:
    date: str
    what: str
    kind: str  # "reference" | "claim" | "exif"
    reference_id: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_coordinates(text: str | None) -> tuple[float, float] | None:
    """'48.85, 2.35' -> (48.85, 2.35); None for a place name."""
    if not text:
        return None
    m = _COORDS.match(text)
    if not m:
        return None
    lat, lon = float(m.group(1)), float(m.group(2))
    if -90 <= lat <= 90 and -180 <= lon <= 180:
        return lat, lon
    return None


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, h)))


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if len(w) > 2}


def _years(days: int) -> str:
    if days >= 730:
        return f"{days / 365.25:.1f} years"
    if days >= 60:
        return f"{days / 30.44:.0f} months"
    return f"{days} days"


def check_claims(matches: list[Match], exif: ExifEvidence, claimed_date: dt.date | None,
                 claimed_place: str | None) -> list[Finding]:
    """Findings about the claim, strongest first."""
    out: list[Finding] = []
    top = matches[0] if matches else None
    if top is not None and claimed_date is not None and top.days_before_claim is not None:
        gap = top.days_before_claim
        if gap > 1:
            strength = "strong" if gap > 30 else "moderate"
            out.append(Finding("date", f"The matching archived photo is dated {top.date}, "
                               f"{_years(gap)} before the claimed date "
                               f"{claimed_date.isoformat()}: it cannot show an event on the "
                               "claimed date.", strength, "recycled"))
        elif gap >= -1:
            out.append(Finding("date", f"The archived photo is dated {top.date}, consistent "
                               "with the claimed date.", "weak", "claim"))
        else:
            out.append(Finding("date", f"The archived photo is dated {top.date}, after the "
                               "claimed date; check the archive record.", "weak", "neutral"))
    coords = parse_coordinates(claimed_place)
    if top is not None and claimed_place:
        if coords is None and top.place:
            shared = _words(claimed_place) & _words(top.place)
            if shared:
                out.append(Finding("place", f"The archived place ({top.place}) agrees with the "
                                   f"claimed place ({claimed_place}).", "weak", "claim"))
            else:
                out.append(Finding("place", f"The archived photo was taken at {top.place}, not "
                                   f"at the claimed place ({claimed_place}).", "strong",
                                   "recycled"))
        elif coords is not None and top.place:
            out.append(Finding("place", f"The archived photo's place is recorded as "
                               f"{top.place}; compare it with the claimed coordinates "
                               f"{coords[0]:.4f}, {coords[1]:.4f}.", "info", "neutral"))
    capture = exif.capture_date
    if capture is not None and claimed_date is not None:
        gap = (claimed_date - capture).days
        if gap > 1:
            strength = "strong" if gap > 365 else "moderate"
            out.append(Finding("exif_date", f"The camera recorded the capture date "
                               f"{capture.isoformat()}, {_years(gap)} before the claimed date "
                               "(camera clocks can be wrong and EXIF can be edited).",
                               strength, "recycled"))
        elif gap >= -1:
            out.append(Finding("exif_date", f"The camera's capture date {capture.isoformat()} "
                               "is consistent with the claimed date.", "weak", "claim"))
        else:
            out.append(Finding("exif_date", f"The camera's capture date {capture.isoformat()} "
                               "is after the claimed date.", "weak", "neutral"))
    if exif.gps is not None and coords is not None:
        km = haversine_km(coords, (exif.gps["lat"], exif.gps["lon"]))
        if km > 50:
            out.append(Finding("exif_gps", f"The camera's GPS position is {km:,.0f} km from the "
                               "claimed place.", "strong" if km > 500 else "moderate",
                               "recycled"))
        else:
            out.append(Finding("exif_gps", f"The camera's GPS position is {km:,.1f} km from the "
                               "claimed place.", "weak", "claim"))
    elif exif.gps is not None and claimed_place:
        out.append(Finding("exif_gps", f"The file carries GPS coordinates {exif.gps['lat']}, "
                           f"{exif.gps['lon']}; give the claimed place as 'lat, lon' to "
                           "compare distances.", "info", "neutral"))
    if exif.empty:
        out.append(Finding("metadata", "The file has no camera metadata. That is normal for "
                           "images saved from social media, which strip it; it is not a sign "
                           "of manipulation.", "info", "neutral"))
    if exif.software:
        out.append(Finding("software", f"EXIF names the software {exif.software!r}: the file "
                           "was processed or edited by it (often just a phone's own "
                           "processing).", "info", "neutral"))
    order = {"strong": 0, "moderate": 1, "weak": 2, "info": 3}
    return sorted(out, key=lambda f: order[f.strength])


def timeline(matches: list[Match], exif: ExifEvidence,
             claimed_date: dt.date | None) -> list[TimelineEntry]:
    """Archived publications, EXIF capture and the claim, in date order."""
    entries: list[TimelineEntry] = []
    for m in matches:
        label = "first archived publication (likely original)" if m.role == "likely_original" \
            else ("later publication" if m.role == "later_publication" else "similar photo")
        entries.append(TimelineEntry(m.date, f"{label}: {m.event or 'archived photo'}",
                                     "reference", m.reference_id, m.source))
    if exif.capture_date is not None:
        entries.append(TimelineEntry(exif.capture_date.isoformat(),
                                     "capture date recorded by the camera (EXIF)", "exif"))
    if claimed_date is not None:
        entries.append(TimelineEntry(claimed_date.isoformat(),
                                     "the date the image is claimed to show", "claim"))
    return sorted(entries, key=lambda e: e.date)
