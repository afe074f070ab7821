"""CoordMapperDS as a Tango device: every command and error path, persistence across a
killed server with the real database, and the real Sardana motor limits.

(a) a server process on a file database (no database server): commands, SMART_* errors, nothing changed by a
    refused call, State/Status with unreachable motors and a corrupt stored graph.
(b) own small stack (pytango-db): the graph, beam position and history survive SIGKILL.
(c) the session ``stack``: within_limits follows the limits of samx/samy, read per Map.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import tango

from clients.file_db_server import stop_process, wait_answering
from clients.launcher import Stack
from macros.smart_calls import command_json as _call
from macros.smart_calls import proxy as device_proxy
from servers.common.motor_limits import known_limits
from servers.CoordMapperDS.device import CoordMapperDS
from servers.CoordMapperDS.property_lines import join_chunks, split_chunks
from tests.device_server import serve_devices
from tests.fake_devices import UnsavableCoordMapper
from tests.system.conftest import device_trl

A = [[0.00055, 0.0, 0.0], [0.0, -0.00055, 0.0], [0.0, 0.0, 1.0]]
"""Camera calibration of the documented worked example (mm/px, image y flipped)."""
CALIBRATION_STEPS = [[0.055, 0, -100, 0], [0, 0.055, 0, 100], [-0.055, 0, 100, 0], [0, -0.055, 0, -100],
                     [0.055, 0.055, -100, 100]]
SEM_TO_CAMERA = [[0.02, 0.0, 400.0], [0.0, 0.02, 300.0], [0.0, 0.0, 1.0]]


def _refused(proxy: tango.DeviceProxy, command: str, argument: Any, reason: str, *words: str) -> str:
    """Call, expect ``reason``; check the graph is untouched and the desc names ``words``."""
    before = (proxy.Transforms, proxy.History)
    with pytest.raises(tango.DevFailed) as info:
        _call(proxy, command, argument)
    error = info.value.args[0]
    assert error.reason == reason, error.desc
    for word in words:
        assert word.lower() in error.desc.lower(), error.desc
    assert (proxy.Transforms, proxy.History) == before
    return error.desc


def _example_graph(proxy: tango.DeviceProxy) -> None:
    """The worked example of docs/coordmapper.md: calibration, beam, SEM registered to the camera."""
    proxy.write_attribute("BeamPosition", [768.0, 551.0])
    _call(proxy, "CalibrateCamera", {"steps": CALIBRATION_STEPS, "model": "affine"})
    _call(proxy, "SetTransform", {"from": "sem", "to": "camera", "matrix": SEM_TO_CAMERA,
                                  "stage_position": [50.0, 50.0], "sigma": 0.3})


@contextmanager
def _served(folder: Path, properties: dict[str, Any] | None = None,
            cls: type[CoordMapperDS] = CoordMapperDS) -> Iterator[tango.DeviceProxy]:
    """One CoordMapperDS (or ``cls``) in its own server process with a file database."""
    name = "test/coordmapper/nodb"
    with serve_devices([cls], {name: (cls.__name__, properties or {})}, folder) as trls:
        yield tango.DeviceProxy(trls[name])


@pytest.fixture(scope="module")
def mapper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tango.DeviceProxy]:
    """One CoordMapperDS without motors in its own process (no database)."""
    with _served(tmp_path_factory.mktemp("mapper")) as proxy:
        proxy.set_timeout_millis(5000)
        _example_graph(proxy)
        yield proxy


# ------------------------------------------------------------------------ (a)
def test_worked_example_through_the_device(mapper: tango.DeviceProxy) -> None:
    assert mapper.state() == tango.DevState.ON
    assert list(mapper.Frames) == ["stage", "camera", "sem"]
    assert mapper.StageUnit == "mm"
    assert list(mapper.BeamPosition) == [768.0, 551.0]
    live = _call(mapper, "Map", {"from": "camera", "to": "stage", "points": [[868, 451]],
                                 "stage_position": [50.1496, 50.2211]})
    np.testing.assert_allclose(live["points"], [[50.2046, 50.2761]], atol=1e-9)
    assert live["unit"] == "mm"
    sem = _call(mapper, "Map", {"from": "sem", "to": "stage", "points": [[5000, 2500]]})
    np.testing.assert_allclose(sem["points"], [[49.8526, 50.11055]], atol=1e-9)
    assert sem["uncertainty"][0] == pytest.approx(0.3 * math.sqrt(2) * 0.00055, rel=0.05)
    back = _call(mapper, "Map", {"from": "sem", "to": "camera", "points": [[5000, 2500]],
                                 "stage_position": [50.1, 50.0]})
    np.testing.assert_allclose(back["points"], [[768 - (50.1 - 49.8526) / 0.00055, 350.0]], atol=1e-9)
    # without motors the limits are unknown: nothing is declared safe to drive to
    assert sem["within_limits"] == [False]
    assert "no motors are configured" in sem["warnings"][0]


def test_fit_transform_and_remove_frame(mapper: tango.DeviceProxy) -> None:
    truth = np.array([[0.001, 0.0002, 3.0], [-0.0002, 0.001, 4.0]])
    src = np.array([[0, 0], [1000, 0], [0, 1000], [1000, 1000], [500, 300]], dtype=float)
    dst = src @ truth[:, :2].T + truth[:, 2]
    pairs = np.hstack([src, dst]).tolist()
    fit = _call(mapper, "FitTransform", {"from": "xrf", "to": "stage", "pairs": pairs, "model": "affine"})
    np.testing.assert_allclose(np.array(fit["matrix"])[:2], truth, atol=1e-9)
    assert fit["rms"] < 1e-9 and len(fit["residuals"]) == 5
    assert "xrf" in mapper.Frames
    assert json.loads(mapper.History)[-1]["command"] == "FitTransform"
    removed = json.loads(mapper.RemoveFrame("xrf"))
    assert removed["frame"] == "xrf" and removed["removed_edges"] == [["stage", "xrf"]]
    assert "xrf" not in mapper.Frames
    assert json.loads(mapper.History)[-1]["command"] == "RemoveFrame"


def test_refusals_name_the_problem_and_change_nothing(mapper: tango.DeviceProxy) -> None:
    bad, notfound = "SMART_BadArgument", "SMART_NotFound"
    identity = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    _refused(mapper, "Map", {"from": "nowhere", "to": "stage", "points": [[1, 2]]}, notfound, "nowhere", "frames")
    _call(mapper, "SetTransform", {"from": "island_a", "to": "island_b", "matrix": identity})
    _refused(mapper, "Map", {"from": "island_a", "to": "stage", "points": [[1, 2]]}, notfound, "island_a")
    _refused(mapper, "SetTransform", {"from": "a", "to": "stage", "matrix": [[1, 2, 0], [2, 4, 0], [0, 0, 1]]},
             bad, "singular")
    _refused(mapper, "SetTransform", '{"from": "a", "to": "stage", "matrix": [[NaN, 0, 0], [0, 1, 0], [0, 0, 1]]}',
             bad, "NaN")
    _refused(mapper, "SetTransform", '{"from": "a", "to": "stage", "matrix": [[1e400, 0, 0], [0, 1, 0], [0, 0, 1]]}',
             bad, "matrix")
    _refused(mapper, "SetTransform", {"from": "a", "to": "stage", "matrix": [[1, 0, 0], [0, 1, 0], [0.1, 0, 1]]},
             bad, "bottom row")
    _refused(mapper, "SetTransform", {"from": "sem", "to": "camera", "matrix": identity}, bad, "stage_position")
    _refused(mapper, "SetTransform", {"from": "sem", "to": "stage", "matrix": identity, "to_unit": "um"},
             bad, "mm")
    _refused(mapper, "FitTransform", {"from": "a", "to": "stage", "pairs": [[0, 0, 1, 1], [1, 0, 2, 1]],
                                      "model": "affine"}, bad, "at least 3 pairs")
    _refused(mapper, "FitTransform", {"from": "a", "to": "stage", "pairs": [[0, 0, 1, 1], [1, 1, 2, 2],
                                                                            [2, 2, 3, 3]], "model": "affine"},
             bad, "collinear")
    _refused(mapper, "CalibrateCamera", {"steps": [[0.1, 0, 10, 0]], "model": "affine"}, bad, "pairs")
    _refused(mapper, "Map", '{"from": "sem", "to": "stage", "points": [[NaN, 1]]}', bad, "NaN")
    _refused(mapper, "Map", {"from": "sem", "to": "stage", "points": []}, bad, "points")
    _refused(mapper, "Map", {"from": "sem", "to": "stage", "points": [[1, 2]], "colour": "red"}, bad,
             "unknown key 'colour'")
    _refused(mapper, "Map", '{"from": "sem", "to": ', bad, "not valid JSON")
    _refused(mapper, "Map", "", bad, "empty")
    _refused(mapper, "Map", "[1, 2]", bad, "JSON object")
    before = (mapper.Transforms, mapper.History)
    for name, reason in (("nowhere", notfound), ("stage", bad), ("", bad)):
        with pytest.raises(tango.DevFailed) as info:
            mapper.RemoveFrame(name)
        assert info.value.args[0].reason == reason
    for value, reason in (([1.0], bad), ([1e9, 0.0], "API_WAttrOutsideLimit")):  # the latter: Tango limits
        with pytest.raises(tango.DevFailed) as info:
            mapper.write_attribute("BeamPosition", value)
        assert info.value.args[0].reason == reason
        assert "BeamPosition" in info.value.args[0].desc
    for value in ([float("nan"), 1.0], [1.0, 2.0, 3.0]):  # Tango itself refuses these before the device
        with pytest.raises(tango.DevFailed) as info:
            mapper.write_attribute("BeamPosition", value)
        assert info.value.args[0].reason == "API_WAttrOutsideLimit"
    assert (mapper.Transforms, mapper.History) == before
    assert list(mapper.BeamPosition) == [768.0, 551.0]
    mapper.RemoveFrame("island_a")
    mapper.RemoveFrame("island_b")


def test_camera_map_without_motors_uses_the_stored_camera_frame(mapper: tango.DeviceProxy) -> None:
    """No motors configured: a camera Map without stage_position falls back to the core's rule."""
    result = _call(mapper, "Map", {"from": "camera", "to": "sem", "points": [[500, 350]]})
    np.testing.assert_allclose(result["points"], [[5000, 2500]], atol=1e-9)
    assert "stage_position_used" not in result


