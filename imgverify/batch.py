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
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from imgverify.match.result import CheckResult
from imgverify.match.verdict import local_thresholds
from imgverify.media.load import Limits
from imgverify.workers import one_native_thread, ordered_map, quiet_worker


class Executor(Protocol):
    """Where a scan's checks run instead of local worker processes (`cluster.
    ClusterExecutor`): the result lines of `items`, in input order."""

    def run(self, config: ScanConfig, items: Iterable[Any]) -> Iterator[dict[str, Any]]: ...

T = TypeVar("T")
R = TypeVar("R")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif",
                  ".tiff", ".heic", ".heif", ".avif", ".mpo"}


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


@dataclass(frozen=True)
class ScanInput:
    """One input of a scan with its own claim (from a column of a CSV list); empty claim
    fields fall back to the claim given for the whole run."""

    source: str
    claimed_date: str | None = None
    claimed_place: str | None = None


SOURCE_COLUMNS = ("url", "path", "input", "source")


def iter_url_file(path: str) -> Iterator[str | ScanInput]:
    """Inputs listed in a file: one URL or path per line (`#` comments), or a CSV with a header
    naming a `url` or `path` column and optional `claimed_date`, `claimed_place` columns."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        first = ""
        for first in fh:
            if first.strip() and not first.lstrip().startswith("#"):
                break
        else:
            return
        header = _list_header(first)
        if header is None:
            yield first.strip()
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield line
            return
        names, delimiter = header
        if len(names) == 1:  # a one-column list with a header: a URL may hold a comma
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield line
            return
        source_col = next(c for c in SOURCE_COLUMNS if c in names)
        for row in csv.reader(fh, delimiter=delimiter):
            cells = dict(zip(names, (c.strip() for c in row), strict=False))
            source = cells.get(source_col)
            if not source or source.startswith("#"):
                continue
            yield ScanInput(source, cells.get("claimed_date") or None,
                            cells.get("claimed_place") or None)


def _list_header(line: str) -> tuple[list[str], str] | None:
    """The column names of a CSV list's header line, or None for a plain one-per-line list (a
    URL never is exactly `url`, so a plain list is never taken for a CSV)."""
    for delimiter in (",", ";", "\t"):
        names = [c.strip().lower() for c in next(csv.reader([line], delimiter=delimiter))]
        if any(c in names for c in SOURCE_COLUMNS):
            return names, delimiter
    return None


def source_of(item: str | ScanInput) -> str:
    return item.source if isinstance(item, ScanInput) else item


# -- scan workers ---------------------------------------------------------------------------
@dataclass
class ScanConfig:
    archive_path: str | None
    claimed_date: str | None = None
    claimed_place: str | None = None
    limits: Limits = field(default_factory=Limits)
    #: False: whole-picture matches only (`--no-local`, Thresholds.use_local_features)
    local_features: bool = True


_scan_state: dict[str, Any] = {}


def _init_scan(config: ScanConfig, own_process: bool = False) -> None:
    from imgverify.checker import warm_up
    from imgverify.store.sqlite import Archive, resolve_archive

    if own_process:
        one_native_thread()
        quiet_worker()
    archive: Archive = resolve_archive(config.archive_path)
    # indexes, native libraries and lazy imports before the first timed input: a time-out
    # inside an import would leave the module broken for every later input of this process
    warm_up(archive, claimed_place=bool(config.claimed_place), local=config.local_features)
    _scan_state["archive"] = archive
    _scan_state["config"] = config


def _warm_caches(config: ScanConfig) -> None:
    """Build the archive's cached indexes once, here, before the workers start: otherwise
    every worker builds (and trains) the same index at the same time, which for the local
    index of a never-indexed large archive is minutes each, and memory for each. A
    --no-local scan builds no local index at all: it would never read it."""
    from imgverify.checker import prepare_local_index
    from imgverify.store.sqlite import resolve_archive

    archive = resolve_archive(config.archive_path)
    try:
        archive.index()
        if config.local_features:
            prepare_local_index(archive)  # built and published if it never was
    finally:
        archive.close()


class _Alarm(Exception):
    pass


def _on_alarm(_signum: int, _frame: object) -> None:
    raise _Alarm()


def _scan_one(item: str | ScanInput) -> dict[str, Any]:
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


def check_input(item: str | ScanInput, archive: Any, config: ScanConfig,
                source: str | None = None) -> dict[str, Any]:
    """The result line for one scanned input (read from `source`, default its name): input
    problems, a bad per-input claim, a time-out and unexpected failures all become error
    results; only the line's `input` names it."""
    from imgverify.checker import check
    from imgverify.errors import InputTimeoutError

    claimed_date, claimed_place = config.claimed_date, config.claimed_place
    if isinstance(item, ScanInput):
        own_date = item.claimed_date
        claimed_date = own_date or claimed_date
        claimed_place = item.claimed_place or claimed_place
        item = item.source
        if own_date is not None:  # the run's own claim was checked before the scan started
            from imgverify.dates import parse_claimed_date

            try:
                parse_claimed_date(own_date)
            except ValueError as exc:
                return CheckResult(input=item, verdict="error", error={
                    "kind": "invalid_claim", "message": str(exc)},
                    archive=_archive_summary(archive)).to_dict()
    name = item
    if claimed_place:
        # the gazetteer is loaded outside the time limit (a time-out inside its one-off load
        # would leave claims text-only for the run); once loaded this returns at once
        from imgverify.checker import warm_up

        warm_up(claimed_place=True)
    try:
        with _time_limit(config.limits.timeout_s):
            # align=False: a scan reports each find's transform as found, without the
            # extra local-feature fit that places a hash match for a person's report
            result = check(name if source is None else source, archive,
                           claimed_date=claimed_date, claimed_place=claimed_place,
                           limits=config.limits, name=name, align=False,
                           thresholds=local_thresholds(config.local_features))
    except _Alarm:
        err = InputTimeoutError(f"{name} took longer than {config.limits.timeout_s:g} s "
                                "(--timeout); skipped")
        result = CheckResult(input=name, verdict="error", error=err.to_dict(),
                             archive=_archive_summary(archive))
    except Exception as exc:  # noqa: BLE001 - one input never stops the run
        result = CheckResult(input=name, verdict="error",
                             error={"kind": "internal_error",
                                    "message": f"{type(exc).__name__}: {exc}"},
                             archive=_archive_summary(archive))
    return result.to_dict()


