"""Scans on a Dask cluster: the same streaming, ordered, resumable scan as `batch.scan`, with
the inputs fanned out over the workers of a `distributed` scheduler.

Inputs go out in small batches (one task per batch, so scheduling costs little next to the
checks), at most a bounded window of batches is outstanding (memory stays flat over millions
of inputs), and results come back in input order through a reorder buffer, so the output is
line for line the output of a local scan. Each worker process opens the archive once, on its
first batch, and keeps it for the rest of the scan.

What the workers need: imgverify installed (the same version), the archive at the same path
as here (a shared filesystem) or on PostgreSQL (``postgresql://...``), and the inputs at the
same paths (relative paths are resolved against this process's working directory) or as
URLs. `distributed` is an optional dependency: ``pip install 'imgverify[cluster]'``.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from imgverify.batch import ScanConfig, check_input, source_of
from imgverify.errors import ArchiveError, ImgVerifyError
from imgverify.match.result import CheckResult

#: inputs per task: enough to make the scheduler's per-task cost small next to the checks,
#: few enough that a batch lost with a worker costs little and the load stays balanced
DEFAULT_BATCH_SIZE = 8
#: batches outstanding per worker thread (running, queued or finished but not yet written)
WINDOW_PER_THREAD = 3
#: Times an input checked alone is sent again when the worker running it dies: a worker
#: killed for another reason (the batch's other input, memory pressure, a restart) must
#: not turn this input into an error line; one that kills every worker it meets still does
SOLO_RETRIES = 2

EXTRA_MISSING = ("scanning on a cluster needs the cluster extra: "
                 "pip install 'imgverify[cluster]'")


class ClusterError(ImgVerifyError):
    """The cluster cannot be used: the extra is not installed, the scheduler cannot be
    reached, or its workers cannot run imgverify. The scan's environment, not an input."""

    kind = "cluster_error"


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ClusterError(EXTRA_MISSING) from None
    return distributed


