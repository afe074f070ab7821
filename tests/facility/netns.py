"""Test hosts on one machine: Linux network namespaces joined by veth links to a switch.

Why namespaces: a facility runs the Tango database, the camera server and Sardana on different
computers, and what goes wrong there (a server publishing an address others cannot reach, a
client hanging on a host that vanished) never shows on loopback. A namespace has its own
interfaces, addresses and routes, so a server inside it is reachable only over its link, and
that link can be cut.

Layout (all names start with a prefix unique to this run, e.g. ``smh1a2b``)::

    root namespace (the test, as a client) --veth--+
    host "db"  10.201.N.11 ---------------veth-----+-- bridge in the switch namespace
    host "cam" 10.201.N.12 ---------------veth-----+   (nothing else lives there)
    host "srv" 10.201.N.13 ---------------veth-----+

The bridge lives in a namespace of its own, so the root namespace gets exactly one new
interface and one route (10.201.N.0/24 on it): no forwarding, no firewall rule, no global
setting is touched. Cutting a host sets its switch port down (``ip link set ... down``), which
is what a pulled cable or a dead switch port does: packets are lost, not refused.

Everything is undone by :meth:`TestNetwork.close`: processes by PID (SIGTERM, then SIGKILL),
then anything left inside our namespaces (``ip netns pids``, by PID), then the namespaces and
the root-side veth. It is safe to call after any failure, and more than once.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SUBNET_BASE = "10.201"
"""Private addresses 10.201.N.0/24; N is chosen per run among the /24s no route uses."""
PREFIX_LETTERS = "smh"


class NetworkSetupError(RuntimeError):
    """The test hosts could not be made; the message says what is missing (root, ``ip``)."""


def require_root_and_ip() -> None:
    """Fail (not skip) with a sentence when namespaces cannot be made here."""
    if os.geteuid() != 0:
        raise NetworkSetupError(
            "the several-hosts test makes network namespaces and veth links and needs root "
            f"(running as uid {os.geteuid()}); run `make test-facility` as root, e.g. in the CI "
            "container, or deselect it explicitly with `-m 'not needs_root'`")
    if shutil.which("ip") is None:
        raise NetworkSetupError("the several-hosts test needs the `ip` command (Debian package iproute2)")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise NetworkSetupError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


@dataclass
class Started:
    """One process started in a namespace: its PID (``ip netns exec`` execs the command, so the
    PID is the server's own), command, log and creation time (PIDs get reused)."""

    name: str
    popen: subprocess.Popen[bytes]
    cmd: list[str]
    log: Path
    create_time: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        if self.popen.poll() is not None:
            return False
        try:
            return abs(psutil.Process(self.pid).create_time() - self.create_time) < 0.01
        except psutil.NoSuchProcess:
            return False


@dataclass
class Host:
    """One test host: a namespace with one address on the test subnet."""

    role: str
    netns: str
    address: str
    port_link: str
    """The host's port on the switch (in the switch namespace): set down to cut the host off."""
    network: TestNetwork = field(repr=False)

    @property
    def hostname(self) -> str:
        """The host's own name (its namespace's), as separate machines have."""
        return self.netns

    def start(self, name: str, cmd: Sequence[str], log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Started:
        """Start ``cmd`` inside this host, output to ``log``; recorded for close().

        ``ip netns exec`` puts it on the host's network; ``unshare --uts`` gives it the host's own
        hostname. The hostname matters: omniORB publishes, next to the TCP address, a Unix socket
        (in /tmp, which all namespaces share) tagged with the hostname, and a client with the same
        hostname takes that socket -- calls would then cross a cut link as if nothing happened.
        On separate machines the hostnames differ, and so they do here. Both tools exec, so the
        PID is the server's own."""
        full = ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                self.hostname, *cmd]
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True)
        try:
            created = psutil.Process(popen.pid).create_time()
        except psutil.NoSuchProcess:
            created = 0.0
        started = Started(name, popen, list(full), log, created)
        self.network.processes.append(started)
        return started

    def run(self, cmd: Sequence[str], timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a short command inside this host and wait for it."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *cmd], capture_output=True, text=True,
                              timeout=timeout_s, check=False)


