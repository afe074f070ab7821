"""Hand device servers to a facility's Starter (Tango's per-host server manager) and take them back.

At a facility every host runs a Starter (``Starter/<host>``, device ``tango/admin/<host>``). It
starts the servers registered for its host with a start-up level (``DbServerInfo``: host, mode 1
= controlled, level >= 1), level by level at boot, and on request (``DevStart``/``DevStop``).
It runs ``<dir>/<Executable> <instance>`` for the first directory of its ``StartDsPath``
property that holds the executable. Our entry points live in the project's venv and must run
with that venv's Python, in their run directory, listening where the launcher's own servers
listen: so ``smart up --facility --starter HOST`` writes one small wrapper script per executable
into ``<run-dir>/bin`` and the facility adds that directory to the Starter's ``StartDsPath``
(the launcher refuses, naming the directory, until it is there; it never rewrites a
facility's Starter configuration itself).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

WRAPPER_TEMPLATE = """#!/bin/sh
# Written by `smart up --facility --starter`: Starter runs "{executable} <instance>" from its
# StartDsPath; this starts the project's entry point with its venv, in the run directory.
# Starter sends stdout to /dev/null and stderr to its log file: stdout joins stderr there.
cd {run_dir} || exit 1
export TANGO_HOST={tango_host} PYTHONUNBUFFERED=1 SMART_RUN_DIR={run_dir}
exec {command} 1>&2
"""

STOP_TIMEOUT_S = 30.0


class StarterError(RuntimeError):
    """The Starter cannot take or give back our servers; the message says what to do."""


def write_wrappers(bin_dir: Path, run_dir: Path, tango_host: str,
                   commands: dict[str, list[str]]) -> list[Path]:
    """One executable wrapper per entry point. ``commands`` maps the executable name to the
    command line with ``"$@"`` where Starter's arguments (the instance name) go."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for executable, cmd in commands.items():
        quoted = " ".join('"$@"' if part == '"$@"' else shlex.quote(part) for part in cmd)
        path = bin_dir / executable
        path.write_text(WRAPPER_TEMPLATE.format(executable=executable, run_dir=shlex.quote(str(run_dir)),
                                                tango_host=shlex.quote(tango_host), command=quoted))
        path.chmod(0o755)
        written.append(path)
    return written


class StarterClient:
    """The Starter device of one host, seen from the launcher."""

    def __init__(self, tango_host: str, host: str) -> None:
        import tango

        from macros.smart_calls import proxy

        self.tango_host = tango_host
        self.host = host
        self.device_name = f"tango/admin/{host}"
        self.proxy = proxy(f"tango://{tango_host}/{self.device_name}", 10_000)
        self.db = tango.Database(*tango_host.split(":"))

    def check_reachable(self) -> None:
        import tango

        try:
            self.proxy.ping()
        except tango.DevFailed as exc:
            raise StarterError(f"the Starter {self.device_name} does not answer at {self.tango_host} "
                               f"({exc.args[0].desc.strip()[:120]}); start it on host {self.host} "
                               f"(`/usr/lib/tango/Starter {self.host}`) or name another with --starter") from None

    def start_ds_path(self) -> list[str]:
        prop = self.db.get_device_property(self.device_name, "StartDsPath")["StartDsPath"]
        return [str(Path(p)) for p in prop]

    def check_path(self, bin_dir: Path) -> None:
        """Refuse unless the Starter looks for executables in ``bin_dir``."""
        if str(bin_dir) not in self.start_ds_path():
            raise StarterError(
                f"the Starter {self.device_name} does not look in {bin_dir} (its StartDsPath is "
                f"{self.start_ds_path() or 'empty'}); add it, e.g. with Jive or "
                f"`python -c \"import tango; tango.Database().put_device_property('{self.device_name}', "
                f"{{'StartDsPath': [..., '{bin_dir}']}})\"`, run Init on {self.device_name}, then retry")

    def register(self, servers: Iterable[tuple[str, int]]) -> None:
        """Put each ``(server, level)`` under this Starter (controlled, with its start-up level)
        and make the Starter re-read its server list."""
        import tango

        for server, level in servers:
            info = tango.DbServerInfo()
            info.name, info.host, info.mode, info.level = server, self.host, 1, int(level)
            self.db.put_server_info(info)
        self.proxy.command_inout("UpdateServersInfo")

    def running(self) -> list[str]:
        """Servers of this host the Starter sees running (``DevGetRunningServers``)."""
        return [str(s) for s in (self.proxy.command_inout("DevGetRunningServers", True) or [])]

    def states(self) -> dict[str, tuple[str, int]]:
        """Each server of this host as the Starter sees it: (state, processes). From its ``Servers``
        attribute, ``name<TAB>state<TAB>controlled<TAB>level<TAB>processes``: ON = running and
        answering, MOVING = a process without an answering admin device (starting or
        stopping), FAULT with 0 processes = not running."""
        out = {}
        for line in self.proxy.read_attribute("Servers").value or ():
            fields = str(line).split("\t")
            if len(fields) >= 5:
                out[fields[0]] = (fields[1], int(fields[4]) if fields[4].isdigit() else -1)
        return out

    def stopped(self, server: str) -> bool:
        state, processes = self.states().get(server, ("FAULT", 0))
        return state == "FAULT" and processes == 0

    def start(self, server: str, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """``DevStart``, once the Starter sees no process of the server (just after a stop its
        polling thread needs a few seconds to notice; it answers ALREADY_RUNNING until then)."""
        import tango

        state, _ = self.states().get(server, ("FAULT", 0))
        if state == "ON":
            raise StarterError(f"{server} is already running under {self.device_name}; "
                               "`smart down` (or DevStop) it first")
        deadline = time.monotonic() + timeout_s
        while not self.stopped(server) and time.monotonic() < deadline:
            time.sleep(0.5)
        try:
            self.proxy.command_inout("DevStart", server)
        except tango.DevFailed as exc:
            raise StarterError(f"{self.device_name} could not start {server}: "
                               f"{exc.args[0].desc.strip()}") from None

    def stop(self, servers: list[str], say: Callable[[str], Any] = print,
             timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
        """``DevStop`` each running server and wait until the Starter sees none of its processes
        left; one still there after ``timeout_s`` gets ``HardKillServer`` (kill -9). Returns the
        servers whose processes are still there."""
        import tango

        running = set(self.running())
        for server in servers:
            if server in running:
                try:
                    self.proxy.command_inout("DevStop", server)
                except tango.DevFailed as exc:
                    say(f"{self.device_name} DevStop {server}: {exc.args[0].desc.strip()}")
        left = self._wait_stopped(servers, timeout_s)
        for server in left:
            say(f"{server} did not stop within {timeout_s:.0f} s; HardKillServer through {self.device_name}")
            try:
                self.proxy.command_inout("HardKillServer", server)
            except tango.DevFailed as exc:
                say(f"{self.device_name} HardKillServer {server}: {exc.args[0].desc.strip()}")
        return self._wait_stopped(left, 15.0) if left else []

    def _wait_stopped(self, servers: Iterable[str], timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        left = list(servers)
        while left:
            left = [s for s in left if not self.stopped(s)]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return left
