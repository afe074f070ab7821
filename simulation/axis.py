"""A simulated motor axis for the Sardana motor controller to wrap.

It answers the questions a controller asks (is it moving, where is it) as pure functions
of time, so no thread is needed to "run" a move: a move started at t0 from p0 towards
target at velocity v is at ``p0 + v (t - t0)`` until it arrives. Two positions are kept
apart on purpose:

- the *motor* position: what the encoder reports (plus optional read-back jitter);
- the *load* position: where the sample really is. It lags the motor inside a dead band
  of width ``backlash`` referenced to a positive approach (moving +, the load sits at the
  motor; moving -, it trails at ``motor + b``), and lands with a random repeatability
  error after each move. With Sardana's backlash correction (a positive ``Backlash`` on
  the motor: every final approach in +) the load is where the motor says.

The renderers and the XRF counter use the load position; the workflow only sees the
motor. That is why re-registration and anti-backlash approaches can be tested honestly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from servers.common.errors import BadArgument, Unsafe

AXIS_STREAM = 0xA5


class SimulatedAxis:
    """One linear axis in mm (constant velocity, no acceleration ramp)."""

    def __init__(self, name: str = "axis", position: float = 0.0, velocity: float = 0.5, backlash: float = 0.0,
                 repeatability: float = 0.0, readback_noise: float = 0.0,
                 limits: tuple[float, float] = (-math.inf, math.inf), seed: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not velocity > 0:
            raise BadArgument(f"{name}: velocity must be positive, got {velocity}")
        if backlash < 0 or repeatability < 0 or readback_noise < 0:
            raise BadArgument(f"{name}: backlash, repeatability and readback noise must not be negative")
        self.name = name
        self.velocity = float(velocity)
        self.backlash = float(backlash)
        self.repeatability = float(repeatability)
        self.readback_noise = float(readback_noise)
        self.limits = (float(limits[0]), float(limits[1]))
        self._clock = clock
        self._rng = np.random.default_rng(np.random.SeedSequence([int(seed), AXIS_STREAM, sum(map(ord, name))]))
        now = clock()
        self._start = float(position)
        self._target = float(position)
        self._t0 = now
        self._load_start = float(position)
        self._settle_error = 0.0

    # ------------------------------------------------------------------ motion law
    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else float(now)

    def _duration(self) -> float:
        return abs(self._target - self._start) / self.velocity

    def motor_position(self, now: float | None = None) -> float:
        """Where the motor (encoder) is, noise-free."""
        t = self._now(now) - self._t0
        travel = min(max(t, 0.0) * self.velocity, abs(self._target - self._start))
        return self._start + math.copysign(travel, self._target - self._start)

    def is_moving(self, now: float | None = None) -> bool:
        return self._now(now) - self._t0 < self._duration()

    def position(self, now: float | None = None) -> float:
        """The read-back a controller reports: motor position plus optional jitter."""
        jitter = self.readback_noise * float(self._rng.standard_normal()) if self.readback_noise else 0.0
        return self.motor_position(now) + jitter

    def true_position(self, now: float | None = None) -> float:
        """Where the load (the sample) really is: backlash dead band, plus the settle error
        once the move has finished."""
        t = self._now(now)
        motor = self.motor_position(t)
        # The dead band is referenced to a positive approach (the encoder reads the load
        # exactly after a move in +), which is how the stage is used with Sardana's backlash
        # correction; a move in - leaves the load up to one backlash above the motor.
        if self._target > self._start:
            load = max(self._load_start, motor)
        elif self._target < self._start:
            load = min(self._load_start, motor + self.backlash)
        else:
            load = self._load_start
        return load + (self._settle_error if not self.is_moving(t) else 0.0)

    # ------------------------------------------------------------------ commands
    def move(self, target: float, now: float | None = None) -> float:
        """Start a move to ``target`` (mm) from wherever the axis is now; returns the
        expected duration in seconds. Refuses targets outside the limits."""
        if not math.isfinite(target):
            raise BadArgument(f"{self.name}: target {target} is not a finite position in mm")
        low, high = self.limits
        if not low <= target <= high:
            raise Unsafe(f"{self.name}: target {target} mm is outside the limits [{low}, {high}] mm; "
                         "choose a position inside the travel range")
        t = self._now(now)
        if float(target) == self._target and not self.is_moving(t):
            # already there: no motion, so the load stays where it settled. Sardana's mesh
            # "moves" both motors at every point; a fresh settle error on each of those null
            # moves would add up to a random walk of the other axis along every mesh row
            return 0.0
        self._freeze(t)
        self._target = float(target)
        self._settle_error = self.repeatability * float(self._rng.standard_normal()) if self.repeatability else 0.0
        return self._duration()

    def stop(self, now: float | None = None) -> None:
        """Stop where the motor is now (an abort: the move ends immediately)."""
        self._freeze(self._now(now))

    def _freeze(self, t: float) -> None:
        self._load_start = self.true_position(t)
        self._start = self._target = self.motor_position(t)
        self._settle_error = 0.0
        self._t0 = t
