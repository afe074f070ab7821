"""ParticleDS through Tango: the public interface, its refusals, state, events, memorized settings.

Most tests run the device without a database (in its own server process) beside
a small fake camera whose Image attribute is addressed by its full TRL, exactly as a
beamline camera would be. The tests that need the database (memorized settings surviving a
restart, names resolved through the database, the real camera of the stack) use a real
pytango-db.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tango
import tifffile
from tango import AttrWriteType, DevState
from taurus.core.util.codecs import CodecFactory

from clients.file_db_server import stop_process, wait_answering
from clients.launcher import Stack
from macros.smart_calls import proxy as device_proxy
from servers.ParticleDS.annotate import CROWDED_RGB, ISOLATED_RGB
from servers.ParticleDS.device import ParticleDS
from tests.device_server import serve_devices
from tests.fake_devices import SPOTS, SPOTS_LAYOUT, SpotsCamera
from tests.serve_devices import SERVER_NAME
from tests.system.conftest import device_trl
from tests.tango_helpers import desc as _desc
from tests.tango_helpers import reason as _reason
from tests.unit.particles.synthetic import render_spots

SETTINGS = {"Diameter": 7, "MinMass": 200.0, "Separation": 5.0, "IsolationRadius": 20.0, "NoiseSize": 1.0,
            "MaxSize": 0.0, "Threshold": 0.0, "Percentile": 64.0, "Invert": False, "Method": "locate"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("particles")
    paths = {"spots": folder / "spots.tif", "flat": folder / "flat.tif", "big": folder / "big.tif"}
    tifffile.imwrite(paths["spots"], SPOTS)
    tifffile.imwrite(paths["flat"], np.full((64, 64), 7, np.uint8))
    rng = np.random.default_rng(5)
    tifffile.imwrite(paths["big"], render_spots((2048, 2048), rng.uniform(20, 2028, (1500, 2)), sigma=1.5,
                                                peak=150, background=20, noise=3, seed=3, dtype=np.uint16))
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Full TRL of the fake camera's device (no database: it ends in '#dbase=no')."""
    with serve_devices([SpotsCamera], {"test/fakecamera/1": ("SpotsCamera", {})},
                       tmp_path_factory.mktemp("fakecamera")) as trls:
        yield trls["test/fakecamera/1"]


def _attr(device_trl_: str, name: str) -> str:
    base, _, fragment = device_trl_.partition("#")
    return f"{base}/{name}#{fragment}" if fragment else f"{base}/{name}"


@contextmanager
def _particles(name: str, folder: Path) -> Iterator[tango.DeviceProxy]:
    """One ParticleDS (``name``) in its own server process without a database."""
    with serve_devices([ParticleDS], {name: ("ParticleDS", {})}, folder) as trls:
        yield tango.DeviceProxy(trls[name])


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tango.DeviceProxy]:
    with _particles("test/particles/1", tmp_path_factory.mktemp("particles1")) as proxy:
        proxy.set_timeout_millis(30_000)
        yield proxy


@pytest.fixture
def dev(shared: tango.DeviceProxy, files: dict[str, str]) -> tango.DeviceProxy:
    """The shared device with known settings and a fresh detection of the spots image."""
    for name, value in SETTINGS.items():
        shared.write_attribute(name, value)
    shared.Detect(json.dumps({"path": files["spots"]}))
    return shared


def _results(dev: tango.DeviceProxy) -> dict[str, object]:
    return {name: dev.read_attribute(name).value for name in ("Count", "X", "Y", "Isolated", "Table")}


def _assert_same(before: dict[str, object], after: dict[str, object]) -> None:
    assert after["Count"] == before["Count"]
    assert after["Table"] == before["Table"]
    np.testing.assert_array_equal(after["X"], before["X"])
    np.testing.assert_array_equal(after["Isolated"], before["Isolated"])


