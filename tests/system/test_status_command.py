"""`smart status` / `make status` when no stack runs: one line, exit 0, no device asked.

System tier because the launcher asks the devices through Tango when processes run (it imports
tango), not because a device runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from clients import cli
from clients.launcher import Stack


def test_status_without_any_stack_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--run-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"no stack running in {tmp_path.resolve()} (`make up` or `smart up` starts one)"
    assert err == ""


def test_status_after_down_does_not_ask_the_devices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # what `down` leaves: stack.json (devices on a database that is gone), and either no pids.json
    # or one whose processes are dead
    (tmp_path / "stack.json").write_text(json.dumps({"tango_host": "127.0.0.1:1", "devices": ["smart/camera/1"]}))
    dead = psutil.Popen(["true"])
    dead.wait()
    (tmp_path / "pids.json").write_text(json.dumps({"PyDatabaseds": {
        "name": "PyDatabaseds", "pid": dead.pid, "cmd": ["PyDatabaseds"], "log": "x",
        "create_time": psutil.Process().create_time()}}))
    assert cli.main(["status", "--run-dir", str(tmp_path)]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("no stack running in ") and "TRANSIENT" not in out and "UNREACHABLE" not in out


def test_status_of_a_running_stack_lists_its_processes(tmp_path: Path) -> None:
    me = psutil.Process(os.getpid())
    (tmp_path / "pids.json").write_text(json.dumps({"PyDatabaseds": {
        "name": "PyDatabaseds", "pid": me.pid, "cmd": ["python"], "log": "x", "create_time": me.create_time()}}))
    (tmp_path / "stack.json").write_text(json.dumps({"tango_host": "127.0.0.1:1", "devices": []}))
    text = Stack(tmp_path, echo=False).status_text()
    assert text.splitlines()[0] == "TANGO_HOST=127.0.0.1:1"
    assert "PyDatabaseds" in text and "running" in text and "no stack running" not in text
