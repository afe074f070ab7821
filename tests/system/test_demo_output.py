"""What `make demo` prints at each verbosity, and the lines it builds (no stack needed).

System tier because clients.demo and clients.workflow are Tango clients (they import tango), not
because a device runs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from clients.demo import Console, parse_args
from clients.workflow import (
    VisitWatcher,
    describe_calibration,
    describe_fine_alignment,
    describe_registration,
    particle_line,
    summary_table,
)


def test_verbosity_flags_exclude_each_other() -> None:
    assert not parse_args([]).verbose and not parse_args([]).quiet
    assert parse_args(["--verbose"]).verbose and parse_args(["--quiet"]).quiet
    with pytest.raises(SystemExit):
        parse_args(["--verbose", "--quiet"])


@pytest.mark.parametrize(("verbose", "quiet", "expected"), [
    (False, False, ["step done", "  [Warning] no ScanDir", "  [Error] it broke"]),
    (True, False, ["step done", "  [Output] 12 0.48 0.49 17", "  [Warning] no ScanDir", "  [Warning] no ScanDir",
                   "  [Error] it broke"]),
    (False, True, ["  [Error] it broke"]),
])
def test_console_levels(capsys: pytest.CaptureFixture[str], verbose: bool, quiet: bool,
                        expected: list[str]) -> None:
    console = Console(verbose=verbose, quiet=quiet)
    console.say("step done")
    console.door("Output", "12 0.48 0.49 17")  # a scan row: only for --verbose
    console.door("Warning", "no ScanDir")
    console.door("Warning", "no ScanDir")  # the same warning again: said once unless --verbose
    console.door("Error", "it broke")
    assert capsys.readouterr().out.splitlines() == expected


def test_calibration_line_has_units_and_the_true_small_rotation() -> None:
    angle = math.radians(1.27)
    calibration = -0.00055 * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    edge = {"matrix": [[*calibration[0], 0.0], [*calibration[1], 0.0], [0, 0, 1]],
            "record": {"rms": 1.78e-06, "pairs": 8}}
    assert describe_calibration(edge, "mm") == ("pixel size 0.5500 µm/px, camera turned +1.27°, not mirrored; "
                                                "residual 1.8 nm RMS over 8 moves")
    assert describe_calibration(None, "mm") == "no camera -> stage edge stored"


def test_registration_and_fine_alignment_lines() -> None:
    line = describe_registration({"rotation_deg": 2.2712, "scale": 0.0363781, "confidence": 0.9987})
    assert line == "rotation +2.27°, scale 0.03638 camera px per reference px, confidence 1.00"
    assert describe_fine_alignment({"record": {"pairs": 4, "rms": 6.3e-06}}, "mm") == \
        "4 X-ray maps, residual 6.3 nm RMS"
    # 3 maps fix an affine exactly: a 7.5e-11 nm "residual" is rounding, not a measure of quality
    assert describe_fine_alignment({"record": {"pairs": 3, "rms": 7.5e-17}}, "mm") == \
        "3 X-ray maps (an exact fit: nothing left to judge it by; 4 or more maps give a residual)"


def test_particle_lines_count_down_to_done() -> None:
    row = {"index": "17", "outcome": "scanned", "scan_s": "4.2", "overhead_s": "0.1234"}
    assert particle_line(row, 3, 20, 30.0, 170.0) == (
        "   3/20 particle    17: scanned           scan 4.20 s, move + bookkeeping 0.12 s; "
        "elapsed 30 s, ~2 min 50 s left")
    assert particle_line(row, 20, 20, 200.0, 0.0).endswith("elapsed 3 min 20 s, done")


def test_visit_watcher_reports_each_new_row_once(tmp_path: Path) -> None:
    log = tmp_path / "visits.csv"
    said: list[str] = []
    columns = ["index", "outcome", "scan_s", "overhead_s"]
    watcher = VisitWatcher(log, 3, said.append, period_s=3600)  # polled by hand here
    watcher.poll()  # no log yet: nothing
    with log.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        writer.writerow([5, "scanned", 4.0, 0.1])
    watcher.started = 0.0
    watcher.poll()
    with log.open("a", newline="") as stream:
        csv.writer(stream).writerows([[9, "outside_limits", "", 0.01], [12, "scanned", 4.1, 0.1]])
    watcher.poll()
    watcher.poll()
    assert [line.split(":")[0].split()[-1] for line in said] == ["5", "9", "12"]
    assert said[1].split()[0] == "2/3" and "scan -" in said[1] and said[2].endswith("done")


def test_summary_is_one_table_with_headers_and_all_hit_errors_in_nm() -> None:
    records = [{"index": 3, "outcome": "scanned", "coarse_error_um": 0.312, "fine_error_um": 0.0214,
                "scan_s": 4.2, "overhead_s": 0.11},
               {"index": 8, "outcome": "outside_limits", "coarse_error_um": 0.5, "fine_error_um": math.nan,
                "scan_s": math.nan, "overhead_s": 0.01}]
    summary = {"particles": records, "coarse_within_1um": 1.0, "coarse_error_um_median": 0.406,
               "coarse_error_um_p95": 0.49, "fine_within_100nm": 1.0, "fine_error_nm_median": 21.4,
               "fine_error_nm_p95": 21.4, "overhead_s_median": 0.06, "overhead_s_max": 0.11}
    lines = summary_table(summary).splitlines()
    assert "coarse error (nm)" in lines[0] and "fine error (nm)" in lines[0] and "scan (s)" in lines[0]
    assert lines[1].split() == ["3", "scanned", "312", "21", "4.20", "0.11"]
    assert lines[2].split() == ["8", "outside_limits", "500", "-", "-", "0.01"]
    text = "\n".join(lines[3:])
    assert " um" not in text and "µm" not in text
    assert "median 406 nm, 95th percentile 490 nm" in text and "median 21 nm" in text


def test_stack_line_says_tango_host_once_and_the_states(tmp_path: Path) -> None:
    import json

    from clients.demo import describe_stack
    from clients.launcher import Stack

    stack = Stack(tmp_path, echo=False)
    stack.tango_host = "127.0.0.1:4321"
    stack.state_file.write_text(json.dumps({"states_after_up": {"a/b/1": "ON", "a/b/2": "ON"}}))
    line = describe_stack(stack, 61.0)
    assert line.startswith("stack up in 1 min 01 s: TANGO_HOST=127.0.0.1:4321, 2 SMART devices all ON")
    assert line.count("TANGO_HOST") == 1
    stack.state_file.write_text(json.dumps({"states_after_up": {"a/b/1": "ON", "a/b/2": "ALARM"}}))
    assert "2 SMART devices 1 ALARM, 1 ON" in describe_stack(stack, 5.0)
