"""The simulated microscope (tango-simlib, simulation/microscope) as a running server.

The fixture does not take the whole-stack ``stack`` fixture: it starts a database and only the
``SimMicroscope/smart`` entry of the project's own simulation/launch/smart.yaml with the same
launcher, so these tests exercise exactly what ``smart up`` starts, in a few seconds, and stop
their processes by PID. If the ``SimMicroscope`` console script is not installed yet, a
throw-away executable of that name on PATH runs ``python -m simulation.microscope.server``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator

import pytest
import tango
import yaml

from clients.launcher import DEFAULT_CONFIG, Stack
from simulation.config import CameraOptics
from simulation.microscope.backchannel import MicroscopeBackChannel
from simulation.microscope.overrides import parse_pairs
from simulation.microscope.server import SIMDD_FILE
from tests.tango_helpers import stack_proxy

SERVER = "SimMicroscope/smart"
MICROSCOPE = "smart/microscope/1"
SIMCONTROL = "smart/microscope/1-simcontrol"
EXPECTED_PIXEL_UM = {"low": 1.1, "mid": 0.55, "high": 0.275}


@pytest.fixture(scope="module")
def microscope_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("microscope")
    entry = yaml.safe_load(DEFAULT_CONFIG.read_text())["servers"][SERVER]
    config = run_dir / "microscope.yaml"
    config.write_text(yaml.safe_dump({"servers": {SERVER: entry}}))
    shim_dir = run_dir / "bin"
    shim_dir.mkdir()
    shim = shim_dir / "SimMicroscope"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m simulation.microscope.server "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    saved_path = os.environ["PATH"]
    os.environ["PATH"] = f"{saved_path}{os.pathsep}{shim_dir}"  # the installed script wins if present
    launched = Stack(run_dir, config_path=config, echo=False)
    try:
        launched.up()
        yield launched
    finally:
        launched.down(quiet=True)
        os.environ["PATH"] = saved_path


def _proxy(stack: Stack, name: str) -> tango.DeviceProxy:
    return stack_proxy(stack, name, timeout_ms=3000)


@pytest.fixture
def microscope(microscope_stack: Stack) -> Iterator[tango.DeviceProxy]:
    """The microscope at its start-up settings, healthy, whatever the previous test left."""
    proxy = _proxy(microscope_stack, MICROSCOPE)
    back = _back_channel(microscope_stack)
    back.clear_fault()
    proxy.write_attribute("Zoom", "mid")
    proxy.write_attribute("Illumination", 50.0)
    yield proxy
    back.clear_fault()


def _back_channel(stack: Stack) -> MicroscopeBackChannel:
    return MicroscopeBackChannel(f"tango://{stack.tango_host}/{SIMCONTROL}")


# ------------------------------------------------------------ configuration, no processes
def test_launch_config_registers_microscope_and_its_simcontrol() -> None:
    entry = yaml.safe_load(DEFAULT_CONFIG.read_text())["servers"][SERVER]
    assert set(entry) == {"SimMicroscope", "SimMicroscopeSimControl"}
    assert float(entry["SimMicroscope"][MICROSCOPE]["min_update_period"]) == 0
    assert entry["SimMicroscopeSimControl"] == {SIMCONTROL: {"model_key": MICROSCOPE}}


def test_zoom_levels_agree_with_the_camera_renderer() -> None:
    """The microscope's pixel sizes and the simulated camera's must be the same numbers."""
    props = {p["propertyData"]["name"]: p["propertyData"]["DefaultPropValue"]
             for p in json.loads(SIMDD_FILE.read_text())["deviceProperties"]}
    levels = parse_pairs(props["ZoomLevels"], float)
    assert levels == EXPECTED_PIXEL_UM
    assert {name: z.pixel_size_um for name, z in CameraOptics().zooms.items()} == levels


# ------------------------------------------------------------------- the running server
def test_starts_on_and_exported(microscope_stack: Stack) -> None:
    db = tango.Database(*microscope_stack.tango_host.split(":"))
    assert db.get_device_info(MICROSCOPE).exported
    proxy = _proxy(microscope_stack, MICROSCOPE)
    assert proxy.state() == tango.DevState.ON
    assert "ready" in proxy.status()
    assert proxy.read_attribute("PixelSize").value > 0
    assert proxy.get_attribute_config("PixelSize").unit == "um/px"


@pytest.mark.parametrize("zoom", ["low", "high", "mid", "high", "low"])
def test_pixel_size_follows_zoom(microscope: tango.DeviceProxy, zoom: str) -> None:
    microscope.write_attribute("Zoom", zoom)
    assert microscope.read_attribute("Zoom").value == zoom
    assert microscope.read_attribute("PixelSize").value == pytest.approx(EXPECTED_PIXEL_UM[zoom])
    assert f"zoom {zoom}" in microscope.status()


def test_unknown_zoom_is_refused_and_pixel_size_kept(microscope: tango.DeviceProxy) -> None:
    microscope.write_attribute("Zoom", "high")
    microscope.write_attribute("Zoom", "huge")
    assert microscope.read_attribute("Zoom").value == "high"
    assert microscope.read_attribute("PixelSize").value == pytest.approx(0.275)


def test_pixel_size_is_read_only(microscope: tango.DeviceProxy) -> None:
    with pytest.raises(tango.DevFailed):
        microscope.write_attribute("PixelSize", 3.0)
    assert microscope.read_attribute("PixelSize").value == pytest.approx(0.55)


def test_illumination_range_is_enforced(microscope: tango.DeviceProxy) -> None:
    microscope.write_attribute("Illumination", 75.0)
    assert microscope.read_attribute("Illumination").value == pytest.approx(75.0)
    for bad in (150.0, -1.0):
        with pytest.raises(tango.DevFailed) as failure:
            microscope.write_attribute("Illumination", bad)
        assert failure.value.args[0].reason == "API_WAttrOutsideLimit"
    assert microscope.read_attribute("Illumination").value == pytest.approx(75.0)


def test_fault_injected_through_simcontrol_and_cleared(microscope_stack: Stack,
                                                       microscope: tango.DeviceProxy) -> None:
    back = _back_channel(microscope_stack)
    back.inject_fault(1)
    assert microscope.state() == tango.DevState.FAULT
    assert "illumination lamp failure" in microscope.status()
    assert microscope.read_attribute("FaultCode").value == 1
    back.clear_fault()
    assert microscope.state() == tango.DevState.ON
    assert "FAULT" not in microscope.status()


def test_fault_without_a_name_still_says_which(microscope_stack: Stack, microscope: tango.DeviceProxy) -> None:
    back = _back_channel(microscope_stack)
    back.inject_fault(7)
    assert microscope.state() == tango.DevState.FAULT
    assert "simulated fault 7" in microscope.status()


def test_back_channel_refuses_unknown_quantity_and_code_zero(microscope_stack: Stack) -> None:
    back = _back_channel(microscope_stack)
    with pytest.raises(ValueError, match="not a simulated quantity"):
        back.set_quantity("Focus", 1.0)
    with pytest.raises(ValueError, match="clear_fault"):
        back.inject_fault(0)


def test_simcontrol_can_drive_illumination_behind_the_interface(microscope_stack: Stack,
                                                                microscope: tango.DeviceProxy) -> None:
    _back_channel(microscope_stack).set_quantity("Illumination", 12.5)
    assert microscope.read_attribute("Illumination").value == pytest.approx(12.5)
    assert "illumination 12.5 %" in microscope.status()
