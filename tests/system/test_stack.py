"""The foundation: the launcher brings up the real stack and takes it down cleanly."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import psutil
import pytest
import tango

from clients.door import DoorClient, MacroFailed
from clients.launcher import LaunchError, Stack
from tests.system.conftest import device_trl

OUR_DEVICES = ["smart/camera/1", "smart/registration/1", "smart/particles/1", "smart/coordmapper/1", "smart/queue/1",
               "smart/ring/1"]


def test_every_device_answers_through_the_database(stack: Stack) -> None:
    db = tango.Database(*stack.tango_host.split(":"))
    for name in OUR_DEVICES:
        info = db.get_device_info(name)
        assert info.exported, f"{name} is not exported in the database"
        proxy = tango.DeviceProxy(device_trl(stack, name))
        assert proxy.state() in (tango.DevState.ON, tango.DevState.RUNNING, tango.DevState.ALARM)
        assert proxy.status().strip()
    for sardana in ("smart/pool/1", "smart/macroserver/1", "smart/door/01", "samx", "samy", "samz"):
        assert tango.DeviceProxy(device_trl(stack, sardana)).state() is not None


def test_ring_follows_the_beamline_files_night(stack: Stack) -> None:
    """SimRing reads the stack's beamline file: today's kind world has no night clock (the
    simulated time stands at 0, docs/simulation.md) and a full beam."""
    ring = tango.DeviceProxy(device_trl(stack, "smart/ring/1"))
    assert ring.read_attribute("SimTime").value == 0.0
    assert ring.read_attribute("Current").value == pytest.approx(100.0)


def test_database_is_sqlite_in_the_run_dir_on_loopback(stack: Stack) -> None:
    host, port = stack.tango_host.split(":")
    assert host == "127.0.0.1"
    assert int(port) != 10000
    assert (stack.run_dir / "tango.db").stat().st_size > 0
    state = json.loads((stack.run_dir / "stack.json").read_text())
    # the start-up time is recorded for `smart status` and the docs; how long it takes is a
    # measurement (it doubles under load), not something a test can assert
    assert state["startup_s"] > 0
    # start order (the Pool's motors appear after CoordMapperDS) leaves no ALARM behind `up`
    states = state["states_after_up"]
    assert {name: states[name] for name in OUR_DEVICES} == {name: "ON" for name in OUR_DEVICES}, states
    assert "ALARM" not in states.values(), states


def test_ascan_runs_through_the_door(stack: Stack) -> None:
    with DoorClient(device_trl(stack, "smart/door/01")) as door:
        run = door.run("ascan samx 0 1 5 0.1", timeout_s=120)
    output = run.text(("Output",))
    assert "samx" in output
    data_rows = [line for line in output.splitlines() if line.strip() and line.split()[0].isdigit()]
    assert len(data_rows) == 6
    assert float(data_rows[-1].split()[1]) == pytest.approx(1.0, abs=1e-3)


def test_sardana_logs_into_the_run_not_into_a_file_every_stack_shares(stack: Stack) -> None:
    """Sardana's own log of this stack's Pool and MacroServer is in the run's log folder (its
    default, /tmp/tango-<user>/<Server>/smart/log.txt, would be shared by every stack named smart)."""
    for server in ("Pool/smart", "MacroServer/smart"):
        log = stack.log_dir / f"{server.replace('/', '-')}.sardana.log"
        assert log.exists() and log.stat().st_size > 0, log
        assert "--log-file-name" in stack.processes[server].cmd


def test_failing_macro_is_reported(stack: Stack) -> None:
    with DoorClient(device_trl(stack, "smart/door/01")) as door, pytest.raises(MacroFailed):
        door.run("ascan no_such_motor 0 1 5 0.1", timeout_s=60)


def test_environment_names_the_smart_devices(stack: Stack) -> None:
    from taurus.core.util.codecs import CodecFactory

    ms = tango.DeviceProxy(device_trl(stack, "smart/macroserver/1"))
    env = CodecFactory().decode(ms.Environment)["new"]
    assert env["SmartCamera"] == "smart/camera/1"
    assert env["SmartRegistration"] == "smart/registration/1"
    assert env["SmartParticles"] == "smart/particles/1"
    assert env["SmartMapper"] == "smart/coordmapper/1"
    assert list(env["SmartMotors"]) == ["samx", "samy"]
    assert env["SmartQueue"] == "smart/queue/1"
    assert env["SmartBeamCondition"] == {"attribute": "smart/ring/1/Current", "min": 10.0, "poll_s": 1.0}


def _small_config(tmp_path: Path, executable: str = "CoordMapperDS") -> Path:
    config = tmp_path / "small.yaml"
    config.write_text(f"servers:\n  {executable}/t1:\n    CoordMapperDS:\n      test/coordmapper/1: {{}}\n")
    return config


def test_port_in_use_is_refused_with_advice(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(LaunchError, match="already in use"):
            Stack(tmp_path / "run", _small_config(tmp_path), echo=False, port=port).up()
    assert not (tmp_path / "run" / "pids.json").exists()


def test_stale_run_dir_is_cleaned_and_reused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = psutil.Popen(["true"])
    dead.wait()
    (run_dir / "pids.json").write_text(json.dumps({"PyDatabaseds": {
        "name": "PyDatabaseds", "pid": dead.pid, "cmd": ["PyDatabaseds"], "log": "x", "create_time": 1.0}}))
    (run_dir / "tango.db").write_text("not a database")
    stack = Stack(run_dir, _small_config(tmp_path), echo=False)
    try:
        stack.up()
        assert tango.DeviceProxy(f"tango://{stack.tango_host}/test/coordmapper/1").state() == tango.DevState.ON
        with pytest.raises(LaunchError, match="already running"):
            Stack(run_dir, _small_config(tmp_path), echo=False).up()
    finally:
        pids = [p.pid for p in stack.processes.values()]
        assert stack.down(quiet=True) == []
    assert all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
               for pid in pids)


def test_server_that_fails_prints_its_log_and_stops_the_others(tmp_path: Path, capsys) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    broken = bin_dir / "BrokenDS"
    broken.write_text("#!/bin/sh\necho 'BrokenDS: cannot open camera /dev/video9' >&2\nexit 3\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    config = tmp_path / "broken.yaml"
    config.write_text("servers:\n  CoordMapperDS/t2:\n    CoordMapperDS:\n      test/coordmapper/2: {}\n"
                      "  BrokenDS/t1:\n    CoordMapperDS:\n      test/broken/1: {}\n")
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}:{old_path}"
    try:
        stack = Stack(tmp_path / "run", config, echo=True)
        with pytest.raises(LaunchError, match="BrokenDS/t1 exited"):
            stack.up()
    finally:
        os.environ["PATH"] = old_path
    assert "cannot open camera /dev/video9" in capsys.readouterr().out
    recorded = json.loads((tmp_path / "run" / "stack.json").read_text()) if (
        tmp_path / "run" / "stack.json").exists() else None
    assert recorded is None
    for proc in stack.processes.values():
        assert not proc.is_alive()
    assert not (tmp_path / "run" / "pids.json").exists()
