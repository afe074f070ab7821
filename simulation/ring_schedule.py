"""The storage ring's current over time, without Tango: beam losses (scheduled or commanded) and
the night's intensity timeline. The device (:mod:`simulation.ring`, SimRing) serves it; kept
apart so it is unit-tested without a control system."""

from __future__ import annotations

import threading
from collections.abc import Callable


def parse_periods(lines: list[str]) -> list[tuple[float, float]]:
    """``["start_s duration_s", ...]`` (seconds after start) as pairs; bad lines raise ValueError."""
    periods = []
    for line in lines:
        words = str(line).replace(",", " ").split()
        if not words:
            continue
        if len(words) != 2:
            raise ValueError(f"LossPeriods line {line!r}: give 'start_s duration_s'")
        start, duration = float(words[0]), float(words[1])
        if start < 0 or duration <= 0:
            raise ValueError(f"LossPeriods line {line!r}: start >= 0 and duration > 0 s")
        periods.append((start, duration))
    return periods


class RingSchedule:
    """The ring current at a time: nominal times the night's intensity (1 without a
    timeline), or 0 inside a loss (scheduled or commanded)."""

    def __init__(self, nominal_ma: float, periods: list[tuple[float, float]], started: float,
                 intensity: Callable[[], float] | None = None) -> None:
        self.nominal_ma = nominal_ma
        self.losses = [(started + s, started + s + d) for s, d in periods]
        self.intensity = intensity
        self._lock = threading.Lock()

    def lose(self, now: float, seconds: float) -> None:
        with self._lock:
            self.losses.append((now, now + seconds))

    def restore(self, now: float) -> None:
        with self._lock:
            self.losses = [(s, min(e, now)) for s, e in self.losses if s < now]

    def current(self, now: float) -> float:
        with self._lock:
            lost = any(s <= now < e for s, e in self.losses)
        if lost:
            return 0.0
        return self.nominal_ma * (self.intensity() if self.intensity is not None else 1.0)


def night_of(beamline_path: str) -> tuple[Callable[[], float], Callable[[], float]]:
    """(intensity now, simulated seconds now) of a virtual beamline file."""
    from simulation.clock import SimClock
    from simulation.config import load_beamline
    from simulation.drift import Timelines

    beamline = load_beamline(beamline_path)
    timelines, clock = Timelines(beamline), SimClock.from_beamline(beamline)
    return (lambda: timelines.intensity(clock.now_s())), clock.now_s
