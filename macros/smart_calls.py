"""How a client calls the SMART devices: a proxy with a timeout, JSON commands, refusals as
(reason, what to do), the stage unit, a stage motor's limits as Taurus gives them, alias lookup in
the database.

One module for the three kinds of client -- the macros, ``clients/`` (the ``smart`` CLI, the
GUI, through clients/commands.py) and the tests -- so a SMART command is encoded, answered and refused the
same way everywhere. It lives in ``macros/`` because the macros may import nothing else of
ours (a MacroServer loads them next to anyone's macros; they talk to the servers through Tango
only); the clients and the tests stand above the macros and may import them
(README, "Architecture"). It uses only the devices' public Tango interface and imports nothing
from ``servers/``; the plain maths of the macros is in ``macros/smart_support.py``, which
needs no Tango.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import tango

from macros.smart_support import UNIT_PER_UM, SmartMacroError

BEAM_HINT = ("set the beam's camera pixel first: smart_beam_set X Y (a known value) or "
             "smart_beam_calibrate (from an X-ray map of a particle)")


def refused(device: str, command: str, reason: str, desc: str) -> SmartMacroError:
    """A device's refusal of ``command`` as the macros print it (``device.command: reason: desc``,
    plus how to set the beam when that is what is missing), with ``reason``/``desc`` kept."""
    hint = f" ({BEAM_HINT})" if "BeamPosition" in desc and "not set" in desc else ""
    return SmartMacroError(f"{device}.{command}: {reason}: {desc}{hint}", reason, desc)


def proxy(name: str, timeout_ms: int = 30_000) -> tango.DeviceProxy:
    """A device by name (alias, ``domain/family/member`` or full TRL) that gives up after
    ``timeout_ms``: a busy or stuck device must not hang its caller for Tango's default 3 s or
    forever on a long command."""
    device = tango.DeviceProxy(name)
    device.set_timeout_millis(timeout_ms)
    return device


class TangoThread(threading.Thread):
    """A ``threading.Thread`` that runs as a thread omniORB knows (``tango.EnsureOmniThread``),
    for every thread a client starts that calls Tango. PyTango asks it of such threads: a plain
    Python thread enters cppTango's locks (the event subscription lock among them) as an unnamed
    thread that cppTango cannot tell apart or clean up."""

    def run(self) -> None:
        with tango.EnsureOmniThread():
            super().run()


@functools.lru_cache(maxsize=64)
def _attribute_device(device_name: str, timeout_ms: int) -> tango.DeviceProxy:
    return proxy(device_name, timeout_ms)


def read_attribute(name: str, timeout_ms: int = 3000) -> Any:
    """The value of an attribute named in full (``device/attribute``), through a kept
    DeviceProxy. Not ``tango.AttributeProxy``: PyTango 10.1-10.3 destroy an AttributeProxy with
    the GIL held, which can deadlock against the event thread of a process that also has event
    subscriptions (a MacroServer does) -- pytango issue 778; a night polls such values every
    few seconds."""
    device_name, _, attribute = name.rpartition("/")
    if not device_name or not attribute:
        raise ValueError(f"{name!r} is not an attribute name (device/attribute)")
    return _attribute_device(device_name, timeout_ms).read_attribute(attribute).value


def encode_argument(argument: dict[str, Any] | list[Any] | str) -> str:
    """A SMART JSON command's argument: a JSON text is passed as it is, anything else encoded."""
    return argument if isinstance(argument, str) else json.dumps(argument)


def decode_answer(answer: Any) -> Any:
    """A SMART command's answer: a JSON object or array decoded, anything else as it came."""
    return json.loads(answer) if isinstance(answer, str) and answer[:1] in "{[" else answer


def command_json(device: tango.DeviceProxy, command: str, argument: dict[str, Any] | list[Any] | str) -> Any:
    """Run a SMART JSON command and decode its answer; a refusal stays a ``tango.DevFailed`` (for
    the tests of the refusals themselves). :func:`call_json` is the same for users."""
    return decode_answer(device.command_inout(command, encode_argument(argument)))


def error_of(exc: tango.DevFailed) -> tuple[str, str]:
    """(reason, desc) of the first error of a DevFailed: the SMART_* name and what to do."""
    err = exc.args[0]
    return str(err.reason), str(err.desc).strip()


