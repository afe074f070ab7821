"""The SMART stack spread over three test hosts (:mod:`tests.facility.netns`).

Which server runs where (``PLACEMENT``):

- ``db``:  the project's own Tango database, ``PyDatabaseds`` (pytango-db, sqlite file in the
  run directory) on port 10000 of the host's address -- the database `smart up` starts, here
  bound to a host address instead of loopback;
- ``cam``: ``CameraDS`` (simulated camera) and ``SimMicroscope`` (its zoom), as on the
  microscope's computer;
- ``srv``: Sardana (``Pool`` with the simulated stage and counters, ``MacroServer`` with the
  Door) and ``RegistrationDS``, ``ParticleDS``, ``CoordMapperDS``, ``QueueDS`` (the night
  queue) and ``SimRing`` (the virtual storage ring).

Every server is started with ``ip netns exec <host> <server> <instance> -ORBendPoint
giop:tcp:<host address>:0`` and ``TANGO_HOST=<db address>:10000``: it listens on, and publishes
to the database, the address of its own host, which is the one address the others can reach.
Devices and properties come from the same ``simulation/launch/smart.yaml`` and Sardana
configuration `smart up` uses (``sardana-config load``, run from the test's namespace as a
client of the database). The test process itself is a client in the root namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tango

from clients.launcher import DEFAULT_CONFIG, REPO, StackConfig, register_servers, sardana_with_stage_motors
from tests.facility.netns import Host, Started, TestNetwork

DB_PORT = 10000
"""A real facility's port: each test host has its own addresses, so nothing else can hold it."""
START_TIMEOUT_S = 120.0
"""Longest wait for one server's devices to answer (a loaded 2-core machine takes ~10-30 s)."""

HOST_INDEX = {"db": 11, "cam": 12, "srv": 13}
PLACEMENT = {
    "PyDatabaseds": "db",
    "SimMicroscope/smart": "cam",
    "CameraDS/smart": "cam",
    "Pool/smart": "srv",
    "MacroServer/smart": "srv",
    "RegistrationDS/smart": "srv",
    "ParticleDS/smart": "srv",
    "CoordMapperDS/smart": "srv",
    "QueueDS/smart": "srv",
    "SimRing/smart": "srv",
}
START_ORDER = ["Pool/smart", "MacroServer/smart", "SimMicroscope/smart", "CameraDS/smart",
               "RegistrationDS/smart", "ParticleDS/smart", "CoordMapperDS/smart", "SimRing/smart",
               "QueueDS/smart"]


class SpreadError(RuntimeError):
    """A server did not come up on its host; the message ends with its log tail."""


