"""Safe URL fetching against a local HTTP server started by the test (loopback only)."""

from __future__ import annotations

import functools
import gzip
import http.server
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

import imgverify
from imgverify.cli import app
from imgverify.errors import FetchError, UrlRefusedError
from imgverify.media.fetch import FetchPolicy, fetch_url, is_public_address

ROOT = Path(__file__).resolve().parents[1]
IMAGE = (ROOT / "fixtures/examples/viral_space_repost.jpg").read_bytes()
@functools.cache
def _gzip_bomb() -> bytes:
    """50 MB of zeros in about 50 KB, compressed once per run (compressing per request took
    longer than the client's read time-out on a loaded machine); the server fixture calls it
    before it starts serving."""
    return gzip.compress(b"\x00" * 50_000_000)


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
            self._send(200, _gzip_bomb(), extra={"Content-Encoding": "gzip"})
        elif path == "/500":
            self._send(500, b"oops", "text/plain")
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    _gzip_bomb()  # compressed before serving, not inside a request the client times
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
    # "timed out" for /trickle proves the total deadline cut it off: left alone, it would
    # deliver its ten bytes after ten seconds and fail as a corrupt image instead
    message = _error(server + path)
    assert needle in message


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
    assert json.loads(refused.stdout)["error"]["kind"] == "url_refused"
    allowed = runner.invoke(app, ["check", f"{server}/img.jpg", "--format", "json",
                                  "--allow-private-urls"])
    assert allowed.exit_code == 0
    assert json.loads(allowed.stdout)["verdict"] == "likely_recycled"


# --- DNS rebinding, redirect hops, proxies: a stub resolver and a guarded connect ----------
#
# Names under .test are answered by a stub resolver; any other name fails to resolve, so no DNS
# query leaves the machine. Connects to loopback go through; a connect to PUBLIC_IP is
# rerouted to a loopback "public" server (the stand-in for the internet); any other connect
# raises. Nothing in these tests reaches a real public address.

