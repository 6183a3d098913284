"""The HTTP service, served for real by uvicorn on 127.0.0.1 and spoken to over HTTP.

Nothing leaves the machine: a module-wide guard answers DNS only for IP literals and
localhost and lets sockets connect only to loopback addresses (the service runs in this
process, so its URL fetches go through the guard too).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import ipaddress
import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed: "
                    "pip install '.[service]'")
import requests  # noqa: E402
import uvicorn  # noqa: E402
from conftest import SmallArchive, bsds, copy_archive, needs_shared  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import imgverify  # noqa: E402
from imgverify.cli import app as cli_app  # noqa: E402
from imgverify.media.fetch import FetchPolicy  # noqa: E402
from imgverify.media.load import Limits  # noqa: E402
from imgverify.service import (  # noqa: E402
    CheckResponse,
    JsonLogFormatter,
    ReferenceAdded,
    ReferenceModel,
    create_app,
    log_safe_url,
)

ROOT = Path(__file__).resolve().parents[1]
WRITE = "write-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"
MAX_BYTES = 1_000_000
pytestmark = needs_shared


# -- the guard, loopback servers ------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def no_traffic_off_the_machine() -> Iterator[None]:
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            if name != "localhost":
                raise socket.gaierror(socket.EAI_NONAME, "test: no real DNS") from None
        return real_getaddrinfo(host, port, *args, **kwargs)

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and \
                not ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback:
            raise ConnectionRefusedError(f"test guard: no traffic to {address[0]}")
        return real_connect(sock, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        mp.setattr(socket.socket, "connect", connect)
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
            mp.delenv(var, raising=False)
            mp.delenv(var.lower(), raising=False)
        yield


class LiveServer:
    """A uvicorn server for `app` on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=3)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        for _ in range(1200):
            if self.server.started:
                return self
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        raise RuntimeError("uvicorn did not start within 60 s")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