# ------------------------------------------------------------------------ fresh device
def test_fresh_device_is_ready_and_explains_what_is_missing(tmp_path: Path) -> None:
    with _particles("test/particles/9", tmp_path / "server") as fresh:
        assert fresh.state() == DevState.ON
        assert "no detection yet" in fresh.status().lower()
        assert fresh.Count == 0 and fresh.IsolatedCount == 0
        assert fresh.X is None or len(fresh.X) == 0  # empty spectra read as None in pytango
        assert fresh.Table == "[]" and fresh.LastResult == "{}"
        assert fresh.Diameter == 11 and fresh.Method == "locate" and fresh.NoiseSize == 1.0
        for name in ("Diameter", "Separation", "Invert", "Method", "IsolationRadius"):  # forms show these
            setting = fresh.read_attribute(name)
            assert setting.w_value == setting.value, name
        with pytest.raises(tango.DevFailed) as excinfo:
            fresh.read_attribute("AnnotatedImage")
        assert _reason(excinfo) == "SMART_NotReady" and "Detect" in _desc(excinfo)
        with pytest.raises(tango.DevFailed) as excinfo:
            fresh.ExportCsv(str(tmp_path / "p.csv"))
        assert _reason(excinfo) == "SMART_NotReady"
        with pytest.raises(tango.DevFailed) as excinfo:
            fresh.Detect("{}")
        assert _reason(excinfo) == "SMART_NotReady" and "'path'" in _desc(excinfo)
        assert not (tmp_path / "p.csv").exists()


def test_every_attribute_is_described_and_settings_are_memorized(shared: tango.DeviceProxy) -> None:
    settings = list(SETTINGS)
    results = ["Count", "IsolatedCount", "X", "Y", "Mass", "Size", "Eccentricity", "Signal", "Isolated",
               "NearestNeighbour", "Multiplicity", "Table", "LastResult", "AnnotatedImage", "AnnotatedImageRGB",
               "AnnotatedImageJPEG"]
    names = set(shared.get_attribute_list())
    assert set(settings + results) <= names
    for name in settings + results:
        config = shared.get_attribute_config(name)
        assert config.unit.strip(), name
        assert config.label.strip() and config.format.strip(), name
        assert config.description.strip() and config.description != "No description", name
        expected = AttrWriteType.READ_WRITE if name in settings else AttrWriteType.READ
        assert config.writable == expected, name
        if name in settings:
            assert config.memorized == tango.AttrMemorizedType.MEMORIZED_WRITE_INIT, name
    assert shared.get_attribute_config("X").max_dim_x >= 100_000
    assert shared.get_attribute_config("MinMass").format == "%.6g"
    assert shared.get_attribute_config("IsolationRadius").label == "Isolation radius"
    image = shared.get_attribute_config("AnnotatedImage")
    assert image.data_format == tango.AttrDataFormat.IMAGE and image.data_type == tango.CmdArgType.DevUChar
    assert image.max_dim_x >= 8192 and image.max_dim_y >= 8192
    assert shared.get_attribute_config("AnnotatedImageRGB").data_type == tango.CmdArgType.DevEncoded
    assert shared.get_attribute_config("AnnotatedImageJPEG").data_type == tango.CmdArgType.DevEncoded


# --------------------------------------------------------------------------- detection
def test_detect_from_a_file_publishes_every_result(dev: tango.DeviceProxy, files: dict[str, str]) -> None:
    reply = json.loads(dev.Detect(json.dumps({"path": files["spots"]})))
    assert reply["count"] == 6 and reply["isolated"] == 4
    assert reply["elapsed_ms"] > 0 and reply["roi"] == [0, 0, 256, 256] and files["spots"] in reply["source"]
    assert dev.state() == DevState.ON and "6 particles, 4 isolated" in dev.status()
    assert dev.Count == 6 and dev.IsolatedCount == 4
    found = np.column_stack([dev.X, dev.Y])
    for point in SPOTS_LAYOUT:
        assert np.min(np.hypot(*(found - point).T)) < 0.3
    for name in ("Mass", "Size", "Eccentricity", "Signal", "NearestNeighbour"):
        values = dev.read_attribute(name).value
        assert values.dtype == np.float64 and len(values) == 6, name
    isolated = dev.Isolated
    assert isolated.dtype == bool and sorted(np.round(dev.X[~isolated])) == [120, 128]
    rows = json.loads(dev.Table)
    assert [row["index"] for row in rows] == list(range(6))
    assert rows[0]["x"] == pytest.approx(dev.X[0]) and rows[0]["isolated"] == bool(isolated[0])
    multiplicity = dev.Multiplicity
    assert len(multiplicity) == 6 and set(multiplicity) <= {1, 2, 3}
    assert [row["multiplicity"] for row in rows] == list(multiplicity)
    assert all(multiplicity[isolated] == 1)
    on_bright_area = dev.OnBrightArea  # spots on a flat membrane: none sits on a marker
    assert on_bright_area.dtype == bool and on_bright_area.tolist() == [False] * 6
    assert [row["on_bright_area"] for row in rows] == on_bright_area.tolist()
    last = json.loads(dev.LastResult)
    assert last["count"] == 6 and last["settings"]["Diameter"] == 7 and last["image_shape"] == [256, 256]


