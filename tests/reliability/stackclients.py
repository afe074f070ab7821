"""Clients of the running stack that the load and fault phases share.

Proxies by fully qualified name (immune to whatever TANGO_HOST the process has), the set-up
every phase relies on (small image slots, a stored transform, known settings), and a
sampler of the servers' resident memory, read by PID from the launcher's records.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import psutil
import tango

from clients.launcher import Stack
from tests.reliability.corpus import Corpus

SERVER_OF = {"CameraDS/smart": "smart/camera/1", "RegistrationDS/smart": "smart/registration/1",
             "ParticleDS/smart": "smart/particles/1", "CoordMapperDS/smart": "smart/coordmapper/1"}
DOOR = "smart/door/01"
STORED_MATRIX = [[0.0005, 0.0, 1.25], [0.0, 0.0005, -0.75], [0.0, 0.0, 1.0]]
"""The transform the campaign stores (frame 'reliability' -> stage) and checks after every fault."""


def proxy(stack: Stack, device: str, timeout_ms: int = 3000, patience_s: float = 20.0) -> tango.DeviceProxy:
    """A new client of ``device``. Building one asks the database; right after the database came
    back, cppTango refuses to ask again within 1 s of a failed attempt ("connection request was
    delayed"), so this retries for ``patience_s`` as a person clicking again would."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            p = tango.DeviceProxy(f"tango://{stack.tango_host}/{device}")
            p.set_timeout_millis(timeout_ms)
            return p
        except tango.DevFailed:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.5)


NEW_CLIENT = """
import sys, time, tango
t0 = time.monotonic()
while True:
    try:
        p = tango.DeviceProxy(sys.argv[1]); p.set_timeout_millis(3000); p.state()
        print(round(time.monotonic() - t0, 2)); break
    except tango.DevFailed as exc:
        if time.monotonic() - t0 > float(sys.argv[2]):
            print("FAILED", exc.args[0].reason, exc.args[0].desc.strip().splitlines()[0]); break
        time.sleep(0.5)
"""


def new_client_program(stack: Stack, device: str, patience_s: float = 20.0) -> str:
    """Seconds a brand-new client program (a fresh Python, as a user opening a new console) needs
    to reach ``device``, or 'FAILED ...'. Run by its PID and waited for."""
    result = subprocess.run([sys.executable, "-c", NEW_CLIENT, f"tango://{stack.tango_host}/{device}",
                             str(patience_s)], capture_output=True, text=True, timeout=patience_s + 30, check=False)
    return (result.stdout.strip() or result.stderr.strip()[-200:]) or f"exit {result.returncode}"


@dataclass
class Stored:
    """What the campaign stored in the devices, to check that no fault loses it."""

    exposure_ms: float = 12.5
    diameter: int = 7
    min_confidence: float = 0.99
    matrix: list[list[float]] = field(default_factory=lambda: [list(r) for r in STORED_MATRIX])

    def store(self, stack: Stack, corpus: Corpus) -> None:
        mapper = proxy(stack, SERVER_OF["CoordMapperDS/smart"])
        mapper.command_inout("SetTransform", json.dumps({"from": "reliability", "to": "stage",
                                                         "matrix": self.matrix}))
        proxy(stack, SERVER_OF["CameraDS/smart"]).write_attribute("ExposureTime", self.exposure_ms)
        proxy(stack, SERVER_OF["ParticleDS/smart"]).write_attribute("Diameter", self.diameter)
        proxy(stack, SERVER_OF["RegistrationDS/smart"]).write_attribute("MinConfidence", self.min_confidence)
        load_slots(stack, corpus)

    def check(self, stack: Stack) -> list[str]:
        """What was lost: an empty list when everything stored is still there."""
        lost: list[str] = []
        try:
            edges = json.loads(proxy(stack, SERVER_OF["CoordMapperDS/smart"]).read_attribute("Transforms").value)
            text = json.dumps(edges)
            if "reliability" not in text:
                lost.append("CoordMapperDS lost the stored transform reliability -> stage")
            else:
                got = proxy(stack, SERVER_OF["CoordMapperDS/smart"]).command_inout(
                    "Map", json.dumps({"from": "reliability", "to": "stage", "points": [[100.0, 200.0]]}))
                point = json.loads(got)["points"][0]
                want = [0.0005 * 100 + 1.25, 0.0005 * 200 - 0.75]
                if max(abs(a - b) for a, b in zip(point, want, strict=True)) > 1e-9:
                    lost.append(f"CoordMapperDS maps with another transform: {point} instead of {want}")
        except (tango.DevFailed, ValueError, KeyError) as exc:
            lost.append(f"CoordMapperDS transform unreadable: {_short(exc)}")
        checks = (("CameraDS/smart", "ExposureTime", self.exposure_ms),
                  ("ParticleDS/smart", "Diameter", self.diameter),
                  ("RegistrationDS/smart", "MinConfidence", self.min_confidence))
        for server, attr, value in checks:
            try:
                got = proxy(stack, SERVER_OF[server]).read_attribute(attr).value
                if abs(float(got) - value) > 1e-9:
                    lost.append(f"{server} {attr} is {got}, was set to {value}")
            except tango.DevFailed as exc:
                lost.append(f"{server} {attr} unreadable: {_short(exc)}")
        return lost


def load_slots(stack: Stack, corpus: Corpus) -> None:
    """The small slots the load and fault clients register (slots live in memory only)."""
    reg = proxy(stack, SERVER_OF["RegistrationDS/smart"])
    reg.command_inout("LoadImage", json.dumps({"slot": "rel_ref", "path": str(corpus.valid), "pixel_size_um": 1.0}))
    reg.command_inout("LoadImage", json.dumps({"slot": "rel_tgt", "path": str(corpus.valid_shifted),
                                               "pixel_size_um": 1.0}))


def _short(exc: BaseException) -> str:
    if isinstance(exc, tango.DevFailed) and exc.args:
        return f"{exc.args[0].reason}: {exc.args[0].desc.strip().splitlines()[0][:160]}"
    return f"{type(exc).__name__}: {str(exc)[:160]}"


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, tango.DevFailed) and exc.args:
        return exc.args[0].reason
    return type(exc).__name__


class RssSampler:
    """Resident memory of the stack's servers, sampled by PID every ``period_s`` in a thread."""

    def __init__(self, stack: Stack, servers: list[str], period_s: float = 1.0) -> None:
        self.stack, self.servers, self.period_s = stack, servers, period_s
        self.samples: dict[str, list[tuple[float, float]]] = {s: [] for s in servers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def sample(self) -> None:
        for server in self.servers:
            proc = self.stack.processes.get(server)
            if proc is None:
                continue
            try:
                rss = psutil.Process(proc.pid).memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.samples[server].append((time.monotonic() - self.t0, rss))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
