"""First seen: every known publication of a matched image, earliest first, and the desk's
own record of what it checked.

The timeline joins three kinds of knowledge: archive references (a dated record), sightings
(an upload, a post in an export, a feed item, a Wayback capture) and earlier checks by this
desk (`check --record`). Each entry says how strong its date is (`sightings.EVIDENCE`). Desk
checks are not publications: an image first met at this desk is reported as "first submitted
to this desk on ..., from ..." and never turns a verdict into "recycled" by itself.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlsplit

from imgverify.errors import ArchiveError, ImgVerifyError
from imgverify.match.result import CheckResult, Match
from imgverify.media.load import Limits, Source, load
from imgverify.store.sightings import EVIDENCE, Sighting
from imgverify.store.sqlite import Archive

#: `source` of the record kept for an image first met in a desk check
DESK_CHECK_SOURCE = "desk check (not a publication)"
_ORIGIN_NAMES = {"commons": "uploaded to Wikimedia Commons", "telegram": "posted on Telegram",
                 "x": "posted on X/Twitter", "wayback": "captured by the Internet Archive",
                 "feed": "published in a feed", "check": "submitted to this desk"}


def supports_sightings(archive: Any) -> bool:
    """Sightings live in the SQLite archive for now; other storage backends check without
    them (their timeline is the archive's references only)."""
    return callable(getattr(archive, "sightings_for", None))


def split_desk_checks(matches: list[Match]) -> tuple[list[Match], list[Match]]:
    """(publications, desk-check records): the latter only feed the timeline."""
    pubs = [m for m in matches if m.source != DESK_CHECK_SOURCE]
    return pubs, [m for m in matches if m.source == DESK_CHECK_SOURCE]


def _what(s: Sighting) -> str:
    base = s.origin.split("/", 1)
    host = urlsplit(s.url).hostname if s.url else None
    if base[0] == "commons" and host and host != "commons.wikimedia.org":
        return f"uploaded to {host}" + (f" by {s.account}" if s.account else "")
    verb = _ORIGIN_NAMES.get(base[0]) or (
        f"published on {base[1]} (export by {base[0]})" if len(base) == 2
        else f"published ({s.origin})")
    if s.origin == "check":
        return "first submitted to this desk" + (f", from {s.url}" if s.url else "")
    who = f" by {s.account}" if s.account else ""
    return f"{verb}{who}"


def sighting_entry(s: Sighting, reference_id: str | None) -> dict[str, Any]:
    strength, meaning = EVIDENCE.get(s.evidence, ("weak", s.evidence))
    return {"date": (s.seen_at or "")[:19] or "undated",
            "what": f"{_what(s)} [{strength} evidence: {s.evidence.replace('_', ' ')}]",
            "summary": _what(s),
            "kind": "sighting",
            "reference_id": reference_id, "source": s.origin, "url": s.url,
            "account": s.account, "text": s.text, "evidence": s.evidence,
            "strength": strength, "evidence_meaning": meaning}


def add_first_seen(result: CheckResult, archive: Archive,
                   desk_matches: list[Match] | None = None) -> None:
    """Add the sightings of every matched image to `result.timeline`, date-ordered, and say
    which publication is the earliest known and how strong its evidence is."""
    matches = list(result.matches) + list(desk_matches or [])
    if not matches or not supports_sightings(archive):
        return
    by_key = {m.key: m for m in matches}
    sightings = archive.sightings_for(by_key)
    own = {k for k, ss in sightings.items() if any(s.own_record for s in ss)}
    timeline: list[dict[str, Any]] = []
    for t in result.timeline:
        if t.get("kind") == "reference":
            m = next((m for m in matches if m.reference_id == t.get("reference_id")), None)
            if m is not None and m.key in own:
                continue  # its sighting below says more (who, where, how strong)
            # a reference an importer made from its publication is dated by the capture
            # date that publication states, not by a publication of its own
            imported = m is not None and any(
                s.url == m.source_url and s.origin not in ("check", "wayback")
                for s in sightings.get(m.key, []))
            kind = "stated_capture_date" if imported else "archive_reference"
            what = (f"taken, according to its publisher ({m.source or 'source'}): "
                    f"{m.event or 'archived photo'}") if imported and m is not None \
                else t["what"]
            t = {**t, "what": what, "evidence": kind, "strength": EVIDENCE[kind][0],
                 "evidence_meaning": EVIDENCE[kind][1], "url": m.source_url if m else None}
        timeline.append(t)
    for key, ss in sightings.items():
        for s in ss:
            timeline.append(sighting_entry(s, by_key[key].reference_id))
    timeline.sort(key=lambda e: (e["date"], e.get("kind") != "reference"))
    result.timeline = timeline
    pubs = [e for e in timeline if e.get("kind") in ("reference", "sighting")
            and e.get("evidence") not in ("desk_check", "stated_capture_date")
            and e["date"] != "undated"]
    desk = [e for e in timeline if e.get("evidence") == "desk_check"]
    notes: list[str] = []
    if pubs:
        first = pubs[0]
        where = f" ({first['url']})" if first.get("url") else ""
        notes.append(f"Earliest known publication: {first['date'][:10]}, "
                     f"{first.get('summary') or first['what']}"
                     f"{where}; evidence {first['strength']}: {first['evidence_meaning']}.")
    if desk:
        d = desk[0]
        notes.append(f"First submitted to this desk on {d['date'][:10]}"
                     + (f", from {d['url']}" if d.get("url") else "") + ".")
    # before the closing caveat, which stays last
    result.notes[max(0, len(result.notes) - 1):max(0, len(result.notes) - 1)] = notes


def record_check(archive: Archive, source: Source, result: CheckResult,
                 source_url: str | None = None, limits: Limits | None = None,
                 now: dt.datetime | None = None) -> Sighting | None:
    """Store this check as a sighting (opt-in: `check --record`): linked to the likely
    original when there is one, else kept as a desk-check record that later copies match.
    Returns None when the input could not be read (nothing to remember)."""
    from imgverify.ingest.importers.ingest import prepare_loaded

    if result.sha256 is None:
        return None
    if not supports_sightings(archive):
        raise ArchiveError(f"{archive.path}: recording checks needs a SQLite archive (this "
                           "storage backend does not keep sightings yet)")
    when = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat()
    s = Sighting(origin="check", source_key=f"{result.sha256}|{source_url or ''}",
                 evidence="desk_check", seen_at=when, url=source_url, sha256=result.sha256,
                 text=("claimed " + ", ".join(x for x in (result.claimed_date,
                                                         result.claimed_place) if x))
                 if (result.claimed_date or result.claimed_place) else None,
                 extra={"verdict": result.verdict, "input": result.input})
    known = archive.find_sighting("check", s.source_key)
    if known is not None:
        return known  # the first submission is what the desk needs to remember
    likely = [m for m in result.matches if m.strength == "likely"]
    if likely:
        s.ref_key, s.match_score = likely[0].key, likely[0].score
    else:
        existing = archive.find_sha256(result.sha256)
        if existing is None:
            try:
                loaded = load(source, limits)
            except ImgVerifyError:
                return None
            ctx: dict[str, str | None] = {"date": when[:10], "source": DESK_CHECK_SOURCE,
                                          "source_url": source_url, "caption": s.text}
            archive.write_batch([prepare_loaded(loaded, result.input, ctx)])
            existing = archive.find_sha256(result.sha256)
        s.ref_key = existing.key if existing else None
        s.own_record = True
    archive.add_sightings([s])
    return s


__all__ = ["DESK_CHECK_SOURCE", "add_first_seen", "record_check", "split_desk_checks",
           "sighting_entry"]
