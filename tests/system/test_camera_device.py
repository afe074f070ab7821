"""CameraDS as a Tango device (each in its own fresh server process on a file database):
events on every frame, consistent metadata, every source kind, faults and recovery,
refusals with SMART reasons."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
import pytest
import tango
from tango import DevState

from servers.common.imageio import read_image
from tests.device_server import serve_devices
from tests.fake_devices import ImageServer
from tests.helpers import wait_for, write_sequence
from tests.tango_helpers import Events, camera, reason


def test_files_stream_pushes_change_and_data_ready_events_for_every_frame(tmp_path: Path) -> None:
    frames = write_sequence(tmp_path / "seq")
    with camera({"Source": f"files:{tmp_path}/seq/*.tif"}) as cam:
        assert cam.state() == DevState.ON
        assert cam.Source == f"files:{tmp_path}/seq/*.tif"
        images, ready = Events(), Events()
        ids = [cam.subscribe_event("Image", tango.EventType.CHANGE_EVENT, images),
               cam.subscribe_event("Image", tango.EventType.DATA_READY_EVENT, ready)]
        cam.TargetFrameRate = 25.0
        cam.Start()
        assert wait_for(lambda: cam.state() == DevState.RUNNING)
        assert wait_for(lambda: len(ready.values()) >= 20)
        cam.Stop()
        assert cam.state() == DevState.ON
        time.sleep(0.3)
        counters = ready.values()
        assert counters == list(range(counters[0], counters[0] + len(counters)))  # no frame skipped
        assert counters[0] == 1
        assert len(images.errors) == 1  # the subscription's first read: no frame yet, says so
        streamed = images.values()
        assert len(streamed) == len(counters)
        for image, number in zip(streamed, counters, strict=True):
            np.testing.assert_array_equal(image, frames[(number - 1) % len(frames)])
        assert cam.FrameNumber > 15 and cam.Width == 64 and cam.Height == 48
        for event_id in ids:
            cam.unsubscribe_event(event_id)


def test_image_and_metadata_read_together_describe_one_frame(tmp_path: Path) -> None:
    write_sequence(tmp_path / "seq", n=5, shape=(1024, 1024))  # big enough to keep the monitor busy
    with camera({"Source": f"files:{tmp_path}/seq/*.tif"}) as cam:
        cam.TargetFrameRate = 0.0  # as fast as possible: the hardest case for consistency
        cam.PixelSize = 0.8
        events = Events()
        event_id = cam.subscribe_event("Image", tango.EventType.CHANGE_EVENT, events)
        cam.Start()
        assert wait_for(lambda: cam.FrameNumber > 5)
        for _ in range(30):
            image, meta, number = cam.read_attributes(["Image", "FrameMetadata", "FrameNumber"])
            meta = json.loads(meta.value)
            assert meta["frame_number"] == number.value
            assert int(image.value[0, 0]) == (meta["frame_number"] - 1) % 5
            assert meta["pixel_size_um"] == 0.8 and meta["stage"] == {}
        assert cam.FrameRate > 20
        started = time.monotonic()
        cam.Stop()  # the streaming thread must leave the device monitor to client requests
        assert time.monotonic() - started < 1.0 and cam.state() == DevState.ON
        assert len(events.values()) > 5
        cam.unsubscribe_event(event_id)


def test_snap_save_and_reload_with_pixel_size(tmp_path: Path) -> None:
    frames = write_sequence(tmp_path / "seq", n=2)
    with camera({"Source": f"files:{tmp_path}/seq/*.tif"}) as cam:
        with pytest.raises(tango.DevFailed) as excinfo:
            _ = cam.Image
        assert reason(excinfo) == "SMART_NotReady"
        with pytest.raises(tango.DevFailed) as excinfo:
            cam.SaveImage(str(tmp_path / "none.tif"))
        assert reason(excinfo) == "SMART_NotReady"
        cam.PixelSize = 0.275
        assert cam.Snap() == 1 and cam.Snap() == 2
        assert cam.state() == DevState.ON
        np.testing.assert_array_equal(cam.Image, frames[1])
        path = cam.SaveImage(str(tmp_path / "saved.tif"))
        loaded = read_image(path)
        assert loaded.pixel_size_um == pytest.approx(0.275)
        np.testing.assert_array_equal(loaded.data, frames[1])
        assert loaded.metadata["frame_number"] == 2


def test_refusals_carry_smart_reasons_and_change_nothing(tmp_path: Path) -> None:
    write_sequence(tmp_path / "seq", n=1)
    with camera({"Source": f"files:{tmp_path}/seq/*.tif"}) as cam:
        cam.PixelSize = 0.5
        cam.TargetFrameRate = 7.0
        with pytest.raises(tango.DevFailed):  # NaN is stopped by Tango itself, before our code
            cam.PixelSize = float("nan")
        outside = "API_WAttrOutsideLimit"  # outside the Tango min/max: refused at the door
        cases = [("PixelSize", -2.0, outside), ("PixelSize", 0.0, outside),
                 ("TargetFrameRate", 5000.0, outside), ("ExposureTime", 5.0, "SMART_NotReady"),
                 ("Gain", 2.0, "SMART_NotReady")]
        for name, value, expected in cases:
            with pytest.raises(tango.DevFailed) as excinfo:
                cam.write_attribute(name, value)
            assert reason(excinfo) == expected, name
            assert excinfo.value.args[0].desc.strip()
        assert cam.PixelSize == 0.5 and cam.TargetFrameRate == 7.0
        cam.Snap()
        for path, expected in (("relative.tif", "SMART_BadArgument"), (str(tmp_path / "x.png"), "SMART_BadArgument"),
                               (str(tmp_path / "no" / "x.tif"), "SMART_NotFound")):
            with pytest.raises(tango.DevFailed) as excinfo:
                cam.SaveImage(path)
            assert reason(excinfo) == expected
        assert cam.state() == DevState.ON


def test_bad_source_property_gives_fault_that_explains_and_init_recovers(tmp_path: Path) -> None:
    with camera({"Source": "webcam"}) as cam:
        assert cam.state() == DevState.FAULT
        assert "Source 'webcam' is not understood" in cam.status()
        with pytest.raises(tango.DevFailed) as excinfo:
            cam.Start()
        assert reason(excinfo) == "SMART_NotReady"
        cam.Stop()  # always works
        cam.Init()
        assert cam.state() == DevState.FAULT


def test_files_that_disappear_fault_with_the_cause_and_come_back_running(tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    write_sequence(folder, n=3)
    with camera({"Source": f"files:{folder}/*.tif"}) as cam:
        cam.TargetFrameRate = 20.0
        cam.Start()
        assert wait_for(lambda: cam.state() == DevState.RUNNING and cam.FrameNumber > 2)
        hidden = tmp_path / "hidden"
        folder.rename(hidden)
        assert wait_for(lambda: cam.state() == DevState.FAULT, timeout=5)
        status = cam.status()
        assert "disappeared" in status or "no file matches" in status
        assert str(folder) in status and "keeps trying" in status
        frozen = cam.FrameNumber
        time.sleep(0.5)
        assert cam.FrameNumber == frozen
        hidden.rename(folder)
        assert wait_for(lambda: cam.state() == DevState.RUNNING, timeout=6)
        assert wait_for(lambda: cam.FrameNumber > frozen)
        assert "Streaming" in cam.status()
        cam.Init()  # while streaming: stops, rebuilds, idle
        assert cam.state() == DevState.ON
        assert cam.Snap() == 1


def test_opencv_video_file_source(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (80, 60))
    for i in range(6):
        frame = np.zeros((60, 80, 3), np.uint8)
        frame[:, : 10 * (i + 1)] = 200
        writer.write(frame)
    writer.release()
    with camera({"Source": f"opencv:{video}"}) as cam:
        cam.TargetFrameRate = 30.0
        cam.Start()
        assert wait_for(lambda: cam.FrameNumber >= 8)
        image = cam.Image
        assert image.dtype == np.uint8 and image.shape == (60, 80)
        cam.Stop()
        widths = []
        for _ in range(6):
            cam.Snap()
            widths.append(int((cam.Image[30] > 100).sum()))
        assert sorted(set(widths)) == widths or len(set(widths)) >= 5  # the clip plays (and loops)
        with pytest.raises(tango.DevFailed) as excinfo:
            cam.ExposureTime = 3.0
        assert reason(excinfo) == "SMART_NotReady"


def test_tango_source_republishes_events_and_polls_plain_attributes(tmp_path: Path) -> None:
    name = "test/images/1"
    with ExitStack() as upstream:
        trl = upstream.enter_context(serve_devices([ImageServer], {name: ("ImageServer", {})}, tmp_path))[name]
        images = tango.DeviceProxy(trl)
        base = trl.removesuffix("#dbase=no")
        with camera({"Source": f"tango:{base}/Image#dbase=no"}) as cam:
            cam.TargetFrameRate = 0.0
            cam.Start()
            assert wait_for(lambda: cam.state() == DevState.RUNNING and cam.FrameNumber >= 1)
            for value in (11, 22, 33):
                images.Push(value)
                assert wait_for(lambda v=value: int(cam.Image[0, 0]) == v, timeout=5), value
            assert cam.Image.dtype == np.uint16 and cam.Image.shape == (20, 30)
            number = cam.FrameNumber
            time.sleep(0.5)
            assert cam.FrameNumber == number  # events: no new image, no new frame
            cam.Stop()
        with camera({"Source": f"tango:{base}/Plain#dbase=no"}) as cam:
            assert cam.Snap() == 1
            assert cam.Image.dtype == np.uint8 and int(cam.Image[0, 0]) == 7
            cam.TargetFrameRate = 10.0
            cam.Start()
            assert wait_for(lambda: cam.FrameNumber >= 4)  # polled at the target rate
            upstream.close()  # the upstream device goes away
            assert wait_for(lambda: cam.state() == DevState.FAULT, timeout=8)
            assert name in cam.status()
            cam.Stop()
            assert cam.state() == DevState.ON


def test_settings_are_memorized_across_a_restart(tmp_path: Path) -> None:
    write_sequence(tmp_path / "seq", n=1)
    db_dir = tmp_path / "db"
    with camera({"Source": f"files:{tmp_path}/seq/*.tif"}, db_dir=db_dir) as cam:
        cam.PixelSize = 0.3125
        cam.TargetFrameRate = 3.5
        with pytest.raises(tango.DevFailed):
            cam.PixelSize = -1.0  # refused: must not be memorized either
    with camera({}, db_dir=db_dir) as cam:
        assert cam.PixelSize == pytest.approx(0.3125)
        assert cam.TargetFrameRate == pytest.approx(3.5)
        cam.Snap()
        assert json.loads(cam.FrameMetadata)["pixel_size_um"] == pytest.approx(0.3125)


def test_write_values_start_at_the_settings_in_force(tmp_path: Path) -> None:
    """A form shows the write value beside the read one: never 0 ms for an untouched exposure."""
    write_sequence(tmp_path / "seq", n=1)
    with camera({"Source": f"files:{tmp_path}/seq/*.tif"}, db_dir=tmp_path / "db") as cam:
        for name in ("ExposureTime", "Gain", "TargetFrameRate", "PixelSize"):
            reply = cam.read_attribute(name)
            if np.isfinite(reply.value):
                assert reply.w_value == pytest.approx(reply.value), name
        cam.TargetFrameRate = 2.5
        assert cam.read_attribute("TargetFrameRate").w_value == pytest.approx(2.5)
