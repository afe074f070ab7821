"""smart-gui against the running stack, offscreen: the window fills from live devices,
a click on the camera moves the simulated stage to X = S + A (p - b), a busy Door
refuses the move, and --screenshot writes a PNG that shows the frame and overlays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tango

from clients.commands import SmartClient
from clients.launcher import REPO
from tests.system.conftest import device_trl

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

A = np.array([[0.00055, 0.0], [0.0, -0.00055]])  # mm per camera px, image y flipped (docs/coordmapper.md)
BEAM = (1023.5, 1023.5)


def calibrate(stack) -> None:  # noqa: ANN001 - the session Stack
    """A known camera calibration and beam position, so the expected target is exact."""
    mapper = tango.DeviceProxy(device_trl(stack, "smart/coordmapper/1"))
    steps = [[0.055, 0.0, -100.0, 0.0], [0.0, 0.055, 0.0, 100.0], [0.055, 0.055, -100.0, 100.0],
             [-0.055, 0.0, 100.0, 0.0]]
    mapper.CalibrateCamera(json.dumps({"steps": steps, "model": "affine"}))
    mapper.write_attribute("BeamPosition", list(BEAM))
    tango.DeviceProxy(device_trl(stack, "smart/camera/1")).Snap()


@pytest.fixture
def window(stack, qtbot):  # noqa: ANN001, ANN201
    from clients.gui.main import SmartWindow

    calibrate(stack)
    win = SmartWindow(SmartClient(stack.tango_host), assume_yes=True, poll_hz=5.0)
    win.resize(1400, 900)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(win.populated, timeout=20_000)
    yield win
    win.close()


def stage(client: SmartClient) -> np.ndarray:
    return np.array(client.stage_position())


def test_window_populates_from_live_devices(window, qtbot) -> None:  # noqa: ANN001
    assert window.camera_view.frame_number > 0
    assert window.camera_view.shape == (2048, 2048)
    assert window.overlay_data.beam == BEAM
    assert window.overlay_data.pixel_size_um == pytest.approx(0.55)

    def forms_have_values() -> bool:
        for role in ("camera", "particles", "mapper", "registration", "stage"):
            form = window.forms[role]
            if not len(form) or any(form[i].getModelObj() is None for i in range(len(form))):
                return False
        exposure = window.forms["camera"][3].readWidget()
        return exposure.text().strip() not in ("", "-----")

    qtbot.waitUntil(forms_have_values, timeout=10_000)
    assert window.macro_panel.sequencer is not None, "the stack runs a MacroServer, so the sequencer must be there"
    window.macro_panel.queue_scan("smart_scan_particles mesh 0.3 0.05 0.01 True 2")
    assert window.macro_panel.queued[-1].startswith("smart_scan_particles")


def test_status_bar_shows_the_stage_and_the_door(window, qtbot, stack) -> None:  # noqa: ANN001
    position = stage(window.client)
    expected = f"stage: samx {position[0]:+.5f} mm   samy {position[1]:+.5f} mm"
    qtbot.waitUntil(lambda: window.stage_label.text() == expected, timeout=10_000)
    # the Door's own State, whatever an earlier test left it in (ON, or ALARM after a refused macro)
    door = tango.DeviceProxy(device_trl(stack, "smart/door/01"))
    qtbot.waitUntil(lambda: window.door_label.text() == f"Door smart/door/01: {door.state()}", timeout=10_000)
    assert str(door.state()) in ("ON", "ALARM", "RUNNING")


def test_every_tab_title_is_on_screen(window) -> None:  # noqa: ANN001
    bar = window.tabs.tabBar()
    titles = [bar.tabText(i) for i in range(bar.count())]
    # the session's stack runs QueueDS, so the Queue tab is there
    assert titles == ["Camera", "Registration", "Particles", "Mapper", "Stage", "Particle table", "Macros", "Queue"]
    visible = bar.visibleRegion().boundingRect()
    for i in range(bar.count()):
        rect = bar.tabRect(i)
        assert visible.contains(rect), (titles[i], rect, visible)
        # written horizontally: wide enough for its title in the tab's font
        assert rect.width() >= bar.fontMetrics().horizontalAdvance(titles[i]), titles[i]


def test_click_on_camera_moves_the_stage(window, qtbot) -> None:  # noqa: ANN001
    from taurus.external.qt import Qt

    before = stage(window.client)
    target_px = (BEAM[0] + 60.0, BEAM[1] - 40.0)
    pos = window.camera_view.widget_pos(*target_px)
    qtbot.mouseClick(window.camera_view.viewport(), Qt.Qt.LeftButton, pos=pos)
    assert window.last_click is not None
    clicked = np.array(window.last_click)
    assert np.allclose(clicked, target_px, atol=5.0)  # within a screen pixel of the intended point
    qtbot.waitUntil(lambda: window.last_result is not None, timeout=30_000)
    assert window.last_result[0], window.last_result[1]
    expected = before + A @ (clicked - np.array(BEAM))
    assert np.allclose(stage(window.client), expected, atol=2e-5), (stage(window.client), expected)


def test_click_is_refused_while_the_door_is_busy(window, monkeypatch) -> None:  # noqa: ANN001
    before = stage(window.client)
    monkeypatch.setattr(window.door, "is_busy", lambda: True)
    assert not window.request_macro(["smart_goto_xy", "camera", "1000.0", "1000.0"], "move?")
    assert "busy" in window.statusBar().currentMessage()
    assert "SMART_NotReady" in window.statusBar().currentMessage()
    assert np.allclose(stage(window.client), before)


def test_screenshot_shows_the_frame_with_overlays(stack, tmp_path: Path) -> None:  # noqa: ANN001
    from PIL import Image

    calibrate(stack)
    png = tmp_path / "gui.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-m", "clients.gui.main", "--tango-host", stack.tango_host,
                           "--screenshot", str(png), "--size", "1200x800"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (800, 1200)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    magenta = (r > 230) & (g < 30) & (b > 230)  # the beam crosshair
    yellow = (r > 230) & (g > 230) & (b < 30)   # the scale bar
    grey = (abs(r - g) < 4) & (abs(g - b) < 4) & (r > 40)  # the camera frame itself
    assert magenta.sum() > 100
    assert yellow.sum() > 100
    assert grey.sum() > 0.2 * pixels.shape[0] * pixels.shape[1]
