"""The running stack for system tests: started once per session, stopped by PID.

Tests that need the database, Sardana and the four servers take the ``stack``
fixture; it brings the stack up from the project's own configuration in a
temporary run directory on a free loopback port, and stops exactly the processes
it started when the session ends.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tango

from clients.launcher import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("stack")
    launched = Stack(run_dir, echo=False)
    previous = os.environ.get("TANGO_HOST")
    try:
        os.environ["TANGO_HOST"] = launched.up()
        yield launched
    finally:
        launched.down(quiet=True)
        if previous is None:
            os.environ.pop("TANGO_HOST", None)
        else:
            os.environ["TANGO_HOST"] = previous


def device_trl(stack: Stack, name: str) -> str:
    """A fully qualified Tango name, immune to whatever TANGO_HOST other code set."""
    return f"tango://{stack.tango_host}/{name}"


def wait_answering(trl: str, timeout_s: float = 30.0, server: subprocess.Popen | None = None,
                   log: Path | None = None) -> tango.DeviceProxy:
    """A proxy (10 s client timeout) once the device answers State; fails early when ``server``
    (the process serving it) exits, with the tail of its ``log``."""
    deadline = time.monotonic() + timeout_s
    while True:
        tail = f": {log.read_text(errors='replace')[-2000:]}" if log is not None else ""
        assert server is None or server.poll() is None, f"the server of {trl} exited{tail}"
        try:
            proxy = tango.DeviceProxy(trl)
            proxy.set_timeout_millis(10000)
            proxy.state()
            return proxy
        except tango.DevFailed:
            assert time.monotonic() < deadline, f"{trl} did not answer within {timeout_s:.0f} s{tail}"
            time.sleep(0.2)
