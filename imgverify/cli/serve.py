"""`imgverify serve`: the HTTP service's command (registered on the main CLI in cli/__init__.py).

FastAPI and uvicorn are imported only when the command runs, so the rest of the CLI works
without the `service` extra, and a missing extra is one clear line, not a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from imgverify.media.load import Limits

_EXIT_USAGE = 2
_EXIT_ARCHIVE = 4
_MIN_TOKEN_CHARS = 16


def _fail(message: str, code: int) -> None:
    typer.echo(f"imgverify: {message}", err=True)
    raise typer.Exit(code)


def serve_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs "
                                      "a token (or --insecure-no-auth).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    archive: Annotated[Optional[str], typer.Option(
        "--archive", "-a", help="Archive file (SQLite). Default: $IMGVERIFY_ARCHIVE, else the "
        "shipped default archive (read-only).")] = None,
    token: Annotated[Optional[str], typer.Option(
        "--token", envvar="IMGVERIFY_TOKEN", show_envvar=True,
        help="Bearer token that may check, read and add references. Prefer the environment "
             "variable: a command-line argument is visible to other users in `ps`.")] = None,
    read_token: Annotated[Optional[str], typer.Option(
        "--read-token", envvar="IMGVERIFY_READ_TOKEN", show_envvar=True,
        help="Bearer token that may only check images and read references.")] = None,
    insecure_no_auth: Annotated[bool, typer.Option(
        "--insecure-no-auth",
        help="Serve without any token on a non-loopback address. Without tokens anyone who "
             "can reach the port can add references to (and so poison) the archive and use "
             "the server's CPU and network; only for a network you fully trust.")] = False,
    max_upload_bytes: Annotated[int, typer.Option(
        "--max-upload-bytes", help="Largest image accepted, uploaded or fetched; a larger "
        "body is refused (413) without being read.")] = 25 * 1024 * 1024,
    max_pixels: Annotated[int, typer.Option(
        "--max-pixels", help="Refuse images declaring more pixels (decompression bombs).")
    ] = Limits().max_pixels,
    timeout: Annotated[float, typer.Option(
        "--timeout", help="Seconds a request may wait for and run its check (504 past it).")
    ] = 30.0,
    workers: Annotated[int, typer.Option(
        help="Threads running checks (default: one per core).")] = 0,
    max_pending: Annotated[int, typer.Option(
        "--max-pending", help="Checks waiting or running before new ones get 503 "
        "(default: 16 per worker).")] = 0,
    allow_private_urls: Annotated[bool, typer.Option(
        "--allow-private-urls", help="Let clients make the server fetch URLs on private or "
        "loopback addresses (refused by default: clients must not reach your internal "
        "network through the service).")] = False,
    use_env_proxy: Annotated[bool, typer.Option(
        "--use-env-proxy", help="Fetch URLs through HTTP_PROXY/HTTPS_PROXY.")] = False,
    log_level: Annotated[str, typer.Option(
        "--log-level", help="debug | info | warning | error (JSON lines on stderr).")
    ] = "info",
) -> None:
    """Run the HTTP service (POST /v1/check, /v1/references; GET /v1/health; OpenAPI at
    /openapi.json, docs at /docs). Needs the optional "service" extra."""
    try:
        from imgverify import service
    except ImportError as exc:
        hint = str(exc) if "imgverify[service]" in str(exc) else None
        _fail(hint or f"the HTTP service needs the service extra: pip install "
                      f"'imgverify[service]' ({exc})", _EXIT_USAGE)
        return
    from imgverify.errors import ArchiveError
    from imgverify.media.fetch import FetchPolicy
    from imgverify.store.sqlite import resolve_archive

    token = token or None
    read_token = read_token or None
    for name, value in (("--token", token), ("--read-token", read_token)):
        if value is not None and len(value) < _MIN_TOKEN_CHARS:
            _fail(f"{name} is shorter than {_MIN_TOKEN_CHARS} characters; make one with: "
                  "python -c \"import secrets; print(secrets.token_urlsafe(32))\"", _EXIT_USAGE)
    if token and token == read_token:
        _fail("--token and --read-token must differ", _EXIT_USAGE)
    if not token and not read_token and not service.is_loopback_host(host) \
            and not insecure_no_auth:
        _fail(f"refusing to serve {host} without a token: set IMGVERIFY_TOKEN (and "
              "IMGVERIFY_READ_TOKEN for check-only clients), bind 127.0.0.1, or pass "
              "--insecure-no-auth", _EXIT_USAGE)
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        _fail(f"unknown --log-level {log_level!r}", _EXIT_USAGE)
    if max_upload_bytes <= 0 or timeout <= 0:
        _fail("--max-upload-bytes and --timeout must be positive", _EXIT_USAGE)
    try:
        chosen = archive or os.environ.get("IMGVERIFY_ARCHIVE")
        # with a read-write token, a new archive can be created and filled over HTTP
        creating = bool(token and chosen and not Path(chosen).exists())
        arch = resolve_archive(archive, writable=creating)
        arch.index()  # fail now (exit 4), not in the first request
    except ArchiveError as exc:
        _fail(exc.message, _EXIT_ARCHIVE)
        return
    limits = Limits(max_pixels=max_pixels, max_bytes=max_upload_bytes,
                    fetch=FetchPolicy(max_bytes=max_upload_bytes,
                                      allow_private=allow_private_urls,
                                      use_env_proxy=use_env_proxy))
    service.configure_logging(log_level)
    app = service.create_app(arch, token=token, read_token=read_token, limits=limits,
                             timeout_s=timeout, workers=workers or None,
                             max_pending=max_pending or None)
    service.serve(app, host, port, log_level=log_level.lower())