def executable(name: str) -> str:
    """The server executable of this venv (the one the tests run with), else from $PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


@dataclass
class SpreadStack:
    """The stack on ``network``'s hosts; ``up`` starts it, the network's ``close`` stops it."""

    network: TestNetwork
    run_dir: Path
    config_path: Path = DEFAULT_CONFIG
    seed: int = 0
    startup_s: dict[str, float] = field(default_factory=dict)
    """Seconds from starting each server to all its devices answering the test (root namespace)."""
    servers: dict[str, Started] = field(default_factory=dict)
    tango_host: str = ""

    # ---------------------------------------------------------------- hosts
    def host_of(self, server: str) -> Host:
        return self.network.hosts[PLACEMENT[server]]

    def places(self) -> dict[str, str]:
        return {"repo": str(REPO), "run": str(self.run_dir), "beamline": str(self.run_dir / "beamline.json")}

    def env(self) -> dict[str, str]:
        env = os.environ.copy()
        env.update({"TANGO_HOST": self.tango_host, "PYTHONUNBUFFERED": "1"})
        return env

    def trl(self, name: str) -> str:
        """A fully qualified name: the test process never depends on its own TANGO_HOST."""
        return f"tango://{self.tango_host}/{name}"

    def proxy(self, name: str, timeout_ms: int = 3000) -> tango.DeviceProxy:
        proxy = tango.DeviceProxy(self.trl(name))
        proxy.set_timeout_millis(timeout_ms)
        return proxy

    # ------------------------------------------------------------------- up
    def up(self) -> None:
        for role, index in HOST_INDEX.items():
            if role not in self.network.hosts:
                self.network.add_host(role, index)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        (self.run_dir / "tango.db").unlink(missing_ok=True)  # a fresh database, as `smart up` makes
        self._write_beamline()
        config = StackConfig.load(self.config_path, self.places())
        started = time.monotonic()
        self._start_database()
        self._register(config)
        if config.sardana_config is not None:
            self._load_sardana(config.sardana_config, config.stage_motors)
        for server in START_ORDER:
            self._start_server(server)
        self.startup_s["total"] = round(time.monotonic() - started, 1)

    def _write_beamline(self) -> None:
        from simulation.config import default_beamline

        path = Path(self.places()["beamline"])
        if not path.exists():
            default_beamline(self.seed).save(path)

    def _start_database(self) -> None:
        host = self.network.hosts["db"]
        self.tango_host = f"{host.address}:{DB_PORT}"
        env = self.env()
        env["PYTANGO_DATABASE_NAME"] = str(self.run_dir / "tango.db")
        began = time.monotonic()
        proc = host.start("PyDatabaseds", [executable("PyDatabaseds"), "--port", str(DB_PORT),
                                           "--host", host.address, "2"],
                          self.run_dir / "logs" / "PyDatabaseds.log", env=env, cwd=self.run_dir)
        self.servers["PyDatabaseds"] = proc
        deadline = began + START_TIMEOUT_S
        while True:
            try:
                db = tango.Database(host.address, DB_PORT)
                db.get_info()
                break
            except tango.DevFailed:
                self._check_alive(proc, deadline, f"the database on {self.tango_host}")
                time.sleep(0.2)
        self.startup_s["PyDatabaseds"] = round(time.monotonic() - began, 1)

    def database(self) -> tango.Database:
        host, port = self.tango_host.split(":")
        return tango.Database(host, int(port))

    def _register(self, config: StackConfig) -> None:
        register_servers(self.database(), config.servers)

    def _load_sardana(self, sardana_config: Path, stage_motors: list[str] | None) -> None:
        text = sardana_config.read_text()
        for key, value in self.places().items():
            text = text.replace("{" + key + "}", value)
        rendered = self.run_dir / "sardana.yaml"
        rendered.write_text(sardana_with_stage_motors(text, stage_motors))
        log = self.run_dir / "logs" / "sardana-config.log"
        with open(log, "ab") as out:
            result = subprocess.run([executable("sardana-config"), "load", "--write", "--environment",
                                     str(rendered)], stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                    timeout=300, check=False)
        if result.returncode != 0:
            raise SpreadError(f"sardana-config load failed (exit {result.returncode}): {_tail(log)}")

    def server_command(self, server: str) -> list[str]:
        executable_name, _, instance = server.partition("/")
        return [executable(executable_name), instance, "-ORBendPoint",
                f"giop:tcp:{self.host_of(server).address}:0"]

    def _start_server(self, server: str) -> None:
        host = self.host_of(server)
        began = time.monotonic()
        proc = host.start(server, self.server_command(server),
                          self.run_dir / "logs" / f"{server.replace('/', '-')}.log", env=self.env(),
                          cwd=self.run_dir)
        self.servers[server] = proc
        deadline = began + START_TIMEOUT_S
        for device in self.devices_of(server):
            while True:
                try:
                    self.proxy(device).state()
                    break
                except tango.DevFailed:
                    self._check_alive(proc, deadline, f"{device} of {server} on host {host.role}")
                    time.sleep(0.2)
        self.startup_s[server] = round(time.monotonic() - began, 1)

    def devices_of(self, server: str) -> list[str]:
        db = self.database()
        names: list[str] = []
        for class_name in db.get_server_class_list(server):
            names.extend(db.get_device_name(server, class_name))
        return [n for n in names if not n.lower().startswith("dserver/")]

    @staticmethod
    def _check_alive(proc: Started, deadline: float, what: str) -> None:
        if not proc.alive():
            raise SpreadError(f"{what}: the process exited (code {proc.popen.returncode}): {_tail(proc.log)}")
        if time.monotonic() > deadline:
            raise SpreadError(f"{what} did not answer within {START_TIMEOUT_S:.0f} s: {_tail(proc.log)}")

    # --------------------------------------------------------------- facts
    def published_address(self, device: str) -> str:
        """The host of the IOR the device's server exported to the database."""
        info = self.database().import_device(device)
        return _ior_host(info.ior)

    def summary(self) -> dict[str, Any]:
        return {"tango_host": self.tango_host,
                "hosts": {role: {"netns": h.netns, "address": h.address,
                                 "servers": [s for s, r in PLACEMENT.items() if r == role]}
                          for role, h in self.network.hosts.items()},
                "startup_s": self.startup_s}

    def write_summary(self, extra: dict[str, Any]) -> Path:
        path = self.run_dir / "several_hosts.json"
        path.write_text(json.dumps({**self.summary(), **extra}, indent=1))
        return path


def _ior_host(ior: str) -> str:
    """The host address inside a stringified CORBA IOR (IIOP profile 1.x, either byte order)."""
    data = bytes.fromhex(ior[4:])
    little = data[0] == 1

    def u32(offset: int) -> int:
        return int.from_bytes(data[offset:offset + 4], "little" if little else "big")

    offset = 4
    type_len = u32(offset)
    offset += 4 + type_len
    offset = (offset + 3) & ~3
    profiles = u32(offset)
    offset += 4
    for _ in range(profiles):
        offset = (offset + 3) & ~3
        tag, length = u32(offset), u32(offset + 4)
        body = data[offset + 8:offset + 8 + length]
        offset += 8 + length
        if tag != 0:  # TAG_INTERNET_IOP
            continue
        inner_little = body[0] == 1
        host_len = int.from_bytes(body[4:8], "little" if inner_little else "big")
        return body[8:8 + host_len - 1].decode()
    raise ValueError("the IOR has no IIOP profile")


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"(no log at {path})"
