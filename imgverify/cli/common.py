"""What every command group shares: the app and its `archive` group, exit codes, option
types, limits, errors that become exit codes, progress, and opening the archive."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from imgverify._version import __version__
from imgverify.errors import ArchiveError, ManifestError
from imgverify.media.fetch import FetchPolicy
from imgverify.media.load import Limits
from imgverify.store.postgres import is_postgres_url
from imgverify.store.sqlite import Archive, resolve_archive

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
LocalOpt = Annotated[bool, typer.Option(
    "--local/--no-local", help="Search crops, screenshots and collages with local features "
    "(default). --no-local searches whole-picture matches only (re-encoded, resized, "
    "mirrored or bordered copies, memes with a caption bar): several times faster, for a "
    "first pass over a large batch, but crops, stories, collages and many screenshots are "
    "missed. "
    "Each result says what was searched (`searched`).")]
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
