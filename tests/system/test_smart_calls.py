"""How every client calls a SMART device (macros/smart_calls.py), against stand-in devices: the
stage unit, JSON commands, refusals with their reason and what to do. System tier because the
module is a Tango client (it imports tango); the devices here are plain objects. How the macros
read a motor's limits from a real Taurus motor is tested in test_console.py."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import tango
from taurus.core.units import UR, Quantity

from macros.smart_calls import call_json, command_json, decode_answer, position_range, stage_unit_per_um
from macros.smart_support import SmartMacroError


class _FakeMapper:
    """Just what stage_unit_per_um reads of a CoordMapperDS."""

    def __init__(self, unit: str) -> None:
        self.unit = unit

    def read_attribute(self, name: str):
        assert name == "StageUnit"
        return type("Value", (), {"value": self.unit})()

    def dev_name(self) -> str:
        return "test/coordmapper/1"


def test_stage_unit_comes_from_the_mapper_and_unknown_units_are_refused() -> None:
    assert stage_unit_per_um(_FakeMapper("mm")) == pytest.approx(1e-3)
    assert stage_unit_per_um(_FakeMapper("um")) == pytest.approx(1.0)
    assert stage_unit_per_um(_FakeMapper("nm")) == pytest.approx(1e3)
    with pytest.raises(SmartMacroError, match="deg"):
        stage_unit_per_um(_FakeMapper("deg"))


class _FakeDevice:
    """A device whose JSON command answers ``answer`` or refuses with ``reason``/``desc``."""

    def __init__(self, answer: str = "", reason: str = "", desc: str = "") -> None:
        self.answer, self.reason, self.desc = answer, reason, desc
        self.calls: list[tuple[str, str]] = []

    def command_inout(self, command: str, argument: str) -> str:
        self.calls.append((command, argument))
        if self.reason:
            error = tango.DevError()
            error.reason, error.desc, error.origin = self.reason, self.desc, "test"
            raise tango.DevFailed(error)
        return self.answer

    def dev_name(self) -> str:
        return "test/device/1"


def test_json_commands_are_encoded_once_and_answers_decoded() -> None:
    device = _FakeDevice(answer='{"count": 3}')
    assert call_json(device, "Detect", {"path": "/a.tif"}) == {"count": 3}
    assert call_json(device, "Detect", '{"path": "/b.tif"}') == {"count": 3}  # JSON text passes as it is
    assert [json.loads(arg) for _, arg in device.calls] == [{"path": "/a.tif"}, {"path": "/b.tif"}]
    assert decode_answer("plain text") == "plain text" and decode_answer([1, 2]) == [1, 2]


def test_a_refusal_keeps_its_reason_and_what_to_do() -> None:
    device = _FakeDevice(reason="SMART_BadArgument", desc=" 'step' must be positive\n")
    with pytest.raises(SmartMacroError) as refused:  # a macro prints it as any other refusal
        call_json(device, "Scan", {"step": -1})
    assert (refused.value.reason, refused.value.desc) == ("SMART_BadArgument", "'step' must be positive")
    assert str(refused.value) == "test/device/1.Scan: SMART_BadArgument: 'step' must be positive"
    with pytest.raises(tango.DevFailed):  # the tests of refusals see the DevFailed itself
        command_json(device, "Scan", {"step": -1})


def test_a_missing_beam_position_says_how_to_set_it() -> None:
    device = _FakeDevice(reason="SMART_NotReady", desc="BeamPosition is not set")
    with pytest.raises(SmartMacroError, match="smart_beam_set X Y"):
        call_json(device, "Map", {"from": "beam", "to": "stage", "points": [[0, 0]]})


class _FakePosition:
    """A Taurus Position attribute as ``position_range`` uses it: ``getAttributeInfoEx`` gives
    the configuration object, a new one when ``cache=False`` could query the device (Taurus
    keeps the old object when that query fails), and ``getRange`` the Quantities."""

    def __init__(self, low: float, high: float, unit: str, reachable: bool = True) -> None:
        self.range = [Quantity(low, UR.parse_units(unit)), Quantity(high, UR.parse_units(unit))]
        self.reachable, self.info, self.queries = reachable, object(), 0

    def getAttributeInfoEx(self, cache: bool = True) -> object:
        if not cache:
            self.queries += 1
            if self.reachable:
                self.info = object()
        return self.info

    def getRange(self) -> list[Quantity]:
        return self.range


def _motor(position: _FakePosition) -> SimpleNamespace:
    return SimpleNamespace(getPositionObj=lambda: position)


def test_motor_limits_are_numbers_in_the_motors_unit_read_afresh() -> None:
    position = _FakePosition(-11.5, 11.5, "mm")
    assert position_range(_motor(position), "samx") == (-11.5, 11.5, "mm")
    assert position.queries == 1
    unset = _FakePosition(-math.inf, math.inf, "um")  # Taurus's reading of "Not specified"
    assert position_range(_motor(unset), "samy") == (-math.inf, math.inf, "µm")


def test_limits_that_cannot_be_read_now_are_refused() -> None:
    stale = _FakePosition(-11.5, 11.5, "mm", reachable=False)
    with pytest.raises(SmartMacroError, match="SMART_Unsafe: the limits of samx could not be read now"):
        position_range(_motor(stale), "samx")
