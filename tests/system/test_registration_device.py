"""RegistrationDS as clients see it: commands, errors, State/Status, events, camera grabs.

Most tests talk to the device in a database-less test server (one per module, in its own
process, reset with Init before every test); a small fake camera device runs in the same
server so GrabImage is tested against an independent device addressed by its full name,
including cameras that answer with mismatched frames, no pixel size or no frame at all.
The last tests use the real stack: the launched device through the database, and a
second server process restarted to prove the memorized setting survives and slots do not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tango
import tifffile
from skimage import data, transform
from tango import AttrWriteType, DevState

from clients.file_db_server import free_port, stop_process, wait_answering
from clients.launcher import Stack
from macros.smart_calls import command_json
from servers.RegistrationDS.confidence import DEFAULT_MIN_CONFIDENCE
from servers.RegistrationDS.device import RegistrationDS
from tests.device_server import serve_devices
from tests.fake_devices import GrabbableCamera
from tests.system.conftest import device_trl

REGISTRATION = "test/registration/1"
CAMERA = "test/camera/1"
GRAB_TIMEOUT_MS = 500


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """{device: TRL} of the registration device and the fake camera, served by one process."""
    devices = {REGISTRATION: ("RegistrationDS", {"GrabTimeoutMs": GRAB_TIMEOUT_MS}),
               CAMERA: ("GrabbableCamera", {})}
    with serve_devices([RegistrationDS, GrabbableCamera], devices, tmp_path_factory.mktemp("registration")) as trls:
        yield trls


@pytest.fixture
def reg(servers) -> tango.DeviceProxy:
    proxy = tango.DeviceProxy(servers[REGISTRATION])
    proxy.Init()
    proxy.write_attribute("MinConfidence", DEFAULT_MIN_CONFIDENCE)  # Init keeps the memorized setting
    return proxy


@pytest.fixture
def camera(servers) -> tango.DeviceProxy:
    proxy = tango.DeviceProxy(servers[CAMERA])
    proxy.Init()
    return proxy


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Files the server reads: a micrograph, it shifted, rotated+scaled, and an unrelated one."""
    folder = tmp_path_factory.mktemp("registration_images")
    camera = data.camera()
    warped = transform.warp(camera.astype(float), transform.SimilarityTransform(
        scale=1.05, rotation=np.deg2rad(8.0), translation=(-10.0, -30.0)).inverse, preserve_range=True)
    files = {"ref": camera, "shifted": np.roll(camera, (5, -3), axis=(0, 1)),
             "similar": warped.astype(np.float32), "moon": data.moon()}
    paths = {}
    for name, image in files.items():
        paths[name] = str(folder / f"{name}.tif")
        tifffile.imwrite(paths[name], image)
    return paths


def call(proxy: tango.DeviceProxy, command_name: str, **argument) -> dict:
    return command_json(proxy, command_name, argument)


def refused(proxy: tango.DeviceProxy, command_name: str, argument: object) -> tango.DevError:
    text = argument if isinstance(argument, str) else json.dumps(argument)
    with pytest.raises(tango.DevFailed) as info:
        proxy.command_inout(command_name, text)
    return info.value.args[0]


def read_error(proxy: tango.DeviceProxy, name: str) -> tango.DevError:
    """The SMART error of a failed attribute read (Tango may stack its own API_ errors around it)."""
    with pytest.raises(tango.DevFailed) as info:
        proxy.read_attribute(name)
    smart = [e for e in info.value.args if e.reason.startswith("SMART_")]
    assert smart, f"no SMART reason in {[e.reason for e in info.value.args]}"
    return smart[0]


def load_pair(reg: tango.DeviceProxy, images: dict[str, str], target: str = "shifted") -> None:
    call(reg, "LoadImage", slot="ref", path=images["ref"], pixel_size_um=1.0)
    call(reg, "LoadImage", slot=target, path=images[target], pixel_size_um=1.0)


