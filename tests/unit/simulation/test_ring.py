"""The simulated ring current: scheduled and commanded beam losses."""

from __future__ import annotations

import pytest

from simulation.ring_schedule import RingSchedule, parse_periods


def test_scheduled_losses() -> None:
    ring = RingSchedule(100.0, parse_periods(["10 5", "30, 2"]), started=1000.0)
    assert [ring.current(1000.0 + t) for t in (0, 9.9, 10, 14.9, 15, 31, 33)] == \
        [100.0, 100.0, 0.0, 0.0, 100.0, 0.0, 100.0]


def test_commanded_loss_and_restore() -> None:
    ring = RingSchedule(100.0, [], started=0.0)
    ring.lose(now=50.0, seconds=20.0)
    assert ring.current(55.0) == 0.0 and ring.current(70.0) == 100.0
    ring.restore(now=60.0)
    assert ring.current(61.0) == 100.0
    ring.lose(now=80.0, seconds=5.0)
    assert ring.current(81.0) == 0.0


@pytest.mark.parametrize("line", ["10", "a b", "-1 5", "3 0", "1 2 3"])
def test_bad_periods_are_refused(line: str) -> None:
    with pytest.raises(ValueError):
        parse_periods([line])
