"""Wikimedia Commons (or any MediaWiki wiki): a category or a search, as dated references.

One API request lists up to 50 files with everything we keep (imageinfo: url, sha1, size,
mime, upload timestamp, extmetadata, and a thumbnail URL of the width we ask for). Only that
reduced rendition is downloaded: enough for hashes and the report's thumbnail, a fraction of
the original's bytes. The continuation token is saved after each committed page, so an
interrupted import resumes where it stopped; files already imported with the same sha1 are
skipped, so re-running is cheap and never duplicates.

Fields kept: DateTimeOriginal -> date (else the upload day); upload timestamp -> published;
ImageDescription -> caption; Artist (else Credit) -> credit; LicenseShortName -> license;
GPSLatitude/GPSLongitude -> place ("lat, lon"); descriptionurl -> source_url; the category
(or the search) -> event. Text arrives as HTML and is reduced to plain text.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from imgverify.ingest.importers.http import ImportHTTPError, PoliteClient
from imgverify.ingest.importers.ingest import Importer, ImportItem, ImportReport
from imgverify.store.sightings import Sighting, normalise_time

COMMONS_API = "https://commons.wikimedia.org/w/api.php"
IIPROP = "url|sha1|extmetadata|size|mime|timestamp|user"
#: width of the rendition we download unless the original is asked for: one of Wikimedia's
#: standard thumbnail steps (20 ... 500, 960, 1280, 1920, 3840; other widths are being
#: phased out), and more than the hashes need (they work on a picture of at most 1024 px)
RENDITION_WIDTH = 960
STANDARD_WIDTHS = (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)
MAXLAG = 5
PAGE_SIZE = 50

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_DATE = re.compile(r"(\d{4})[-:](\d{2})[-:](\d{2})")


def plain_text(value: Any, limit: int = 5000) -> str | None:
    """extmetadata values are HTML fragments: tags dropped, entities decoded, spaces folded."""
    if value is None:
        return None
    text = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", str(value)))).strip()
    return text[:limit] or None


def _meta(ext: dict[str, Any], name: str) -> str | None:
    entry = ext.get(name)
    if not isinstance(entry, dict):
        return None
    value = entry.get("value")
    if isinstance(value, dict):  # iiextmetadatamultilang: {"en": ..., "fa": ..., "_type": ...}
        value = value.get("en") or next((v for k, v in value.items() if not k.startswith("_")),
                                        None)
    return plain_text(value)


def capture_date(value: str | None) -> str | None:
    """The first real calendar date in Commons' DateTimeOriginal (free text, often
    '2023-10-07 10:15', sometimes 'October 2023' or a template's output)."""
    if not value:
        return None
    for m in _DATE.finditer(value):
        try:
            return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
        except ValueError:
            continue
    return None


def _coordinate(value: str | None, bound: float) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and -bound <= number <= bound else None


@dataclass
class CommonsOptions:
    api_url: str = COMMONS_API
    depth: int = 0
    since: dt.date | None = None
    full: bool = False  # download originals instead of the reduced rendition
    width: int = RENDITION_WIDTH
    limit: int | None = None  # stop after this many files (for a quick look)
    resume: bool = True


def _pages(data: dict[str, Any]) -> list[dict[str, Any]]:
    pages = data.get("query", {}).get("pages", [])
    if isinstance(pages, dict):  # formatversion=1
        pages = list(pages.values())
    return [p for p in pages if isinstance(p, dict)]


def _is_maxlag(resp: Any) -> bool:
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and \
        body["error"].get("code") == "maxlag"