PUBLIC_IP = "93.184.216.34"
PUBLIC_BODY = IMAGE
SECRET_BODY = b"\xff\xd8 internal secret \xff\xd9"


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Serves `body` on every path (or a redirect from /go?to=URL) and records each request."""

    body = b""
    seen: list[tuple[str, str]]  # (path, Host header)

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.seen.append((self.path, self.headers.get("Host", "")))
        if self.path.startswith("/go?to="):
            self.send_response(302)
            self.send_header("Location", unquote(self.path[len("/go?to="):]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


class Loopback:
    def __init__(self, body: bytes) -> None:
        self.seen: list[tuple[str, str]] = []
        handler = type("H", (RecordingHandler,), {"body": body, "seen": self.seen})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture()
def net(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """A loopback 'internet' (PUBLIC_IP) and an 'internal' loopback server, a stub resolver
    (`answers[name]` is a list of IPs, one per lookup, the last one repeating) and a connect
    guard that records every connect."""
    public, internal = Loopback(PUBLIC_BODY), Loopback(SECRET_BODY)
    answers: dict[str, list[str]] = {}
    lookups: list[str] = []
    connects: list[tuple[str, int]] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.rstrip(".").lower().endswith(".test"):
            lookups.append(name)
            queue = answers.get(name.rstrip(".").lower())
            if not queue:
                raise socket.gaierror(socket.EAI_NONAME, "stub resolver: unknown name")
            ip = queue.pop(0) if len(queue) > 1 else queue[0]
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            sockaddr = (ip, int(port), 0, 0) if family == socket.AF_INET6 else (ip, int(port))
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            if name != "localhost":
                raise socket.gaierror(socket.EAI_NONAME, "test: no real DNS") from None
        return real_getaddrinfo(host, port, *args, **kwargs)

    def connect(sock: socket.socket, address: Any) -> None:
        host, port = str(address[0]), int(address[1])
        connects.append((host, port))
        if host == PUBLIC_IP:
            return real_connect(sock, ("127.0.0.1", public.port))
        if ipaddress.ip_address(host).is_loopback:
            return real_connect(sock, address)
        raise ConnectionRefusedError(f"test guard: no traffic to {host} leaves the machine")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda *a: 111)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    try:
        yield SimpleNamespace(public=public, internal=internal, answers=answers,
                              lookups=lookups, connects=connects)
    finally:
        public.httpd.shutdown()
        internal.httpd.shutdown()


STRICT = FetchPolicy(connect_timeout=1.0, read_timeout=1.0, total_timeout=3.0)


def test_rebinding_answer_is_never_connected_to(net: SimpleNamespace) -> None:
    # first lookup public, every later one loopback: the connection must go where the check
    # looked (the public server), never to the internal server on the same port
    net.answers["rebind.test"] = [PUBLIC_IP, "127.0.0.1"]
    body = fetch_url(f"http://rebind.test:{net.internal.port}/secret.jpg", STRICT)
    assert body == PUBLIC_BODY
    assert net.internal.seen == []
    assert net.lookups == ["rebind.test"]  # resolved once, then pinned
    assert net.connects == [(PUBLIC_IP, net.internal.port)]


def test_pinned_connection_keeps_the_host_header(net: SimpleNamespace) -> None:
    net.answers["cdn.test"] = [PUBLIC_IP]
    assert fetch_url(f"http://cdn.test:{net.internal.port}/a.jpg", STRICT) == PUBLIC_BODY
    assert net.public.seen == [("/a.jpg", f"cdn.test:{net.internal.port}")]
    assert net.lookups == ["cdn.test"]


def test_loopback_by_name_with_allow_private(net: SimpleNamespace) -> None:
    net.answers["photos.test"] = ["127.0.0.1"]
    allowed = FetchPolicy(connect_timeout=1, read_timeout=1, total_timeout=3, allow_private=True)
    url = f"http://photos.test:{net.internal.port}/p.jpg"
    assert fetch_url(url, allowed) == SECRET_BODY
    assert net.internal.seen == [("/p.jpg", f"photos.test:{net.internal.port}")]
    with pytest.raises(UrlRefusedError) as exc:
        fetch_url(url, STRICT)
    assert exc.value.kind == "url_refused" and "non-public address 127.0.0.1" in exc.value.message
    assert len(net.internal.seen) == 1


def test_redirect_to_a_private_address_is_refused_at_the_hop(net: SimpleNamespace) -> None:
    net.answers["cdn.test"] = [PUBLIC_IP]
    net.answers["internal.test"] = ["10.1.2.3"]
    start = f"http://cdn.test:{net.internal.port}/go?to="
    for target in (f"http://internal.test:{net.internal.port}/x.jpg",
                   f"http://127.0.0.1:{net.internal.port}/x.jpg",
                   f"http://[::ffff:127.0.0.1]:{net.internal.port}/x.jpg"):
        with pytest.raises(UrlRefusedError) as exc:
            fetch_url(start + target, STRICT)
        assert "non-public" in exc.value.message
    assert net.internal.seen == []
    assert {host for host, _ in net.connects} == {PUBLIC_IP}


def test_rebinding_name_at_a_redirect_hop_is_pinned(net: SimpleNamespace) -> None:
    net.answers["cdn.test"] = [PUBLIC_IP]
    net.answers["rebind.test"] = [PUBLIC_IP, "127.0.0.1"]
    url = f"http://cdn.test:{net.internal.port}/go?to=http://rebind.test:{net.internal.port}/y"
    assert fetch_url(url, STRICT) == PUBLIC_BODY
    assert net.internal.seen == []
    assert net.public.seen[-1] == ("/y", f"rebind.test:{net.internal.port}")
    assert net.lookups == ["cdn.test", "rebind.test"]


def test_importer_client_connects_where_it_checked(net: SimpleNamespace) -> None:
    """The importers' polite client (MediaWiki API, feeds, downloads) pins as fetch_url
    does: it connects to the lookup it checked, so a rebinding name that answers a public
    address to the check and a local one afterwards never reaches the local server."""
    from imgverify.ingest.importers.http import ClientConfig, ImportHTTPError, PoliteClient

    net.answers["rebind.test"] = [PUBLIC_IP, "127.0.0.1"]
    url = f"http://rebind.test:{net.internal.port}/secret.jpg"
    with PoliteClient(ClientConfig(min_interval=0, retries=0, timeout=2)) as client:
        assert client.get(url).content == PUBLIC_BODY
        assert net.internal.seen == []
        assert net.connects == [(PUBLIC_IP, net.internal.port)]
        # the next request looks again and now sees the local address: refused, not sent
        with pytest.raises(ImportHTTPError, match="non-public"):
            client.get(url)
        # a redirect hop to a rebinding name is pinned too
        net.answers["cdn.test"] = [PUBLIC_IP]
        net.answers["hop.test"] = [PUBLIC_IP, "127.0.0.1"]
        hop = f"http://hop.test:{net.internal.port}/y"
        resp = client.get(f"http://cdn.test:{net.internal.port}/go?to={hop}")
        assert resp.content == PUBLIC_BODY
    assert net.internal.seen == []
    assert net.public.seen[-1] == ("/y", f"hop.test:{net.internal.port}")


def test_environment_proxy_ignored_unless_asked(net: SimpleNamespace,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = Loopback(b"\xff\xd8 from the proxy \xff\xd9")
    try:
        for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.port}")
        net.answers["cdn.test"] = [PUBLIC_IP]
        url = f"http://cdn.test:{net.internal.port}/a.jpg"
        assert fetch_url(url, STRICT) == PUBLIC_BODY
        assert proxy.seen == []
        via = FetchPolicy(connect_timeout=1, read_timeout=1, total_timeout=3, use_env_proxy=True)
        assert fetch_url(url, via) == b"\xff\xd8 from the proxy \xff\xd9"
        assert proxy.seen == [(url, f"cdn.test:{net.internal.port}")]
        # through a proxy, a name that resolves to a private address here is still refused
        net.answers["internal.test"] = ["10.1.2.3"]
        with pytest.raises(UrlRefusedError):
            fetch_url(f"http://internal.test:{net.internal.port}/x.jpg", via)
        assert len(proxy.seen) == 1
        # the CLI: ignored by default, used with --use-env-proxy
        runner = CliRunner()
        plain = runner.invoke(app, ["check", url, "--format", "json"])
        assert plain.exit_code == 0 and len(proxy.seen) == 1
        proxied = runner.invoke(app, ["check", url, "--format", "json", "--use-env-proxy"])
        assert proxied.exit_code == 3 and len(proxy.seen) == 2  # the proxy's body is no image
    finally:
        proxy.httpd.shutdown()


@pytest.mark.parametrize("address,public", [
    ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True),
    ("127.0.0.1", False), ("10.0.0.1", False), ("100.64.0.1", False), ("169.254.169.254", False),
    ("0.0.0.0", False), ("224.0.0.1", False), ("::1", False), ("fe80::1%eth0", False),
    ("::ffff:127.0.0.1", False), ("64:ff9b::a00:1", False), ("2002:7f00:1::", False),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),
])
def test_public_address_judgement(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_cli_refused_url_has_its_own_kind_and_exit_code(net: SimpleNamespace) -> None:
    net.answers["internal.test"] = ["10.1.2.3"]
    runner = CliRunner()
    refused = runner.invoke(app, ["check", f"http://internal.test:{net.internal.port}/x.jpg",
                                  "--format", "json"])
    assert refused.exit_code == 3
    assert json.loads(refused.stdout)["error"]["kind"] == "url_refused"
    unreachable = runner.invoke(app, ["check", "http://nowhere.test/x.jpg", "--format", "json"])
    assert unreachable.exit_code == 3
    assert json.loads(unreachable.stdout)["error"]["kind"] == "fetch_error"


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_pinned_keeps_sni_and_certificate_name(net: SimpleNamespace,
                                                     tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path, "secure.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sni: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name)  # type: ignore[assignment,misc,return-value]
    tls = Loopback(IMAGE)
    tls.httpd.socket = context.wrap_socket(tls.httpd.socket, server_side=True)
    tls.httpd.handle_error = lambda *args: None  # type: ignore[method-assign]  # failed handshakes
    try:
        net.answers["secure.test"] = ["127.0.0.1"]
        net.answers["other.test"] = ["127.0.0.1"]
        policy = FetchPolicy(connect_timeout=1, read_timeout=1, total_timeout=3,
                             allow_private=True, ca_file=str(cert))
        assert fetch_url(f"https://secure.test:{tls.port}/s.jpg", policy) == IMAGE
        assert sni == ["secure.test"]
        assert tls.seen == [("/s.jpg", f"secure.test:{tls.port}")]
        # same pinned address, another name: the certificate is checked against that name
        with pytest.raises(FetchError) as exc:
            fetch_url(f"https://other.test:{tls.port}/s.jpg", policy)
        assert "SSLError" in exc.value.message
        assert sni == ["secure.test", "other.test"] and len(tls.seen) == 1
        # and without the internal CA the certificate is not trusted at all
        with pytest.raises(FetchError):
            fetch_url(f"https://secure.test:{tls.port}/s.jpg",
                      FetchPolicy(connect_timeout=1, read_timeout=1, total_timeout=3,
                                  allow_private=True))
        assert len(tls.seen) == 1
    finally:
        tls.httpd.shutdown()
