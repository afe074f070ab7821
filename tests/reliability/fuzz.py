"""Fuzz every command and writable attribute of the four servers, and replay the hostile corpus.

Each server runs in its own process on a Tango file database (``clients.file_db_server``),
so a device that the fuzz freezes or poisons can be restarted without touching anything
else. For each target the device declares, hypothesis generates arguments; each call is
judged (:mod:`tests.reliability.outcomes`) and followed by the device's *probe*, a valid
call that must succeed. A frozen device is first given a chance to come back by itself (the
FIFO is fed, as a user closing a hung mount would), then restarted, then restarted on a fresh
database (a memorized setting may keep it broken); each of these is recorded.

hypothesis is used as a generator only (no shrinking, no example database): every example
is recorded, the campaign judges the records.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import tango
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from clients.file_db_server import run_on_file_database
from tests.reliability.corpus import SCRIPT_NAMES, Corpus
from tests.reliability.interface import CommandInfo, attribute_values, command_arguments, describe
from tests.reliability.outcomes import OK, CallRecord, Reply, judge, known_defect

SERVERS = ("CameraDS", "RegistrationDS", "ParticleDS", "CoordMapperDS")
DEVICE = {"CameraDS": "smart/camera/1", "RegistrationDS": "smart/registration/1",
          "ParticleDS": "smart/particles/1", "CoordMapperDS": "smart/coordmapper/1"}
CALL_TIMEOUT_MS = 5000
"""Client timeout of a hostile call: longer than any valid call on the fuzz's small images, shorter
than a user's patience; a call that takes longer is a hang."""
PROBE_TIMEOUT_MS = 10000