# ---------------------------------------------------------------------- slots
def test_load_image_reports_the_slot_and_lists_it(reg, images) -> None:
    assert reg.state() == DevState.ON
    result = call(reg, "LoadImage", slot="ref", path=images["ref"])
    assert result == {"slot": "ref", "width": 512, "height": 512, "pixel_size_um": 1.0, "dtype": "uint8",
                      "format": "TIFF", "pixel_size_source": "default (the file gives none)",
                      "warnings": result["warnings"]}
    assert any("pixel size" in w for w in result["warnings"])
    result = call(reg, "LoadImage", slot="sim", path=images["similar"], pixel_size_um=0.25)
    assert (result["pixel_size_um"], result["dtype"], result["warnings"]) == (0.25, "float32", [])
    assert list(reg.Slots) == ["ref", "sim"]
    info = json.loads(reg.SlotInfo)
    assert [s["slot"] for s in info] == ["ref", "sim"] and info[1]["pixel_size_um"] == 0.25
    assert call(reg, "LoadImage", slot="ref", path=images["moon"])["dtype"] == "uint8"
    assert json.loads(reg.RemoveSlot("sim")) == ["ref"]
    assert list(reg.Slots) == ["ref"]
    assert reg.state() == DevState.ON


@pytest.mark.parametrize(("argument", "reason", "words"), [
    ("", "SMART_BadArgument", "empty"),
    ("[1]", "SMART_BadArgument", "JSON object"),
    ('{"slot": "a", "path": "/x.tif", "colour": 1}', "SMART_BadArgument", "unknown key 'colour'"),
    ('{"slot": "a b", "path": "/x.tif"}', "SMART_BadArgument", "slot"),
    ('{"slot": "a", "path": "/x.tif", "pixel_size_um": NaN}', "SMART_BadArgument", "NaN"),
    ('{"slot": "a", "path": "/x.tif", "pixel_size_um": -1}', "SMART_BadArgument", "pixel_size_um"),
    ('{"slot": "a", "path": "/no/such/file.tif"}', "SMART_NotFound", "/no/such/file.tif"),
])
def test_refused_load_keeps_the_slots(reg, images, argument, reason, words) -> None:
    call(reg, "LoadImage", slot="a", path=images["ref"])
    error = refused(reg, "LoadImage", argument)
    assert error.reason == reason
    assert words in error.desc
    assert list(reg.Slots) == ["a"]
    assert json.loads(reg.SlotInfo)[0]["width"] == 512
    assert reg.state() == DevState.ON


def test_remove_unknown_slot_is_not_found(reg) -> None:
    error = refused(reg, "RemoveSlot", "nothing")
    assert error.reason == "SMART_NotFound" and "nothing" in error.desc


# --------------------------------------------------------------- registration
def test_nothing_to_read_before_a_registration(reg) -> None:
    for name in ("LastResult", "LastGoodResult", "Matrix", "Shift", "Rotation", "Scale", "Confidence", "Overlay"):
        error = read_error(reg, name)
        assert error.reason == "SMART_NotReady", name
        assert "Register" in error.desc or "registration" in error.desc


def test_translation_result_and_attributes_agree(reg, images) -> None:
    load_pair(reg, images)
    result = call(reg, "Register", reference="ref", target="shifted")
    assert result["success"] is True and result["model"] == "translation"
    assert result["shift_px"] == pytest.approx([3.0, -5.0], abs=0.02)
    assert result["confidence"] >= DEFAULT_MIN_CONFIDENCE and result["elapsed_ms"] > 0
    assert reg.state() == DevState.ON
    assert "succeeded" in reg.status() and "'shifted' onto 'ref'" in reg.status()
    assert np.allclose(reg.Matrix, np.array(result["matrix"]))
    assert reg.Matrix.shape == (3, 3)
    assert list(reg.Shift) == pytest.approx(result["shift_px"])
    assert (reg.Rotation, reg.Scale, reg.Confidence) == pytest.approx(
        (result["rotation_deg"], result["scale"], result["confidence"]))
    assert json.loads(reg.LastResult) == result == json.loads(reg.LastGoodResult)
    overlay = reg.Overlay
    assert overlay.dtype == np.uint8 and overlay.shape == (512, 512) and overlay.max() > overlay.min()


