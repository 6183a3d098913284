"""`imgverify scan`: many inputs to one JSONL/CSV line each, resumable, locally or on a
cluster, with an HTML summary."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from imgverify.batch import (
    CSV_COLUMNS,
    LineWriter,
    ScanConfig,
    ScanSummary,
    already_done,
    csv_columns,
    iter_inputs,
    iter_output,
    iter_url_file,
    output_format,
    replace_results,
    retry_path,
    scan,
    source_of,
)
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
    ProgressIntervalOpt,
    ProgressOpt,
    TimeoutOpt,
    _check_out_path,
    _check_readable,
    _fail,
    _limits,
    _open_archive,
    _ProgressBar,
    _same_file,
    app,
)
from imgverify.cluster import ClusterError  # distributed itself is imported only for --cluster
from imgverify.errors import ArchiveError, ImgVerifyError
from imgverify.media.load import Limits
from imgverify.workers import default_workers


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
    local: LocalOpt = True,
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
                        claimed_place=claimed_place, local_features=local,
                        limits=_limits(max_pixels, max_bytes, allow_private_urls, max_frames,
                                       timeout, use_env_proxy))
    # rows added to an existing CSV keep its columns (one written before local_features)
    columns = csv_columns(out) if fmt == "csv" and (resume or retry_errors) and out is not None \
        and out.exists() and out.stat().st_size > 0 else CSV_COLUMNS
    writer = LineWriter(stream, fmt, write_header, columns)
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
               + (f"; {len(walk_errors)} unreadable folders" if walk_errors else "")
               + ("; whole-picture matches only (--no-local): crops, screenshots and collages "
                  "were not searched" if not local else ""), err=True)
    raise typer.Exit(EXIT_BAD_INPUT if summary.errors or walk_errors else EXIT_OK)


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
        self.local_off = 0  # checked with the local stage off (--no-local)

    def collect(self, result: dict[str, Any]) -> None:
        if not self.wanted:
            return
        self.verdicts[result["verdict"]] += 1
        self.local_off += (result.get("searched") or {}).get("local_features") == "off"
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
            self.local_off = 0
            for record in iter_output(out, fmt):
                self.verdicts[record.verdict] += 1
                self.local_off += record.local_features == "off"
                if record.verdict in ("likely_recycled", "possibly_recycled", "error"):
                    try:
                        self._keep(record.result(fmt))
                    except (ValueError, KeyError):
                        continue
        self._trim()
        data = {"checked": sum(self.verdicts.values()), "verdicts": dict(self.verdicts),
                "errors": self.verdicts.get("error", 0), "local_off": self.local_off,
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
