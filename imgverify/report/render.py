"""Render a CheckResult for people (text, HTML) and machines (JSON).

Every string that comes from an archive, a manifest, EXIF or a file name is escaped in HTML;
the HTML report is one self-contained file (images embedded as data URIs).
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any
from urllib.parse import urlsplit

from imgverify.match.result import ERROR, LIKELY, NO_MATCH, POSSIBLY, CheckResult, Match
from imgverify.match.verdict import DEFAULT_THRESHOLDS, Thresholds, archive_phrase

HEADLINE = {
    LIKELY: "LIKELY RECYCLED: this photo was published before",
    POSSIBLY: "POSSIBLY RECYCLED: similar to an archived photo; compare them by eye",
    NO_MATCH: "NO MATCH in this archive (this does not show the image is authentic)",
    ERROR: "ERROR: the input could not be checked",
}

#: readable labels for the EXIF fields of `CheckResult.exif` (JSON keys stay as they are)
EXIF_LABELS = {
    "datetime_original": "Taken (camera clock)", "camera": "Camera", "software": "Software",
    "gps": "GPS position", "description": "Caption stored in the file",
}


def _claim_agrees(result: CheckResult) -> list[str]:
    """The claim checks ("date", "place") that agree with the matched reference, when the
    claim was compared and nothing of weight contradicts it (empty otherwise): then the
    archive holds this photo with the claimed date (and place), and the report says so."""
    if any(c.get("supports") == "recycled" for c in result.claim_checks
           if c.get("strength") in ("strong", "moderate")):
        return []
    compared = {c.get("check"): c.get("supports") for c in result.claim_checks
                if c.get("check") in ("date", "place")}
    if compared.get("date", "claim") != "claim":
        return []  # a date that does not agree (or cannot be compared) decides nothing
    return [k for k in ("date", "place") if compared.get(k) == "claim"]


def _what_where(m: Match) -> str:
    ctx = m.event or m.place or ""
    if len(ctx) > 90:
        ctx = ctx[:89].rstrip() + "…"
    return f"dated {m.date}" + (f" ({ctx})" if ctx else "")


def _span(days: int) -> str:
    if days >= 730:
        return f"{days / 365.25:.1f} years"
    if days >= 60:
        return f"{days / 30.44:.0f} months"
    return f"{days} days"


def headline(result: CheckResult) -> str:
    """One line that says what is known: a match whose date and place agree with the claim
    is not presented as if the claim were false; a no-match names what it was checked
    against."""
    top = result.top
    if result.verdict == NO_MATCH:
        return (f"NO MATCH in {archive_phrase(result.archive)} (this does not show the image "
                "is authentic)")
    if result.verdict == ERROR or top is None:
        return HEADLINE[ERROR]
    agreeing = _claim_agrees(result)
    if agreeing:
        agreed = " and ".join(agreeing) + (" agree" if len(agreeing) > 1 else " agrees")
        if result.verdict == LIKELY:
            return (f"MATCHES AN ARCHIVED PHOTO {_what_where(top)}: the archived {agreed} "
                    "with the claim")
        return (f"POSSIBLY THE ARCHIVED PHOTO {_what_where(top)}: the archived {agreed} "
                "with the claim; compare them by eye")
    if result.verdict == LIKELY:
        gap = top.days_before_claim
        if gap is not None and gap > 1:
            return (f"LIKELY RECYCLED: this photo was published before, {_what_where(top)}, "
                    f"{_span(gap)} before the claimed date")
        return f"LIKELY RECYCLED: this photo was published before, {_what_where(top)}"
    return (f"POSSIBLY RECYCLED: similar to an archived photo {_what_where(top)}; compare them "
            "by eye")


def to_json(result: CheckResult, indent: int | None = 2) -> str:
    return json.dumps(result.to_dict(), ensure_ascii=False, indent=indent)


_HASH_BITS = {"pdq": 256, "phash": 64, "dhash": 64, "whash": 64}


def _describe_distances(d: dict[str, int]) -> str:
    """Compact form for tables: hash distances over their bit length, inliers as a count."""
    bits = [f"{k} {v}/{_HASH_BITS[k]}" for k, v in d.items() if k in _HASH_BITS]
    if "local_inliers" in d:
        bits.append(f"{d['local_inliers']} keypoints aligned")
    return ", ".join(bits)


def evidence_lines(m: Match, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[str]:
    """Each matching stage explained in its own words (a Hamming sentence is never applied
    to an inlier count)."""
    out: list[str] = []
    if m.exact_copy:
        out.append("identical file: the same bytes (sha256) as the archived photo")
    hashes = {k: v for k, v in m.distances.items() if k in _HASH_BITS}
    if hashes and not m.exact_copy:
        bits = ", ".join(f"{k} {v} of {_HASH_BITS[k]}" for k, v in hashes.items())
        out.append(f"perceptual hashes differ in {bits} bits (Hamming distance; unrelated "
                   "photos differ in about half of the bits, copies in few)")
    inliers = m.distances.get("local_inliers")
    if inliers is not None:
        out.append(f"{inliers} keypoints of the submitted image line up with the archived photo "
                   "under one rotation, scale and shift (local features verified with "
                   f"RANSAC; {thresholds.local_likely} make a likely match, "
                   f"{thresholds.local_possible} a possible one)")
    return out


def _exif_value(key: str, value: Any) -> str:
    if key == "gps" and isinstance(value, dict) and "lat" in value and "lon" in value:
        return f"{value['lat']:.6f}, {value['lon']:.6f}"
    if key == "datetime_original" and isinstance(value, str):
        return value.replace("T", " ")
    return str(value)


def exif_rows(exif: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(readable label, value or None) for every EXIF field, in a fixed order."""
    keys = list(EXIF_LABELS) + [k for k in exif if k not in EXIF_LABELS]
    return [(EXIF_LABELS.get(k, k.replace("_", " ").capitalize()),
             _exif_value(k, exif[k]) if exif.get(k) not in (None, "") else None)
            for k in keys if k in exif]


