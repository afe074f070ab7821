"""The simulated clock of the virtual beamline: one night's time, the same in every process.

The drift of the sample and of the beam and the ring current are functions of *simulated*
time, so that an 8-hour night of drift can run in well under an hour of wall time. The
Pool (motors + XRF counter), the CameraDS sim source and SimRing run in different
processes; they agree on the time because it is a pure function of the wall clock and two
numbers of the beamline file (``clock.epoch_unix`` and ``clock.acceleration``), not a
counter any one of them keeps. Scans keep their real timing: only the timelines of
:mod:`simulation.drift` run on this clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from simulation.config import ClockSettings, VirtualBeamline


@dataclass(frozen=True)
class SimClock:
    """``now_s()``: simulated seconds since the night's start (0 before it, and always 0
    when the beamline file gives no ``epoch_unix``)."""

    acceleration: float = 1.0
    epoch_unix: float | None = None
    wall: Callable[[], float] = time.time

    @classmethod
    def from_settings(cls, settings: ClockSettings, wall: Callable[[], float] = time.time) -> SimClock:
        return cls(settings.acceleration, settings.epoch_unix, wall)

    @classmethod
    def from_beamline(cls, beamline: VirtualBeamline, wall: Callable[[], float] = time.time) -> SimClock:
        return cls.from_settings(beamline.clock, wall)

    def at(self, unix_s: float) -> float:
        """Simulated seconds at the wall-clock (Unix) time ``unix_s``."""
        if self.epoch_unix is None:
            return 0.0
        return max(0.0, (float(unix_s) - self.epoch_unix) * self.acceleration)

    def now_s(self) -> float:
        return self.at(self.wall())

    def unix_at(self, sim_s: float) -> float | None:
        """The wall-clock time at which the simulated clock shows ``sim_s`` (None: no epoch)."""
        if self.epoch_unix is None:
            return None
        return self.epoch_unix + float(sim_s) / self.acceleration
