"""Thin client calls behind the `smart` subcommands and the Taurus panel.

Scripts, queues and the GUI need the same few operations: register a reference image,
detect particles, map points between frames, drive the stage to a point. Each one is a
single device call or a single Door macro, nothing more: anything that moves goes
through the Door so that Sardana's limits, Stop/Abort and the macros' safety checks
apply exactly as they do in Spock. Nothing here imports ``servers/``.

Every failure becomes a :class:`CommandError` carrying the ``SMART_*`` reason, so a
command line can print one line and a panel can put it in its status bar.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tango

from clients.door import DoorClient, MacroFailed
from clients.launcher import DEFAULT_RUN_DIR
from macros.smart_calls import command_json, error_of, proxy

DEVICES = {
    "camera": "smart/camera/1",
    "registration": "smart/registration/1",
    "particles": "smart/particles/1",
    "mapper": "smart/coordmapper/1",
    "queue": "smart/queue/1",
}
DEFAULT_DOOR = "smart/door/01"
SMART_REASON = re.compile(r"\b(SMART_[A-Za-z]+)\b")
PARTICLE_SETTINGS = ("Diameter", "MinMass", "MaxSize", "Separation", "NoiseSize", "Threshold", "Percentile",
                     "Invert", "Method", "IsolationRadius")


class CommandError(RuntimeError):
    """A refused or failed call: ``reason`` is a SMART_* name, ``desc`` what to do."""

    def __init__(self, reason: str, desc: str) -> None:
        super().__init__(f"{reason}: {desc}")
        self.reason = reason
        self.desc = desc

    def one_line(self) -> str:
        return " ".join(f"{self.reason}: {self.desc}".split())


def resolve_tango_host(option: str | None = None, run_dir: Path = DEFAULT_RUN_DIR) -> str:
    """The database to talk to: the option, else TANGO_HOST, else the local `smart up` stack.

    The last fallback lets a user who ran `smart up` use every subcommand without
    sourcing env.sh first."""
    if option:
        return option
    if os.environ.get("TANGO_HOST"):
        return os.environ["TANGO_HOST"]
    env_sh = Path(run_dir) / "env.sh"
    try:
        match = re.search(r"TANGO_HOST=(\S+)", env_sh.read_text())
    except OSError:
        match = None
    if match:
        return match.group(1)
    raise CommandError("SMART_NotReady", f"no Tango database: give --tango-host, set TANGO_HOST or run "
                                         f"`smart up` (looked for {env_sh})")


def _devfailed(exc: tango.DevFailed) -> CommandError:
    """A SMART refusal as it came; any other Tango error as SMART_Failed naming Tango's reason."""
    reason, desc = error_of(exc)
    return CommandError(reason, desc) if reason.startswith("SMART_") else CommandError("SMART_Failed",
                                                                                       f"{reason}: {desc}")


def _macro_failed(exc: MacroFailed) -> CommandError:
    """The SMART reason a macro named in its error lines (macros prefix refusals with it)."""
    text = "\n".join(line for stream, line in exc.lines if stream in ("Error", "Warning")) or str(exc)
    found = SMART_REASON.search(text) or SMART_REASON.search(str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line for line in lines if SMART_REASON.search(line)), lines[-1] if lines else str(exc))
    detail = re.sub(r"^\w*(Error|Exception): ", "", detail)
    detail = SMART_REASON.sub("", detail, count=1).lstrip(": ").strip() if found else detail
    return CommandError(found.group(1) if found else "SMART_Failed", detail or str(exc))


