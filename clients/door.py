"""Run Sardana macros through a Door and follow their output, from any script.

Spock is the interactive way; scripts, the demo, the CLI and the tests need the same
thing without a console: start a macro, stream what the Door says (Output, Info,
Warning, Error) as it happens, wait for the end, and tell success from failure.
Only the Door's public Tango interface is used (``RunMacro``, ``StopMacro``, its
log attributes, ``State``), so this works with any MacroServer.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import tango

from macros.smart_calls import proxy

LOG_ATTRIBUTES = ("Output", "Info", "Warning", "Error")


class MacroFailed(RuntimeError):
    """The macro ended in error or was stopped; ``lines`` holds what the Door said."""

    def __init__(self, message: str, lines: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.lines = lines


@dataclass
class MacroRun:
    """What one macro run printed, by stream, in order."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def text(self, streams: Sequence[str] = LOG_ATTRIBUTES) -> str:
        return "\n".join(line for stream, line in self.lines if stream in streams)


class DoorClient:
    """A thin, thread-safe wrapper around one Door device."""

    def __init__(self, door: str, echo: Callable[[str, str], None] | None = None) -> None:
        self.proxy = proxy(door, 10_000)
        self.echo = echo
        self._lock = threading.Lock()
        self._current: MacroRun | None = None
        self._event_ids = [
            self.proxy.subscribe_event(attr, tango.EventType.CHANGE_EVENT, self._on_log)
            for attr in LOG_ATTRIBUTES
        ]

    def close(self) -> None:
        for event_id in self._event_ids:
            with contextlib.suppress(tango.DevFailed):
                self.proxy.unsubscribe_event(event_id)
        self._event_ids = []

    def __enter__(self) -> DoorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_log(self, event: tango.EventData) -> None:
        if event.err or event.attr_value is None or not event.attr_value.value:
            return
        stream = event.attr_name.rsplit("/", 1)[-1].capitalize()
        with self._lock:
            run = self._current
        for line in event.attr_value.value:
            if run is not None:
                run.lines.append((stream, line))
            if self.echo is not None:
                self.echo(stream, line)

    def is_busy(self) -> bool:
        return self.proxy.state() in (tango.DevState.RUNNING, tango.DevState.MOVING)

    def run(self, macro: str | Sequence[str], timeout_s: float = 3600.0) -> MacroRun:
        """Run a macro to its end; raise MacroFailed if it fails, is stopped or times out."""
        words = macro.split() if isinstance(macro, str) else [str(w) for w in macro]
        if self.is_busy():
            raise MacroFailed(f"the Door {self.proxy.name()} is busy with another macro; wait or stop it", [])
        run = MacroRun()
        with self._lock:
            self._current = run
        try:
            self.proxy.RunMacro(words)
            deadline = time.monotonic() + timeout_s
            time.sleep(0.05)
            while self.is_busy():
                if time.monotonic() > deadline:
                    self.proxy.StopMacro()
                    raise MacroFailed(f"{words[0]} did not finish within {timeout_s:.0f} s; stopped", run.lines)
                time.sleep(0.05)
            time.sleep(0.2)  # the last log events arrive just after the state change
            state = self.proxy.state()
            if state != tango.DevState.ON:
                raise MacroFailed(f"{words[0]} ended with Door state {state}:\n{run.text(('Warning', 'Error'))}",
                                  run.lines)
            return run
        finally:
            with self._lock:
                self._current = None
