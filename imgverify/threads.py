"""Native thread pools (BLAS, OpenCV, OpenMP) held at one thread while imgverify works.

Why: a check is a few small matrix products, one ORB extraction and one faiss search. Left
alone, OpenBLAS and OpenMP start a thread per core for each of them and those threads spin
idle between calls, taking CPU from the caller's other threads: several threads checking on
one archive ran faster with one native thread each (bench/robustness.py, CHANGELOG).

A library must leave the host process as it found it, so the cap is scoped: BLAS and OpenCV
have only process-wide settings, so their cap is reference-counted across threads (applied
when the first imgverify call starts, the caller's own settings restored when the last one
ends); OpenMP's setting belongs to the calling thread, so it is set and restored per call.
Worker processes that imgverify starts itself use `cap_this_process` instead.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_depth = 0
_restore: list[Any] = []
_controller: Any = None
_modules_seen = 0


def _libraries() -> tuple[Any, Any]:
    """cv2 and faiss, imported before threadpoolctl looks, so that the BLAS copies they
    bring are found too."""
    import cv2

    faiss: Any
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a dependency
        faiss = None
    return cv2, faiss


def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries. Building it walks every loaded
    shared object, so it is kept until an import may have brought another one."""
    global _controller, _modules_seen
    if _controller is None or len(sys.modules) != _modules_seen:
        from threadpoolctl import ThreadpoolController

        _libraries()
        _controller = ThreadpoolController().select(user_api="blas")
        _modules_seen = len(sys.modules)
    return _controller


def _enter(limit: int) -> None:
    global _depth
    with _lock:
        if _depth == 0:
            cv2, _faiss = _libraries()
            previous_cv = cv2.getNumThreads()
            limiter = _blas_controller().limit(limits=limit)
            cv2.setNumThreads(limit)
            _restore[:] = [limiter, previous_cv]
        _depth += 1


def _exit() -> None:
    global _depth
    with _lock:
        _depth -= 1
        if _depth == 0 and _restore:
            limiter, previous_cv = _restore
            cv2, _faiss = _libraries()
            cv2.setNumThreads(previous_cv)
            limiter.restore_original_limits()
            _restore.clear()


@contextmanager
def native_threads(limit: int | None = 1) -> Iterator[None]:
    """Hold BLAS, OpenCV and (in this thread) OpenMP at `limit` threads; None leaves them."""
    if limit is None:
        yield
        return
    _enter(limit)
    _cv2, faiss = _libraries()
    previous_omp = faiss.omp_get_max_threads() if faiss is not None else None
    try:
        if faiss is not None:
            faiss.omp_set_num_threads(limit)
        yield
    finally:
        if faiss is not None and previous_omp is not None:
            faiss.omp_set_num_threads(previous_omp)
        _exit()


def cap_this_process(limit: int = 1) -> None:
    """For worker processes imgverify started itself (they belong to no caller): cap every
    pool for the life of the process."""
    from threadpoolctl import threadpool_limits

    cv2, faiss = _libraries()
    if faiss is not None:
        faiss.omp_set_num_threads(limit)
    cv2.setNumThreads(limit)
    threadpool_limits(limits=limit)


def preload() -> None:
    """Import the native libraries and look up their pools now, not inside a check (see
    `checker.warm_up`)."""
    _libraries()
    with _lock:
        _blas_controller()


def native_settings() -> dict[str, Any]:
    """The current settings, for tests and diagnostics."""
    from threadpoolctl import threadpool_info

    cv2, faiss = _libraries()
    return {"cv2": cv2.getNumThreads(),
            "omp": faiss.omp_get_max_threads() if faiss is not None else None,
            "pools": sorted((i.get("filepath", ""), i.get("num_threads"))
                            for i in threadpool_info())}


__all__ = ["native_threads", "cap_this_process", "native_settings", "preload"]