def _archive_summary(archive: Any) -> dict[str, Any] | None:
    """What an error line was (to be) checked against, like every other line."""
    try:
        return archive.summary()  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - the error line matters more than its audit fields
        return None


# -- output ---------------------------------------------------------------------------------
CSV_COLUMNS = ("input", "verdict", "score", "reference_id", "event", "date", "place", "caption",
               "source", "source_url", "credit", "transform", "days_before_claim", "sha256",
               "error_kind", "error_message", "local_features")
#: The columns before `local_features` was added: a scan resumed on such a file goes on
#: writing them, so every row of one file has the same columns.
LEGACY_CSV_COLUMNS = CSV_COLUMNS[:-1]
LEGACY_CSV_HEADER = ",".join(LEGACY_CSV_COLUMNS)  # a prefix of CSV_HEADER


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
        # what the local stage did (searched / not_needed / off / pending): a no_match of a
        # --no-local scan must not read, in a spreadsheet, like one of a full check
        "local_features": (result.get("searched") or {}).get("local_features"),
    }


CSV_HEADER = ",".join(CSV_COLUMNS)


def output_format(path: Path) -> str | None:
    """The format of an existing scan output: "jsonl", "csv", None when empty, "unknown" when it
    is not a scan output at all (so a resume never appends to someone else's file)."""
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip()
    if not head:
        return None
    if head.startswith(b"{"):
        return "jsonl"
    if head.startswith(LEGACY_CSV_HEADER.encode()):  # the current header too
        return "csv"
    return "unknown"


def csv_columns(path: Path) -> tuple[str, ...]:
    """The columns of an existing CSV scan output (its header line): rows appended to it,
    by a resume or a retry, keep them."""
    with path.open("rb") as fh:
        first = fh.readline().strip().decode("utf-8", errors="replace")
    return LEGACY_CSV_COLUMNS if first == LEGACY_CSV_HEADER else CSV_COLUMNS