def _executable(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def _properties(server: str, corpus: Corpus) -> dict[str, Any]:
    if server == "CameraDS":
        return {"Source": f"files:{corpus.stream}"}
    return {}


class Served:
    """One server of the fuzz, on its own file database; restartable."""

    def __init__(self, server: str, corpus: Corpus, folder: Path) -> None:
        self.server, self.corpus, self.folder = server, corpus, folder
        self.device = DEVICE[server]
        self._stack = ExitStack()
        self.trl = ""
        self.restarts = 0
        self._proxies: dict[tuple[str, int], tango.DeviceProxy] = {}

    def start(self) -> None:
        trls = self._stack.enter_context(run_on_file_database(
            [_executable(self.server)], f"{self.server}/fuzz",
            {self.device: (self.server, _properties(self.server, self.corpus))}, self.folder,
            cwd=self.corpus.folder / "out"))
        self.trl = trls[self.device]

    def stop(self) -> None:
        self._stack.close()
        self._stack = ExitStack()

    def pid(self) -> int | None:
        """The PID of this server process (our child, found by its file database)."""
        marker = f"-file={self.folder / (self.server + '_fuzz.db')}"
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if marker in child.cmdline():
                    return child.pid
        return None

    def restart(self, fresh_database: bool = False) -> None:
        """Kill the server by its PID (it may be stuck, as an operator would) and start it again."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.stop()
        if fresh_database:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.restarts += 1
        self.start()

    def proxy(self, timeout_ms: int = CALL_TIMEOUT_MS) -> tango.DeviceProxy:
        """A client of the current server process (cached per timeout; new after a restart)."""
        key = (self.trl, timeout_ms)
        if key not in self._proxies:
            proxy = tango.DeviceProxy(self.trl)
            proxy.set_timeout_millis(timeout_ms)
            self._proxies[key] = proxy
        return self._proxies[key]


# --------------------------------------------------------------------------- probes
def _probe_camera(p: tango.DeviceProxy, corpus: Corpus) -> None:
    p.command_inout("Stop")
    p.command_inout("Snap")
    if p.read_attribute("Image").value.ndim != 2:
        raise tango.DevFailed(tango.DevError())


def _probe_registration(p: tango.DeviceProxy, corpus: Corpus) -> None:
    p.command_inout("LoadImage", json.dumps({"slot": "probe", "path": str(corpus.valid), "pixel_size_um": 1.0}))
    p.command_inout("LoadImage", json.dumps({"slot": "probe_t", "path": str(corpus.valid_shifted),
                                             "pixel_size_um": 1.0}))
    p.command_inout("Register", json.dumps({"reference": "probe", "target": "probe_t", "model": "translation"}))
    p.read_attribute("Slots")


def _probe_particles(p: tango.DeviceProxy, corpus: Corpus) -> None:
    p.command_inout("Detect", json.dumps({"path": str(corpus.valid_large)}))
    p.read_attribute("Count")


def _probe_mapper(p: tango.DeviceProxy, corpus: Corpus) -> None:
    p.command_inout("SetTransform", json.dumps({"from": "probe_a", "to": "probe_b",
                                                "matrix": [[2, 0, 1], [0, 2, -1], [0, 0, 1]]}))
    p.command_inout("Map", json.dumps({"from": "probe_a", "to": "probe_b", "points": [[1, 2]]}))


PROBES: dict[str, Callable[[tango.DeviceProxy, Corpus], None]] = {
    "CameraDS": _probe_camera, "RegistrationDS": _probe_registration,
    "ParticleDS": _probe_particles, "CoordMapperDS": _probe_mapper,
}
PROBE_TEXT = {
    "CameraDS": "Stop; Snap; read Image",
    "RegistrationDS": "LoadImage valid.tif twice; Register translation",
    "ParticleDS": "Detect valid.tif",
    "CoordMapperDS": "SetTransform probe_a->probe_b; Map",
}


def feed_fifos(corpus: Corpus) -> None:
    """Unblock a server stuck opening the corpus FIFO for reading (open for writing, close)."""
    fifo = corpus.folder / "fifo.tif"
    with contextlib.suppress(OSError):
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    # a server stuck writing into the FIFO (ExportCsv, SaveImage) needs a reader
    with contextlib.suppress(OSError):
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        time.sleep(0.2)
        with contextlib.suppress(OSError):
            while os.read(fd, 65536):
                pass
        os.close(fd)


def _errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


@dataclass
class Fuzzer:
    """Runs hostile calls against served devices and records what happened."""

    corpus: Corpus
    served: dict[str, Served]
    records: list[CallRecord] = field(default_factory=list)
    log: Callable[[str], None] = print

    def probe(self, server: str) -> Reply:
        served = self.served[server]
        return judge(lambda: PROBES[server](served.proxy(PROBE_TIMEOUT_MS), self.corpus))

    def hostile(self, server: str, target: str, kind: str, argument: Any, call: Callable[[tango.DeviceProxy], Any],
                restore: Callable[[tango.DeviceProxy], Any] | None = None) -> CallRecord:
        served = self.served[server]
        reply = judge(lambda: call(served.proxy()))
        if kind != "write":
            self.corpus.rebuild()  # SaveImage onto the FIFO replaces it with a file, etc.
        after = self.probe(server)  # judges a write too, so a setting is restored only after it
        recovered = ""
        if after.outcome != OK:
            recovered = self._recover(server, restore)
        elif restore is not None:
            with contextlib.suppress(Exception):
                restore(served.proxy())
        record = CallRecord(served.device, target, kind, _shown(argument), reply, after, recovered,
                            case=self.corpus.label(_shown(argument)))
        record.defect = known_defect(record)
        self.records.append(record)
        if record.failed:
            self.log(f"  FAIL {server}.{target}({record.argument[:80]}): {reply.outcome} {reply.reason} "
                     f"-> next valid call {after.outcome} {after.reason} [{recovered or 'no recovery needed'}]")
        return record

    def _recover(self, server: str, restore: Callable[[tango.DeviceProxy], Any] | None) -> str:
        """Bring a device the fuzz broke back, the cheapest way that works, and say how."""
        served = self.served[server]
        if restore is not None:
            with contextlib.suppress(Exception):
                restore(served.proxy())
            if self.probe(server).outcome == OK:
                return "the previous setting was written back"
        feed_fifos(self.corpus)
        time.sleep(0.5)
        if self.probe(server).outcome == OK:
            return "came back once the campaign fed the FIFO"
        served.restart()
        if self.probe(server).outcome == OK:
            return "server restarted"
        served.restart(fresh_database=True)
        if self.probe(server).outcome == OK:
            return "server restarted on a fresh database (a memorized setting kept it broken)"
        return "UNUSABLE even after a restart on a fresh database"

    # ------------------------------------------------------------------ hypothesis
    def fuzz(self, server: str, examples: int, seed_value: int = 0) -> None:
        """``examples`` generated calls per command and per writable attribute of ``server``."""
        interface = describe(self.served[server].proxy())
        setting_keys = [a.name for a in interface.writable]
        devices = [s.trl for s in self.served.values()] + ["sys/tg_test/1", "no/such/device"]
        for command in interface.commands:
            cmd = command
            if "<setting>" in cmd.doc_in:
                cmd = CommandInfo(cmd.name, cmd.in_type, cmd.doc_in.replace(
                    "<setting>", ", ".join(f'"{k}"' for k in setting_keys)))
            self._run(server, cmd.name, "command", command_arguments(cmd, self.corpus, devices),
                      lambda arg, name=cmd.name, void=cmd.in_type == tango.CmdArgType.DevVoid:
                      (lambda p: p.command_inout(name) if void else p.command_inout(name, arg)),
                      None, examples, seed_value)
        for attr in interface.writable:
            self._run(server, attr.name, "write", attribute_values(attr),
                      lambda value, name=attr.name: (lambda p: p.write_attribute(name, value)),
                      self._restorer(server, attr.name), examples, seed_value)

    def _restorer(self, server: str, name: str) -> Callable[[tango.DeviceProxy], Any] | None:
        with contextlib.suppress(tango.DevFailed):
            value = self.served[server].proxy().read_attribute(name).w_value
            if value is not None:
                return lambda p: p.write_attribute(name, value)
        return None

    def _run(self, server: str, target: str, kind: str, strategy: st.SearchStrategy[Any],
             make_call: Callable[[Any], Callable[[tango.DeviceProxy], Any]],
             restore: Callable[[tango.DeviceProxy], Any] | None, examples: int, seed_value: int) -> None:
        @seed(seed_value)
        @settings(max_examples=examples, phases=[Phase.generate], database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def one(argument: Any) -> None:
            self.hostile(server, target, kind, argument, make_call(argument), restore)

        one()

    # ---------------------------------------------------------------------- corpus
    def replay_corpus(self, cases: set[str] | None = None) -> None:
        """Every hostile path into every command that takes a path, and every script into every
        name a JSON command takes; ``cases`` limits it to those corpus labels (fast subset)."""
        scripts = [text for key, text in SCRIPT_NAMES.items() if cases is None or f"name_{key}" in cases]
        for server in self.served:
            interface = describe(self.served[server].proxy())
            for command in interface.commands:
                for argument in _corpus_arguments(command, self.corpus, scripts, cases):
                    self.hostile(server, command.name, "corpus", argument,
                                 lambda p, name=command.name, arg=argument: p.command_inout(name, arg))
            for attr in interface.writable:
                if attr.data_type == tango.CmdArgType.DevString:
                    for text in scripts:
                        self.hostile(server, attr.name, "corpus", text,
                                     lambda p, name=attr.name, value=text: p.write_attribute(name, value),
                                     self._restorer(server, attr.name))


def _corpus_arguments(command: CommandInfo, corpus: Corpus, scripts: list[str],
                      cases: set[str] | None) -> Iterator[str | bytes]:
    paths = [h.path for h in corpus.hostile if cases is None or h.label in cases]
    if command.in_type != tango.CmdArgType.DevString:
        return
    keys = command.keys
    if command.takes_json:
        base = _valid_base(command.name, corpus)
        if base is None:
            return
        path_keys = [k for k in keys if k in ("path",)]
        for key in path_keys:
            for path in paths:
                yield json.dumps({**base, key: path}, ensure_ascii=False)
                if path != path.encode("ascii", "replace").decode():
                    yield json.dumps({**base, key: path})  # the same, \u-escaped: what json.dumps sends
        name_keys = [k for k in keys if k in ("slot", "reference", "target", "from", "to")]
        for key in name_keys[:1]:
            for text in scripts:
                yield json.dumps({**base, key: text}, ensure_ascii=False)
                yield json.dumps({**base, key: text})
        return
    if "path" in command.doc_in.lower():
        written = [str(corpus.folder / "out" / (f"{text}.csv" if "CSV" in command.doc_in else f"{text}.tif"))
                   for text in scripts]
        for path in paths + written:
            yield path
            if path != path.encode("latin-1", "replace").decode("latin-1"):
                yield path.encode("utf-8")  # what a C++ client (Jive, a facility GUI) sends
    else:
        for text in scripts:
            yield text
            yield text.encode("utf-8")


def _valid_base(command: str, corpus: Corpus) -> dict[str, Any] | None:
    """A valid argument of a JSON command, which the corpus then spoils one key at a time."""
    return {
        "LoadImage": {"slot": "corpus", "path": str(corpus.valid)},
        "GrabImage": {"slot": "corpus", "device": "no/such/camera"},
        "Register": {"reference": "probe", "target": "probe_t", "model": "translation"},
        "RegisterFiducials": {"reference": "probe", "target": "probe_t", "model": "similarity",
                              "pairs": [[0, 0, 3, -2], [100, 0, 103, -2], [0, 100, 3, 98]]},
        "Detect": {"path": str(corpus.valid)},
        "SetTransform": {"from": "corpus_a", "to": "corpus_b", "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]},
        "FitTransform": {"from": "corpus_a", "to": "corpus_b", "model": "similarity",
                         "pairs": [[0, 0, 1, 1], [1, 0, 2, 1], [0, 1, 1, 2]]},
        "Map": {"from": "probe_a", "to": "probe_b", "points": [[1, 2]]},
    }.get(command)


def _shown(argument: Any) -> str:
    """The argument as a person reads it: JSON un-escaped, long text cut."""
    if isinstance(argument, bytes):
        return "UTF-8 bytes of " + _shown(argument.decode("utf-8", "replace"))
    if isinstance(argument, str):
        with contextlib.suppress(ValueError, RecursionError):
            argument = json.dumps(json.loads(argument), ensure_ascii=False) if argument.strip()[:1] == "{" \
                else argument
        text = argument
    else:
        text = repr(argument)
    return text if len(text) <= 300 else text[:300] + f"...({len(text)} chars)"


@contextlib.contextmanager
def served_servers(corpus: Corpus, folder: Path, servers: tuple[str, ...] = SERVERS) -> Iterator[dict[str, Served]]:
    """The four servers, each on its own file database under ``folder``; stopped by PID on exit."""
    started = {server: Served(server, corpus, folder / server) for server in servers}
    problems: list[str] = []

    def start(served: Served) -> None:
        try:
            served.start()
        except RuntimeError as exc:
            problems.append(str(exc))

    try:
        threads = [threading.Thread(target=start, args=(s,)) for s in started.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if problems:
            raise RuntimeError("; ".join(problems))
        yield started
    finally:
        for served in started.values():
            served.stop()


def fuzz_all(corpus: Corpus, folder: Path, examples: int, seed_value: int = 0,
             log: Callable[[str], None] = print,
             cases: set[str] | None = None,
             interfaces: dict[str, set[str]] | None = None) -> tuple[list[CallRecord], dict[str, int]]:
    """The whole fuzz: corpus replay, then ``examples`` generated calls per target. Returns the
    records and the number of restarts per server; ``interfaces`` receives, per device, the
    commands and writable attributes it declares (to check that all were fuzzed)."""
    started = time.monotonic()
    with served_servers(corpus, folder) as served:
        fuzzer = Fuzzer(corpus, served, log=log)
        for server in served:
            if interfaces is not None:
                declared = describe(served[server].proxy())
                interfaces[served[server].device] = ({c.name for c in declared.commands}
                                                     | {a.name for a in declared.writable})
            first = fuzzer.probe(server)
            if first.outcome != OK:
                raise RuntimeError(f"{server}: the probe fails on a fresh device: {first.reason} {first.desc}")
        log(f"servers answer; replaying the hostile-files corpus ({time.monotonic() - started:.1f} s)")
        fuzzer.replay_corpus(cases)
        if examples:
            for server in served:
                log(f"fuzzing {server} ({examples} examples per command and writable attribute; "
                    f"{time.monotonic() - started:.1f} s)")
                fuzzer.fuzz(server, examples, seed_value)
        log(f"fuzz done ({time.monotonic() - started:.1f} s)")
        return fuzzer.records, {s: v.restarts for s, v in served.items()}