class ClusterExecutor:
    """A connection to a Dask scheduler that runs scans; close it when done (or use `with`).

    Connecting checks that every worker present can import this version of imgverify, so a
    misconfigured cluster fails here with one message instead of as an error line per input.
    How long to wait for the scheduler is Dask's ``distributed.comm.timeouts.connect``
    (environment: ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=30s``).
    """

    def __init__(self, address: str, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        distributed = _distributed()
        self.address = address
        self.batch_size = batch_size
        try:
            self.client = distributed.Client(address, set_as_default=False)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {address}: "
                               f"{_reason(exc)}") from None
        try:
            self._check_workers()
        except BaseException:
            self.close()
            raise

    def _check_workers(self) -> None:
        from imgverify._version import __version__

        try:
            versions = self.client.run(_worker_version)
        except Exception as exc:  # noqa: BLE001 - any failure here is the cluster's setup
            raise ClusterError(f"the workers of {self.address} cannot run imgverify "
                               f"({_reason(exc)}): install imgverify {__version__} with the "
                               "cluster extra on every worker") from None
        wrong = sorted({f"{w} has {v}" for w, v in versions.items() if v != __version__})
        if wrong:
            raise ClusterError(f"the workers of {self.address} run another imgverify than "
                               f"this one ({__version__}): {'; '.join(wrong)}")

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ClusterExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def threads(self) -> int:
        """Worker threads on the cluster now (at least 1, so a scan waits for workers)."""
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:  # noqa: BLE001 - a sizing hint only
            return 1

    def run(self, config: ScanConfig, items: Iterable[Any]) -> Iterator[dict[str, Any]]:
        """What `batch.scan` calls: the lines of a scan run on this cluster, in input order
        (the workers drop the archive at the end, even when the scan stops early)."""
        return scan_on_cluster(self, config, items)

    def map(self, config: ScanConfig, items: Iterable[Any]) -> Iterator[dict[str, Any]]:
        """One result dict per input, in input order, as the workers finish them.

        A batch whose task fails (a worker that died on it, say) is retried input by input,
        and an input alone whose worker dies is sent again (SOLO_RETRIES), so only the input
        that kills workers becomes an `internal_error` line. An archive
        the workers cannot open stops the run (ArchiveError): every line would fail alike.
        """
        distributed = _distributed()
        location = _worker_location(config.archive_path)
        remote = dataclasses.replace(config, archive_path=location)
        cwd = os.getcwd()
        batches = _batches(((item, _worker_source(source_of(item), cwd)) for item in items),
                           self.batch_size)
        completed = distributed.as_completed(loop=self.client.loop)
        slots: dict[Any, tuple[int, int | None]] = {}  # future -> (batch number, part)
        batch_of: dict[int, list[tuple[str, str]]] = {}
        parts: dict[int, list[dict[str, Any] | None]] = {}
        ready: dict[int, list[dict[str, Any]]] = {}
        submitted = written = 0
        window = WINDOW_PER_THREAD * self.threads()
        exhausted = False
        finished = 0
        retried: dict[tuple[int, int], int] = {}  # (batch, part or -1) -> resubmissions

        def submit(batch: list[tuple[str, str]], number: int, part: int | None) -> None:
            future = self.client.submit(_check_batch, remote, batch, pure=False)
            slots[future] = (number, part)
            completed.add(future)

        try:
            while True:
                while not exhausted and submitted - written < window:
                    batch = next(batches, None)
                    if batch is None:
                        exhausted = True
                        break
                    batch_of[submitted] = batch
                    submit(batch, submitted, None)
                    submitted += 1
                if written == submitted:
                    return
                future = next(completed)
                finished += 1
                if finished % 64 == 0:  # workers come and go: size the window to the cluster
                    window = WINDOW_PER_THREAD * self.threads()
                number, part = slots.pop(future)
                batch = batch_of[number]
                try:
                    results = future.result()
                except ArchiveError as exc:
                    raise ArchiveError(f"a worker of {self.address} cannot open the archive: "
                                       f"{exc.message} (the archive must be at the same path "
                                       "on every worker, or on PostgreSQL)") from None
                except Exception as exc:  # noqa: BLE001 - one batch never stops the run
                    if self._lost(exc):
                        raise ClusterError(f"lost the connection to the Dask scheduler at "
                                           f"{self.address}; every line written is complete: "
                                           "re-run with --resume to continue") from None
                    if part is None and len(batch) > 1:
                        parts[number] = [None] * len(batch)
                        for j, one in enumerate(batch):
                            submit([one], number, j)
                        continue
                    # one input left: a part of a split batch, or a batch of one (the last
                    # batch of a scan, or every batch of a batch_size of 1)
                    alone = batch if part is None else [batch[part]]
                    key = (number, -1 if part is None else part)
                    if isinstance(exc, distributed.KilledWorker) \
                            and retried.get(key, 0) < SOLO_RETRIES:
                        retried[key] = retried.get(key, 0) + 1
                        submit(alone, number, part)
                        continue
                    results = [_internal_error(name, exc) for name, _ in alone]
                finally:
                    future.release()
                if part is not None:
                    pending = parts[number]
                    pending[part] = results[0]
                    if any(r is None for r in pending):
                        continue
                    results = [r for r in pending if r is not None]
                    del parts[number]
                ready[number] = results
                while written in ready:
                    del batch_of[written]
                    yield from ready.pop(written)
                    written += 1
        finally:
            for future in list(slots):
                future.cancel()
            completed.clear()

    def _lost(self, exc: BaseException) -> bool:
        """The scheduler is gone (every outstanding task is cancelled with this reason), not
        just one task: retrying or writing error lines would only fail every input."""
        return (getattr(exc, "reason", None) == "scheduler-connection-lost"
                or self.client.status not in ("running", "newly-created"))

    def release(self, config: ScanConfig) -> None:
        """Let the workers close the archive and drop its index (the scan is over)."""
        if self.client.status != "running":
            return  # gone with the scheduler: nothing to ask the workers, no wait for it
        try:
            self.client.run(_release, _worker_location(config.archive_path))
        except Exception:  # noqa: BLE001 - a courtesy; a worker that is gone has nothing open
            pass


