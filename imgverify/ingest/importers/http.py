"""A polite HTTP client for public APIs: who we are, how fast we go, and when we back off.

Wikimedia's API etiquette asks for a User-Agent naming the tool and a way to reach its
operator, serial requests, `maxlag` on batch jobs and obedience to Retry-After. This client
does all of that for every importer. It never reads proxy settings or netrc from the
environment (trust_env=False) and refuses non-public addresses unless told otherwise, as
`fetch` does for submitted URLs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from imgverify._version import __version__
from imgverify.errors import FetchError, UrlRefusedError
from imgverify.media.fetch import redact_url, resolve_pinned

PROJECT_URL = "https://github.com/imgverify/imgverify"
CONTACT_ENV = "IMGVERIFY_CONTACT"
IMAGE_TYPES = ("image/",)


class ImportHTTPError(FetchError):
    """An API or download kept failing after the retries (or answered what we cannot use)."""

    kind = "import_http_error"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def user_agent(contact: str | None) -> str:
    """`imgverify/VERSION (CONTACT; PROJECT_URL) python-requests` in Wikimedia's format."""
    who = f"{contact}; {PROJECT_URL}" if contact else PROJECT_URL
    return f"imgverify/{__version__} ({who})"


def resolve_contact(contact: str | None) -> str | None:
    """--contact, else $IMGVERIFY_CONTACT; None means the caller should warn the user."""
    chosen = contact or os.environ.get(CONTACT_ENV)
    return chosen.strip() if chosen and chosen.strip() else None


@dataclass
class ClientConfig:
    contact: str | None = None
    #: minimum seconds between two requests (Wikimedia asks API clients to go one at a time)
    min_interval: float = 0.2
    retries: int = 5
    backoff: float = 1.0  # first wait when the server gives no Retry-After; doubles
    max_wait: float = 120.0  # never sleep longer than this on one Retry-After
    timeout: float = 30.0
    max_bytes: int = 50 * 1024 * 1024
    allow_private: bool = False


def _pin_set(adapter: Any) -> Any:
    pin = getattr(adapter, "pin", None)
    return None if pin is None else (pin.host, pin.port, frozenset(pin.addresses))


