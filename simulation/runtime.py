"""The running virtual beamline: two axes, the camera and the XRF counter on one clock.

This is the object a Sardana controller or the CameraDS "sim" source holds: the motor
controller moves ``x``/``y``, the counter controller calls :meth:`count`, the camera
source calls :meth:`snap`. All of them read the *true* (load) stage position, so backlash
and repeatability errors show up in images and counts exactly as on a real stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from simulation.axis import SimulatedAxis
from simulation.camera import CameraRenderer
from simulation.config import VirtualBeamline
from simulation.xrf import XrfDetector


class SimulatedBeamline:
    def __init__(self, beamline: VirtualBeamline, start_mm: tuple[float, float] = (0.0, 0.0),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.beamline = beamline
        st = beamline.stage
        self.axes = {
            name: SimulatedAxis(name, start_mm[i], st.velocity_mm_s, st.backlash_mm[i], st.repeatability_mm,
                                st.readback_noise_mm, st.limits_mm, beamline.seed, clock)
            for i, name in enumerate(("x", "y"))
        }
        self.camera = CameraRenderer(beamline.sample, beamline.mounting, beamline.camera, beamline.seed)
        self.xrf = XrfDetector(beamline.sample, beamline.mounting, beamline.xrf, beamline.seed)
        self._frame_index = 0

    @property
    def x(self) -> SimulatedAxis:
        return self.axes["x"]

    @property
    def y(self) -> SimulatedAxis:
        return self.axes["y"]

    def true_stage(self, now: float | None = None) -> tuple[float, float]:
        return (self.x.true_position(now), self.y.true_position(now))

    def snap(self, zoom: str | None = None, exposure_ms: float | None = None) -> tuple[int, np.ndarray]:
        """Next camera frame at the current true stage position: (frame index, image)."""
        index = self._frame_index
        self._frame_index += 1
        return index, self.camera.render(self.true_stage(), index, zoom, exposure_ms)

    def count(self, integration_time_s: float) -> dict[str, int]:
        """XRF counts at the current true stage position."""
        x, y = self.true_stage()
        return self.xrf.counts(x, y, integration_time_s)
