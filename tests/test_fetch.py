"""Safe URL fetching against a local HTTP server started by the test (loopback only)."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import imgverify
from imgverify.cli import app
from imgverify.errors import FetchError
from imgverify.fetch import FetchPolicy, fetch_url

ROOT = Path(__file__).resolve().parents[1]
IMAGE = (ROOT / "fixtures/examples/viral_space_repost.jpg").read_bytes()
FAST = FetchPolicy(connect_timeout=1.0, read_timeout=1.0, total_timeout=3.0, max_bytes=200_000,
                   allow_private=True)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _send(self, code: int, body: bytes, ctype: str = "image/jpeg",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?")[0]
        if path == "/img.jpg":
            self._send(200, IMAGE)
        elif path == "/silent":
            time.sleep(5)
        elif path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            for b in IMAGE[:10]:
                self.wfile.write(bytes([b]))
                self.wfile.flush()
                time.sleep(1)
        elif path == "/big":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()  # no Content-Length: the cap must be enforced while streaming
            for _ in range(100):
                self.wfile.write(b"\xff" * 10_000)
        elif path == "/declared-big":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
        elif path == "/html":
            self._send(200, b"<html>login page</html>", "text/html; charset=utf-8")
        elif path == "/loop":
            self._send(302, b"", extra={"Location": "/loop"})
        elif path == "/to-file":
            self._send(302, b"", extra={"Location": "file:///etc/passwd"})
        elif path == "/redirect-ok":
            self._send(301, b"", extra={"Location": "/img.jpg"})
        elif path == "/gzip-bomb":
            bomb = gzip.compress(b"\x00" * 50_000_000)
            self._send(200, bomb, extra={"Content-Encoding": "gzip"})
        elif path == "/500":
            self._send(500, b"oops", "text/plain")
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda *args: None  # type: ignore[method-assign]  # clients hang up
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def _error(url: str, policy: FetchPolicy = FAST) -> str:
    with pytest.raises(FetchError) as exc:
        fetch_url(url, policy)
    return exc.value.message


def test_good_image_and_redirect(server: str) -> None:
    assert fetch_url(f"{server}/img.jpg", FAST) == IMAGE
    assert fetch_url(f"{server}/redirect-ok", FAST) == IMAGE
    r = imgverify.check(f"{server}/img.jpg", imgverify.Archive.default(),
                        limits=imgverify.Limits(fetch=FAST))
    assert r.verdict == "likely_recycled"


@pytest.mark.parametrize("path,needle", [
    ("/silent", "timed out"), ("/trickle", "timed out"), ("/big", "limit"),
    ("/declared-big", "limit"), ("/html", "not an image"), ("/loop", "redirects"),
    ("/to-file", "scheme"), ("/missing", "HTTP 404"), ("/500", "HTTP 500"),
])
def test_hostile_servers(server: str, path: str, needle: str) -> None:
    started = time.perf_counter()
    message = _error(server + path)
    assert needle in message
    assert time.perf_counter() - started < 8


def test_gzip_bomb_is_never_inflated(server: str) -> None:
    # we ask for identity encoding and never decode: the bytes stay small and are no image
    data = fetch_url(f"{server}/gzip-bomb", FAST)
    assert len(data) < 1_000_000
    r = imgverify.check(f"{server}/gzip-bomb", imgverify.Archive.default(),
                        limits=imgverify.Limits(fetch=FAST))
    assert r.verdict == "error" and r.error is not None


def test_credentials_never_echoed(server: str) -> None:
    url = server.replace("http://", "http://alice:s3cr3t@") + "/missing"
    message = _error(url)
    assert "s3cr3t" not in message and "alice" not in message
    r = imgverify.check(url, imgverify.Archive.default(), limits=imgverify.Limits(fetch=FAST))
    assert "s3cr3t" not in json.dumps(r.to_dict())


def test_private_addresses_refused_unless_allowed(server: str) -> None:
    strict = FetchPolicy(connect_timeout=1, read_timeout=1, total_timeout=3)
    message = _error(f"{server}/img.jpg", strict)
    assert "non-public" in message and "--allow-private-urls" in message
    for url in ("http://localhost/x.jpg", "http://10.0.0.1/x.jpg", "http://[::1]/x.jpg",
                "http://169.254.169.254/latest/meta-data"):
        assert "non-public" in _error(url, strict)
    for url in ("ftp://example.org/x.jpg", "file:///etc/passwd", "gopher://x/"):
        r = imgverify.check(url, imgverify.Archive.default())
        assert r.verdict == "error"


def test_cli_url_with_and_without_permission(server: str) -> None:
    runner = CliRunner()
    refused = runner.invoke(app, ["check", f"{server}/img.jpg", "--format", "json"])
    assert refused.exit_code == 3
    assert json.loads(refused.stdout)["error"]["kind"] == "fetch_error"
    allowed = runner.invoke(app, ["check", f"{server}/img.jpg", "--format", "json",
                                  "--allow-private-urls"])
    assert allowed.exit_code == 0
    assert json.loads(allowed.stdout)["verdict"] == "likely_recycled"
