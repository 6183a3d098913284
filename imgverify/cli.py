"""Command line: a thin skin over the library. Results go to stdout, progress to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from . import __version__
from .archive import Archive, resolve_archive
from .batch import (
    LineWriter,
    ScanConfig,
    already_done,
    default_workers,
    iter_inputs,
    iter_url_file,
    scan,
)
from .cluster import ClusterError  # distributed itself is imported only for --cluster
from .errors import ArchiveError, ImgVerifyError, ManifestError
from .fetch import FetchPolicy
from .load import Limits

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_ARCHIVE = 4

EXIT_CODES_HELP = (
    "Exit codes: 0 = checked (the verdict is in the output, whatever it is); "
    "2 = usage error; 3 = bad input (could not be checked; for scan and archive add: the run "
    "completed but some inputs or rows failed, see their error lines); 4 = archive error "
    "(missing, read-only, corrupt or locked); 1 = internal error."
)

app = typer.Typer(
    name="imgverify",
    help="Check whether a news photo was published before: perceptual hashes against a dated "
         "reference archive. 'No match' means not in this archive, never 'authentic'.\n\n"
         + EXIT_CODES_HELP,
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
archive_app = typer.Typer(help="Build and inspect a reference archive. " + EXIT_CODES_HELP,
                          no_args_is_help=True)
app.add_typer(archive_app, name="archive")

ArchiveOpt = Annotated[Optional[str], typer.Option(
    "--archive", "-a", help="Archive file (SQLite). Default: $IMGVERIFY_ARCHIVE, else the "
    "shipped default archive (read-only).")]
MaxPixelsOpt = Annotated[int, typer.Option(
    "--max-pixels", help="Refuse images declaring more pixels (decompression bombs).")]
MaxBytesOpt = Annotated[int, typer.Option("--max-bytes", help="Refuse larger files/downloads.")]
MaxFramesOpt = Annotated[int, typer.Option(
    "--max-frames", help="Refuse animations with more frames (only the first is checked).")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", help="Seconds one input may take before it becomes an error line "
    "(0 = no limit).")]
PrivateOpt = Annotated[bool, typer.Option(
    "--allow-private-urls", help="Allow URLs on private/loopback addresses (refused by default "
    "so a shared service cannot be used to reach an internal network).")]
EnvProxyOpt = Annotated[bool, typer.Option(
    "--use-env-proxy", help="Fetch URLs through the proxy in HTTP_PROXY/HTTPS_PROXY (NO_PROXY "
    "honoured). Ignored by default. The proxy then resolves host names, so the private-address "
    "check can only refuse names that resolve privately here.")]


def _limits(max_pixels: int, max_bytes: int, allow_private: bool = False,
            max_frames: int = Limits().max_frames, timeout_s: float = Limits().timeout_s,
            use_env_proxy: bool = False) -> Limits:
    return Limits(max_pixels=max_pixels, max_bytes=max_bytes, max_frames=max_frames,
                  timeout_s=timeout_s,
                  fetch=FetchPolicy(max_bytes=max_bytes, allow_private=allow_private,
                                    use_env_proxy=use_env_proxy))


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"imgverify: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _typed_errors_exit() -> Iterator[None]:
    """A bad manifest or an archive problem becomes its message and its documented exit code
    (also under CliRunner, which bypasses `run`)."""
    try:
        yield
    except ManifestError as exc:
        _fail(exc.message, EXIT_BAD_INPUT)
    except ArchiveError as exc:
        _fail(exc.message, EXIT_ARCHIVE)


class _ProgressBar:
    """A rich progress bar on stderr with count, rate and ETA; does nothing when disabled
    (not a terminal, or --no-progress), so callers tick it unconditionally."""

    def __init__(self, description: str, unit: str, enabled: bool) -> None:
        self.description, self.unit, self.enabled = description, unit, enabled
        self._bar: Any = None
        self._task: Any = None
        self._started = 0.0
        self._done = 0

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            import time

            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                SpinnerColumn(), TextColumn("[progress.description]{task.description}"),
                BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.1f} " + self.unit), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True))
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=None, rate=0.0)
            self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def set_total(self, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def count_in_background(self, items: Any) -> None:
        """Set the total from a second, cheap pass over `items` while the work streams on
        (the work never waits for it; a failing count only leaves the total unknown)."""
        if self._bar is None:
            return
        import threading

        def count() -> None:
            try:
                self.set_total(sum(1 for _ in items()))
            except Exception:  # noqa: BLE001 - the bar is a courtesy, never a failure
                pass

        threading.Thread(target=count, daemon=True).start()

    def update(self, completed: int) -> None:
        if self._bar is None:
            return
        import time

        self._done = completed
        elapsed = max(1e-9, time.perf_counter() - self._started)
        self._bar.update(self._task, completed=completed, rate=completed / elapsed)

    def advance(self, *_: object) -> None:
        self.update(self._done + 1)


def _open_archive(path: str | None, writable: bool = False) -> Archive:
    try:
        return resolve_archive(path, writable=writable)
    except ArchiveError as exc:
        _fail(exc.message, EXIT_ARCHIVE)
        raise  # unreachable


def _version(value: bool) -> None:
    if value:
        typer.echo(f"imgverify {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version,
                                               is_eager=True, help="Show the version.")] = False
         ) -> None:
    """imgverify: find recycled and misattributed news photos."""


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
) -> None:
    """Check one image and print the verdict with the original context of any match."""
    from .checker import check as run_check
    from .report import query_thumbnail, to_html, to_json, to_text

    if fmt not in ("text", "json", "html"):
        _fail(f"unknown --format {fmt!r}: use text, json or html", EXIT_USAGE)
    arch = _open_archive(archive)
    try:
        result = run_check(source, arch, claimed_date=claimed_date, claimed_place=claimed_place,
                           limits=_limits(max_pixels, max_bytes, allow_private_urls,
                                          max_frames, use_env_proxy=use_env_proxy))
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
        raise
    except ArchiveError as exc:
        _fail(exc.message, EXIT_ARCHIVE)
        raise
    if fmt == "json":
        text = to_json(result) + "\n"
    elif fmt == "html":
        qjpeg = query_thumbnail(result.picture) if result.picture is not None else None
        refs = {m.reference_id: arch.thumbnail(m.key) for m in result.matches}
        text = to_html(result, qjpeg, refs)
    elif out is None and not no_color and sys.stdout.isatty():
        from rich.console import Console

        from .report import print_rich

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


@app.command("scan")
def scan_cmd(
    paths: Annotated[Optional[list[str]], typer.Argument(help="Files and folders (walked "
                                                         "recursively).")] = None,
    archive: ArchiveOpt = None,
    urls: Annotated[Optional[Path], typer.Option(help="File with one image URL per line.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl | csv")] = "jsonl",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file (default "
                                                "stdout).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (default: all cores).")] = 0,
    resume: Annotated[bool, typer.Option(help="Skip inputs already in --out (after a crash or "
                                         "Ctrl-C).")] = False,
    retry_errors: Annotated[bool, typer.Option(
        help="With --resume, check again the inputs whose line in --out is an error (e.g. an "
             "unreachable URL); the new line is appended, so keep the last line per input.")
    ] = False,
    claimed_date: Annotated[Optional[str], typer.Option(help="Claimed date for every input.")
                            ] = None,
    all_files: Annotated[bool, typer.Option(help="Also check files without an image "
                                            "extension.")] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    report: Annotated[Optional[Path], typer.Option(
        "--report", help="Also write a self-contained HTML summary (recycled finds first).")
    ] = None,
    max_pixels: MaxPixelsOpt = Limits().max_pixels,
    max_bytes: MaxBytesOpt = Limits().max_bytes,
    max_frames: MaxFramesOpt = Limits().max_frames,
    timeout: TimeoutOpt = Limits().timeout_s,
    allow_private_urls: PrivateOpt = False,
    use_env_proxy: EnvProxyOpt = False,
    cluster: Annotated[Optional[str], typer.Option(
        "--cluster", help="Run the checks on a Dask cluster: the scheduler's address, e.g. "
        "tcp://scheduler:8786 (needs imgverify[cluster]; workers need imgverify, the archive at "
        "the same path or on PostgreSQL, and the inputs). Exit code 4 if it cannot be used.")
    ] = None,
) -> None:
    """Check many images: one JSONL/CSV line per input; bad files become error lines."""
    if fmt not in ("jsonl", "csv"):
        _fail(f"unknown --format {fmt!r}: use jsonl or csv", EXIT_USAGE)
    if not paths and urls is None:
        _fail("give at least one PATH or --urls FILE", EXIT_USAGE)
    if resume and out is None:
        _fail("--resume needs --out FILE", EXIT_USAGE)
    if retry_errors and not resume:
        _fail("--retry-errors goes with --resume --out FILE", EXIT_USAGE)
    if claimed_date:
        from .verdict import parse_claimed_date

        try:
            parse_claimed_date(claimed_date)
        except ValueError as exc:
            _fail(str(exc), EXIT_USAGE)
    arch = _open_archive(archive)  # fail early, before any worker starts
    arch_path = str(arch.path)
    arch.close()
    executor: Any = None
    if cluster:
        from .cluster import ClusterExecutor

        try:
            executor = ClusterExecutor(cluster)  # fail before the output is opened
        except ClusterError as exc:
            _fail(exc.message, EXIT_ARCHIVE)
    walk_errors: list[tuple[str, str]] = []

    def inputs(errors: list[tuple[str, str]] | None = walk_errors) -> Any:
        if paths:
            yield from iter_inputs(paths, all_files=all_files, errors=errors)
        if urls is not None:
            yield from iter_url_file(str(urls))

    skip: set[str] = set()
    stream: Any
    if out is not None:
        if resume:
            skip = already_done(out, fmt, retry_errors=retry_errors)
        write_header = not (resume and out.exists() and out.stat().st_size > 0)
        stream = out.open("a" if resume else "w", encoding="utf-8", errors="surrogateescape",
                          newline="")
    else:
        write_header = True
        stream = sys.stdout
    finds: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []

    def collect(result: dict[str, Any]) -> None:
        if report is None:
            return
        if result["verdict"] in ("likely_recycled", "possibly_recycled") and len(finds) < 500:
            finds.append(result)
        elif result["verdict"] == "error" and len(failures) < 1000:
            failures.append(result)

    config = ScanConfig(archive_path=arch_path, claimed_date=claimed_date,
                        limits=_limits(max_pixels, max_bytes, allow_private_urls, max_frames,
                                       timeout, use_env_proxy))
    writer = LineWriter(stream, fmt, write_header)
    nworkers = workers if workers > 0 else default_workers()
    try:
        with _ProgressBar("scanning", "img/s", progress and sys.stderr.isatty()) as bar:
            bar.count_in_background(lambda: (i for i in inputs(None) if i not in skip))

            def tick(r: dict[str, Any]) -> None:
                collect(r)
                bar.advance()

            summary = scan(inputs(), config, writer, nworkers, skip, tick, cluster=executor)
    except KeyboardInterrupt:
        _fail("interrupted; every line written is complete: re-run with --resume to continue",
              130)
        return
    except (ArchiveError, ClusterError) as exc:
        _fail(exc.message, EXIT_ARCHIVE)
        return
    finally:
        if stream is not sys.stdout:
            stream.close()
        if executor is not None:
            executor.close()
    summary.walk_errors = walk_errors
    if report is not None:
        _write_batch_report(report, summary.to_dict(), finds, failures, arch_path)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.verdicts.items())) or "nothing"
    typer.echo(f"imgverify scan: {summary.total} checked ({counts}); "
               f"{summary.skipped} skipped as already done; {summary.rate:.1f} images/s"
               + (f"; {len(walk_errors)} unreadable folders" if walk_errors else ""), err=True)
    raise typer.Exit(EXIT_BAD_INPUT if summary.errors or walk_errors else EXIT_OK)


def _write_batch_report(path: Path, summary: dict[str, Any], finds: list[dict[str, Any]],
                        failures: list[dict[str, Any]], archive_path: str) -> None:
    from .load import load
    from .report import query_thumbnail, to_batch_html

    finds.sort(key=lambda r: (r["verdict"] != "likely_recycled", -r["matches"][0]["score"]))
    arch = _open_archive(archive_path)
    qthumbs: dict[str, bytes | None] = {}
    rthumbs: dict[str, bytes | None] = {}
    for r in finds:
        try:
            qthumbs[r["input"]] = query_thumbnail(load(r["input"]).image, side=240)
        except ImgVerifyError:
            qthumbs[r["input"]] = None
        ref = arch.get(r["matches"][0]["reference_id"])
        rthumbs[r["matches"][0]["reference_id"]] = arch.thumbnail(ref.key) if ref else None
    path.write_text(to_batch_html(summary, finds, qthumbs, rthumbs, failures), encoding="utf-8")
    typer.echo(f"imgverify scan: HTML summary written to {path}", err=True)


@app.command("hash")
def hash_cmd(
    files: Annotated[list[str], typer.Argument(help="Image files (or URLs).")],
    algorithm: Annotated[str, typer.Option(help="Comma-separated: pdq,phash,dhash,whash.")
                         ] = "pdq,phash,dhash,whash",
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl | text")] = "jsonl",
    fast: Annotated[bool, typer.Option(help="Hash the reduced, EXIF-oriented picture that "
                                       "matching uses, instead of Meta's reference pipeline "
                                       "(full resolution, stored orientation).")] = False,
    max_pixels: MaxPixelsOpt = Limits().max_pixels,
    max_bytes: MaxBytesOpt = Limits().max_bytes,
) -> None:
    """Print perceptual hashes, one JSON object per file. By default PDQ follows Meta's
    reference pipeline so the values can be exchanged with other PDQ tools."""
    from .hashing import ALGORITHMS
    from .hashprint import hash_file

    algos = [a.strip().lower() for a in algorithm.split(",") if a.strip()]
    unknown = [a for a in algos if a not in ALGORITHMS]
    if unknown:
        _fail(f"unknown algorithm(s) {', '.join(unknown)}; choose from {', '.join(ALGORITHMS)}",
              EXIT_USAGE)
    limits = _limits(max_pixels, max_bytes)
    failed = 0
    for f in files:
        record = hash_file(f, algos, limits, fast=fast)
        if "error" in record:
            failed += 1
        if fmt == "text":
            typer.echo(" ".join(f"{k}={v}" for k, v in record.items()))
        else:
            typer.echo(json.dumps(record, ensure_ascii=False))
    raise typer.Exit(EXIT_BAD_INPUT if failed else EXIT_OK)


@archive_app.command("add")
def archive_add(
    manifest: Annotated[Path, typer.Argument(help="CSV (with header) or JSONL manifest: image "
                                             "and date required; event, place, caption, source, "
                                             "source_url, credit, license, published optional.")],
    archive: ArchiveOpt = None,
    workers: Annotated[int, typer.Option(help="Worker processes (default: all cores).")] = 0,
    batch_size: Annotated[int, typer.Option(help="References per transaction.")] = 100,
    max_pixels: MaxPixelsOpt = Limits().max_pixels,
    max_bytes: MaxBytesOpt = Limits().max_bytes,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
) -> None:
    """Add (or update, by sha256) the references of a manifest. Bad rows are reported with
    their line numbers; good rows still go in."""
    from .manifest import read_manifest

    arch = _open_archive(archive, writable=True)
    with _typed_errors_exit(), _ProgressBar("ingesting", "img/s",
                                            progress and sys.stderr.isatty()) as bar:
        bar.count_in_background(lambda: read_manifest(manifest))
        report = arch.ingest(manifest, batch_size=batch_size,
                             limits=_limits(max_pixels, max_bytes),
                             workers=workers if workers > 0 else default_workers(),
                             progress=bar.advance)
    for err in report.errors:
        typer.echo(f"{manifest}:{err.line}: {err.message}", err=True)
    typer.echo(json.dumps({"archive": str(arch.path), **report.to_dict()}, ensure_ascii=False))
    raise typer.Exit(EXIT_BAD_INPUT if report.errors else EXIT_OK)


@archive_app.command("stats")
def archive_stats(archive: ArchiveOpt = None) -> None:
    """Counts, date range and storage cost of the archive."""
    arch = _open_archive(archive)
    typer.echo(json.dumps(arch.stats(), indent=2))


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
        n = arch.remove(reference_ids)
    typer.echo(json.dumps({"removed": n}))
    raise typer.Exit(EXIT_OK if n == len(reference_ids) else EXIT_BAD_INPUT)


@archive_app.command("export")
def archive_export(archive: ArchiveOpt = None,
                   fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl | csv")] = "jsonl"
                   ) -> None:
    """Every reference with context and hashes (a manifest you can re-ingest)."""
    import csv

    if fmt not in ("jsonl", "csv"):
        _fail(f"unknown --format {fmt!r}: use jsonl or csv", EXIT_USAGE)
    arch = _open_archive(archive)
    rows = arch.export()
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
                   progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True
                   ) -> None:
    """Recompute stored hashes with this version's pipeline (needed once for archives built by
    an older imgverify). Re-reads each original image when it is still where it was ingested
    from and unchanged, else hashes the stored thumbnail. Safe to interrupt and re-run."""
    arch = _open_archive(archive, writable=True)
    with _typed_errors_exit(), _ProgressBar("rehashing", "refs/s",
                                            progress and sys.stderr.isatty()) as bar:

        def tick(done: int, total: int) -> None:
            bar.set_total(total)
            bar.update(done)

        report = arch.rehash(limits=_limits(max_pixels, max_bytes), on_progress=tick)
    for problem in report.failed:
        typer.echo(f"imgverify: {problem}", err=True)
    typer.echo(json.dumps({"archive": str(arch.path), **report.to_dict()}, ensure_ascii=False))
    raise typer.Exit(EXIT_ARCHIVE if report.failed else EXIT_OK)


@archive_app.command("check")
def archive_check(archive: ArchiveOpt = None) -> None:
    """Integrity check: SQLite's own plus 'every reference complete, no orphans'."""
    arch = _open_archive(archive)
    problems = arch.integrity_check()
    typer.echo(json.dumps({"archive": str(arch.path), "references": len(arch),
                           "healthy": not problems, "problems": problems}, indent=2))
    raise typer.Exit(EXIT_OK if not problems else EXIT_ARCHIVE)


def _own_the_process() -> None:
    """The command line owns its process, which the library never touches: decoder warnings
    and the EXIF reader's log lines about malformed files are not the user's output (a bad
    input is reported as a typed error)."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("exifread").setLevel(logging.CRITICAL)


def run() -> None:
    """Console entry point: typed library errors become messages, never tracebacks."""
    _own_the_process()
    try:
        app()
    except ArchiveError as exc:
        typer.echo(f"imgverify: {exc.message}", err=True)
        sys.exit(EXIT_ARCHIVE)
    except ImgVerifyError as exc:
        typer.echo(f"imgverify: {exc.message}", err=True)
        sys.exit(EXIT_BAD_INPUT)
