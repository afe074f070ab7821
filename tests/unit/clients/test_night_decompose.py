"""A visit's hit error split into the fine alignment's error at its own time and the drift
estimate's error since, against a truth made by hand (clients/night_decompose.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clients.night_decompose import alignment_times, decompose, decomposition_lines
from clients.night_score import score_night
from tests.unit.clients.test_night_score import visit, write_truth, write_visits


def test_the_hit_error_splits_into_alignment_and_drift_estimate(tmp_path: Path) -> None:
    truth = write_truth(tmp_path)        # drift: +100 nm in x per simulated hour; clock epoch 1000 s, 10x
    hour = 3600.0
    # particle 0 (region A, 1000 px) is at stage (1.010, 2.010) + drift. Its frame was aligned at
    # 1 h (wall 1000 + 360 s): the mapping put it 30 nm off in y of where it was then. The scan at
    # 2 h applied 40 nm of drift in x where 100 nm happened: 60 nm short.
    row = visit(1, "A", (1000, 1000), (1.0101 + 0.00004, 2.01003), 2 * hour)
    row.update(mapped_x=1.0101, mapped_y=2.01003)
    events = [{"kind": "align", "step": "smart_fine_align", "frame": "A", "started": 1350.0, "duration_s": 20.0},
              {"kind": "align", "step": "smart_fine_align", "started": 1350.0, "duration_s": 20.0},  # no frame
              {"kind": "scan", "started": 1500.0, "duration_s": 5.0}]
    times = alignment_times(events, truth)
    assert times == {"A": pytest.approx(hour)}
    # the time the drift estimate anchored the frame at wins over the align event's middle
    anchored = alignment_times([*events, {"kind": "drift_reset", "why": "smart_fine_align", "frame": "A",
                                          "clock_s": 3500.0}], truth)
    assert anchored == {"A": 3500.0}
    summary = score_night(write_visits(tmp_path / "visits.csv", [row]), truth)
    (tmp_path / "truth_cam.json").write_text(json.dumps({
        "camera": {"beam_px": [100, 100], "beam_px_calibrated": [103, 104],
                   "A_mm_per_px": {"mid": [[0.0001, 0, 0], [0, 0.0001, 0]]}}, "units": {"stage": "mm"}}))
    result = decompose(summary, tmp_path / "visits.csv", truth, times, tmp_path / "truth_cam.json")
    scored = summary["scored"][0]
    assert scored["fine_error_at_align_nm"] == pytest.approx(30.0, abs=1e-6)
    assert scored["true_drift_since_align_nm"] == pytest.approx(100.0, abs=1e-6)
    assert scored["drift_applied_nm"] == pytest.approx(40.0, abs=1e-6)
    assert scored["drift_estimate_error_nm"] == pytest.approx(60.0, abs=1e-6)
    assert scored["hit_error_nm"] == pytest.approx((30.0**2 + 60.0**2) ** 0.5, abs=1e-6)
    assert result["dominant"] == "drift_estimate_error_nm"
    assert result["beam_calibration_error_nm"] == {"mid": pytest.approx(500.0)}
    assert any(line.startswith("dominant part: drift_estimate_error_nm") for line in decomposition_lines(summary))


def test_a_frame_without_its_alignment_time_leaves_those_parts_unknown(tmp_path: Path) -> None:
    truth = write_truth(tmp_path)
    row = visit(1, "A", (1000, 1000), (1.0101, 2.010), 3600.0)
    row.update(mapped_x=1.0101, mapped_y=2.010)
    summary = score_night(write_visits(tmp_path / "visits.csv", [row]), truth)
    result = decompose(summary, tmp_path / "visits.csv", truth, {})
    assert result["dominant"] is None
    assert summary["scored"][0]["mapped_error_nm"] == pytest.approx(0.0, abs=1e-6)
