"""Bring the SMART stack up and down: embedded Tango database, Sardana, the four servers.

The launcher is what `make demo`, the system-test fixtures and a beamline user all
use, so it is strict about what it owns: every process it starts is recorded with
its PID and command line in ``<run>/pids.json`` and stopped by that PID, never by
name, so it cannot kill a facility's own servers. Logs go to ``<run>/logs/``.

Two modes:
- embedded (default): a fresh ``PyDatabaseds`` on a free loopback port with its sqlite
  file in the run directory, the Sardana configuration loaded with ``sardana-config``,
  Pool and MacroServer, and our servers;
- facility (``facility=True``): the ``TANGO_HOST`` of the environment is used as it is (a
  facility's MariaDB-backed DataBaseds); our servers are registered and started, and, when the
  configuration has a ``sardana:`` section, that Sardana configuration is loaded into the
  facility database with ``sardana-config`` and its Pool and MacroServer are started too.
  With ``starter=HOST`` the servers are not started by the launcher but handed to the Starter
  ``tango/admin/HOST`` with their start-up levels (clients/starter.py); `down` stops them
  through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "simulation" / "launch" / "smart.yaml"
DEFAULT_RUN_DIR = REPO / "run" / "stack"
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0
ALARM_SETTLE_S = 8.0
"""How long `up` lets a device in ALARM settle: CoordMapperDS reads the Pool's motors, which
may appear only after it started; it checks them again at most every 3 s."""


class LaunchError(RuntimeError):
    """The stack could not be brought up; the message says what to do."""


@dataclass
class ServerSpec:
    """One device server process: ``Executable/instance`` and its devices."""

    executable: str
    instance: str
    devices: dict[str, tuple[str, dict[str, Any]]]  # device name -> (class, properties)

    @property
    def name(self) -> str:
        return f"{self.executable}/{self.instance}"


@dataclass
class StackConfig:
    servers: list[ServerSpec]
    sardana_config: Path | None = None
    door: str | None = None
    sardana_servers: list[str] = field(default_factory=list)
    starter_levels: dict[str, int] = field(default_factory=dict)
    """Start-up level of each server under a Starter (1 starts first); see ``level_of``."""
    uses_beamline: bool = False
    """The configuration names ``{beamline}``: it runs the virtual beamline's simulated devices."""
    stage_motors: list[str] | None = None
    """The stage's x and y motors, named once (``stage_motors:``); see :func:`apply_stage_motors`."""

    @classmethod
    def load(cls, path: Path, places: dict[str, str]) -> StackConfig:
        """Read the launcher YAML, expanding ``{repo}``, ``{run}`` and ``{beamline}`` in strings."""
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise LaunchError(f"cannot read stack configuration {path}: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("servers"), dict):
            raise LaunchError(f"{path}: expected a mapping with a 'servers' section")
        servers = []
        for server_name, classes in raw["servers"].items():
            executable, _, instance = str(server_name).partition("/")
            if not instance or not isinstance(classes, dict):
                raise LaunchError(f"{path}: server '{server_name}' must be 'Executable/instance: {{Class: ...}}'")
            devices: dict[str, tuple[str, dict[str, Any]]] = {}
            for class_name, devs in classes.items():
                for dev_name, props in (devs or {}).items():
                    devices[str(dev_name)] = (str(class_name), _expand(props or {}, places))
            servers.append(ServerSpec(executable, instance, devices))
        motors = _stage_motors(raw.get("stage_motors"), path)
        if motors is not None:
            apply_stage_motors(servers, motors, path)
        sardana = raw.get("sardana") or {}
        sardana_file = sardana.get("config")
        sardana_path = Path(_expand(sardana_file, places)) if sardana_file else None
        levels = (raw.get("starter") or {}).get("levels") or {}
        if not isinstance(levels, dict) or not all(isinstance(v, int) and v >= 1 for v in levels.values()):
            raise LaunchError(f"{path}: 'starter: levels:' must map 'Executable/instance' to a level >= 1")
        texts = [path.read_text()]
        with contextlib.suppress(OSError):
            texts.append(sardana_path.read_text() if sardana_path else "")
        return cls(
            servers=servers,
            sardana_config=sardana_path,
            door=sardana.get("door"),
            sardana_servers=list(sardana.get("startup_order", [])),
            starter_levels={str(k): int(v) for k, v in levels.items()},
            uses_beamline=any("{beamline}" in text for text in texts),
            stage_motors=motors,
        )

    def level_of(self, server: str) -> int:
        """A server's start-up level under a Starter: the configured one, else one after the
        highest configured level (so unlisted servers start last)."""
        return self.starter_levels.get(server, max(self.starter_levels.values(), default=0) + 1)

    def device_names(self) -> list[str]:
        return [dev for spec in self.servers for dev in spec.devices]


STAGE_MOTOR_PROPERTIES = {"CameraDS": lambda x, y: {"StageMotors": [x, y]},
                          "CoordMapperDS": lambda x, y: {"MotorX": x, "MotorY": y}}
"""Where the stage motors go, per device class: CameraDS stamps their Position on every frame,
CoordMapperDS reads their Position, limits and unit; the macros get them as ``SmartMotors``."""


def _stage_motors(value: Any, path: Path) -> list[str] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) and v.strip() for v in value)):
        raise LaunchError(f"{path}: 'stage_motors' must name the x and y motors, e.g. [samx, samy]")
    return [v.strip() for v in value]