class PoliteClient:
    """Serial, rate-limited GETs with retries; thread-safe (one request at a time)."""

    def __init__(self, config: ClientConfig | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import requests

        self.config = config or ClientConfig()
        self._sleep = sleep
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.headers["User-Agent"] = user_agent(self.config.contact)
        self._session.headers["Accept-Encoding"] = "gzip"
        self._lock = threading.Lock()
        self._last = 0.0
        #: seconds spent waiting on the network (for throughput reports), and retries made
        self.network_seconds = 0.0
        self.retried = 0
        self.requests = 0

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PoliteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_host(self, url: str) -> None:
        """Resolve the host once, check every address, and send this host's requests only to
        those addresses (`fetch.resolve_pinned`): checking one lookup and letting requests
        connect after a second one would let a rebinding name answer a public address to
        the check and a local one to the connection."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise ImportHTTPError(f"refusing URL scheme {parts.scheme!r} in {redact_url(url)}")
        if not parts.hostname:
            raise ImportHTTPError(f"URL has no host: {redact_url(url)}")
        try:
            adapter = resolve_pinned(url, allow_private=self.config.allow_private)
        except UrlRefusedError:
            raise ImportHTTPError(f"refusing non-public address for {parts.hostname!r}; pass "
                                  "--allow-private-urls if this is intended") from None
        except FetchError as exc:
            raise ImportHTTPError(str(exc)) from None
        # one adapter per scheme and host, kept while the host resolves to the same set of
        # addresses (a CDN's round robin reorders them), so keep-alive connections to an
        # API are reused between requests
        prefix = f"{parts.scheme.lower()}://{parts.netloc.lower()}/"
        current = self._session.adapters.get(prefix)
        if current is None or _pin_set(current) != _pin_set(adapter):
            if current is not None:
                current.close()
            self._session.mount(prefix, adapter)
        if getattr(self._session.get_adapter(url), "pin", None) is None:
            # the URL is spelled so that the prefix above does not cover it: never let an
            # unpinned adapter resolve it again
            raise ImportHTTPError(f"cannot pin the connection for {redact_url(url)}")

    def _wait_turn(self) -> None:
        gap = self.config.min_interval - (time.monotonic() - self._last)
        if gap > 0:
            self._sleep(gap)

    def _retry_after(self, headers: Mapping[str, str], attempt: int) -> float:
        value = headers.get("Retry-After")
        if value:
            try:
                return min(self.config.max_wait, max(0.0, float(value)))
            except ValueError:
                from email.utils import parsedate_to_datetime

                try:
                    when = parsedate_to_datetime(value).timestamp()
                    return min(self.config.max_wait, max(0.0, when - time.time()))
                except (TypeError, ValueError):
                    pass
        return min(self.config.max_wait, self.config.backoff * (2 ** attempt))

    def get(self, url: str, params: Mapping[str, Any] | None = None, *,
            expect_image: bool = False,
            is_retryable: Callable[[Any], bool] | None = None) -> Any:
        """GET with retries on connection errors, 429, 5xx (and `is_retryable(response)`,
        e.g. MediaWiki's maxlag error); returns the `requests.Response` with its body read."""
        import requests

        self._check_host(url)
        last_error = "no attempt"
        status: int | None = None
        with self._lock:
            for attempt in range(self.config.retries + 1):
                self._wait_turn()
                started = time.monotonic()
                try:
                    resp = self._get_following(url, params)
                    body = self._read(resp, url)
                except requests.exceptions.RequestException as exc:
                    resp = None
                    last_error = type(exc).__name__
                finally:
                    self._last = time.monotonic()
                    self.network_seconds += self._last - started
                    self.requests += 1
                if resp is not None:
                    status = resp.status_code
                    resp._content = body  # the body, read under our size cap
                    if status == 200 and not (is_retryable and is_retryable(resp)):
                        if expect_image:
                            ctype = resp.headers.get("Content-Type", "").split(";")[0].lower()
                            if ctype and not ctype.startswith(IMAGE_TYPES + (
                                    "application/octet-stream",)):
                                raise ImportHTTPError(f"{redact_url(url)} returned {ctype!r}, "
                                                      "not an image", status)
                        return resp
                    if status not in (429, 500, 502, 503, 504) and status != 200:
                        raise ImportHTTPError(f"HTTP {status} from {redact_url(url)}", status)
                    last_error = f"HTTP {status}" if status != 200 else "server lagged (maxlag)"
                    wait = self._retry_after(resp.headers, attempt)
                else:
                    wait = self._retry_after({}, attempt)
                if attempt < self.config.retries:
                    self.retried += 1
                    self._sleep(wait)
        raise ImportHTTPError(f"{redact_url(url)} still failing after "
                              f"{self.config.retries} retries ({last_error})", status)

    def _get_following(self, url: str, params: Mapping[str, Any] | None) -> Any:
        """GET, following up to 5 redirects by hand so each hop's host is checked again (a
        public feed must not redirect us into the local network)."""
        from urllib.parse import urljoin

        current, query = url, params
        for _hop in range(6):
            resp = self._session.get(current, params=query, timeout=self.config.timeout,
                                     stream=True, allow_redirects=False)
            if not resp.is_redirect:
                return resp
            resp.close()
            current, query = urljoin(resp.url, resp.headers.get("Location", "")), None
            self._check_host(current)
        raise ImportHTTPError(f"too many redirects from {redact_url(url)}")

    def _read(self, resp: Any, url: str) -> bytes:
        declared = resp.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.config.max_bytes:
            resp.close()
            raise ImportHTTPError(f"{redact_url(url)} is {declared} bytes, over the "
                                  f"{self.config.max_bytes}-byte limit")
        chunks: list[bytes] = []
        total = 0
        for chunk in resp.iter_content(65536):
            total += len(chunk)
            if total > self.config.max_bytes:
                resp.close()
                raise ImportHTTPError(f"{redact_url(url)} exceeds the "
                                      f"{self.config.max_bytes}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def get_json(self, url: str, params: Mapping[str, Any] | None = None,
                 is_retryable: Callable[[Any], bool] | None = None) -> Any:
        resp = self.get(url, params, is_retryable=is_retryable)
        try:
            return resp.json()
        except ValueError:
            raise ImportHTTPError(f"{redact_url(url)} did not answer JSON") from None

    def download(self, url: str) -> bytes:
        return bytes(self.get(url, expect_image=True).content)


__all__ = ["ClientConfig", "ImportHTTPError", "PoliteClient", "PROJECT_URL", "CONTACT_ENV",
           "resolve_contact", "user_agent"]
