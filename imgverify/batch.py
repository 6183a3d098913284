"""Batch work: streaming inputs, worker processes, resumable line-oriented output.

Inputs are walked lazily (a million paths are never listed into memory), at most a few tasks
per worker are in flight, results come back in input order, and every output line is written
whole with one write and a flush. `--resume` skips inputs already in the output and drops a
partial last line left by a crash.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .load import Limits
from .manifest import ManifestRow, RowError
from .result import CheckResult

if TYPE_CHECKING:
    from .cluster import ClusterExecutor

T = TypeVar("T")
R = TypeVar("R")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif",
                  ".tiff", ".heic", ".heif", ".avif", ".mpo"}


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int,
                initializer: Callable[..., None] | None = None,
                initargs: tuple[Any, ...] = (), in_flight_per_worker: int = 4) -> Iterator[R]:
    """Like map(), over worker processes, streaming and in order, with bounded memory."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            yield fn(item)
        return
    # "spawn": workers never inherit OpenMP/OpenCV thread state or open SQLite handles
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, initializer=initializer,
                             initargs=initargs, mp_context=context) as pool:
        pending: deque[Future[R]] = deque()
        limit = workers * in_flight_per_worker
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def one_native_thread() -> None:
    """Cap the BLAS and OpenMP pools of numpy, OpenCV and faiss at one thread each, for the
    rest of this process: for worker processes (imgverify's own, or a service's), never for
    a caller's process (library calls cap themselves, scoped: `threads.native_threads`).

    Batch work parallelises across processes. Left alone, each process keeps idle
    OpenBLAS/OpenMP threads that spin after every call and take CPU from the other workers.
    """
    from .threads import cap_this_process

    cap_this_process(1)


def _quiet_worker() -> None:
    """A worker process is imgverify's own: its warnings and library logs are not the user's
    output (per-input problems come back as typed errors)."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("exifread").setLevel(logging.CRITICAL)


# -- ingest ---------------------------------------------------------------------------------
_ingest_limits: Limits | None = None


def _init_ingest(limits: Limits | None, own_process: bool = False) -> None:
    global _ingest_limits
    if own_process:
        one_native_thread()
        _quiet_worker()
    _ingest_limits = limits


def _prepare(item: ManifestRow | RowError) -> Any:
    from .archive import prepare_row_safely

    if isinstance(item, RowError):
        return item
    return prepare_row_safely(item, _ingest_limits)


def prepare_references(rows: Iterable[ManifestRow | RowError], limits: Limits | None,
                       workers: int = 1) -> Iterator[Any]:
    """Decode and hash manifest rows in parallel; yields PreparedReference or RowError."""
    return ordered_map(_prepare, rows, workers, _init_ingest, (limits, workers > 1))


# -- scan inputs ----------------------------------------------------------------------------
def iter_inputs(paths: Iterable[str], all_files: bool = False,
                errors: list[tuple[str, str]] | None = None) -> Iterator[str]:
    """Files under each path (folders walked recursively, sorted, symlinked folders not
    followed). Files of non-image types are skipped unless `all_files`."""
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p, onerror=_walk_error(errors)):
                dirs.sort()
                for f in sorted(files):
                    full = os.path.join(root, f)
                    if all_files or Path(f).suffix.lower() in IMAGE_SUFFIXES:
                        yield full
        else:
            yield p


def _walk_error(errors: list[tuple[str, str]] | None) -> Callable[[OSError], None]:
    def onerror(exc: OSError) -> None:
        if errors is not None:
            errors.append((str(exc.filename), exc.strerror or str(exc)))
    return onerror


def iter_url_file(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


# -- scan workers ---------------------------------------------------------------------------
@dataclass
class ScanConfig:
    archive_path: str | None
    claimed_date: str | None = None
    claimed_place: str | None = None
    limits: Limits = field(default_factory=Limits)


_scan_state: dict[str, Any] = {}


def _init_scan(config: ScanConfig, own_process: bool = False) -> None:
    from .archive import Archive, resolve_archive

    if own_process:
        one_native_thread()
        _quiet_worker()
    archive: Archive = resolve_archive(config.archive_path)
    archive.index()  # build once per worker, before the first input
    _scan_state["archive"] = archive
    _scan_state["config"] = config


def _warm_caches(config: ScanConfig) -> None:
    """Build the archive's cached indexes once, here, before the workers start: otherwise
    every worker builds (and trains) the same index at the same time."""
    from .archive import resolve_archive

    archive = resolve_archive(config.archive_path)
    try:
        archive.index()
        archive.feature_index()
    finally:
        archive.close()


class _Alarm(Exception):
    pass


def _on_alarm(_signum: int, _frame: object) -> None:
    raise _Alarm()


def _scan_one(item: str) -> dict[str, Any]:
    return check_input(item, _scan_state["archive"], _scan_state["config"])


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise _Alarm in this thread once `seconds` have passed (0: no limit).

    On the main thread, SIGALRM (the previous handler is restored). On other threads (a Dask
    worker runs tasks on its own threads, where signals cannot go), a timer thread raises
    _Alarm asynchronously in this one. Either way the alarm lands between Python bytecodes,
    never inside a C call.
    """
    import signal
    import threading

    if seconds <= 0:
        yield
        return
    if threading.current_thread() is threading.main_thread():
        if not hasattr(signal, "setitimer"):  # pragma: no cover - not POSIX
            yield
            return
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return
    import ctypes

    target = ctypes.c_ulong(threading.get_ident())
    lock = threading.Lock()
    armed = [True]

    def fire() -> None:
        with lock:
            if armed[0]:
                armed[0] = False
                ctypes.pythonapi.PyThreadState_SetAsyncExc(target, ctypes.py_object(_Alarm))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            armed[0] = False
        timer.cancel()


