"""Faults during the workflow: crashes, the database gone, the camera's source lost.

A background client runs the ordinary cycle (camera frame number, Register, Detect, Map) the
whole time, with its own long-lived proxies, as a beamline GUI or macro would; each fault
records what that client saw during it and how long until its calls succeeded again. After
every fault the campaign checks that nothing stored was lost (:class:`Stored`) and that every
device answers a valid call. Servers and the database are restarted the way the launcher
does (:meth:`clients.launcher.Stack.restart`); every process is signalled by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tango

from clients.door import DoorClient
from clients.launcher import Stack
from simulation.microscope.backchannel import MicroscopeBackChannel
from tests.reliability.corpus import Corpus
from tests.reliability.fuzz import PROBES
from tests.reliability.stackclients import DOOR, SERVER_OF, Stored, load_slots, new_client_program, proxy, reason_of

CAM = SERVER_OF["CameraDS/smart"]


@dataclass
class Background:
    """The workflow client that keeps running through every fault."""

    stack: Stack
    corpus: Corpus
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (time, operation, "ok" | reason)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._proxies = {name: proxy(self.stack, dev, 3000) for name, dev in
                         (("camera", CAM), ("registration", SERVER_OF["RegistrationDS/smart"]),
                          ("particles", SERVER_OF["ParticleDS/smart"]), ("mapper", SERVER_OF["CoordMapperDS/smart"]))}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        p = self._proxies
        ops: list[tuple[str, Callable[[], Any]]] = [
            ("camera FrameNumber", lambda: p["camera"].read_attribute("FrameNumber")),
            ("registration Register", lambda: p["registration"].command_inout(
                "Register", json.dumps({"reference": "rel_ref", "target": "rel_tgt", "model": "translation"}))),
            ("particles Detect", lambda: p["particles"].command_inout(
                "Detect", json.dumps({"path": str(self.corpus.valid)}))),
            ("coordmapper Map", lambda: p["mapper"].command_inout(
                "Map", json.dumps({"from": "reliability", "to": "stage", "points": [[1.0, 2.0]]}))),
        ]
        while not self._stop.is_set():
            for name, call in ops:
                try:
                    call()
                    outcome = "ok"
                except Exception as exc:  # noqa: BLE001 - recorded, the client goes on as a GUI would
                    outcome = reason_of(exc)
                self.events.append((time.monotonic(), name, outcome))
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """What the client saw between t0 and t1, and when each operation last failed."""
        seen = [e for e in self.events if t0 <= e[0] <= t1]
        failures: dict[str, int] = {}
        for _, name, outcome in seen:
            if outcome != "ok":
                failures[f"{name}: {outcome}"] = failures.get(f"{name}: {outcome}", 0) + 1
        return {"calls": len(seen), "failed": sum(failures.values()), "failures": failures}

    def recovered_after(self, t_fault: float, timeout_s: float = 60.0) -> float | None:
        """Seconds from ``t_fault`` until every operation has succeeded after its last failure."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            after = [e for e in self.events if e[0] >= t_fault]
            names = {e[1] for e in self.events}
            last_fail = {n: max((e[0] for e in after if e[1] == n and e[2] != "ok"), default=t_fault) for n in names}
            if names and all(any(e[1] == n and e[2] == "ok" and e[0] > last_fail[n] for e in after) for n in names):
                return round(max(min(e[0] for e in after if e[1] == n and e[2] == "ok" and e[0] > last_fail[n])
                                 for n in names) - t_fault, 2)
            time.sleep(0.2)
        return None


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, tango.DevFailed) and exc.args:
        return f"{exc.args[0].reason}: {exc.args[0].desc.strip().splitlines()[0][:200]}"
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def usable(stack: Stack, corpus: Corpus) -> list[str]:
    """Devices that fail their valid call (the fuzz's probe, through the stack's database)."""
    broken = []
    for server, device in SERVER_OF.items():
        executable = server.split("/")[0]
        try:
            PROBES[executable](proxy(stack, device, 10000), corpus)
        except Exception as exc:  # noqa: BLE001
            broken.append(f"{device}: {_first_line(exc)}")
    try:
        with DoorClient(f"tango://{stack.tango_host}/{DOOR}") as door:
            door.run("wa", timeout_s=60)
    except Exception as exc:  # noqa: BLE001
        broken.append(f"{DOOR}: {_first_line(exc)}")
    return broken


