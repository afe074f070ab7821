"""The night's scorer against a truth made by hand: which particle a visit was for, where it truly
was when the scan started (drift included), the hit rate, exposure, beam losses and "done exactly
once" (clients/night_score.py)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from clients.night_score import LossPeriods, Truth, mesh_points, overlaps, score_night, summary_lines
from macros.smart_support import VISIT_COLUMNS

SCAN = {"macro": "mesh", "half_width_um": 0.3, "step_um": 0.05, "exposure": 0.01}


def write_truth(tmp_path: Path, drift: bool = True) -> Truth:
    """Two regions of one sample: region A 10 nm/px from the sample origin, region B 20 nm/px
    from (50, 0) um; the stage is the sample in mm shifted by (1, 2) mm; the drift grows 100 nm in
    x per simulated hour."""
    truth = {"sample_to_stage": [[0.001, 0, 1.0], [0, 0.001, 2.0], [0, 0, 1]],
             "regions": {"A": {"pixel_to_sample": [[0.01, 0, 0], [0, 0.01, 0], [0, 0, 1]]},
                         "B": {"pixel_to_sample": [[0.02, 0, 50.0], [0, 0.02, 0], [0, 0, 1]]}},
             "units": {"stage": "mm"}}
    if drift:
        truth["drift"] = {"t_s": [0.0, 3600.0, 7200.0], "stage_offset": [[0, 0], [0.0001, 0], [0.0002, 0]]}
        truth["clock"] = {"epoch_unix": 1000.0, "acceleration": 10.0, "duration_h": 2.0}
        truth["beam_off"] = [[20000.0, 20500.0]]   # simulated s: wall 3000-3050
    particles = [{"x": 10.0, "y": 10.0}, {"x": 20.0, "y": 10.0}, {"x": 60.0, "y": 10.0}, {"x": 70.0, "y": 20.0}]
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    (tmp_path / "sample.json").write_text(json.dumps({"particles": particles}))
    return Truth.load(tmp_path / "truth.json", tmp_path / "sample.json")


def visit(target_id: int, region: str, px: tuple[float, float], target_mm: tuple[float, float], t_s: float,
          outcome: str = "scanned", started_at: float = 1000.0) -> dict:
    return {"index": target_id, "sem_x_px": px[0], "sem_y_px": px[1], "coarse_x": target_mm[0] + 0.0002,
            "coarse_y": target_mm[1], "target_x": target_mm[0], "target_y": target_mm[1],
            "ce_center_x": target_mm[0], "ce_center_y": target_mm[1], "outcome": outcome, "scan_s": 5.0,
            "overhead_s": 0.5, "region": region, "frame": region, "target_id": target_id,
            "started_at": started_at, "started_sim_s": t_s}


def write_visits(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, VISIT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_truth_interpolates_the_drift_and_maps_regions(tmp_path: Path) -> None:
    truth = write_truth(tmp_path)
    assert truth.drifts
    assert np.allclose(truth.stage_offset(1800.0), [0.00005, 0.0])
    assert np.allclose(truth.stage_offset(99999.0), [0.0002, 0.0])               # held at the end
    assert np.isnan(truth.stage_offset(math.nan)).all()                         # drifting, time unknown
    assert np.allclose(truth.to_sample("B", (500, 500)), [60.0, 10.0])
    assert np.allclose(truth.to_stage(np.array([60.0, 10.0])), [1.06, 2.01])
    with pytest.raises(KeyError, match="no region 'C'"):
        truth.to_sample("C", (0, 0))
    still = write_truth(tmp_path, drift=False)
    assert not still.drifts and np.allclose(still.stage_offset(math.nan), 0.0)


def test_a_night_is_scored_against_where_each_particle_truly_was(tmp_path: Path) -> None:
    truth = write_truth(tmp_path)
    hour = 3600.0
    rows = [
        # particle 0 at stage (1.010, 2.010) + drift 100 nm at 1 h: aimed at the drifted place -> 0 nm
        visit(1, "A", (1000, 1000), (1.0101, 2.010), hour),
        # particle 1, aimed where it was at the start of the night: 200 nm off at 2 h
        visit(2, "A", (2000, 1000), (1.020, 2.010), 2 * hour),
        # particle 2 in region B, 30 nm off in y, at 0 h
        visit(3, "B", (500, 500), (1.060, 2.01003), 0.0),
        # a beam loss took the first try of target 4; the second is the one scored
        visit(4, "B", (1000, 1000), (1.070, 2.020), 0.0, outcome="beam_lost", started_at=2000.0),
        visit(4, "B", (1000, 1000), (1.070, 2.020), 0.0, started_at=2100.0),
    ]
    targets = [{"id": i, "state": "done", "attempts": 2 if i == 4 else 1, "scan": SCAN} for i in (1, 2, 3, 4)]
    summary = score_night(write_visits(tmp_path / "visits.csv", rows), truth, targets,
                          beam_losses=[(1990.0, 2050.0)], queue_wall_s=100.0)
    errors = {s["target_id"]: s["hit_error_nm"] for s in summary["scored"]}
    assert errors["1"] == pytest.approx(0.0, abs=1e-6)
    assert errors["2"] == pytest.approx(200.0, abs=1e-6)
    assert errors["3"] == pytest.approx(30.0, abs=1e-6)
    assert summary["visits"] == 4 and summary["done"] == 4
    assert summary["within_100nm"] == pytest.approx(0.75)
    assert summary["regions"]["B"]["within_100nm"] == 1.0
    assert summary["coarse_error_nm_median"] > summary["hit_error_nm_median"]
    # exposure: 4 scans with beam, 13 x 13 points of 10 ms each, in 100 s of queue
    assert mesh_points(SCAN) == 169
    assert summary["exposing_s"] == pytest.approx(4 * 1.69)
    assert summary["exposing_fraction"] == pytest.approx(4 * 1.69 / 100.0)
    assert summary["particles_per_hour"] == pytest.approx(4 / (100 / 3600))
    assert summary["scans_during_beam_loss"] == []                  # the lost one was not kept
    assert summary["beam_losses"] == [[1990.0, 2050.0], [3000.0, 3050.0]]  # seen, and the truth's
    assert summary["scans_retried_after_beam_loss"] == 1
    assert summary["exactly_once"]["ok"], summary["exactly_once"]
    assert any("75.0% within 100 nm" in line for line in summary_lines(summary))
    # a region whose registration into the overview was refused is said, with no visits
    refused = summary_lines({**summary, "regions_refused": {"tile2": "SMART_Unsafe: ..."}})
    assert any("region tile2: not registered into the overview" in line for line in refused)


def test_lost_twice_and_during_a_loss_are_found(tmp_path: Path) -> None:
    truth = write_truth(tmp_path, drift=False)
    rows = [visit(1, "A", (1000, 1000), (1.010, 2.010), math.nan, started_at=2000.0),
            visit(2, "A", (1001, 1000), (1.010, 2.010), math.nan),             # the same particle again
            visit(2, "A", (1001, 1000), (1.010, 2.010), math.nan)]             # and the same target twice
    targets = [{"id": 1, "state": "done", "scan": SCAN}, {"id": 2, "state": "done", "scan": SCAN},
               {"id": 3, "state": "running", "scan": SCAN}, {"id": 5, "state": "done", "scan": SCAN}]
    summary = score_night(write_visits(tmp_path / "visits.csv", rows), truth, targets,
                          beam_losses=[(2001.0, 2100.0)], queue_wall_s=60.0)
    once = summary["exactly_once"]
    assert not once["ok"]
    assert once["targets_done_twice"] == ["2"]
    assert once["particles_scanned_twice"] == [0]
    assert once["targets_lost"] == [3]
    assert once["done_without_row"] == [5]
    assert summary["scans_during_beam_loss"] == ["1"]


def test_overlaps() -> None:
    assert overlaps(0.0, 5.0, [(4.0, 10.0)]) and not overlaps(0.0, 5.0, [(5.0, 10.0)])
    assert not overlaps(0.0, 5.0, [])


def test_the_simulations_own_offset_function_wins_over_the_table(tmp_path: Path) -> None:
    truth = write_truth(tmp_path)
    truth.offset_function = lambda t_s: (0.001 * t_s / 3600.0, 0.0)   # 1 um per hour, past the table too
    assert np.allclose(truth.stage_offset(4 * 3600.0), [0.004, 0.0])
    assert np.isnan(truth.stage_offset(math.nan)).all()


def test_a_loss_is_counted_from_its_first_reply_to_its_last_request() -> None:
    """The night's beam monitor reads the ring every 0.1 s; a read takes time. A scan that ended
    after the last read with beam but before the first reply without it was taken with beam (the
    loop kept it rightly); the loss is certain only between those two reads."""
    seen = LossPeriods()
    seen.saw(False, 100.00, 100.02)
    seen.saw(True, 100.10, 100.13)   # the beam went between 100.02 and 100.13
    seen.saw(True, 100.20, 100.21)
    seen.saw(True, 115.10, 115.12)
    seen.saw(False, 115.20, 115.21)  # back between 115.10 and 115.21
    seen.saw(True, 200.00, 200.01)   # a second loss, still on when the night ended
    seen.saw(True, 201.00, 201.01)
    seen.close()
    assert seen.periods == [(100.13, 115.10), (200.01, 201.00)]
    # a scan that ended at 100.08 (the loss came after it) is not counted; one that ran into it is
    assert not overlaps(99.0, 100.08, seen.periods)
    assert overlaps(99.0, 100.5, seen.periods)
    # one read alone that saw no beam: a loss at that instant, of no length, overlaps nothing
    single = LossPeriods()
    single.saw(True, 50.0, 50.3)
    single.close()
    assert single.periods == [(50.3, 50.3)]
