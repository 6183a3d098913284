"""Claim checks and the first-seen timeline: evidence a journalist can state in plain words.

Each finding says what was compared, what was found and how strong that is. Absence of
metadata is normal on social media and is said to be so, never presented as a red flag.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from imgverify.match.result import Match
from imgverify.media.evidence import ExifEvidence
from imgverify.report import places
from imgverify.report.places import parse_coordinates

#: places this close are the same area (suburbs, a town and its outskirts)
NEAR_KM = 25.0
#: beyond this, a different place; in between, doubtful
FAR_KM = 100.0
#: how far the unnamed part of an approximately placed name ('X district, Herat') may lie
#: from the place it was read as
APPROX_KM = 50.0



@dataclass
class Finding:
    #: "date" | "place" | "exif_date" | "exif_gps" | "exif_date_archive" | "exif_gps_archive"
    #: | "metadata" | "software"
    check: str
    finding: str  # one plain sentence
    strength: str  # "strong" | "moderate" | "weak" | "info"
    supports: str  # "recycled" | "claim" | "neutral"
    #: km between the two places compared (0 when one contains the other), when measured
    distance_km: float | None = None
    #: how each place name was read (places.Resolution.to_dict), claimed first
    places: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The four keys every finding has, plus distance_km and places when known."""
        out: dict[str, Any] = {"check": self.check, "finding": self.finding,
                               "strength": self.strength, "supports": self.supports}
        if self.distance_km is not None and not math.isnan(self.distance_km):
            out["distance_km"] = round(self.distance_km, 1)
        if self.places:
            out["places"] = [dict(p) for p in self.places]
        return out


@dataclass
class TimelineEntry:
    date: str
    what: str
    kind: str  # "reference" | "claim" | "exif"
    reference_id: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _about_km(km: float) -> str:
    if km >= 100:
        return f"about {round(km, -1):,.0f} km"
    return f"about {km:,.0f} km" if km >= 2 else "less than 2 km"


def _area_phrase(place: places.Place, town: places.Place | None) -> str:
    """'Paktīkā province (nearest listed town: Zarghūn Shahr)' for areas, the label for cities."""
    if place.kind in ("city", "point"):
        return place.label
    name = place.region_label if place.kind == "admin1" else place.country
    return f"{name} (measured to its nearest listed town, {town.name})" if town else name


def _distance_strength(km: float) -> tuple[str, str]:
    """(strength, supports) for two places `km` apart: within a town's reach is the same area,
    a short drive is doubtful, further is a different place."""
    if km <= NEAR_KM:
        return "weak", "claim"
    if km <= FAR_KM:
        return "moderate", "recycled"
    return "strong", "recycled"


def _text_only(claimed: str, archived: str, rc: places.Resolution,
               ra: places.Resolution) -> Finding:
    """A name the gazetteer cannot place is compared as words, and only weakly."""
    missing = " and ".join(f"'{r.text}'" for r in (rc, ra) if not r.resolved)
    why = f"{missing} could not be found in the offline GeoNames gazetteer"
    reason = next((r.reason for r in (rc, ra) if r.reason), "")
    if reason:
        why += reason
    if _words(claimed) & _words(archived):
        return Finding("place", f"The archived place ({archived}) shares words with the claimed "
                       f"place ({claimed}); compared as text only, because {why}.", "weak",
                       "claim")
    return Finding("place", f"The archived place ({archived}) and the claimed place ({claimed}) "
                   f"share no word; compared as text only, because {why}, so this says little "
                   "about where the photo was taken.", "weak", "neutral")


def _place_finding(claimed: str, coords: tuple[float, float] | None,
                   archived: str) -> Finding:
    """The claimed place against the archived one, by distance and containment, with how
    each name was read and the distance for machines."""
    finding, km = _compare_places(claimed, coords, archived)
    read = ([] if coords is not None else [places.resolve(claimed)]) + [places.resolve(archived)]
    return replace(finding, distance_km=km, places=tuple(r.to_dict() for r in read))


