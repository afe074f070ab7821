"""The Tango database a facility runs, brought up privately for a test: MariaDB + cppTango DataBaseds.

A facility's Tango database is cppTango's ``DataBaseds`` on a MariaDB (MySQL) schema, not the
embedded sqlite ``PyDatabaseds`` our own stack starts. This module starts both from the Debian
packages (``make facility-deps`` installs them) without touching any system service or global
configuration:

- MariaDB with ``--no-defaults`` (no /etc/mysql), its data directory, socket and PID file in a
  directory of the caller's (a pytest tmp dir), on a free port of ``bind`` (loopback by default);
- the Tango schema of Debian's ``tango-db`` package (what its dbconfig-common install runs) in a
  database ``tango`` with its own ``tango`` user;
- ``/usr/lib/tango/DataBaseds 2`` (device ``sys/database/2``) on a free port of ``bind``.

Every process is started with ``subprocess.Popen`` and stopped by its PID (SIGTERM, then SIGKILL),
checked against its start time so a reused PID is never signalled. ``prefix`` runs every command
under another (e.g. ``["ip", "netns", "exec", "db"]``): the several-hosts test puts the database
in its own network namespace with the same class.

Usage::

    with ProductionDatabase(tmp_path / "db") as db:   # db.tango_host == "127.0.0.1:PORT"
        ...
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

DATABASEDS = Path("/usr/lib/tango/DataBaseds")
STARTER = Path("/usr/lib/tango/Starter")
TANGO_DB_SCHEMA = Path("/usr/share/dbconfig-common/data/tango-db/install/mysql")
REQUIRED_PACKAGES = ("mariadb-server", "mariadb-client", "tango-db", "tango-starter")
FACILITY_TIMINGS: dict[str, float] = {}
"""Start-up times the facility tests measured (printed at the end of `make test-facility`)."""
FACILITY_VERSIONS: dict[str, str] = {}
"""The versions combined (printed with the times; docs/deployment.md quotes both)."""
START_TIMEOUT_S = 120.0
"""Generous: a loaded 2-core machine took ~25 s to initialise MariaDB's system tables."""


class FacilityToolsMissing(RuntimeError):
    """MariaDB or the Tango packages are not installed; the message says how to install them."""


def missing_tools() -> list[str]:
    """The Debian packages of the production database that are not installed (empty when ready)."""
    missing = []
    for pkg in REQUIRED_PACKAGES:
        result = subprocess.run(["dpkg", "-s", pkg], capture_output=True, check=False)
        if result.returncode != 0:
            missing.append(pkg)
    return missing


