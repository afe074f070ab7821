"""Large matrix products that leave no BLAS threads spinning behind them.

OpenBLAS worker threads busy-wait for ~0.1 s after every threaded product (its
THREAD_TIMEOUT) before they sleep. A server that runs FFTs or OpenCV right after a product
then shares its cores with those spinning threads: a 2048x2048 registration took 78 ms when
called back to back instead of 53 ms (median of 15 calls, 2 cores; docs/registration.md).
Here a product runs with BLAS limited to one thread per call and is split by rows over our
own small thread pool instead, so it still uses every core and stops using them when it
returns.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import pairwise

import numpy as np
from threadpoolctl import ThreadpoolController

SPLIT_MIN_ELEMENTS = 1 << 16
"""Below this many operand elements a product takes well under a millisecond: OpenBLAS
runs it on one thread anyway, and the split and the limit would cost more."""

_parts = max(1, min(os.cpu_count() or 1, 8))
_pool = ThreadPoolExecutor(max_workers=max(1, _parts - 1), thread_name_prefix="blas-split")
_controller: ThreadpoolController | None = None
_controller_lock = threading.Lock()


def _blas_libraries() -> ThreadpoolController:
    """The BLAS libraries loaded in this process, found once (the scan takes a few ms)."""
    global _controller
    with _controller_lock:
        if _controller is None:
            _controller = ThreadpoolController().select(user_api="blas")
        return _controller


@contextmanager
def single_threaded_blas(elements: int) -> Iterator[None]:
    """BLAS limited to the calling thread for the block, when the operands (``elements``) are
    large enough for OpenBLAS to have used its threads (even a 31x2048 by 2048x31 product
    left them spinning); smaller work runs unchanged, as the limit costs ~0.1 ms."""
    if elements < SPLIT_MIN_ELEMENTS or _parts == 1:
        yield
        return
    with _blas_libraries().limit(limits=1):
        yield


def split_product(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left @ right`` (2-D) with the rows of ``left`` spread over all cores; call it inside
    :func:`single_threaded_blas` so that each part runs on one BLAS thread."""
    if left.size < SPLIT_MIN_ELEMENTS or _parts == 1:
        return left @ right
    bounds = np.linspace(0, left.shape[0], _parts + 1).astype(int)
    pending = [_pool.submit(np.matmul, left[start:stop], right)
               for start, stop in pairwise(bounds[1:])]
    first = left[:bounds[1]] @ right
    return np.vstack([first] + [part.result() for part in pending])