def test_similarity_across_pixel_sizes(reg, images) -> None:
    call(reg, "LoadImage", slot="ref", path=images["ref"], pixel_size_um=1.0)
    call(reg, "LoadImage", slot="sim", path=images["similar"], pixel_size_um=1.0)
    result = call(reg, "Register", reference="ref", target="sim", model="similarity")
    assert result["success"] is True
    assert result["rotation_deg"] == pytest.approx(-8.0, abs=0.1)
    assert result["scale"] == pytest.approx(1 / 1.05, rel=2e-3)
    assert reg.Rotation == pytest.approx(result["rotation_deg"])


def test_doubtful_registration_alarms_and_keeps_the_last_good_one(reg, images) -> None:
    load_pair(reg, images)
    good = call(reg, "Register", reference="ref", target="shifted")
    call(reg, "LoadImage", slot="moon", path=images["moon"], pixel_size_um=1.0)

    doubtful = call(reg, "Register", reference="ref", target="moon")
    assert doubtful["success"] is False and doubtful["confidence"] < DEFAULT_MIN_CONFIDENCE
    assert reg.state() == DevState.ALARM
    status = reg.status()
    assert "in doubt" in status and "'moon' onto 'ref'" in status
    assert "last good registration (slot 'shifted' onto 'ref')" in status and "RegisterFiducials" in status
    assert json.loads(reg.LastResult) == doubtful
    assert json.loads(reg.LastGoodResult) == good
    assert list(reg.Shift) == pytest.approx(good["shift_px"])
    assert np.allclose(reg.Matrix, good["matrix"])
    assert reg.Confidence == pytest.approx(good["confidence"])

    error = refused(reg, "Register", {"reference": "ref", "target": "missing"})
    assert error.reason == "SMART_NotFound"
    assert reg.state() == DevState.ALARM and reg.status() == status
    assert json.loads(reg.LastResult) == doubtful

    again = call(reg, "Register", reference="ref", target="shifted")
    assert again["success"] is True
    assert reg.state() == DevState.ON and "succeeded" in reg.status()


def test_doubt_without_any_good_result_says_so(reg, images) -> None:
    load_pair(reg, images, target="moon")
    assert call(reg, "Register", reference="ref", target="moon")["success"] is False
    assert reg.state() == DevState.ALARM
    assert "no value yet" in reg.status()
    assert read_error(reg, "Matrix").reason == "SMART_NotReady"
    assert json.loads(reg.LastResult)["target"] == "moon"
    assert reg.Overlay.shape == (512, 512)


@pytest.mark.parametrize(("argument", "reason", "words"), [
    ({"reference": "ref", "target": "shifted", "model": "projective"}, "SMART_BadArgument", "model"),
    ({"reference": "ref", "target": "shifted", "upsample": "10"}, "SMART_BadArgument", "upsample"),
    ({"reference": "ref", "target": "shifted", "target_roi": [0, 0, 4, 4]}, "SMART_BadArgument", "target_roi"),
    ({"reference": "ref", "target": "shifted", "reference_roi": [600, 0, 50, 50]}, "SMART_BadArgument", "roi"),
    ({"reference": "ref", "target": "shifted", "min_confidence": 1.0}, "SMART_BadArgument", "min_confidence"),
    ({"reference": "nope", "target": "shifted"}, "SMART_NotFound", "'nope'"),
    ({"target": "shifted"}, "SMART_BadArgument", "missing key 'reference'"),
])
def test_refused_register_keeps_earlier_results(reg, images, argument, reason, words) -> None:
    load_pair(reg, images)
    good = call(reg, "Register", reference="ref", target="shifted")
    error = refused(reg, "Register", argument)
    assert error.reason == reason
    assert words in error.desc
    assert json.loads(reg.LastResult) == good
    assert list(reg.Shift) == pytest.approx(good["shift_px"])
    assert reg.state() == DevState.ON


