"""Command line: a thin skin over the library. Results go to stdout, progress to stderr."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from imgverify._version import __version__
from imgverify.batch import (
    LineWriter,
    ScanConfig,
    ScanSummary,
    already_done,
    iter_inputs,
    iter_output,
    iter_url_file,
    output_format,
    replace_results,
    retry_path,
    scan,
    source_of,
)
from imgverify.cli.serve import serve_cmd
from imgverify.cluster import ClusterError  # distributed itself is imported only for --cluster
from imgverify.errors import ArchiveError, ImgVerifyError, ManifestError
from imgverify.ingest import ingest_manifest
from imgverify.media.fetch import FetchPolicy
from imgverify.media.load import Limits
from imgverify.store.postgres import is_postgres_url
from imgverify.store.sqlite import Archive, resolve_archive
from imgverify.workers import default_workers

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
    """Progress on stderr: a rich bar with count, rate and ETA on a terminal; elsewhere (a log
    file, a pipe, a batch job) a plain line at most every `interval` seconds, so a log shows
    the run is alive and how far it got. Does nothing with --no-progress; callers tick it
    unconditionally."""

    def __init__(self, description: str, unit: str, enabled: bool,
                 interval: float = 5.0) -> None:
        self.description, self.unit = description, unit
        self.enabled = enabled
        self.interval = interval
        self._bar: Any = None
        self._task: Any = None
        self._lines = enabled and not sys.stderr.isatty()
        self._started = 0.0
        self._last_line = 0.0
        self._done = 0
        self._total: int | None = None

    def __enter__(self) -> _ProgressBar:
        import time

        self._started = self._last_line = time.perf_counter()
        if self.enabled and not self._lines:
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
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    @property
    def active(self) -> bool:
        return self._bar is not None or self._lines

    def set_total(self, total: int) -> None:
        self._total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def count_in_background(self, items: Any) -> None:
        """Set the total from a second, cheap pass over `items` while the work streams on
        (the work never waits for it; a failing count only leaves the total unknown)."""
        if not self.active:
            return
        import threading

        def count() -> None:
            try:
                self.set_total(sum(1 for _ in items()))
            except Exception:  # noqa: BLE001 - the bar is a courtesy, never a failure
                pass

        threading.Thread(target=count, daemon=True).start()

    def update(self, completed: int) -> None:
        if not self.active:
            return
        import time

        self._done = completed
        now = time.perf_counter()
        elapsed = max(1e-9, now - self._started)
        rate = completed / elapsed
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, rate=rate)
        elif now - self._last_line >= self.interval:
            self._last_line = now
            typer.echo(self._line(completed, rate, elapsed), err=True)

    def _line(self, done: int, rate: float, elapsed: float) -> str:
        total = self._total
        count = f"{done:,}/{total:,} ({100 * done / total:.0f} %)" if total else f"{done:,}"
        eta = ""
        if total and rate > 0 and done < total:
            eta = f", ETA {_clock((total - done) / rate)}"
        return (f"imgverify: {self.description} {count}, {rate:.1f} {self.unit}, "
                f"elapsed {_clock(elapsed)}{eta}")

    def advance(self, *_: object) -> None:
        self.update(self._done + 1)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


ProgressOpt = Annotated[bool, typer.Option(
    help="Progress on stderr: a bar on a terminal, else a plain line every "
         "--progress-interval seconds (for logs).")]
ProgressIntervalOpt = Annotated[float, typer.Option(
    "--progress-interval", min=0.0, help="Seconds between progress lines when stderr is not a "
    "terminal (0 = a line per item).")]


def _open_archive(path: str | None, writable: bool = False) -> Archive:
    chosen = path or os.environ.get("IMGVERIFY_ARCHIVE")
    if chosen and not is_postgres_url(chosen):
        problem = _not_an_archive(Path(chosen), "--archive" if path else "$IMGVERIFY_ARCHIVE")
        if problem:
            _fail(problem, EXIT_ARCHIVE)
    try:
        return resolve_archive(path, writable=writable)
    except ArchiveError as exc:
        _fail(exc.message, EXIT_ARCHIVE)
        raise  # unreachable


SQLITE_MAGIC = b"SQLite format 3\x00"


def _not_an_archive(path: Path, option: str) -> str | None:
    """Why `path` cannot be an archive, with what to do instead; None when it may be one (or
    does not exist yet). Checked before opening, so a manifest or another program's SQLite
    database given by mistake is never written to."""
    if path.is_dir():
        return (f"{option} {path} is a folder: give the archive file, e.g. "
                f"{path / 'desk.sqlite'}")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot read archive {path}: {exc.strerror or exc}"
    if not head:
        return None  # an empty file: SQLite makes a new archive of it
    build = "`imgverify archive add MANIFEST --archive PATH`"
    if head != SQLITE_MAGIC:
        text = head.lstrip().lower()
        if (path.suffix.lower() in (".csv", ".jsonl", ".ndjson", ".json", ".tsv", ".txt")
                or text.startswith(b"{") or text.startswith(b"image")):
            return (f"{option} {path} is not an archive: it looks like a manifest. Build an "
                    f"archive from it with `imgverify archive add {path} --archive "
                    "desk.sqlite`, then pass --archive desk.sqlite")
        return (f"{option} {path} is not an imgverify archive (not an SQLite file): pass the "
                f"file built by {build}, or leave out --archive to use the shipped default "
                "archive")
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{path.resolve().as_posix()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None  # locked or damaged: the archive's own error says which
    if tables and not {"meta", "refs"} <= tables:
        return (f"{option} {path} is an SQLite database but not an imgverify archive (tables: "
                f"{', '.join(sorted(tables)[:8])}): refusing to touch it; pass the file built "
                f"by {build}")
    return None


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
                                          max_frames, use_env_proxy=use_env_proxy))
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


@app.command("scan")
def scan_cmd(
    paths: Annotated[Optional[list[str]], typer.Argument(help="Files and folders (walked "
                                                         "recursively).")] = None,
    archive: ArchiveOpt = None,
    urls: Annotated[Optional[Path], typer.Option(
        help="File listing inputs: one URL or path per line, or a CSV with a header naming a "
             "url (or path) column and optional claimed_date, claimed_place columns (a row's "
             "own claim wins over --claimed-date/--claimed-place).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl | csv")] = "jsonl",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file (default "
                                                "stdout).")] = None,
    overwrite: Annotated[bool, typer.Option(
        help="Replace an existing --out file (without it, an existing file is refused unless "
             "--resume).")] = False,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (default 0: all "
                                                     "cores).")] = 0,
    resume: Annotated[bool, typer.Option(help="Skip inputs already in --out (after a crash or "
                                         "Ctrl-C).")] = False,
    retry_errors: Annotated[bool, typer.Option(
        help="With --resume, check again the inputs whose line in --out is an error (e.g. an "
             "unreachable URL); the new line replaces the error line (the file is rewritten "
             "atomically at the end of the run).")
    ] = False,
    claimed_date: Annotated[Optional[str], typer.Option(
        help="Claimed date (YYYY-MM-DD) for every input.")] = None,
    claimed_place: Annotated[Optional[str], typer.Option(
        help="Claimed place for every input.")] = None,
    all_files: Annotated[bool, typer.Option(help="Also check files without an image "
                                            "extension.")] = False,
    progress: ProgressOpt = True,
    progress_interval: ProgressIntervalOpt = 5.0,
    report: Annotated[Optional[Path], typer.Option(
        "--report", help="Also write a self-contained HTML summary of the whole --out file "
        "(recycled finds first); partial when the scan is interrupted.")
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
    if resume and overwrite:
        _fail("--resume continues --out and --overwrite replaces it: choose one", EXIT_USAGE)
    if claimed_date:
        from imgverify.dates import parse_claimed_date

        try:
            parse_claimed_date(claimed_date)
        except ValueError as exc:
            _fail(str(exc), EXIT_USAGE)
    if urls is not None:
        _check_readable(urls, "--urls")
    if out is not None:
        _check_out_path(out, "--out", f"results.{fmt}")
        _check_existing_output(out, fmt, resume, overwrite)
    if report is not None:
        _check_out_path(report, "--report", "summary.html")
        if out is not None and _same_file(report, out):
            _fail("--report and --out name the same file", EXIT_USAGE)
    arch = _open_archive(archive)  # fail early, before any worker starts
    arch_path = str(arch.path)
    arch.close()
    executor: Any = None
    if cluster:
        from imgverify.cluster import ClusterExecutor

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
    retrying: Path | None = None
    if out is not None:
        side = retry_path(out)
        if side.exists():
            if resume:  # a --retry-errors run that crashed: keep what it checked
                replace_results(out, side, fmt)
            else:  # --overwrite: its results belong to the file being replaced
                side.unlink()
        if resume:
            skip = already_done(out, fmt, retry_errors=retry_errors)
        if retry_errors:
            # new lines go beside the file until they replace the error lines in one rename
            retrying = side
            stream = side.open("w", encoding="utf-8", errors="surrogateescape", newline="")
            write_header = True
        else:
            write_header = not (resume and out.exists() and out.stat().st_size > 0)
            stream = out.open("a" if resume else "w", encoding="utf-8",
                              errors="surrogateescape", newline="")
    else:
        write_header = True
        stream = sys.stdout
    run = _ScanRun(report is not None)
    config = ScanConfig(archive_path=arch_path, claimed_date=claimed_date,
                        claimed_place=claimed_place,
                        limits=_limits(max_pixels, max_bytes, allow_private_urls, max_frames,
                                       timeout, use_env_proxy))
    writer = LineWriter(stream, fmt, write_header)
    nworkers = workers if workers > 0 else default_workers()
    summary: ScanSummary | None = None
    try:
        with _ProgressBar("scanning", "img/s", progress, progress_interval) as bar:
            bar.count_in_background(
                lambda: (i for i in inputs(None) if source_of(i) not in skip))

            def tick(r: dict[str, Any]) -> None:
                run.collect(r)
                bar.advance()

            summary = scan(inputs(), config, writer, nworkers, skip, tick, cluster=executor)
    except KeyboardInterrupt:
        pass
    except (ArchiveError, ClusterError) as exc:
        _finish_output(stream, out, retrying, fmt)
        _fail(exc.message, EXIT_ARCHIVE)
    finally:
        if executor is not None:
            executor.close()
    _finish_output(stream, out, retrying, fmt)
    if report is not None:
        _write_batch_report(report, *run.report_data(out, fmt, summary, walk_errors),
                            arch_path)
    if summary is None:
        _fail("interrupted; every line written is complete: re-run with --resume to continue"
              + ("; the HTML summary covers the inputs checked so far" if report else ""),
              130)
    summary.walk_errors = walk_errors
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.verdicts.items())) or "nothing"
    typer.echo(f"imgverify scan: {summary.total} checked ({counts}); "
               f"{summary.skipped} skipped as already done; {summary.rate:.1f} images/s"
               + (f"; {len(walk_errors)} unreadable folders" if walk_errors else ""), err=True)
    raise typer.Exit(EXIT_BAD_INPUT if summary.errors or walk_errors else EXIT_OK)


def _check_readable(path: Path, option: str) -> None:
    try:
        with path.open("rb"):
            pass
    except IsADirectoryError:
        _fail(f"{option} {path} is a folder: give the file that lists the inputs", EXIT_USAGE)
    except OSError as exc:
        _fail(f"cannot read {option} {path}: {exc.strerror or exc}", EXIT_USAGE)


def _check_out_path(path: Path, option: str, example: str = "results.jsonl") -> None:
    """A file we can write, checked before any work starts (not a traceback after an hour)."""
    if path.is_dir():
        _fail(f"{option} {path} is a folder: give a file name, e.g. {path / example}",
              EXIT_USAGE)
    parent = path.parent
    if not parent.is_dir():
        _fail(f"{option} {path}: folder {parent} does not exist (create it first)"
              if not parent.exists() else f"{option} {path}: {parent} is not a folder",
              EXIT_USAGE)
    if path.exists() and not os.access(path, os.W_OK):
        _fail(f"{option} {path} is not writable", EXIT_USAGE)
    if not path.exists() and not os.access(parent, os.W_OK):
        _fail(f"{option} {path}: cannot create files in folder {parent}", EXIT_USAGE)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _check_existing_output(out: Path, fmt: str, resume: bool, overwrite: bool) -> None:
    """Never append to, or silently replace, a file holding someone's results."""
    if not out.exists() or out.stat().st_size == 0 or overwrite:
        return
    found = output_format(out)
    if not resume:
        _fail(f"{out} already exists: pass --resume to continue it, --overwrite to replace it, "
              "or choose another --out", EXIT_USAGE)
    if found == "unknown":
        _fail(f"{out} is not an imgverify scan output (neither JSONL results nor imgverify's "
              "CSV header): refusing to add lines to it; choose another --out", EXIT_USAGE)
    if found != fmt:
        _fail(f"{out} holds {found.upper() if found else ''} results, not {fmt}: resume it with "
              f"--format {found}", EXIT_USAGE)