def audit_lines(result: CheckResult) -> list[tuple[str, str]]:
    """(label, value): when, with what, against which archive, and which input."""
    tool = result.tool or {}
    rows = [("Checked at (UTC)", result.checked_at),
            ("Tool", f"{tool.get('name', 'imgverify')} {tool.get('version', '?')}, hash "
                     f"pipeline {tool.get('hash_pipeline', '?')}")]
    a = result.archive
    if a:
        ident = f"{a.get('name') or '?'}" + (f" (id {a['id']})" if a.get("id") else "")
        span = ""
        if a.get("earliest_date"):
            span = (f", dated {a['earliest_date']}" if a["earliest_date"] == a.get("latest_date")
                    else f", dated {a['earliest_date']} to {a.get('latest_date')}")
        n = a.get("references")
        rows.append(("Archive", f"{ident}, {a.get('backend', '?')}, {n} "
                                f"reference{'' if n == 1 else 's'}{span}, generation "
                                f"{a.get('generation', '?')}, "
                                f"hash pipeline {a.get('hash_pipeline', '?')}"))
    else:
        rows.append(("Archive", "unknown (not recorded in this result)"))
    rows.append(("Input sha256", result.sha256 or "not available (the input was not read)"))
    return rows


def _claim_line(result: CheckResult) -> str | None:
    if result.claimed_date and result.claimed_place:
        return f"claimed: {result.claimed_date}, {result.claimed_place}"
    if result.claimed_date:
        return f"claimed date: {result.claimed_date}"
    if result.claimed_place:
        return f"claimed place: {result.claimed_place}"
    return None


_TEXT_LABELS = {"Checked at (UTC)": "checked at", "Tool": "tool", "Archive": "archive",
                "Input sha256": "input sha256"}
_ROLE_WORDS = {"likely_original": "likely original", "later_publication": "later publication",
               "candidate": "candidate"}