class SmartClient:
    """The four SMART devices and the Door of one Tango database, addressed by full name
    so that nothing depends on the process's TANGO_HOST."""

    def __init__(self, tango_host: str, door: str = DEFAULT_DOOR, devices: dict[str, str] | None = None,
                 timeout_ms: int = 30_000) -> None:
        self.tango_host = tango_host
        self.door_name = door
        self.devices = {**DEVICES, **(devices or {})}
        self.timeout_ms = timeout_ms
        self._proxies: dict[str, tango.DeviceProxy] = {}
        self._door: DoorClient | None = None

    # ----------------------------------------------------------------- access
    def trl(self, name: str) -> str:
        return name if name.startswith("tango://") else f"tango://{self.tango_host}/{name}"

    def proxy(self, role_or_name: str) -> tango.DeviceProxy:
        name = self.devices.get(role_or_name, role_or_name)
        if name not in self._proxies:
            try:
                self._proxies[name] = proxy(self.trl(name), self.timeout_ms)
            except tango.DevFailed as exc:
                raise CommandError("SMART_NotReady", f"cannot reach {name} on {self.tango_host}: "
                                                     f"{error_of(exc)[1]}") from None
        return self._proxies[name]

    def call_json(self, role: str, command: str, argument: dict[str, Any] | str) -> Any:
        try:
            return command_json(self.proxy(role), command, argument)
        except tango.DevFailed as exc:
            raise _devfailed(exc) from None

    def read(self, role: str, attribute: str) -> Any:
        try:
            return self.proxy(role).read_attribute(attribute).value
        except tango.DevFailed as exc:
            raise _devfailed(exc) from None

    def read_json(self, role: str, attribute: str) -> Any:
        text = self.read(role, attribute)
        return json.loads(text) if text else None

    def door(self, echo: Callable[[str, str], None] | None = None) -> DoorClient:
        if self._door is None:
            try:
                self._door = DoorClient(self.trl(self.door_name), echo=echo)
            except tango.DevFailed as exc:
                raise CommandError("SMART_NotReady", f"cannot reach the Door {self.door_name}: "
                                                     f"{error_of(exc)[1]}") from None
        return self._door

    def close(self) -> None:
        if self._door is not None:
            self._door.close()
            self._door = None

    def run_macro(self, words: Sequence[str], timeout_s: float = 600.0) -> list[str]:
        """Run one macro through the Door; its Output lines, or a CommandError with its reason."""
        door = self.door()
        if door.is_busy():
            raise CommandError("SMART_NotReady", f"the Door {self.door_name} is busy with another macro; "
                                                 "wait for it or stop it")
        try:
            run = door.run([str(w) for w in words], timeout_s=timeout_s)
        except MacroFailed as exc:
            raise _macro_failed(exc) from None
        except tango.DevFailed as exc:
            raise _devfailed(exc) from None
        return [line for stream, line in run.lines if stream == "Output"]

    # ------------------------------------------------------------------ stage
    def motor_names(self) -> list[str]:
        """The stage motors as the mapper knows them (its MotorX/MotorY properties)."""
        props = self.proxy("mapper").get_property(["MotorX", "MotorY"])
        names = [list(props[key])[0] if list(props[key]) else "" for key in ("MotorX", "MotorY")]
        if not all(names):
            raise CommandError("SMART_NotReady", f"{self.devices['mapper']} has no MotorX/MotorY property")
        return names

    def motor_device(self, name: str) -> str:
        """The device name of a motor given by alias (Sardana's usual names) or device name."""
        if name.count("/") == 2:
            return name
        host, _, port = self.tango_host.partition(":")
        try:
            return tango.Database(host, int(port or 10000)).get_device_alias(name)
        except tango.DevFailed as exc:
            raise CommandError("SMART_NotFound", f"motor alias {name} is unknown: "
                                                 f"{error_of(exc)[1]}") from None

    def stage_position(self) -> list[float]:
        return [float(self.read(self.motor_device(name), "Position")) for name in self.motor_names()]

    # --------------------------------------------------------------- commands
    def register(self, image: str, model: str = "similarity", frame: str = "sem",
                 channel: str | None = None) -> dict[str, Any]:
        """Register a reference image to the live camera with `smart_register` (through the
        Door, which also records the reference for the particle loop). ``channel`` picks the
        AFM channel or EDX element map of a multi-channel file."""
        path = _absolute(image)
        output = self.run_macro(["smart_register", path, model, frame, *([channel] if channel else [])])
        result = self.read_json("registration", "LastResult") or {}
        edge = self._edge(frame, "camera")
        return {"frame": frame, "image": path, "model": model, "registration": result,
                "stage_position": edge.get("stage_position") if edge else None, "output": output}

    def particles(self, image: str | None = None, settings: dict[str, Any] | None = None,
                  detect: bool = True, profile: str | None = None) -> dict[str, Any]:
        """Detect with `smart_find_particles` (IMAGE, else the registered reference) and return
        the table; ``detect=False`` only reads the current results. ``profile`` applies a named
        settings profile first (`smart_particle_profile`), ``settings`` then override single ones."""
        output: list[str] = []
        if profile:
            output += self.run_macro(["smart_particle_profile", profile])
        for name, value in (settings or {}).items():
            try:
                self.proxy("particles").write_attribute(name, value)
            except tango.DevFailed as exc:
                raise _devfailed(exc) from None
        if detect:
            output += self.run_macro(["smart_find_particles", *([_absolute(image)] if image else [])])
        rows = self.read_json("particles", "Table") or []
        last = self.read_json("particles", "LastResult") or {}
        return {"count": len(rows), "isolated": sum(bool(r.get("isolated")) for r in rows),
                "elapsed_ms": last.get("elapsed_ms"), "particles": rows, "output": output, "profile": profile}

    def map(self, frame_from: str, frame_to: str, points: Sequence[Sequence[float]],
            stage_position: Sequence[float] | None = None) -> dict[str, Any]:
        argument: dict[str, Any] = {"from": frame_from, "to": frame_to,
                                    "points": [[float(v) for v in p] for p in points]}
        if stage_position is not None:
            argument["stage_position"] = [float(v) for v in stage_position]
        return self.call_json("mapper", "Map", argument)

    def goto(self, index: int | None = None, frame: str | None = None, x: float | None = None,
             y: float | None = None) -> dict[str, Any]:
        """Put a particle (`smart_goto`) or a point of a frame (`smart_goto_xy`) in the beam."""
        if index is not None:
            count = len(self.read("particles", "X") if self.read("particles", "X") is not None else [])
            if not 0 <= index < count:
                raise CommandError("SMART_NotFound", f"no particle {index}: {count} particles are known; run "
                                                     "`smart particles` first or pick an index of its table")
            words: list[str] = ["smart_goto", str(int(index))]
        elif frame is not None and x is not None and y is not None:
            words = ["smart_goto_xy", frame, repr(float(x)), repr(float(y))]
        else:
            raise CommandError("SMART_BadArgument", "give a particle index or a frame with x and y")
        output = self.run_macro(words)
        return {"macro": " ".join(words), "stage_position": self.stage_position(),
                "motors": self.motor_names(), "unit": self.read("mapper", "StageUnit"), "output": output}

    def beam(self, action: str = "show", values: Sequence[str] = (), search_um: float = 1.0,
             exposure: float = 0.01) -> dict[str, Any]:
        """Show BeamPosition, set it (`smart_beam_set`) or measure it (`smart_beam_calibrate`)."""
        output: list[str] = []
        if action == "set":
            if len(values) == 1 and values[0].lower() in ("center", "centre"):
                words = ["smart_beam_set", "center"]
            elif len(values) == 2:
                try:
                    words = ["smart_beam_set", *(repr(float(v)) for v in values)]
                except ValueError:
                    raise CommandError("SMART_BadArgument", f"beam set {' '.join(values)}: X and Y must be "
                                                            "numbers (px)") from None
            else:
                raise CommandError("SMART_BadArgument", "beam set needs X Y (camera px) or center")
            output = self.run_macro(words)
        elif action == "calibrate":
            if len(values) > 1:
                raise CommandError("SMART_BadArgument", "beam calibrate takes at most one particle INDEX")
            try:
                index = int(values[0]) if values else -1
            except ValueError:
                raise CommandError("SMART_BadArgument", f"particle index {values[0]!r} is not an integer") from None
            output = self.run_macro(["smart_beam_calibrate", str(index), repr(float(search_um)),
                                     repr(float(exposure))], timeout_s=1800.0)
        elif action != "show":
            raise CommandError("SMART_BadArgument", f"beam {action}: use show, set or calibrate")
        beam = (self.read_json("mapper", "Transforms") or {}).get("beam_position")
        return {"beam_position": beam, "output": output}

    def _edge(self, frame_from: str, frame_to: str) -> dict[str, Any] | None:
        graph = self.read_json("mapper", "Transforms") or {}
        for edge in graph.get("edges", []):
            if {edge.get("from"), edge.get("to")} == {frame_from, frame_to}:
                return edge
        return None


def _absolute(path: str) -> str:
    """Servers run in their own directories: a relative path means the caller's."""
    candidate = Path(path).expanduser()
    return str(candidate.resolve()) if not candidate.is_absolute() else str(candidate)


def parse_setting(text: str) -> tuple[str, Any]:
    """``Name=value`` for a ParticleDS setting, the value as JSON when it parses (7, 1e4, true)."""
    name, sep, value = text.partition("=")
    if not sep or name not in PARTICLE_SETTINGS:
        raise CommandError("SMART_BadArgument", f"--set {text!r}: expected NAME=VALUE with NAME one of "
                                                f"{', '.join(PARTICLE_SETTINGS)}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value
