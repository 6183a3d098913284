"""`imgverify archive import ...`: Commons/MediaWiki, export folders, feeds (thin CLI skin).

Registered on the `archive` sub-app by one line at the end of `cli.py`. Each command prints
one JSON report on stdout (what was added, linked, skipped and why, earlier sightings that
the new images match, network time) and warnings on stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Annotated, Any, Optional

import typer

from imgverify.cli.common import (
    EXIT_ARCHIVE,
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_USAGE,
    ArchiveOpt,
    MaxBytesOpt,
    MaxPixelsOpt,
    PrivateOpt,
    _fail,
    _limits,
    _open_archive,
    _ProgressBar,
)
from imgverify.errors import ArchiveError, ImgVerifyError
from imgverify.media.load import Limits

import_app = typer.Typer(help="Import dated photos from where they are published: Wikimedia "
                         "Commons (any MediaWiki wiki), export folders (gallery-dl, yt-dlp, "
                         "Telegram Desktop, X/Twitter archive, sidecars), RSS/Atom feeds.",
                         no_args_is_help=True)

ContactOpt = Annotated[Optional[str], typer.Option(
    "--contact", help="How the API operator can reach you (e-mail or user page), sent in the "
    "User-Agent as Wikimedia's policy asks. Default: $IMGVERIFY_CONTACT.")]
RateOpt = Annotated[float, typer.Option(
    "--min-interval", help="Seconds between two requests (one at a time, never parallel).")]
EnrichOpt = Annotated[Optional[str], typer.Option(
    "--enrich", help="'wayback': look up each imported URL's first Internet Archive capture.")]
CdxOpt = Annotated[str, typer.Option("--cdx-url", help="Wayback CDX API endpoint.")]
ProgressOpt = Annotated[bool, typer.Option(help="Progress bar on stderr.")]

DEFAULT_CDX = "https://web.archive.org/cdx/search/cdx"


def _one_native_thread() -> None:
    """Import hashes one image at a time in this process: idle BLAS/OpenMP threads spinning
    between calls only take CPU from it (as for `archive add`, see batch.one_native_thread).
    The CLI owns its process, so it sets this; the library leaves it to its caller."""
    from imgverify.batch import one_native_thread

    one_native_thread()


def _client(contact: Optional[str], min_interval: float, max_bytes: int,
            allow_private: bool) -> Any:
    from imgverify.ingest.importers.http import (
        PROJECT_URL,
        ClientConfig,
        PoliteClient,
        resolve_contact,
    )

    who = resolve_contact(contact)
    if who is None:
        typer.echo("imgverify: warning: no --contact (or IMGVERIFY_CONTACT) given; the "
                   f"User-Agent names only {PROJECT_URL}. Wikimedia asks API users for a way "
                   "to reach them: please set one.", err=True)
    return PoliteClient(ClientConfig(contact=who, min_interval=min_interval,
                                     max_bytes=max_bytes, allow_private=allow_private))


def _finish(arch: Any, report: Any, enrich: Optional[str], cdx_url: str, client: Any) -> None:
    out = {"archive": str(arch.path), **report.to_dict()}
    if enrich:
        from imgverify.ingest.importers.wayback import enrich_wayback

        out["wayback"] = enrich_wayback(arch, client, cdx_url).to_dict()
    if getattr(report, "added", 0):
        from imgverify.cli.archive import _build_local_index

        _build_local_index(arch, False, 5.0)
    for item in report.errors:
        typer.echo(f"imgverify: {item['entry']}: {item['error']}", err=True)
    for item in report.retroactive:
        typer.echo(f"imgverify: {item['imported']} matches an earlier {item['matches_earlier']} "
                   f"sighting ({item['seen_at'] or 'undated'}, {item['url'] or 'no URL'})",
                   err=True)
    typer.echo(json.dumps(out, ensure_ascii=False))
    raise typer.Exit(EXIT_BAD_INPUT if report.errors else EXIT_OK)


def _check_enrich(enrich: Optional[str]) -> None:
    if enrich not in (None, "wayback"):
        _fail(f"unknown --enrich {enrich!r}: the only enrichment is 'wayback'", EXIT_USAGE)


@import_app.command("commons")
def import_commons_cmd(
    target: Annotated[str, typer.Argument(help="'Category:NAME' (its files, and subcategories "
                                          "to --depth), or a search query.")],
    archive: ArchiveOpt = None,
    depth: Annotated[int, typer.Option(help="Subcategory levels to follow.")] = 0,
    since: Annotated[Optional[str], typer.Option(help="Only files uploaded on or after this "
                                                 "date (YYYY-MM-DD).")] = None,
    api_url: Annotated[str, typer.Option("--api-url", help="MediaWiki API endpoint (any "
                                         "wiki).")] = "https://commons.wikimedia.org/w/api.php",
    contact: ContactOpt = None,
    full: Annotated[bool, typer.Option(help="Download originals, not the reduced "
                                       "rendition.")] = False,
    width: Annotated[int, typer.Option(help="Width of the rendition downloaded; keep to "
                                       "Wikimedia's standard steps (500, 960, 1280, 1920).")
                     ] = 960,
    limit: Annotated[Optional[int], typer.Option(help="Stop after this many files.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted import of the same "
                                         "target where it stopped.")] = True,
    min_interval: RateOpt = 0.2,
    enrich: EnrichOpt = None,
    cdx_url: CdxOpt = DEFAULT_CDX,
    max_pixels: MaxPixelsOpt = Limits().max_pixels,
    max_bytes: MaxBytesOpt = Limits().max_bytes,
    allow_private_urls: PrivateOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Import a Wikimedia Commons category or search as dated references."""
    from imgverify.ingest.importers.commons import CommonsOptions, import_commons
    from imgverify.ingest.importers.ingest import Importer

    _check_enrich(enrich)
    since_date = None
    if since:
        try:
            since_date = dt.date.fromisoformat(since)
        except ValueError:
            _fail(f"--since {since!r} is not a date (YYYY-MM-DD)", EXIT_USAGE)
    if depth < 0 or width < 16:
        _fail("--depth must be >= 0 and --width >= 16", EXIT_USAGE)
    arch = _open_archive(archive, writable=True)
    _one_native_thread()
    limits = _limits(max_pixels, max_bytes, allow_private_urls)
    try:
        with _client(contact, min_interval, max_bytes, allow_private_urls) as client, \
                _ProgressBar("importing", "files/s", progress and sys.stderr.isatty()) as bar:
            importer = Importer(arch, limits)
            report = import_commons(importer, client, target, CommonsOptions(
                api_url=api_url, depth=depth, since=since_date, full=full, width=width,
                limit=limit, resume=resume), on_item=bar.advance)
            _finish(arch, report, enrich, cdx_url, client)
    except ArchiveError as exc:
        _fail(exc.message, EXIT_ARCHIVE)
    except ImgVerifyError as exc:
        _fail(exc.message + " (re-run the same command to resume)", EXIT_BAD_INPUT)


