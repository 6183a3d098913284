"""Local stand-ins for the services the importers talk to, answering in their documented shape.

`FixtureWiki` is a MediaWiki API (action=query with generator=categorymembers or
generator=search, prop=imageinfo with iiprop=url|sha1|extmetadata|size|mime|timestamp and
iiurlwidth thumbnails, `continue` paging, maxlag errors as MediaWiki sends them: HTTP 200,
error code "maxlag", Retry-After header) plus the upload server holding originals and
thumbnails, plus a Wayback CDX endpoint (output=json: a header row then one row per capture)
and static files (feeds). Faults are scripted per path: a list of (status, headers, body)
answers served before the real one.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image


@dataclass
class WikiFile:
    title: str  # "File:Name.jpg"
    data: bytes
    mime: str = "image/jpeg"
    timestamp: str = "2023-10-08T09:00:00Z"
    user: str = "Uploader"
    extmetadata: dict[str, Any] = field(default_factory=dict)
    malformed: bool = False  # served without imageinfo

    @property
    def name(self) -> str:
        return self.title.split(":", 1)[1].replace(" ", "_")


def jpeg_of(path: Path, width: int | None = None, quality: int = 90) -> bytes:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if width is not None and im.width > width:
            im = im.resize((width, round(im.height * width / im.width)))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        return buf.getvalue()


class FixtureWiki:
    """State shared with the request handler: categories, files, faults and a request log."""

    def __init__(self, page_size: int = 3) -> None:
        self.categories: dict[str, list[str]] = {}  # category -> member titles (files, subcats)
        self.files: dict[str, WikiFile] = {}
        self.page_size = page_size
        self.faults: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}
        self.log: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        self.static: dict[str, tuple[str, bytes]] = {}  # path -> (content type, body)
        self.cdx: dict[str, list[list[str]]] = {}  # url -> capture rows
        self.base = ""
        self.broken_api_after: int | None = None  # every API page after this index fails
        self.thumbs: dict[str, bytes] = {}  # rendered once, as a real thumbnail server caches

    def add_file(self, category: str, f: WikiFile) -> None:
        self.files[f.title] = f
        self.categories.setdefault(category, []).append(f.title)

    def add_subcategory(self, parent: str, child: str) -> None:
        self.categories.setdefault(parent, []).append(child)
        self.categories.setdefault(child, [])

    def paths(self, prefix: str) -> list[str]:
        return [p for p, _, _ in self.log if p.startswith(prefix)]

    def page(self, title: str) -> dict[str, Any]:
        if title.startswith("Category:"):
            return {"pageid": abs(hash(title)) % 10**6, "ns": 14, "title": title}
        f = self.files[title]
        page: dict[str, Any] = {"pageid": abs(hash(title)) % 10**6, "ns": 6, "title": title,
                                "imagerepository": "local"}
        if f.malformed:
            return page
        with Image.open(io.BytesIO(f.data)) if f.mime.startswith("image/") else \
                _nullcontext() as im:
            w, h = (im.width, im.height) if im is not None else (0, 0)
        tw = min(w, 1024) if w else 0
        page["imageinfo"] = [{
            "timestamp": f.timestamp, "user": f.user, "size": len(f.data), "width": w,
            "height": h,
            "thumburl": f"{self.base}/thumb/{f.name}" if w else None,
            "thumbwidth": tw, "thumbheight": round(h * tw / w) if w else 0,
            "url": f"{self.base}/orig/{f.name}",
            "descriptionurl": f"{self.base}/wiki/{f.title.replace(' ', '_')}",
            "descriptionshorturl": f"{self.base}/w/index.php?curid={page['pageid']}",
            "sha1": hashlib.sha1(f.data).hexdigest(), "mime": f.mime,
            "extmetadata": {k: {"value": v, "source": "commons-desc-page"}
                            for k, v in f.extmetadata.items()},
        }]
        return page

    def api(self, q: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        def one(name: str, default: str = "") -> str:
            return q.get(name, [default])[0]

        if one("action") != "query" or one("format") != "json":
            return 200, {}, json.dumps({"error": {"code": "badvalue",
                                                  "info": "unsupported"}}).encode()
        if one("generator") == "categorymembers":
            members = self.categories.get(one("gcmtitle"), [])
            key = "gcmcontinue"
            start = int(one(key, "0|0").split("|")[-1] or 0) if one(key) else 0
        elif one("generator") == "search":
            words = one("gsrsearch").lower().split()
            members = [t for t, f in self.files.items()
                       if all(w in (t + json.dumps(f.extmetadata)).lower() for w in words)]
            key = "gsroffset"
            start = int(one(key, "0"))
        else:
            return 200, {}, b'{"error": {"code": "badvalue", "info": "no generator"}}'
        limit = min(int(one("gcmlimit", one("gsrlimit", "10"))), self.page_size)
        chunk = members[start:start + limit]
        page_index = start // max(1, limit)
        if self.broken_api_after is not None and page_index > self.broken_api_after:
            return 500, {}, b"upstream exploded"
        body: dict[str, Any] = {"batchcomplete": True,
                                "query": {"pages": [self.page(t) for t in chunk]}}
        if start + limit < len(members):
            nxt = f"file|{start + limit}" if key == "gcmcontinue" else str(start + limit)
            body["continue"] = {key: nxt, "continue": f"{key}||"}
        return 200, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(
            body).encode()


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _handler(wiki: FixtureWiki) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            q = parse_qs(parts.query)
            wiki.log.append((parts.path, q, dict(self.headers)))
            faults = wiki.faults.get(parts.path)
            if faults:
                self._send(*faults.pop(0))
                return
            if parts.path == "/w/api.php":
                self._send(*wiki.api(q))
            elif parts.path.startswith(("/thumb/", "/orig/")):
                name = parts.path.split("/", 2)[2]
                f = next((f for f in wiki.files.values() if f.name == name), None)
                if f is None:
                    self._send(404, {}, b"no such file")
                    return
                data = f.data
                if parts.path.startswith("/thumb/") and f.mime == "image/jpeg":
                    if name not in wiki.thumbs:
                        im = Image.open(io.BytesIO(f.data)).convert("RGB")
                        if im.width > 1024:
                            im = im.resize((1024, round(im.height * 1024 / im.width)))
                        buf = io.BytesIO()
                        im.save(buf, "JPEG", quality=85)
                        wiki.thumbs[name] = buf.getvalue()
                    data = wiki.thumbs[name]
                self._send(200, {"Content-Type": f.mime}, data)
            elif parts.path == "/cdx":
                url = q.get("url", [""])[0]
                rows = wiki.cdx.get(url, [])
                body = [["urlkey", "timestamp", "original", "mimetype", "statuscode", "digest",
                         "length"], *rows] if rows else []
                self._send(200, {"Content-Type": "application/json"}, json.dumps(body).encode())
            elif parts.path in wiki.static:
                ctype, body = wiki.static[parts.path]
                self._send(200, {"Content-Type": ctype}, body)
            else:
                self._send(404, {}, b"not found")

    return Handler


@contextmanager
def serve(wiki: FixtureWiki) -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(wiki))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    wiki.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield wiki.base
    finally:
        httpd.shutdown()
        httpd.server_close()
