"""Worker processes for batch work (ingest, scan): streaming, ordered, bounded in memory.

imgverify's own worker processes belong to no caller, so they cap native thread pools and
quiet library warnings for their whole life; a caller's process is never changed this way.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


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
    from imgverify.threads import cap_this_process

    cap_this_process(1)


def quiet_worker() -> None:
    """A worker process is imgverify's own: its warnings and library logs are not the user's
    output (per-input problems come back as typed errors)."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("exifread").setLevel(logging.CRITICAL)


__all__ = ["default_workers", "ordered_map", "one_native_thread", "quiet_worker"]
