"""smart-gui's Queue tab against the real QueueDS while smart_run_queue runs on the night's Door:
the targets with their states, progress and time left, the running scan's live map from the
Door's RecordData, pause / skip / resume through the second Door, the targets on the camera
coloured by state, and a refusal when no Door is free. Offscreen; it also takes the screenshot
of docs/gui.md (written there when SMART_DOC_SCREENSHOTS=1)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from clients.commands import SmartClient
from clients.door import DoorClient
from clients.launcher import REPO, Stack
from macros.smart_calls import TangoThread
from tests.system.stacks import detect_with_true_sem_mapping, running_stack
from tests.tango_helpers import stack_proxy as proxy

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytestmark = pytest.mark.timeout(900)

SCAN = {"macro": "mesh", "half_width_um": 0.3, "step_um": 0.05, "exposure": 0.01}  # 169 points, ~10 s
SCREENSHOT = REPO / "docs" / "images" / "smart-gui-queue.png"


@pytest.fixture(scope="module")
def queue_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack with the camera calibrated, the SEM image registered to it, its particles
    detected, and sem -> stage known (from the simulation's truth, what smart_fine_align
    measures: test_workflow.py covers that)."""
    stack = Stack(tmp_path_factory.mktemp("guiqueue") / "stack", echo=False, sem_image=True)
    with running_stack(stack):
        sem = stack._ensure_sem_image()
        with DoorClient(f"tango://{stack.tango_host}/smart/door/01") as door:
            # the camera chain as a user makes it, so the overlays sit on the image
            # the whole +-0.3 um mesh (~10 s) gives the test time to steer; sized meshes would be 7 x 7
            for macro in ("smart_calibrate_camera 20 3", f"smart_register {sem} similarity sem",
                          "smart_beam_set center", "senv SmartScanSizing False"):
                door.run(macro, timeout_s=600)
        detect_with_true_sem_mapping(stack, sem)
        yield stack


