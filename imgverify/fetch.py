"""Fetch an image from an http(s) URL without letting the URL do more than deliver bytes.

Guards: only http/https, connect and read time-outs, a total deadline, a streamed size cap,
a redirect limit (each hop re-checked), an image content type, and refusal of non-public
addresses unless the caller allows them (a service fetching user URLs must not become a
way into an internal network). Credentials in URLs are never echoed back in errors.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

from .errors import FetchError

USER_AGENT = "imgverify/0.1 (+news photo verification)"
ACCEPTED_CONTENT_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one download; the defaults suit a newsroom laptop and a moderation service."""

    max_bytes: int = 50 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_timeout: float = 30.0
    max_redirects: int = 5
    allow_private: bool = False


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


def _check_host(url: str, policy: FetchPolicy) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise FetchError(f"refusing URL scheme {parts.scheme!r}: only http and https are fetched")
    host = parts.hostname
    if not host:
        raise FetchError(f"URL has no host: {redact_url(url)}")
    if policy.allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc}") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if not addr.is_global:
            raise FetchError(
                f"refusing to fetch from non-public address {addr} ({host}); "
                "pass --allow-private-urls (allow_private=True) if this is intended"
            )


def fetch_url(url: str, policy: FetchPolicy | None = None) -> bytes:
    """Download `url` and return its body, or raise FetchError saying what to do next."""
    import requests  # imported lazily: most checks never touch the network

    policy = policy or FetchPolicy()
    deadline = time.monotonic() + policy.total_timeout
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept-Encoding"] = "identity"  # no gzip bombs: we cap raw bytes
    current = url
    try:
        for _hop in range(policy.max_redirects + 1):
            _check_host(current, policy)
            try:
                resp = session.get(
                    current,
                    stream=True,
                    allow_redirects=False,
                    timeout=(policy.connect_timeout, policy.read_timeout),
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