def apply_stage_motors(servers: list[ServerSpec], motors: list[str], path: Path) -> None:
    """Give the stage motors, named once in the stack YAML, to every device that needs them
    (``STAGE_MOTOR_PROPERTIES``). A device that names them itself must name the same ones: two
    names for one stage would let the camera stamp one motor and the mapper check another."""
    for spec in servers:
        for device, (class_name, props) in spec.devices.items():
            derived = STAGE_MOTOR_PROPERTIES.get(class_name, lambda x, y: {})(*motors)
            for key, value in derived.items():
                if key in props and props[key] != value:
                    raise LaunchError(f"{path}: {device} sets {key}: {props[key]} but stage_motors is {motors}; "
                                      f"remove {key} (the launcher derives it from stage_motors)")
                props[key] = value


def sardana_with_stage_motors(text: str, motors: list[str] | None) -> str:
    """The sardana-config YAML with ``SmartMotors`` (the macros' stage motors) in every
    MacroServer's environment, from ``stage_motors``; unchanged when there are none."""
    if motors is None:
        return text
    raw = yaml.safe_load(text) or {}
    for name, server in (raw.get("macro_servers") or {}).items():
        variables = server.setdefault("environment", {}).setdefault("variables", {})
        if variables.get("SmartMotors", motors) != motors:
            raise LaunchError(f"the MacroServer {name} sets SmartMotors {variables['SmartMotors']} but "
                              f"stage_motors is {motors}; remove SmartMotors from the Sardana configuration")
        variables["SmartMotors"] = list(motors)
    return yaml.safe_dump(raw, sort_keys=False)


def environments_in_database(text: str) -> list[str]:
    """The Tango database objects that hold the MacroServers' environments of a sardana-config
    YAML (``environment_db: property``: free properties of the MacroServer's alias, or of the
    object named after ``property:``); none for a MacroServer that keeps a shelve file."""
    names = []
    for server in ((yaml.safe_load(text) or {}).get("macro_servers") or {}).values():
        where = str(server.get("environment_db") or "")
        if where == "property":
            names.append(str(server.get("tango_alias") or server.get("tango_device")))
        elif where.startswith("property:"):
            names.append(where.split(":", 1)[1])
    return names


def clear_environments(db: Any, objects: Iterable[str]) -> None:
    """Delete every environment variable kept under these database objects: what deleting the
    shelve file did for a new stack (``Stack.stale_state``), for an environment in a facility's
    database, which outlives the stack."""
    for name in objects:
        stale = list(db.get_object_property_list(name, "*").value_string)
        if stale:
            db.delete_property(name, stale)


def _device(tango_host: str, name: str) -> Any:
    """A proxy that gives up after 3 s: a starting or stuck server must not hang the launcher."""
    from macros.smart_calls import proxy

    return proxy(f"tango://{tango_host}/{name}", 3000)


def _expand(value: Any, places: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, replacement in places.items():
            value = value.replace("{" + key + "}", replacement)
        return value
    if isinstance(value, list):
        return [_expand(v, places) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, places) for k, v in value.items()}
    return value


@dataclass
class ManagedProcess:
    name: str
    pid: int
    cmd: list[str]
    log: str
    create_time: float

    def is_alive(self) -> bool:
        """True only if the PID is still the process we started: PIDs get reused, so the
        kernel's creation time of the PID must match the one recorded at start."""
        try:
            proc = psutil.Process(self.pid)
            return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - self.create_time) < 0.01
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False


