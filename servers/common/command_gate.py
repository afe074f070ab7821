"""One command at a time on a device, first come first served: the gate, without Tango.

Why a gate of our own: Tango's device monitor serialises commands too, but it also makes
State, Status and every attribute read wait behind a long command. The SMART devices release
the monitor for their long commands (:func:`servers.common.tango_glue.monitor_released`,
passed in here as ``released``) and serialise on this gate instead, so a second client's
command waits its turn in arrival order, or is refused with ``SMART_NotReady`` naming what
runs (docs/interface.md, "Several clients at once").
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from servers.common.errors import NotReady

__all__ = ["COMMAND_WAIT_S", "CommandGate"]

COMMAND_WAIT_S = 2.5
"""Longest wait of a command for its turn on a busy device: below the 3 s default client
timeout, so a waiting client gets either its answer or a ``SMART_NotReady`` saying what runs."""


def _nothing_released(device: Any) -> AbstractContextManager[Any]:
    """No monitor to release (a caller without a Tango device)."""
    return contextlib.nullcontext()


class CommandGate:
    """One command at a time on a device, the others waiting their turn in arrival order
    (up to ``wait_s``).

    Tango's own serialisation (the device monitor) would make State and Status wait behind
    a long command too, so long commands release the monitor and serialise on this gate
    instead; waiting for the gate also happens inside ``released(device)`` -- for a device,
    :func:`servers.common.tango_glue.monitor_released` (the only Tango in this; the default
    releases nothing, for callers without a device). Waiters are served first come, first
    served, so no client starves behind later ones. A command that cannot get its turn within ``wait_s`` is refused with
    ``SMART_NotReady`` naming what is running, so no client is left without an answer.
    """

    def __init__(self, wait_s: float = COMMAND_WAIT_S,
                 released: Callable[[Any], AbstractContextManager[Any]] = _nothing_released) -> None:
        self.wait_s = wait_s
        self._released = released
        self._cond = threading.Condition()
        self._waiting: collections.deque[object] = collections.deque()
        self._holder = False
        self._doing = ""
        self._since = 0.0

    @property
    def busy(self) -> bool:
        return self._holder

    def _take(self, doing: str) -> None:
        self._holder, self._doing, self._since = True, doing, time.monotonic()

    def _acquire(self, device: Any, doing: str) -> None:
        with self._cond:
            if not self._holder and not self._waiting:
                self._take(doing)
                return
            ticket = object()
            self._waiting.append(ticket)
        with self._released(device), self._cond:
            got = self._cond.wait_for(lambda: not self._holder and self._waiting[0] is ticket, self.wait_s)
            self._waiting.remove(ticket)
            if got:
                self._take(doing)
                return
            self._cond.notify_all()  # the next in line may be free to go now
            running, what, queued = time.monotonic() - self._since, self._doing, len(self._waiting)
        raise NotReady(f"the device is busy: {what or 'another command'} has been running for {running:.1f} s, "
                       f"{queued} more call(s) are waiting, and this call waited {self.wait_s:g} s for its turn; "
                       "call again when State is no longer RUNNING, or give your client a longer timeout")

    def _release(self) -> None:
        with self._cond:
            self._holder, self._doing = False, ""
            self._cond.notify_all()

    @contextlib.contextmanager
    def turn(self, device: Any, doing: str) -> Iterator[None]:
        """Hold the gate for one command (``doing`` says what, for the others' refusal)."""
        self._acquire(device, doing)
        try:
            yield
        finally:
            self._release()