def test_roi_offsets_and_per_call_overrides_leave_settings_alone(dev: tango.DeviceProxy,
                                                                  files: dict[str, str]) -> None:
    full = np.column_stack([dev.X, dev.Y])
    reply = json.loads(dev.Detect(json.dumps({"path": files["spots"], "roi": [100, 120, 80, 70]})))
    assert reply["count"] == 2 and reply["roi"] == [100, 120, 80, 70]
    for x, y in zip(dev.X, dev.Y, strict=True):
        assert np.min(np.hypot(full[:, 0] - x, full[:, 1] - y)) < 0.01
    reply = json.loads(dev.Detect(json.dumps({"path": files["spots"], "IsolationRadius": 5.0, "Diameter": 9})))
    assert reply["isolated"] == 6
    assert dev.IsolationRadius == 20.0 and dev.Diameter == 7
    assert json.loads(dev.LastResult)["settings"]["IsolationRadius"] == 5.0


def test_detect_without_a_source_reuses_the_last_image(dev: tango.DeviceProxy) -> None:
    reply = json.loads(dev.Detect(json.dumps({"IsolationRadius": 5.0})))
    assert reply["count"] == 6 and reply["isolated"] == 6
    assert "spots.tif" in reply["source"]


def test_detect_from_a_camera_attribute_by_full_name(dev: tango.DeviceProxy, camera: str) -> None:
    from_file = np.column_stack([dev.X, dev.Y])
    dev.MinMass = 2000.0  # the fake camera serves the spots x 10 as uint16
    reply = json.loads(dev.Detect(json.dumps({"attribute": _attr(camera, "Image")})))
    assert reply["count"] == 6 and reply["isolated"] == 4 and reply["source"].endswith("Image#dbase=no")
    np.testing.assert_allclose(np.column_stack([dev.X, dev.Y]), from_file, atol=0.05)
    assert dev.state() == DevState.ON


@pytest.mark.parametrize(("argument", "reason", "hint"), [
    ({"path": "/no/such/image.tif"}, "SMART_NotFound", "no file"),
    ({"path": "FLAT"}, "SMART_BadArgument", "constant"),
    ({"path": "SPOTS", "Diameter": 8}, "SMART_BadArgument", "use 7 or 9"),
    ({"path": "SPOTS", "roi": [200, 200, 100, 100]}, "SMART_BadArgument", "outside"),
    ({"path": "SPOTS", "colour": "red"}, "SMART_BadArgument", "unknown key 'colour'"),
    ({"path": "SPOTS", "attribute": "test/fakecamera/1/Image"}, "SMART_BadArgument", "not both"),
    ({"attribute": "smart/camera/Image"}, "SMART_BadArgument", "full name"),
    ({"attribute": "CAMERA/Temperature"}, "SMART_BadArgument", "not an image"),
    ({"attribute": "CAMERA/NoSuchAttribute"}, "SMART_NotFound", "no attribute"),
    ({"attribute": "CAMERA/NoFrame"}, "SMART_NotReady", "Start the camera"),
])
def test_refused_detect_keeps_results_settings_and_state(dev: tango.DeviceProxy, files: dict[str, str],
                                                         camera: str, argument: dict[str, object],
                                                         reason: str, hint: str) -> None:
    before = _results(dev)
    resolved = dict(argument)
    if resolved.get("path") in ("FLAT", "SPOTS"):
        resolved["path"] = files[str(resolved["path"]).lower()]
    if str(resolved.get("attribute", "")).startswith("CAMERA/"):
        resolved["attribute"] = _attr(camera, str(resolved["attribute"]).removeprefix("CAMERA/"))
    with pytest.raises(tango.DevFailed) as excinfo:
        dev.Detect(json.dumps(resolved))
    assert _reason(excinfo) == reason
    assert hint in _desc(excinfo)
    _assert_same(before, _results(dev))
    assert dev.Diameter == 7
    assert dev.state() == DevState.ON


