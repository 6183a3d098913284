"""Fetch an image from an http(s) URL without letting the URL do more than deliver bytes.

Guards: only http/https, connect and read time-outs, a total deadline, a streamed size cap,
a redirect limit (each hop re-checked), an image content type, and refusal of non-public
addresses unless the caller allows them (a service fetching user URLs must not become a
way into an internal network). Credentials in URLs are never echoed back in errors.

The host of every hop is resolved once, every address is checked, and the connection goes to
a checked address (the Host header, TLS SNI and certificate check still use the name): a
second lookup by the HTTP library could get a different answer (DNS rebinding: public for
the check, loopback for the connection). Proxy settings from the environment are ignored
unless the policy asks for them, so a stray HTTP_PROXY cannot reroute or observe fetches.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from imgverify.errors import FetchError, UrlRefusedError

USER_AGENT = "imgverify/0.1 (+news photo verification)"
ACCEPTED_CONTENT_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one download; the defaults suit a newsroom laptop and a moderation service.

    `use_env_proxy` sends requests through the proxy named in HTTP_PROXY / HTTPS_PROXY (and
    honours NO_PROXY), for networks where that is the only way out. The proxy then resolves
    the host and makes the connection, so the address check here is advisory (names that
    resolve to non-public addresses here are still refused, but a rebinding answer given to
    the proxy is the proxy's egress rules to stop). `ca_file` is a PEM bundle of certificate
    authorities to trust instead of the bundled ones (e.g. a newsroom's internal CA).
    """

    max_bytes: int = 50 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_timeout: float = 30.0
    max_redirects: int = 5
    allow_private: bool = False
    use_env_proxy: bool = False
    ca_file: str | None = None


def redact_url(url: str) -> str:
    """The URL without user:password, for messages and reports."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_public_address(text: str) -> bool:
    """Whether an address is on the public internet; IPv6 forms that carry an IPv4 address
    (mapped, NAT64, 6to4, Teredo) are judged by that address, and multicast is never public."""
    addr = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and addr in _NAT64:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is None and addr.teredo is not None:
            embedded = addr.teredo[1]
        if embedded is not None and not is_public_address(str(embedded)):
            return False
    return addr.is_global and not addr.is_multicast


def _normal_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class _Pin:
    """The checked addresses of one hop: the only places its connection may go."""

    host: str
    port: int
    addresses: tuple[tuple[int, int, int, Any], ...]  # family, type, proto, sockaddr


def _refuse_private(addr: str, host: str) -> UrlRefusedError:
    return UrlRefusedError(
        f"refusing to fetch from non-public address {addr} ({host}); "
        "pass --allow-private-urls (allow_private=True) if this is intended"
    )


def _resolve_and_check(url: str, policy: FetchPolicy, proxied: bool) -> _Pin | None:
    """Resolve the hop's host once and check every answer; None when a proxy will resolve
    a name that has no answer here."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise UrlRefusedError(
            f"refusing URL scheme {parts.scheme!r}: only http and https are fetched")
    host = parts.hostname
    if not host:
        raise FetchError(f"URL has no host: {redact_url(url)}")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise FetchError(f"URL has an invalid port: {redact_url(url)}") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        if proxied:
            return None
        raise FetchError(f"cannot resolve host {host!r}: {exc}") from None
    addresses = tuple((fam, typ, proto, sa) for fam, typ, proto, _name, sa in infos
                      if fam in (socket.AF_INET, socket.AF_INET6))
    if not addresses:
        raise FetchError(f"cannot resolve host {host!r}: no IPv4 or IPv6 address")
    if not policy.allow_private:
        for *_, sockaddr in addresses:
            if not is_public_address(str(sockaddr[0])):
                raise _refuse_private(str(sockaddr[0]), host)
    return _Pin(_normal_host(host), port, addresses)


def _connect_pinned(conn: Any, pin: _Pin) -> socket.socket:
    """urllib3's `_new_conn`, but to the checked addresses instead of a fresh lookup."""
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    if _normal_host(conn.host) != pin.host or conn.port != pin.port:
        raise NewConnectionError(conn, f"refusing to connect to {conn.host}:{conn.port}, "
                                       "which is not the checked host")
    error: OSError | None = None
    for family, socktype, proto, sockaddr in pin.addresses:
        sock = socket.socket(family, socktype, proto)
        try:
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            if conn.timeout is None or isinstance(conn.timeout, (int, float)):
                sock.settimeout(conn.timeout)
            if conn.source_address:
                sock.bind(conn.source_address)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        sys.audit("http.client.connect", conn, conn.host, conn.port)
        return sock
    if isinstance(error, TimeoutError):
        raise ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        ) from error
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}") from error


def resolve_pinned(url: str, allow_private: bool = False) -> Any:
    """Resolve the URL's host once, refuse non-public answers unless `allow_private`, and
    return a requests adapter whose connections go only to those checked addresses (no
    second lookup a rebinding name could answer differently), with the pin it carries
    (`adapter.pin`, comparable between lookups). For other HTTP clients of imgverify (the
    importers); raises FetchError/UrlRefusedError as `fetch_url` does."""
    pin = _resolve_and_check(url, FetchPolicy(allow_private=allow_private), proxied=False)
    if pin is None:  # only a proxied lookup may come back empty, and this one is not
        raise FetchError(f"cannot resolve the host of {redact_url(url)}")
    adapter = _pinned_adapter(pin)
    adapter.pin = pin
    return adapter


