"""HTTP service: the checker and the archive for pipelines written in other languages.

`create_app` builds a FastAPI application around one open `Archive`; `imgverify serve`
(cli/serve.py) runs it under uvicorn. The app keeps all its state on itself (no module-level
app, no process-wide settings), so tests and embedders can build several side by side.

Why it is shaped this way:
- `check()` is CPU-bound and blocking. It runs in a bounded thread pool (sized to the cores)
  so the event loop keeps answering health probes and rejecting bad requests while checks
  run; a request that waits or runs longer than the time-out gets a 504, and the backlog of
  submitted work is capped so an overload turns into quick 503s instead of ever longer waits.
  A check that times out cannot be interrupted inside its thread: it finishes (the pool bound
  keeps it from taking more than its share) and its result is dropped; URL fetches are given
  the same deadline, so a slow remote server cannot hold a worker longer than that.
- Every error has the same shape as the CLI's typed error: ``{"error": {"kind", "message"}}``
  (an input the checker could not read answers 422 with the full check result, whose
  ``error`` is that object). Nothing a client sends should produce a 500.
- Upload bodies are counted while they stream in: a body over the limit is refused with 413
  as soon as it is declared or crosses the limit, never read to the end.
- Logs are JSON lines on the ``imgverify.service`` logger, configured only by `serve`. They
  never carry the Authorization header, and URLs are logged without user-info or query
  string (where signed URLs keep their credentials).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from imgverify._version import __version__
from imgverify.checker import check, prepare_local_index
from imgverify.errors import ArchiveError, ImgVerifyError
from imgverify.ingest import prepare_reference, prepare_reference_bytes
from imgverify.match.verdict import local_thresholds, parse_claimed_date
from imgverify.media.fetch import is_url
from imgverify.media.load import Limits
from imgverify.store.manifest import OPTIONAL, ManifestRow, RowError, _validate
from imgverify.store.sqlite import Archive

SERVICE_EXTRA_HINT = ("the HTTP service needs the service extra: "
                      "pip install 'imgverify[service]'")

try:
    import anyio
    import python_multipart  # noqa: F401 - FastAPI's form parser needs it
    from fastapi import Depends, FastAPI, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, ConfigDict, Field, ValidationError
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
except ImportError as _exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(SERVICE_EXTRA_HINT) from _exc

log = logging.getLogger("imgverify.service")

T = TypeVar("T")

#: Default cap on an uploaded image (and on a fetched one): larger than any camera JPEG.
DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024
#: Default seconds a request may wait for and run its check.
DEFAULT_TIMEOUT_S = 30.0
#: Room for multipart headers and the small text fields around an upload.
_FORM_OVERHEAD = 256 * 1024
#: Cap on bodies that carry no image (JSON requests).
_SMALL_BODY = 256 * 1024
_MAX_TEXT_FIELD = 20_000
_UPLOAD_ROUTES = ("/v1/check", "/v1/references")


# -- response and request models (they are the OpenAPI document) ---------------------------

class ErrorDetail(BaseModel):
    kind: str = Field(description="Stable machine-readable label, as in the CLI's JSON "
                                  "(e.g. not_an_image, url_refused, timeout, unauthorized).")
    message: str = Field(description="What went wrong and what to do, for a person.")


class ErrorResponse(BaseModel):
    error: ErrorDetail
    request_id: str | None = Field(None, description="Also in the server log and the "
                                                     "X-Request-ID header.")
    details: list[dict[str, Any]] | None = Field(
        None, description="Per-field problems of an invalid request.")


class MatchModel(BaseModel):
    reference_id: str
    score: float
    strength: str
    role: str
    event: str | None
    date: str
    place: str | None
    caption: str | None
    source: str | None
    source_url: str | None
    credit: str | None
    license: str | None
    published: str | None
    distances: dict[str, int]
    transform: str | None
    exact_copy: bool
    days_before_claim: int | None
    method: str
    region: list[float] | None
    reference_region: list[float] | None = None
    chance_unrelated: dict[str, Any] | None = None
    alignment: dict[str, Any] | None = None
    agreement: float | None = Field(None, description="Median block correlation of the "
                                    "submitted image aligned onto the archived one (present "
                                    "when measured).")
    local_evidence: dict[str, Any] | None = Field(None, description="Local-feature matches: "
                                                  "transform, inlier pairs, coverage.")
    hash_only: bool = Field(False, description="Matched through an imported PDQ hash list: no "
                            "image was available for local verification.")
    sha256: str | None


class CheckResponse(BaseModel):
    """Exactly what `imgverify check --format json` prints (`CheckResult.to_dict()`)."""

    input: str
    sha256: str | None
    verdict: Literal["likely_recycled", "possibly_recycled", "no_match", "error"]
    error: ErrorDetail | None
    matches: list[MatchModel]
    exif: dict[str, Any]
    notes: list[str]
    claimed_date: str | None
    claimed_place: str | None
    claim_checks: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    content_credentials: dict[str, Any] | None
    hashes: dict[str, Any]
    image_size: list[int] | None
    elapsed_ms: float | None
    archive: dict[str, Any] | None = Field(
        None, description="What the image was checked against: id, name, backend, reference "
        "count, date range, generation, hash pipeline.")
    same_scene: list[dict[str, Any]] = Field(
        default_factory=list, description="Archived photos of the same place that this image is "
        "not a copy of (another viewpoint, another day): context, never a match.")
    searched: dict[str, str] = Field(
        default_factory=dict, description="What was searched: global_hashes (whole-picture "
        "matches) and local_features (crops, screenshots, collages): searched, not_needed "
        "(a whole-picture match was already likely), off or pending (index not built).")
    tool: dict[str, Any] = Field(description="name, version and hash pipeline of imgverify")
    checked_at: str = Field(description="UTC time of the check")


_LOCAL_HELP = ("Search crops, screenshots and collages with local features (default true). "
               "false: whole-picture matches only (re-encoded, resized, mirrored, bordered "
               "copies, memes with a caption bar), several times faster; the result's "
               "`searched` says so.")


class CheckUrlRequest(BaseModel):
    """Check the image at a URL (fetched under the server's URL rules)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=8192, description="http(s) URL of the image.")
    claimed_date: str | None = Field(None, max_length=64,
                                     description="The date the image is claimed to show "
                                                 "(YYYY-MM-DD).")
    claimed_place: str | None = Field(None, max_length=1000,
                                      description="The place the image is claimed to show.")
    local: bool = Field(True, description=_LOCAL_HELP)


class ReferenceModel(BaseModel):
    reference_id: str
    sha256: str
    date: str
    event: str | None
    place: str | None
    caption: str | None
    source: str | None
    source_url: str | None
    credit: str | None
    license: str | None
    published: str | None
    image_uri: str | None
    width: int | None
    height: int | None
    format: str | None
    added_at: str | None
    updated_at: str | None


class ReferenceAdded(BaseModel):
    status: Literal["added", "updated"]
    reference: ReferenceModel


class ReferenceUrlRequest(BaseModel):
    """A manifest row whose image is an http(s) URL (fetched under the server's URL rules)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=8192, description="http(s) URL of the image.")
    date: str = Field(min_length=1, max_length=64, description="ISO date of the event or of "
                                                                "first publication.")
    event: str | None = Field(None, max_length=_MAX_TEXT_FIELD)
    place: str | None = Field(None, max_length=_MAX_TEXT_FIELD)
    caption: str | None = Field(None, max_length=_MAX_TEXT_FIELD)
    source: str | None = Field(None, max_length=_MAX_TEXT_FIELD)
    source_url: str | None = Field(None, max_length=_MAX_TEXT_FIELD)
    credit: str | None = Field(None, max_length=_MAX_TEXT_FIELD)
    license: str | None = Field(None, max_length=_MAX_TEXT_FIELD)
    published: str | None = Field(None, max_length=64)


class HealthResponse(BaseModel):
    status: Literal["ok"]
    version: str
    references: int
    archive_id: str | None
    generation: str
    readonly: bool


# -- the pieces the app is built from ------------------------------------------------------

class ApiError(Exception):
    """An error response with the CLI's typed error shape."""

    def __init__(self, status: int, kind: str, message: str,
                 headers: dict[str, str] | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.headers = headers
        self.details = details


def _error_body(request: Request | None, kind: str, message: str,
                details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"kind": kind, "message": message}}
    rid = getattr(request.state, "request_id", None) if request is not None else None
    if rid:
        body["request_id"] = rid
    if details is not None:
        body["details"] = details
    return body


def log_safe_url(url: str) -> str:
    """scheme://host[:port]/path: no user-info and no query or fragment, which is where
    signed URLs carry their credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    netloc = f"{host}:{port}" if port else host
    suffix = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + suffix


_SAFE_NAME = re.compile(r"[^\w.\- ()+,@]")


def _upload_name(filename: str | None) -> str:
    """A display name for an uploaded file: its base name, printable, bounded."""
    if not filename:
        return "<upload>"
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    base = _SAFE_NAME.sub("_", base)[:200]
    return base or "<upload>"


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_message(limit))


class _BodySlow(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s")


def _too_large_message(limit: int) -> str:
    hint = (f" (the image limit is {limit - _FORM_OVERHEAD} bytes): send a smaller file"
            if limit > _SMALL_BODY else ": JSON requests carry a URL, not an image")
    return f"request body over the {limit}-byte limit{hint}"


class _BodyLimit:
    """Pure ASGI middleware for request bodies: refuses one over the route's limit from its
    declared length, or as soon as the streamed bytes cross it, without reading the rest;
    and one that has not fully arrived within the time-out (a client trickling or stalling
    an upload would otherwise hold its connection open indefinitely)."""

    def __init__(self, app: Any, upload_limit: int, timeout_s: float) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.timeout_s = timeout_s

    def _limit_for(self, path: str, content_type: bytes) -> int:
        if path.rstrip("/") in _UPLOAD_ROUTES and content_type.lower().lstrip().startswith(
                b"multipart/"):
            return self.upload_limit + _FORM_OVERHEAD
        return _SMALL_BODY  # JSON bodies carry a URL and a few fields, never an image

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        limit = self._limit_for(scope.get("path", ""), headers.get(b"content-type", b""))
        declared = headers.get(b"content-length")
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _send_error(scope, tracking_send, 413, "payload_too_large",
                              _too_large_message(limit))
            return
        seen = 0
        complete = False
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def counting_receive() -> Any:
            nonlocal seen, complete
            if complete:  # after the body: waiting for a disconnect is not bounded here
                return await receive()
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, remaining))
            except TimeoutError:
                raise _BodySlow(self.timeout_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(limit)
                complete = not message.get("more_body", False)
            return message

        try:
            await self.app(scope, counting_receive, tracking_send)
        except (_BodyTooLarge, _BodySlow) as exc:
            if started:
                raise
            await _send_error(scope, tracking_send, exc.status_code,
                              "payload_too_large" if exc.status_code == 413 else "timeout",
                              str(exc.detail))


async def _send_error(scope: dict[str, Any], send: Callable[[Any], Awaitable[None]],
                      status: int, kind: str, message: str) -> None:
    """A typed error sent straight from the middleware; the connection is closed after it,
    as the rest of the body is never read."""
    body: dict[str, Any] = {"error": {"kind": kind, "message": message}}
    rid = scope.get("state", {}).get("request_id")
    if rid:
        body["request_id"] = rid
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})


class _Checks:
    """The bounded pool that runs blocking work, with a cap on the backlog."""

    def __init__(self, workers: int, max_pending: int) -> None:
        self.workers = workers
        self.max_pending = max_pending
        self._pool: ThreadPoolExecutor | None = None
        self._pending = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="imgverify-check")

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _done(self, _f: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1

    @property
    def pending(self) -> int:
        return self._pending

    async def run(self, fn: Callable[[], T], timeout_s: float | None) -> T:
        if self._pool is None:
            raise ApiError(503, "unavailable", "the service is starting or stopping; retry")
        with self._lock:
            if self._pending >= self.max_pending:
                raise ApiError(503, "busy", f"{self._pending} checks are already waiting or "
                               "running; retry shortly", headers={"Retry-After": "1"})
            self._pending += 1
        future = self._pool.submit(fn)
        future.add_done_callback(self._done)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except TimeoutError:
            future.cancel()  # still queued: it never runs; running: it finishes, unused
            raise ApiError(504, "timeout", f"the request took longer than {timeout_s:g} s "
                           "(the server is busy, or the image or its URL is slow); retry, "
                           "or send a smaller image") from None


@dataclass(frozen=True)
class _Auth:
    token: str | None
    read_token: str | None

    @property
    def open(self) -> bool:
        return not self.token and not self.read_token

    def role(self, presented: str | None) -> str | None:
        """'write', 'read' or None for the token presented (compared in constant time)."""
        if presented is None:
            return None
        given = presented.encode()
        if self.token and hmac.compare_digest(given, self.token.encode()):
            return "write"
        if self.read_token and hmac.compare_digest(given, self.read_token.encode()):
            return "read"
        return None


def _text_field(form: Any, name: str, max_chars: int) -> str | None:
    values = form.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(422, "invalid_request", f"field {name!r} is given more than once")
    value = values[0]
    if isinstance(value, UploadFile):
        raise ApiError(422, "invalid_request", f"field {name!r} must be text, not a file")
    if len(value) > max_chars:
        raise ApiError(422, "invalid_request",
                       f"field {name!r} is longer than {max_chars} characters")
    return str(value)


def _flag_field(form: Any, name: str, default: bool) -> bool:
    value = _text_field(form, name, 8)
    if value is None:
        return default
    if value.strip().lower() not in ("true", "false"):
        raise ApiError(422, "invalid_request", f"field {name!r} must be true or false")
    return value.strip().lower() == "true"


async def _read_upload(form: Any, name: str = "image") -> tuple[bytes, str]:
    files = form.getlist(name)
    if len(files) != 1 or not isinstance(files[0], UploadFile):
        raise ApiError(422, "invalid_request",
                       f"multipart field {name!r} must hold exactly one image file")
    upload: UploadFile = files[0]
    return await upload.read(), _upload_name(upload.filename)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _claimed_date(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        parsed = parse_claimed_date(value)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    return parsed.isoformat() if parsed else None


def _validation_details(exc: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for e in exc.errors():
        out.append({"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                    "type": str(e.get("type", ""))})
    return out


_MULTIPART_CHECK = {
    "type": "object",
    "required": ["image"],
    "additionalProperties": False,
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "The image file."},
        "claimed_date": {"type": "string", "maxLength": 64,
                         "description": "The date the image is claimed to show (YYYY-MM-DD)."},
        "claimed_place": {"type": "string", "maxLength": 1000,
                          "description": "The place the image is claimed to show."},
        "local": {"type": "string", "enum": ["true", "false"], "default": "true",
                  "description": _LOCAL_HELP},
    },
}

_MULTIPART_REFERENCE = {
    "type": "object",
    "required": ["image", "date"],
    "additionalProperties": False,
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "The image file."},
        "date": {"type": "string", "maxLength": 64,
                 "description": "ISO date of the event or of first publication (required)."},
        **{name: {"type": "string", "maxLength": 64 if name == "published" else _MAX_TEXT_FIELD}
           for name in OPTIONAL},
    },
}


def _body(json_model: type[BaseModel], multipart_schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": multipart_schema},
        "application/json": {"schema": json_model.model_json_schema()},
    }}}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {401: "Missing or invalid bearer token.",
            403: "A read-only token on a write operation.",
            404: "No such reference.",
            400: "Malformed multipart body.",
            408: "The request body did not arrive within the time-out.",
            413: "Body over the upload limit (refused without reading it all).",
            415: "Send multipart/form-data or application/json.",
            422: "Invalid request or unreadable image (typed error).",
            503: "Busy (retry after the Retry-After header), starting, or archive unavailable.",
            504: "The request took longer than the server's time-out."}
    return {c: {"model": ErrorResponse, "description": text[c]} for c in codes}


# -- the app -------------------------------------------------------------------------------

def create_app(archive: Archive, *, token: str | None = None, read_token: str | None = None,
               limits: Limits | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
               workers: int | None = None, max_pending: int | None = None,
               warm_up: bool = True) -> FastAPI:
    """A FastAPI app serving `archive` (opened once, shared by every request).

    `token` may check and add references, `read_token` may only check and read; with neither,
    every request is allowed (bind such a server to loopback only: `serve` enforces that).
    `limits` bounds uploads and fetched images (`max_bytes`, `max_pixels`, the URL policy);
    `timeout_s` bounds the arrival of a request's body (408 past it) and then its check's
    wait plus work (504 past it); URL fetches get the same deadline. `workers` threads run
    checks (default: one per core); `max_pending` caps checks waiting or running (503 past
    it; default 16 per worker).
    """
    base = limits or Limits()
    fetch = replace(base.fetch, max_bytes=min(base.fetch.max_bytes, base.max_bytes),
                    total_timeout=min(base.fetch.total_timeout, timeout_s))
    lim = replace(base, fetch=fetch, timeout_s=timeout_s)
    nworkers = workers if workers and workers > 0 else max(1, os.cpu_count() or 1)
    checks = _Checks(nworkers, max_pending if max_pending else 16 * nworkers)
    auth = _Auth(token or None, read_token or None)
    bearer = HTTPBearer(auto_error=False, description="`--token` (read and write) or "
                        "`--read-token` (check and read only).")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        checks.start()
        if warm_up:
            try:  # build the indexes now, not in the first client's request
                await checks.run(lambda: (archive.index(), prepare_local_index(archive)),
                                 None)
            except ArchiveError as exc:
                log.error("archive not ready", extra={"event": "warm_up",
                                                      "error": exc.message})
        log.info("ready", extra={"event": "ready", "workers": nworkers,
                                 "max_pending": checks.max_pending, "timeout_s": timeout_s,
                                 "max_upload_bytes": lim.max_bytes,
                                 "auth": "none" if auth.open else "bearer",
                                 "archive_readonly": archive.readonly})
        try:
            yield
        finally:
            checks.stop()

    app = FastAPI(
        title="imgverify", version=__version__, lifespan=lifespan,
        description="Check whether a news photo was published before, against a dated "
                    "reference archive. 'no_match' means not in this archive, never "
                    "'authentic'. Every error body is `{\"error\": {\"kind\", \"message\"}}`.",
    )
    app.add_middleware(_BodyLimit, upload_limit=lim.max_bytes,  # type: ignore[arg-type]
                       timeout_s=timeout_s)

    def role_of(request: Request, creds: HTTPAuthorizationCredentials | None) -> str:
        if auth.open:
            role = "write"
        elif creds is None:
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": "Bearer"})
        else:
            found = auth.role(creds.credentials)
            if found is None:
                raise ApiError(401, "unauthorized", "the bearer token is not valid",
                               headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            role = found
        request.state.log["role"] = role
        return role

    async def reader(request: Request,
                     creds: HTTPAuthorizationCredentials | None = Security(bearer)) -> str:
        return role_of(request, creds)

    async def writer(request: Request,
                     creds: HTTPAuthorizationCredentials | None = Security(bearer)) -> str:
        role = role_of(request, creds)
        if role != "write":
            raise ApiError(403, "forbidden", "this token may only check and read; adding "
                           "references needs the read-write token")
        return role

    # -- error handlers: every error is typed, none is a 500 with a traceback -------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        _state_log(request)["error"] = exc.kind
        return JSONResponse(_error_body(request, exc.kind, exc.message, exc.details),
                            exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                408: "timeout", 413: "payload_too_large"}.get(exc.status_code, "http_error")
        _state_log(request)["error"] = kind
        return JSONResponse(_error_body(request, kind, str(exc.detail)), exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        _state_log(request)["error"] = "invalid_request"
        return JSONResponse(_error_body(request, "invalid_request", "invalid request",
                                        _validation_details(exc)), 422)

    @app.exception_handler(ArchiveError)
    async def _archive_error(request: Request, exc: ArchiveError) -> JSONResponse:
        log.error("archive error", extra={"event": "archive_error", "error": exc.message,
                                          "request_id": getattr(request.state, "request_id",
                                                                None)})
        _state_log(request)["error"] = "archive_error"
        message = ("this server's archive is read-only" if "read-only" in exc.message else
                   "the archive is unavailable; the server log has the details")
        return JSONResponse(_error_body(request, "archive_error", message), 503)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", exc_info=exc,
                  extra={"event": "internal_error",
                         "request_id": getattr(request.state, "request_id", None)})
        return JSONResponse(_error_body(request, "internal", "internal error; the server "
                                        "log has the details"), 500)

    @app.middleware("http")
    async def _request_log(request: Request, call_next: Any) -> Any:
        request.state.request_id = uuid.uuid4().hex[:16]
        request.state.log = {}
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = request.state.request_id
            return response
        finally:
            fields = {"event": "request", "request_id": request.state.request_id,
                      "method": request.method, "path": request.url.path,
                      "status": status, "client": request.client.host if request.client
                      else None,
                      "duration_ms": round((time.perf_counter() - started) * 1000, 1)}
            fields.update(request.state.log)
            log.info("%s %s %s", request.method, request.url.path, status, extra=fields)

    # -- routes -----------------------------------------------------------------------------
    @app.get("/v1/health", operation_id="health", response_model=HealthResponse, tags=["service"],
             responses=_errors(503))
    async def health() -> dict[str, Any]:
        """Liveness and readiness (no token needed): the archive answers a query."""
        def probe() -> dict[str, Any]:
            return {"status": "ok", "version": __version__, "references": len(archive),
                    "archive_id": archive.archive_id(), "generation": archive.generation(),
                    "readonly": archive.readonly}
        return await anyio.to_thread.run_sync(probe)

    @app.post("/v1/check", operation_id="check", tags=["check"],
              openapi_extra=_body(CheckUrlRequest, _MULTIPART_CHECK),
              responses={200: {"model": CheckResponse,
                               "description": "Checked: the verdict is in the body."},
                         422: {"model": CheckResponse | ErrorResponse,
                               "description": "The image could not be checked (the body is "
                               "the check result with its typed error), or the request is "
                               "invalid."},
                         **_errors(400, 401, 408, 413, 415, 503, 504)})
    async def check_image(request: Request, _role: str = Depends(reader)) -> JSONResponse:
        """Check one image: a multipart upload (field `image`) or JSON `{"url": ...}`, with
        an optional claimed date and place. The body is exactly `check --format json`."""
        media = _media_type(request)
        name: str | None
        entry = request.state.log
        if media == "application/json":
            try:
                req = CheckUrlRequest.model_validate_json(await request.body())
            except ValidationError as exc:
                raise ApiError(422, "invalid_request", "invalid JSON body",
                               details=_validation_details(exc)) from None
            source: str | bytes = req.url
            name = None
            claimed_date, claimed_place = req.claimed_date, req.claimed_place
            local = req.local
            entry.update(input="url", url=log_safe_url(req.url))
        elif media == "multipart/form-data":
            async with request.form(max_files=1, max_fields=5,
                                    max_part_size=_MAX_TEXT_FIELD) as form:
                _no_other_fields(form, ("image", "claimed_date", "claimed_place", "local"))
                source, name = await _read_upload(form)
                claimed_date = _text_field(form, "claimed_date", 64)
                claimed_place = _text_field(form, "claimed_place", 1000)
                local = _flag_field(form, "local", default=True)
            entry.update(input="upload", bytes=len(source))
        else:
            raise ApiError(415, "unsupported_media_type", "send the image as "
                           "multipart/form-data (field 'image') or JSON {\"url\": ...}")
        date = _claimed_date(claimed_date)
        place = claimed_place.strip() or None if claimed_place else None
        result = await checks.run(
            lambda: check(source, archive, claimed_date=date, claimed_place=place, limits=lim,
                          name=name, thresholds=local_thresholds(local)), timeout_s)
        body = result.to_dict()
        entry.update(verdict=result.verdict, sha256=result.sha256)
        if result.error:
            entry["error"] = result.error.get("kind")
        return JSONResponse(body, 422 if result.verdict == "error" else 200)

    @app.get("/v1/references/{reference_id}", operation_id="getReference",
             response_model=ReferenceModel,
             tags=["references"], responses=_errors(401, 404, 422, 503))
    async def get_reference(reference_id: str, _role: str = Depends(reader)
                            ) -> dict[str, Any]:
        """One archived reference with its context, by reference_id or sha256."""
        if len(reference_id) > 128:
            raise ApiError(404, "not_found", "no such reference")
        ref = await anyio.to_thread.run_sync(archive.get, reference_id)
        if ref is None:
            raise ApiError(404, "not_found", f"no reference {reference_id!r} in this archive")
        return ref.to_dict()

    @app.post("/v1/references", operation_id="addReference", tags=["references"],
              openapi_extra=_body(ReferenceUrlRequest, _MULTIPART_REFERENCE),
              responses={200: {"model": ReferenceAdded,
                               "description": "Updated: the image (same sha256) was already "
                               "archived; its context is replaced."},
                         201: {"model": ReferenceAdded, "description": "Added."},
                         **_errors(400, 401, 403, 408, 413, 415, 422, 503, 504)})
    async def add_reference(request: Request, _role: str = Depends(writer)) -> JSONResponse:
        """Add a reference from a manifest row plus its image: multipart (field `image` and
        the row's fields) or JSON with `image` an http(s) URL. Validated like a manifest row;
        re-adding the same image updates it (idempotent by sha256)."""
        media = _media_type(request)
        entry = request.state.log
        data: bytes | None = None
        if media == "application/json":
            try:
                req = ReferenceUrlRequest.model_validate_json(await request.body())
            except ValidationError as exc:
                raise ApiError(422, "invalid_request", "invalid JSON body",
                               details=_validation_details(exc)) from None
            if not is_url(req.image):
                raise ApiError(422, "invalid_request", "'image' must be an http(s) URL (the "
                               "server never reads its own files); or upload the file as "
                               "multipart/form-data")
            raw: dict[str, object] = req.model_dump(exclude_none=True)
            image_uri = req.image
            entry.update(input="url", url=log_safe_url(req.image))
        elif media == "multipart/form-data":
            fields = ("image", "date", *OPTIONAL)
            async with request.form(max_files=1, max_fields=len(fields),
                                    max_part_size=_MAX_TEXT_FIELD) as form:
                _no_other_fields(form, fields)
                data, filename = await _read_upload(form)
                raw = {}
                for name in fields[1:]:
                    value = _text_field(form, name, _MAX_TEXT_FIELD)
                    if value is not None:
                        raw[name] = value
            image_uri = f"upload:{filename}"
            raw["image"] = image_uri
            entry.update(input="upload", bytes=len(data))
        else:
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data (field "
                           "'image' and the manifest fields) or JSON with an image URL")
        row = _validate(0, raw, Path("/"))
        if isinstance(row, RowError):
            raise ApiError(422, "invalid_request", row.message)
        row = ManifestRow(row.line, image_uri, row.context)

        def add() -> tuple[str, dict[str, Any]]:
            try:
                prepared = (prepare_reference_bytes(data, row, lim) if data is not None
                            else prepare_reference(row, lim))
            except ImgVerifyError as exc:
                if isinstance(exc, ArchiveError):
                    raise
                raise ApiError(422, exc.kind, exc.message) from None
            added, _updated = archive.write_batch([prepared])
            ref = archive.find_sha256(prepared.sha256)
            if ref is None:  # removed by another writer in between
                raise ApiError(503, "unavailable", "the reference was removed concurrently")
            return ("added" if added else "updated"), ref.to_dict()

        status, ref = await checks.run(add, timeout_s)
        entry.update(status=status, reference_id=ref["reference_id"])
        return JSONResponse({"status": status, "reference": ref}, 201 if status == "added"
                            else 200)

    app.state.checks = checks
    return app


def _state_log(request: Request) -> dict[str, Any]:
    entry = getattr(request.state, "log", None)
    if entry is None:
        entry = request.state.log = {}
    return entry


def _no_other_fields(form: Any, allowed: tuple[str, ...]) -> None:
    unknown = sorted({k for k in form.keys() if k not in allowed})
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown field(s) {', '.join(map(repr, unknown))}"
                       f"; expected {', '.join(allowed)}")


# -- logging (configured by `serve` only) --------------------------------------------------

_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "color_message"}  # uvicorn's ANSI-coloured copy


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's extra fields.
    Fields are whatever the service put there; it never puts headers or raw URLs."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str = "info", stream: Any = None) -> None:
    """JSON lines on stderr for the service's and uvicorn's loggers (the `serve` command owns
    its process; the library never calls this)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    for name in ("imgverify.service", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # ours logs without query strings


def serve(app: FastAPI, host: str, port: int, *, log_level: str = "info") -> None:
    """Run `app` under uvicorn until interrupted."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            log_level=log_level, server_header=False, proxy_headers=False,
                            timeout_keep_alive=15, timeout_graceful_shutdown=10)
    uvicorn.Server(config).run()


def is_loopback_host(host: str) -> bool:
    """Whether binding `host` only accepts connections from this machine."""
    import ipaddress

    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


__all__ = ["create_app", "configure_logging", "serve", "is_loopback_host", "log_safe_url",
           "JsonLogFormatter", "CheckResponse", "ErrorResponse", "ReferenceModel",
           "SERVICE_EXTRA_HINT", "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_TIMEOUT_S"]
