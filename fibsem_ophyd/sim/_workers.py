"""Worker threads for the simulator's per-frame array work.

numpy releases the GIL inside its loops, so independent blocks of an image run in parallel on
these threads. Callers split the work by the array's size only, never by the number of
threads, so results do not depend on the machine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["pool", "shutdown", "for_row_blocks", "start_row_blocks"]

_POOL: ThreadPoolExecutor | None = None
_LOCK = threading.Lock()


def pool() -> ThreadPoolExecutor:
    """The shared executor (one thread per core, at most four)."""
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1),
                                       thread_name_prefix="sim-worker")
        return _POOL


def shutdown() -> None:
    """End the worker threads (after the work given them); the next :func:`pool` starts
    new ones."""
    global _POOL
    with _LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        pool.shutdown(wait=True)


def start_row_blocks(fn: Callable[[int, int], None], n_rows: int,
                     blocks: int = 4) -> Callable[[], None]:
    """Start ``fn(r0, r1)`` for ``blocks`` consecutive row ranges covering ``n_rows`` rows on
    the workers; returns a function that waits for them (re-raising the first error)."""
    step = max(1, -(-n_rows // blocks))
    futures = [pool().submit(fn, a, min(a + step, n_rows)) for a in range(0, n_rows, step)]

    def wait() -> None:
        for f in futures:
            f.result()

    return wait


def for_row_blocks(fn: Callable[[int, int], None], n_rows: int, blocks: int = 4) -> None:
    """:func:`start_row_blocks` and wait."""
    start_row_blocks(fn, n_rows, blocks)()