class Files(http.server.BaseHTTPRequestHandler):
    """A loopback 'web site': /img/NAME serves a file; /silent never answers in time."""

    files: dict[str, bytes] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?")[0]
        if path == "/silent":
            time.sleep(6)
            return
        body = self.files.get(path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def website(small_archive: SmallArchive) -> Iterator[str]:
    handler = type("H", (Files,), {"files": {
        "/img/archived.jpg": small_archive.photos[3].read_bytes()}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _limits(allow_private: bool = False) -> Limits:
    return Limits(max_bytes=MAX_BYTES,
                  fetch=FetchPolicy(max_bytes=MAX_BYTES, allow_private=allow_private,
                                    connect_timeout=2, read_timeout=5))


@pytest.fixture(scope="module")
def desk(small_archive: SmallArchive, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the session archive for this module's service."""
    return copy_archive(small_archive.path, tmp_path_factory.mktemp("svc") / "desk.sqlite")


@pytest.fixture(scope="module")
def live(desk: Path) -> Iterator[LiveServer]:
    """The service with both tokens, default (strict) URL rules and a 1 MB upload limit."""
    arch = imgverify.Archive.open(desk)
    with LiveServer(create_app(arch, token=WRITE, read_token=READ, limits=_limits())) as srv:
        yield srv
    arch.close()


def auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def upload(srv: LiveServer | str, data: bytes, token: str | None = READ, name: str = "photo.jpg",
           **fields: str) -> requests.Response:
    base = srv if isinstance(srv, str) else srv.url
    return requests.post(f"{base}/v1/check", headers=auth(token),
                         files={"image": (name, data, "image/jpeg")}, data=fields, timeout=60)


def add(srv: LiveServer | str, data: bytes, token: str | None = WRITE, name: str = "ref.jpg",
        **fields: str) -> requests.Response:
    base = srv if isinstance(srv, str) else srv.url
    return requests.post(f"{base}/v1/references", headers=auth(token),
                         files={"image": (name, data, "image/jpeg")}, data=fields, timeout=60)


def without_timing(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in ("elapsed_ms", "checked_at")}


# -- checking -------------------------------------------------------------------------------

def test_health_and_openapi_need_no_token(live: LiveServer) -> None:
    r = requests.get(f"{live.url}/v1/health", timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["references"] == 20 and body["readonly"] is False
    doc = requests.get(f"{live.url}/openapi.json", timeout=10).json()
    assert set(doc["paths"]) == {"/v1/health", "/v1/check", "/v1/references",
                                 "/v1/references/{reference_id}"}
    check_body = doc["paths"]["/v1/check"]["post"]["requestBody"]["content"]
    assert set(check_body) == {"multipart/form-data", "application/json"}
    assert "bearer" in json.dumps(doc["components"]["securitySchemes"]).lower()


def test_upload_answers_what_the_cli_prints(live: LiveServer, desk: Path,
                                            small_archive: SmallArchive) -> None:
    photo = small_archive.photos[3]
    r = upload(live, photo.read_bytes(), name=photo.name, claimed_date="2024-02-01",
               claimed_place="Somewhere else")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    got = r.json()
    cli = CliRunner().invoke(cli_app, ["check", str(photo), "--archive", str(desk),
                                       "--format", "json", "--claimed-date", "2024-02-01",
                                       "--claimed-place", "Somewhere else"])
    assert cli.exit_code == 0, cli.output
    expected = json.loads(cli.stdout)
    assert expected["input"] == str(photo) and got["input"] == photo.name
    assert without_timing(got) | {"input": None} == without_timing(expected) | {"input": None}
    assert got["verdict"] == "likely_recycled"
    assert got["matches"][0]["event"] == small_archive.row_of(photo)["event"]


def test_response_models_name_every_field_of_a_result(live: LiveServer,
                                                      small_archive: SmallArchive) -> None:
    # the OpenAPI document is only as good as these models: a key the result gains without
    # the model (or the other way round) fails here
    got = upload(live, small_archive.photos[5].read_bytes()).json()
    assert set(CheckResponse.model_fields) == set(got)
    match_fields = CheckResponse.model_fields["matches"].annotation.__args__[0].model_fields
    # every key a match carries is documented; keys present only when measured (agreement,
    # local_evidence) are optional in the model, every other one is required
    assert set(got["matches"][0]) <= set(match_fields)
    assert {n for n, f in match_fields.items() if f.is_required()} <= set(got["matches"][0])
    CheckResponse.model_validate(got)
    ref = requests.get(f"{live.url}/v1/references/{got['matches'][0]['reference_id']}",
                       headers=auth(READ), timeout=10).json()
    assert set(ReferenceModel.model_fields) == set(ref)


def test_local_false_searches_whole_pictures_only_and_says_so(live: LiveServer,
                                                             small_archive: SmallArchive) -> None:
    from PIL import Image

    photo = small_archive.photos[4]
    im = Image.open(photo).convert("RGB")
    w, h = im.size
    buf = io.BytesIO()  # the middle 55 %: only the local features find it
    im.crop((int(w * 0.1), int(h * 0.2), int(w * 0.75), int(h * 0.95))).save(buf, "JPEG")
    full = upload(live, buf.getvalue())
    assert full.status_code == 200, full.text
    assert full.json()["verdict"] != "no_match"
    assert full.json()["searched"]["local_features"] == "searched"
    fast = upload(live, buf.getvalue(), local="false")
    assert fast.status_code == 200, fast.text
    assert fast.json()["verdict"] == "no_match"
    assert fast.json()["searched"] == {"global_hashes": "searched", "local_features": "off"}
    whole = upload(live, photo.read_bytes(), local="false")
    assert whole.json()["verdict"] == "likely_recycled"
    bad = upload(live, buf.getvalue(), local="maybe")
    assert bad.status_code == 422 and "true or false" in bad.json()["error"]["message"]


@pytest.mark.parametrize(("data", "kinds"), [
    (b"this is a text file, not a photo\n", {"not_an_image"}),
    (b"", {"empty_input"}),
    (None, {"truncated_image", "corrupt_image"}),
])
def test_bad_image_is_a_typed_422(live: LiveServer, small_archive: SmallArchive,
                                  data: bytes | None, kinds: set[str]) -> None:
    if data is None:
        data = small_archive.photos[0].read_bytes()[:2000]  # a cut-off JPEG
    r = upload(live, data)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["verdict"] == "error" and body["error"]["kind"] in kinds
    assert body["error"]["message"]
    CheckResponse.model_validate(body)


@pytest.mark.parametrize(("request_kwargs", "status", "kind"), [
    ({"files": {"claimed_date": (None, "2024-01-01")}}, 422, "invalid_request"),  # no image
    ({"files": {"image": ("a.jpg", b"x"), "colour": (None, "red")}}, 422, "invalid_request"),
    ({"files": {"image": ("a.jpg", b"x"), "claimed_date": (None, "last week")}}, 422,
     "invalid_request"),
    ({"json": {"url": "http://127.0.0.1/a.jpg", "extra": 1}}, 422, "invalid_request"),
    ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 422,
     "invalid_request"),
    ({"data": b"url=x", "headers": {"Content-Type": "text/plain"}}, 415,
     "unsupported_media_type"),
    ({"data": b"--b\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc",
      "headers": {"Content-Type": "multipart/form-data"}}, 400, "bad_request"),  # no boundary
])
def test_invalid_requests_are_typed_errors(live: LiveServer, request_kwargs: dict[str, Any],
                                           status: int, kind: str | None) -> None:
    headers = {**auth(READ), **request_kwargs.pop("headers", {})}
    r = requests.post(f"{live.url}/v1/check", headers=headers, timeout=30, **request_kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) == {"kind", "message"} and body["request_id"]
    if kind:
        assert body["error"]["kind"] == kind


def test_url_check_follows_the_ssrf_rules(live: LiveServer, website: str, desk: Path) -> None:
    url = f"{website}/img/archived.jpg"
    refused = requests.post(f"{live.url}/v1/check", headers=auth(READ), json={"url": url},
                            timeout=30)
    assert refused.status_code == 422
    assert refused.json()["error"]["kind"] == "url_refused"
    arch = imgverify.Archive.open(desk)
    with LiveServer(create_app(arch, token=WRITE, limits=_limits(allow_private=True))) as srv:
        allowed = requests.post(f"{srv.url}/v1/check", headers=auth(WRITE),
                                json={"url": url, "claimed_date": "2025-01-01"}, timeout=30)
    arch.close()
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["verdict"] == "likely_recycled"
    assert allowed.json()["claimed_date"] == "2025-01-01"


# -- auth -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("token", "check", "read", "write"), [
    (None, 401, 401, 401),
    ("not-the-token-0123456789", 401, 401, 401),
    (READ, 200, 200, 403),
    (WRITE, 200, 200, 201),
])
def test_auth_matrix(live: LiveServer, small_archive: SmallArchive, token: str | None,
                     check: int, read: int, write: int) -> None:
    photo = small_archive.photos[7]
    r = upload(live, photo.read_bytes(), token=token)
    assert r.status_code == check, r.text
    sha = hashlib.sha256(photo.read_bytes()).hexdigest()
    r = requests.get(f"{live.url}/v1/references/{sha}", headers=auth(token), timeout=10)
    assert r.status_code == read, r.text
    r = add(live, bsds(1, start=20)[0].read_bytes(), token=token, date="2019-03-04")
    assert r.status_code == write, r.text
    if r.status_code >= 400:
        assert r.json()["error"]["kind"] == {401: "unauthorized", 403: "forbidden"}[write]
    if write == 401:
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_basic_auth_or_token_in_query_is_not_accepted(live: LiveServer,
                                                      small_archive: SmallArchive) -> None:
    data = small_archive.photos[0].read_bytes()
    r = requests.post(f"{live.url}/v1/check?token={READ}", auth=("user", READ),
                      files={"image": ("a.jpg", data)}, timeout=30)
    assert r.status_code == 401


# -- adding references ----------------------------------------------------------------------

def test_add_then_check_finds_it_and_readding_updates(live: LiveServer) -> None:
    photo = bsds(1, start=2)[0]
    data = photo.read_bytes()
    assert upload(live, data).json()["verdict"] == "no_match"
    r = add(live, data, name=photo.name, date="2018-07-09T10:00:00Z", event="Flood in X",
            place="Riverside", source_url="https://example.org/p/1", credit="A. Person")
    assert r.status_code == 201, r.text
    ref = r.json()["reference"]
    assert r.json()["status"] == "added"
    assert ref["date"] == "2018-07-09" and ref["event"] == "Flood in X"
    assert ref["image_uri"] == f"upload:{photo.name}"
    ReferenceAdded.model_validate(r.json())
    found = upload(live, data, claimed_date="2025-01-01").json()
    assert found["verdict"] == "likely_recycled"
    assert found["matches"][0]["reference_id"] == ref["reference_id"]
    assert found["matches"][0]["event"] == "Flood in X"
    again = add(live, data, date="2018-07-09", event="Flood in Y")
    assert again.status_code == 200 and again.json()["status"] == "updated"
    assert again.json()["reference"]["reference_id"] == ref["reference_id"]
    got = requests.get(f"{live.url}/v1/references/{ref['sha256']}", headers=auth(READ),
                       timeout=10)
    assert got.status_code == 200 and got.json()["event"] == "Flood in Y"


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "missing required field 'date'"),
    ({"date": "yesterday"}, "not a date in the form YYYY-MM-DD"),
    ({"date": "2020-01-01", "source_url": "ftp://example.org/x"}, "source_url must be"),
    ({"date": "2020-01-01", "published": "soon"}, "not a date in the form YYYY-MM-DD"),
    ({"date": "2020-01-01", "photographer": "X"}, "unknown field"),
])
def test_add_validates_like_a_manifest_row(live: LiveServer, fields: dict[str, str],
                                           message: str) -> None:
    r = add(live, bsds(1, start=3)[0].read_bytes(), **fields)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["kind"] == "invalid_request"
    assert message in r.json()["error"]["message"]


