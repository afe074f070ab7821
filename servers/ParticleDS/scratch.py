"""Full-size work arrays that stay allocated from one detection to the next.

A detection on a 2048 x 2048 image passes it through some ten full-size temporaries (float32
copies, filter outputs, masks, label images, an integral image). Allocated afresh, each one
costs its page faults again on every call: glibc hands blocks that large back to the kernel
when they are freed, and the kernel zeroes every page again on first touch. Measured on the
2-core machine, that was about 15 000 page faults and a third of a detection's CPU time
(system time). Writing into arrays kept from the previous call removes it; the arithmetic is
the same, so the results are too.

The arrays live in named *slots*: raw byte buffers, viewed with the shape and dtype each step
asks for, so steps whose lifetimes do not overlap share one (e.g. the band-pass float image of
``locate`` and the signal image of the isolation analysis). The process holds seven slots
sized for the largest image detected so far (80 MB for a 2048 x 2048 image: four float32 or
int32 images, one of the processed integer image, two masks), until :func:`release` is called.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


class Scratch:
    """Slots of work memory for one detection at a time (not thread-safe: see :func:`borrow`)."""

    def __init__(self) -> None:
        self._slots: dict[str, np.ndarray] = {}

    def array(self, slot: str, shape: tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype`` in ``slot``.

        It overwrites whatever the slot held: a step asks for a slot only when the array that
        was in it before is no longer used.
        """
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        buffer = self._slots.get(slot)
        if buffer is None or buffer.nbytes < nbytes:
            buffer = np.empty(max(nbytes, 1), dtype=np.uint8)
            self._slots[slot] = buffer
        return buffer[:nbytes].view(dtype).reshape(shape)

    @property
    def nbytes(self) -> int:
        return sum(buffer.nbytes for buffer in self._slots.values())


_SHARED = Scratch()
_SHARED_LOCK = threading.Lock()


@contextmanager
def borrow(scratch: Scratch | None = None) -> Iterator[Scratch]:
    """``scratch`` itself if given; else the process's kept scratch, or, while another thread
    uses that one, a fresh one that is dropped afterwards (two detections never share memory).

    Nothing borrowed may leave the ``with`` block: results are always new arrays.
    """
    if scratch is not None:
        yield scratch
    elif _SHARED_LOCK.acquire(blocking=False):
        try:
            yield _SHARED
        finally:
            _SHARED_LOCK.release()
    else:
        yield Scratch()


def release() -> None:
    """Give the kept work memory back (the next detection allocates it again)."""
    with _SHARED_LOCK:
        _SHARED._slots.clear()