def _finish_output(stream: Any, out: Path | None, retrying: Path | None, fmt: str) -> None:
    if stream is not sys.stdout:
        stream.close()
    if out is not None and retrying is not None:
        replaced = replace_results(out, retrying, fmt)
        if replaced:
            typer.echo(f"imgverify scan: {replaced} error line(s) in {out} replaced by the new "
                       "results", err=True)


class _ScanRun:
    """What the HTML summary needs from a scan: read back from the whole --out file (so a
    resumed or retried scan is summarised whole), or kept from this run when results went to
    stdout."""

    MAX_FINDS, MAX_FAILURES = 500, 1000

    def __init__(self, wanted: bool) -> None:
        self.wanted = wanted
        self.finds: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.verdicts: Counter[str] = Counter()

    def collect(self, result: dict[str, Any]) -> None:
        if not self.wanted:
            return
        self.verdicts[result["verdict"]] += 1
        self._keep(result)

    def _keep(self, result: dict[str, Any]) -> None:
        if result["verdict"] in ("likely_recycled", "possibly_recycled") and result["matches"]:
            self.finds.append(result)
            if len(self.finds) >= 4 * self.MAX_FINDS:
                self._trim()
        elif result["verdict"] == "error" and len(self.failures) < self.MAX_FAILURES:
            self.failures.append(result)

    def _trim(self) -> None:
        self.finds.sort(key=lambda r: (r["verdict"] != "likely_recycled",
                                       -(r["matches"][0].get("score") or 0)))
        del self.finds[self.MAX_FINDS:]

    def report_data(self, out: Path | None, fmt: str, summary: ScanSummary | None,
                    walk_errors: list[tuple[str, str]]
                    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        this_run = summary.to_dict() if summary is not None else None
        if out is not None and out.exists():
            self.finds, self.failures, self.verdicts = [], [], Counter()
            for record in iter_output(out, fmt):
                self.verdicts[record.verdict] += 1
                if record.verdict in ("likely_recycled", "possibly_recycled", "error"):
                    try:
                        self._keep(record.result(fmt))
                    except (ValueError, KeyError):
                        continue
        self._trim()
        data = {"checked": sum(self.verdicts.values()), "verdicts": dict(self.verdicts),
                "errors": self.verdicts.get("error", 0),
                "walk_errors": [{"path": p, "error": e} for p, e in walk_errors],
                "interrupted": summary is None, "this_run": this_run}
        if out is not None:
            data["output"] = str(out)
        return data, self.finds, self.failures


def _write_batch_report(path: Path, summary: dict[str, Any], finds: list[dict[str, Any]],
                        failures: list[dict[str, Any]], archive_path: str) -> None:
    from imgverify.media.load import load
    from imgverify.report.render import query_thumbnail, to_batch_html

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
    from imgverify.signals.hashing import ALGORITHMS
    from imgverify.signals.hashprint import hash_file

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
                             progress=bar.advance)
        retro = retroactive_since(arch, started) if report.added else []
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


@archive_app.command("check")
def archive_check(archive: ArchiveOpt = None) -> None:
    """Integrity check: SQLite's own plus 'every reference complete, no orphans'."""
    arch = _open_archive(archive)
    problems = arch.integrity_check()
    typer.echo(json.dumps({"archive": arch.location, "references": len(arch),
                           "healthy": not problems, "problems": problems}, indent=2))
    raise typer.Exit(EXIT_OK if not problems else EXIT_ARCHIVE)


app.command("serve")(serve_cmd)
from imgverify.cli import hashes  # noqa: E402,F401  (registers `archive import-hashes`)


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


from imgverify.cli.importing import import_app  # noqa: E402 - the import commands use the helpers above

archive_app.add_typer(import_app, name="import")