def test_add_never_reads_a_server_path(live: LiveServer, small_archive: SmallArchive) -> None:
    # a JSON row's image must be a URL: a path would make the server read its own files
    r = requests.post(f"{live.url}/v1/references", headers=auth(WRITE),
                      json={"image": str(small_archive.photos[0]), "date": "2020-01-01"},
                      timeout=30)
    assert r.status_code == 422
    assert "http(s) URL" in r.json()["error"]["message"]
    r = requests.post(f"{live.url}/v1/references", headers=auth(WRITE),
                      json={"image": "http://127.0.0.1:9/x.jpg", "date": "2020-01-01"},
                      timeout=30)
    assert r.status_code == 422 and r.json()["error"]["kind"] == "url_refused"


def test_add_a_bad_image_is_typed(live: LiveServer) -> None:
    r = add(live, b"GIF89a nonsense", date="2020-01-01")
    assert r.status_code == 422
    assert r.json()["error"]["kind"] in {"corrupt_image", "truncated_image", "not_an_image"}


def test_unknown_reference_is_404(live: LiveServer) -> None:
    r = requests.get(f"{live.url}/v1/references/0123456789abcdef", headers=auth(READ),
                     timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["kind"] == "not_found"


# -- limits ---------------------------------------------------------------------------------

def _read_response(sock: socket.socket, wait: float = 20.0) -> bytes:
    sock.settimeout(wait)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_declared_oversize_upload_is_refused_before_the_body(live: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", live.port)) as sock:
        sock.sendall(b"POST /v1/check HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + READ.encode() + b"\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 5000000000\r\n\r\n--b\r\n")
        # nothing more is sent: the answer must come from the declared length alone
        raw = _read_response(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), raw[:200]
    assert json.loads(body)["error"]["kind"] == "payload_too_large"


def test_streamed_oversize_upload_is_cut_off(live: LiveServer) -> None:
    sent = 0
    with socket.create_connection(("127.0.0.1", live.port)) as sock:
        sock.sendall(b"POST /v1/check HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + READ.encode() + b"\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        head = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\n"
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        piece = b"\xff" * 65536
        answered = False
        try:
            # without the streaming limit the server would wait for the rest of a body that
            # never ends; loopback socket buffers hold a few MB, hence the generous bound
            while sent < 40 * MAX_BYTES:
                if select.select([sock], [], [], 0)[0]:
                    answered = True
                    break
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            answered = True
        assert answered, "the server read 40x the limit without answering"
        raw = _read_response(sock)
    assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["error"]["kind"] == "payload_too_large"


def test_oversize_multipart_from_a_client_is_413(live: LiveServer) -> None:
    r = upload(live, b"\xff\xd8" + b"\x00" * (MAX_BYTES + 300_000))
    assert r.status_code == 413
    assert r.json()["error"]["kind"] == "payload_too_large"


def test_a_stalled_upload_gets_408(desk: Path) -> None:
    # a client that starts an upload and stops sending must not hold the connection open
    arch = imgverify.Archive.open(desk, readonly=True)
    with LiveServer(create_app(arch, limits=_limits(), timeout_s=1.0)) as srv, \
            socket.create_connection(("127.0.0.1", srv.port)) as sock:
        sock.sendall(b"POST /v1/check HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 50000\r\n\r\n--b\r\nContent-Disposition: form-data; "
                     b"name=\"image\"; filename=\"a.jpg\"\r\n\r\n\xff\xd8")
        raw = _read_response(sock, wait=30)
    arch.close()
    assert raw.startswith(b"HTTP/1.1 408"), raw[:200]
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["error"]["kind"] == "timeout"


def test_json_bodies_have_a_small_limit(live: LiveServer) -> None:
    # a JSON request names a URL: megabytes of JSON are refused, not parsed
    r = requests.post(f"{live.url}/v1/check", headers=auth(READ), timeout=30,
                      json={"url": "http://127.0.0.1/x.jpg", "claimed_place": "x" * 600_000})
    assert r.status_code == 413 and "JSON" in r.json()["error"]["message"]


def test_adding_to_a_read_only_archive_is_a_typed_503(desk: Path) -> None:
    arch = imgverify.Archive.open(desk, readonly=True)
    with LiveServer(create_app(arch, token=WRITE, limits=_limits())) as srv:
        r = add(srv, bsds(1, start=4)[0].read_bytes(), date="2020-01-01")
    arch.close()
    assert r.status_code == 503, r.text
    assert r.json()["error"] == {"kind": "archive_error",
                                 "message": "this server's archive is read-only"}
    assert str(desk) not in r.text  # the server's paths stay in its log


def test_pixel_limit_applies(desk: Path, small_archive: SmallArchive) -> None:
    arch = imgverify.Archive.open(desk, readonly=True)
    tight = Limits(max_pixels=10_000, max_bytes=MAX_BYTES)
    with LiveServer(create_app(arch, limits=tight)) as srv:
        r = upload(srv, small_archive.photos[0].read_bytes(), token=None)
    arch.close()
    assert r.status_code == 422
    assert r.json()["error"]["kind"] == "image_too_large"


def test_slow_request_times_out_with_504_and_a_full_pool_says_busy(
        desk: Path, website: str) -> None:
    arch = imgverify.Archive.open(desk, readonly=True)
    app = create_app(arch, limits=_limits(allow_private=True), timeout_s=1.0, workers=1,
                     max_pending=1)
    with LiveServer(app) as srv:
        slow: dict[str, requests.Response] = {}

        def first() -> None:
            slow["r"] = requests.post(f"{srv.url}/v1/check", json={"url": f"{website}/silent"},
                                      timeout=30)

        t = threading.Thread(target=first)
        t.start()
        for _ in range(200):
            if app.state.checks.pending:
                break
            time.sleep(0.01)
        assert app.state.checks.pending == 1
        busy = requests.post(f"{srv.url}/v1/check", json={"url": f"{website}/img/x.jpg"},
                             timeout=30)
        # the event loop is not blocked by the running check: health answers meanwhile
        health = requests.get(f"{srv.url}/v1/health", timeout=30)
        still_running = app.state.checks.pending
        t.join()
    assert health.status_code == 200 and still_running == 1
    arch.close()
    assert busy.status_code == 503 and busy.json()["error"]["kind"] == "busy"
    assert busy.headers["Retry-After"] == "1"
    assert slow["r"].status_code == 504, slow["r"].text
    assert slow["r"].json()["error"]["kind"] == "timeout"


# -- logs -----------------------------------------------------------------------------------

def test_log_safe_url_drops_credentials() -> None:
    assert log_safe_url("https://u:p@cdn.example/a/b.jpg?X-Amz-Signature=s#f") == \
        "https://cdn.example/a/b.jpg?…"
    assert log_safe_url("http://[::1]:8080/x") == "http://[::1]:8080/x"
    assert "secret" not in log_safe_url("http://user:secret@[::1/x")


def test_logs_are_json_without_tokens_or_url_credentials(live: LiveServer,
                                                         small_archive: SmallArchive) -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("imgverify.service")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        upload(live, small_archive.photos[1].read_bytes(), token=READ)
        requests.post(f"{live.url}/v1/check", headers=auth(WRITE), timeout=30,
                      json={"url": "http://alice:hunter2-pw@127.0.0.1:9/p.jpg?sig=topsecret"})
        requests.get(f"{live.url}/v1/references/x?api_key=querysecret",
                     headers=auth("wrong-token-supersecret"), timeout=10)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    text = buf.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    requests_logged = [e for e in lines if e.get("event") == "request"]
    assert len(requests_logged) == 3
    assert requests_logged[0]["verdict"] == "likely_recycled" and \
        requests_logged[0]["role"] == "read"
    assert requests_logged[1]["url"] == "http://127.0.0.1:9/p.jpg?…"
    assert requests_logged[2]["status"] == 401
    for secret in (READ, WRITE, "hunter2", "alice", "topsecret", "querysecret",
                   "supersecret", "Bearer", "Authorization"):
        assert secret not in text, secret


# -- the command line -----------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("IMGVERIFY_") and "PROXY" not in k.upper()}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


class ServeProcess:
    """`python -m imgverify serve` on a free loopback port, with its stderr (the log)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imgverify", "serve", "--port", str(self.port), *args],
            env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.log = ""

    def __enter__(self) -> ServeProcess:
        for _ in range(600):
            try:
                if requests.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"serve did not start: {self.log[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.log = self.proc.communicate(timeout=30)[1]


def test_serve_command_end_to_end(desk: Path, tmp_path: Path,
                                  small_archive: SmallArchive) -> None:
    own = copy_archive(desk, tmp_path / "own.sqlite")
    with ServeProcess(["--archive", str(own), "--max-upload-bytes", str(MAX_BYTES),
                       "--timeout", "20"],
                      {"IMGVERIFY_TOKEN": WRITE, "IMGVERIFY_READ_TOKEN": READ}) as srv:
        checked = requests.post(f"{srv.url}/v1/check", headers=auth(READ), timeout=60,
                                files={"image": ("p.jpg", small_archive.photos[2].read_bytes())})
        forbidden = add(srv.url, small_archive.photos[2].read_bytes(), token=READ,
                        date="2020-01-01")
        refused = requests.post(f"{srv.url}/v1/check", headers=auth(WRITE), timeout=60,
                                json={"url": "https://bob:pa55word@10.0.0.1/x.jpg?t=secret9"})
    err = srv.log
    assert checked.status_code == 200 and checked.json()["verdict"] == "likely_recycled", err
    assert forbidden.status_code == 403
    assert refused.status_code == 422 and refused.json()["error"]["kind"] == "url_refused"
    events = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert [e["status"] for e in events if e.get("event") == "request"][-3:] == [200, 403, 422]
    for secret in (READ, WRITE, "pa55word", "bob", "secret9"):
        assert secret not in err


def test_serve_with_a_write_token_creates_a_new_archive(tmp_path: Path) -> None:
    new = tmp_path / "new.sqlite"
    with ServeProcess(["--archive", str(new)], {"IMGVERIFY_TOKEN": WRITE}) as srv:
        health = requests.get(f"{srv.url}/v1/health", timeout=10).json()
        added = add(srv.url, bsds(1, start=5)[0].read_bytes(), date="2021-02-03")
    assert health["references"] == 0 and health["readonly"] is False
    assert added.status_code == 201, added.text
    assert len(imgverify.Archive.open(new, readonly=True)) == 1
    # without a write token there is nothing to fill it with: a missing archive is an error
    run = subprocess.run([sys.executable, "-m", "imgverify", "serve", "--archive",
                          str(tmp_path / "absent.sqlite")], env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 4 and "no archive at" in run.stderr


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--host", "0.0.0.0"], {}, "refusing to serve 0.0.0.0 without a token"),
    (["--token", "short"], {}, "shorter than 16 characters"),
    ([], {"IMGVERIFY_TOKEN": WRITE, "IMGVERIFY_READ_TOKEN": WRITE}, "must differ"),
])
def test_serve_refuses_unsafe_settings(args: list[str], env: dict[str, str],
                                       message: str) -> None:
    result = CliRunner().invoke(cli_app, ["serve", *args], env=env)
    assert result.exit_code == 2
    assert message in result.stderr


def test_serve_without_the_extra_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'uvicorn'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join((str(tmp_path), env["PYTHONPATH"]))
    run = subprocess.run([sys.executable, "-m", "imgverify", "serve"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "pip install 'imgverify[service]'" in run.stderr
    assert "Traceback" not in run.stderr
    # the rest of the command line does not need the extra
    run = subprocess.run([sys.executable, "-m", "imgverify", "hash",
                          str(ROOT / "fixtures/examples/viral_space_repost.jpg")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([sys.executable, "-c", "import imgverify.service"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert "imgverify[service]" in run.stderr


# -- the OpenAPI contract (schemathesis) ----------------------------------------------------

OPERATIONS = [("GET", "/v1/health"), ("POST", "/v1/check"),
              ("GET", "/v1/references/{reference_id}"), ("POST", "/v1/references")]


@pytest.fixture(scope="module")
def api_schema(live: LiveServer) -> Any:
    schemathesis = pytest.importorskip("schemathesis")
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json")


def test_the_contract_test_covers_every_operation(api_schema: Any) -> None:
    found = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), [
    (method, path, mode) for method, path in OPERATIONS for mode in ("positive", "negative")
    if path != "/v1/health" or mode == "positive"])  # health takes no input to get wrong
def test_every_operation_keeps_its_openapi_contract(api_schema: Any, method: str, path: str,
                                                    mode: str) -> None:
    """Generated requests, valid (positive) and invalid (negative), never get a 500, and
    every answer has a documented status, content type, headers and body schema."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    operation = api_schema[path][method]
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_headers_conformance, response_schema_conformance]

    @given(case=operation.as_strategy(GenerationMode(mode)))
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    def run(case: Any) -> None:
        case.call_and_validate(headers=auth(WRITE), timeout=60, checks=checks)

    run()


def test_building_the_app_leaves_the_process_alone(desk: Path) -> None:
    # an embedder mounts create_app() in its own server: loggers, warning filters and
    # Pillow's guard stay as they were (only the `serve` command configures logging)
    script = (
        "import json, logging, sys, warnings\n"
        "import fastapi, uvicorn, starlette.applications, python_multipart\n"
        "import exifread, imagehash, pdqhash, requests, scipy.fft, scipy.special\n"  # their own

        "from PIL import Image\n"
        "def snap():\n"
        "    return {'filters': [repr(f) for f in warnings.filters],\n"
        "            'loggers': {n: [logging.getLogger(n).level, logging.getLogger(n).propagate,\n"
        "                            len(logging.getLogger(n).handlers)]\n"
        "                        for n in ('', 'imgverify.service', 'uvicorn', 'uvicorn.error',\n"
        "                                  'uvicorn.access')},\n"
        "            'pillow': Image.MAX_IMAGE_PIXELS}\n"
        "before = snap()\n"
        "import imgverify\n"
        "from imgverify.service import create_app\n"
        "app = create_app(imgverify.Archive.open(sys.argv[1], readonly=True))\n"
        "print(json.dumps([before, snap()]))\n")
    run = subprocess.run([sys.executable, "-c", script, str(desk)], env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    before, after = json.loads(run.stdout)
    assert before == after