def test_every_attribute_is_described(mapper: tango.DeviceProxy) -> None:
    for name in ("Frames", "Transforms", "History", "BeamPosition", "StageUnit"):
        config = mapper.get_attribute_config(name)
        assert config.unit and config.label and config.format and config.description, name
        assert config.description != "No description", name
    assert mapper.get_attribute_config("BeamPosition").writable == tango.AttrWriteType.READ_WRITE


def test_unset_beam_position_is_invalid_and_camera_maps_wait_for_it(tmp_path: Path) -> None:
    with _served(tmp_path) as proxy:
        assert proxy.read_attribute("BeamPosition").quality == tango.AttrQuality.ATTR_INVALID
        _call(proxy, "CalibrateCamera", {"steps": CALIBRATION_STEPS})
        _refused(proxy, "Map", {"from": "camera", "to": "stage", "points": [[1, 2]], "stage_position": [0, 0]},
                 "SMART_NotReady", "BeamPosition")


def test_unreachable_motors_alarm_but_map_still_works(tmp_path: Path) -> None:
    nowhere = "tango://127.0.0.1:1/no/such/motor#dbase=no"
    with _served(tmp_path, {"MotorX": nowhere, "MotorY": nowhere}) as proxy:
        proxy.set_timeout_millis(10000)
        assert proxy.state() == tango.DevState.ALARM
        assert "cannot be read" in proxy.status() and "no/such/motor" in proxy.status()
        _example_graph(proxy)
        sem = _call(proxy, "Map", {"from": "sem", "to": "stage", "points": [[5000, 2500]]})
        np.testing.assert_allclose(sem["points"], [[49.8526, 50.11055]], atol=1e-9)
        assert sem["within_limits"] == [False]
        assert "cannot be read" in sem["warnings"][0]
        # the current camera frame is unknown without the motors: refuse rather than guess
        _refused(proxy, "Map", {"from": "camera", "to": "stage", "points": [[1, 2]]}, "SMART_NotReady",
                 "stage_position", "cannot be read")
        given = _call(proxy, "Map", {"from": "camera", "to": "stage", "points": [[868, 451]],
                                     "stage_position": [50.1496, 50.2211]})
        np.testing.assert_allclose(given["points"], [[50.2046, 50.2761]], atol=1e-9)
        assert proxy.state() == tango.DevState.ALARM


