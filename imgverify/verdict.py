"""From distances to a verdict, and the plain-language notes that go with it.

The combined distance of a candidate is the mean of its normalised Hamming distances over
the four hash families (PDQ/256, pHash/64, dHash/64, wHash/64). Unrelated photos sit near
0.5; copies near 0. Averaging independent-ish families narrows both distributions, so one
family's chance collision does not make a match. The two thresholds are chosen by
`bench/thresholds.py` (false-positive rate on unrelated pairs, recall on edited copies);
see its output in the CHANGELOG for the figures behind the defaults.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .evidence import ExifEvidence
from .result import LIKELY, NO_MATCH, NOT_AUTHENTIC_NOTE, POSSIBLY, Match

WEIGHTS = {"pdq": 0.25, "phash": 0.25, "dhash": 0.25, "whash": 0.25}
BITS = {"pdq": 256, "phash": 64, "dhash": 64, "whash": 64}


@dataclass(frozen=True)
class Thresholds:
    """Operating point. Defaults from bench/thresholds.py on ../shared/data/photos."""

    # bench/thresholds.py (TUNE split, 370 photos, 171,125 non-matching pairs): distance at
    # an extrapolated per-pair false-positive rate of 1e-9 and 1e-8
    likely: float = 0.15
    possible: float = 0.175
    #: candidate radii for the index (wider than any match we accept)
    pdq_radius: int = 80
    phash_radius: int = 18
    #: local-feature stage (crops, insets, screenshots): RANSAC inliers needed
    use_local_features: bool = True
    local_likely: int = 35
    local_possible: int = 20
    #: share of a 4x4 grid over the matched region (in both images) the inliers must reach:
    #: a shared logo, badge or ticker fills one or two cells whatever its inlier count
    local_min_coverage: float = 0.25
    #: "same photo" versus "same place": the median block correlation of the submitted
    #: image aligned onto the archived one (features.aligned_agreement). A copy, however
    #: graded, compressed or cropped, agrees at or above `copy_agreement`; another photo of
    #: the same place at or above `scene_agreement` but below `copy_agreement` is reported
    #: as a same-place finding, never as a match. Set on the TUNE split of bench/overlays.py.
    copy_agreement: float = 0.88
    scene_agreement: float = 0.3
    #: once the aligned pixels confirm a copy, fewer inliers are needed (heavy crops and
    #: collage tiles keep few keypoints): possible from this many, likely from
    #: `local_possible` when the agreement reaches `confirmed_agreement`
    local_confirmed: int = 12
    confirmed_agreement: float = 0.93


DEFAULT_THRESHOLDS = Thresholds()


def combined_distance(distances: dict[str, int]) -> float:
    total = sum(WEIGHTS[a] for a in distances)
    return sum(WEIGHTS[a] * distances[a] / BITS[a] for a in distances) / total


def score_of(combined: float) -> float:
    """0 for unrelated pictures (combined ~0.5), 1 for identical ones."""
    return max(0.0, min(1.0, 1.0 - combined / 0.5))


def strength_of(combined: float, thresholds: Thresholds) -> str | None:
    if combined <= thresholds.likely:
        return "likely"
    if combined <= thresholds.possible:
        return "possible"
    return None


def decide(matches: list[Match]) -> str:
    if any(m.strength == "likely" for m in matches):
        return LIKELY
    if matches:
        return POSSIBLY
    return NO_MATCH


def order_matches(matches: list[Match]) -> list[Match]:
    """Strongest tier first; inside the top tier the earliest dated is the likely original."""
    if not matches:
        return matches
    likely = sorted((m for m in matches if m.strength == "likely"),
                    key=lambda m: (m.date, -m.score))
    # without a likely tier, the possible matches are the candidates for the original: the
    # earliest dated first, as for the likely tier
    possible = sorted((m for m in matches if m.strength != "likely"),
                      key=(lambda m: -m.score) if likely else (lambda m: (m.date, -m.score)))
    ordered = likely + possible
    ordered[0].role = "likely_original"
    for m in ordered[1:]:
        m.role = "later_publication" if m.strength == ordered[0].strength else "candidate"
    return ordered


def parse_claimed_date(value: str | dt.date | None) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise ValueError(f"claimed date {value!r} is not YYYY-MM-DD") from None


def notes_for(verdict: str, matches: list[Match], exif: ExifEvidence,
              claimed_date: dt.date | None, claimed_place: str | None) -> list[str]:
    """Plain-language findings; the authenticity caveat is always the last note."""
    notes: list[str] = []
    top = matches[0] if matches else None
    if top is not None:
        what = "is very likely" if verdict == LIKELY else "may be"
        ctx = ", ".join(x for x in (top.event, top.place) if x)
        notes.append(f"This image {what} a copy of an archived photo dated {top.date}"
                     + (f" ({ctx})" if ctx else "") + ".")
        if top.exact_copy:
            notes.append("It is the very same file as the archived photo (identical bytes).")
        elif top.transform:
            notes.append(f"Edits detected compared with the archived photo: {top.transform}.")
        later = [m for m in matches[1:] if m.role == "later_publication"]
        if later:
            notes.append(f"{len(later)} later publication(s) of the same photo are archived.")
    elif verdict == NO_MATCH:
        notes.append("No archived photo matches this image.")
    capture = exif.capture_date
    if capture is not None and claimed_date is not None and capture < claimed_date:
        gap = (claimed_date - capture).days
        notes.append(f"EXIF says the photo was taken on {capture.isoformat()}, {gap} days before "
                     "the claimed date (camera clocks can be wrong, and EXIF can be edited).")
    if exif.description and top is not None:
        notes.append(f"The file carries its own caption: \"{exif.description}\"; compare it "
                     "with the archived context above.")
    if exif.software:
        notes.append(f"EXIF names editing or processing software: {exif.software}.")
    notes.append(NOT_AUTHENTIC_NOTE)
    return notes


__all__ = ["Thresholds", "DEFAULT_THRESHOLDS", "combined_distance", "score_of", "decide",
           "order_matches", "notes_for", "LIKELY", "POSSIBLY", "NO_MATCH"]
