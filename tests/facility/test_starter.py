"""Our servers under Debian's Starter: `smart up --facility --starter HOST` registers them with
start-up levels and starts them through ``tango/admin/HOST``; DevStop/DevStart work on them;
`smart down` stops them through the Starter and nothing of ours is left running.

The Starter tells servers apart by executable name and instance name among the processes of its
host (it reads /proc), not by Tango database. Other stacks on this machine run ``CameraDS smart``
too, so this test renames the instance (``smart`` -> a name unique to this run) in a copy of
the launcher configuration; at a facility one host runs one ``CameraDS smart``.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import tango

from clients.launcher import DEFAULT_CONFIG
from tests.facility.production_db import (
    FACILITY_TIMINGS,
    ProductionDatabase,
    StarterHost,
    processes_of_run_dir,
    running_production_db,
    tango_host_set,
)

pytestmark = pytest.mark.timeout(900)

SERVER_EXECUTABLES = ("CameraDS", "RegistrationDS", "ParticleDS", "CoordMapperDS", "QueueDS",
                      "SimMicroscope", "SimRing", "Pool", "MacroServer")
SMART = str(Path(sys.executable).parent / "smart")


def renamed_config(folder: Path, instance: str) -> Path:
    """Copies of smart.yaml and its sardana.yaml with every server instance ``smart`` renamed."""
    pattern = re.compile(r"\b(" + "|".join(SERVER_EXECUTABLES) + r")/smart\b")
    sardana = folder / "sardana.yaml"
    sardana.write_text(pattern.sub(rf"\1/{instance}", (DEFAULT_CONFIG.parent / "sardana.yaml").read_text()))
    config = pattern.sub(rf"\1/{instance}", DEFAULT_CONFIG.read_text())
    config = config.replace('"{repo}/simulation/launch/sardana.yaml"', f'"{sardana}"')
    path = folder / "smart.yaml"
    path.write_text(config)
    return path


def smart(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SMART, *args], capture_output=True, text=True, timeout=timeout_s, check=False)


def wait_until(check, what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.5)


def dev_start(proxy: tango.DeviceProxy, server: str, timeout_s: float = 30.0) -> None:
    """DevStart, retried while the Starter still answers ALREADY_RUNNING: after a DevStop its
    polling thread marks the server stopped (FAULT) only a few seconds later."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            proxy.DevStart(server)
            return
        except tango.DevFailed as exc:
            if exc.args[0].reason != "ALREADY_RUNNING" or time.monotonic() > deadline:
                raise
        time.sleep(1.0)


