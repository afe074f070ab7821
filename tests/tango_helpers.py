"""Test helpers that need Tango (system tier): a camera in its own server, events, SMART reasons,
proxies to a test stack's devices. The Tango-free ones are in tests/helpers.py."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import tango

from clients.file_db_server import run_on_file_database
from clients.launcher import Stack
from macros.smart_calls import proxy

CAMERA_DEVICE = "test/camera/1"


@contextmanager
def camera(properties: dict[str, Any], db_dir: Path | None = None) -> Iterator[tango.DeviceProxy]:
    """A CameraDS server in a fresh process (the real ``CameraDS`` executable) with a Tango
    file database, on loopback; stopped by its PID when the block ends.

    A fresh process, not a fork of the test process: a fork would inherit this process's
    Tango event threads, and a camera that itself subscribes to events (tango source) then
    hangs at shutdown. Passing the same ``db_dir`` again restarts the camera on the same
    file database, so memorized attributes can be checked across a restart.
    """
    executable = str(Path(sys.executable).parent / "CameraDS")
    with run_on_file_database([executable], "CameraDS/test", {CAMERA_DEVICE: ("CameraDS", properties)}, db_dir,
                              start_timeout_s=30) as trls:
        yield proxy(trls[CAMERA_DEVICE], 5000)


class Events:
    """Collects (arrival time, value) of non-error events; thread-safe."""

    def __init__(self) -> None:
        self.items: list[tuple[float, Any]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        now = time.monotonic()
        with self.lock:
            if event.err:
                self.errors.append(event.errors[0].desc)
            elif hasattr(event, "ctr"):
                self.items.append((now, event.ctr))
            else:
                self.items.append((now, event.attr_value.value))

    def values(self) -> list[Any]:
        with self.lock:
            return [v for _, v in self.items]


def reason(excinfo: pytest.ExceptionInfo[tango.DevFailed]) -> str:
    """The SMART (or Tango) reason of the first error of a refused call."""
    return excinfo.value.args[0].reason


def desc(excinfo: pytest.ExceptionInfo[tango.DevFailed]) -> str:
    """The description of the first error of a refused call: what the user is told to do."""
    return excinfo.value.args[0].desc


def stack_proxy(stack: Stack, name: str, timeout_ms: int = 10_000) -> tango.DeviceProxy:
    """A device of ``stack`` by its full name (immune to whatever TANGO_HOST other code set), with
    a 10 s timeout by default for calls that scan or detect."""
    return proxy(f"tango://{stack.tango_host}/{name}", timeout_ms)