class Stack:
    """The processes of one run directory, and the operations on them."""

    def __init__(self, run_dir: Path = DEFAULT_RUN_DIR, config_path: Path = DEFAULT_CONFIG,
                 facility: bool = False, echo: bool = True, port: int = 0,
                 beamline: Path | None = None, seed: int = 0, sem_image: bool = False,
                 dsconfig: Path | None = None, starter: str | None = None, listen: str = LOOPBACK) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.config_path = Path(config_path).resolve()
        self.facility = facility
        self.echo = echo
        self.port = port
        self.beamline = Path(beamline).resolve() if beamline else self.run_dir / "beamline.json"
        self.seed = seed
        self.sem_image = sem_image
        """Render the sample's SEM image for working by hand (`smart up`); ~15 s, so opt-in."""
        self.listen = listen
        """Address our servers listen on and publish (``-ORBendPoint giop:tcp:<listen>:0``): loopback
        for the embedded stack; a facility gives the host's own address so that other hosts reach them."""
        if listen != LOOPBACK and not facility:
            raise LaunchError("--listen needs --facility: the embedded stack stays on loopback")
        self.starter = starter
        """Host name of the Starter (``tango/admin/<starter>``) that runs our servers (facility mode)."""
        if starter and not facility:
            raise LaunchError("--starter needs --facility: a Starter belongs to a facility's Tango database")
        self.starter_file = self.run_dir / "starter.json"
        self._began = time.monotonic()
        self.dsconfig = Path(dsconfig).resolve() if dsconfig else None
        """A dsconfig JSON file whose servers replace the YAML's `servers:` (registered with
        dsconfig's planner, see clients/dsconfig_io.py); Sardana still comes from the YAML."""
        self._dsconfig_data: dict[str, Any] | None = None
        self.log_dir = self.run_dir / "logs"
        self.pid_file = self.run_dir / "pids.json"
        self.state_file = self.run_dir / "stack.json"
        self.processes: dict[str, ManagedProcess] = {}
        self._popen: dict[str, subprocess.Popen[bytes]] = {}
        self.tango_host: str | None = None

    # ----------------------------------------------------------------- helpers
    def say(self, text: str) -> None:
        if self.echo:
            print(text, flush=True)

    def env(self) -> dict[str, str]:
        env = os.environ.copy()
        if self.tango_host:
            env["TANGO_HOST"] = self.tango_host
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _save_pids(self) -> None:
        data = {name: vars(proc) for name, proc in self.processes.items()}
        self.pid_file.write_text(json.dumps(data, indent=1))

    def _load_pids(self) -> dict[str, ManagedProcess]:
        try:
            data = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return {}
        return {name: ManagedProcess(**entry) for name, entry in data.items()}

    def _start(self, name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> ManagedProcess:
        log_path = self.log_dir / (name.replace("/", "-") + ".log")
        env = self.env()
        env.update(extra_env or {})
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.run_dir, start_new_session=True)
        proc = ManagedProcess(name, popen.pid, cmd, str(log_path), psutil.Process(popen.pid).create_time())
        self.processes[name] = proc
        self._popen[name] = popen
        self._save_pids()
        return proc

    def _fail(self, message: str, culprit: str | None = None) -> LaunchError:
        """Print the culprit's log tail, stop everything started, build the error."""
        if culprit and culprit in self.processes:
            tail = _tail(Path(self.processes[culprit].log), 25)
            self.say(f"--- last lines of {self.processes[culprit].log} ---\n{tail}\n---")
        self.down(quiet=True)
        return LaunchError(message)

    # --------------------------------------------------------------------- up
    def up(self) -> str:
        """Start the stack; returns TANGO_HOST. Raises LaunchError, leaving nothing running."""
        started = self._began = time.monotonic()
        self._prepare_run_dir()
        config = StackConfig.load(self.config_path, self.places())
        if self.dsconfig:
            from clients.dsconfig_io import DsconfigError, load, server_specs

            try:
                self._dsconfig_data = load(self.dsconfig)
            except DsconfigError as exc:
                raise LaunchError(str(exc)) from None
            config.servers = server_specs(self._dsconfig_data)
        try:
            self._bring_up(config)
        except BaseException:
            self.down(quiet=True)  # whatever failed, nothing this call started stays behind
            raise
        elapsed = time.monotonic() - started
        states = self._settled_states(config.device_names())
        session = self._prepare_session(config)
        self.state_file.write_text(json.dumps({
            "tango_host": self.tango_host, "facility": self.facility, "starter": self.starter,
            "door": config.door, "devices": config.device_names(),
            "startup_s": round(elapsed, 2), "states_after_up": states, "session": session}, indent=1))
        env_lines = [f"export TANGO_HOST={self.tango_host}"]
        if "ipython_dir" in session:
            env_lines.append(f"export IPYTHONDIR={session['ipython_dir']}")
        (self.run_dir / "env.sh").write_text("\n".join(env_lines) + "\n")
        self.say(self.status_text())
        self.say(f"stack up in {elapsed:.1f} s (database to all devices answering); "
                 f"logs in {self.log_dir}; `source {self.run_dir / 'env.sh'}` to use it")
        for line in session_text(session):
            self.say(line)
        return self.tango_host

    def _bring_up(self, config: StackConfig) -> None:
        if self.facility:
            self.tango_host = os.environ.get("TANGO_HOST")
            if not self.tango_host:
                raise LaunchError("facility mode needs TANGO_HOST set to your Tango database (host:port)")
            if not self._database_answers(self.tango_host):
                raise LaunchError(f"the Tango database at TANGO_HOST={self.tango_host} does not answer; "
                                  "check TANGO_HOST and that DataBaseds runs")
            if config.uses_beamline:
                self._ensure_beamline()
        else:
            self._ensure_beamline()
            self.tango_host = self._start_database()
        starter = self._starter_client() if self.starter else None
        self.say(f"Tango database at {self.tango_host}; starting the servers")
        self._register_servers(config)
        if config.sardana_config:
            self._load_sardana(config)
        if starter is not None:
            self._hand_to_starter(config, starter)
            return
        for spec in config.servers:
            self._start(spec.name, _server_command(spec.executable, spec.instance, self.listen))
        for server in config.sardana_servers:
            self._start(server, [*_server_command(*server.split("/"), self.listen), *self._sardana_log_file(server)])
            self._wait_devices(self._devices_of_server(server), server)
        for spec in config.servers:
            self._wait_devices(list(spec.devices), spec.name)

    def _sardana_log_file(self, server: str) -> list[str]:
        """Sardana's own log file in this run's log folder, at info level. Its default is
        ``/tmp/tango-<user>/<Server>/<instance>/log.txt`` at debug level: every stack on the
        machine whose instance has the same name (two test tiers, a demo beside a night) would
        write, and rotate away, one file."""
        return ["--log-file-name", str(self.log_dir / f"{server.replace('/', '-')}.sardana.log"),
                "--log-file-level", "info"]

    def _starter_client(self) -> Any:
        """The Starter that is to run our servers, once it answers and looks in ``<run>/bin``;
        checked before anything is registered, so a refusal leaves the database as it was."""
        from clients.starter import StarterClient, StarterError

        assert self.starter and self.tango_host
        try:
            starter = StarterClient(self.tango_host, self.starter)
            starter.check_reachable()
            starter.check_path(self.run_dir / "bin")
        except StarterError as exc:
            raise LaunchError(str(exc)) from None
        return starter

    def _hand_to_starter(self, config: StackConfig, starter: Any) -> None:
        """Register every server of the configuration under the Starter with its level, then
        start them through it level by level, each level answering before the next starts."""
        from clients.starter import StarterError, write_wrappers

        assert self.tango_host
        servers = [spec.name for spec in config.servers] + list(config.sardana_servers)
        write_wrappers(self.run_dir / "bin", self.run_dir, self.tango_host,
                       {name.split("/")[0]: _server_command(name.split("/")[0], '"$@"', self.listen)
                        for name in servers})
        levels = {server: config.level_of(server) for server in servers}
        try:
            starter.register(levels.items())
            self.starter_file.write_text(json.dumps({"device": starter.device_name, "host": self.starter,
                                                     "tango_host": self.tango_host, "levels": levels}, indent=1))
            for level in sorted(set(levels.values())):
                batch = [s for s in servers if levels[s] == level]
                self.say(f"level {level}: {', '.join(batch)} started by {starter.device_name}")
                for server in batch:
                    starter.start(server)
                for server in batch:
                    try:
                        self._wait_devices(self._devices_of_server(server), server)
                    except LaunchError as exc:
                        raise LaunchError(
                            f"{exc}. The Starter tells servers apart by executable and instance name on "
                            f"its host: a `{server.replace('/', ' ')}` already running on {self.starter} "
                            "(another stack) makes it skip the start; its log is in the Starter's "
                            "LogFileHome") from None
                self.say(f"level {level} answering, {time.monotonic() - self._began:.1f} s after `up` began")
        except StarterError as exc:
            raise self._fail(str(exc)) from None

    def _settled_states(self, devices: list[str]) -> dict[str, str]:
        """Device states once the ALARMs caused by start order have cleared: CoordMapperDS reads
        the Pool's motors, which may appear only after it started. Waits up to ALARM_SETTLE_S;
        an ALARM that stays is reported (status, stack.json), not treated as a failure."""
        import tango

        def state_of(dev: str) -> str:
            try:
                return str(_device(self.tango_host, dev).state())
            except tango.DevFailed:
                return "UNREACHABLE"

        deadline = time.monotonic() + ALARM_SETTLE_S
        states = {dev: state_of(dev) for dev in devices}
        while time.monotonic() < deadline and any(v in ("ALARM", "UNREACHABLE") for v in states.values()):
            time.sleep(0.5)
            states.update({dev: state_of(dev) for dev, v in states.items() if v in ("ALARM", "UNREACHABLE")})
        return states

    def _prepare_session(self, config: StackConfig) -> dict[str, str]:
        """What a user needs to run the workflow by hand on the virtual beamline: the SEM image
        of its sample, the scan folder (ScanDir of the Sardana configuration) and a Spock profile
        bound to this stack's Door. Everything is written into the run directory."""
        session: dict[str, str] = {}
        if self.sem_image and self.beamline.exists():
            session["sem_image"] = str(self._ensure_sem_image())
        if config.sardana_config:
            scans = self.run_dir / "scans"
            scans.mkdir(exist_ok=True)
            session["scan_dir"] = str(scans)
        if config.door:
            session["ipython_dir"] = str(write_spock_profile(self.run_dir / "ipython", SPOCK_PROFILE,
                                                             self.tango_host or "", config.door,
                                                             self._macroserver_of(config.door)))
            session["spock_profile"] = SPOCK_PROFILE
        return session

    def _ensure_sem_image(self) -> Path:
        """The lab SEM image of the virtual beamline's sample, next to its beamline file
        (``sem.tif``), rendered unless a newer one is there (the demo writes its own)."""
        sem = self.beamline.parent / "sem.tif"
        if sem.exists() and sem.stat().st_mtime >= self.beamline.stat().st_mtime:
            return sem
        from simulation.config import load_beamline
        from simulation.sem import render_sem
        from simulation.tiffio import write_tiff

        beamline = load_beamline(self.beamline)
        image = render_sem(beamline.sample, beamline.sem, seed=beamline.seed)
        write_tiff(sem, image.image, beamline.sem.pixel_size_um, {"modality": "SEM", "seed": beamline.seed})
        return sem

    def _macroserver_of(self, door: str) -> str:
        """The MacroServer device in the Door's server (Spock's profile names both)."""
        db = self._database()
        server = db.get_device_info(door).ds_full_name
        for class_name in db.get_server_class_list(server):
            if class_name == "MacroServer":
                names = list(db.get_device_name(server, class_name))
                if names:
                    return names[0]
        raise LaunchError(f"the Door {door} runs in {server}, which has no MacroServer device")

    def places(self) -> dict[str, str]:
        return {"repo": str(REPO), "run": str(self.run_dir), "beamline": str(self.beamline)}

    def _ensure_beamline(self) -> None:
        """The virtual beamline file the simulated devices share; made from the seed if absent."""
        if self.beamline.exists():
            return
        from simulation.config import default_beamline

        default_beamline(self.seed).save(self.beamline)
        self.say(f"virtual beamline with seed {self.seed} written to {self.beamline}")

    def _prepare_run_dir(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        previous = self._load_pids()
        alive = [p for p in previous.values() if p.is_alive()]
        if alive:
            names = ", ".join(f"{p.name} (pid {p.pid})" for p in alive)
            raise LaunchError(f"a stack is already running from {self.run_dir}: {names}. "
                              "Run `smart down` first (or use another --run-dir).")
        handed = self._starter_state()
        if handed:
            raise LaunchError(f"servers of {self.run_dir} were handed to the Starter {handed.get('device')} "
                              f"({', '.join(handed.get('levels', {}))}); run `smart down` first")
        if previous:
            self.say(f"removing stale run state of a stack that is no longer running in {self.run_dir}")
        for stale in self.stale_state():
            stale.unlink(missing_ok=True)

    def stale_state(self) -> list[Path]:
        """What a new stack in this run directory starts without: the process table, the Tango
        database and a MacroServer environment kept as a shelve (``macroserver.env`` plus whatever
        suffixes the dbm module adds, ``.dat``/``.dir``/``.bak`` for dbm.dumb). A stale
        environment would, e.g., hand a new run the last run's ``SmartScanProgress``: the same
        particle list counted as done, nothing scanned. (The project's own configuration keeps
        the environment in the Tango database; ``_load_sardana`` clears it there.) The night
        queue's file (``queue/``) is not stale state: it survives a restart by design (docs/queue.md)."""
        return [self.pid_file, self.state_file, self.run_dir / "env.sh", self.run_dir / "tango.db",
                *sorted(self.run_dir.glob("macroserver.env*"))]

    def _start_database(self) -> str:
        if self.port and not _port_is_free(self.port):
            raise LaunchError(f"port {self.port} on {LOOPBACK} is already in use; choose another --port "
                              "or leave it out to let the launcher pick a free one")
        log_path = self.log_dir / "PyDatabaseds.log"
        log_path.unlink(missing_ok=True)
        proc = self._start("PyDatabaseds", [_executable("PyDatabaseds"), "--port", str(self.port), "--host", LOOPBACK,
                                            "--print-host-port", "2"],
                           {"PYTANGO_DATABASE_NAME": str(self.run_dir / "tango.db")})
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        pattern = re.compile(r"host=([\d.]+), port=(\d+)")
        while time.monotonic() < deadline:
            match = pattern.search(log_path.read_text(errors="replace"))
            if match:
                host = f"{match.group(1)}:{match.group(2)}"
                if self._database_answers(host):
                    # a restart (Stack.restart) must come back on this port: clients know only it
                    proc.cmd = [*proc.cmd[:proc.cmd.index("--port") + 1], match.group(2),
                                *proc.cmd[proc.cmd.index("--port") + 2:]]
                    self._save_pids()
                    return host
            if self._popen["PyDatabaseds"].poll() is not None:
                raise self._fail("the Tango database (PyDatabaseds) exited during start-up", "PyDatabaseds")
            time.sleep(0.1)
        raise self._fail(f"the Tango database did not answer within {STARTUP_TIMEOUT_S:.0f} s "
                         f"(pid {proc.pid})", "PyDatabaseds")

    @staticmethod
    def _database_answers(host: str) -> bool:
        import tango

        try:
            tango.Database(*host.split(":")).get_info()
            return True
        except tango.DevFailed:
            return False

    def _database(self) -> Any:
        import tango

        assert self.tango_host
        return tango.Database(*self.tango_host.split(":"))

    def _register_servers(self, config: StackConfig) -> None:
        db = self._database()
        if self._dsconfig_data is not None:
            from clients.dsconfig_io import apply

            calls = apply(db, self._dsconfig_data)
            self.say(f"{self.dsconfig} applied with dsconfig: {len(calls)} database call(s)")
            return
        register_servers(db, config.servers)

    def _load_sardana(self, config: StackConfig) -> None:
        assert config.sardana_config
        try:
            template = config.sardana_config.read_text()
        except OSError as exc:
            raise self._fail(f"cannot read the Sardana configuration {config.sardana_config}: {exc}") from None
        rendered = self.run_dir / "sardana.yaml"
        try:
            text = sardana_with_stage_motors(_expand(template, self.places()), config.stage_motors)
        except LaunchError as exc:
            raise self._fail(str(exc)) from None
        rendered.write_text(text)
        clear_environments(self._database(), environments_in_database(text))
        log_path = self.log_dir / "sardana-config.log"
        cmd = [_executable("sardana-config"), "load", "--write", "--environment", str(rendered)]
        with open(log_path, "ab") as log:
            result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env(), check=False)
        if result.returncode != 0:
            self.say(f"--- {log_path} ---\n{_tail(log_path, 25)}\n---")
            raise self._fail(f"sardana-config could not load {config.sardana_config} "
                             f"(exit {result.returncode}); fix the file and retry")
        self.say(f"Sardana configuration loaded with sardana-config, "
                 f"{time.monotonic() - self._began:.1f} s after `up` began")

    def _devices_of_server(self, server: str) -> list[str]:
        db = self._database()
        names: list[str] = []
        for class_name in db.get_server_class_list(server):
            names.extend(db.get_device_name(server, class_name))
        return [n for n in names if not n.lower().startswith("dserver/")]

    def _wait_devices(self, devices: Iterable[str], server: str) -> None:
        import tango

        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        pending = list(devices)
        while pending:
            if self._popen.get(server) is not None and self._popen[server].poll() is not None:
                raise self._fail(f"server {server} exited during start-up "
                                 f"(exit code {self._popen[server].returncode})", server)
            try:
                _device(self.tango_host, pending[0]).state()
                pending.pop(0)
                continue
            except tango.DevFailed:
                pass
            if time.monotonic() > deadline:
                raise self._fail(f"device {pending[0]} of {server} did not answer within "
                                 f"{STARTUP_TIMEOUT_S:.0f} s", server)
            time.sleep(0.2)

    def restart(self, server: str, kill: bool = False) -> ManagedProcess:
        """Stop one server of this stack (SIGKILL when ``kill``: a crash) and start it again.

        The database (``PyDatabaseds``) comes back on the same port with the same sqlite file,
        so the servers and clients that know ``TANGO_HOST`` find it again."""
        if not self.processes:
            # a Stack made afresh for this run directory (e.g. by `smart` in another shell)
            # must keep every other process in pids.json, or `down` would lose them
            self.processes = self._load_pids()
        old = self.processes.get(server)
        if old is None:
            raise LaunchError(f"{server} was not started by this stack; started: {', '.join(self.processes)}")
        _signal(old.pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        while old.is_alive() and time.monotonic() < deadline:
            self._reap(server)
            time.sleep(0.05)
        if old.is_alive():
            _signal(old.pid, signal.SIGKILL)
        if server == "PyDatabaseds":
            proc = self._start(server, old.cmd, {"PYTANGO_DATABASE_NAME": str(self.run_dir / "tango.db")})
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while not (self.tango_host and self._database_answers(self.tango_host)):
                if self._popen[server].poll() is not None or time.monotonic() > deadline:
                    raise LaunchError(f"the Tango database did not come back on {self.tango_host} "
                                      f"(pid {proc.pid}); see {proc.log}")
                time.sleep(0.1)
            return proc
        proc = self._start(server, old.cmd)
        self._wait_devices(self._devices_of_server(server), server)
        return proc

    # ------------------------------------------------------------------ status
    def running(self) -> list[ManagedProcess]:
        """The processes of this run directory that are still alive (PID and start time match)."""
        return [p for p in (self.processes or self._load_pids()).values() if p.is_alive()]

    def running_names(self) -> list[str]:
        """Names of the processes of this run directory that are alive (e.g. ``Pool/smart``)."""
        return [p.name for p in self.running()]

    def _starter_state(self) -> dict[str, Any]:
        """What `up` handed to a Starter (``starter.json``): its device, host and our servers' levels."""
        try:
            return json.loads(self.starter_file.read_text())
        except (OSError, ValueError):
            return {}

    def status_text(self) -> str:
        """Processes and device States; one line when nothing of this run directory runs.

        After `down` (or before any `up`) the devices are not asked at all: each would only
        answer a CORBA TRANSIENT error after its timeout, which says nothing more."""
        import tango

        handed = self._starter_state()
        if not self.running() and not handed:
            return f"no stack running in {self.run_dir} (`make up` or `smart up` starts one)"
        lines = []
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            state = {"tango_host": self.tango_host, "devices": []}
        host = state.get("tango_host") or self.tango_host
        lines.append(f"TANGO_HOST={host}")
        for proc in (self.processes or self._load_pids()).values():
            lines.append(f"  process {proc.name:28s} pid {proc.pid:<8d} "
                         f"{'running' if proc.is_alive() else 'NOT RUNNING'}")
        if handed:
            lines.append(self._starter_status(handed))
        for dev in state.get("devices", []):
            try:
                proxy = _device(host, dev)
                lines.append(f"  device  {dev:28s} {proxy.state()}  {proxy.status().splitlines()[0]}")
            except tango.DevFailed as exc:
                lines.append(f"  device  {dev:28s} UNREACHABLE ({exc.args[0].desc.strip()[:80]})")
        return "\n".join(lines)

    @staticmethod
    def _starter_status(handed: dict[str, Any]) -> str:
        """One line per server handed to a Starter: its level and whether the Starter sees it running."""
        import tango

        from clients.starter import StarterClient

        try:
            running = set(StarterClient(handed["tango_host"], handed["host"]).running())
        except tango.DevFailed as exc:
            return f"  starter {handed['device']:28s} UNREACHABLE ({exc.args[0].desc.strip()[:80]})"
        return "\n".join(f"  starter {handed['device']} level {level}: {server:20s} "
                         f"{'running' if server in running else 'NOT RUNNING'}"
                         for server, level in sorted(handed["levels"].items(), key=lambda item: item[1]))

    # -------------------------------------------------------------------- down
    def down(self, quiet: bool = False, timeout_s: float = 10.0) -> list[str]:
        """Stop every process this run directory started, newest first, and every server it
        handed to a Starter (through that Starter, highest level first); returns the survivors."""
        survivors = self._stop_through_starter(quiet)
        processes = {**self._load_pids(), **self.processes}
        running = [p for p in reversed(list(processes.values())) if p.is_alive()]
        for proc in running:
            _signal(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in running:
            while proc.is_alive() and time.monotonic() < deadline:
                self._reap(proc.name)
                time.sleep(0.05)
            if proc.is_alive():
                _signal(proc.pid, signal.SIGKILL)
        for proc in running:
            for _ in range(40):
                self._reap(proc.name)
                if not proc.is_alive():
                    break
                time.sleep(0.05)
            else:
                survivors.append(f"{proc.name} (pid {proc.pid})")
        for name in processes:  # also those that had died before: no zombie left behind
            self._reap(name)
        if not quiet:
            stopped = len(running) - sum("(pid" in text for text in survivors)
            self.say(f"stopped {stopped} process(es) of {self.run_dir}"
                     + (f"; still running: {', '.join(survivors)}" if survivors else ""))
        self.pid_file.unlink(missing_ok=True)
        self.processes.clear()
        return survivors

    def _stop_through_starter(self, quiet: bool) -> list[str]:
        """DevStop, through their Starter, the servers `up` handed to it (highest level first)."""
        import tango

        from clients.starter import StarterClient

        handed = self._starter_state()
        if not handed:
            return []
        host = handed["tango_host"]
        levels: dict[str, int] = handed["levels"]
        order = sorted(levels, key=lambda server: -levels[server])
        try:
            left = StarterClient(host, handed["host"]).stop(order, say=lambda text: None if quiet else self.say(text))
        except tango.DevFailed as exc:
            return [f"{s} (Starter {handed['device']} unreachable: {exc.args[0].desc.strip()[:80]})" for s in order]
        if not quiet:
            self.say(f"stopped {len(order) - len(left)} server(s) through {handed['device']}")
        if not left:
            self.starter_file.unlink(missing_ok=True)
        return [f"{s} (still running under {handed['device']})" for s in left]

    def _reap(self, name: str) -> None:
        popen = self._popen.get(name)
        if popen is not None:
            popen.poll()


SPOCK_PROFILE = "smart"
SPOCK_PROFILE_TEMPLATE = '''"""Spock profile for the SMART stack at {tango_host}, written by `smart up`."""
# Spock reads the next two lines to decide whether the profile needs an upgrade:
# spock_creation_version = {version}
# door_name = {door}

import itango  # noqa: F401 - Spock's profile template imports it too

import sardana.spock.genutils  # noqa: F401
from sardana.spock.config import Spock  # noqa: F401

config = get_config()  # noqa: F821 - provided by IPython when it reads the profile
config.Spock.macro_server_name = "{macro_server}"
config.Spock.door_name = "{door}"

load_subconfig("ipython_config.py", profile="default")  # noqa: F821
sardana.spock.load_config(config)
'''


def write_spock_profile(ipython_dir: Path, profile: str, tango_host: str, door: str, macro_server: str) -> Path:
    """Spock's own profile file (what `spock` asks for interactively on first start), bound to
    this stack's Door, in ``ipython_dir``; returns ``ipython_dir``. With IPYTHONDIR pointing
    there, ``spock --profile=smart`` starts without a question."""
    from sardana import release

    folder = Path(ipython_dir) / f"profile_{profile}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ipython_config.py").write_text(SPOCK_PROFILE_TEMPLATE.format(
        tango_host=tango_host, version=release.version, door=f"tango://{tango_host}/{door}",
        macro_server=f"tango://{tango_host}/{macro_server}"))
    return Path(ipython_dir)


def session_text(session: dict[str, str]) -> list[str]:
    """What `smart up` prepared for working by hand, and how to start (README: Run it yourself)."""
    lines = []
    if "sem_image" in session:
        lines.append(f"SEM image of the sample: {session['sem_image']}")
    if "scan_dir" in session:
        lines.append(f"scans are stored in:     {session['scan_dir']} (ScanDir; ScanFile smart_scans.h5)")
    if "ipython_dir" in session:
        lines.append(f"Spock: source the env.sh above, then `{Path(sys.executable).parent / 'spock'} "
                     f"--profile={session['spock_profile']}`")
    return lines


def _port_is_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def ended_like_ctrl_c() -> Iterator[None]:
    """Inside: SIGTERM (``kill``, a batch system, a service manager) and SIGHUP (the terminal
    closed) end the run as Ctrl-C does, so every ``finally`` runs and the stack a run brought up
    is taken down. Python's default for them is to die on the spot: a killed ``make night`` left
    all ten servers of its stack running with no one to stop them. The old handlers come back on
    the way out. Main thread only (Python's rule for signal handlers)."""
    def leave(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    ends = (signal.SIGTERM, signal.SIGHUP)
    before = {sig: signal.signal(sig, leave) for sig in ends}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _server_command(executable: str, instance: str, listen: str = LOOPBACK) -> list[str]:
    """A device server started by the launcher listens on ``listen`` only (loopback by default)."""
    return [_executable(executable), instance, "-ORBendPoint", f"giop:tcp:{listen}:0"]


def _executable(name: str) -> str:
    """Prefer the executable next to this Python (the project's venv) over $PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def register_servers(db: Any, servers: Iterable[ServerSpec]) -> None:
    """Add the devices of ``servers`` to the Tango database ``db`` with their properties (the
    YAML's ``servers:`` section; the launcher and the several-hosts test register alike)."""
    import tango

    for spec in servers:
        for dev_name, (class_name, props) in spec.devices.items():
            info = tango.DbDevInfo()
            info.name, info._class, info.server = dev_name, class_name, spec.name
            db.add_device(info)
            if props:
                db.put_device_property(dev_name, {k: _as_property(v) for k, v in props.items()})


def _as_property(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, (dict,)):
        return [json.dumps(value)]
    return [str(value)]


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