def gone(proc: psutil.Process) -> bool:
    """Ended (a zombie waiting for whoever adopted the Starter's double fork counts as ended)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def answers(tango_host: str, device: str) -> bool:
    proxy = tango.DeviceProxy(f"tango://{tango_host}/{device}")
    proxy.set_timeout_millis(3000)
    try:
        proxy.state()
        return True
    except tango.DevFailed:
        return False


@pytest.fixture(scope="module")
def starter_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionDatabase]:
    """A database of its own: the session's one already holds smart/pool/1 etc. under the
    ``smart`` instances, and sardana-config cannot move devices to other server names."""
    with running_production_db(tmp_path_factory.mktemp("starter-db")) as db:
        yield db


@pytest.fixture()
def facility_tango_host(starter_db: ProductionDatabase) -> Iterator[str]:
    with tango_host_set(starter_db.tango_host) as host:
        yield host


def test_starter_runs_our_servers_by_level_and_smart_down_stops_them(
        facility_tango_host: str, tmp_path: Path) -> None:
    host = socket.gethostname()  # Starter refuses an instance name other than its host's name
    instance = f"st{time.time_ns() % 10**9}"
    config = renamed_config(tmp_path, instance)
    run_dir = tmp_path / "run"
    starter = StarterHost(facility_tango_host, host, [run_dir / "bin"], tmp_path / "starter-logs")
    db = tango.Database(*facility_tango_host.split(":"))
    try:
        starter.start()
        FACILITY_TIMINGS["Starter up (device answering)"] = starter.startup_s

        # refused, naming the directory, while the Starter does not look in that run dir's bin
        refused = smart("up", "--facility", "--starter", host, "--config", str(config),
                        "--run-dir", str(tmp_path / "elsewhere"))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"does not look in {tmp_path / 'elsewhere' / 'bin'}" in refused.stderr, refused.stderr

        began = time.monotonic()
        up = smart("up", "--facility", "--starter", host, "--config", str(config), "--run-dir", str(run_dir))
        FACILITY_TIMINGS[f"smart up --facility --starter ({len(SERVER_EXECUTABLES)} servers in 2 levels)"] = (
            time.monotonic() - began)
        assert up.returncode == 0, up.stdout + up.stderr
        print(up.stdout)  # the launcher's times per level (docs/deployment.md)
        level_lines = {line.split(":")[0]: line for line in up.stdout.splitlines() if line.startswith("level ")}
        assert all(f"{exe}/{instance}" in level_lines["level 1"] for exe in ("SimMicroscope", "SimRing", "Pool"))
        assert level_lines["level 1"].endswith(f"started by tango/admin/{host}"), up.stdout
        ours = {f"{exe}/{instance}" for exe in SERVER_EXECUTABLES}
        levels = {server: db.get_server_info(server) for server in ours}
        assert all(info.host == host and info.mode == 1 for info in levels.values()), levels
        assert {s for s, info in levels.items() if info.level == 1} == {
            f"SimMicroscope/{instance}", f"SimRing/{instance}", f"Pool/{instance}"}
        proxy = tango.DeviceProxy(f"tango://{facility_tango_host}/{starter.device}")
        wait_until(lambda: ours <= set(proxy.DevGetRunningServers(True)), "the Starter sees all our servers running")

        # the Starter started them (through the wrappers in <run>/bin), not the launcher: they run
        # in their own sessions, and level 2 started after level 1 answered
        procs = {p.pid: p for p in processes_of_run_dir(run_dir)}
        by_server = {f"{Path(p.cmdline()[1]).name}/{p.cmdline()[2]}": p for p in procs.values()
                     if len(p.cmdline()) > 2}
        assert set(by_server) == ours, sorted(by_server)
        first = max(by_server[s].create_time() for s in ours if levels[s].level == 1)
        assert all(by_server[s].create_time() > first for s in ours if levels[s].level == 2)
        assert not any(p.ppid() == psutil.Process().pid for p in procs.values())

        status = smart("status", "--run-dir", str(run_dir))
        assert f"starter tango/admin/{host} level 2: ParticleDS/{instance}" in status.stdout, status.stdout

        # DevStop / DevStart one server through the Starter
        particles = f"ParticleDS/{instance}"
        proxy.DevStop(particles)
        wait_until(lambda: particles not in proxy.DevGetRunningServers(True), "ParticleDS stopped")
        wait_until(lambda: not answers(facility_tango_host, "smart/particles/1"), "smart/particles/1 gone")
        wait_until(lambda: gone(by_server[particles]), "the ParticleDS process ended")
        began = time.monotonic()
        dev_start(proxy, particles)
        wait_until(lambda: answers(facility_tango_host, "smart/particles/1"), "smart/particles/1 back")
        FACILITY_TIMINGS["DevStart ParticleDS through the Starter (device answering)"] = time.monotonic() - began
        wait_until(lambda: particles in proxy.DevGetRunningServers(True), "ParticleDS running again")

        began = time.monotonic()
        down = smart("down", "--run-dir", str(run_dir))
        FACILITY_TIMINGS[f"smart down through the Starter ({len(SERVER_EXECUTABLES)} servers)"] = (
            time.monotonic() - began)
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"stopped {len(ours)} server(s) through tango/admin/{host}" in down.stdout, down.stdout
        assert not ours & set(proxy.DevGetRunningServers(True))
        assert processes_of_run_dir(run_dir) == []
        assert not any(answers(facility_tango_host, dev) for dev in ("smart/camera/1", "smart/pool/1"))
        # still registered under the Starter, now stopped: a host reboot would start them again
        assert set(proxy.DevGetStopServers(True)) >= ours
    finally:
        for proc in processes_of_run_dir(run_dir):  # only if a check above failed half-way
            proc.kill()
        starter.stop()
