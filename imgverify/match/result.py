"""Typed results of a check: what every output format (text, JSON, CSV, HTML) renders."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

LIKELY = "likely_recycled"
POSSIBLY = "possibly_recycled"
NO_MATCH = "no_match"
ERROR = "error"
VERDICTS = (LIKELY, POSSIBLY, NO_MATCH, ERROR)

NOT_AUTHENTIC_NOTE = ("No match means not in this archive; it does not show the image is "
                      "authentic.")


def utc_now() -> str:
    """The time of a check as reports state it: UTC, to the second."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tool_info() -> dict[str, Any]:
    """Which imgverify made a result, and how it hashes (results from another pipeline
    cannot be compared distance for distance)."""
    from imgverify._version import __version__
    from imgverify.signals.hashing import HASH_PIPELINE

    return {"name": "imgverify", "version": __version__, "hash_pipeline": HASH_PIPELINE}


@dataclass
class Match:
    """One archived reference the submitted image matches, with its original context."""

    reference_id: str
    score: float  # 0 (unrelated) .. 1 (identical)
    strength: str  # "likely" or "possible"
    date: str
    event: str | None = None
    place: str | None = None
    caption: str | None = None
    source: str | None = None
    source_url: str | None = None
    credit: str | None = None
    license: str | None = None
    published: str | None = None
    distances: dict[str, int] = field(default_factory=dict)
    transform: str | None = None
    days_before_claim: int | None = None
    role: str = "candidate"  # likely_original | later_publication | candidate
    exact_copy: bool = False
    #: where the archived photo sits in the submitted image (x0, y0, x1, y1 in 0..1), when
    #: found by local features
    region: tuple[float, float, float, float] | None = None
    #: the part of the archived photo that appears in the submitted image (x0, y0, x1, y1 in
    #: 0..1 of the archived photo), when only part of it was used (a crop)
    reference_region: tuple[float, float, float, float] | None = None
    #: estimated chance that an unrelated photo matches this closely (chance.chance_of):
    #: {"per_pair", "per_check", "words"}
    chance: dict[str, Any] | None = None
    #: local-feature alignment, for other tools to redraw it: {"reference_to_query": 2x3
    #: matrix, "coordinates": ..., "inliers": [[[qx, qy], [rx, ry]], ...]} (normalised)
    alignment: dict[str, Any] | None = None
    method: str = "global_hashes"  # or "local_features" or "sha256"
    sha256: str | None = None
    #: the reference is a hash from a hash list: no image was available to verify against
    hash_only: bool = False
    key: int = 0  # archive row, for thumbnails; not serialised
    #: local-feature evidence (see features.GeometricMatch.to_evidence): the transform
    #: reference -> submitted image and the inlier pairs, in normalised coordinates
    local_evidence: dict[str, Any] | None = None
    #: median block correlation of the submitted image aligned onto the archived photo
    #: (None when it could not be aligned, e.g. a differently framed global match)
    agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "reference_id": self.reference_id, "score": round(self.score, 4),
            "strength": self.strength, "role": self.role,
            "event": self.event, "date": self.date, "place": self.place,
            "caption": self.caption, "source": self.source, "source_url": self.source_url,
            "credit": self.credit, "license": self.license, "published": self.published,
            "distances": dict(self.distances), "transform": self.transform,
            "exact_copy": self.exact_copy, "days_before_claim": self.days_before_claim,
            "method": self.method,
            "region": [round(v, 4) for v in self.region] if self.region else None,
            "reference_region": ([round(v, 4) for v in self.reference_region]
                                 if self.reference_region else None),
            "sha256": self.sha256, "hash_only": self.hash_only,
            "chance_unrelated": self.chance, "alignment": self.alignment,
        }
        if self.agreement is not None:
            out["agreement"] = round(self.agreement, 3)
        if self.local_evidence is not None:
            out["local_evidence"] = self.local_evidence
        return out


#: How a "same place, different photo" finding is worded (date, then the archive's context).
SAME_SCENE_NOTE = ("This image shows the same place as an archived photo dated {date}{ctx}; "
                   "it is not a copy of it (the pixels differ where a copy would agree).")


