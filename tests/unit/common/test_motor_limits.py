"""A motor's limits as CoordMapperDS reads them from the Position configuration's text
(servers/common/motor_limits.py), the one place in the product that parses limit text: the
macros take the limits from Taurus as numbers (macros.smart_support.known_range)."""

from __future__ import annotations

import math

import pytest

from servers.common.motor_limits import LimitsError, known_limits, position_limits


def test_numbers_are_the_limits() -> None:
    assert position_limits("-11.5", "11.5") == (-11.5, 11.5)
    assert position_limits(-2, 3.0) == (-2.0, 3.0)
    assert position_limits("1e3", "2e3") == (1000.0, 2000.0)
    assert known_limits("-11.5", "11.5") == (-11.5, 11.5)
    assert known_limits("0", "0") == (0.0, 0.0)


@pytest.mark.parametrize("unset", ["Not specified", "", None, "nan", "inf", "-inf", "abc"])
def test_a_side_that_is_not_a_finite_number_is_unknown(unset: object) -> None:
    assert position_limits(unset, "5") == (-math.inf, 5.0)
    assert position_limits("-5", unset) == (-5.0, math.inf)
    assert known_limits(unset, "5") is None
    assert known_limits("-5", unset) is None
    assert known_limits(unset, unset) is None


def test_min_above_max_is_refused_or_unknown() -> None:
    with pytest.raises(LimitsError, match="min_value 3 is above max_value 1"):
        position_limits("3", "1")
    assert known_limits("3", "1") is None
