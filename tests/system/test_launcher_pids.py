"""The launcher's PID bookkeeping: a Stack made afresh for a run directory (another shell's
`smart`, a test's helper) must not forget the processes it did not start itself.

System tier because the launcher asks Tango when it restarts a server, not because a device
runs."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from clients.launcher import ManagedProcess, Stack

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _spawn(name: str, run_dir: Path) -> tuple[subprocess.Popen[bytes], ManagedProcess]:
    popen = subprocess.Popen(SLEEPER, start_new_session=True)
    return popen, ManagedProcess(name, popen.pid, SLEEPER, str(run_dir / f"{name}.log"),
                                 psutil.Process(popen.pid).create_time())


def test_restart_from_a_fresh_stack_keeps_the_other_processes(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    first, proc_a = _spawn("ServerA", tmp_path)
    second, proc_b = _spawn("ServerB", tmp_path)
    started: list[int] = []
    try:
        (tmp_path / "pids.json").write_text(json.dumps({p.name: vars(p) for p in (proc_a, proc_b)}))
        stack = Stack(tmp_path, echo=False)
        # no Tango here: the devices of the restarted server are not waited for
        stack._devices_of_server = lambda server: []  # type: ignore[method-assign]
        new = stack.restart("ServerA", kill=True)
        started.append(new.pid)
        saved = json.loads((tmp_path / "pids.json").read_text())
        assert set(saved) == {"ServerA", "ServerB"}
        assert saved["ServerB"]["pid"] == proc_b.pid
        assert saved["ServerA"]["pid"] == new.pid != proc_a.pid
        first.wait(timeout=10)
        assert not proc_a.is_alive() and proc_b.is_alive()
    finally:
        for pid in [first.pid, second.pid, *started]:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        second.wait(timeout=10)


def test_servers_listen_on_loopback_unless_a_facility_gives_the_host_address(tmp_path: Path) -> None:
    from clients.launcher import LaunchError, _server_command

    assert _server_command("CameraDS", "smart")[-2:] == ["-ORBendPoint", "giop:tcp:127.0.0.1:0"]
    assert _server_command("CameraDS", "smart", "10.1.2.3")[-1] == "giop:tcp:10.1.2.3:0"
    assert Stack(tmp_path, facility=True, echo=False, listen="10.1.2.3").listen == "10.1.2.3"
    with pytest.raises(LaunchError, match="--listen needs --facility"):
        Stack(tmp_path, echo=False, listen="10.1.2.3")
