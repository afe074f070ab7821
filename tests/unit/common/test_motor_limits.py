"""A motor's limits as CoordMapperDS reads them (servers/common/motor_limits.py), and the macros'
own reading (macros.smart_support.limits_of, on the other side of the Tango boundary) held to the
same table of cases."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from macros.smart_support import limits_of
from servers.common.motor_limits import LimitsError, known_limits, position_limits


def test_numbers_are_the_limits() -> None:
    assert position_limits("-11.5", "11.5") == (-11.5, 11.5)
    assert position_limits(-2, 3.0) == (-2.0, 3.0)
    assert known_limits("-11.5", "11.5") == (-11.5, 11.5)


@pytest.mark.parametrize("unset", ["Not specified", "", None, "nan", "inf", "-inf", "abc"])
def test_a_side_that_is_not_a_finite_number_is_unknown(unset: object) -> None:
    assert position_limits(unset, "5") == (-math.inf, 5.0)
    assert position_limits("-5", unset) == (-5.0, math.inf)
    assert known_limits(unset, "5") is None
    assert known_limits("-5", unset) is None


def test_min_above_max_is_refused_or_unknown() -> None:
    with pytest.raises(LimitsError, match="min_value 3 is above max_value 1"):
        position_limits("3", "1")
    assert known_limits("3", "1") is None


CASES = [("-11.5", "11.5"), (-2, 3.0), ("0", "0"), ("3", "1"), ("Not specified", "5"), ("-5", "Not specified"),
         ("", ""), (None, "1"), ("nan", "1"), ("-inf", "inf"), ("abc", "2"), ("1e3", "2e3"), ("Not specified",) * 2]


@pytest.mark.parametrize("low, high", CASES)
def test_the_macros_read_limits_by_the_same_rule_as_coordmapperds(low: object, high: object) -> None:
    assert limits_of(SimpleNamespace(min_value=low, max_value=high)) == known_limits(low, high)