def check_input(name: str, archive: Any, config: ScanConfig,
                source: str | None = None) -> dict[str, Any]:
    """The result line for one scanned input (read from `source`, default `name`): input
    problems, a time-out and unexpected failures all become error results; only the line's
    `input` names it."""
    from .checker import check
    from .errors import InputTimeoutError

    try:
        with _time_limit(config.limits.timeout_s):
            result = check(name if source is None else source, archive,
                           claimed_date=config.claimed_date,
                           claimed_place=config.claimed_place, limits=config.limits, name=name)
    except _Alarm:
        err = InputTimeoutError(f"{name} took longer than {config.limits.timeout_s:g} s "
                                "(--timeout); skipped")
        result = CheckResult(input=name, verdict="error", error=err.to_dict())
    except Exception as exc:  # noqa: BLE001 - one input never stops the run
        result = CheckResult(input=name, verdict="error",
                             error={"kind": "internal_error",
                                    "message": f"{type(exc).__name__}: {exc}"})
    return result.to_dict()


# -- output ---------------------------------------------------------------------------------
CSV_COLUMNS = ("input", "verdict", "score", "reference_id", "event", "date", "place", "caption",
               "source", "source_url", "credit", "transform", "days_before_claim", "sha256",
               "error_kind", "error_message")


def csv_row(result: dict[str, Any]) -> dict[str, Any]:
    top = result["matches"][0] if result.get("matches") else {}
    err = result.get("error") or {}
    return {
        "input": result["input"], "verdict": result["verdict"], "score": top.get("score"),
        "reference_id": top.get("reference_id"), "event": top.get("event"),
        "date": top.get("date"), "place": top.get("place"), "caption": top.get("caption"),
        "source": top.get("source"), "source_url": top.get("source_url"),
        "credit": top.get("credit"), "transform": top.get("transform"),
        "days_before_claim": top.get("days_before_claim"), "sha256": result.get("sha256"),
        "error_kind": err.get("kind"), "error_message": err.get("message"),
    }