def test_malformed_json_and_nan_are_refused(dev: tango.DeviceProxy) -> None:
    for text in ("", "not json", "[1, 2]", '{"IsolationRadius": NaN}', '{"Diameter": "7"}'):
        with pytest.raises(tango.DevFailed) as excinfo:
            dev.Detect(text)
        assert _reason(excinfo) == "SMART_BadArgument", text
    assert dev.Count == 6


def test_unreachable_source_is_a_fault_until_a_detection_succeeds(dev: tango.DeviceProxy,
                                                                   files: dict[str, str]) -> None:
    before = _results(dev)
    lost = "tango://127.0.0.1:9/test/lostcamera/1/Image#dbase=no"
    with pytest.raises(tango.DevFailed) as excinfo:
        dev.Detect(json.dumps({"attribute": lost}))
    assert _reason(excinfo) == "SMART_NotFound" and "does not answer" in _desc(excinfo)
    assert dev.state() == DevState.FAULT
    assert lost in dev.status() and "still readable" in dev.status()
    _assert_same(before, _results(dev))
    dev.Detect(json.dumps({"path": files["spots"]}))
    assert dev.state() == DevState.ON


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize(("name", "value", "hint", "reason"), [
    ("Diameter", 8, "odd", "SMART_BadArgument"),
    ("Diameter", 1, "Diameter", "API_WAttrOutsideLimit"),  # outside the Tango limits: refused at the door
    ("NoiseSize", 7.0, "smaller than Diameter", "SMART_BadArgument"),
    ("Percentile", 100.0, "Percentile", "SMART_BadArgument"),
    ("MinMass", -1.0, "MinMass", "API_WAttrOutsideLimit"),
    ("Method", "locate_everything", "Method", "SMART_BadArgument"),
])
def test_refused_setting_keeps_the_old_value(dev: tango.DeviceProxy, name: str, value: object, hint: str,
                                             reason: str) -> None:
    old = dev.read_attribute(name).value
    with pytest.raises(tango.DevFailed) as excinfo:
        dev.write_attribute(name, value)
    assert _reason(excinfo) == reason
    assert hint in _desc(excinfo)
    assert dev.read_attribute(name).value == old


def test_settings_are_used_by_the_next_detection(dev: tango.DeviceProxy) -> None:
    dev.IsolationRadius = 5.0
    dev.Method = "locate_brightfield_ring"
    assert dev.IsolationRadius == 5.0 and dev.Method == "locate_brightfield_ring"
    dev.Method = "locate"
    assert json.loads(dev.Detect("{}"))["isolated"] == 6
    assert json.loads(dev.LastResult)["settings"]["IsolationRadius"] == 5.0


def test_doubtful_results_raise_an_alarm_that_says_why(dev: tango.DeviceProxy) -> None:
    assert json.loads(dev.Detect(json.dumps({"MinMass": 1e9})))["count"] == 0
    assert dev.state() == DevState.ALARM and "no particles" in dev.status() and "MinMass" in dev.status()
    assert json.loads(dev.Detect(json.dumps({"IsolationRadius": 500.0})))["isolated"] == 0
    assert dev.state() == DevState.ALARM and "none is isolated" in dev.status()
    dev.Detect("{}")
    assert dev.state() == DevState.ON


