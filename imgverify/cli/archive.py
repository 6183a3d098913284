"""`imgverify archive ...`: build, inspect and maintain a reference archive."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from imgverify.cli.common import (
    EXIT_ARCHIVE,
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_USAGE,
    ArchiveOpt,
    MaxBytesOpt,
    MaxPixelsOpt,
    ProgressIntervalOpt,
    ProgressOpt,
    _fail,
    _limits,
    _not_an_archive,
    _open_archive,
    _ProgressBar,
    _typed_errors_exit,
    archive_app,
)
from imgverify.errors import ManifestError
from imgverify.ingest import ingest_manifest
from imgverify.media.load import Limits
from imgverify.store.postgres import is_postgres_url
from imgverify.workers import default_workers


@archive_app.command("add")
def archive_add(
    manifest: Annotated[Path, typer.Argument(help="CSV (with header) or JSONL manifest: image "
                                             "and date required; event, place, caption, source, "
                                             "source_url, credit, license, published optional.")],
    archive: ArchiveOpt = None,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (default 0: all "
                                                     "cores).")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="References per transaction.")] = 100,
    max_pixels: MaxPixelsOpt = Limits().max_pixels,
    max_bytes: MaxBytesOpt = Limits().max_bytes,
    progress: ProgressOpt = True,
    progress_interval: ProgressIntervalOpt = 5.0,
) -> None:
    """Add (or update, by sha256) the references of a manifest. Bad rows are reported with
    their line numbers; good rows still go in."""
    from imgverify.ingest.importers.ingest import retroactive_since
    from imgverify.store.manifest import inspect_manifest, read_manifest
    from imgverify.store.sightings import now_iso

    chosen = archive or os.environ.get("IMGVERIFY_ARCHIVE")
    if chosen and not is_postgres_url(chosen):  # archive problems first, nothing created yet
        problem = _not_an_archive(Path(chosen), "--archive" if archive else "$IMGVERIFY_ARCHIVE")
        if problem is None and not Path(chosen).parent.is_dir():
            problem = f"folder {Path(chosen).parent} does not exist"
        if problem:
            _fail(problem, EXIT_ARCHIVE)
    try:  # the whole manifest's shape next: a wrong header must not leave an empty archive
        info = inspect_manifest(manifest)
    except ManifestError as exc:
        _fail(exc.message, EXIT_BAD_INPUT)
    warning = info.unknown_warning(str(manifest))
    if warning:
        typer.echo(f"imgverify: warning: {warning}", err=True)
    arch = _open_archive(archive, writable=True)
    started = now_iso()
    with _typed_errors_exit(), _ProgressBar("ingesting", "img/s",
                                            progress, progress_interval) as bar:
        bar.count_in_background(lambda: read_manifest(manifest))
        report = ingest_manifest(arch, manifest, batch_size=batch_size,
                             limits=_limits(max_pixels, max_bytes),
                             workers=workers if workers > 0 else default_workers(),
                             progress=bar.advance, build_index=False)
        retro = retroactive_since(arch, started) if report.added else []
    if report.added or report.updated:
        _build_local_index(arch, progress, progress_interval)
    for err in report.errors:
        typer.echo(f"{manifest}:{err.line}: {err.message}", err=True)
    for item in retro:
        typer.echo(f"imgverify: new reference {item['imported']} matches an earlier "
                   f"{item['matches_earlier']} sighting ({item['seen_at'] or 'undated'}, "
                   f"{item['url'] or 'no URL'})", err=True)
    extra = {"retroactive": retro} if retro else {}  # the key appears only when there is one
    typer.echo(json.dumps({"archive": arch.location, **report.to_dict(), **extra},
                          ensure_ascii=False))
    raise typer.Exit(EXIT_BAD_INPUT if report.errors else EXIT_OK)


@archive_app.command("stats")
def archive_stats(archive: ArchiveOpt = None) -> None:
    """Counts, date range and storage cost of the archive."""
    arch = _open_archive(archive)
    by_source = arch.sighting_stats() if hasattr(arch, "sighting_stats") else {}
    typer.echo(json.dumps({**arch.stats(), **by_source}, indent=2, ensure_ascii=False))


@archive_app.command("list")
def archive_list(archive: ArchiveOpt = None,
                 limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
                 offset: Annotated[int, typer.Option(help="Skip this many.")] = 0) -> None:
    """One JSON line per reference (oldest first)."""
    arch = _open_archive(archive)
    for ref in arch.iter_references(limit=limit, offset=offset):
        typer.echo(json.dumps(ref.to_dict(), ensure_ascii=False))


@archive_app.command("remove")
def archive_remove(reference_ids: Annotated[list[str], typer.Argument(
        help="reference_id or sha256 values.")], archive: ArchiveOpt = None) -> None:
    """Remove references (and their hashes and thumbnails)."""
    arch = _open_archive(archive, writable=True)
    with _typed_errors_exit():
        unknown = [rid for rid in dict.fromkeys(reference_ids) if arch.get(rid) is None]
        known = [rid for rid in dict.fromkeys(reference_ids) if rid not in unknown]
        n = arch.remove(known) if known else 0
    for rid in unknown:
        typer.echo(f"imgverify: no reference {rid!r} in {arch.location} (give a reference_id or "
                   "sha256 as listed by `imgverify archive list`); nothing removed for it",
                   err=True)
    typer.echo(json.dumps({"removed": n, **({"not_found": unknown} if unknown else {})}))
    raise typer.Exit(EXIT_BAD_INPUT if unknown else EXIT_OK)


@archive_app.command("export")
def archive_export(archive: ArchiveOpt = None,
                   fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl | csv, or a "
                                                    "PDQ hash list: pdq-lines | te | hma")
                                  ] = "jsonl"
                   ) -> None:
    """Every reference with context and hashes (a manifest you can re-ingest), or the PDQ
    hashes as a list for python-threatexchange (te) or HMA banks (hma)."""
    import csv

    from imgverify.ingest.hashlists import EXPORT_FORMATS, write_hash_list

    if fmt not in ("jsonl", "csv", *EXPORT_FORMATS):
        _fail(f"unknown --format {fmt!r}: use jsonl, csv, {', '.join(EXPORT_FORMATS)}",
              EXIT_USAGE)
    arch = _open_archive(archive)
    rows = arch.export()
    if fmt in EXPORT_FORMATS:
        left_out = write_hash_list(rows, fmt, sys.stdout)[1]
        if left_out:
            typer.echo(f"imgverify: {left_out} reference(s) left out: PDQ quality below 50",
                       err=True)
        return
    if fmt == "csv":
        writer: Any = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(sys.stdout, list(row.keys()), lineterminator="\n")
                writer.writeheader()
            writer.writerow(row)
    else:
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False))


@archive_app.command("rehash")
def archive_rehash(archive: ArchiveOpt = None,
                   max_pixels: MaxPixelsOpt = Limits().max_pixels,
                   max_bytes: MaxBytesOpt = Limits().max_bytes,
                   progress: ProgressOpt = True,
                   progress_interval: ProgressIntervalOpt = 5.0,
                   ) -> None:
    """Recompute stored hashes with this version's pipeline (needed once for archives built by
    an older imgverify). Re-reads each original image when it is still where it was ingested
    from and unchanged, else hashes the stored thumbnail. Safe to interrupt and re-run."""
    arch = _open_archive(archive, writable=True)
    with _typed_errors_exit(), _ProgressBar("rehashing", "refs/s",
                                            progress, progress_interval) as bar:

        def tick(done: int, total: int) -> None:
            bar.set_total(total)
            bar.update(done)

        report = arch.rehash(limits=_limits(max_pixels, max_bytes), on_progress=tick)
    for problem in report.failed:
        typer.echo(f"imgverify: {problem}", err=True)
    typer.echo(json.dumps({"archive": arch.location, **report.to_dict()}, ensure_ascii=False))
    raise typer.Exit(EXIT_ARCHIVE if report.failed else EXIT_OK)


def _build_local_index(arch: Any, progress: bool, interval: float) -> dict[str, Any]:
    """Large archives get their local-feature index built now, so no query pays for it."""
    from imgverify.store.local_index import COMPACT_MIN_REFS

    total = len(arch)
    with _typed_errors_exit(), _ProgressBar("indexing local features", "refs/s",
                                            progress and total >= getattr(arch, "compact_min_refs",
                                                                   COMPACT_MIN_REFS),
                                            interval) as bar:
        bar.set_total(total)
        return arch.build_local_index(progress=bar.update)  # type: ignore[no-any-return]


@archive_app.command("index")
def archive_index(archive: ArchiveOpt = None,
                  progress: ProgressOpt = True,
                  progress_interval: ProgressIntervalOpt = 5.0) -> None:
    """Build the local-feature index (crops, screenshots, collages) for the archive as it is
    now. `archive add` and `archive import` do this at their end; run it after changing a
    large archive by other means (the library, the HTTP service, another host writing to
    PostgreSQL), so that queries do not fold in a long list of changes. Archives below
    a few thousand references need no index built ahead: it is built in memory when used."""
    chosen = archive or os.environ.get("IMGVERIFY_ARCHIVE")
    if chosen and not is_postgres_url(chosen) and not Path(chosen).exists():
        _fail(f"no archive at {chosen}: build one with `imgverify archive add MANIFEST "
              f"--archive {chosen}`", EXIT_ARCHIVE)  # a typo must not create an empty one
    arch = _open_archive(archive, writable=True)
    info = _build_local_index(arch, progress, progress_interval)
    typer.echo(json.dumps({"archive": arch.location, "local_index": info}, ensure_ascii=False))
    raise typer.Exit(EXIT_OK)


@archive_app.command("check")
def archive_check(archive: ArchiveOpt = None) -> None:
    """Integrity check: SQLite's own plus 'every reference complete, no orphans'."""
    arch = _open_archive(archive)
    problems = arch.integrity_check()
    typer.echo(json.dumps({"archive": arch.location, "references": len(arch),
                           "healthy": not problems, "problems": problems}, indent=2))
    raise typer.Exit(EXIT_OK if not problems else EXIT_ARCHIVE)