def cut_partial_line(path: Path) -> None:
    """Drop a last line that a crash left half written."""
    with path.open("rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            chunk = fh.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                end = pos - step + nl + 1
                if end != size:
                    fh.truncate(end)
                return
            pos -= step
        fh.truncate(0)


@dataclass
class OutputRecord:
    """One result in a scan output file, with the byte span of its line(s)."""

    input: str
    verdict: str
    start: int
    end: int
    line: bytes
    #: `searched["local_features"]` of the result (None from files written before it)
    local_features: str | None = None

    def result(self, fmt: str) -> dict[str, Any]:
        """The result as a dict; from CSV, rebuilt with its top match only."""
        text = self.line.decode("utf-8", errors="surrogateescape")
        if fmt != "csv":
            record: dict[str, Any] = json.loads(text)
            return record
        row = next(csv.DictReader(io.StringIO(text), CSV_COLUMNS))
        match = None
        if row.get("reference_id"):
            match = {k: row.get(k) or None for k in (
                "reference_id", "event", "date", "place", "caption", "source", "source_url",
                "credit", "transform", "days_before_claim")}
            match["score"] = float(row["score"]) if row.get("score") else None
        error = ({"kind": row["error_kind"], "message": row.get("error_message") or ""}
                 if row.get("error_kind") else None)
        searched = {"local_features": row["local_features"]} if row.get("local_features") \
            else {}
        return {"input": row["input"], "verdict": row["verdict"], "searched": searched,
                "sha256": row.get("sha256") or None, "error": error,
                "matches": [match] if match else []}


def iter_output(path: Path, fmt: str) -> Iterator[OutputRecord]:
    """The results of a scan output file in order, streaming; lines that are not results (the
    CSV header, a damaged line) are passed over."""
    with path.open("rb") as fh:
        if fmt == "csv":
            yield from _iter_csv_output(fh)
            return
        pos = 0
        for raw in fh:
            start, pos = pos, pos + len(raw)
            try:
                record = json.loads(raw)
                searched = record.get("searched")
                local = searched.get("local_features") if isinstance(searched, dict) else None
                yield OutputRecord(str(record["input"]), str(record.get("verdict")), start, pos,
                                   raw, None if local is None else str(local))
            except (ValueError, KeyError, TypeError):
                continue


def _iter_csv_output(fh: Any) -> Iterator[OutputRecord]:
    # a CSV record may span lines (a caption with a newline): feed the reader line by line
    # and note where each record starts and ends
    offsets = [0]
    lines: list[bytes] = []

    def feed() -> Iterator[str]:
        for raw in fh:
            offsets.append(offsets[-1] + len(raw))
            lines.append(raw)
            yield raw.decode("utf-8", errors="surrogateescape")

    reader = csv.reader(feed())
    start = 0
    last_error_line = -1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:  # a damaged record (a NUL byte...): passed over, not a result
            if reader.line_num == last_error_line:
                return  # the reader cannot move past it
            last_error_line = reader.line_num
            lines.clear()
            start = offsets[-1]
            continue
        end = offsets[-1]
        line = b"".join(lines)
        lines.clear()
        begin, start = start, end
        if not row or row in (list(CSV_COLUMNS), list(LEGACY_CSV_COLUMNS)):
            continue
        cells = dict(zip(CSV_COLUMNS, row, strict=False))
        if cells.get("input"):
            yield OutputRecord(cells["input"], cells.get("verdict", ""), begin, end, line,
                               cells.get("local_features") or None)


def already_done(out_path: Path, fmt: str, retry_errors: bool = False) -> set[str]:
    """Inputs already written to `out_path`; a partial last line (crash) is cut off.

    With `retry_errors`, inputs whose latest line is an error (a URL that timed out, a file
    still being copied) are not counted as done, so a resumed scan checks them again (and
    `replace_results` then puts the new line where the error line was).
    """
    if not out_path.exists():
        return set()
    cut_partial_line(out_path)
    latest_error: dict[str, bool] = {}
    for record in iter_output(out_path, fmt):
        latest_error[record.input] = record.verdict == "error"
    return {item for item, failed in latest_error.items() if not (retry_errors and failed)}


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - not permitted on some systems
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def retry_path(out_path: Path) -> Path:
    """Where a --retry-errors run writes its new results until they replace the old lines."""
    return out_path.with_name(out_path.name + ".retrying")


def replace_results(out_path: Path, new_path: Path, fmt: str) -> int:
    """Put the results in `new_path` into `out_path`, each in place of that input's earlier
    line(s), new inputs at the end; one line per input remains. The file is rewritten beside
    itself and renamed over the original (atomic: a crash leaves the old or the new file,
    never a mix), then `new_path` is deleted. Returns how many lines were replaced."""
    if new_path.exists():
        cut_partial_line(new_path)
        if not out_path.exists():  # nothing to merge into
            os.replace(new_path, out_path)
            return 0
    new: dict[str, tuple[int, int]] = {}
    if new_path.exists():
        for record in iter_output(new_path, fmt):
            new[record.input] = (record.start, record.end)
    # an input written more than once (older versions appended retried lines): its last line
    last: dict[str, tuple[int, int]] = {}
    seen: set[str] = set()
    for record in iter_output(out_path, fmt):
        if record.input in seen:
            last[record.input] = (record.start, record.end)
        seen.add(record.input)
    del seen
    if not new and not last:
        if new_path.exists():
            new_path.unlink()
        return 0
    replaced = 0
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as dst, out_path.open("rb") as old, \
                (new_path.open("rb") if new_path.exists() else io.BytesIO()) as fresh:
            if fmt == "csv" and out_path.stat().st_size == 0:
                dst.write(CSV_HEADER.encode() + b"\n")
            written: set[str] = set()

            def span(fh: Any, where: tuple[int, int]) -> bytes:
                fh.seek(where[0])
                data: bytes = fh.read(where[1] - where[0])
                return data

            pos = 0
            for record in iter_output(out_path, fmt):
                # what lies between results (the CSV header, a damaged line) is kept as it is
                dst.write(span(old, (pos, record.start)))
                pos = record.end
                if record.input in written:
                    continue
                written.add(record.input)
                if record.input in new:
                    dst.write(span(fresh, new.pop(record.input)))
                    replaced += 1
                elif record.input in last:
                    dst.write(span(old, last[record.input]))
                else:
                    dst.write(record.line)
            old.seek(pos)
            shutil.copyfileobj(old, dst)
            for where in sorted(new.values()):
                dst.write(span(fresh, where))
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, out_path)
        _fsync_folder(out_path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    if new_path.exists():
        new_path.unlink()
    return replaced


class LineWriter:
    """Writes one result per line, whole, flushed; JSONL or CSV (header once)."""

    def __init__(self, stream: io.TextIOBase, fmt: str, write_header: bool,
                 columns: tuple[str, ...] = CSV_COLUMNS) -> None:
        """`columns`: those of the file being continued (`csv_columns`), for CSV."""
        self.stream = stream
        self.fmt = fmt
        self.columns = columns
        if fmt == "csv" and write_header:
            self._write_csv(dict(zip(columns, columns, strict=True)))

    def _write_csv(self, row: dict[str, Any]) -> None:
        buf = io.StringIO()
        csv.DictWriter(buf, self.columns, lineterminator="\n",
                       extrasaction="ignore").writerow(row)
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


def scan(inputs: Iterable[str | ScanInput], config: ScanConfig, writer: LineWriter,
         workers: int = 1, skip: set[str] | None = None,
         on_result: Callable[[dict[str, Any]], None] | None = None,
         cluster: Executor | None = None) -> ScanSummary:
    """Check every input, writing one line each; returns counts. Never stops on an input.

    With `cluster` (a connected `cluster.ClusterExecutor`), the checks run on its Dask
    workers instead of `workers` local processes; the lines and their order are the same.
    """
    summary = ScanSummary()
    started = time.perf_counter()
    skip = skip or set()

    def todo() -> Iterator[str | ScanInput]:
        for item in inputs:
            if source_of(item) in skip:
                summary.skipped += 1
                continue
            yield item

    results: Iterator[dict[str, Any]]
    if cluster is not None:
        _warm_caches(config)  # workers that share the archive's folder load the caches
        results = cluster.run(config, todo())
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
