"""The queue macros' helpers without a MacroServer: the beam condition, the queue as text.

System tier because macros/smart_queue_support.py reads the beam condition through Tango (it
imports tango), not because a device runs."""

from __future__ import annotations

import pytest
import tango

from macros.smart_queue_support import BeamCondition, FinishRetry, scan_files, scan_spec, targets_text


def reader_of(value):
    def read(name: str):
        if isinstance(value, Exception):
            raise value
        return value
    return read


@pytest.mark.parametrize("value, ok, words", [
    (100.0, True, "= 100"),
    (10.0, True, "= 10"),           # at the threshold: beam
    (9.99, False, "below 10"),
    (0.0, False, "below 10"),
    (float("nan"), False, "is nan"),
    ("not a number", False, "cannot be read"),
    (None, False, "cannot be read"),
])
def test_beam_condition(value, ok: bool, words: str) -> None:
    condition = BeamCondition("sr/ring/1/Current", 10.0, reader=reader_of(value))
    available, why = condition.check()
    assert available is ok and words in why and "sr/ring/1/Current" in why


def test_an_unreadable_attribute_is_no_beam() -> None:
    error = tango.DevFailed(tango.DevError())
    condition = BeamCondition("sr/ring/1/Current", 10.0, reader=reader_of(error))
    assert condition.check()[0] is False


def test_beam_condition_from_the_environment() -> None:
    assert BeamCondition.from_env(None) is None
    condition = BeamCondition.from_env({"attribute": "smart/ring/1/Current", "min": 10, "poll_s": 0.5})
    assert (condition.attribute, condition.minimum, condition.poll_s) == ("smart/ring/1/Current", 10.0, 0.5)
    with pytest.raises(ValueError, match="SmartBeamCondition"):
        BeamCondition.from_env({"attribute": "x"})


def test_scan_spec_and_files() -> None:
    assert scan_spec(0.3, 0.05, 0.01) == {"macro": "mesh", "half_width_um": 0.3, "step_um": 0.05, "exposure": 0.01}
    assert scan_files("/data", ["a.h5", "b.dat"]) == ["/data/a.h5", "/data/b.dat"]
    assert scan_files("/data", "a.dat") == ["/data/a.dat"]
    assert scan_files(None, "a.dat") == []


def test_targets_text() -> None:
    assert targets_text([]) == ["the queue is empty"]
    lines = targets_text([{"id": 3, "state": "running", "skip_requested": True, "particle": 7, "frame": "sem",
                           "x": 1.0, "y": 2.0, "attempts": 1, "reason": "dirty",
                           "scan": {"macro": "mesh", "half_width_um": 0.3, "step_um": 0.05, "exposure": 0.01}}])
    assert "running*" in lines[1] and "particle 7" in lines[1] and "dirty" in lines[1]


def test_finish_retry_gives_up_after_its_limit() -> None:
    assert FinishRetry(limit_s=10.0).again()
    assert not FinishRetry(limit_s=0.0).again()
