"""The GUI overlay's bookkeeping that needs no devices: which particles the loop has scanned.

System tier because the GUI modules are Tango clients (they import tango and taurus), not
because a device runs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from clients.gui import overlays  # noqa: E402 - after the Qt platform is chosen

ROWS = [{"index": i, "x": x, "y": 10.0} for i, x in enumerate([100.0, 200.25, 300.5, 400.0])]


def progress(xs: list[float], count: int, done: list[int], as_text: bool = False) -> dict:
    key = ["/data/sem.tif", count, [round(x, 3) for x in xs], "mesh", 0.3, 0.05, 0.01]
    return {"SmartScanProgress": {"key": json.dumps(key) if as_text else key, "done": done,
                                  "started": "2026-11-30T06:00:00"}}


@pytest.mark.parametrize("as_text", [False, True])  # as smart_scan_particles writes it; as JSON text (before)
def test_scanned_particles_of_this_detection_are_reported(as_text: bool) -> None:
    env = progress([100.0, 300.5, 400.0], 4, [0, 2], as_text)  # the loop's order: isolated ones only
    assert overlays.scanned_particles(env, ROWS) == {0, 2}


@pytest.mark.parametrize("env", [
    {},                                                       # no loop has run
    progress([100.0, 300.5], 5, [0]),                         # another detection: other count
    progress([100.0, 999.0], 4, [0]),                         # same count, other particles
    {"SmartScanProgress": {"key": "not json", "done": [0]}},  # unreadable
    {"SmartScanProgress": "something else"},
])
def test_progress_of_another_detection_marks_nothing(env: dict) -> None:
    assert overlays.scanned_particles(env, ROWS) == set()


def test_neighbour_distances_decide_which_labels_are_readable() -> None:
    points = np.array([[0.0, 0.0], [1.0, 0.0], [50.0, 50.0]])
    assert overlays._neighbour_distances(points).tolist() == pytest.approx([1.0, 1.0, np.hypot(49, 50)])
    assert overlays._neighbour_distances(points[:1]).tolist() == [np.inf]


def test_index_labels_show_when_zoomed_in_and_scanned_particles_are_boxed(qtbot) -> None:  # noqa: ANN001
    from clients.gui.camera_view import CameraView

    view = CameraView()
    view.resize(800, 800)
    qtbot.addWidget(view)
    view.show()
    view.show_frame(np.zeros((2048, 2048), np.uint16), 1)
    items = overlays.OverlayItems(view)
    # two particles 3 camera px apart (a cluster), one alone; indices as in the particle table
    points = np.array([[1000.0, 1000.0], [1003.0, 1000.0], [1025.0, 1020.0]])
    data = overlays.OverlayData(particles=points, isolated=np.array([False, False, True]),
                                indices=np.array([7, 8, 12]), scanned=np.array([False, False, True]))
    items.update(data, (2048, 2048))
    assert items.scanned.data["x"].tolist() == [1025.0]  # the box around the scanned particle
    view.getViewBox().setRange(xRange=(0, 2048), yRange=(0, 2048), padding=0)
    assert items.visible_labels() == []  # whole frame: ~30 camera px are ~11 screen px
    view.getViewBox().setRange(xRange=(950, 1200), yRange=(950, 1200), padding=0)
    assert items.visible_labels() == ["12"]  # the isolated one reads; the cluster's would overlap
    view.getViewBox().setRange(xRange=(995, 1010), yRange=(995, 1010), padding=0)
    assert sorted(items.visible_labels()) == ["12", "7", "8"]
    items.update(overlays.OverlayData(), (2048, 2048))  # a new detection with nothing found
    assert items.visible_labels() == []


def test_detections_on_markers_are_neither_isolated_nor_crowded_particles() -> None:
    isolated = np.array([True, False, False, False])
    on_marker = np.array([False, False, True, True])
    assert overlays.particle_classes(isolated, on_marker).tolist() == ["isolated", "crowded", "marker", "marker"]
    # a ParticleDS without the on_bright_area column: everything is a particle, as before
    assert overlays.particle_classes(isolated, None).tolist() == ["isolated", "crowded", "crowded", "crowded"]
    # a marker flag wins over an isolated one: a maximum on a marker is no particle to circle
    assert overlays.particle_classes(np.array([True]), np.array([True])).tolist() == ["marker"]


def test_marker_detections_are_drawn_as_grey_crosses_not_circles(qtbot) -> None:  # noqa: ANN001
    from clients.gui.camera_view import CameraView

    view = CameraView()
    qtbot.addWidget(view)
    view.show_frame(np.zeros((512, 512), np.uint16), 1)
    items = overlays.OverlayItems(view)
    points = np.array([[100.0, 100.0], [200.0, 200.0], [202.0, 200.0], [300.0, 300.0], [307.0, 301.0]])
    data = overlays.OverlayData(particles=points, isolated=np.array([True, False, False, False, False]),
                                on_marker=np.array([False, False, False, True, True]), indices=np.arange(5))
    items.update(data, (512, 512))
    assert items.isolated.data["x"].tolist() == [100.0]
    assert items.crowded.data["x"].tolist() == [200.0, 202.0]
    assert items.markers.data["x"].tolist() == [300.0, 307.0]
    assert items.markers.opts["symbol"] == "x"
    items.update(overlays.OverlayData(), (512, 512))
    assert len(items.markers.data) == 0
