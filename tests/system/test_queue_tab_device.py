"""The Queue tab against a real Tango device with QueueDS's documented interface
(tests/queue_double.py, its own server process): the table, counts, progress, time left and
status from the device's attributes, the targets on a camera view by state, a refresh only
when Revision moved, the live map, and steering refused (nothing sent) when no Door answers.
Offscreen; no Sardana. The tab against the real QueueDS and its macros through a Door is
tests/system/test_gui_queue.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tango

from clients.commands import SmartClient
from tests.device_server import serve_devices
from tests.queue_double import QueueDouble

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SCAN = {"macro": "mesh", "half_width_um": 0.3, "step_um": 0.05, "exposure": 0.01}


def target(ident: int, state: str, x: float, reason: str = "") -> dict:
    return {"id": ident, "position": ident - 1, "frame": "camera", "x": x, "y": 500.0, "particle": ident * 10,
            "region": "A", "source": "", "scan": SCAN, "state": state, "reason": reason, "failure_kind": None,
            "attempts": 1 if state != "pending" else 0, "added_at": "", "started_at": None, "finished_at": None,
            "worker": None, "skip_requested": False, "data": {}}


@pytest.fixture
def queue_trl(tmp_path: Path):  # noqa: ANN201
    name = "smart/queue/1"
    with serve_devices([QueueDouble], {name: ("QueueDouble", {})}, tmp_path) as trls:
        yield trls[name]


def test_tab_shows_the_queue_and_refuses_to_steer_without_a_door(queue_trl: str, qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    import pyqtgraph as pg

    from clients.gui.queue_tab import STATE_COLOURS, QueueOverlay, QueuePanel

    device = tango.DeviceProxy(queue_trl)
    targets = [target(1, "done", 100.0), target(2, "running", 200.0), target(3, "pending", 300.0),
               target(4, "failed", 400.0, "no Ce peak above 5 sigma (best 2.1)")]
    device.Load(json.dumps({"targets": targets, "activity": {"activity": "scanning", "message": "mesh at [0.5, 0.9]"}}))
    host = queue_trl.split("/")[2]
    client = SmartClient(host, door="smart/door/01")  # no Door on this server: live data and steering have none
    panel = QueuePanel(client, queue_device=queue_trl, steer_door="smart/door/02")
    qtbot.addWidget(panel)
    panel.resize(900, 700)
    panel.show()
    snap = panel.refresh()
    assert snap is not None
    assert panel.summary_label.text() == "4 targets: 1 pending, 1 running, 1 done, 1 failed, 0 skipped"
    assert panel.status_label.text() == "scanning: mesh at [0.5, 0.9]"
    assert (panel.progress.value(), panel.progress.maximum()) == (2, 4)
    assert panel.time_left_label.text() == "time left: about 25 s"  # the device's TimeLeft: 2 x 12.5 s
    rows = {panel.table.item(r, 0).text(): r for r in range(panel.table.rowCount())}
    assert sorted(rows) == ["1", "2", "3", "4"]
    for ident, state in (("1", "done"), ("2", "running"), ("3", "pending"), ("4", "failed")):
        cell = panel.table.item(rows[ident], 1)
        assert cell.text() == state and cell.background().color().getRgb()[:3] == STATE_COLOURS[state]
    assert panel.table.item(rows["4"], 7).text() == "no Ce peak above 5 sigma (best 2.1)"
    assert panel.table.item(rows["2"], 5).text() == "mesh ±0.3 µm, 50 nm, 10 ms"

    # on a camera view: one diamond per target, by state, where the (camera-frame) target is
    plot = pg.PlotWidget()
    qtbot.addWidget(plot)
    overlay = QueueOverlay(plot)
    overlay.update(client, snap.targets, None)
    assert overlay.positions["running"].tolist() == [[200.0, 500.0]]
    assert overlay.positions["failed"].tolist() == [[400.0, 500.0]]
    assert sum(len(p) for p in overlay.positions.values()) == 4

    # the target list is read again only when Revision moved
    revision = snap.revision
    assert panel.refresh().revision == revision
    device.Pause("night shift break")
    snap = panel.refresh()
    assert snap.revision == revision + 1 and snap.paused
    assert panel.status_label.text().startswith("paused: night shift break")

    # steering goes through a Door: with none answering, the buttons say so and send nothing
    panel.table.selectRow(rows["3"])
    assert not panel.skip() and not panel.resume()
    assert panel.last_steer[0] is False and "SMART_NotReady: no free Door" in panel.last_steer[1]
    assert json.loads(device.Targets)[2]["state"] == "pending" and device.Paused

    # the live map of a scan, from the Door's RecordData packets
    assert panel.live_title.text().startswith("live map: cannot follow the Door's scans")
    panel.live.feed({"type": "data_desc", "data": {
        "title": "mesh samx 0.1 0.2 2 samy 0.5 0.6 2 0.01", "serialno": 7, "ref_moveables": ["samx"],
        "column_desc": [{"name": "samx", "label": "samx", "is_reference": True},
                        {"name": "samy", "label": "samy", "is_reference": False},
                        {"name": "tango://h:1/expchan/xrf_ctrl/2", "label": "xrf_ce"}]}})
    for n, (x, y) in enumerate([(0.1, 0.5), (0.15, 0.5), (0.2, 0.5), (0.1, 0.55)]):
        panel.live.feed({"type": "record_data", "data": {"samx": x, "samy": y,
                                                          "tango://h:1/expchan/xrf_ctrl/2": float(n)}})
    panel.draw_live()
    assert panel.live_image.image.shape == (3, 2)  # x columns by y rows, so far
    assert "target 2 (particle 20)" in panel.live_title.text() and "4/9 points" in panel.live_title.text()
    shot = tmp_path / "tab.png"
    assert panel.grab().save(str(shot), "PNG")
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    for state in ("running", "failed", "done"):
        assert (np.abs(pixels - np.array(STATE_COLOURS[state])).sum(axis=2) == 0).sum() > 50, state
    panel.close_events()
