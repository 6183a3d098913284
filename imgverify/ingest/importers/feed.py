"""RSS 2.0 and Atom feeds carrying photos with Media RSS (news and agency feeds).

Per item: each image in ``media:content`` (also inside ``media:group``), an image
``enclosure`` or an Atom ``link rel="enclosure"``; failing those, ``media:thumbnail``. Fields:
``pubDate`` / Atom ``published`` (else ``updated``, ``dc:date``) -> when it was published;
``link`` -> url; ``media:credit`` (else ``dc:creator``, ``author``) -> account;
``media:description`` (else ``description``/``summary``, else ``title``) -> text. Each image
is a sighting (platform timestamp), linked to the reference it matches or kept as an
unverified record.

XML with entity declarations is refused outright (no entity expansion tricks); the feed and
each image are fetched by the polite client with its size cap.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

from imgverify.ingest.importers.commons import plain_text
from imgverify.ingest.importers.http import ImportHTTPError, PoliteClient
from imgverify.ingest.importers.ingest import Importer, ImportItem, ImportReport
from imgverify.store.sightings import Sighting, normalise_time

MEDIA = "{http://search.yahoo.com/mrss/}"
ATOM = "{http://www.w3.org/2005/Atom}"
DC = "{http://purl.org/dc/elements/1.1/}"
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".gif")


class FeedError(ImportHTTPError):
    kind = "feed_error"


def _fold(value: str | None, limit: int = 5000) -> str | None:
    """Text elements (title, credit, creator) are plain text, not HTML: spaces folded only."""
    text = " ".join((value or "").split())[:limit]
    return text or None


def _find_text(el: ET.Element, *names: str) -> str | None:
    for name in names:
        found = el.find(name)
        if found is not None and (found.text or "").strip():
            return (found.text or "").strip()
    return None


def _is_image(node: ET.Element) -> bool:
    medium = node.get("medium")
    ctype = (node.get("type") or "").lower()
    url = (node.get("url") or node.get("href") or "").lower().split("?")[0]
    if medium:
        return medium == "image"
    if ctype:
        return ctype.startswith("image/")
    return url.endswith(_IMAGE_EXTS)


def _media(item: ET.Element) -> list[tuple[str, ET.Element]]:
    """(image URL, the element carrying per-image credit/description), document order."""
    out: list[tuple[str, ET.Element]] = []
    contents = list(item.findall(f"{MEDIA}content")) + [
        c for g in item.findall(f"{MEDIA}group") for c in g.findall(f"{MEDIA}content")]
    for c in contents:
        if c.get("url") and _is_image(c):
            out.append((c.get("url") or "", c))
    for e in item.findall("enclosure"):
        if e.get("url") and _is_image(e):
            out.append((e.get("url") or "", e))
    for link in item.findall(f"{ATOM}link"):
        if link.get("rel") == "enclosure" and link.get("href") and _is_image(link):
            out.append((link.get("href") or "", link))
    if not out:
        for t in item.findall(f"{MEDIA}thumbnail"):
            if t.get("url"):
                out.append((t.get("url") or "", t))
    seen: set[str] = set()
    return [(u, n) for u, n in out if not (u in seen or seen.add(u))]  # type: ignore[func-returns-value]


def parse_feed(data: bytes, base_url: str) -> Iterator[dict[str, Any]]:
    """Items of an RSS or Atom document as plain dicts (raises FeedError if it is neither)."""
    head = data[:4096].lower()
    if b"<!entity" in head or b"<!entity" in data.lower():
        raise FeedError("refusing a feed that declares XML entities")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise FeedError(f"not a well-formed RSS/Atom document ({exc})") from None
    atom = root.tag == f"{ATOM}feed"
    items = root.findall(f"{ATOM}entry") if atom else root.findall("./channel/item")
    if not atom and root.tag != "rss" and not items:
        raise FeedError(f"not an RSS or Atom feed (root element {root.tag!r})")
    for n, item in enumerate(items):
        if atom:
            link_el = next((li for li in item.findall(f"{ATOM}link")
                            if li.get("rel", "alternate") == "alternate"), None)
            link = link_el.get("href") if link_el is not None else None
            when = _find_text(item, f"{ATOM}published", f"{ATOM}updated", f"{DC}date")
            author = _find_text(item, f"{ATOM}author/{ATOM}name")
            text = _find_text(item, f"{ATOM}summary", f"{ATOM}content")
            guid = _find_text(item, f"{ATOM}id")
            title = _find_text(item, f"{ATOM}title")
        else:
            link = _find_text(item, "link")
            when = _find_text(item, "pubDate", f"{DC}date")
            author = _find_text(item, f"{DC}creator", "author")
            text = _find_text(item, "description")
            guid = _find_text(item, "guid")
            title = _find_text(item, "title")
        yield {"index": n, "link": urljoin(base_url, link) if link else None, "when": when,
               "author": author, "text": text, "title": title, "guid": guid,
               "media": [(urljoin(base_url, u), {
                   "credit": _find_text(node, f"{MEDIA}credit") or _find_text(
                       item, f"{MEDIA}credit"),
                   "description": _find_text(node, f"{MEDIA}description") or _find_text(
                       item, f"{MEDIA}description")}) for u, node in _media(item)]}


def import_feed(importer: Importer, client: PoliteClient, url: str,
                on_item: Callable[[], None] | None = None) -> ImportReport:
    """Every image of every item of the feed at `url`, as sightings."""
    resp = client.get(url)
    host = urlsplit(url).hostname or "feed"
    for item in parse_feed(bytes(resp.content), url):
        label = f"item {item['index']}: {_fold(item['title'], 120) or item['link']}"
        seen = normalise_time(item["when"])
        if not item["media"]:
            importer.skip(label, "no image in this item (media:content, enclosure, "
                          "media:thumbnail)")
            continue
        if seen is None:
            importer.error(label, f"no usable publication date ({item['when']!r})")
            continue
        for n, (media_url, meta) in enumerate(item["media"]):
            if on_item is not None:
                on_item()
            key = f"{item['guid'] or item['link'] or media_url}#{n}"
            origin = f"feed/{host}"
            if importer.known(origin, key):
                continue
            if not media_url.startswith(("http://", "https://")):
                importer.error(label, "image URL is not http(s)")
                continue
            try:
                data = client.download(media_url)
            except ImportHTTPError as exc:
                importer.error(label, exc.message)
                continue
            link = item["link"] if str(item["link"] or "").startswith(("http://", "https://")) \
                else None
            s = Sighting(origin=origin, source_key=key, seen_at=seen, url=link,
                         account=_fold(meta["credit"] or item["author"], 300),
                         text=plain_text(meta["description"] or item["text"])
                         or _fold(item["title"]),
                         media_url=media_url,
                         extra={"feed": url, "title": _fold(item["title"], 500)})
            importer.add(ImportItem(s, data, None, label=label, image_uri=media_url))
    report = importer.finish()
    report.network_seconds = client.network_seconds
    report.http_requests = client.requests
    report.http_retries = client.retried
    return report


__all__ = ["FeedError", "import_feed", "parse_feed"]