def scan_on_cluster(executor: ClusterExecutor, config: ScanConfig,
                    items: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """`executor.map`, then the workers drop the archive, even if the scan stops early."""
    try:
        yield from executor.map(config, items)
    finally:
        executor.release(config)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _batches(pairs: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    while batch := list(islice(pairs, size)):
        yield batch


def _worker_location(archive_path: str | None) -> str | None:
    """The archive as a worker names it: an absolute path (workers do not share this
    process's working directory), a PostgreSQL URL as given, None for the shipped default."""
    from imgverify.store.postgres import is_postgres_url

    if archive_path is None or is_postgres_url(archive_path):
        return archive_path
    return os.path.abspath(archive_path)


def _worker_source(item: str, cwd: str) -> str:
    """Where a worker reads `item`: relative paths resolved against this process's working
    directory; URLs, absolute paths and other schemes as given."""
    if "://" in item[:12] or os.path.isabs(item) or item == "-":
        return item
    return os.path.join(cwd, item)


def _internal_error(name: str, exc: BaseException) -> dict[str, Any]:
    message = f"the cluster could not check this input: {type(exc).__name__}: {_reason(exc)}"
    return CheckResult(input=name, verdict="error",
                       error={"kind": "internal_error", "message": message}).to_dict()


# -- on the workers -------------------------------------------------------------------------
_archives: dict[str | None, Any] = {}
#: archives whose warm-up included the local-feature stage (a --no-local scan's did not)
_warm_local: set[str | None] = set()
_archives_lock = threading.Lock()


def _worker_version() -> str:
    from imgverify._version import __version__

    return __version__


def _worker_archive(location: str | None, local: bool = True) -> Any:
    """This worker process's handle on the archive: opened (and its index built) by the first
    batch, shared by the worker's threads (an Archive is thread-safe). `local`: the scan
    searches local features (a --no-local scan never builds their index)."""
    from imgverify.checker import warm_up
    from imgverify.store.sqlite import resolve_archive

    with _archives_lock:
        archive = _archives.get(location)
        if archive is None or archive.closed:
            archive = resolve_archive(location)
            _warm_local.discard(location)
            try:
                # lazy imports and indexes before the first timed input (checker.warm_up);
                # a claimed place's gazetteer: check_input loads it
                warm_up(archive, local=local)
            except BaseException:
                archive.close()
                raise
            _archives[location] = archive
        elif local and location not in _warm_local:
            # opened for a --no-local scan; this one searches local features: their index
            # and compiled scan before its first timed input too
            warm_up(archive, local=True)
        if local:
            _warm_local.add(location)
        return archive


def _release(location: str | None) -> None:
    with _archives_lock:
        archive = _archives.pop(location, None)
        _warm_local.discard(location)
    if archive is not None:
        archive.close()


def _check_batch(config: ScanConfig, batch: list[tuple[Any, str]]) -> list[dict[str, Any]]:
    """Check a batch of (input, source) pairs on a worker (an input is its name, or a
    ScanInput with its own claim). Raises only when the archive cannot be opened; an
    input's problem is its own error line, as in a local scan."""
    archive = _worker_archive(config.archive_path, config.local_features)
    results = []
    for item, source in batch:
        name = source_of(item)
        result = check_input(item, archive, config, source=source)
        error = result.get("error")
        if source != name and error and isinstance(error.get("message"), str):
            # messages name the input as the user gave it, as in a local scan
            error["message"] = error["message"].replace(source, name)
        results.append(result)
    return results
