"""Stage reads with a deadline, so a hung motor never stalls the camera's frame stream.

Why this exists: every frame is stamped with the stage position, and reading a motor is a
network call to the Sardana Pool. A Pool that hangs (stopped process, hung host) does not
refuse the call, it just never answers: a Tango read with a 1.5 s timeout came back only after
6 s (cppTango retries once after reconnecting), so a camera reading two motors in turn made no
frame for 6-12 s while still saying RUNNING (docs/reliability.md).

:class:`StageMonitor` runs each motor's read in a worker thread of its own and waits for it at
most ``deadline_s``. A motor that has not answered by then is stamped ``None`` (unknown, never
guessed) and named in :meth:`StageMonitor.problems`, which the acquisition turns into the ALARM
state. A read still hanging from an earlier frame is not waited for again and not doubled:
the frame goes on at once. When the motor answers again the next frame carries its position
and the problem disappears, so recovery needs nobody.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from servers.CameraDS.sources import StageReader
from servers.common.error_text import devfailed_line

STAGE_DEADLINE_S = 0.5
"""How long a frame waits for a motor. A healthy read takes ~1 ms (10-100 ms on a loaded
machine); a frame waiting longer than this is a stalled live view."""


class StageMonitor:
    """A :class:`~servers.CameraDS.sources.StageReader` whose ``read`` returns within
    ``deadline_s`` whatever the motors do.

    ``read_one(name)`` reads one motor and returns its position or raises; by default it is
    taken from ``reader.read_one`` when the reader has one, else from ``reader.read()``.
    ``executor`` makes each motor's worker pool: the device passes PyTango's
    ``PyTangoThreadPoolExecutor``, whose threads are threads omniORB knows (PyTango asks that
    of every thread that calls Tango); this module stays free of Tango.
    """

    def __init__(self, reader: StageReader, deadline_s: float = STAGE_DEADLINE_S,
                 read_one: Callable[[str], float | None] | None = None,
                 executor: Callable[..., ThreadPoolExecutor] = ThreadPoolExecutor) -> None:
        self.reader = reader
        self.names: list[str] = list(reader.names)
        self.deadline_s = deadline_s
        self._read_one = read_one or getattr(reader, "read_one", None) or (lambda name: reader.read()[name])
        self._lock = threading.Lock()
        self._executors = {name: executor(max_workers=1, thread_name_prefix=f"stage-{name}")
                           for name in self.names}
        self._pending: dict[str, tuple[Future, float]] = {}
        self._problems: dict[str, str] = {}

    def read(self) -> dict[str, float | None]:
        """``{motor: position or None}`` within the deadline; records why a motor is ``None``."""
        started = time.monotonic()
        futures: dict[str, Future[Any]] = {}
        with self._lock:
            for name in self.names:
                pending = self._pending.get(name)
                if pending is not None and not pending[0].done():
                    continue  # still hanging in an earlier call: do not wait for it again
                future = self._executors[name].submit(self._read_one, name)
                self._pending[name] = (future, started)
                futures[name] = future
        positions: dict[str, float | None] = {}
        problems: dict[str, str] = {}
        for name in self.names:
            waiting = futures.get(name)
            if waiting is None:
                positions[name] = None
                problems[name] = "hang"
                continue
            try:
                value = waiting.result(timeout=max(0.0, started + self.deadline_s - time.monotonic()))
            except FutureTimeout:
                positions[name], problems[name] = None, "hang"
                continue
            except Exception as exc:  # noqa: BLE001 - any read error means "position unknown"
                positions[name], problems[name] = None, _reason(exc)
                continue
            if value is None:
                positions[name], problems[name] = None, "no position"
            else:
                positions[name] = float(value)
        with self._lock:
            self._problems = problems
        return positions

    def problems(self) -> dict[str, str]:
        """Motors not read for the latest frame, each with a sentence saying why."""
        now = time.monotonic()
        with self._lock:
            problems, pending = dict(self._problems), dict(self._pending)
        text = {}
        for name, reason in problems.items():
            future, since = pending.get(name, (None, now))
            if reason == "hang" or (future is not None and not future.done()):
                text[name] = f"motor {name} has not answered for {now - since:.1f} s"
            else:
                text[name] = f"motor {name} cannot be read ({reason})"
        return text

    def close(self) -> None:
        """Let the workers go; a read hanging in a driver call is abandoned, not joined."""
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)


def as_monitor(reader: StageReader) -> StageMonitor:
    """The reader itself when it is a monitor already (shared with the sim source), else one."""
    return reader if isinstance(reader, StageMonitor) else StageMonitor(reader)


def _reason(exc: BaseException) -> str:
    return (devfailed_line(exc) or type(exc).__name__)[:200]
