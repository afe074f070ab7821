"""CameraDS in the running stack: the sim source renders what the real motors show,
a subscribed client sees a move within two frame periods, a Taurus image widget shows
the live Image."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tango

from clients.launcher import Stack
from macros.smart_calls import proxy as device_proxy
from servers.common.imageio import read_image
from tests.helpers import wait_for
from tests.system.conftest import device_trl
from tests.tango_helpers import Events

RATE_HZ = 5.0
"""Latency bound: one period (a frame started just before the move ended) plus one frame time
(stage read, render ~45 ms, push); on 2 busy cores a frame can take ~170 ms, so 5 Hz keeps the
two-period bound with margin."""


def move(motor: tango.DeviceProxy, position: float) -> float:
    """Move and return the monotonic time at which the motor was seen stopped."""
    motor.write_attribute("Position", position)
    assert wait_for(lambda: motor.state() != tango.DevState.MOVING, timeout=30, step=0.005)
    return time.monotonic()


def blocks(image: np.ndarray, size: int = 8) -> np.ndarray:
    h, w = image.shape
    return image.astype(np.float32).reshape(h // size, size, w // size, size).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def sim_truth(stack: Stack):
    """The same virtual beamline the camera renders: its SimBeamline file, else SimSeed's."""
    from simulation.camera import CameraRenderer
    from simulation.config import default_beamline, load_beamline

    db = tango.Database(*stack.tango_host.split(":"))
    props = db.get_device_property("smart/camera/1", ["SimBeamline", "SimSeed"])
    path = list(props["SimBeamline"])
    beamline = load_beamline(path[0]) if path and path[0] else default_beamline(int((list(props["SimSeed"]) or [1])[0]))
    return beamline, CameraRenderer(beamline.sample, beamline.mounting, beamline.camera, seed=beamline.seed)


@pytest.fixture
def cam(stack: Stack) -> Iterator[tango.DeviceProxy]:
    proxy = device_proxy(device_trl(stack, "smart/camera/1"), 5000)
    yield proxy
    proxy.Stop()  # leave the shared camera idle for the other tests


def test_sim_frames_follow_the_motors_and_a_move_shows_within_two_frames(stack, cam, sim_truth, tmp_path) -> None:
    beamline, renderer = sim_truth
    samx = tango.DeviceProxy(device_trl(stack, "samx"))
    samy = tango.DeviceProxy(device_trl(stack, "samy"))
    x0, y0 = beamline.mounting.offset_mm  # the sample centre under the beam: markers in view
    move(samx, x0)
    move(samy, y0)
    assert cam.Source == "sim" and cam.PixelSize == pytest.approx(0.55)
    cam.TargetFrameRate = RATE_HZ
    cam.Start()
    assert wait_for(lambda: cam.state() == tango.DevState.RUNNING and cam.FrameNumber > 0, timeout=20)
    old = renderer.render((x0, y0), noise=False).astype(np.float32)
    image, meta = (a.value for a in cam.read_attributes(["Image", "FrameMetadata"]))
    meta = json.loads(meta)
    assert meta["stage"] == {"samx": pytest.approx(x0), "samy": pytest.approx(y0)}
    assert image.dtype == np.uint16 and image.shape == (2048, 2048)
    # 8x8 block means average the shot noise away: what remains must be the truth at this stage position
    assert np.abs(blocks(image) - blocks(old)).mean() < 5

    events = Events()
    event_id = cam.subscribe_event("Image", tango.EventType.CHANGE_EVENT, events)
    try:
        x1 = x0 + 0.05  # 50 um = 91 px at 0.55 um/px
        new = renderer.render((x1, y0), noise=False).astype(np.float32)
        assert np.abs(new - old).mean() > 40  # the move is visible
        time.sleep(0.3)
        ended = move(samx, x1)
        assert wait_for(lambda: any(t > ended for t, _ in events.items), timeout=5)
        time.sleep(2.5 / RATE_HZ)
        seen, log = None, []
        for arrival, frame in list(events.items):
            if frame is None:
                continue
            at_new = np.abs(frame - new).mean() < np.abs(frame - old).mean()
            log.append(f"{arrival - ended:+.3f}s {'new' if at_new else 'old'}")
            if at_new and seen is None:
                seen = arrival
        assert seen is not None, f"no frame at the new stage position arrived: {log}"
        assert seen - ended <= 2.0 / RATE_HZ, f"the move showed {seen - ended:.3f} s after it ended: {log}"
    finally:
        cam.unsubscribe_event(event_id)
    meta = json.loads(cam.FrameMetadata)
    assert meta["stage"]["samx"] == pytest.approx(x1) and meta["pixel_size_um"] == pytest.approx(0.55)
    assert cam.FrameRate == pytest.approx(RATE_HZ, rel=0.3)
    saved = read_image(cam.SaveImage(str(tmp_path / "sim.tif")))
    assert saved.pixel_size_um == pytest.approx(0.55) and saved.data.dtype == np.uint16
    assert saved.metadata["stage"]["samx"] == pytest.approx(x1)


def test_taurus_image_widget_shows_the_live_image(stack, cam, qtbot, tmp_path: Path) -> None:
    import pyqtgraph as pg
    from taurus_pyqtgraph import TaurusImageItem

    cam.TargetFrameRate = 5.0
    cam.Start()
    assert wait_for(lambda: cam.FrameNumber > 0, timeout=20)
    widget = pg.PlotWidget()
    qtbot.addWidget(widget)
    item = TaurusImageItem()
    widget.getPlotItem().addItem(item)
    widget.resize(640, 640)
    item.setModel(device_trl(stack, "smart/camera/1/Image"))
    widget.show()
    qtbot.waitUntil(lambda: item.image is not None, timeout=15000)
    widget.getPlotItem().autoRange()
    qtbot.wait(200)
    png = tmp_path / "camera_live.png"
    assert widget.grab().save(str(png))
    item.setModel(None)
    shown = read_image(str(png)).data.astype(np.float32)
    assert item.image.shape == (2048, 2048)
    assert shown.shape[0] > 100 and shown.std() > 10, "the saved screenshot is blank"
    centre = shown[shown.shape[0] // 4: 3 * shown.shape[0] // 4, shown.shape[1] // 4: 3 * shown.shape[1] // 4]
    assert centre.std() > 5  # structure of the image, not just axes on a flat background


def test_sim_pixel_size_follows_the_microscope_zoom(stack, cam) -> None:
    microscope = tango.DeviceProxy(device_trl(stack, "smart/microscope/1"))
    assert microscope.Zoom == "mid"
    cam.TargetFrameRate = 5.0
    cam.Start()
    try:
        microscope.Zoom = "high"
        assert wait_for(lambda: json.loads(cam.FrameMetadata)["pixel_size_um"] == pytest.approx(0.275), timeout=10)
        assert cam.PixelSize == pytest.approx(0.275)
        with pytest.raises(tango.DevFailed) as excinfo:
            cam.PixelSize = 1.0  # the sim knows its scale: refused, with the reason
        assert excinfo.value.args[0].reason == "SMART_NotReady"
    finally:
        microscope.Zoom = "mid"
    assert wait_for(lambda: json.loads(cam.FrameMetadata)["pixel_size_um"] == pytest.approx(0.55), timeout=10)