class TestNetwork:
    """The switch, the hosts and every process started in them (see the module docstring)."""

    __test__ = False  # not a pytest test class

    def __init__(self, prefix: str | None = None) -> None:
        require_root_and_ip()
        self.prefix = prefix or f"{PREFIX_LETTERS}{secrets.token_hex(2)}"
        self.switch = f"{self.prefix}-sw"
        self.root_link = f"{self.prefix}r0"
        self.hosts: dict[str, Host] = {}
        self.processes: list[Started] = []
        self.namespaces: list[str] = []
        self.subnet = self._free_subnet()
        self.root_address = str(self.subnet.network_address + 1)
        self._closed = False
        try:
            self._make_switch()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------- set-up
    @staticmethod
    def _free_subnet() -> ipaddress.IPv4Network:
        """A 10.201.N.0/24 that no route of the root namespace touches (another run may hold one)."""
        routes = _ip("-4", "route", "show", "table", "all").stdout
        used = []
        for line in routes.splitlines():
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(line.split()[0], strict=False))
        candidates = list(range(1, 255))
        start = secrets.randbelow(len(candidates))
        for n in candidates[start:] + candidates[:start]:
            net = ipaddress.ip_network(f"{SUBNET_BASE}.{n}.0/24")
            if not any(net.overlaps(other) for other in used if other.prefixlen > 0):
                return net
        raise NetworkSetupError(f"no free /24 left in {SUBNET_BASE}.0.0/16 on this machine")

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _make_switch(self) -> None:
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        # the root namespace's own link: the test process is a client on the test network
        _ip("link", "add", self.root_link, "type", "veth", "peer", "name", f"{self.prefix}rp")
        _ip("link", "set", f"{self.prefix}rp", "netns", self.switch)
        _ip("-n", self.switch, "link", "set", f"{self.prefix}rp", "master", "br0", "up")
        _ip("addr", "add", f"{self.root_address}/{self.subnet.prefixlen}", "dev", self.root_link)
        _ip("link", "set", self.root_link, "up")

    def add_host(self, role: str, index: int) -> Host:
        """A namespace ``<prefix>-<role>`` with address 10.201.N.<index> on a veth to the switch."""
        netns = f"{self.prefix}-{role}"
        inner, port = f"{self.prefix}{role[:3]}0", f"{self.prefix}{role[:3]}p"
        address = str(self.subnet.network_address + index)
        self._add_namespace(netns)
        _ip("link", "add", inner, "type", "veth", "peer", "name", port)
        _ip("link", "set", inner, "netns", netns)
        _ip("link", "set", port, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", inner)
        _ip("-n", netns, "link", "set", inner, "up")
        host = Host(role, netns, address, port, self)
        self.hosts[role] = host
        return host

    # ---------------------------------------------------------- the cut
    def cut(self, role: str) -> None:
        """Pull the host's cable: its switch port goes down, its packets are lost."""
        _ip("-n", self.switch, "link", "set", self.hosts[role].port_link, "down")

    def restore(self, role: str) -> None:
        _ip("-n", self.switch, "link", "set", self.hosts[role].port_link, "up")

    def link_is_up(self, role: str) -> bool:
        out = _ip("-n", self.switch, "-br", "link", "show", self.hosts[role].port_link).stdout
        return " UP " in f" {out} "

    # ------------------------------------------------------------ teardown
    def stop(self, started: Started, timeout_s: float = 10.0) -> None:
        """Stop one process by its PID: SIGTERM, SIGKILL after ``timeout_s``; reaped either way."""
        if started.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(started.pid, signal.SIGTERM)
            try:
                started.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(started.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    started.popen.wait(timeout_s)
        started.popen.poll()

    def close(self) -> list[str]:
        """Undo everything, newest first; returns what could not be removed (empty when clean)."""
        if self._closed:
            return []
        self._closed = True
        left: list[str] = []
        for role in list(self.hosts):  # a cut host's processes need their link to shut down cleanly
            with contextlib.suppress(NetworkSetupError, subprocess.TimeoutExpired):
                self.restore(role)
        for started in reversed(self.processes):
            self.stop(started)
        for netns in reversed(self.namespaces):
            # anything still inside one of our namespaces is ours (a child of our servers)
            pids = _ip("netns", "pids", netns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                pids = _ip("netns", "pids", netns, check=False).stdout.split()
                time.sleep(0.1)
            if pids:
                left.append(f"processes {' '.join(pids)} in namespace {netns}")
            if _ip("netns", "del", netns, check=False).returncode != 0:
                left.append(f"namespace {netns}")
        _ip("link", "del", self.root_link, check=False)  # usually gone with its peer already
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _ip("link", "show", self.root_link, check=False).returncode == 0:
            time.sleep(0.1)
        if _ip("link", "show", self.root_link, check=False).returncode == 0:
            left.append(f"link {self.root_link}")
        return left

    def leftovers(self) -> list[str]:
        """Our namespaces and links still present (after close: none)."""
        names = _ip("netns", "list", check=False).stdout
        links = _ip("-br", "link", check=False).stdout
        found = [line.split()[0] for line in names.splitlines() if line.startswith(self.prefix)]
        found += [line.split()[0].split("@")[0] for line in links.splitlines() if line.startswith(self.prefix)]
        return found
