"""A motor's limits from its Position attribute configuration (``min_value``, ``max_value``).

Tango gives them as text, "Not specified" when unset. CoordMapperDS reads them here to say for
each mapped point whether the stage can go there (``within_limits``). The rule: a limit that is
not a finite number is unknown, and unknown limits are never "within" -- nothing drives to a
place whose safety cannot be checked. The macros apply the same rule without parsing any text:
they take the limits from Taurus as numbers, an unset one as -inf / +inf
(``macros.smart_support.known_range``).
"""

from __future__ import annotations

import math

__all__ = ["LimitsError", "known_limits", "position_limits"]


class LimitsError(ValueError):
    """The configuration contradicts itself (``min_value`` above ``max_value``)."""


def _side(value: object, unknown: float) -> float:
    try:
        number = float(str(value))
    except (TypeError, ValueError):  # "Not specified", "", None
        return unknown
    return number if math.isfinite(number) else unknown


def position_limits(min_value: object, max_value: object) -> tuple[float, float]:
    """``(low, high)``; an unknown side is ``-inf`` / ``+inf`` (callers treat an infinite bound
    as unknown, never as "anywhere is fine"). Raises :class:`LimitsError` when low > high."""
    low, high = _side(min_value, -math.inf), _side(max_value, math.inf)
    if low > high:
        raise LimitsError(f"min_value {low:g} is above max_value {high:g}")
    return low, high


def known_limits(min_value: object, max_value: object) -> tuple[float, float] | None:
    """``(low, high)`` when both are finite numbers in order, else None (unknown: refuse to move)."""
    try:
        low, high = position_limits(min_value, max_value)
    except LimitsError:
        return None
    return (low, high) if math.isfinite(low) and math.isfinite(high) else None