# ---------------------------------------------------------------------------- outputs
def test_export_csv_writes_the_table(dev: tango.DeviceProxy, tmp_path: Path) -> None:
    written = dev.ExportCsv(str(tmp_path / "particles.csv"))
    assert written == str(tmp_path / "particles.csv")
    with open(written, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 6 and float(rows[2]["x"]) == pytest.approx(dev.X[2])
    assert [row["isolated"] for row in rows] == ["true" if v else "false" for v in dev.Isolated]
    assert [int(row["multiplicity"]) for row in rows] == list(dev.Multiplicity)
    with pytest.raises(tango.DevFailed) as excinfo:
        dev.ExportCsv(str(tmp_path / "missing" / "particles.csv"))
    assert _reason(excinfo) == "SMART_NotFound" and "does not exist" in _desc(excinfo)


def test_annotated_images_grey_and_colour(dev: tango.DeviceProxy) -> None:
    grey = dev.AnnotatedImage
    assert grey.dtype == np.uint8 and grey.shape == (256, 256)
    assert (grey == 255).any() and (grey == 0).any()  # isolated / crowded markers
    value = dev.read_attribute("AnnotatedImageRGB").value
    assert value[0] == "VIDEO_IMAGE"
    fmt, rgb = CodecFactory().getCodec(value[0]).decode(value)
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8
    colours = {tuple(int(c) for c in pixel) for pixel in rgb.reshape(-1, 3)}
    assert ISOLATED_RGB in colours and CROWDED_RGB in colours
    # grey pixels of the picture stay grey: the channels arrive in the right order
    x, y = int(round(dev.X[0])), int(round(dev.Y[0]))
    assert tuple(rgb[y, x]) == (rgb[y, x, 0],) * 3
    # the same picture as Tango's JPEG_RGB (what lavue shows in colour): lossy, but close
    encoding, payload = dev.read_attribute("AnnotatedImageJPEG").value
    assert encoding == "JPEG_RGB"
    import cv2

    jpeg = cv2.cvtColor(cv2.imdecode(np.frombuffer(bytes(payload), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert jpeg.shape == rgb.shape
    assert np.mean(np.abs(jpeg.astype(int) - rgb.astype(int))) < 4  # grey levels, of 255


def test_change_events_reach_subscribers(dev: tango.DeviceProxy) -> None:
    received: dict[str, list[object]] = {"Count": [], "AnnotatedImage": [], "Diameter": []}

    def callback_for(name: str):
        def callback(event: tango.EventData) -> None:
            if not event.err:
                received[name].append(event.attr_value.value)
        return callback

    ids = [dev.subscribe_event(name, tango.EventType.CHANGE_EVENT, callback_for(name)) for name in received]
    try:
        for values in received.values():
            values.clear()
        dev.Detect(json.dumps({"MinMass": 1e9}))
        dev.Diameter = 9
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (received["Count"] and received["AnnotatedImage"]
                                                   and received["Diameter"]):
            time.sleep(0.05)
    finally:
        for event_id in ids:
            dev.unsubscribe_event(event_id)
    assert 0 in received["Count"]
    assert received["AnnotatedImage"][-1].shape == (256, 256)
    assert 9 in received["Diameter"]


def test_state_is_running_during_detection_and_a_second_detect_waits_its_turn(dev: tango.DeviceProxy,
                                                                              files: dict[str, str]) -> None:
    dev.MinMass = 200.0
    request = dev.command_inout_asynch("Detect", json.dumps({"path": files["big"]}))
    seen: set[DevState] = set()
    second = None
    refused_after_s: float | None = None
    reply = None
    deadline = time.monotonic() + 30
    while reply is None and time.monotonic() < deadline:
        seen.add(dev.state())
        if second is None and refused_after_s is None and DevState.RUNNING in seen:
            assert dev.Count == 6  # the previous results stay readable meanwhile
            asked = time.monotonic()
            try:
                second = json.loads(dev.Detect(json.dumps({"path": files["spots"]})))  # waits for the first
            except tango.DevFailed as exc:
                # the documented other outcome: the first Detect outlasted the turn wait (a loaded
                # machine); the refusal must come only after that wait, and say to retry
                assert exc.args[0].reason == "SMART_NotReady", exc.args[0].desc
                refused_after_s = time.monotonic() - asked
        try:
            reply = dev.command_inout_reply(request)  # polls; a timeout of 0 would block
        except tango.DevFailed as exc:
            if exc.args[0].reason != "API_AsynReplyNotArrived":
                raise
            time.sleep(0.005)
    assert DevState.RUNNING in seen
    assert json.loads(reply)["count"] > 1000
    if refused_after_s is not None:
        assert refused_after_s >= 2.4, f"refused after {refused_after_s:.2f} s, before its turn could come"
        second = json.loads(dev.Detect(json.dumps({"path": files["spots"]})))  # the retry it was told to do
    assert second is not None and second["count"] == 6  # ran after the first, on its own image
    assert dev.Count == 6 and dev.state() == DevState.ON


# ----------------------------------------------------------------- through a database
def test_memorized_settings_survive_a_restart_and_names_resolve_through_the_database(
        tmp_path: Path, files: dict[str, str]) -> None:
    config = tmp_path / "particles.yaml"
    config.write_text("servers:\n  ParticleDS/t1:\n    ParticleDS:\n      test/particles/1: {}\n")
    small = Stack(tmp_path / "run", config, echo=False)
    restarted: subprocess.Popen[bytes] | None = None
    try:
        host = small.up()
        trl = f"tango://{host}/test/particles/1"
        dev = wait_answering(trl)
        for name, value in {"Diameter": 21, "NoiseSize": 15.0, "MinMass": 123.5, "Invert": True,
                            "Method": "locate_brightfield_ring", "IsolationRadius": 12.5, "Percentile": 50.0}.items():
            dev.write_attribute(name, value)
        with pytest.raises(tango.DevFailed) as excinfo:
            dev.Diameter = 22
        assert _reason(excinfo) == "SMART_BadArgument"
        # a device defined in the database but not running is a lost source; an unknown one a typo
        ghost_info = _device_info(f"{SERVER_NAME}/t1", "SpotsCamera", "test/ghost/1")
        tango.Database(*host.split(":")).add_device(ghost_info)
        with pytest.raises(tango.DevFailed) as excinfo:
            dev.Detect(json.dumps({"attribute": f"tango://{host}/test/nosuch/1/Image"}))
        assert _reason(excinfo) == "SMART_NotFound" and dev.state() == DevState.ON
        with pytest.raises(tango.DevFailed) as excinfo:
            dev.Detect(json.dumps({"attribute": f"tango://{host}/test/ghost/1/Image"}))
        assert _reason(excinfo) == "SMART_NotFound" and dev.state() == DevState.FAULT
        # the camera server comes back: the FAULT clears without anyone calling Detect
        ghost = subprocess.Popen([sys.executable, "-m", "tests.serve_devices", "tests.fake_devices:SpotsCamera", "t1",
                                  "-ORBendPoint", "giop:tcp:127.0.0.1:0"],
                                 env={**os.environ, "TANGO_HOST": host}, cwd=str(Path(__file__).parents[2]),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_answering(f"tango://{host}/test/ghost/1")
            deadline = time.monotonic() + 10
            while dev.state() == DevState.FAULT and time.monotonic() < deadline:
                time.sleep(0.2)
            assert dev.state() == DevState.ON
            reply = json.loads(dev.Detect(json.dumps({"attribute": f"tango://{host}/test/ghost/1/Image",
                                                      "Diameter": 7, "Method": "locate", "Invert": False,
                                                      "MinMass": 2000.0, "NoiseSize": 1.0})))
            assert reply["count"] == 6
        finally:
            stop_process(ghost)

        stop_process(small.processes["ParticleDS/t1"].pid)
        env = {**os.environ, "TANGO_HOST": host}
        restarted = subprocess.Popen([str(Path(sys.executable).parent / "ParticleDS"), "t1", "-ORBendPoint",
                                      "giop:tcp:127.0.0.1:0"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        dev = wait_answering(trl)
        deadline = time.monotonic() + 10
        while dev.Diameter != 21 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dev.Diameter == 21 and dev.NoiseSize == 15.0 and dev.MinMass == 123.5
        assert dev.Invert is True and dev.Method == "locate_brightfield_ring"
        assert dev.IsolationRadius == 12.5 and dev.Percentile == 50.0
        assert dev.state() == DevState.ON
    finally:
        if restarted is not None:
            stop_process(restarted)
        small.down(quiet=True)


def _device_info(server: str, klass: str, name: str) -> tango.DbDevInfo:
    info = tango.DbDevInfo()
    info.server, info._class, info.name = server, klass, name
    return info


def test_detects_on_the_stack_camera(stack: Stack) -> None:
    camera = tango.DeviceProxy(device_trl(stack, "smart/camera/1"))
    camera.Snap()
    particles = device_proxy(device_trl(stack, "smart/particles/1"), 30_000)
    reply = json.loads(particles.Detect(json.dumps({"attribute": device_trl(stack, "smart/camera/1/Image"),
                                                    "MinMass": 0.0})))
    assert reply["count"] >= 0 and reply["source"].endswith("smart/camera/1/Image")
    assert particles.Count == reply["count"]
    assert particles.AnnotatedImage.shape == (camera.Height, camera.Width)
    assert particles.state() in (DevState.ON, DevState.ALARM)


def test_init_keeps_settings_and_results(dev: tango.DeviceProxy) -> None:
    dev.IsolationRadius = 7.5
    x = dev.X
    dev.Init()
    assert dev.IsolationRadius == 7.5 and dev.Count == 6
    np.testing.assert_array_equal(dev.X, x)
    assert dev.state() == DevState.ON

