"""The virtual beamline's storage ring: a ring current that drops to zero during beam losses.

A night at a synchrotron has beam losses (a dump, an injection, a fault). The queue loop
waits for beam (docs/queue.md, "Wait for beam") by reading a Tango attribute against a
threshold; on the virtual beamline that attribute is ``Current`` of this device. Losses come
from the ``LossPeriods`` property (scheduled, e.g. for a demo) or from the ``BeamLoss``
command (tests, or by hand), and end by themselves or with ``BeamRestore``.

With the ``Beamline`` property (the virtual beamline file the Pool and the camera share),
the current also follows the night's intensity timeline (decay, refills, beam losses of
:mod:`simulation.drift`) on the night's simulated clock, the same timeline that scales the
XRF counts; ``SimTime`` gives that clock to macros and clients.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tango import AttrQuality, DevState, EnsureOmniThread
from tango.server import Device, attribute, command, device_property, run

from simulation.ring_schedule import RingSchedule, night_of, parse_periods

POLL_S = 0.2
"""How often the device looks at the schedule to push a change event on a loss or a return."""


CHANGE_MA = 0.5
"""A change event is pushed when the beam comes or goes, or the current moved by this much."""


class SimRing(Device):
    """Simulated storage ring current (mA) with beam losses."""

    NominalCurrent = device_property(dtype=float, default_value=100.0, doc="ring current with beam (mA)")
    LossPeriods = device_property(dtype=(str,), default_value=[],
                                  doc="beam losses: 'start_s duration_s' lines, seconds after the server started")
    Beamline = device_property(dtype=str, default_value="",
                               doc="virtual beamline JSON: follow its intensity timeline and simulated clock")

    def init_device(self) -> None:
        super().init_device()
        self.set_change_event("Current", True, False)
        try:
            periods = parse_periods(list(self.LossPeriods or []))
        except ValueError as exc:
            self.set_state(DevState.FAULT)
            self.set_status(str(exc))
            periods = []
        intensity = None
        started = time.time()
        self._sim_time: Callable[[], float] = lambda: time.time() - started
        if self.Beamline:
            try:
                intensity, self._sim_time = night_of(self.Beamline)
            except Exception as exc:  # a missing or malformed file: say so, keep a plain ring
                self.set_state(DevState.FAULT)
                self.set_status(f"Beamline {self.Beamline!r}: {exc}")
        self._schedule = RingSchedule(float(self.NominalCurrent), periods, time.monotonic(), intensity)
        self._last = self._schedule.current(time.monotonic())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ring", daemon=True)
        self._thread.start()
        if self.get_state() != DevState.FAULT:
            self._set_state(self._last)

    def delete_device(self) -> None:
        self._stop.set()

    def _set_state(self, current: float) -> None:
        self.set_state(DevState.ON if current > 0 else DevState.ALARM)
        self.set_status(f"beam: {current:.1f} mA" if current > 0 else "no beam (simulated beam loss)")

    def _watch(self) -> None:
        with EnsureOmniThread():
            self._watch_loop()

    def _watch_loop(self) -> None:
        while not self._stop.wait(POLL_S):
            value = self._schedule.current(time.monotonic())
            if (value > 0) != (self._last > 0) or abs(value - self._last) >= CHANGE_MA:
                self._last = value
                self.push_change_event("Current", value, time.time(), AttrQuality.ATTR_VALID)
                self._set_state(value)

    @attribute(dtype=float, unit="mA", label="Ring current", format="%.1f", doc="0 during a beam loss")
    def Current(self) -> float:
        return self._schedule.current(time.monotonic())

    @attribute(dtype=float, unit="s", label="Simulated time", format="%.1f",
               doc="simulated seconds since the night's start (the beamline file's clock); "
                   "without a Beamline, wall seconds since the server started")
    def SimTime(self) -> float:
        return float(self._sim_time())

    @command(dtype_in=float, doc_in="seconds of beam loss from now on")
    def BeamLoss(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError("BeamLoss takes a positive number of seconds")
        self._schedule.lose(time.monotonic(), float(seconds))

    @command()
    def BeamRestore(self) -> None:
        self._schedule.restore(time.monotonic())


def main(argv: list[str] | None = None) -> int:
    run((SimRing,), args=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
