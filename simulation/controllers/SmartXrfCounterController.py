"""Sardana counter/timer controller for the virtual beamline's XRF detector.

Axis 1 is the timer (seconds), axis 2 counts Ce-L, axis 3 Pt-L: the counts a
Gaussian X-ray beam gives where the sample really is (the load position of the
simulated stage, shared in-process with SmartSimMotorController), with Poisson
noise, on the drifted sample and beam and scaled by the beam intensity at the simulated
time of the count (zero during a beam loss). So a ``mesh`` over a particle is a real map
of it. Software-triggered only.
"""

import time

from sardana import State
from sardana.pool.controller import CounterTimerController, Description, Type

from simulation.pool_link import stage_for

TIMER, CE, PT = 1, 2, 3


class SmartXrfCounterController(CounterTimerController):
    """Timer + Ce-L + Pt-L fluorescence counters of SMART on Tango."""

    gender = "Simulation"
    model = "SMART virtual beamline XRF"
    organization = "SMART on Tango"
    MaxDevice = 3
    default_timer = TIMER
    ctrl_properties = {"Beamline": {Type: str, Description: "path to the virtual beamline JSON"}}

    def __init__(self, inst, props, *args, **kwargs):
        CounterTimerController.__init__(self, inst, props, *args, **kwargs)
        self.stage = stage_for(self.Beamline)
        self.integration_s = 1.0
        self.started_at = None
        self.values = {TIMER: 0.0, CE: 0.0, PT: 0.0}

    def AddDevice(self, axis):
        if axis not in (TIMER, CE, PT):
            raise ValueError(f"axis {axis}: 1 = timer, 2 = Ce-L, 3 = Pt-L")

    def DeleteDevice(self, axis):
        pass

    def LoadOne(self, axis, value, repetitions, latency_time):
        if value <= 0:
            raise ValueError("the XRF counter counts in time only: give a positive integration time")
        self.integration_s = float(value)

    def StartAll(self):
        self.started_at = time.monotonic()
        self.values = {TIMER: 0.0, CE: 0.0, PT: 0.0}

    def StartOne(self, axis, value=None):
        pass

    def _finished(self):
        return self.started_at is None or time.monotonic() - self.started_at >= self.integration_s

    def StateOne(self, axis):
        if self._finished():
            return State.On, "counting done"
        return State.Moving, "counting"

    def ReadAll(self):
        if self.started_at is not None and self._finished():
            counts = self.stage.count(self.integration_s)
            self.values = {TIMER: self.integration_s, CE: float(counts["Ce_L"]), PT: float(counts["Pt_L"])}
            self.started_at = None

    def ReadOne(self, axis):
        return self.values[axis]

    def AbortOne(self, axis):
        self.started_at = None
