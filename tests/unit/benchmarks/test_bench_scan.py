"""bench_scan reads Sardana's own account of a scan: the closing line and the table's dt column."""

from __future__ import annotations

import pytest

from benchmarks.bench_scan import scan_account

STEP_MESH = """Operation will be saved in /tmp/run/scans/smart_scans.h5 (HDF5::NXscan from NXscanH5_FileRecorder)
Scan #4 started at Mon Nov 30 23:28:05 2026. It will take at least 0:00:00.542966
 #Pt No     samx      samy     xrf_t     xrf_ce    xrf_pt      dt
   0      0.475165  -0.740228    0.01       0         0      0.265865
   1      0.475265  -0.740228    0.01       0         0      0.325865
   2      0.475365  -0.740228    0.01       3         0      0.385865
   3      0.475465  -0.740228    0.01       0         1      0.445865
Operation saved in /tmp/run/scans/smart_scans.h5 (HDF5::NXscan)
Scan #4 ended at Mon Nov 30 23:28:11 2026, taking 0:00:01.000000. \
Dead time 96.0% (setup time 2.0%, motion dead time 30.0%)
"""

CONTINUOUS = """Motor positions and relative timestamp (dt) columns contains theoretical values
   0      0.475165    0.01       0         0      0.599672
   1      0.475265    nan       nan       nan     0.609672
   2      0.475365    0.01       0         0      0.619672
Overshoot was corrected
Scan #1 ended at Mon Nov 30 23:27:39 2026, taking 0:01:02.500000. \
Dead time 89.2% (setup time 10.8%, motion dead time 89.2%)
"""


def test_a_step_scan_is_split_into_its_fixed_cost_and_its_time_per_point() -> None:
    account = scan_account(STEP_MESH)
    assert account["total"] == pytest.approx(1.0)
    assert account["setup"] == pytest.approx(0.02)
    assert account["motion"] == pytest.approx(0.30)
    assert account["points"] == 4
    assert account["per_point"] == pytest.approx(0.06)
    assert account["fixed"] == pytest.approx(1.0 - 4 * 0.06)
    assert account["missed"] == 0


def test_minutes_count_and_points_without_a_value_are_told() -> None:
    account = scan_account(CONTINUOUS)
    assert account["total"] == pytest.approx(62.5)
    assert account["points"] == 3
    assert account["missed"] == 1


def test_an_output_without_sardana_s_closing_line_is_refused() -> None:
    with pytest.raises(RuntimeError, match="Dead time"):
        scan_account(STEP_MESH.rsplit("Scan #4 ended", 1)[0])