def call_json(device: tango.DeviceProxy, command: str, argument: dict[str, Any] | list[Any] | str) -> Any:
    """Run a SMART JSON command and decode its answer; a refusal becomes a :class:`SmartMacroError`
    (see :func:`refused`), which a macro prints as any other refusal."""
    try:
        return command_json(device, command, argument)
    except tango.DevFailed as exc:
        raise refused(device.dev_name(), command, *error_of(exc)) from None


def stage_unit_per_um(mapper: tango.DeviceProxy) -> float:
    """How many stage units make one micrometre, from the mapper's ``StageUnit``.

    Refuses rather than guesses: a wrong unit would scale every step and half width by
    a factor of 1000."""
    try:
        unit = str(mapper.read_attribute("StageUnit").value)
    except tango.DevFailed as exc:
        raise SmartMacroError(f"cannot read the stage unit from {mapper.dev_name()}: {error_of(exc)[1]}") from None
    if unit not in UNIT_PER_UM:
        raise SmartMacroError(f"the stage unit '{unit}' of {mapper.dev_name()} is not one of "
                              f"{', '.join(UNIT_PER_UM)}; lengths in um cannot be converted")
    return UNIT_PER_UM[unit]


def position_range(motor: Any, name: str) -> tuple[float, float, str]:
    """``(low, high, unit)`` of a Sardana motor's Position limits, read from the motor now.

    ``motor`` is the Taurus motor a macro gets from ``self.getMotor(name)``. Its limits are read
    the way Sardana's own ``wm`` and ``set_lim`` read them: ``getPositionObj().getRange()``, a
    pair of Quantities in the motor's unit, an unset limit ("Not specified") as -inf / +inf --
    no limit text is parsed here. Taurus keeps that range up to date from Tango's configuration
    events, but an event is asynchronous: a limit set just before the macro runs could still be
    on its way. So the configuration is queried afresh (``getAttributeInfoEx(cache=False)``).
    Taurus keeps the old configuration when that query fails; old limits are not known limits,
    so a failed query is refused (SMART_Unsafe). Whether the range is known (finite, in order)
    is the caller's decision (``smart_support.known_range``)."""
    position = motor.getPositionObj()
    before = position.getAttributeInfoEx()
    if position.getAttributeInfoEx(cache=False) is before:
        raise SmartMacroError(f"SMART_Unsafe: the limits of {name} could not be read now (is the motor's "
                              "device running?), so no target can be checked; nothing moved")
    low, high = position.getRange()
    return float(low.magnitude), float(high.magnitude), f"{low.units:~}"


def map_points(mapper: tango.DeviceProxy, frame_from: str, frame_to: str, points: Sequence[Sequence[float]],
               stage_position: Sequence[float] | None = None) -> dict[str, Any]:
    """CoordMapperDS ``Map`` of ``points`` from one frame to another (at ``stage_position`` when
    the camera frame is involved)."""
    argument: dict[str, Any] = {"from": frame_from, "to": frame_to, "points": [list(map(float, p)) for p in points]}
    if stage_position is not None:
        argument["stage_position"] = [float(v) for v in stage_position]
    return call_json(mapper, "Map", argument)


def scan_columns(records: Sequence[Any], *names: str) -> list[np.ndarray]:
    """Columns of a Sardana scan's records, found by (a suffix of) their column names or aliases."""
    if not records:
        raise SmartMacroError("the scan returned no data")
    keys = list(records[0].data)
    columns = []
    for name in names:
        wanted = {name.lower(), device_of_alias(name).lower()}
        match = [k for k in keys if k.lower() in wanted or any(k.lower().endswith("/" + w) for w in wanted)]
        if not match:
            raise SmartMacroError(f"the scan has no column '{name}'; columns: {', '.join(map(str, keys))}")
        columns.append(np.array([float(r.data[match[0]]) for r in records]))
    return columns


@functools.lru_cache(maxsize=64)
def device_of_alias(name: str) -> str:
    """The device an alias names (the name itself when it is none). Scan records name channels
    by full device name; users and macros use aliases. Cached: an alias does not change while
    the MacroServer runs, and the loop asks for the same few on every particle."""
    try:
        return tango.Database().get_device_alias(name)
    except tango.DevFailed:
        return name