class CommonsImport:
    """`run()` imports a category (with subcategories to `depth`) or a search query."""

    def __init__(self, importer: Importer, client: PoliteClient, target: str,
                 options: CommonsOptions | None = None,
                 on_item: Callable[[], None] | None = None) -> None:
        self.importer = importer
        self.client = client
        self.options = options or CommonsOptions()
        self.target = target.strip()
        self.on_item = on_item
        self.is_category = self.target.lower().startswith("category:")
        self.job = f"commons|{self.options.api_url}|{self.target}|{self.options.depth}"
        self.seen = 0

    def _api(self, params: dict[str, Any]) -> dict[str, Any]:
        query = {"action": "query", "format": "json", "formatversion": "2",
                 "maxlag": MAXLAG, **params}
        data = self.client.get_json(self.options.api_url, query, is_retryable=_is_maxlag)
        if not isinstance(data, dict):
            raise ImportHTTPError(f"{self.options.api_url} answered something other than a "
                                  "MediaWiki query response")
        if isinstance(data.get("error"), dict):
            err = data["error"]
            raise ImportHTTPError(f"MediaWiki API error {err.get('code')}: {err.get('info')}")
        return data

    def _listing(self, title: str) -> dict[str, Any]:
        props = {"prop": "imageinfo", "iiprop": IIPROP, "iiurlwidth": self.options.width,
                 "iiextmetadatafilter": "DateTimeOriginal|ImageDescription|Artist|Credit|"
                 "LicenseShortName|GPSLatitude|GPSLongitude|ObjectName"}
        if title.lower().startswith("category:"):
            return {"generator": "categorymembers", "gcmtitle": title,
                    "gcmtype": "file|subcat", "gcmlimit": PAGE_SIZE, **props}
        return {"generator": "search", "gsrsearch": title, "gsrnamespace": 6,
                "gsrlimit": PAGE_SIZE, **props}

    def run(self) -> ImportReport:
        state = self.importer.archive.import_state(self.job) if self.options.resume else None
        queue: list[tuple[str, int]] = [(self.target, 0)]
        done: list[str] = []
        cont: dict[str, Any] | None = None
        if state:
            queue = [(t, d) for t, d in state.get("queue", [])] or queue
            done = list(state.get("done", []))
            cont = state.get("continue")
        while queue:
            title, level = queue[0]
            for pages, next_cont in self._walk(title, cont):
                for page in pages:
                    if page.get("ns") == 14:
                        sub = str(page.get("title", ""))
                        if level < self.options.depth and sub not in done and \
                                all(sub != q for q, _ in queue):
                            queue.append((sub, level + 1))
                        continue
                    if self.options.limit is not None and self.seen >= self.options.limit:
                        break
                    self._file(page, title)
                self.importer.archive.save_import_state(self.job, {
                    "queue": queue, "done": done, "continue": next_cont})
                if self.options.limit is not None and self.seen >= self.options.limit:
                    self.importer.archive.save_import_state(self.job, None)
                    return self.importer.report
            cont = None
            done.append(title)
            queue.pop(0)
        self.importer.archive.save_import_state(self.job, None)
        return self.importer.report

    def _walk(self, title: str, cont: dict[str, Any] | None
              ) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any] | None]]:
        params = self._listing(title)
        while True:
            data = self._api({**params, **(cont or {})})
            raw = data.get("continue")
            cont = {str(k): v for k, v in raw.items()} if isinstance(raw, dict) else None
            yield _pages(data), cont
            if cont is None:
                return

    def _file(self, page: dict[str, Any], category: str) -> None:
        title = str(page.get("title") or f"page {page.get('pageid')}")
        self.seen += 1
        if self.on_item is not None:
            self.on_item()
        infos = page.get("imageinfo")
        if not isinstance(infos, list) or not infos or not isinstance(infos[0], dict):
            self.importer.error(title, "no imageinfo in the API answer (missing or "
                                "malformed entry)")
            return
        info = infos[0]
        mime = str(info.get("mime") or "")
        if not mime.startswith("image/"):
            self.importer.skip(title, f"not an image ({mime or 'unknown type'})")
            return
        uploaded = normalise_time(info.get("timestamp"))
        if self.options.since and (uploaded is None or uploaded[:10] <
                                   self.options.since.isoformat()):
            self.importer.skip(title, f"uploaded {uploaded or 'at an unknown time'}, before "
                               "--since")
            return
        sha1 = str(info.get("sha1") or "") or None
        page_url = info.get("descriptionurl")
        if not isinstance(page_url, str) or not page_url.startswith(("http://", "https://")):
            self.importer.error(title, "no file page URL (descriptionurl) in the API answer")
            return
        if self.importer.known("commons", page_url, sha1):
            return
        media = info.get("url") if self.options.full else (info.get("thumburl") or
                                                            info.get("url"))
        if not isinstance(media, str) or not media.startswith(("http://", "https://")):
            self.importer.error(title, "no download URL in the API answer")
            return
        raw_ext = info.get("extmetadata")
        ext: dict[str, Any] = raw_ext if isinstance(raw_ext, dict) else {}
        taken = capture_date(_meta(ext, "DateTimeOriginal"))
        date = taken or (uploaded[:10] if uploaded else None)
        if date is None:
            self.importer.error(title, "neither a capture date nor an upload time")
            return
        lat = _coordinate(_meta(ext, "GPSLatitude"), 90)
        lon = _coordinate(_meta(ext, "GPSLongitude"), 180)
        event = plain_text(category.split(":", 1)[1] if self.is_category or
                           category.lower().startswith("category:") else category)
        caption = _meta(ext, "ImageDescription") or _meta(ext, "ObjectName")
        credit = _meta(ext, "Artist") or _meta(ext, "Credit")
        context: dict[str, str | None] = {
            "date": date, "event": event,
            "place": f"{lat:.5f}, {lon:.5f}" if lat is not None and lon is not None else None,
            "caption": caption, "source": "Wikimedia Commons" if "commons.wikimedia.org"
            in self.options.api_url else f"MediaWiki ({self.options.api_url})",
            "source_url": page_url, "credit": credit,
            "license": _meta(ext, "LicenseShortName"),
            "published": uploaded[:10] if uploaded else None}
        try:
            data = self.client.download(media)
        except ImportHTTPError as exc:
            self.importer.error(title, exc.message)
            return
        sighting = Sighting(origin="commons", source_key=page_url,
                            evidence="platform_timestamp", seen_at=uploaded, url=page_url,
                            account=plain_text(info.get("user")), text=caption,
                            media_url=media, source_sha1=sha1,
                            extra={"title": title, "capture_date": taken,
                                   "original": info.get("url"), "mime": mime,
                                   "size": info.get("size")})
        self.importer.add(ImportItem(sighting, data, context, label=title, image_uri=media))


def import_commons(importer: Importer, client: PoliteClient, target: str,
                   options: CommonsOptions | None = None,
                   on_item: Callable[[], None] | None = None) -> ImportReport:
    """Import a Commons category ("Category:...") or search query into the importer's
    archive; the report also carries the client's network time and retries."""
    report = CommonsImport(importer, client, target, options, on_item).run()
    report.network_seconds = client.network_seconds
    report.http_requests = client.requests
    report.http_retries = client.retried
    return importer.finish()


__all__ = ["COMMONS_API", "CommonsOptions", "CommonsImport", "import_commons", "capture_date",
           "plain_text"]
