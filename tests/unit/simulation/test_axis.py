"""Simulated axis: motion law in time, stop, limits, backlash, repeatability."""

from __future__ import annotations

import numpy as np
import pytest

from servers.common.errors import BadArgument, Unsafe
from simulation.axis import SimulatedAxis
from tests.helpers import FakeClock


def test_moves_at_finite_velocity_and_arrives():
    clock = FakeClock(100.0)
    axis = SimulatedAxis("x", position=1.0, velocity=0.5, clock=clock)
    duration = axis.move(2.0)
    assert duration == pytest.approx(2.0)
    assert axis.is_moving()
    clock.t += 1.0
    assert axis.position() == pytest.approx(1.5)
    assert axis.is_moving()
    clock.t += 1.5
    assert not axis.is_moving()
    assert axis.position() == pytest.approx(2.0)
    assert axis.true_position() == pytest.approx(2.0)


def test_stop_freezes_where_it_is_and_a_new_move_starts_there():
    clock = FakeClock(100.0)
    axis = SimulatedAxis("x", position=0.0, velocity=1.0, clock=clock)
    axis.move(-3.0)
    clock.t += 1.25
    axis.stop()
    assert not axis.is_moving()
    assert axis.position() == pytest.approx(-1.25)
    clock.t += 5.0
    assert axis.position() == pytest.approx(-1.25)
    axis.move(0.0)
    clock.t += 0.25
    assert axis.position() == pytest.approx(-1.0)


def test_limits_and_bad_targets_are_refused_and_nothing_moves():
    axis = SimulatedAxis("x", position=0.0, limits=(-1.0, 1.0), clock=FakeClock(100.0))
    with pytest.raises(Unsafe, match="outside the limits"):
        axis.move(1.5)
    with pytest.raises(BadArgument):
        axis.move(float("nan"))
    assert not axis.is_moving() and axis.position() == 0.0
    with pytest.raises(BadArgument):
        SimulatedAxis("x", velocity=0.0)


def test_backlash_dead_band_depends_on_the_approach_direction():
    clock = FakeClock(100.0)
    axis = SimulatedAxis("x", position=0.0, velocity=10.0, backlash=0.002, clock=clock)
    axis.move(1.0)
    clock.t += 1.0
    from_below = axis.true_position()
    axis.move(2.0)
    clock.t += 1.0
    axis.move(1.0)
    clock.t += 1.0
    from_above = axis.true_position()
    assert axis.position() == pytest.approx(1.0)
    # referenced to a positive approach: from below the load is where the motor is
    assert from_below == pytest.approx(1.0)
    assert from_above == pytest.approx(1.0 + 0.002)
    # a small reversal (up again, less than the backlash) does not move the load at all
    axis.move(1.0015)
    clock.t += 1.0
    assert axis.true_position() == pytest.approx(from_above)
    # continuing in the same direction pushes it along
    axis.move(1.003)
    clock.t += 1.0
    assert axis.true_position() == pytest.approx(1.003)


def test_repeatability_scatters_the_load_not_the_readback():
    clock = FakeClock(100.0)
    axis = SimulatedAxis("x", position=0.0, velocity=100.0, repeatability=5e-6, seed=3, clock=clock)
    landed = []
    for k in range(400):
        axis.move(1.0 if k % 2 else 0.0)
        clock.t += 1.0
        if k % 2:
            landed.append(axis.true_position() - 1.0)
            assert axis.position() == 1.0
    landed = np.array(landed)
    assert 4e-6 < landed.std() < 6e-6
    assert abs(landed.mean()) < 4 * 5e-6 / np.sqrt(len(landed))


def test_readback_noise_and_determinism():
    def run(seed):
        clock = FakeClock(100.0)
        axis = SimulatedAxis("y", velocity=1.0, readback_noise=1e-5, seed=seed, clock=clock)
        return [axis.position() for _ in range(50)]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert 0.5e-5 < np.std(run(1)) < 1.5e-5


def test_a_move_to_where_the_axis_already_is_leaves_the_load_where_it_settled():
    """Sardana's mesh moves both motors at every point: the slow axis is sent to where it is,
    once per point. Those null moves must not draw new settle errors, or the load random-walks
    (30 nm repeatability: ~100 nm after 16 points, a map's centre off by as much)."""
    clock = FakeClock()
    axis = SimulatedAxis("y", position=0.0, velocity=100.0, repeatability=30e-6, seed=2, clock=clock)
    axis.move(0.5)
    clock.t += 1.0
    settled = axis.true_position()
    for _ in range(200):
        assert axis.move(0.5) == 0.0
        clock.t += 0.01
        assert axis.true_position() == settled
