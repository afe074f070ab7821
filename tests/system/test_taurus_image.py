"""Taurus' own image widget item (taurus_pyqtgraph ``TaurusImageItem``) shows the device images.

A facility's Taurus panels use this item for 2-D attributes; it must hold exactly the pixels the
device serves (the camera frame after a Snap, and ParticleDS' grey annotation), read through
Taurus' Tango scheme as a panel does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from clients.launcher import Stack
from macros.smart_calls import proxy as device_proxy
from tests.system.conftest import device_trl
from tests.unit.particles.synthetic import render_spots

pytestmark = pytest.mark.system


def _shown_by_taurus(qapp, trl: str, timeout_s: float = 30.0) -> np.ndarray:  # noqa: ANN001 - pytest-qt's QApplication
    from taurus_pyqtgraph.taurusimageitem import TaurusImageItem

    item = TaurusImageItem()
    item.setModel(trl)
    deadline = time.monotonic() + timeout_s
    while item.image is None and time.monotonic() < deadline:
        qapp.processEvents()
        time.sleep(0.05)
    try:
        assert item.image is not None, f"TaurusImageItem got no image from {trl} within {timeout_s:.0f} s"
        return np.asarray(item.image)
    finally:
        item.setModel(None)


def test_taurus_image_item_shows_camera_and_annotated_images(stack: Stack, qapp, tmp_path: Path) -> None:  # noqa: ANN001
    camera = device_proxy(device_trl(stack, "smart/camera/1"), 10000)
    camera.Snap()
    frame = camera.Image
    shown = _shown_by_taurus(qapp, device_trl(stack, "smart/camera/1/Image"))
    assert shown.dtype == frame.dtype and np.array_equal(shown, frame)

    scene = tmp_path / "scene.tif"
    tifffile.imwrite(scene, render_spots((256, 256), np.array([[60.0, 60.0], [180.0, 120.0], [186.0, 120.0]]),
                                         sigma=2.5, peak=160, background=30, noise=2, seed=1))
    particles = device_proxy(device_trl(stack, "smart/particles/1"), 60000)
    particles.Detect(json.dumps({"path": str(scene), "Diameter": 9, "MinMass": 300.0, "IsolationRadius": 30.0}))
    annotated = particles.AnnotatedImage
    shown = _shown_by_taurus(qapp, device_trl(stack, "smart/particles/1/AnnotatedImage"))
    assert shown.shape == (256, 256) and np.array_equal(shown, annotated)
