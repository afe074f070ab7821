"""The running beamline: camera and XRF see the true (load) stage position."""

from __future__ import annotations

import numpy as np

from simulation.config import CameraOptics
from simulation.geometry import apply
from simulation.mounting import sample_to_stage
from simulation.runtime import SimulatedBeamline
from tests.helpers import FakeClock


def test_counts_follow_the_load_including_backlash(beamline):
    from dataclasses import replace

    small = replace(beamline, camera=CameraOptics(width=128, height=128))
    clock = FakeClock()
    sim = SimulatedBeamline(small, clock=clock)
    i = int(np.argmin(np.hypot(small.sample.x - small.sample.centre[0], small.sample.y - small.sample.centre[1])))
    target = apply(sample_to_stage(small.sample, small.mounting), (small.sample.x[i], small.sample.y[i]))
    for axis, value in zip(("x", "y"), target, strict=True):
        sim.axes[axis].move(float(value))
    clock.t += 100.0
    assert not sim.x.is_moving() and not sim.y.is_moving()
    assert np.allclose(sim.true_stage(), target, atol=small.stage.backlash_mm[0])
    index, frame = sim.snap()
    assert index == 0 and frame.shape == (128, 128)
    assert sim.snap()[0] == 1
    counts = sim.count(0.1)
    assert set(counts) == {"Ce_L", "Pt_L"}
