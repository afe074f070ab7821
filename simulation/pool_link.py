"""The virtual beamline as seen from inside one Sardana Pool process.

The motor controller and the XRF counter controller are separate Sardana
controllers, but a real detector counts where the real sample is. Both controllers
live in the same Pool process, so they share one :class:`SimulatedStage` per
beamline file through this module: the counter reads the *load* position of the
axes (backlash and settle errors included), which the workflow never sees, and counts
where the drifted sample meets the drifted beam, scaled by the beam intensity, at the
simulated time of the count (:mod:`simulation.clock`, :mod:`simulation.drift`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulation.axis import SimulatedAxis
from simulation.clock import SimClock
from simulation.config import VirtualBeamline, load_beamline
from simulation.drift import Timelines
from simulation.xrf import XrfDetector

AXIS_NAMES = ("x", "y", "z")
LOADED_POSITION_MAX_ERROR_MM = 0.15
"""How far from the membrane centre the user left the stage after finding the window by
eye in the camera: the workflow starts from there and must discover the rest."""


@dataclass
class SimulatedStage:
    beamline: VirtualBeamline
    axes: dict[str, SimulatedAxis]
    xrf: XrfDetector
    timelines: Timelines
    clock: SimClock

    def load_xy(self) -> tuple[float, float]:
        return self.axes["x"].true_position(), self.axes["y"].true_position()

    def count(self, integration_s: float) -> dict[str, int]:
        """XRF counts now: at the load position, less the drift offset, times the intensity."""
        return count_at(self.xrf, self.timelines, self.load_xy(), self.clock.now_s(), integration_s)


def count_at(xrf: XrfDetector, timelines: Timelines, load_xy: tuple[float, float], sim_s: float,
             integration_s: float) -> dict[str, int]:
    """The XRF counts with the stage's load at ``load_xy`` at simulated time ``sim_s``: the
    sample point in the (drifted) beam is the one an undrifted stage would put there at
    ``load_xy - stage_offset(t)``."""
    dx, dy = timelines.stage_offset_mm(sim_s)
    return xrf.counts(load_xy[0] - float(dx), load_xy[1] - float(dy), integration_s,
                      intensity=timelines.intensity(sim_s))


_lock = threading.Lock()
_stages: dict[str, SimulatedStage] = {}


def loaded_position(beamline: VirtualBeamline) -> tuple[float, float]:
    """Seeded start position of x, y: near the sample centre, as a user would leave it."""
    rng = np.random.default_rng(np.random.SeedSequence([int(beamline.seed), 0x10AD]))
    ox, oy = beamline.mounting.offset_mm
    ex, ey = rng.uniform(-LOADED_POSITION_MAX_ERROR_MM, LOADED_POSITION_MAX_ERROR_MM, 2)
    return float(ox + ex), float(oy + ey)


def stage_for(beamline_path: str) -> SimulatedStage:
    """The one stage of this beamline file in this process, built on first use."""
    key = str(Path(beamline_path).resolve())
    with _lock:
        if key not in _stages:
            beamline = load_beamline(key)
            settings = beamline.stage
            start = (*loaded_position(beamline), 0.0)
            axes = {
                name: SimulatedAxis(name=name, position=start[i], velocity=settings.velocity_mm_s,
                                    backlash=settings.backlash_mm[i] if i < 2 else 0.0,
                                    repeatability=settings.repeatability_mm,
                                    readback_noise=settings.readback_noise_mm,
                                    limits=settings.limits_mm, seed=beamline.seed)
                for i, name in enumerate(AXIS_NAMES)
            }
            _stages[key] = SimulatedStage(beamline, axes,
                                          XrfDetector(beamline.sample, beamline.mounting, beamline.xrf,
                                                      seed=beamline.seed),
                                          Timelines(beamline), SimClock.from_beamline(beamline))
        return _stages[key]
