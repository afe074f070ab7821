"""Helpers for CameraDS device tests: a camera in its own server process (no database),
an event recorder, and image sequences on disk."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tango
import tifffile

from clients.file_db_server import run_on_file_database

DEVICE = "test/camera/1"


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
    with run_on_file_database([executable], "CameraDS/test", {DEVICE: ("CameraDS", properties)}, db_dir,
                              start_timeout_s=30) as trls:
        proxy = tango.DeviceProxy(trls[DEVICE])
        proxy.set_timeout_millis(5000)
        yield proxy


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


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def write_sequence(folder: Path, n: int = 4, shape: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    """Frames whose pixel [0, 0] is their index, so a received image says which file it was."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    rng = np.random.default_rng(0)
    for i in range(n):
        data = rng.integers(100, 4000, size=shape, dtype=np.uint16)
        data[0, 0] = i
        tifffile.imwrite(folder / f"img_{i:03d}.tif", data)
        frames.append(data)
    return frames
