"""The stage position a camera frame carries, in the order of the stage motors."""

from __future__ import annotations

import pytest

from macros.smart_support import SmartMacroError, stage_of_frame


def test_positions_come_in_the_motors_order_by_alias_or_device_attribute() -> None:
    stage = {"motor/smart_ctrl/2": 0.25, "samx": 1.5}
    assert stage_of_frame(stage, ["samx", "2"]) == [1.5, 0.25]
    assert stage_of_frame({"samy": 2.0, "samx": -1.0}, ("samx", "samy")) == [-1.0, 2.0]


def test_a_motor_the_frame_does_not_carry_is_named() -> None:
    with pytest.raises(SmartMacroError, match="no position for samy"):
        stage_of_frame({"samx": 1.0}, ["samx", "samy"])


def test_a_motor_the_camera_could_not_read_is_unknown_not_zero() -> None:
    with pytest.raises(SmartMacroError, match="no known position for samy"):
        stage_of_frame({"samx": 1.0, "samy": None}, ["samx", "samy"])