def wait_until(qtbot, condition: Callable[[], bool], timeout_s: float, what: str,  # noqa: ANN001
               detail: Callable[[], object] = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        qtbot.wait(100)
    pytest.fail(f"not within {timeout_s:.0f} s: {what}; {detail()}")


def test_queue_tab_follows_and_steers_a_running_night(queue_stack, qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    from taurus.external.qt import Qt

    from clients.gui.main import SmartWindow, save_screenshot

    stack = queue_stack
    queue = proxy(stack, "smart/queue/1")
    added = json.loads(queue.AddParticles(json.dumps({"particles": "isolated", "scan": SCAN})))["added"][:5]
    extra = [t["id"] for t in json.loads(queue.Targets) if t["id"] not in added]
    if extra:
        queue.Remove(json.dumps({"ids": extra}))
    assert len(added) == 5
    window = SmartWindow(SmartClient(stack.tango_host), assume_yes=True)
    window.resize(1700, 1000)
    qtbot.addWidget(window)
    window.show()
    window.splitter.setSizes([900, 800])
    assert window.show_tab("Queue") and window.queue_panel is not None
    panel, overlay = window.queue_panel, window.queue_overlay
    wait_until(qtbot, lambda: window.populated() and panel.table.rowCount() == 5, 30, "the window and the queue")
    assert panel.snapshot.summary() == "5 targets: 5 pending, 0 running, 0 done, 0 failed, 0 skipped"
    assert [panel.table.item(r, 1).text() for r in range(5)] == ["pending"] * 5
    wait_until(qtbot, lambda: len(overlay.positions["pending"]) == 5, 20, "the targets on the camera")

    lines: list[str] = []
    door = DoorClient(f"tango://{stack.tango_host}/smart/door/01", echo=lambda stream, line: lines.append(line))
    failure: list[BaseException] = []

    def run_night() -> None:
        try:
            door.run("smart_run_queue", timeout_s=600)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            failure.append(exc)

    def scanning(ident: int, points: int) -> Callable[[], bool]:
        return lambda: panel.snapshot.current.get("id") == ident and len(panel.live.points) >= points

    def why() -> object:
        return panel.live.progress_text(), panel.snapshot.current, failure, lines[-8:]

    night = TangoThread(target=run_night, daemon=True)
    night.start()
    try:
        # the live map fills while the first target is scanned
        wait_until(qtbot, scanning(added[0], 20), 180, "the first target running, 20 points of its map", why)
        assert panel.live.columns is not None and panel.live.expected == 13 * 13
        # x runs fastest in a mesh: every column of the map is there, its rows fill one by one (the
        # map is redrawn at most every LIVE_REDRAW_S, so the second row shows a moment after its points)
        wait_until(qtbot, lambda: panel.live_image.image is not None and panel.live_image.image.shape[1] >= 2, 20,
                   "the live map showing its second row", why)
        assert panel.live_image.image.shape[0] == 13
        assert "running" in [panel.table.item(r, 1).text() for r in range(5)]
        assert panel.progress.maximum() == 5 and panel.time_left_label.text().startswith("time left: about")
        wait_until(qtbot, lambda: len(overlay.positions["running"]) == 1, 20, "the running target on the camera")

        # no free Door: the night's is busy and the steering Door does not exist -> refused, nothing sent
        panel.steer_door, kept = "smart/door/99", panel.steer_door
        assert not panel.pause()
        assert "SMART_NotReady" in panel.last_steer[1] and not queue.Paused
        panel.steer_door = kept

        # pause after this target: through the second Door, while door 01 runs the night
        assert panel.pause()
        wait_until(qtbot, lambda: not panel.steering, 60, "the pause macro")
        assert panel.last_steer[0], panel.last_steer[1]
        assert "smart/door/02" in panel.last_steer[1] and queue.Paused
        wait_until(qtbot, lambda: panel.status_label.text().startswith("paused"), 10, "the tab to say paused")

        # skip the last target, chosen in the table
        last = next(r for r in range(5) if int(panel.table.item(r, 0).text()) == added[-1])
        panel.table.clearSelection()
        panel.table.selectRow(last)
        assert panel.selected_ids() == [added[-1]]
        assert panel.skip()
        wait_until(qtbot, lambda: not panel.steering, 60, "the skip macro")
        assert panel.last_steer[0], panel.last_steer[1]
        assert {t["id"]: t["state"] for t in json.loads(queue.Targets)}[added[-1]] == "skipped"

        # the first target ends done; nothing new starts while paused; Resume goes on with the second
        wait_until(qtbot, lambda: panel.snapshot.counts.get("done") == 1 and not panel.snapshot.current, 180,
                   "the first target done, none running", why)
        assert panel.resume()
        wait_until(qtbot, lambda: not panel.steering, 60, "the resume macro")
        assert panel.last_steer[0], panel.last_steer[1]
        assert not queue.Paused
        wait_until(qtbot, scanning(added[1], 10), 180, "the second target running, 10 points of its map", why)
        wait_until(qtbot, lambda: len(overlay.positions["running"]) == 1 and len(overlay.positions["done"]) == 1
                   and len(overlay.positions["skipped"]) == 1, 20, "the camera colours by state")
        window.zoom_to_reference()
        if os.environ.get("SMART_DOC_SCREENSHOTS") == "1":
            assert save_screenshot(window, SCREENSHOT, Qt.QApplication.instance(), timeout_s=10, settle_s=0.5)
        shot = tmp_path / "queue-tab.png"
        assert save_screenshot(window, shot, Qt.QApplication.instance(), timeout_s=10, settle_s=0.2)

        # the night ends by itself: 4 done, 1 skipped, shown as such in the table and on the camera
        night.join(timeout=400)
        assert not night.is_alive() and not failure, (failure, lines[-10:])
        assert json.loads(queue.Counts)["done"] == 4, queue.Counts
        # the tab polls every second; on a loaded host its timer can lag well behind
        wait_until(qtbot, lambda: panel.snapshot.counts.get("done") == 4, 60, "4 done in the tab",
                   lambda: f"tab shows {panel.snapshot.counts}, the device {queue.Counts}")
        wait_until(qtbot, lambda: len(overlay.positions["done"]) == 4 and len(overlay.positions["skipped"]) == 1,
                   20, "the camera colours at the end")
        assert panel.progress.value() == 5 and panel.time_left_label.text() == "time left: nothing left to scan"
        assert sorted(panel.table.item(r, 1).text() for r in range(5)) == ["done"] * 4 + ["skipped"]
    finally:
        if night.is_alive():
            door.proxy.StopMacro()
            night.join(timeout=60)
        door.close()
        window.close()

    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1000, 1700)
    running = (abs(pixels[..., 0] - 255) < 3) & (abs(pixels[..., 1] - 230) < 3) & (pixels[..., 2] < 3)
    assert running.sum() > 50  # the running target's state cell and its diamond on the camera, in yellow
