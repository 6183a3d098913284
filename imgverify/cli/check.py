"""`imgverify check`: one image, with the claim made about it, to a report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from imgverify.cli.common import (
    EXIT_ARCHIVE,
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_USAGE,
    ArchiveOpt,
    EnvProxyOpt,
    LocalOpt,
    MaxBytesOpt,
    MaxFramesOpt,
    MaxPixelsOpt,
    PrivateOpt,
    _check_out_path,
    _fail,
    _limits,
    _open_archive,
    _typed_errors_exit,
    app,
)
from imgverify.errors import ArchiveError
from imgverify.match.verdict import local_thresholds
from imgverify.media.load import Limits


@app.command()
def check(
    source: Annotated[str, typer.Argument(help="Image file, http(s) URL, or - for stdin.")],
    archive: ArchiveOpt = None,
    claimed_date: Annotated[Optional[str], typer.Option(
        help="The date the image is claimed to show (YYYY-MM-DD).")] = None,
    claimed_place: Annotated[Optional[str], typer.Option(
        help="The place the image is claimed to show.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="text | json | html")] = "text",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the report here "
                                                "instead of stdout.")] = None,
    no_color: Annotated[bool, typer.Option("--no-color", help="Plain text even on a "
                                           "terminal.")] = False,
    max_pixels: MaxPixelsOpt = Limits().max_pixels,
    max_bytes: MaxBytesOpt = Limits().max_bytes,
    max_frames: MaxFramesOpt = Limits().max_frames,
    allow_private_urls: PrivateOpt = False,
    use_env_proxy: EnvProxyOpt = False,
    local: LocalOpt = True,
    record: Annotated[bool, typer.Option(
        "--record", help="Remember this check in the archive (a sighting): the next check of "
        "a copy says when it was first submitted to this desk, and from where.")] = False,
    source_url: Annotated[Optional[str], typer.Option(
        "--source-url", help="With --record: where the desk found the image.")] = None,
) -> None:
    """Check one image and print the verdict with the original context of any match."""
    from imgverify.checker import check as run_check
    from imgverify.report.render import query_thumbnail, to_html, to_json, to_text

    if fmt not in ("text", "json", "html"):
        _fail(f"unknown --format {fmt!r}: use text, json or html", EXIT_USAGE)
    if out is not None:
        _check_out_path(out, "--out", f"report.{'txt' if fmt == 'text' else fmt}")
    if source_url is not None and (not record or not source_url.lower().startswith(
            ("http://", "https://"))):
        _fail("--source-url takes an http(s) URL and goes with --record", EXIT_USAGE)
    arch = _open_archive(archive, writable=record)
    try:
        result = run_check(source, arch, claimed_date=claimed_date, claimed_place=claimed_place,
                           limits=_limits(max_pixels, max_bytes, allow_private_urls,
                                          max_frames, use_env_proxy=use_env_proxy),
                           thresholds=local_thresholds(local))
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
        raise
    except ArchiveError as exc:
        _fail(exc.message, EXIT_ARCHIVE)
        raise
    if record:
        from imgverify.ingest.firstseen import record_check

        with _typed_errors_exit():
            record_check(arch, source, result, source_url,
                         _limits(max_pixels, max_bytes, allow_private_urls, max_frames))
    if fmt == "json":
        text = to_json(result) + "\n"
    elif fmt == "html":
        qjpeg = query_thumbnail(result.picture) if result.picture is not None else None
        refs = {m.reference_id: arch.thumbnail(m.key) for m in result.matches}
        text = to_html(result, qjpeg, refs)
    elif out is None and not no_color and sys.stdout.isatty():
        from rich.console import Console

        from imgverify.report.render import print_rich

        print_rich(result, Console())
        raise typer.Exit(EXIT_BAD_INPUT if result.verdict == "error" else EXIT_OK)
    else:
        text = to_text(result)
    if out is not None:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"{result.verdict}: report written to {out}", err=True)
    else:
        sys.stdout.write(text)
    raise typer.Exit(EXIT_BAD_INPUT if result.verdict == "error" else EXIT_OK)