def _stream(stack: Stack) -> None:
    cam = proxy(stack, CAM, 5000)
    cam.write_attribute("TargetFrameRate", 10.0)
    cam.command_inout("Start")


def _frames_advance(cam: tango.DeviceProxy, seconds: float = 3.0) -> bool:
    """Whether the camera's FrameNumber grows, read by a client that exists already (``cam``):
    a new one could not be made while the database is down."""
    try:
        first = cam.read_attribute("FrameNumber").value
        time.sleep(seconds)
        return cam.read_attribute("FrameNumber").value > first
    except tango.DevFailed:
        return False


def _state(stack: Stack, device: str) -> str:
    try:
        p = proxy(stack, device, 3000)
        return f"{p.state()} ({p.status().splitlines()[0][:140]})"
    except tango.DevFailed as exc:
        return f"unreachable ({reason_of(exc)})"


def run_faults(stack: Stack, corpus: Corpus, stored: Stored, db_down_s: float, source_lost_s: float,
               log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    load_slots(stack, corpus)
    _stream(stack)
    watch = proxy(stack, CAM, 3000)
    background = Background(stack, corpus)
    background.start()
    rows: list[dict[str, Any]] = []

    def fault(name: str, action: Callable[[], dict[str, Any]]) -> None:
        log(f"  fault: {name}")
        time.sleep(2.0)  # some calls before
        t0 = time.monotonic()
        try:
            details = action()
            error = ""
        except Exception as exc:  # noqa: BLE001 - a fault the campaign could not carry out is a failed row
            details, error = {}, f"{type(exc).__name__}: {_first_line(exc)}"
        t1 = time.monotonic()
        with contextlib.suppress(Exception):
            load_slots(stack, corpus)  # slots live in memory by design: a restarted RegistrationDS needs them again
        recovered = background.recovered_after(t0)
        lost = stored.check(stack)
        broken = usable(stack, corpus)
        if not broken:
            _stream(stack)
        row = {"fault": name, "seconds": round(t1 - t0, 1), "clients_saw": background.window(t0, t1),
               "clients_recovered_after_s": recovered, "lost": lost, "unusable": broken, "error": error, **details}
        row["passed"] = not error and not lost and not broken and recovered is not None and \
            details.get("passed", True)
        rows.append(row)
        log(f"    {'PASS' if row['passed'] else 'FAIL'}: recovered after {recovered} s; lost {lost}; "
            f"unusable {broken}; {error} {details.get('note', '')}")

    for server in SERVER_OF:
        def crash(server: str = server) -> dict[str, Any]:
            t = time.monotonic()
            old = stack.processes[server].pid
            stack.restart(server, kill=True)
            return {"note": f"pid {old} killed, {server} answering again after {time.monotonic() - t:.1f} s"}
        fault(f"SIGKILL {server} during the workflow, restarted by Stack.restart", crash)

    def crash_db() -> dict[str, Any]:
        old = stack.processes["PyDatabaseds"].pid
        stack.restart("PyDatabaseds", kill=True)
        new_client = new_client_program(stack, CAM)
        # a server restarted now must find the database again
        stack.restart("ParticleDS/smart", kill=True)
        return {"note": f"database pid {old} killed and restarted on {stack.tango_host}; a new client program reached "
                        f"the camera after {new_client} s; ParticleDS restarted afterwards registered again",
                "passed": not new_client.startswith("FAILED")}
    fault("SIGKILL the Tango database during the workflow, restarted on the same port", crash_db)

    def db_down() -> dict[str, Any]:
        watch.read_attribute("FrameNumber")  # connected now (the camera may have restarted since): no database later
        os.kill(stack.processes["PyDatabaseds"].pid, signal.SIGKILL)
        t = time.monotonic()
        try:
            time.sleep(min(5.0, db_down_s))
            new_during = new_client_program(stack, CAM, 2.0)
            frames_during = _frames_advance(watch, 2.0)
            time.sleep(max(0.0, db_down_s - (time.monotonic() - t)))
            window = background.window(t, time.monotonic())
        finally:
            stack.restart("PyDatabaseds")
        new_after = new_client_program(stack, CAM)
        served = window["failed"] == 0
        return {"note": f"database down {time.monotonic() - t:.0f} s: the long-lived client made {window['calls']} "
                        f"calls, {window['failed']} failed; camera frames advancing: {frames_during}; a new client "
                        f"program during the outage: {new_during}; after the restart a new client program reached "
                        f"the camera after {new_after} s",
                "passed": served and frames_during and not new_after.startswith("FAILED")}
    fault(f"Tango database down for {db_down_s:.0f} s (servers keep serving, clients reconnect)", db_down)

    def source_lost() -> dict[str, Any]:
        pool = stack.processes["Pool/smart"].pid
        motor = proxy(stack, "samx", 1000)
        first = watch.read_attribute("FrameNumber").value
        seen: list[str] = []
        os.kill(pool, signal.SIGSTOP)
        try:
            t_stop = time.monotonic()
            unanswered = 0
            while time.monotonic() - t_stop < source_lost_s:
                try:
                    state = str(watch.state())
                    if not seen or seen[-1] != state:
                        seen.append(state)
                except tango.DevFailed:
                    unanswered += 1  # the camera itself did not answer State within 3 s
                time.sleep(0.3)
            frames = watch.read_attribute("FrameNumber").value - first
            try:
                motor.read_attribute("Position")
                motor_note = "samx still answered (the freeze did not reach the motors)"
            except tango.DevFailed as exc:
                motor_note = f"samx did not answer ({reason_of(exc)})"
        finally:
            os.kill(pool, signal.SIGCONT)
        during = (" -> ".join(seen) + f"; {unanswered} State reads of the camera timed out; {frames} frames "
                  f"during the freeze; {motor_note}")
        t = time.monotonic()
        back = None
        while time.monotonic() - t < 60:
            if watch.state() == tango.DevState.RUNNING and _frames_advance(watch, 1.0):
                back = round(time.monotonic() - t, 1)
                break
            time.sleep(0.5)
        stated = any(state in seen for state in ("ALARM", "FAULT"))
        return {"note": f"the Pool (the sim camera's motors) frozen {source_lost_s:.0f} s with SIGSTOP: camera "
                        f"states seen {during}; RUNNING with frames again {back} s after SIGCONT",
                "passed": back is not None and stated and frames > 0 and unanswered == 0}
    fault(f"camera source lost for {source_lost_s:.0f} s and back (motors frozen)", source_lost)

    def microscope_fault() -> dict[str, Any]:
        back = MicroscopeBackChannel(f"tango://{stack.tango_host}/smart/microscope/1-simcontrol")
        back.inject_fault(3)
        try:
            time.sleep(2.0)
            scope = _state(stack, "smart/microscope/1")
            advancing = _frames_advance(watch, 3.0)
            cam = _state(stack, CAM)
        finally:
            back.clear_fault()
        return {"note": f"microscope: {scope}; camera frames advancing: {advancing}; camera {cam}",
                "passed": advancing}
    fault("microscope fault injected (tango-simlib back channel: camera link lost) and cleared", microscope_fault)

    def microscope_crash() -> dict[str, Any]:
        stack.restart("SimMicroscope/smart", kill=True)
        return {"note": f"camera after the microscope restart: {_state(stack, CAM)}", "passed": _frames_advance(watch)}
    fault("SIGKILL the simulated microscope (the camera's zoom source), restarted", microscope_crash)

    background.stop()
    with contextlib.suppress(tango.DevFailed):
        proxy(stack, CAM).command_inout("Stop")
    return rows