def free_port(bind: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel picks it; a race is possible but harmless:
    the server then fails to bind and the start-up reports it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((bind, 0))
        return int(probe.getsockname()[1])


@dataclass
class OwnedProcess:
    """A process this harness started; ``alive`` is true only while the PID is still that process."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    create_time: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        self.popen.poll()
        try:
            proc = psutil.Process(self.pid)
            return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - self.create_time) < 0.01
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, wait, then SIGKILL; always reaps."""
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            if not self.alive():
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            deadline = time.monotonic() + wait_s
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


def start_process(name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> OwnedProcess:
    """Start ``cmd`` in its own session with stdout/stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                 start_new_session=True)
    try:
        created = psutil.Process(popen.pid).create_time()
    except psutil.NoSuchProcess:
        created = 0.0
    return OwnedProcess(name, popen, log, created)


def wait_for(check: Any, what: str, proc: OwnedProcess | None = None, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll ``check()`` until true; fail early with the log tail if ``proc`` died."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} (pid {proc.pid}) exited while waiting for {what}; "
                               f"last lines of {proc.log}:\n{tail(proc.log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout_s:.0f} s" +
                               (f"; last lines of {proc.log}:\n{tail(proc.log)}" if proc else ""))
        time.sleep(0.2)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@dataclass
class ProductionDatabase:
    """A private MariaDB + Debian tango-db schema + cppTango DataBaseds, owned by PID."""

    root: Path
    bind: str = "127.0.0.1"
    prefix: list[str] = field(default_factory=list)
    mysql_port: int = 0
    tango_port: int = 0
    password: str = field(default_factory=lambda: secrets.token_hex(8))
    timings_s: dict[str, float] = field(default_factory=dict)
    processes: list[OwnedProcess] = field(default_factory=list)

    @property
    def tango_host(self) -> str:
        return f"{self.bind}:{self.tango_port}"

    @property
    def socket_path(self) -> Path:
        return self.root / "mysql.sock"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    # ------------------------------------------------------------------ start
    def start(self) -> str:
        """Bring MariaDB and DataBaseds up; returns TANGO_HOST. On failure stops what it started."""
        missing = missing_tools()
        if missing:
            raise FacilityToolsMissing(f"not installed: {' '.join(missing)}; run `make facility-deps` "
                                       "(apt, as root) first")
        self.root = Path(self.root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            began = time.monotonic()
            self._start_mariadb()
            self.timings_s["mariadb"] = time.monotonic() - began
            mark = time.monotonic()
            self._load_schema()
            self.timings_s["schema"] = time.monotonic() - mark
            mark = time.monotonic()
            self._start_databaseds()
            self.timings_s["databaseds"] = time.monotonic() - mark
            self.timings_s["total"] = time.monotonic() - began
        except BaseException:
            self.stop()
            raise
        return self.tango_host

    def _start_mariadb(self) -> None:
        data = self.root / "data"
        if not (data / "mysql").is_dir():
            result = subprocess.run([*self.prefix, "mariadb-install-db", "--no-defaults", "--user=root",
                                     f"--datadir={data}", "--auth-root-authentication-method=normal",
                                     "--skip-test-db"],
                                    capture_output=True, text=True, check=False)
            (self.log_dir).mkdir(parents=True, exist_ok=True)
            (self.log_dir / "mariadb-install-db.log").write_text(result.stdout + result.stderr)
            if result.returncode != 0:
                raise RuntimeError(f"mariadb-install-db failed (exit {result.returncode}):\n"
                                   f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
        self.mysql_port = self.mysql_port or free_port(self.bind)
        # --collation-server: without it MariaDB 10.11 refuses latin1 (its default collation is utf8mb4's)
        cmd = [*self.prefix, "mariadbd", "--no-defaults", "--user=root", f"--datadir={data}",
               f"--socket={self.socket_path}", f"--port={self.mysql_port}", f"--bind-address={self.bind}",
               f"--pid-file={self.root / 'mariadb.pid'}", "--skip-log-bin",
               "--sql-mode=NO_ZERO_IN_DATE,NO_ENGINE_SUBSTITUTION",
               "--character-set-server=latin1", "--collation-server=latin1_swedish_ci"]
        proc = start_process("mariadbd", cmd, self.log_dir / "mariadbd.log")
        self.processes.append(proc)
        wait_for(lambda: self._sql("SELECT 1", check=False).returncode == 0, "MariaDB answering", proc)

    def _sql(self, statements: str, database: str = "", check: bool = True,
             stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [*self.prefix, "mariadb", "--no-defaults", f"--socket={self.socket_path}", "-uroot"]
        if database:
            cmd.append(database)
        if stdin is None:
            cmd += ["-e", statements]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        else:
            with open(stdin) as source:
                result = subprocess.run(cmd, stdin=source, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"SQL failed ({' '.join(cmd[:6])} ...): {result.stderr.strip()}")
        return result

    def sql(self, query: str) -> list[tuple[str, ...]]:
        """Rows of a query on the ``tango`` schema, as strings (what the facility's DBA would see)."""
        result = self._sql(query, database="tango")
        return [tuple(line.split("\t")) for line in result.stdout.splitlines()[1:]]

    def _load_schema(self) -> None:
        """Debian's tango-db schema, as its dbconfig-common installer loads it, plus the user
        DataBaseds connects as (from 127.0.0.1 over TCP and from localhost)."""
        exists = self._sql("SHOW DATABASES LIKE 'tango'").stdout.strip()
        if exists:
            return
        users = " ".join(f"CREATE USER 'tango'@'{host}' IDENTIFIED BY '{self.password}'; "
                         f"GRANT ALL PRIVILEGES ON tango.* TO 'tango'@'{host}';"
                         for host in ("localhost", "127.0.0.1", "%"))
        self._sql(f"CREATE DATABASE tango; {users} FLUSH PRIVILEGES;")
        self._sql("", database="tango", stdin=TANGO_DB_SCHEMA)

    def _start_databaseds(self) -> None:
        import tango

        self.tango_port = self.tango_port or free_port(self.bind)
        env = {**os.environ, "MYSQL_USER": "tango", "MYSQL_PASSWORD": self.password,
               "MYSQL_HOST": f"{self.bind}:{self.mysql_port}", "MYSQL_DATABASE": "tango",
               "TANGO_HOST": self.tango_host}
        cmd = [*self.prefix, str(DATABASEDS), "2", "-ORBendPoint", f"giop:tcp:{self.tango_host}"]
        proc = start_process("DataBaseds", cmd, self.log_dir / "DataBaseds.log", env=env, cwd=self.root)
        self.processes.append(proc)

        def answers() -> bool:
            if "Ready to accept request" not in proc.log.read_text(errors="replace"):
                return False
            try:
                tango.Database(self.bind, self.tango_port).get_info()
                return True
            except tango.DevFailed:
                return False

        wait_for(answers, f"DataBaseds on {self.tango_host}", proc)

    # ------------------------------------------------------------------- stop
    def stop(self) -> None:
        """Stop DataBaseds, then MariaDB, by PID (newest first)."""
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    def __enter__(self) -> ProductionDatabase:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- versions
    def versions(self) -> dict[str, str]:
        """What was combined: MariaDB, the Debian packages (DataBaseds and Starter are built on
        Debian's libtango9, i.e. cppTango 9.3), and pytango with the cppTango it bundles."""
        import tango

        out: dict[str, str] = {}
        mariadb = self._sql("SELECT VERSION()", check=False).stdout.split()
        out["MariaDB"] = mariadb[-1] if mariadb else "?"
        for pkg in ("tango-db", "tango-starter", "libtango9"):
            result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                                    text=True, check=False)
            if result.returncode == 0 and result.stdout:
                out[f"Debian {pkg}"] = result.stdout
        out["pytango"] = tango.__version__
        out["cppTango under pytango"] = tango.constants.TgLibVers
        return out


@contextlib.contextmanager
def running_production_db(root: Path) -> Iterator[ProductionDatabase]:
    """A fresh production database in ``root``, stopped by PID on exit; its start-up times and
    the versions combined go to FACILITY_TIMINGS / FACILITY_VERSIONS."""
    db = ProductionDatabase(root)
    try:
        db.start()
        FACILITY_TIMINGS.update({f"production database ({Path(root).name}): {k}": v for k, v in db.timings_s.items()})
        FACILITY_VERSIONS.update(db.versions())
        FACILITY_VERSIONS["Sardana"] = sardana_version()
        yield db
    finally:
        db.stop()


@contextlib.contextmanager
def tango_host_set(tango_host: str) -> Iterator[str]:
    """TANGO_HOST set for the block (as a beamline shell has it), restored after."""
    previous = os.environ.get("TANGO_HOST")
    os.environ["TANGO_HOST"] = tango_host
    try:
        yield tango_host
    finally:
        if previous is None:
            os.environ.pop("TANGO_HOST", None)
        else:
            os.environ["TANGO_HOST"] = previous


def sardana_version() -> str:
    from sardana import release

    return str(release.version)


@dataclass
class StarterHost:
    """Debian's Starter (``/usr/lib/tango/Starter HOST``, device ``tango/admin/HOST``) registered in
    ``tango_host`` with ``StartDsPath`` and ``LogFileHome``, started and stopped by PID.

    A facility runs one per host (from systemd); here the test is that host. Stopping the
    Starter does not stop the servers it started: `smart down` does that through it first."""

    tango_host: str
    host: str
    start_ds_path: list[Path]
    log_dir: Path
    bind: str = "127.0.0.1"
    prefix: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    """More command-line arguments, e.g. ``["-v4"]`` for Starter's trace."""
    process: OwnedProcess | None = None
    startup_s: float = 0.0

    @property
    def device(self) -> str:
        return f"tango/admin/{self.host}"

    def start(self) -> None:
        import tango

        began = time.monotonic()
        db = tango.Database(*self.tango_host.split(":"))
        info = tango.DbDevInfo()
        info.name, info._class, info.server = self.device, "Starter", f"Starter/{self.host}"
        db.add_device(info)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        db.put_device_property(self.device, {"StartDsPath": [str(p) for p in self.start_ds_path],
                                             "LogFileHome": [str(self.log_dir)]})
        env = {**os.environ, "TANGO_HOST": self.tango_host}
        cmd = [*self.prefix, str(STARTER), self.host, "-ORBendPoint", f"giop:tcp:{self.bind}:0", *self.args]
        self.process = start_process(f"Starter/{self.host}", cmd, self.log_dir / "Starter.log", env=env,
                                     cwd=self.log_dir)
        proxy = tango.DeviceProxy(f"tango://{self.tango_host}/{self.device}")

        def answers() -> bool:
            try:
                proxy.ping()
                return True
            except tango.DevFailed:
                return False

        try:
            wait_for(answers, f"Starter {self.device}", self.process)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def __enter__(self) -> StarterHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def processes_of_run_dir(run_dir: Path) -> list[psutil.Process]:
    """Processes whose environment carries ``SMART_RUN_DIR=run_dir``: what the Starter wrappers of
    that run directory started (clients/starter.py). Read as root from /proc; used to check that
    nothing stays behind, and to stop by PID whatever did."""
    wanted = str(Path(run_dir).resolve())
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("SMART_RUN_DIR") == wanted:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found
