"""The helper that serves devices under test: a server stuck at start-up is reported and
stopped, so it cannot keep the test run from ending (as a forked test server once did in CI)."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from tests.device_server import serve_devices
from tests.fake_devices import NeverReadyDevice


def _our_servers() -> list[psutil.Process]:
    """Device servers this process started and that still run (zombies are not running)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "tests.serve_devices" in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return found


def test_a_server_stuck_at_start_up_is_reported_and_stopped(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="did not start"), \
            serve_devices([NeverReadyDevice], {"test/stuck/1": ("NeverReadyDevice", {})}, tmp_path,
                          start_timeout_s=3):
        pytest.fail("the block must not run when the device never answers")
    assert time.monotonic() - started < 20
    assert _our_servers() == []