def test_min_confidence_is_the_default_threshold_and_a_call_can_override_it(reg, images) -> None:
    load_pair(reg, images, target="moon")
    assert reg.MinConfidence == pytest.approx(DEFAULT_MIN_CONFIDENCE)
    with pytest.raises(tango.DevFailed) as info:
        reg.write_attribute("MinConfidence", 1.0)
    assert info.value.args[0].reason == "SMART_BadArgument" and "between 0 and 1" in info.value.args[0].desc
    with pytest.raises(tango.DevFailed) as info:
        reg.write_attribute("MinConfidence", 1.5)  # outside the Tango limits: refused at the door
    assert info.value.args[0].reason == "API_WAttrOutsideLimit"
    assert reg.MinConfidence == pytest.approx(DEFAULT_MIN_CONFIDENCE)

    reg.write_attribute("MinConfidence", 0.5)
    assert reg.MinConfidence == 0.5
    lenient = call(reg, "Register", reference="ref", target="moon")
    assert lenient["success"] is True and reg.state() == DevState.ON
    strict = call(reg, "Register", reference="ref", target="moon", min_confidence=0.99)
    assert strict["success"] is False and reg.state() == DevState.ALARM
    assert "below the threshold 0.99" in reg.status()
    reg.Init()
    assert reg.MinConfidence == 0.5 and list(reg.Slots) == []


def test_fiducials_fit_names_outliers_and_refuses_too_few(reg, images) -> None:
    load_pair(reg, images)
    angle, scale, shift = np.deg2rad(10.0), 0.9, np.array([40.0, 10.0])
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    targets = np.array([[100, 100], [400, 120], [380, 400], [120, 380], [250, 250], [300, 150]], float)
    references = targets @ linear.T + shift
    references[4] += [25.0, -20.0]
    pairs = np.hstack([targets, references]).tolist()
    result = call(reg, "RegisterFiducials", reference="ref", target="shifted", pairs=pairs, model="similarity")
    assert result["inliers"] == [True, True, True, True, False, True]
    assert result["rotation_deg"] == pytest.approx(10.0, abs=1e-6)
    assert result["scale"] == pytest.approx(0.9, rel=1e-9)
    assert result["rms_px"] == pytest.approx(0.0, abs=1e-6) and len(result["residuals_px"]) == 6
    assert result["residuals_px"][4] > 20
    assert np.allclose(reg.Matrix, result["matrix"])
    assert reg.state() == DevState.ON

    error = refused(reg, "RegisterFiducials", {"reference": "ref", "target": "shifted", "pairs": pairs[:2],
                                               "model": "affine"})
    assert error.reason == "SMART_BadArgument" and "at least 3 pairs" in error.desc
    error = refused(reg, "RegisterFiducials", {"reference": "ref", "target": "shifted",
                                               "pairs": [[0, 0, 1, 1], [5000, 0, 1, 1]]})
    assert error.reason == "SMART_BadArgument" and "outside" in error.desc
    assert json.loads(reg.LastResult) == result


def test_events_follow_results_and_state(reg, images) -> None:
    load_pair(reg, images, target="moon")
    call(reg, "LoadImage", slot="shifted", path=images["shifted"], pixel_size_um=1.0)
    received: dict[str, list] = {"State": [], "LastResult": [], "Shift": [], "Slots": []}

    def listener(name):
        def push(event):
            if not event.err and event.attr_value is not None:
                received[name].append(event.attr_value.value)
        return push

    ids = [reg.subscribe_event(name, tango.EventType.CHANGE_EVENT, listener(name)) for name in received]
    try:
        call(reg, "Register", reference="ref", target="shifted")
        call(reg, "Register", reference="ref", target="moon")
        call(reg, "LoadImage", slot="extra", path=images["ref"])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (
                received["State"].count(DevState.RUNNING) == 3 and received["State"][-1] == DevState.ALARM
                and len(received["LastResult"]) == 2 and any("extra" in s for s in received["Slots"])):
            time.sleep(0.05)
    finally:
        for event_id in ids:
            reg.unsubscribe_event(event_id)
    assert DevState.RUNNING in received["State"] and received["State"][-1] == DevState.ALARM
    results = [json.loads(text) for text in received["LastResult"]]
    assert [r["target"] for r in results] == ["shifted", "moon"]
    assert list(received["Shift"][-1]) == pytest.approx([3.0, -5.0], abs=0.02)
    assert "extra" in list(received["Slots"][-1])