def to_text(result: CheckResult) -> str:
    lines = [f"{result.input}", f"  verdict: {result.verdict} — {headline(result)}"]
    if result.error:
        lines.append(f"  error ({result.error['kind']}): {result.error['message']}")
    claim = _claim_line(result)
    if claim:
        lines.append(f"  {claim}")
    for key, text in audit_lines(result):
        lines.append(f"  {_TEXT_LABELS.get(key, key.lower())}: {text}")
    for i, m in enumerate(result.matches):
        role = _ROLE_WORDS.get(m.role, m.role)
        lines.append(f"  match {i + 1} ({role}, score {m.score:.2f}, {m.strength}):")
        lines.append(f"    event:   {m.event or '-'}")
        lines.append(f"    date:    {m.date}"
                     + (f"  ({m.days_before_claim} days before the claimed date)"
                        if m.days_before_claim is not None and m.days_before_claim > 0 else ""))
        for label, value in (("place", m.place), ("caption", m.caption), ("source", m.source),
                             ("url", m.source_url), ("credit", m.credit),
                             ("license", m.license), ("edits", m.transform)):
            if value:
                lines.append(f"    {label + ':':<8} {value}")
        for ev in evidence_lines(m):
            lines.append(f"    evidence: {ev}")
        if m.chance:
            lines.append(f"    chance:  {m.chance['words']}")
        lines.append(f"    reference: {m.reference_id}")
    if result.timeline and result.matches:
        lines.append("  timeline:")
        for t in result.timeline:
            lines.append(f"    {t['date']}  {t['what']}")
    for f in result.claim_checks:
        lines.append(f"  finding ({f['strength']}): {f['finding']}")
    exif = [(k, v) for k, v in exif_rows(result.exif) if v]
    if exif:
        lines.append("  camera metadata (EXIF): " + "; ".join(f"{k}: {v}" for k, v in exif))
    for note in result.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines) + "\n"


VERDICT_STYLE = {LIKELY: "bold white on red", POSSIBLY: "bold black on yellow",
                 NO_MATCH: "bold white on #4a5a70", ERROR: "bold white on grey37"}


def print_rich(result: CheckResult, console: Any) -> None:
    """Coloured terminal rendering (rich): verdict line, matches table, timeline, findings."""
    from rich.table import Table
    from rich.text import Text

    console.print(Text(f" {result.verdict.upper()} ", style=VERDICT_STYLE[result.verdict]),
                  Text(f" {headline(result)}"))
    console.print(Text(f"input: {result.input}", style="dim"))
    claim = _claim_line(result)
    if claim:
        console.print(Text(claim))
    for label, value in audit_lines(result):
        console.print(Text(f"{label}: {value}", style="dim"))
    if result.error:
        console.print(Text(f"{result.error['kind']}: {result.error['message']}", style="red"))
    if result.matches:
        table = Table(show_lines=True, expand=True)
        for col in ("#", "date", "event / place", "source / credit", "edits", "score"):
            table.add_column(col, overflow="fold")
        for i, m in enumerate(result.matches, 1):
            table.add_row(
                Text(f"{i} {_ROLE_WORDS.get(m.role, m.role)}\n{m.reference_id}"), Text(m.date),
                Text(f"{m.event or '-'}\n{m.place or ''}"),
                Text(f"{m.source or '-'}\n{m.source_url or ''}\n{m.credit or ''}"),
                Text(m.transform or "none detected"),
                Text(f"{m.score:.2f} {m.strength}\n{_describe_distances(m.distances)}"))
        console.print(table)
        top = result.matches[0]
        if top.chance:
            console.print(Text(top.chance["words"], style="dim"))
    if result.timeline and result.matches:
        console.print(Text("timeline", style="bold"))
        for t in result.timeline:
            style = "yellow" if t["kind"] == "claim" else ""
            console.print(Text(f"  {t['date']}  {t['what']}", style=style))
    for f in result.claim_checks:
        style = {"strong": "bold", "moderate": "", "weak": "dim", "info": "dim"}[f["strength"]]
        console.print(Text(f"- [{f['strength']}] {f['finding']}", style=style))
    for note in result.notes[-1:]:
        console.print(Text(note, style="italic"))


