"""The running virtual beamline: two axes, the camera and the XRF counter on one clock.

An in-process stand-in for what the Pool and the CameraDS "sim" source do across
processes: :meth:`snap` renders the camera and :meth:`count` counts X-rays at the *true*
(load) stage position, so backlash and repeatability errors show up in images and counts
exactly as on a real stage, and both see the night's drift and beam intensity at the
simulated time ``sim_time()`` (default: the beamline's :class:`simulation.clock.SimClock`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from simulation.axis import SimulatedAxis
from simulation.camera import CameraRenderer
from simulation.clock import SimClock
from simulation.config import VirtualBeamline
from simulation.drift import Timelines
from simulation.pool_link import count_at
from simulation.xrf import XrfDetector


class SimulatedBeamline:
    def __init__(self, beamline: VirtualBeamline, start_mm: tuple[float, float] = (0.0, 0.0),
                 clock: Callable[[], float] = time.monotonic, sim_time: Callable[[], float] | None = None) -> None:
        self.beamline = beamline
        self.sim_time = sim_time or SimClock.from_beamline(beamline).now_s
        self.timelines = Timelines(beamline)
        st = beamline.stage
        self.axes = {
            name: SimulatedAxis(name, start_mm[i], st.velocity_mm_s, st.backlash_mm[i], st.repeatability_mm,
                                st.readback_noise_mm, st.limits_mm, beamline.seed, clock)
            for i, name in enumerate(("x", "y"))
        }
        self.camera = CameraRenderer(beamline.sample, beamline.mounting, beamline.camera, beamline.seed,
                                     path=beamline.optical_path,
                                     drift=lambda: self.timelines.camera_shift_mm(self.sim_time()))
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
        """XRF counts at the current true stage position and simulated time."""
        return count_at(self.xrf, self.timelines, self.true_stage(), self.sim_time(), integration_time_s)
