"""The launcher's PID bookkeeping: a Stack made afresh for a run directory (another shell's
`smart`, a test's helper) must not forget the processes it did not start itself.

System tier because the launcher asks Tango when it restarts a server, not because a device
runs."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from clients.launcher import REPO, ManagedProcess, Stack

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


def _started_processes(pids_file: Path) -> list[psutil.Process]:
    """The processes a stack recorded, those still running (by PID and start time)."""
    alive = []
    for entry in json.loads(pids_file.read_text()).values():
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(entry["pid"])
            if abs(process.create_time() - entry["create_time"]) < 1.0:
                alive.append(process)
    return alive


def test_a_demo_ended_by_sigterm_takes_its_whole_stack_down(tmp_path: Path) -> None:
    """``kill`` (SIGTERM) of a running `make demo` stops every server it started, as Ctrl-C does."""
    run_dir = tmp_path / "demo"
    pids_file = run_dir / "stack" / "pids.json"
    demo = subprocess.Popen([sys.executable, "-m", "clients.demo", "--seed", "3", "--run-dir", str(run_dir), "--quiet"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (pids_file.exists() and "MacroServer/smart" in pids_file.read_text()):
            assert demo.poll() is None, demo.stderr.read().decode() if demo.stderr else ""
            assert time.monotonic() < deadline, "the demo's stack did not come up within 240 s"
            time.sleep(0.5)
        running = _started_processes(pids_file)
        assert len(running) >= 8, running
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=120) == 128 + signal.SIGTERM
        gone, alive = psutil.wait_procs(running, timeout=10)
        assert not alive, f"left running after the demo ended: {[p.cmdline()[1:2] for p in alive]}"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=30)
        if pids_file.exists():
            for process in _started_processes(pids_file):
                process.kill()
