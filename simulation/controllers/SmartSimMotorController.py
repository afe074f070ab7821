"""Sardana motor controller for the virtual beamline's stage (axes 1, 2, 3 = x, y, z, mm).

Motion follows :class:`simulation.axis.SimulatedAxis`: finite velocity, backlash and
settle errors when the beamline file asks for them, limits enforced. Property
``Beamline``: path to the beamline JSON (``python -m simulation beamline``).
"""

from sardana import State
from sardana.pool.controller import Description, MotorController, Type

from simulation.pool_link import AXIS_NAMES, stage_for


class SmartSimMotorController(MotorController):
    """The simulated sample stage of SMART on Tango."""

    gender = "Simulation"
    model = "SMART virtual beamline stage"
    organization = "SMART on Tango"
    MaxDevice = 3
    ctrl_properties = {"Beamline": {Type: str, Description: "path to the virtual beamline JSON"}}

    def __init__(self, inst, props, *args, **kwargs):
        MotorController.__init__(self, inst, props, *args, **kwargs)
        self.stage = stage_for(self.Beamline)
        self.steps_per_unit = {}

    def _axis(self, axis):
        return self.stage.axes[AXIS_NAMES[axis - 1]]

    def AddDevice(self, axis):
        if not 1 <= axis <= len(AXIS_NAMES):
            raise ValueError(f"axis {axis}: this stage has axes 1..{len(AXIS_NAMES)} (x, y, z)")

    def DeleteDevice(self, axis):
        pass

    def StateOne(self, axis):
        sim = self._axis(axis)
        if sim.is_moving():
            return State.Moving, f"{sim.name} moving", 0
        position = sim.motor_position()
        low, high = sim.limits
        switches = (2 if position >= high else 0) | (4 if position <= low else 0)
        return State.On, f"{sim.name} stopped", switches

    def ReadOne(self, axis):
        return self._axis(axis).position()

    def StartOne(self, axis, position):
        self._axis(axis).move(float(position))

    def AbortOne(self, axis):
        self._axis(axis).stop()

    def StopOne(self, axis):
        self._axis(axis).stop()

    def SetAxisPar(self, axis, name, value):
        name = name.lower()
        if name == "velocity":
            self._axis(axis).velocity = float(value)
        elif name == "step_per_unit":
            # positions arrive in mm whatever it is; Sardana uses it to scale Backlash (steps)
            self.steps_per_unit[axis] = float(value)

    def GetAxisPar(self, axis, name):
        name = name.lower()
        if name == "velocity":
            return self._axis(axis).velocity
        if name in ("acceleration", "deceleration"):
            return 0.001
        if name == "base_rate":
            return 0.0
        if name == "step_per_unit":
            return self.steps_per_unit.get(axis, 1.0)
        return None
