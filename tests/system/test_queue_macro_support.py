"""The queue macros' helpers without a MacroServer: the beam condition, the queue as text.

System tier because macros/smart_queue_support.py reads the beam condition through Tango (it
imports tango), not because a device runs."""

from __future__ import annotations

import pytest
import tango

from macros.smart_queue_support import (
    BeamCondition,
    BeamWatch,
    FinishRetry,
    queue_visit_row,
    read_clock,
    scan_files,
    scan_spec,
    targets_text,
)
from macros.smart_support import VISIT_COLUMNS


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


def test_read_clock() -> None:
    assert read_clock(None) is None and read_clock("") is None
    assert read_clock("smart/ring/1/SimTime", reader=lambda name: 3600.5) == 3600.5
    assert read_clock("a/b/c/d", reader=lambda name: float("nan")) is None

    def broken(name: str) -> float:
        raise tango.DevFailed()

    assert read_clock("a/b/c/d", reader=broken) is None


def test_queue_visit_row_of_a_done_and_of_a_retried_target() -> None:
    target = {"id": 7, "particle": 12, "x": 100.5, "y": 200.25, "region": "tile2", "frame": "tile2",
              "state": "done", "reason": "", "failure_kind": None, "finished_at": "2026-11-30T10:00:00Z"}
    data = {"stage_target": [0.1, 0.2], "coarse_target": [0.1001, 0.2002], "ce_centre": [0.10002, 0.20001],
            "outcome": "scanned", "times": {"scan_s": 5.5, "beam_wait_s": 0.0}, "scan_file": "/d/scans.h5",
            "scan_entry": "entry4", "started_at": 1.7e9, "started_sim_s": 1234.0}
    row = queue_visit_row(target, data, 0.4)
    assert set(row) <= set(VISIT_COLUMNS)
    assert (row["index"], row["region"], row["frame"], row["target_id"]) == (12, "tile2", "tile2", 7)
    assert (row["target_x"], row["coarse_y"], row["ce_center_x"]) == (0.1, 0.2002, 0.10002)
    assert (row["outcome"], row["scan_s"], row["overhead_s"], row["started_sim_s"]) == ("scanned", 5.5, 0.4, 1234.0)
    assert row["started_at"] == "1700000000.000"  # to the millisecond, not rounded by the log's 9 digits
    retried = queue_visit_row({**target, "state": "pending", "failure_kind": "beam_lost", "reason": "beam lost"},
                              {"stage_target": [0.1, 0.2], "times": {"scan_s": 5.0}}, 0.3)
    assert retried["outcome"] == "beam_lost" and retried["message"] == "to be tried again: beam lost"
    assert retried["ce_center_x"] == "" and retried["started_sim_s"] == ""
    skipped = queue_visit_row({**target, "state": "skipped", "particle": None}, None, None)
    assert (skipped["outcome"], skipped["index"], skipped["target_x"]) == ("skipped", "", "")


def test_beam_watch_sees_a_loss_that_ends_before_the_scan_does() -> None:
    import time

    readings = iter([50.0, 0.0] + [50.0] * 1000)
    beam = BeamCondition("smart/ring/1/Current", 10.0, reader=lambda name: next(readings))
    with BeamWatch(beam, period_s=0.01) as watch:
        time.sleep(0.3)
    assert "below 10" in watch.lost
    assert beam.check()[0]                     # the beam is back: the check after the scan alone would pass
    steady = BeamCondition("smart/ring/1/Current", 10.0, reader=lambda name: 50.0)
    with BeamWatch(steady, period_s=0.01) as watch:
        time.sleep(0.1)
    assert watch.lost == ""
    last = iter([50.0, 0.0, 50.0])               # the loss falls after the thread's last reading
    at_end = BeamCondition("smart/ring/1/Current", 10.0, reader=lambda name: next(last))
    with BeamWatch(at_end, period_s=10.0) as watch:
        at_end.check()                           # the beam seen before the scan
    assert watch.lost.startswith("as the scan ended:") and at_end.check()[0]
    with BeamWatch(None) as watch:             # no beam condition: nothing to watch
        pass
    assert watch.lost == ""