def _data_uri(jpeg: bytes | None) -> str | None:
    if not jpeg:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _safe_href(url: str | None) -> str | None:
    if not url:
        return None
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


def query_thumbnail(image: Any, side: int = 480) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((side, side))
    buf = io.BytesIO()
    thumb.convert("RGB").save(buf, "JPEG", quality=82)
    return buf.getvalue()


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1rem;color:#1a1a1a;line-height:1.45}
h1{font-size:1.4rem}.verdict{padding:.8rem 1rem;border-radius:8px;font-weight:700;font-size:1.15rem}
.likely_recycled{background:#fde2e1;border-left:8px solid #c0392b}
.possibly_recycled{background:#fff2d6;border-left:8px solid #e6a100}
.no_match{background:#eceff3;border-left:8px solid #5b6b7f}
.error{background:#eee;border-left:8px solid #555}
.pair{display:flex;flex-wrap:wrap;gap:1rem;margin:1rem 0;align-items:flex-start}
.pair figure{flex:1 1 0;min-width:260px;margin:0}
.pair img{width:100%;height:auto;border:1px solid #ccc;display:block;box-sizing:border-box}
figcaption{font-size:.9rem;color:#444}table{border-collapse:collapse;width:100%;margin:.5rem 0}
td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top;
overflow-wrap:anywhere;unicode-bidi:plaintext}th{width:11rem;color:#555;font-weight:600}
.caveat{font-style:italic;color:#333}.frame{position:relative;display:block;width:100%}
.region{position:absolute;border:3px solid #e00;box-shadow:0 0 0 2px #fff;pointer-events:none;
box-sizing:border-box}
.timeline li.claim{color:#a05a00}.findings li.strong b{color:#c0392b}
.audit th{width:11rem}.audit td{font-family:ui-monospace,monospace;font-size:.85rem}
.keypoints{width:100%;height:auto;display:block;border:1px solid #ccc;background:#fff}
.compare{display:flex;flex-wrap:wrap;gap:1rem}.compare figure{flex:1 1 0;min-width:260px;
margin:0}.stack{position:relative;display:block;width:100%}
.stack img{width:100%;height:auto;display:block;border:1px solid #ccc;box-sizing:border-box}
.stack img.over{position:absolute;left:0;top:0}
.flicker img.over{animation:flick 1.6s steps(1,end) infinite}
@keyframes flick{0%{opacity:1}50%{opacity:0}}.blend img.over{opacity:.5}
.match{border:1px solid #ddd;border-radius:8px;padding:.8rem;
margin:1rem 0;break-inside:avoid}@media print{.pair figure{flex:1 1 45%}}
"""

_CSP = ("<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">")


def _outline(box: tuple[float, float, float, float] | list[float] | None, cls: str = "region"
             ) -> str:
    if not box:
        return ""
    x0, y0, x1, y1 = (max(0.0, min(1.0, float(v))) * 100 for v in box)
    return (f"<div class='{cls}' style='left:{x0:.2f}%;top:{y0:.2f}%;"
            f"width:{x1 - x0:.2f}%;height:{y1 - y0:.2f}%'></div>")


def _partial(box: tuple[float, float, float, float] | list[float] | None) -> bool:
    """True when a box leaves out a visible part of its picture (worth outlining)."""
    if not box:
        return False
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x1 - x0) * (y1 - y0) < 0.9


def _footer(verdict: str) -> str:
    if verdict == NO_MATCH:
        return ("\"No match\" only means the image is not in this archive; it never shows that "
                "the image is authentic.")
    if verdict == ERROR:
        return "The input could not be checked; this report says nothing about the image."
    return ("A match shows when and with what context this photo was archived before; compare "
            "the two images by eye before stating a conclusion.")


def to_html(result: CheckResult, query_jpeg: bytes | None,
            reference_jpegs: dict[str, bytes | None]) -> str:
    """A self-contained report: submitted image beside each matched reference, with context."""
    e = html.escape
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>", _CSP,
             f"<title>imgverify report: {e(result.input)}</title>",
             f"<style>{_CSS}</style></head><body>",
             "<h1>imgverify report</h1>",
             f"<p>Submitted: <b>{e(result.input)}</b>"
             + (f" — claimed date {e(result.claimed_date)}" if result.claimed_date else "")
             + (f", claimed place {e(result.claimed_place)}" if result.claimed_place else "")
             + "</p>",
             f"<div class='verdict {e(result.verdict)}' id='verdict'>{e(headline(result))}"
             "</div>"]
    if result.error:
        parts.append(f"<p>Error ({e(result.error['kind'])}): {e(result.error['message'])}</p>")
    qsrc = _data_uri(query_jpeg)
    for i, m in enumerate(result.matches):
        rsrc = _data_uri(reference_jpegs.get(m.reference_id))
        parts.append(f"<section class='match' id='match-{i + 1}'><h2>Match {i + 1}: "
                     f"{e(m.event or 'archived photo')} ({e(m.date)})</h2><div class='pair'>")
        if qsrc:
            overlay = _outline(m.region) if _partial(m.region) else ""
            what = "the matched photo is outlined"
            if m.transform and "one tile of a collage" in m.transform:
                what = "the matched collage tile is outlined"
            parts.append(f"<figure><div class='frame'><img id='query-img-{i + 1}' src='{qsrc}' "
                         f"alt='submitted image'>{overlay}</div><figcaption>Submitted image"
                         + (f" ({what})" if overlay else "") + "</figcaption></figure>")
        if rsrc:
            used = (_outline(m.reference_region, "region ref-region")
                    if _partial(m.reference_region) else "")
            parts.append(f"<figure><div class='frame'><img id='ref-img-{i + 1}' src='{rsrc}' "
                         f"alt='archived photo'>{used}</div><figcaption>Archived photo, dated "
                         f"{e(m.date)}" + (" (the part used in the submitted image is outlined)"
                                           if used else "") + "</figcaption></figure>")
        parts.append("</div><table>")
        href = _safe_href(m.source_url)
        rows: list[tuple[str, str]] = [
            ("Role", e(_ROLE_WORDS.get(m.role, m.role))),
            ("Score", f"{m.score:.2f} ({e(m.strength)} match)"),
            ("Event", e(m.event or "-")), ("Date", e(m.date)), ("Place", e(m.place or "-")),
            ("Caption", e(m.caption or "-")),
            ("Source", e(m.source or "-") + (f" — <a href='{e(href)}' rel='noopener noreferrer'>"
                                             f"{e(href)}</a>" if href else
                                             (f" — {e(m.source_url)}" if m.source_url else ""))),
            ("Credit", e(m.credit or "-")), ("Licence", e(m.license or "-")),
            ("Edits detected", e(m.transform or "none detected")),
            ("Evidence", "<br>".join(e(x[0].upper() + x[1:]) + "." for x in evidence_lines(m))),
            ("Reference id", e(m.reference_id)),
        ]
        if m.chance:
            rows.insert(2, ("Chance of a false match", e(m.chance["words"])))
        if m.days_before_claim is not None:
            rows.append(("Before the claim", f"{m.days_before_claim} days"))
        parts.extend(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        parts.append("</table>")
        if m.alignment and query_jpeg and reference_jpegs.get(m.reference_id):
            parts.append(alignment_html(m.alignment, query_jpeg,
                                        reference_jpegs[m.reference_id] or b"", i + 1))
        parts.append("</section>")
    if not result.matches and qsrc:
        parts.append(f"<div class='pair'><figure><img id='query-img' src='{qsrc}' "
                     "alt='submitted image'><figcaption>Submitted image</figcaption>"
                     "</figure></div>")
    if result.timeline and result.matches:
        parts.append("<h2>Timeline</h2><ol class='timeline'>")
        for t in result.timeline:
            cls = " class='claim'" if t["kind"] == "claim" else ""
            parts.append(f"<li{cls}><b>{e(t['date'])}</b> — {e(t['what'])}"
                         + (f" ({e(t['source'])})" if t.get("source") else "") + "</li>")
        parts.append("</ol>")
    if result.claim_checks:
        parts.append("<h2>Claim checks</h2><ul class='findings'>")
        for f in result.claim_checks:
            parts.append(f"<li class='{e(f['strength'])}'><b>{e(f['strength'])}</b>: "
                         f"{e(f['finding'])}</li>")
        parts.append("</ul>")
    cc = result.content_credentials
    if cc and cc.get("present"):
        parts.append("<h2>Content Credentials (C2PA)</h2><table id='c2pa'>")
        for label, key in (("Signed by", "signer"), ("Tool", "claim_generator"),
                           ("Signing time", "signing_time"), ("Signature valid",
                           "signature_valid"), ("Content unchanged since signing",
                           "content_intact"), ("Signer trusted", "trusted"),
                           ("Recorded edits", "actions"), ("Problems", "problems")):
            value = cc.get(key)
            text = ", ".join(map(str, value)) if isinstance(value, list) else value
            shown = "-" if text in (None, "") else str(text)
            parts.append(f"<tr><th>{label}</th><td>{e(shown)}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Camera metadata (EXIF)</h2><table id='exif'>")
    for label, value in exif_rows(result.exif):
        parts.append(f"<tr><th>{e(label)}</th><td>{e(value) if value else '-'}</td></tr>")
    parts.append("</table><h2>Summary</h2><ul>")
    parts.extend(f"<li>{e(n)}</li>" for n in result.notes)
    parts.append("</ul><h2>Audit</h2><table class='audit' id='audit'>")
    parts.extend(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in audit_lines(result))
    parts.append(f"</table><p class='caveat'>{e(_footer(result.verdict))}</p></body></html>")
    return "".join(parts)


#: Most keypoint pairs drawn: beyond this the lines hide the pictures.
MAX_LINES = 80


def _decode(jpeg: bytes) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as im:
        return im.convert("RGB")


def aligned_jpeg(query_jpeg: bytes, reference_jpeg: bytes,
                 matrix: list[list[float]]) -> bytes | None:
    """The submitted image warped onto the archived photo's frame by the fitted transform
    (reference -> query, normalised), at the archived thumbnail's size; outside the
    submitted image stays black."""
    import cv2
    import numpy as np
    from PIL import Image

    q, r = _decode(query_jpeg), _decode(reference_jpeg)
    m = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    a = np.diag([q.width, q.height, 1.0]) @ m @ np.diag([1.0 / r.width, 1.0 / r.height, 1.0])
    try:
        warped = cv2.warpAffine(np.asarray(q), a[:2], (r.width, r.height),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    except cv2.error:
        return None
    buf = io.BytesIO()
    Image.fromarray(warped).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def alignment_html(alignment: dict[str, Any], query_jpeg: bytes, reference_jpeg: bytes,
                   n: int) -> str:
    """The local-feature evidence a person can check: matched keypoints joined between the
    two images (inline SVG), and the submitted image aligned onto the archived one, shown
    flickering and blended (CSS only: the report's CSP allows no script)."""
    q, r = _decode(query_jpeg), _decode(reference_jpeg)
    height = 360
    qw = q.width * height / q.height
    rw = r.width * height / r.height
    gap = 24
    width = qw + gap + rw
    pairs = alignment.get("inliers") or []
    step = max(1, len(pairs) // MAX_LINES)
    lines = []
    for k, ((qx, qy), (rx, ry)) in enumerate(pairs[::step][:MAX_LINES]):
        hue = (k * 47) % 360
        x1, y1, x2, y2 = qx * qw, qy * height, qw + gap + rx * rw, ry * height
        lines.append(f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' "
                     f"stroke='hsl({hue},90%,50%)' stroke-width='1.5'/>"
                     f"<circle cx='{x1:.1f}' cy='{y1:.1f}' r='3' fill='none' "
                     f"stroke='hsl({hue},90%,50%)'/><circle cx='{x2:.1f}' cy='{y2:.1f}' r='3' "
                     f"fill='none' stroke='hsl({hue},90%,50%)'/>")
    out = [f"<h3>How the images line up</h3><svg class='keypoints' id='keypoints-{n}' "
           f"viewBox='0 0 {width:.0f} {height}' xmlns='http://www.w3.org/2000/svg' "
           "role='img' aria-label='matched keypoints joined between the two images'>"
           f"<image href='{_data_uri(query_jpeg)}' x='0' y='0' width='{qw:.1f}' "
           f"height='{height}'/><image href='{_data_uri(reference_jpeg)}' x='{qw + gap:.1f}' "
           f"y='0' width='{rw:.1f}' height='{height}'/>{''.join(lines)}</svg>"
           f"<p><small>{len(pairs)} keypoints that fit one transform, joined (left: submitted, "
           f"right: archived{'; every ' + str(step) + 'th shown' if step > 1 else ''}).</small>"
           "</p>"]
    warped = aligned_jpeg(query_jpeg, reference_jpeg, alignment["reference_to_query"])
    if warped is not None:
        w, a = _data_uri(warped), _data_uri(reference_jpeg)
        out.append(
            "<div class='compare'>"
            f"<figure><div class='stack flicker' id='flicker-{n}'><img src='{a}' "
            f"alt='archived photo'><img class='over' src='{w}' alt='submitted image aligned "
            "onto the archived photo'></div><figcaption>Flicker: the submitted image, aligned "
            "by the fitted transform, alternates with the archived photo. A copy barely "
            "moves.</figcaption></figure>"
            f"<figure><div class='stack blend' id='blend-{n}'><img src='{a}' "
            f"alt='archived photo'><img class='over' src='{w}' alt='submitted image aligned "
            "onto the archived photo'></div><figcaption>Blend: both at half strength; a copy "
            "shows no double edges.</figcaption></figure></div>")
    return "".join(out)


def _group_finds(finds: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Finds grouped by the archived photo they match, groups in the archived photo's date
    order (then reference id), each group's inputs strongest first."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in finds:
        groups.setdefault(r["matches"][0]["reference_id"], []).append(r)
    ordered = sorted(groups.values(), key=lambda g: (str(g[0]["matches"][0].get("date") or ""),
                                                      g[0]["matches"][0]["reference_id"]))
    for g in ordered:
        g.sort(key=lambda r: (r["verdict"] != LIKELY, -float(r["matches"][0].get("score") or 0),
                              r["input"]))
    return ordered


def to_batch_html(summary: dict[str, Any], finds: list[dict[str, Any]],
                  query_jpegs: dict[str, bytes | None],
                  reference_jpegs: dict[str, bytes | None], errors: list[dict[str, Any]]) -> str:
    """One self-contained page for a scan: the recycled finds grouped by archived photo in
    date order, each submitted image labelled beside the archived one."""
    e = html.escape
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>", _CSP,
             f"<title>imgverify scan summary</title><style>{_CSS}"
             ".thumbs{display:flex;flex-wrap:wrap;gap:.75rem}.thumbs figure{margin:0;"
             "width:220px}.thumbs img{width:220px;height:auto;border:1px solid #ccc;"
             "display:block}</style></head><body><h1>imgverify scan summary</h1>"]
    counts = ", ".join(f"{e(str(k))}: {e(str(v))}" for k, v in
                       sorted(summary.get("verdicts", {}).items()))
    parts.append(f"<p id='counts'>{e(str(summary.get('checked', 0)))} checked — {counts}</p>")
    if summary.get("local_off"):
        parts.append(
            f"<p id='local-off'><b>{e(str(summary['local_off']))} of these were "
            "searched for whole-picture matches only</b> (<code>--no-local</code>): re-encoded, "
            "resized, mirrored and bordered copies. Crops, screenshots and collages among them "
            "were not searched, so their no_match says nothing about those edits; scan them "
            "again without --no-local before relying on it.</p>")
    audited = next((r for r in [*finds, *errors] if r.get("archive")), None)
    if audited is not None:
        a = audited["archive"]
        tool = audited.get("tool") or {}
        parts.append("<p id='archive'>Checked against "
                     f"{e(str(a.get('name')))}"
                     + (f" (id {e(str(a['id']))})" if a.get("id") else "")
                     + f", {e(str(a.get('backend')))}, {e(str(a.get('references')))} references"
                     f" dated {e(str(a.get('earliest_date')))} to "
                     f"{e(str(a.get('latest_date')))}, generation "
                     f"{e(str(a.get('generation')))}; imgverify "
                     f"{e(str(tool.get('version')))}, hash pipeline "
                     f"{e(str(tool.get('hash_pipeline')))}.</p>")
    groups = _group_finds(finds)
    parts.append("<h2>Recycled finds, by archived photo (oldest first)</h2>")
    if not finds:
        parts.append("<p>None in this archive.</p>")
    parts.append("<ol id='groups'>")
    for i, g in enumerate(groups):
        m = g[0]["matches"][0]
        parts.append(f"<li><a href='#find-{i}'>{e(str(m.get('date')))}: "
                     f"{e(m.get('event') or 'archived photo')}</a> — {len(g)} submitted "
                     f"image{'s' if len(g) != 1 else ''}</li>")
    parts.append("</ol>")
    for i, g in enumerate(groups):
        m = g[0]["matches"][0]
        ref = _data_uri(reference_jpegs.get(m["reference_id"]))
        parts.append(f"<section class='match' id='find-{i}'><h3>Archived photo dated "
                     f"{e(str(m.get('date')))}: {e(m.get('event') or 'archived photo')}</h3>"
                     "<div class='thumbs'>")
        if ref:
            parts.append(f"<figure><img src='{ref}' alt='archived photo'><figcaption><b>archived"
                         f"</b> {e(str(m.get('date')))} · {e(m['reference_id'])}</figcaption>"
                         "</figure>")
        for r in g:
            q = _data_uri(query_jpegs.get(r["input"]))
            top = r["matches"][0]
            if q:
                parts.append(f"<figure><img src='{q}' alt='submitted image'><figcaption><b>"
                             f"submitted</b> {e(r['input'])} · {e(r['verdict'])}, score "
                             f"{e(str(top.get('score')))}</figcaption></figure>")
        href = _safe_href(m.get("source_url"))
        parts.append("</div><table>")
        for label, key in (("Event", "event"), ("Date", "date"), ("Place", "place"),
                           ("Caption", "caption"), ("Source", "source"), ("Credit", "credit"),
                           ("Reference id", "reference_id")):
            parts.append(f"<tr><th>{label}</th><td>{e(str(m.get(key) or '-'))}</td></tr>")
        if href:
            parts.append(f"<tr><th>Link</th><td><a href='{e(href)}' rel='noopener noreferrer'>"
                         f"{e(href)}</a></td></tr>")
        parts.append("</table><table class='inputs'><tr><th>Submitted</th><th>Verdict</th>"
                     "<th>Edits detected</th><th>Score</th></tr>")
        for r in g:
            top = r["matches"][0]
            parts.append(f"<tr><td>{e(r['input'])}</td><td>{e(r['verdict'])}</td>"
                         f"<td>{e(str(top.get('transform') or 'none detected'))}</td>"
                         f"<td>{e(str(top.get('score')))}</td></tr>")
        parts.append("</table></section>")
    if errors:
        parts.append(f"<h2>Inputs that could not be checked ({len(errors)})</h2><ul>")
        for r in errors[:1000]:
            err = r.get("error") or {}
            exif = [(k, v) for k, v in exif_rows(r.get("exif") or {}) if v]
            parts.append(f"<li>{e(r['input'])}: {e(str(err.get('kind')))} — "
                         f"{e(str(err.get('message')))}"
                         + (" (camera metadata: " + e("; ".join(f"{k}: {v}" for k, v in exif))
                            + ")" if exif else "") + "</li>")
        parts.append("</ul>")
    parts.append("<p class='caveat'>\"No match\" only means not in this archive, never that an "
                 "image is authentic.</p></body></html>")
    return "".join(parts)
