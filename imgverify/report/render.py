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

from imgverify.match.result import ERROR, LIKELY, NO_MATCH, POSSIBLY, CheckResult

HEADLINE = {
    LIKELY: "LIKELY RECYCLED: this photo was published before",
    POSSIBLY: "POSSIBLY RECYCLED: similar to an archived photo; compare them by eye",
    NO_MATCH: "NO MATCH in this archive (this does not show the image is authentic)",
    ERROR: "ERROR: the input could not be checked",
}


def to_json(result: CheckResult, indent: int | None = 2) -> str:
    return json.dumps(result.to_dict(), ensure_ascii=False, indent=indent)


def _describe_distances(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}/{256 if k == 'pdq' else 64}" for k, v in d.items())


def to_text(result: CheckResult) -> str:
    lines = [f"{result.input}", f"  verdict: {result.verdict} — {HEADLINE[result.verdict]}"]
    if result.error:
        lines.append(f"  error ({result.error['kind']}): {result.error['message']}")
    if result.claimed_date or result.claimed_place:
        lines.append(f"  claimed: {result.claimed_date or '?'}"
                     + (f", {result.claimed_place}" if result.claimed_place else ""))
    for i, m in enumerate(result.matches):
        role = {"likely_original": "likely original", "later_publication": "later publication",
                "candidate": "candidate"}.get(m.role, m.role)
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
        lines.append(f"    evidence: {_describe_distances(m.distances)} (Hamming distances; "
                     "unrelated photos differ in about half the bits)")
        lines.append(f"    reference: {m.reference_id}")
    if result.timeline and result.matches:
        lines.append("  timeline:")
        for t in result.timeline:
            lines.append(f"    {t['date']}  {t['what']}")
    for f in result.claim_checks:
        lines.append(f"  finding ({f['strength']}): {f['finding']}")
    exif = {k: v for k, v in result.exif.items() if v}
    if exif:
        lines.append("  exif: " + "; ".join(f"{k}={v}" for k, v in exif.items()))
    for note in result.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines) + "\n"


VERDICT_STYLE = {LIKELY: "bold white on red", POSSIBLY: "bold black on yellow",
                 NO_MATCH: "bold white on green", ERROR: "bold white on grey37"}