@dataclass
class SceneMatch:
    """An archived photo of the same place or object that the submitted image is NOT a copy
    of: many keypoints agree, but aligned on it the pixels do not (another viewpoint,
    another day, a fixed camera's other frame). Never raises the verdict."""

    reference_id: str
    date: str
    event: str | None = None
    place: str | None = None
    source_url: str | None = None
    #: the signals behind the call: local_inliers, coverage, agreement (median block NCC of
    #: the aligned overlap), method ("local_features" or "global_hashes")
    evidence: dict[str, Any] = field(default_factory=dict)
    key: int = 0  # archive row; not serialised

    def note(self) -> str:
        ctx = ", ".join(x for x in (self.event, self.place) if x)
        return SAME_SCENE_NOTE.format(date=self.date, ctx=f" ({ctx})" if ctx else "")

    def to_dict(self) -> dict[str, Any]:
        return {"reference_id": self.reference_id, "date": self.date, "event": self.event,
                "place": self.place, "source_url": self.source_url,
                "evidence": dict(self.evidence)}


@dataclass
class CheckResult:
    input: str
    verdict: str
    sha256: str | None = None
    error: dict[str, str] | None = None
    matches: list[Match] = field(default_factory=list)
    exif: dict[str, Any] = field(default_factory=lambda: {
        "datetime_original": None, "camera": None, "software": None, "gps": None,
        "description": None})
    notes: list[str] = field(default_factory=list)
    claimed_date: str | None = None
    claimed_place: str | None = None
    hashes: dict[str, Any] = field(default_factory=dict)
    #: plain-language findings about the claim (see claims.Finding), strongest first
    claim_checks: list[dict[str, Any]] = field(default_factory=list)
    #: Content Credentials (C2PA) found in the file, see provenance.ContentCredentials
    content_credentials: dict[str, Any] | None = None
    #: archived publications, EXIF capture and the claimed date, in date order
    timeline: list[dict[str, Any]] = field(default_factory=list)
    image_size: tuple[int, int] | None = None
    elapsed_ms: float | None = None
    #: what the image was checked against (`Archive.summary()`): id, name, backend,
    #: references, earliest_date, latest_date, generation, hash_pipeline
    archive: dict[str, Any] | None = None
    #: what checked it: {"name", "version", "hash_pipeline"}
    tool: dict[str, Any] = field(default_factory=lambda: tool_info())
    #: when, in UTC (ISO 8601, second precision, "Z")
    checked_at: str = field(default_factory=lambda: utc_now())
    #: archived photos of the same place that this image is not a copy of (SceneMatch)
    same_scene: list[SceneMatch] = field(default_factory=list)
    #: what was searched, so "no match" can be read for what it covers: the whole-picture
    #: hashes ("searched") and the local features for crops, screenshots and collages:
    #: "searched", "not_needed" (a whole-picture match was already likely), "off" (the
    #: caller's choice, `--no-local`) or "pending" (the archive's index is not built yet)
    searched: dict[str, str] = field(default_factory=dict)
    #: the decoded (reduced) picture, for reports; never serialised
    picture: Any = field(default=None, repr=False, compare=False)

    @property
    def top(self) -> Match | None:
        return self.matches[0] if self.matches else None

    @property
    def recycled(self) -> bool:
        return self.verdict in (LIKELY, POSSIBLY)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input, "sha256": self.sha256, "verdict": self.verdict,
            "error": self.error, "matches": [m.to_dict() for m in self.matches],
            "exif": dict(self.exif), "notes": list(self.notes),
            "claimed_date": self.claimed_date, "claimed_place": self.claimed_place,
            "claim_checks": list(self.claim_checks), "timeline": list(self.timeline),
            "content_credentials": self.content_credentials,
            "hashes": dict(self.hashes),
            "image_size": list(self.image_size) if self.image_size else None,
            "same_scene": [s.to_dict() for s in self.same_scene],
            "searched": dict(self.searched),
            "elapsed_ms": round(self.elapsed_ms, 1) if self.elapsed_ms is not None else None,
            "archive": dict(self.archive) if self.archive is not None else None,
            "tool": dict(self.tool), "checked_at": self.checked_at,
        }
