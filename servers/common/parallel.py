"""Two independent pieces of work side by side, on a pool whose idle thread does not spin.

A translation's windowing of the reference and of the target, the two halves of its
whitening and its two band estimates are independent pairs of numpy / OpenCV work, all of
which release the GIL in their loops; every part runs exactly the operations it ran alone,
so the numbers are the same. The pool's idle worker waits on a queue, so unlike OpenBLAS's
threads it takes no core from what runs next (:mod:`servers.common.blas`).

Large arrays are best allocated by the caller and filled by the worker (``out=``): arrays
the worker allocates come from its own malloc arena, which hands freed memory back to the
system, and the next call pays page faults for it (1000-1500 per 2048 px registration when
the worker also ran the FFTs, 2026-12-01).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

First = TypeVar("First")
Second = TypeVar("Second")

CORES = max(1, min(os.cpu_count() or 1, 8))

_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pair") if CORES > 1 else None
_inside = threading.local()


def _marked(function: Callable[[], Second]) -> Callable[[], Second]:
    def run() -> Second:
        _inside.active = True
        try:
            return function()
        finally:
            _inside.active = False
    return run


def pair(first: Callable[[], First], second: Callable[[], Second]) -> tuple[First, Second]:
    """``(first(), second())``, the second on the pool's thread while the caller runs the first.

    On one core, or when called from the pool's own thread (a pair inside a pair would
    wait for itself), both run in turn on the caller. An exception of either is raised
    after both have finished."""
    if _pool is None or getattr(_inside, "active", False):
        return first(), second()
    pending = _pool.submit(_marked(second))
    try:
        result = first()
    finally:
        other = pending.result()
    return result, other
