"""`make night`, small: the whole night through the Door with its chaos (SIGKILL of the MacroServer
and of QueueDS mid-scan, a beam loss), scored against the truth.

Asserted, on what the scorer measured against truth.json (never the workflow's own estimates):
no scan kept that was taken without beam, every target done exactly once after the SIGKILLs,
both tiles visited, and that the scorer's truth is right (the X-ray maps found the particles
where the truth puts them). The hit rate (the issue's >= 95 % within 100 nm) and the overhead are
accuracy and speed figures: `make night` measures and prints them (docs/workflow.md), they are
not asserted here. The run is smaller than the default night (two
1536 px tiles, 12 particles, one simulated hour) so it fits in `make test`; `make night` is the
full one.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from clients.night import main

pytestmark = pytest.mark.timeout(1200)

SEED = 4
SEARCH_UM = 0.7
"""Half width of the fine alignment's maps: 15 x 15 points instead of the default night's 21 x 21
(half its time, ~3 min of the test's 11). The camera registration alone lands within 300-350 nm
here (median and 95th percentile of this night on 2026-12-01), so +-0.7 µm still holds each
particle with room to spare."""
ACCELERATION = 5.0
"""Simulated seconds per wall second: 35-55 simulated minutes of the hour's drift pass while the
run (7-11 min on 2 loaded cores) takes place."""


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("night")
    code = main(["--particles", "12", "--regions", "2", "--tile-px", "1536", "--hours", "1", "--acceleration",
                 str(ACCELERATION), "--seed", str(SEED), "--run-dir", str(run_dir), "--fine-particles", "3",
                 "--search-um", str(SEARCH_UM), "--scan-half-um", "0.3", "--beam-loss-s", "15", "--quiet"])
    assert code == 0, f"the night failed; logs in {run_dir / 'stack' / 'logs'}"
    return run_dir


def test_the_night_hits_its_particles_after_sigkills_and_a_beam_loss(night: Path) -> None:
    summary = json.loads((night / "summary.json").read_text())
    kills = [c for c in summary["chaos"] if c["what"] == "sigkill"]
    assert {c["server"] for c in kills} == {"MacroServer/smart", "QueueDS/smart"}, summary["chaos"]
    assert all(c["new_pid"] != c["pid"] for c in kills)
    assert summary["beam_losses"], "the ring's beam loss was not seen"
    assert summary["visits"] >= 10 and set(summary["regions"]) == {"tile1", "tile2"}, summary["outcomes"]
    # the scorer's truth is right: where the X-ray maps found the particles is where the truth says
    # they were at that moment (a wrong drift, region or sign would put them hundreds of nm apart)
    found = [s["ce_centre_error_nm"] for s in summary["scored"] if s["outcome"] == "scanned"]
    assert sorted(found)[len(found) // 2] < 60.0, found
    # the hit rate (>= 95 % within 100 nm in the issue) and the overhead (median <= 1 s) are
    # accuracy and speed figures: measured and printed by make night (docs/workflow.md), not asserted
    assert 0.0 <= summary["within_100nm"] <= 1.0 and summary["overhead_s_median"] > 0
    assert summary["scans_during_beam_loss"] == []
    once = summary["exactly_once"]
    assert once["ok"], once
    assert once["queue_states"].get("done", 0) == summary["done"]
    assert 0 < summary["exposing_fraction"] < 1 and summary["particles_per_hour"] > 0


def test_the_night_leaves_its_files(night: Path) -> None:
    for name in ("sample.json", "beamline.json", "truth.json", "overview.tif", "tile1.tif", "tile2.tif", "visits.csv",
                 "summary.json", "queue_targets.json", "night_drift.png", "night_hits.png", "report.html",
                 "scans/scans.h5"):
        assert (night / name).is_file(), name
    with (night / "visits.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert {"region", "started_sim_s", "target_id"} <= set(rows[0])
    assert {row["region"] for row in rows} == {"tile1", "tile2"}
    assert all(float(row["started_sim_s"]) > 0 for row in rows)    # the night's simulated clock
    assert b"\x89PNG" in (night / "night_hits.png").read_bytes()[:8]