def _pinned_adapter(pin: _Pin) -> Any:
    """A requests adapter whose direct connections go to `pin` (proxied ones go to the proxy,
    which urllib3 connects to with its own classes)."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class PinnedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_pinned(self, pin)

    class PinnedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_pinned(self, pin)

    class PinnedHTTPPool(HTTPConnectionPool):
        ConnectionCls = PinnedHTTPConnection

    class PinnedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = PinnedHTTPSConnection

    class PinnedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {
                "http": PinnedHTTPPool, "https": PinnedHTTPSPool}

    return PinnedAdapter(max_retries=0)


def preload() -> None:
    """Import the HTTP stack now (it is imported lazily: most checks never fetch), for a
    caller about to arm a per-input time limit (`checker.warm_up`)."""
    import requests.adapters  # noqa: F401
    import requests.utils  # noqa: F401
    import urllib3.connection  # noqa: F401
    import urllib3.connectionpool  # noqa: F401
    import urllib3.exceptions  # noqa: F401


def fetch_url(url: str, policy: FetchPolicy | None = None) -> bytes:
    """Download `url` and return its body, or raise FetchError saying what to do next
    (UrlRefusedError when the policy refuses the URL or a redirect hop, before connecting)."""
    import requests  # imported lazily: most checks never touch the network
    from requests.utils import get_environ_proxies, select_proxy

    policy = policy or FetchPolicy()
    deadline = time.monotonic() + policy.total_timeout
    session = requests.Session()
    session.trust_env = False  # no env proxies, no ~/.netrc credentials sent to any host
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept-Encoding"] = "identity"  # no gzip bombs: we cap raw bytes
    current = url
    try:
        for _hop in range(policy.max_redirects + 1):
            try:
                prepared = session.prepare_request(requests.Request("GET", current))
            except requests.exceptions.RequestException as exc:
                raise FetchError(f"invalid URL {redact_url(current)}: {type(exc).__name__}"
                                 ) from None
            target = prepared.url or current
            proxies = get_environ_proxies(target) if policy.use_env_proxy else {}
            pin = _resolve_and_check(target, policy,
                                     proxied=select_proxy(target, proxies) is not None)
            for old in session.adapters.values():
                old.close()
            if pin is not None:  # a fresh pool per hop: nothing reuses an earlier hop's pin
                pinned = _pinned_adapter(pin)
                session.mount("http://", pinned)
                session.mount("https://", pinned)
            try:
                resp = session.send(
                    prepared,
                    stream=True,
                    allow_redirects=False,
                    timeout=(policy.connect_timeout, policy.read_timeout),
                    proxies=proxies,
                    verify=policy.ca_file or True,
                )
            except requests.exceptions.Timeout:
                raise FetchError(f"timed out fetching {redact_url(current)}") from None
            except requests.exceptions.RequestException as exc:
                raise FetchError(
                    f"could not fetch {redact_url(current)}: {type(exc).__name__}"
                ) from None
            with resp:
                if resp.is_redirect:
                    location = resp.headers.get("Location", "")
                    current = urljoin(current, location)
                    continue
                if resp.status_code != 200:
                    raise FetchError(f"HTTP {resp.status_code} from {redact_url(current)}")
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if ctype and not ctype.startswith(ACCEPTED_CONTENT_TYPES):
                    raise FetchError(
                        f"{redact_url(current)} returned {ctype!r}, not an image; "
                        "pass the direct image URL (right-click > copy image address)"
                    )
                declared = resp.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                    raise FetchError(
                        f"{redact_url(current)} is {int(declared)} bytes, over the "
                        f"{policy.max_bytes}-byte limit"
                    )
                chunks: list[bytes] = []
                total = 0
                # read1 returns whatever has arrived, so the deadline is checked after every
                # packet: a server trickling a byte a second cannot hold the read open; the
                # watchdog closes the connection for a server that stops sending altogether
                watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), resp.close)
                watchdog.daemon = True
                watchdog.start()
                try:
                    while True:
                        chunk = resp.raw.read1(65536, decode_content=False)
                        if not chunk:
                            break
                        total += len(chunk)
                        if total > policy.max_bytes:
                            raise FetchError(
                                f"{redact_url(current)} exceeds the {policy.max_bytes}-byte limit"
                            )
                        if time.monotonic() > deadline:
                            raise FetchError(
                                f"timed out fetching {redact_url(current)} (too slow)")
                        chunks.append(chunk)
                finally:
                    watchdog.cancel()
                if time.monotonic() > deadline:
                    raise FetchError(f"timed out fetching {redact_url(current)} (too slow)")
                return b"".join(chunks)
        raise FetchError(f"too many redirects (> {policy.max_redirects}) from {redact_url(url)}")
    except FetchError:
        raise
    except Exception as exc:  # noqa: BLE001 - urllib3 protocol errors, timeouts in stream()
        if time.monotonic() > deadline or "Timeout" in type(exc).__name__:
            raise FetchError(f"timed out fetching {redact_url(current)}") from None
        raise FetchError(f"could not fetch {redact_url(current)}: {type(exc).__name__}") from None
    finally:
        session.close()
