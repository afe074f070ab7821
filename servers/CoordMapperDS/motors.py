"""The x and y stage motors as CoordMapperDS sees them: Position, its limits and its unit.

Tango I/O that is not CoordMapperDS's own interface. Limits are read for every Map because
they can change at any time; a limit that is not a number ("Not specified") is no limit on
that side, and a motor that cannot be read is a :class:`MotorProblem` (the device goes to
ALARM and ``within_limits`` is false: unknown limits are never "within").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tango

from servers.common.motor_limits import LimitsError, position_limits
from servers.common.tango_client import ProxyCache, devfailed_line

__all__ = ["DEFAULT_UNIT", "MOTOR_TIMEOUT_MS", "MotorProblem", "MotorReading", "StageMotors", "stage_unit_of"]

MOTOR_TIMEOUT_MS = 2000
DEFAULT_UNIT = "mm"
_UNIT_ALIASES = {"": DEFAULT_UNIT, "no unit": DEFAULT_UNIT, "mm": "mm", "um": "um", "µm": "um", "μm": "um",
                 "micron": "um", "microns": "um", "nm": "nm"}


def stage_unit_of(unit: str) -> str | None:
    """Our unit name for a motor's Position unit (empty = mm, as the simulated stage), else None."""
    return _UNIT_ALIASES.get(unit.strip().lower())


@dataclass(frozen=True)
class MotorReading:
    """What the motors say now: ``limits`` ((xmin, xmax), (ymin, ymax)); ``position`` if asked."""

    limits: tuple[tuple[float, float], tuple[float, float]]
    unit: str
    position: tuple[float, float] | None


class MotorProblem(Exception):
    """The motors cannot be read (or their units make no sense); the message says why."""


class StageMotors:
    """Reads Position, its limits (min_value/max_value) and unit of the x and y motors."""

    def __init__(self, names: tuple[str, str]) -> None:
        self.names = names
        self._proxies = ProxyCache(MOTOR_TIMEOUT_MS)

    def read(self, with_position: bool) -> MotorReading:
        limits, units, position = [], [], []
        for name in self.names:
            try:
                proxy = self._proxies.get(name)
                config = proxy.get_attribute_config("Position")
                if with_position:
                    position.append(float(proxy.read_attribute("Position").value))
            except tango.DevFailed as exc:
                self._proxies.forget(name)
                raise MotorProblem(f"motor '{name}' cannot be read ({devfailed_line(exc)})") from None
            except (TypeError, ValueError) as exc:
                raise MotorProblem(f"motor '{name}' has no numeric Position ({exc})") from None
            try:
                low, high = position_limits(config.min_value, config.max_value)
            except LimitsError as exc:
                raise MotorProblem(f"motor '{name}' has {exc}") from None
            limits.append((low, high))
            unit = stage_unit_of(config.unit or "")
            if unit is None:
                raise MotorProblem(f"motor '{name}' Position is in '{config.unit}', not a length unit "
                                   "(mm, um, nm)")
            units.append(unit)
        if units[0] != units[1]:
            raise MotorProblem(f"motors {self.names[0]} and {self.names[1]} use different units "
                               f"({units[0]}, {units[1]}); give both Position attributes the same unit")
        if with_position and not all(math.isfinite(p) for p in position):
            raise MotorProblem(f"the motor positions {position} are not finite")
        return MotorReading((limits[0], limits[1]), units[0],
                            (position[0], position[1]) if with_position else None)