def print_rich(result: CheckResult, console: Any) -> None:
    """Coloured terminal rendering (rich): verdict line, matches table, timeline, findings."""
    from rich.table import Table
    from rich.text import Text

    console.print(Text(f" {result.verdict.upper()} ", style=VERDICT_STYLE[result.verdict]),
                  Text(f" {HEADLINE[result.verdict]}"))
    console.print(Text(f"input: {result.input}", style="dim"))
    if result.error:
        console.print(Text(f"{result.error['kind']}: {result.error['message']}", style="red"))
    if result.matches:
        table = Table(show_lines=True, expand=True)
        for col in ("#", "date", "event / place", "source / credit", "edits", "score"):
            table.add_column(col, overflow="fold")
        for i, m in enumerate(result.matches, 1):
            table.add_row(
                Text(f"{i} {m.role.replace('_', ' ')}"), Text(m.date),
                Text(f"{m.event or '-'}\n{m.place or ''}"),
                Text(f"{m.source or '-'}\n{m.source_url or ''}\n{m.credit or ''}"),
                Text(m.transform or "none detected"),
                Text(f"{m.score:.2f} {m.strength}\n{_describe_distances(m.distances)}"))
        console.print(table)
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
.no_match{background:#e6f2ea;border-left:8px solid #2e7d4f}
.error{background:#eee;border-left:8px solid #555}
.pair{display:flex;flex-wrap:wrap;gap:1rem;margin:1rem 0}.pair figure{flex:1 1 300px;margin:0}
.pair img{max-width:100%;height:auto;border:1px solid #ccc;display:block}
figcaption{font-size:.9rem;color:#444}table{border-collapse:collapse;width:100%;margin:.5rem 0}
td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top;
overflow-wrap:anywhere;unicode-bidi:plaintext}th{width:11rem;color:#555;font-weight:600}
.caveat{font-style:italic;color:#333}.frame{position:relative;display:inline-block;max-width:100%}
.region{position:absolute;border:3px solid #e00;box-shadow:0 0 0 2px #fff;pointer-events:none}
.timeline li.claim{color:#a05a00}.findings li.strong b{color:#c0392b}
.match{border:1px solid #ddd;border-radius:8px;padding:.8rem;
margin:1rem 0;break-inside:avoid}@media print{.pair figure{flex:1 1 45%}}
"""


def to_html(result: CheckResult, query_jpeg: bytes | None,
            reference_jpegs: dict[str, bytes | None]) -> str:
    """A self-contained report: submitted image beside each matched reference, with context."""
    e = html.escape
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
             "img-src data:; style-src 'unsafe-inline'\">",
             f"<title>imgverify report: {e(result.input)}</title>",
             f"<style>{_CSS}</style></head><body>",
             "<h1>imgverify report</h1>",
             f"<p>Submitted: <b>{e(result.input)}</b>"
             + (f" — claimed date {e(result.claimed_date)}" if result.claimed_date else "")
             + (f", claimed place {e(result.claimed_place)}" if result.claimed_place else "")
             + "</p>",
             f"<div class='verdict {e(result.verdict)}' id='verdict'>{e(HEADLINE[result.verdict])}"
             "</div>"]
    if result.error:
        parts.append(f"<p>Error ({e(result.error['kind'])}): {e(result.error['message'])}</p>")
    qsrc = _data_uri(query_jpeg)
    for i, m in enumerate(result.matches):
        rsrc = _data_uri(reference_jpegs.get(m.reference_id))
        parts.append(f"<section class='match' id='match-{i + 1}'><h2>Match {i + 1}: "
                     f"{e(m.event or 'archived photo')} ({e(m.date)})</h2><div class='pair'>")
        if qsrc:
            overlay = ""
            if m.region:
                x0, y0, x1, y1 = (max(0.0, min(1.0, float(v))) * 100 for v in m.region)
                overlay = (f"<div class='region' style='left:{x0:.2f}%;top:{y0:.2f}%;"
                           f"width:{x1 - x0:.2f}%;height:{y1 - y0:.2f}%'></div>")
            parts.append(f"<figure><div class='frame'><img id='query-img-{i + 1}' src='{qsrc}' "
                         f"alt='submitted image'>{overlay}</div><figcaption>Submitted image"
                         + (" (the matched photo is outlined)" if overlay else "")
                         + "</figcaption></figure>")
        if rsrc:
            parts.append(f"<figure><img id='ref-img-{i + 1}' src='{rsrc}' alt='archived photo'>"
                         f"<figcaption>Archived photo, dated {e(m.date)}</figcaption></figure>")
        parts.append("</div><table>")
        href = _safe_href(m.source_url)
        rows: list[tuple[str, str]] = [
            ("Role", e(m.role.replace("_", " "))),
            ("Score", f"{m.score:.2f} ({e(m.strength)} match)"),
            ("Event", e(m.event or "-")), ("Date", e(m.date)), ("Place", e(m.place or "-")),
            ("Caption", e(m.caption or "-")),
            ("Source", e(m.source or "-") + (f" — <a href='{e(href)}' rel='noopener noreferrer'>"
                                             f"{e(href)}</a>" if href else
                                             (f" — {e(m.source_url)}" if m.source_url else ""))),
            ("Credit", e(m.credit or "-")), ("Licence", e(m.license or "-")),
            ("Edits detected", e(m.transform or "none detected")),
            ("Evidence", e(_describe_distances(m.distances)) +
             " — Hamming distances between perceptual hashes; unrelated photos differ in "
             "about half of the bits, copies in few."),
        ]
        if m.days_before_claim is not None:
            rows.append(("Before the claim", f"{m.days_before_claim} days"))
        parts.extend(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        parts.append("</table></section>")
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
    parts.append("<h2>Camera metadata (EXIF)</h2><table>")
    for k, v in result.exif.items():
        parts.append(f"<tr><th>{e(k)}</th><td>{e(json.dumps(v, ensure_ascii=False)) if v else '-'}"
                     "</td></tr>")
    parts.append("</table><h2>Summary</h2><ul>")
    parts.extend(f"<li>{e(n)}</li>" for n in result.notes)
    parts.append("</ul><p class='caveat'>A match shows the photo was archived before; "
                 "\"no match\" only means it is not in this archive, never that it is authentic."
                 "</p></body></html>")
    return "".join(parts)


def to_batch_html(summary: dict[str, Any], finds: list[dict[str, Any]],
                  query_jpegs: dict[str, bytes | None],
                  reference_jpegs: dict[str, bytes | None], errors: list[dict[str, Any]]) -> str:
    """One self-contained page for a scan: recycled finds first, with thumbnails and details."""
    e = html.escape
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
             "img-src data:; style-src 'unsafe-inline'\">",
             f"<title>imgverify scan summary</title><style>{_CSS}"
             ".thumbs img{max-width:220px;max-height:160px;margin-right:.5rem}</style>"
             "</head><body><h1>imgverify scan summary</h1>"]
    counts = ", ".join(f"{e(str(k))}: {e(str(v))}" for k, v in
                       sorted(summary.get("verdicts", {}).items()))
    parts.append(f"<p id='counts'>{e(str(summary.get('checked', 0)))} checked — {counts}</p>")
    parts.append("<h2>Recycled finds</h2>")
    if not finds:
        parts.append("<p>None in this archive.</p>")
    parts.append("<ol>")
    for i, r in enumerate(finds):
        parts.append(f"<li><a href='#find-{i}'>{e(r['input'])}</a> — {e(r['verdict'])}: "
                     f"{e(r['matches'][0].get('event') or 'archived photo')} "
                     f"({e(r['matches'][0]['date'])})</li>")
    parts.append("</ol>")
    for i, r in enumerate(finds):
        m = r["matches"][0]
        q = _data_uri(query_jpegs.get(r["input"]))
        ref = _data_uri(reference_jpegs.get(m["reference_id"]))
        parts.append(f"<section class='match' id='find-{i}'><h3>{e(r['input'])}</h3>"
                     f"<div class='verdict {e(r['verdict'])}'>{e(HEADLINE[r['verdict']])}</div>"
                     "<div class='thumbs'>")
        if q:
            parts.append(f"<img src='{q}' alt='submitted image'>")
        if ref:
            parts.append(f"<img src='{ref}' alt='archived photo'>")
        href = _safe_href(m.get("source_url"))
        parts.append("</div><table>")
        for label, key in (("Event", "event"), ("Date", "date"), ("Place", "place"),
                           ("Caption", "caption"), ("Source", "source"), ("Credit", "credit"),
                           ("Edits detected", "transform")):
            parts.append(f"<tr><th>{label}</th><td>{e(str(m.get(key) or '-'))}</td></tr>")
        if href:
            parts.append(f"<tr><th>Link</th><td><a href='{e(href)}' rel='noopener noreferrer'>"
                         f"{e(href)}</a></td></tr>")
        parts.append(f"<tr><th>Score</th><td>{e(str(m.get('score')))}</td></tr></table>"
                     "</section>")
    if errors:
        parts.append(f"<h2>Inputs that could not be checked ({len(errors)})</h2><ul>")
        for r in errors[:1000]:
            err = r.get("error") or {}
            parts.append(f"<li>{e(r['input'])}: {e(str(err.get('kind')))} — "
                         f"{e(str(err.get('message')))}</li>")
        parts.append("</ul>")
    parts.append("<p class='caveat'>\"No match\" only means not in this archive, never that an "
                 "image is authentic.</p></body></html>")
    return "".join(parts)
