"""Hostile but ordinary input through Tango: no file, name or value can freeze or poison a device.

The fast subset of the reliability campaign (issue 16): a corpus of hostile files (FIFO,
``/dev/zero``, a directory, empty, truncated, a header claiming 50000^2 px, a symlink loop)
and names in several scripts, given to every command that takes a path or a name. After
every hostile input the test asserts that the device answered with a ``SMART_*`` reason (or
accepted and round-tripped the name), that State and Status are readable, and that the next
valid call on the same device succeeds.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tango
import tifffile

from clients.file_db_server import run_on_file_database
from macros.smart_calls import proxy as device_proxy
from servers.CoordMapperDS.device import CoordMapperDS
from servers.ParticleDS.device import ParticleDS
from servers.RegistrationDS.device import RegistrationDS
from tests.device_server import serve_devices
from tests.fake_devices import SPOTS

SCRIPT_NAMES = ("画像.tif", "a–b.tif", "Ωμέγα.tif", "файл.tif", "صورة.tif", "😀.tif", "café.tif")
"""Chinese, an en dash, Greek, Cyrillic, Arabic, an emoji and plain Latin-1."""


def _tiff_claiming(width: int, height: int) -> bytes:
    """An uncompressed 8-bit TIFF whose header claims ``width`` x ``height`` px but holds 16 bytes."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, width * height)]
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    entries[5] = (273, 4, 1, data_offset)
    packed = [struct.pack("<HHII", tag, kind, count, value) if kind == 4
              else struct.pack("<HHIHH", tag, kind, count, value, 0) for tag, kind, count, value in entries]
    ifd = struct.pack("<H", len(entries)) + b"".join(packed) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(16)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` px (grey, 8 bit) with a tiny data stream."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + \
        chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("hostile")
    good = folder / "good.tif"
    tifffile.imwrite(good, SPOTS)
    truncated = folder / "truncated.tif"
    tifffile.imwrite(truncated, np.arange(256 * 256, dtype=np.uint16).reshape(256, 256))
    truncated.write_bytes(truncated.read_bytes()[:40_000])
    (folder / "empty.tif").write_bytes(b"")
    (folder / "huge.tif").write_bytes(_tiff_claiming(50_000, 50_000))
    (folder / "huge.png").write_bytes(_png_claiming(50_000, 50_000))
    (folder / "text.tif").write_text("not an image\n")
    os.mkfifo(folder / "pipe.tif")
    (folder / "folder.tif").mkdir()
    os.symlink(folder / "loop_b.tif", folder / "loop_a.tif")
    os.symlink(folder / "loop_a.tif", folder / "loop_b.tif")
    paths = {"good": str(good), "truncated": str(truncated), "empty": str(folder / "empty.tif"),
             "huge_tiff": str(folder / "huge.tif"), "huge_png": str(folder / "huge.png"),
             "text": str(folder / "text.tif"), "fifo": str(folder / "pipe.tif"), "zero": "/dev/zero",
             "directory": str(folder / "folder.tif"), "loop": str(folder / "loop_a.tif"),
             "missing": str(folder / "missing.tif")}
    for name in SCRIPT_NAMES:
        tifffile.imwrite(folder / name, SPOTS)
        paths[name] = str(folder / name)
    paths["folder"] = str(folder)
    return paths


SETTINGS = {"Diameter": 7, "MinMass": 200.0, "Separation": 5.0, "IsolationRadius": 20.0, "NoiseSize": 1.0}
"""The settings under which the good image (tests.fake_devices.SPOTS) holds 6 particles."""
HOSTILE = ("truncated", "empty", "huge_tiff", "huge_png", "text", "fifo", "zero", "directory", "loop", "missing")
EXPECTED_REASON = {"missing": "SMART_NotFound"}


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, str]) -> Iterator[tango.DeviceProxy]:
    """A CameraDS (its real executable) replaying the good image from a files: source."""
    executable = str(Path(sys.executable).parent / "CameraDS")
    name = "test/hostile/camera"
    devices = {name: ("CameraDS", {"Source": f"files:{corpus['good']}"})}
    with run_on_file_database([executable], "CameraDS/hostile", devices, tmp_path_factory.mktemp("camera-db"),
                              start_timeout_s=60) as trls:
        proxy = device_proxy(trls[name], 6000)
        yield proxy


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory,
            corpus: dict[str, str]) -> Iterator[dict[str, tango.DeviceProxy]]:
    """RegistrationDS, ParticleDS and CoordMapperDS in one server process (no database access)."""
    names = {"test/hostile/registration": "RegistrationDS", "test/hostile/particles": "ParticleDS",
             "test/hostile/mapper": "CoordMapperDS"}
    with serve_devices([RegistrationDS, ParticleDS, CoordMapperDS], {n: (c, {}) for n, c in names.items()},
                       tmp_path_factory.mktemp("hostile-db")) as trls:
        proxies = {cls: tango.DeviceProxy(trls[name]) for name, cls in names.items()}
        for proxy in proxies.values():
            proxy.set_timeout_millis(6000)
        for name, value in SETTINGS.items():
            proxies["ParticleDS"].write_attribute(name, value)
        # the first Detect of a server imports and compiles trackpy (documented, tens of seconds
        # on a loaded host): pay it here, so the 6 s timeouts of the tests judge the devices only
        proxies["ParticleDS"].set_timeout_millis(120_000)
        proxies["ParticleDS"].Detect(json.dumps({"path": corpus["good"]}))
        proxies["ParticleDS"].set_timeout_millis(6000)
        yield proxies


def _refusal(proxy: tango.DeviceProxy, command: str, argument: object) -> tango.DevError:
    with pytest.raises(tango.DevFailed) as info:
        proxy.command_inout(command, argument)
    return info.value.args[0]


def _still_healthy(proxy: tango.DeviceProxy) -> None:
    """State and Status can be read and sent (no text stuck in them that Tango cannot carry)."""
    assert proxy.state() in (tango.DevState.ON, tango.DevState.ALARM)
    assert proxy.status()


def _load(reg: tango.DeviceProxy, path: str, slot: str = "ref") -> dict:
    return json.loads(reg.LoadImage(json.dumps({"slot": slot, "path": path, "pixel_size_um": 1.0})))


def _detect(particles: tango.DeviceProxy, path: str) -> dict:
    return json.loads(particles.Detect(json.dumps({"path": path})))


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_file_is_refused_quickly_and_the_next_load_works(devices: dict[str, tango.DeviceProxy],
                                                                 corpus: dict[str, str], hostile: str) -> None:
    reg, particles = devices["RegistrationDS"], devices["ParticleDS"]
    expected = EXPECTED_REASON.get(hostile, "SMART_BadArgument")
    error = _refusal(reg, "LoadImage", json.dumps({"slot": "ref", "path": corpus[hostile]}))
    assert error.reason == expected, error.desc
    assert corpus[hostile] in error.desc  # names the path
    _still_healthy(reg)
    assert _load(reg, corpus["good"])["width"] == SPOTS.shape[1]

    error = _refusal(particles, "Detect", json.dumps({"path": corpus[hostile]}))
    assert error.reason == expected, error.desc
    _still_healthy(particles)
    assert _detect(particles, corpus["good"])["count"] == 6


def test_a_header_claiming_50000_squared_pixels_is_refused_before_decoding(devices: dict[str, tango.DeviceProxy],
                                                                          corpus: dict[str, str]) -> None:
    for key in ("huge_tiff", "huge_png"):
        error = _refusal(devices["RegistrationDS"], "LoadImage", json.dumps({"slot": "big", "path": corpus[key]}))
        assert error.reason == "SMART_BadArgument" and "2500.0 Mpx" in error.desc and "limit" in error.desc


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_names_in_any_script_are_loaded_and_round_tripped(devices: dict[str, tango.DeviceProxy],
                                                          corpus: dict[str, str], name: str) -> None:
    reg, particles = devices["RegistrationDS"], devices["ParticleDS"]
    path = corpus[name]
    assert _load(reg, path, slot="scripted")["width"] == SPOTS.shape[1]
    _still_healthy(reg)
    assert "Loading" not in reg.status()  # the command finished and State/Status were restored
    result = _detect(particles, path)
    assert result["count"] == 6 and result["source"] == f"file {path}"  # JSON carries any character exactly
    assert json.loads(particles.LastResult)["source"] == f"file {path}"
    _still_healthy(particles)
    assert _load(reg, corpus["good"])["width"] == SPOTS.shape[1]


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_export_csv_to_a_name_in_any_script(devices: dict[str, tango.DeviceProxy], corpus: dict[str, str],
                                            name: str) -> None:
    """A plain string argument outside Latin-1 travels as UTF-8 bytes and comes back the same way."""
    particles = devices["ParticleDS"]
    _detect(particles, corpus["good"])
    target = os.path.join(corpus["folder"], Path(name).stem + ".csv")
    encoded = target.encode("utf-8")
    try:
        target.encode("latin-1")
        reply = particles.ExportCsv(target)
        assert reply == target
    except UnicodeEncodeError:
        reply = particles.ExportCsv(encoded)
        assert reply.encode("latin-1") == encoded
    assert Path(target).read_text(encoding="utf-8").count("\n") == 7  # header + 6 particles
    _still_healthy(particles)


def test_a_non_latin1_status_never_sticks(devices: dict[str, tango.DeviceProxy], corpus: dict[str, str]) -> None:
    """Loading '画像.tif' used to leave RegistrationDS RUNNING with a Status Tango could not send, after
    which every reply failed: now Status shows the name escaped and the device stays usable."""
    reg = devices["RegistrationDS"]
    missing = os.path.join(corpus["folder"], "没有.tif")
    error = _refusal(reg, "LoadImage", json.dumps({"slot": "ref", "path": missing}))
    assert error.reason == "SMART_NotFound" and "\\u6ca1\\u6709" in error.desc
    _still_healthy(reg)
    assert _load(reg, corpus["good"])["slot"] == "ref"
    assert _load(reg, corpus["画像.tif"], slot="other")["slot"] == "other"
    assert json.loads(reg.Register(json.dumps({"reference": "ref", "target": "other"})))["success"]
    _still_healthy(reg)


@pytest.mark.parametrize("slot", ["😀", "a–b", "Ωmega", "naïve", "x" * 65, " "])
def test_bad_slot_names_are_refused_naming_the_characters(devices: dict[str, tango.DeviceProxy],
                                                          corpus: dict[str, str], slot: str) -> None:
    reg = devices["RegistrationDS"]
    error = _refusal(reg, "LoadImage", json.dumps({"slot": slot, "path": corpus["good"]}))
    assert error.reason == "SMART_BadArgument"
    for char in {c for c in slot if not (c.isascii() and (c.isalnum() or c in "_.-"))}:
        assert f"U+{ord(char):04X}" in error.desc
    error = _refusal(reg, "RemoveSlot", slot.encode("utf-8"))
    assert error.reason in ("SMART_BadArgument", "SMART_NotFound")
    _still_healthy(reg)
    assert _load(reg, corpus["good"])["slot"] == "ref"
    assert "ref" in reg.Slots


@pytest.mark.parametrize("frame", ["sem–1", "画像", "😀", "naïve"])
def test_bad_frame_names_are_refused_and_the_graph_stays_readable(devices: dict[str, tango.DeviceProxy],
                                                                  frame: str) -> None:
    mapper = devices["CoordMapperDS"]
    matrix = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    error = _refusal(mapper, "SetTransform", json.dumps({"from": frame, "to": "stage", "matrix": matrix,
                                                          "from_unit": "px"}))
    assert error.reason == "SMART_BadArgument" and "U+" in error.desc
    error = _refusal(mapper, "RemoveFrame", frame.encode("utf-8"))
    assert error.reason in ("SMART_BadArgument", "SMART_NotFound")
    assert "stage" in mapper.Frames
    _still_healthy(mapper)


@pytest.mark.parametrize("path", ["/tmp/a\x00b.tif", "/tmp/\ud800.tif"])
def test_paths_that_no_file_can_have_are_refused(devices: dict[str, tango.DeviceProxy], corpus: dict[str, str],
                                                 path: str) -> None:
    reg = devices["RegistrationDS"]
    error = _refusal(reg, "LoadImage", json.dumps({"slot": "ref", "path": path}))
    assert error.reason == "SMART_BadArgument" and "U+" in error.desc
    _still_healthy(reg)
    assert _load(reg, corpus["good"])["slot"] == "ref"


@pytest.mark.parametrize("hostile", ["fifo", "directory", "loop"])  # not /dev/zero: a test must never risk it
def test_export_csv_onto_hostile_paths(devices: dict[str, tango.DeviceProxy], corpus: dict[str, str],
                                       hostile: str) -> None:
    particles = devices["ParticleDS"]
    _detect(particles, corpus["good"])
    try:
        written = particles.ExportCsv(corpus[hostile])
    except tango.DevFailed as exc:
        assert exc.args[0].reason.startswith("SMART_"), exc.args[0].reason
    else:
        pytest.fail(f"ExportCsv replaced {corpus[hostile]!r} by a regular file ({written!r})")
    _still_healthy(particles)
    assert _detect(particles, corpus["good"])["count"] == 6


@pytest.mark.parametrize(("name", "value"), [("Separation", 1e300), ("Separation", -1.0), ("Diameter", 10_001),
                                             ("MinMass", 1e300), ("IsolationRadius", 1e9), ("Percentile", 250.0),
                                             ("Threshold", -5.0), ("MaxSize", 1e6), ("NoiseSize", 1e6)])
def test_absurd_settings_are_refused_at_the_door(devices: dict[str, tango.DeviceProxy], corpus: dict[str, str],
                                                 name: str, value: float) -> None:
    particles = devices["ParticleDS"]
    before = particles.read_attribute(name).value
    with pytest.raises(tango.DevFailed) as info:
        particles.write_attribute(name, value)
    assert info.value.args[0].reason == "API_WAttrOutsideLimit"
    assert particles.read_attribute(name).value == before
    assert _detect(particles, corpus["good"])["count"] == 6


def test_absurd_write_values_are_refused_on_every_server(devices: dict[str, tango.DeviceProxy],
                                                         camera: tango.DeviceProxy) -> None:
    with pytest.raises(tango.DevFailed) as info:
        devices["RegistrationDS"].write_attribute("MinConfidence", 1e300)
    assert info.value.args[0].reason == "API_WAttrOutsideLimit"
    with pytest.raises(tango.DevFailed) as info:
        devices["CoordMapperDS"].write_attribute("BeamPosition", [1e300, 0.0])
    assert info.value.args[0].reason == "API_WAttrOutsideLimit"
    devices["CoordMapperDS"].write_attribute("BeamPosition", [320.0, 240.0])
    assert list(devices["CoordMapperDS"].BeamPosition) == [320.0, 240.0]
    for name, value in (("ExposureTime", 1e300), ("ExposureTime", 0.0), ("Gain", -1.0),
                        ("TargetFrameRate", 1e9), ("PixelSize", 1e300)):
        with pytest.raises(tango.DevFailed) as info:
            camera.write_attribute(name, value)
        assert info.value.args[0].reason == "API_WAttrOutsideLimit", name
    assert camera.Snap() >= 1


def test_memorized_absurd_values_cannot_poison_a_restart(tmp_path: Path, corpus: dict[str, str]) -> None:
    """A value memorized before the limits existed (or typed into the database) is not applied:
    the device starts with its default and detects."""
    name = "test/hostile/memorized"
    with serve_devices([ParticleDS], {name: ("ParticleDS", {})}, tmp_path) as trls:
        tango.DeviceProxy(trls[name]).write_attribute("Separation", 5.0)
    (db_file,) = tmp_path.glob("*.db")
    tango.Database(str(db_file)).put_device_attribute_property(name, {"Separation": {"__value": ["1e300"]}})
    with serve_devices([ParticleDS], {name: ("ParticleDS", {})}, tmp_path) as trls:
        particles = device_proxy(trls[name], 30_000)  # the first Detect of a server imports and compiles trackpy
        assert particles.state() == tango.DevState.ON
        assert particles.Separation == 0.0
        assert json.loads(particles.Detect(json.dumps({"path": corpus["good"], "Diameter": 7, "MinMass": 200.0,
                                                        "IsolationRadius": 20.0})))["count"] == 6


@pytest.mark.parametrize("name", ["fifo", "directory", "loop", "画像.tif", "a–b.tif", "relative"])
def test_camera_save_image_onto_hostile_and_scripted_paths(corpus: dict[str, str], name: str,
                                                           camera: tango.DeviceProxy) -> None:
    camera.Snap()
    if name in SCRIPT_NAMES:
        target = os.path.join(corpus["folder"], "saved-" + name)
        reply = camera.SaveImage(target.encode("utf-8"))
        assert reply.encode("latin-1") == target.encode("utf-8") and os.path.isfile(target)
    else:
        path = "saved.tif" if name == "relative" else corpus[name]
        try:
            camera.SaveImage(path)
        except tango.DevFailed as exc:
            assert exc.args[0].reason.startswith("SMART_"), exc.args[0].reason
    assert camera.state() in (tango.DevState.ON, tango.DevState.RUNNING) and camera.status()
    good = os.path.join(corpus["folder"], "saved-good.tif")
    assert camera.SaveImage(good) == good and os.path.isfile(good)