def test_every_attribute_is_described_for_panels(reg) -> None:
    for name in reg.get_attribute_list():
        if name in ("State", "Status"):
            continue
        config = reg.get_attribute_config(name)
        assert config.unit and config.label and config.format and config.description, name
        assert config.description != "No description", name
    assert reg.get_attribute_config("Overlay").max_dim_x >= 8192
    min_confidence = reg.get_attribute_config("MinConfidence")
    assert min_confidence.writable == AttrWriteType.READ_WRITE
    assert reg.get_attribute_config("Matrix").data_format == tango.AttrDataFormat.IMAGE


def test_large_image_registers_within_the_default_client_timeout(reg, tmp_path) -> None:
    big = (transform.resize(data.camera().astype(np.float32), (2048, 2048)) * 250).astype(np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", big)
    tifffile.imwrite(tmp_path / "big_shifted.tif", np.roll(big, (-12, 31), axis=(0, 1)))
    call(reg, "LoadImage", slot="big", path=str(tmp_path / "big.tif"), pixel_size_um=0.1)
    call(reg, "LoadImage", slot="big2", path=str(tmp_path / "big_shifted.tif"), pixel_size_um=0.1)
    assert reg.get_timeout_millis() == 3000
    started = time.monotonic()
    result = call(reg, "Register", reference="big", target="big2")
    assert time.monotonic() - started < 3.0
    assert result["shift_px"] == pytest.approx([-31.0, 12.0], abs=0.02)
    assert reg.Overlay.shape == (2048, 2048)


# ----------------------------------------------------------------------- grab
def test_grab_stores_exactly_the_frame_its_metadata_describes(reg, camera, images, servers) -> None:
    trl = servers[CAMERA]
    result = call(reg, "GrabImage", slot="cam", device=trl)
    assert (result["slot"], result["width"], result["height"]) == ("cam", 384, 512)
    assert (result["pixel_size_um"], result["dtype"]) == (0.5, "uint16")
    assert result["metadata"]["frame_number"] == 7 and result["metadata"]["stage"] == {"samx": 1.25, "samy": -0.5}
    assert list(reg.Slots) == ["cam"]
    assert json.loads(reg.SlotInfo)[0]["pixel_size_um"] == 0.5

    camera.Configure(json.dumps({"mismatch": 2}))
    reads = camera.Reads
    result = call(reg, "GrabImage", slot="cam", device=trl)
    assert camera.Reads - reads == 3
    assert result["metadata"]["frame_number"] == 9
    # the stored pixels are frame 9's: it is the base image shifted right by 9 px
    call(reg, "LoadImage", slot="base", path=images["ref"], pixel_size_um=0.5)
    shift = call(reg, "Register", reference="base", target="cam", target_roi=[20, 0, 344, 512])["shift_px"]
    assert shift == pytest.approx([-9.0, 0.0], abs=0.05)


@pytest.mark.parametrize(("settings", "reason", "words"), [
    ({"mismatch": 100}, "SMART_Failed", "same frame"),
    ({"pixel_size_um": None}, "SMART_NotReady", "pixel size"),
    ({"no_frame": True}, "SMART_NotReady", "Snap or Start"),
])
def test_grab_from_a_misbehaving_camera_changes_nothing(reg, camera, servers, settings, reason, words) -> None:
    trl = servers[CAMERA]
    first = call(reg, "GrabImage", slot="cam", device=trl)
    camera.Configure(json.dumps({**settings, "number": 50}))
    error = refused(reg, "GrabImage", {"slot": "cam", "device": trl})
    assert error.reason == reason
    assert words in error.desc and trl in error.desc
    assert list(reg.Slots) == ["cam"]
    assert json.loads(reg.SlotInfo) == [{k: v for k, v in first.items() if k != "metadata"}]
    assert reg.state() == DevState.ON


def test_a_hung_camera_fails_the_grab_before_the_client_times_out(reg, tmp_path) -> None:
    # its own process: calls inside one server process are collocated and never time out
    with serve_devices([GrabbableCamera], {"test/camera/hung": ("GrabbableCamera", {})}, tmp_path) as trls:
        trl = trls["test/camera/hung"]
        tango.DeviceProxy(trl).Configure(json.dumps({"delay_s": 1.5}))
        started = time.monotonic()
        error = refused(reg, "GrabImage", {"slot": "cam", "device": trl})
        assert time.monotonic() - started < 1.2
    assert error.reason == "SMART_Failed" and "test/camera/hung" in error.desc
    assert "nothing was stored" in error.desc
    assert list(reg.Slots) == [] and reg.state() == DevState.ON


def test_grab_from_a_device_that_is_not_a_camera_or_not_there(reg, servers) -> None:
    not_camera = servers[REGISTRATION]
    error = refused(reg, "GrabImage", {"slot": "cam", "device": not_camera})
    assert error.reason == "SMART_NotFound" and "FrameNumber" in error.desc

    absent = f"tango://127.0.0.1:{free_port()}/no/camera/here#dbase=no"  # nothing listens there
    error = refused(reg, "GrabImage", {"slot": "cam", "device": absent})
    assert error.reason == "SMART_Failed"
    assert "no/camera/here" in error.desc and "nothing was stored" in error.desc

    error = refused(reg, "GrabImage", {"slot": "cam"})
    assert error.reason == "SMART_BadArgument" and "missing key 'device'" in error.desc
    assert list(reg.Slots) == []


# ---------------------------------------------------------------- real stack
def test_launched_device_registers_through_the_database(stack: Stack, images) -> None:
    reg = tango.DeviceProxy(device_trl(stack, "smart/registration/1"))
    call(reg, "LoadImage", slot="stack_ref", path=images["ref"], pixel_size_um=1.0)
    call(reg, "LoadImage", slot="stack_tgt", path=images["shifted"], pixel_size_um=1.0)
    try:
        result = call(reg, "Register", reference="stack_ref", target="stack_tgt")
        assert result["success"] is True and list(reg.Shift) == pytest.approx([3.0, -5.0], abs=0.02)
        assert reg.state() == DevState.ON
    finally:
        reg.RemoveSlot("stack_ref")
        reg.RemoveSlot("stack_tgt")


def _start_server(stack: Stack, instance: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "TANGO_HOST": stack.tango_host}
    executable = str(Path(sys.executable).parent / "RegistrationDS")
    with open(log, "ab") as out:
        return subprocess.Popen([executable, instance, "-ORBendPoint", "giop:tcp:127.0.0.1:0"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def test_min_confidence_survives_a_restart_and_slots_do_not(stack: Stack, images, tmp_path) -> None:
    instance, device = "regmemtest", "test/registration/memorized"
    db = tango.Database(*stack.tango_host.split(":"))
    info = tango.DbDevInfo()
    info.name, info._class, info.server = device, "RegistrationDS", f"RegistrationDS/{instance}"
    db.add_device(info)
    name, log = device_trl(stack, device), tmp_path / "registration.log"
    server = _start_server(stack, instance, log)
    try:
        reg = wait_answering(name, server=server, log=log)
        reg.write_attribute("MinConfidence", 0.75)
        call(reg, "LoadImage", slot="ref", path=images["ref"])
        stop_process(server)
        server = _start_server(stack, instance, log)
        reg = wait_answering(name, server=server, log=log)
        assert reg.MinConfidence == pytest.approx(0.75)
        assert list(reg.Slots) == []
        assert refused(reg, "Register", {"reference": "ref", "target": "ref"}).reason == "SMART_NotFound"
    finally:
        stop_process(server)
        db.delete_server(f"RegistrationDS/{instance}")