def already_done(out_path: Path, fmt: str, retry_errors: bool = False) -> set[str]:
    """Inputs already written to `out_path`; a partial last line (crash) is cut off.

    With `retry_errors`, inputs whose latest line is an error (a URL that timed out, a file
    still being copied) are not counted as done, so a resumed scan checks them again and
    appends a new line: readers keep the last line per input.
    """
    if not out_path.exists():
        return set()
    with out_path.open("rb+") as fh:
        data = fh.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            fh.truncate(end)
            data = data[:end]
    text = data.decode("utf-8", errors="replace")
    latest_error: dict[str, bool] = {}
    if fmt == "csv":
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("input"):
                latest_error[row["input"]] = bool(row.get("error_kind"))
    else:
        for line in text.splitlines():
            try:
                record = json.loads(line)
                latest_error[record["input"]] = record.get("verdict") == "error"
            except (ValueError, KeyError, TypeError):
                continue
    return {item for item, failed in latest_error.items() if not (retry_errors and failed)}


class LineWriter:
    """Writes one result per line, whole, flushed; JSONL or CSV (header once)."""

    def __init__(self, stream: io.TextIOBase, fmt: str, write_header: bool) -> None:
        self.stream = stream
        self.fmt = fmt
        if fmt == "csv" and write_header:
            self._write_csv(dict(zip(CSV_COLUMNS, CSV_COLUMNS, strict=True)))

    def _write_csv(self, row: dict[str, Any]) -> None:
        buf = io.StringIO()
        csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n").writerow(row)
        self.stream.write(buf.getvalue())

    def write(self, result: dict[str, Any]) -> None:
        if self.fmt == "csv":
            self._write_csv(csv_row(result))
        else:
            line = json.dumps(result, ensure_ascii=False)
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:  # file names that are not valid UTF-8
                line = json.dumps(result, ensure_ascii=True)
            self.stream.write(line + "\n")
        self.stream.flush()


@dataclass
class ScanSummary:
    total: int = 0
    skipped: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    walk_errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return self.verdicts.get("error", 0)

    @property
    def rate(self) -> float:
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"checked": self.total, "skipped_already_done": self.skipped,
                "verdicts": dict(self.verdicts), "errors": self.errors,
                "elapsed_s": round(self.elapsed_s, 2), "images_per_s": round(self.rate, 2),
                "walk_errors": [{"path": p, "error": e} for p, e in self.walk_errors]}


def scan(inputs: Iterable[str], config: ScanConfig, writer: LineWriter, workers: int = 1,
         skip: set[str] | None = None,
         on_result: Callable[[dict[str, Any]], None] | None = None,
         cluster: ClusterExecutor | None = None) -> ScanSummary:
    """Check every input, writing one line each; returns counts. Never stops on an input.

    With `cluster` (a connected `cluster.ClusterExecutor`), the checks run on its Dask
    workers instead of `workers` local processes; the lines and their order are the same.
    """
    summary = ScanSummary()
    started = time.perf_counter()
    skip = skip or set()

    def todo() -> Iterator[str]:
        for item in inputs:
            if item in skip:
                summary.skipped += 1
                continue
            yield item

    results: Iterator[dict[str, Any]]
    if cluster is not None:
        from .cluster import scan_on_cluster

        _warm_caches(config)  # workers that share the archive's folder load the caches
        results = scan_on_cluster(cluster, config, todo())
    else:
        if workers > 1:
            _warm_caches(config)
        results = ordered_map(_scan_one, todo(), workers, _init_scan, (config, workers > 1))
    try:
        for result in results:
            writer.write(result)
            summary.total += 1
            summary.verdicts[result["verdict"]] += 1
            if on_result is not None:
                on_result(result)
    finally:
        close = getattr(results, "close", None)  # a generator: on Ctrl-C too, stop the
        if close is not None:                     # workers and their outstanding tasks now
            close()
    summary.elapsed_s = time.perf_counter() - started
    return summary