def _compare_places(claimed: str, coords: tuple[float, float] | None,
                    archived: str) -> tuple[Finding, float | None]:
    ra = places.resolve(archived)
    if coords is not None:
        if ra.place is None:
            return Finding("place", f"The archived photo's place is recorded as {archived}; "
                           f"compare it with the claimed coordinates {coords[0]:.4f}, "
                           f"{coords[1]:.4f} ({ra.describe()}).", "info", "neutral"), None
        km, town = places.gazetteer().point_to(coords[0], coords[1], ra.place)
        strength, supports = _distance_strength(km)
        where = "inside" if km == 0 else f"{_about_km(km)} from"
        return Finding("place", f"The claimed coordinates {coords[0]:.4f}, {coords[1]:.4f} are "
                       f"{where} the archived place {_area_phrase(ra.place, town)}; archived "
                       f"place: {ra.describe()}.", strength, supports), km
    rc = places.resolve(claimed)
    if rc.place is None or ra.place is None:
        return _text_only(claimed, archived, rc, ra), None
    a = ra.place
    said = f"Claimed place: {rc.describe()}. Archived place: {ra.describe()}."
    # any reading of an ambiguous claimed name that fits the archive counts: a false
    # "recycled" is worse than a miss
    for reading in (rc.place, *rc.alternatives):
        if reading == a or (reading.kind == "city" and a.kind == "city"
                            and reading.geonames_id == a.geonames_id):
            return Finding("place", f"{said} They are the same place ({a.label}).", "weak",
                           "claim"), 0.0
        if reading.kind in ("city", "point") and a.kind in ("city", "point"):
            near, _ = places.gazetteer().distance(reading, a)
            if near <= NEAR_KM:
                return Finding("place", f"{said} The two are {_about_km(near)} apart: the "
                               f"same area ({reading.label}).", "weak", "claim"), near
        if places.contains(reading, a):
            return Finding("place", f"{said} The archived photo was taken in {a.label}, inside "
                           f"the claimed {_area_phrase(reading, None)}.", "weak", "claim"), 0.0
        if places.contains(a, reading):
            return Finding("place", f"{said} The archive records only {a.label}, which "
                           f"contains the claimed {reading.label}: consistent, at the "
                           "archive's precision.", "weak", "claim"), 0.0
    g = places.gazetteer()
    best_km, best_town = g.distance(rc.place, a)
    km = min((g.distance(r, a)[0] for r in rc.alternatives), default=best_km)
    km = min(km, best_km) if not math.isnan(km) else best_km
    if math.isnan(best_km):
        far = rc.place.country_code != a.country_code
        return Finding("place", f"{said} The archived photo was taken in {a.label}, "
                       f"{'in another country than' if far else 'outside'} the claimed "
                       f"{rc.place.label}.", "moderate" if far else "weak",
                       "recycled" if far else "neutral"), None
    approximate = ra.approximate or rc.approximate
    # 'Zinda Jan district, Herat' read as Herat: the district may lie anywhere around the city
    strength, supports = _distance_strength(max(0.0, km - APPROX_KM) if approximate else km)
    if approximate and strength != "strong":
        return Finding("place", f"{said} The two are {_about_km(best_km)} apart, and one name "
                       "was placed only approximately: compare them by hand.", "weak",
                       "neutral"), best_km
    if strength == "weak":
        return Finding("place", f"{said} The two are {_about_km(best_km)} apart: the same "
                       "area.", strength, supports), best_km
    other = f" (another reading of the name is {_about_km(km)} away)" if km < best_km else ""
    return Finding("place", f"{said} The archived photo was taken in {a.label}, "
                   f"{_about_km(best_km)} from the claimed {_area_phrase(rc.place, best_town)}"
                   f"{other}.", strength, supports), best_km


def _gps_vs_claimed_name(gps: tuple[float, float], claimed: str) -> Finding:
    rc = places.resolve(claimed)
    if rc.place is None:
        return Finding("exif_gps", f"The file carries GPS coordinates {gps[0]}, {gps[1]}; "
                       f"the claimed place {rc.describe()}, so no distance can be given; "
                       "give it as 'lat, lon' to compare.", "info", "neutral")
    km, town = places.gazetteer().point_to(gps[0], gps[1], rc.place)
    where = "inside" if km == 0 else f"{_about_km(km)} from"
    text = (f"The camera's GPS position ({gps[0]:.4f}, {gps[1]:.4f}) is {where} the claimed "
            f"place {_area_phrase(rc.place, town)}; claimed place: {rc.describe()} "
            "(GPS tags are easily edited).")
    extra: dict[str, Any] = {"distance_km": km, "places": (rc.to_dict(),)}
    if math.isnan(km):
        return Finding("exif_gps", text, "info", "neutral", **extra)
    if km > 50:
        return Finding("exif_gps", text, "strong" if km > 500 else "moderate", "recycled",
                       **extra)
    return Finding("exif_gps", text, "weak", "claim", **extra)


