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
from dataclasses import dataclass, replace
from typing import Any

from imgverify.dates import date_problem, parse_claimed_date  # noqa: F401 - re-exported
from imgverify.match.result import ERROR, LIKELY, NO_MATCH, NOT_AUTHENTIC_NOTE, POSSIBLY, Match
from imgverify.media.evidence import ExifEvidence

HASH_ONLY_NOTE = ("no image was available for local verification; the match rests on the PDQ "
                  "hash alone, so compare the pictures before relying on it.")

WEIGHTS = {"pdq": 0.25, "phash": 0.25, "dhash": 0.25, "whash": 0.25}
BITS = {"pdq": 256, "phash": 64, "dhash": 64, "whash": 64}


@dataclass(frozen=True)
class Thresholds:
    """Operating point. Defaults from bench/thresholds.py on ../shared/data/photos."""

    # bench/thresholds.py (TUNE split, 370 photos, 171,125 non-matching pairs): distance at
    # an extrapolated per-pair false-positive rate of 1e-9 and 1e-8
    likely: float = 0.15
    possible: float = 0.175
    #: candidate radius for the index: PDQ over the query's 8 dihedral variants. At most 31,
    #: what the multi-index of large archives answers exactly, so small and large archives
    #: offer the same candidates (a wider radius is always a linear scan; benches use 256 to
    #: see every row). Edits that move PDQ further (crops keeping ~80 % sit at 60-100 bits)
    #: are the local-feature stage's to find.
    pdq_radius: int = 31
    #: local-feature stage (crops, insets, screenshots): RANSAC inliers needed
    use_local_features: bool = True
    local_likely: int = 35
    local_possible: int = 20
    #: hash-only references (PDQ from a hash list, no image): PDQ distance alone decides, so
    #: it gets its own thresholds (bench/pdq_only.py: no unrelated TUNE pair within 31, the
    #: closest at 90; "possible" is Meta's match threshold, 31; "likely" only for
    #: near-duplicates, as another photo of the same fixed scene can come within 31), and a
    #: query part whose PDQ quality is below Meta's floor of 50 is never matched against them
    pdq_only_likely: int = 20
    pdq_only_possible: int = 31
    pdq_only_min_quality: int = 50
    #: share of a 4x4 grid over the matched region (in both images) the inliers must reach:
    #: a shared logo, badge or ticker fills one or two cells whatever its inlier count
    local_min_coverage: float = 0.25
    #: "same photo" versus "same place": the median block correlation of the submitted
    #: image aligned onto the archived one (features.aligned_agreement). A copy, however
    #: graded, compressed or cropped, agrees at or above `copy_agreement`; another photo of
    #: the same place at or above `scene_agreement` but below `copy_agreement` is reported
    #: as a same-place finding, never as a match. Set on the TUNE split of bench/overlays.py;
    #: raised from 0.88 when the agreement stopped counting the warp's black fill along a
    #: partial overlap (issue 12): copies of TUNE photos through 12 edits then agree at 0.91
    #: or more, a frame of a fixed webcam months later at up to 0.89 (was 0.878).
    copy_agreement: float = 0.90
    scene_agreement: float = 0.3
    #: once the aligned pixels confirm a copy, fewer inliers are needed (heavy crops and
    #: collage tiles keep few keypoints): possible from this many, likely from
    #: `local_possible` when the agreement reaches `confirmed_agreement`
    local_confirmed: int = 12
    confirmed_agreement: float = 0.93


DEFAULT_THRESHOLDS = Thresholds()


def local_thresholds(local: bool) -> Thresholds:
    """The default operating point, with the local-feature stage on or off (`--no-local`):
    off trades crops, screenshots and collages for speed on a first pass over a batch."""
    return DEFAULT_THRESHOLDS if local else replace(DEFAULT_THRESHOLDS, use_local_features=False)


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


def pdq_only_strength(distance: int, thresholds: Thresholds) -> str | None:
    """Strength of a match against a hash-only reference, from its PDQ distance alone."""
    if distance <= thresholds.pdq_only_likely:
        return "likely"
    if distance <= thresholds.pdq_only_possible:
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
    # only a likely match is called the original: a possible one is a candidate, whatever
    # its date (a report must not call a look-alike "likely original")
    top_likely = ordered[0].strength == "likely"
    ordered[0].role = "likely_original" if top_likely else "candidate"
    for m in ordered[1:]:
        m.role = "later_publication" if top_likely and m.strength == "likely" else "candidate"
    return ordered


def archive_phrase(archive: dict[str, Any] | None) -> str:
    """'this archive of 30 photos, dated 2012–2019': what a no-match was checked against."""
    if not archive:
        return "this archive"
    n = archive.get("references")
    first, last = (str(archive.get("earliest_date") or "")[:4],
                   str(archive.get("latest_date") or "")[:4])
    text = f"this archive of {n:,} photo{'s' if n != 1 else ''}" if isinstance(n, int) \
        else "this archive"
    if first and last:
        text += f", dated {first}" + (f"–{last}" if last != first else "")
    return text


MATCH_CAVEAT = ("A match shows when and with what context this photo was archived before; "
                "compare the two images by eye before stating a conclusion.")
ERROR_CAVEAT = ("The input could not be checked, so this report says nothing about whether "
                "the image is in the archive.")


def notes_for(verdict: str, matches: list[Match], exif: ExifEvidence,
              claimed_date: dt.date | None, claimed_place: str | None,
              archive: dict[str, Any] | None = None) -> list[str]:
    """Plain-language findings; the caveat that fits the verdict is always the last note
    (the "not in this archive" one belongs to no-match results only)."""
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
        hash_only = [m for m in matches if m.hash_only]
        if hash_only:
            which = ("The archived reference" if top.hash_only and len(hash_only) == 1 else
                     f"{len(hash_only)} of the matched references")
            notes.append(f"{which} came from a hash list: {HASH_ONLY_NOTE}")
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
    if verdict == NO_MATCH:
        notes.append(NOT_AUTHENTIC_NOTE if archive is None else
                     f"No match means not in {archive_phrase(archive)}; it does not show the "
                     "image is authentic.")
    elif verdict == ERROR:
        notes.append(ERROR_CAVEAT)
    else:
        notes.append(MATCH_CAVEAT)
    return notes


__all__ = ["Thresholds", "DEFAULT_THRESHOLDS", "combined_distance", "score_of", "decide",
           "order_matches", "notes_for", "LIKELY", "POSSIBLY", "NO_MATCH"]