@import_app.command("folder")
def import_folder_cmd(
    path: Annotated[str, typer.Argument(help="Export folder: gallery-dl (--write-metadata), "
                                        "yt-dlp (.info.json + thumbnail), Telegram Desktop "
                                        "(result.json), X/Twitter archive (tweets.js).")],
    archive: ArchiveOpt = None,
    config: Annotated[Optional[str], typer.Option(
        "--config", help="JSON config mapping your own sidecars (JSON or CSV) to sightings: "
        "origin, json_suffix or csv, image, fields {seen_at, url, account, text, id}.")] = None,
    enrich: EnrichOpt = None,
    cdx_url: CdxOpt = DEFAULT_CDX,
    contact: ContactOpt = None,
    max_pixels: MaxPixelsOpt = Limits().max_pixels,
    max_bytes: MaxBytesOpt = Limits().max_bytes,
    allow_private_urls: PrivateOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Import an export folder: each published image becomes a sighting, linked to the
    reference it matches or kept as an unverified record that later copies match."""
    from pathlib import Path

    from imgverify.ingest.importers.folder import SidecarConfig, detect, import_folder
    from imgverify.ingest.importers.ingest import Importer

    _check_enrich(enrich)
    folder = Path(path)
    if not folder.is_dir():
        _fail(f"{path} is not a folder", EXIT_USAGE)
    cfg = None
    if config:
        try:
            cfg = SidecarConfig.read(config)
        except ValueError as exc:
            _fail(str(exc), EXIT_USAGE)
    if not detect(folder) and cfg is None:
        _fail(f"{path}: no gallery-dl, yt-dlp, Telegram or X export found (for other sidecars "
              "pass --config)", EXIT_BAD_INPUT)
    arch = _open_archive(archive, writable=True)
    _one_native_thread()
    try:
        with _ProgressBar("importing", "files/s", progress and sys.stderr.isatty()) as bar:
            report = import_folder(Importer(arch, _limits(max_pixels, max_bytes)), folder, cfg,
                                   on_item=bar.advance)
        client = _client(contact, 1.0, max_bytes, allow_private_urls) if enrich else None
        _finish(arch, report, enrich, cdx_url, client)
    except ArchiveError as exc:
        _fail(exc.message, EXIT_ARCHIVE)


@import_app.command("feed")
def import_feed_cmd(
    url: Annotated[str, typer.Argument(help="RSS or Atom feed URL carrying photos (Media RSS "
                                       "media:content, enclosure).")],
    archive: ArchiveOpt = None,
    contact: ContactOpt = None,
    min_interval: RateOpt = 0.5,
    enrich: EnrichOpt = None,
    cdx_url: CdxOpt = DEFAULT_CDX,
    max_pixels: MaxPixelsOpt = Limits().max_pixels,
    max_bytes: MaxBytesOpt = Limits().max_bytes,
    allow_private_urls: PrivateOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Import a photo feed: each image a sighting dated by its item's publication time."""
    from imgverify.ingest.importers.feed import import_feed
    from imgverify.ingest.importers.ingest import Importer

    _check_enrich(enrich)
    if not url.lower().startswith(("http://", "https://")):
        _fail("the feed must be an http(s) URL", EXIT_USAGE)
    arch = _open_archive(archive, writable=True)
    _one_native_thread()
    try:
        with _client(contact, min_interval, max_bytes, allow_private_urls) as client, \
                _ProgressBar("importing", "images/s", progress and sys.stderr.isatty()) as bar:
            report = import_feed(Importer(arch, _limits(max_pixels, max_bytes,
                                                        allow_private_urls)),
                                 client, url, on_item=bar.advance)
            _finish(arch, report, enrich, cdx_url, client)
    except ArchiveError as exc:
        _fail(exc.message, EXIT_ARCHIVE)
    except ImgVerifyError as exc:
        _fail(exc.message, EXIT_BAD_INPUT)


@import_app.command("wayback")
def import_wayback_cmd(
    archive: ArchiveOpt = None,
    cdx_url: CdxOpt = DEFAULT_CDX,
    contact: ContactOpt = None,
    min_interval: RateOpt = 1.0,
    allow_private_urls: PrivateOpt = False,
) -> None:
    """Look up the first Internet Archive capture of every reference and sighting URL not
    yet looked up (the same as --enrich wayback on an import)."""
    from imgverify.ingest.importers.wayback import enrich_wayback

    arch = _open_archive(archive, writable=True)
    try:
        with _client(contact, min_interval, Limits().max_bytes, allow_private_urls) as client:
            report = enrich_wayback(arch, client, cdx_url)
    except ArchiveError as exc:
        _fail(exc.message, EXIT_ARCHIVE)
    for item in report.errors:
        typer.echo(f"imgverify: {item['entry']}: {item['error']}", err=True)
    typer.echo(json.dumps({"archive": str(arch.path), "wayback": report.to_dict()},
                          ensure_ascii=False))
    raise typer.Exit(EXIT_BAD_INPUT if report.errors else EXIT_OK)


__all__ = ["import_app"]