def _gps_vs_archived(gps: tuple[float, float], archived: str) -> Finding | None:
    """The file's GPS against where the archive says its photo was taken: agreement
    corroborates the match; a disagreement means one of the two records is wrong."""
    ra = places.resolve(archived)
    if ra.place is None:
        return None
    km, town = places.gazetteer().point_to(gps[0], gps[1], ra.place)
    if math.isnan(km):
        return None
    where = "inside" if km == 0 else f"{_about_km(km)} from"
    text = (f"The camera's GPS position ({gps[0]:.4f}, {gps[1]:.4f}) is {where} the archived "
            f"photo's place {_area_phrase(ra.place, town)}; archived place: {ra.describe()}.")
    extra: dict[str, Any] = {"distance_km": km, "places": (ra.to_dict(),)}
    if km <= 50:
        return Finding("exif_gps_archive", text + " This agrees with the archive record.",
                       "weak", "recycled", **extra)
    return Finding("exif_gps_archive", text + " Either the archive's place or the file's GPS "
                   "is wrong (GPS tags are easily edited); check the archive record.",
                   "moderate", "neutral", **extra)


def _reference(matches: list[Match]) -> Match | None:
    """The archive's 'original' for this photo: the likely original, else the best match."""
    return next((m for m in matches if m.role == "likely_original"),
                matches[0] if matches else None)


def _exif_date_vs_archive(capture: dt.date, reference: Match,
                          claimed_date: dt.date | None) -> Finding | None:
    try:
        archived = dt.date.fromisoformat(reference.date[:10])
    except (TypeError, ValueError):
        return None
    gap = (archived - capture).days
    if gap > 1:
        later_claim = claimed_date is not None and claimed_date > archived
        return Finding("exif_date_archive", f"The camera recorded the capture date "
                       f"{capture.isoformat()}, {_years(gap)} before the archive's date for "
                       f"this photo ({reference.date}, reference {reference.reference_id}): "
                       "the archive's date may be wrong, or the file is older still (EXIF is "
                       "easily edited).", "moderate", "recycled" if later_claim else "neutral")
    if gap < -1:
        return Finding("exif_date_archive", f"The camera's capture date {capture.isoformat()} "
                       f"is after the archive's date for this photo ({reference.date}, "
                       f"reference {reference.reference_id}): the camera clock or the EXIF is "
                       "likely wrong.", "weak", "neutral")
    return None


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
    if top is not None and claimed_place and top.place:
        out.append(_place_finding(claimed_place, coords, top.place))
    capture = exif.capture_date
    if capture is not None and claimed_date is not None:
        gap = (claimed_date - capture).days
        if gap > 1:
            # a camera date months before the claim: the file existed before the event
            strength = "strong" if gap > 60 else "moderate"
            out.append(Finding("exif_date", f"The camera recorded the capture date "
                               f"{capture.isoformat()}, {_years(gap)} before the claimed date "
                               "(camera clocks can be wrong and EXIF is easily edited).",
                               strength, "recycled"))
        elif gap >= -1:
            out.append(Finding("exif_date", f"The camera's capture date {capture.isoformat()} "
                               "is consistent with the claimed date (EXIF is easily edited).",
                               "weak", "claim"))
        else:
            out.append(Finding("exif_date", f"The camera's capture date {capture.isoformat()} "
                               "is after the claimed date.", "weak", "neutral"))
    reference = _reference(matches)
    if capture is not None and reference is not None:
        finding = _exif_date_vs_archive(capture, reference, claimed_date)
        if finding is not None:
            out.append(finding)
    if exif.gps is not None:
        gps = (exif.gps["lat"], exif.gps["lon"])
        if coords is not None:
            km = haversine_km(coords, gps)
            if km > 50:
                out.append(Finding("exif_gps", f"The camera's GPS position is {km:,.0f} km "
                                   "from the claimed place.",
                                   "strong" if km > 500 else "moderate", "recycled", km))
            else:
                out.append(Finding("exif_gps", f"The camera's GPS position is {km:,.1f} km "
                                   "from the claimed place.", "weak", "claim", km))
        elif claimed_place:
            out.append(_gps_vs_claimed_name(gps, claimed_place))
        if top is not None and top.place:
            finding = _gps_vs_archived(gps, top.place)
            if finding is not None:
                out.append(finding)
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