def test_corrupt_stored_graph_is_a_fault_not_an_empty_graph(tmp_path: Path) -> None:
    with _served(tmp_path, {"GraphState": ['{"format": "smart-coordmapper", "version": 1']}) as proxy:
        assert proxy.state() == tango.DevState.FAULT
        assert "GraphState" in proxy.status() and "cannot be loaded" in proxy.status()
        for call in (lambda: proxy.Frames, lambda: proxy.Transforms,
                     lambda: _call(proxy, "SetTransform", {"from": "a", "to": "stage",
                                                           "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]})):
            with pytest.raises(tango.DevFailed) as info:
                call()
            assert info.value.args[0].reason == "SMART_NotReady"
            assert "GraphState" in info.value.args[0].desc


def test_property_chunks_join_back_and_never_cut_at_spaces() -> None:
    text = json.dumps({"history": [{"command": " x\\ y\t " * 50, "n": i, "v": 0.1 + i} for i in range(400)]})
    chunks = split_chunks(text, 100)
    assert json.loads(join_chunks(chunks)) == json.loads(text)
    assert all(len(c) <= 100 and not any(ch.isspace() for ch in c) for c in chunks)
    assert json.loads(join_chunks(split_chunks('"short"'))) == "short"


def test_failed_database_write_undoes_the_change(tmp_path: Path) -> None:
    """A change whose database write fails is refused and undone: memory and DB still agree."""
    with _served(tmp_path, cls=UnsavableCoordMapper) as proxy:
        before = (proxy.Transforms, proxy.History, proxy.read_attribute("BeamPosition").quality)
        desc = _refused(proxy, "SetTransform", {"from": "afm", "to": "stage",
                                                "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]},
                        "SMART_Failed", "could not be saved", "read-only", "undone")
        assert "afm" not in proxy.Frames, desc
        with pytest.raises(tango.DevFailed) as info:
            proxy.write_attribute("BeamPosition", [1.0, 2.0])
        assert info.value.args[0].reason == "SMART_Failed"
        assert (proxy.Transforms, proxy.History, proxy.read_attribute("BeamPosition").quality) == before


# ------------------------------------------------------------------------ (b)
def _small_config(tmp_path: Path) -> Path:
    config = tmp_path / "small.yaml"
    config.write_text("servers:\n  CoordMapperDS/t1:\n    CoordMapperDS:\n      test/coordmapper/1: {}\n")
    return config


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, list[subprocess.Popen]]]:
    tmp = tmp_path_factory.mktemp("coordmapper")
    stack = Stack(tmp / "run", _small_config(tmp), echo=False)
    restarted: list[subprocess.Popen] = []
    try:
        stack.up()
        yield stack, restarted
    finally:
        for proc in restarted:
            stop_process(proc)
        stack.down(quiet=True)


def _answers(proxy: tango.DeviceProxy) -> list[dict[str, Any]]:
    requests = [{"from": "sem", "to": "stage", "points": [[5000, 2500], [0, 0], [123.4, 5678.9]]},
                {"from": "xrf", "to": "sem", "points": [[10, 20]]},
                {"from": "sem", "to": "camera", "points": [[5000, 2500]], "stage_position": [50.1, 50.0]},
                {"from": "camera", "to": "stage", "points": [[868, 451]], "stage_position": [50.1496, 50.2211]}]
    return [_call(proxy, "Map", r) for r in requests]


def test_graph_beam_and_history_survive_a_killed_server(own_stack) -> None:
    stack, restarted = own_stack
    trl = f"tango://{stack.tango_host}/test/coordmapper/1"
    proxy = wait_answering(trl)
    _example_graph(proxy)
    _call(proxy, "FitTransform", {"from": "xrf", "to": "stage", "model": "similarity", "pairs": [
        [0, 0, 49.0, 49.0], [100, 0, 49.1, 49.0001], [0, 100, 48.9999, 49.1], [100, 100, 49.1002, 49.0999]]})
    before = _answers(proxy)
    transforms, history = proxy.Transforms, proxy.History
    assert len(json.loads(history)) == 4
    db = tango.Database(*stack.tango_host.split(":"))
    stored = join_chunks(db.get_device_property("test/coordmapper/1", "GraphState")["GraphState"])
    assert json.loads(stored)["beam_position"] == [768.0, 551.0]

    server = stack.processes["CoordMapperDS/t1"]
    crashed = psutil.Process(server.pid)
    crashed.send_signal(signal.SIGKILL)
    crashed.wait(10)  # and reaped: no zombie left in the test process
    assert not server.is_alive()
    with open(server.log, "ab") as log:
        restarted.append(subprocess.Popen(server.cmd, stdout=log, stderr=subprocess.STDOUT, env=stack.env(),
                                          cwd=stack.run_dir, start_new_session=True))
    proxy = wait_answering(trl)
    assert proxy.state() == tango.DevState.ON
    assert list(proxy.BeamPosition) == [768.0, 551.0]
    assert proxy.History == history
    assert proxy.Transforms == transforms
    after = _answers(proxy)
    for first, second in zip(before, after, strict=True):
        np.testing.assert_allclose(second["points"], first["points"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(second["uncertainty"], first["uncertainty"], rtol=0, atol=1e-12)
        assert second["path"] == first["path"]


def test_refused_command_does_not_touch_the_stored_property(own_stack) -> None:
    stack, _ = own_stack
    proxy = wait_answering(f"tango://{stack.tango_host}/test/coordmapper/1")
    db = tango.Database(*stack.tango_host.split(":"))
    stored = db.get_device_property("test/coordmapper/1", "GraphState")["GraphState"]
    _refused(proxy, "SetTransform", {"from": "a", "to": "stage", "matrix": [[0, 0, 0], [0, 0, 0], [0, 0, 1]]},
             "SMART_BadArgument")
    assert db.get_device_property("test/coordmapper/1", "GraphState")["GraphState"] == stored


def test_corrupt_property_in_the_database_faults_until_fixed(own_stack) -> None:
    stack, _ = own_stack
    proxy = wait_answering(f"tango://{stack.tango_host}/test/coordmapper/1")
    db = tango.Database(*stack.tango_host.split(":"))
    good = db.get_device_property("test/coordmapper/1", "GraphState")["GraphState"]
    transforms = proxy.Transforms
    db.put_device_property("test/coordmapper/1", {"GraphState": ["{not json"]})
    try:
        proxy.Init()
        assert proxy.state() == tango.DevState.FAULT
        assert "cannot be loaded" in proxy.status()
    finally:
        db.put_device_property("test/coordmapper/1", {"GraphState": list(good)})
    proxy.Init()
    assert proxy.state() == tango.DevState.ON
    assert proxy.Transforms == transforms


# ------------------------------------------------------------------------ (c)
def _limits(motor: tango.DeviceProxy) -> tuple[float, float]:
    """The motor's limits, read by CoordMapperDS's rule; (-inf, inf) when it has none."""
    config = motor.get_attribute_config("Position")
    return known_limits(config.min_value, config.max_value) or (-math.inf, math.inf)


@pytest.fixture()
def limited_motors(stack: Stack) -> Iterator[dict[str, tuple[float, float]]]:
    """samx/samy with their own limits if they have some, else temporary ones (restored after)."""
    saved: dict[str, Any] = {}
    limits: dict[str, tuple[float, float]] = {}
    for name, default in (("samx", (-2.0, 3.0)), ("samy", (-4.0, 1.5))):
        motor = tango.DeviceProxy(device_trl(stack, name))
        low, high = _limits(motor)
        if not (math.isfinite(low) and math.isfinite(high)):
            config = motor.get_attribute_config("Position")
            saved[name] = (config.min_value, config.max_value)
            config.min_value, config.max_value = str(default[0]), str(default[1])
            motor.set_attribute_config(config)
            low, high = _limits(motor)
        limits[name] = (low, high)
    try:
        yield limits
    finally:
        for name, (low_text, high_text) in saved.items():
            motor = tango.DeviceProxy(device_trl(stack, name))
            config = motor.get_attribute_config("Position")
            config.min_value, config.max_value = low_text, high_text
            motor.set_attribute_config(config)


def test_within_limits_follows_the_real_motor_limits(stack: Stack, limited_motors) -> None:
    mapper = device_proxy(device_trl(stack, "smart/coordmapper/1"), 10000)
    (xlow, xhigh), (ylow, yhigh) = limited_motors["samx"], limited_motors["samy"]
    inside = [[xlow + 0.01, ylow + 0.01], [xhigh - 0.01, yhigh - 0.01], [(xlow + xhigh) / 2, (ylow + yhigh) / 2]]
    outside = [[xlow - 0.01, ylow + 0.01], [xhigh + 0.01, yhigh - 0.01], [xlow + 0.01, ylow - 0.01],
               [xhigh - 0.01, yhigh + 0.01]]
    result = _call(mapper, "Map", {"from": "stage", "to": "stage", "points": inside + outside})
    assert result["within_limits"] == [True] * 3 + [False] * 4
    assert result["unit"] == "mm" and mapper.StageUnit == "mm"
    assert mapper.state() == tango.DevState.ON

    # limits are read on every Map: narrowing samx makes the middle point unsafe at once
    samx = tango.DeviceProxy(device_trl(stack, "samx"))
    config = samx.get_attribute_config("Position")
    old = (config.min_value, config.max_value)
    config.min_value, config.max_value = str(xlow), str((xlow + xhigh) / 2 - 0.001)
    samx.set_attribute_config(config)
    try:
        narrowed = _call(mapper, "Map", {"from": "stage", "to": "stage", "points": inside})
        assert narrowed["within_limits"] == [True, False, False]
    finally:
        config = samx.get_attribute_config("Position")
        config.min_value, config.max_value = old
        samx.set_attribute_config(config)


def test_camera_map_without_stage_position_uses_the_current_motor_positions(stack: Stack, limited_motors) -> None:
    """A second CoordMapperDS on samx/samy in the stack's database, started and stopped here."""
    db = tango.Database(*stack.tango_host.split(":"))
    info = tango.DbDevInfo()
    info.name, info._class, info.server = "test/coordmapper/live", "CoordMapperDS", "CoordMapperDS/livetest"
    db.add_device(info)
    db.put_device_property(info.name, {"MotorX": ["samx"], "MotorY": ["samy"]})
    cmd = [str(Path(os.sys.executable).parent / "CoordMapperDS"), "livetest", "-ORBendPoint", "giop:tcp:127.0.0.1:0"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=stack.env(),
                              start_new_session=True)
    try:
        proxy = wait_answering(device_trl(stack, info.name))
        assert proxy.state() == tango.DevState.ON
        assert "samx/samy in mm" in proxy.status()
        proxy.write_attribute("BeamPosition", [768.0, 551.0])
        _call(proxy, "CalibrateCamera", {"steps": CALIBRATION_STEPS})
        now = [tango.DeviceProxy(device_trl(stack, m)).read_attribute("Position").value for m in ("samx", "samy")]
        result = _call(proxy, "Map", {"from": "camera", "to": "stage", "points": [[768, 551], [868, 451]]})
        assert result["stage_position_used"] == pytest.approx(now, abs=1e-9)
        np.testing.assert_allclose(result["points"], [now, [now[0] + 0.055, now[1] + 0.055]], atol=1e-9)
        (xlow, xhigh), (ylow, yhigh) = limited_motors["samx"], limited_motors["samy"]
        assert result["within_limits"][0] == (xlow <= now[0] <= xhigh and ylow <= now[1] <= yhigh)
    finally:
        stop_process(server)
        db.delete_server("CoordMapperDS/livetest")
