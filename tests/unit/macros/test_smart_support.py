"""The maths the macros rely on, without a MacroServer: meshes, peak centres, selection, logs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from macros.smart_support import (
    FINE_OFFSET_SCATTER_LIMIT_UM,
    VISIT_COLUMNS,
    SmartMacroError,
    VisitLog,
    camera_rotation_text,
    check_storable,
    known_range,
    length_text,
    mesh_around,
    mesh_words,
    number_text,
    offset_scatter_um,
    peak_centre,
    position_text,
    reachable_spread,
    sigma_text,
    spread_selection,
)


def test_mesh_covers_the_half_width_at_the_step() -> None:
    spec = mesh_around([1.0, 2.0], 0.0003, 0.00005)
    assert spec.intervals == 12
    assert spec.x1 - spec.x0 == pytest.approx(12 * 0.00005)
    assert (spec.x0 + spec.x1) / 2 == pytest.approx(1.0)
    assert spec.command("mesh", "samx", "samy", 0.01)[:2] == ["mesh", "samx"]
    with pytest.raises(SmartMacroError):
        mesh_around([0.0, 0.0], -1.0, 0.1)


def _map(centre, half, step, sigma, amp, rng, background=0.5):
    spec = mesh_around([0.0, 0.0], half, step)
    xs = np.linspace(spec.x0, spec.x1, spec.intervals + 1)
    gx, gy = np.meshgrid(xs, xs)
    rate = amp * np.exp(-((gx - centre[0]) ** 2 + (gy - centre[1]) ** 2) / (2 * sigma**2)) + background
    return gx.ravel(), gy.ravel(), rng.poisson(rate).ravel().astype(float)


def test_peak_centre_is_accurate_on_fine_maps() -> None:
    rng = np.random.default_rng(5)
    errors = []
    for _ in range(40):
        truth = rng.uniform(-0.05, 0.05, 2)
        x, y, counts = _map(truth, 0.15, 0.02, 0.045, 40, rng)
        cx, cy, significance = peak_centre(x, y, counts)
        assert significance > 5
        errors.append(np.hypot(cx - truth[0], cy - truth[1]))
    assert np.median(errors) < 0.005  # 5 nm in these um units


def test_peak_centre_on_a_coarse_map_lands_within_a_step() -> None:
    rng = np.random.default_rng(6)
    for _ in range(40):
        truth = rng.uniform(-0.8, 0.8, 2)
        x, y, counts = _map(truth, 1.0, 0.1, 0.045, 30, rng)
        cx, cy, _ = peak_centre(x, y, counts)
        assert np.hypot(cx - truth[0], cy - truth[1]) < 0.1


def test_empty_map_has_no_significant_peak() -> None:
    rng = np.random.default_rng(7)
    x, y, counts = _map([0.0, 0.0], 1.0, 0.1, 0.045, 0.0, rng, background=0.2)
    assert peak_centre(x, y, counts)[2] < 5


def test_spread_selection_picks_far_apart_points() -> None:
    points = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5], [0.51, 0.5]])
    chosen = spread_selection(points, 4)
    assert sorted(chosen) == [0, 1, 2, 3]
    assert spread_selection(np.empty((0, 2)), 3) == []


def test_reachable_spread_names_only_reachable_particles() -> None:
    # particle 7 (first candidate) is outside the stage limits: a spread chosen among the
    # reachable candidates must be translated back through the reachable subset, never
    # through the full candidate list (which would name the unreachable particle 7)
    candidates = np.array([7, 11, 12, 13, 14])
    points = np.array([[-50.0, -50.0], [0, 0], [10, 0], [0, 10], [10, 10]])
    reachable = np.array([False, True, True, True, True])
    chosen = reachable_spread(candidates, points, reachable, 4)
    assert sorted(chosen) == [11, 12, 13, 14]
    assert reachable_spread(candidates, points, np.zeros(5, bool), 3) == []


def test_visit_log_writes_complete_lines_with_header(tmp_path: Path) -> None:
    log = VisitLog(str(tmp_path / "sub" / "visits.csv"))
    log.write({"index": 3, "target_x": 0.1234567891234, "ce_center_x": float("nan"), "outcome": "scanned"})
    VisitLog(log.path).write({"index": 4, "outcome": "outside_limits"})  # a re-run appends
    with open(log.path) as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == VISIT_COLUMNS
    assert [r["index"] for r in rows] == ["3", "4"]
    assert rows[0]["ce_center_x"] == ""
    assert float(rows[0]["target_x"]) == pytest.approx(0.1234567891234, rel=1e-8)


def test_offset_scatter_tells_a_common_offset_from_unrelated_particles() -> None:
    """Right registration: one common offset (the demo's offsets scatter ~25 nm); another
    sample's SEM image: the +-1 um search maps find particles in random directions."""
    rng = np.random.default_rng(4)
    targets = rng.uniform(-0.04, 0.04, (4, 2))  # mm
    common = targets + [0.0007, -0.0004] + rng.normal(0, 25e-6, (4, 2))  # 0.8 um off, 25 nm scatter
    assert offset_scatter_um(targets, common, 1e-3) < 0.06
    unrelated = [offset_scatter_um(targets, targets + rng.uniform(-0.001, 0.001, (4, 2)), 1e-3)
                 for _ in range(200)]
    assert np.mean(np.array(unrelated) > FINE_OFFSET_SCATTER_LIMIT_UM) > 0.95
    assert offset_scatter_um(targets[:1], common[:1], 1e-3) == 0.0


# ----------------------------------------------------------------- what the macros print
MESH_PARAMETERS = (str, str, float, float, int, str, float, float, int, float)
"""Sardana's mesh: motor1 start end intervals motor2 start end intervals integ_time."""


def test_mesh_words_are_plain_numbers_sardana_parses() -> None:
    words = mesh_words("mesh", "samx", np.float64(0.48290000000000004), np.float64(0.4833), 9,
                       "samy", np.float64(-0.0), np.float64(1e-7), 9, np.float64(0.01), decimals=6)
    assert words == ["mesh", "samx", "0.482900", "0.483300", "9", "samy", "0", "0", "9", "0.01"]
    for word, kind in zip(words[1:], MESH_PARAMETERS[1:], strict=True):
        assert "np." not in word and "e" not in word.lower().replace("samx", "").replace("samy", "")
        kind(word)  # parses as the mesh parameter's type, as the MacroServer does


def test_mesh_spec_command_round_trips_to_the_nanometre() -> None:
    spec = mesh_around([np.float64(0.4829123456789), np.float64(-1.25)], 0.0003, 0.00005)
    words = spec.command("mesh", "samx", "samy", np.float64(0.01))
    values = [kind(word) for word, kind in zip(words[1:], MESH_PARAMETERS[1:], strict=True)]
    assert values[1] == pytest.approx(spec.x0, abs=1e-9) and values[6] == pytest.approx(spec.y1, abs=1e-9)
    assert values[3] == spec.intervals


def test_numbers_have_units_and_sensible_digits() -> None:
    assert position_text(np.float64(0.33870730967476237), "mm") == "0.338707 mm"
    assert position_text(338.70730967, "um") == "338.707 um"
    assert length_text(1.78e-06, "mm") == "1.8 nm"
    assert length_text(0.0025, "mm") == "2.500 um"
    assert length_text(None, "mm") == "unknown"
    assert number_text(-1e-12, 6) == "0"


def test_an_exact_fit_has_no_uncertainty_and_says_so() -> None:
    # the mapper answers null for an exact fit (3 pairs, affine): the bug was None.__format__
    assert "exact fit" in sigma_text(None, "mm")
    assert "exact fit" in sigma_text(float("nan"), "mm")
    assert sigma_text(2.4e-5, "mm") == "1-sigma 24.0 nm"


def test_camera_rotation_is_an_angle_from_the_stage_axes() -> None:
    # a camera looking at a stage that carries the sample past the beam: A ~ -s R(theta)
    assert camera_rotation_text(-178.94, False).startswith("camera axes +1.06 deg from the stage axes, image "
                                                           "moves against")
    assert camera_rotation_text(2.5, False).startswith("camera axes +2.50 deg")
    assert "with the stage" in camera_rotation_text(2.5, False)
    assert camera_rotation_text(178.0, True).endswith("against the stage, mirrored")
    for raw in np.linspace(-360, 360, 73):
        angle = float(camera_rotation_text(raw, False).split()[2])
        assert -90 < angle <= 90


def test_finite_ordered_limits_are_the_range() -> None:
    assert known_range(-11.5, 11.5) == (-11.5, 11.5)
    assert known_range(0.0, 0.0) == (0.0, 0.0)
    assert known_range(-2, 3) == (-2.0, 3.0)


@pytest.mark.parametrize("low, high", [(-math.inf, 11.5), (-11.5, math.inf), (-math.inf, math.inf),
                                       (math.nan, 1.0), (-1.0, math.nan), (3.0, 1.0)])
def test_unknown_limits_are_none_never_infinite(low: float, high: float) -> None:
    """Taurus gives an unset limit ("Not specified") as -inf / +inf: that is unknown, not "anywhere";
    and min above max is unknown too."""
    assert known_range(low, high) is None


def test_offsets_agree_within_the_centres_noise_and_not_beyond() -> None:
    from macros.smart_support import offsets_agree

    rng = np.random.default_rng(0)
    targets = rng.uniform(0, 1, (6, 2))
    common = targets + [0.2, -0.1] + rng.normal(0, 0.03, (6, 2))
    assert offsets_agree(targets, common, 0.03)
    sheared = common + targets @ np.array([[0.0, 0.3], [0.0, 0.0]])  # up to 0.3 apart across the field
    assert not offsets_agree(targets, sheared, 0.03)
    assert offsets_agree(targets[:1], common[:1], 0.03)


def test_mesh_points_counts_the_mesh_that_mesh_around_makes() -> None:
    from macros.smart_support import mesh_points

    assert mesh_points(0.3, 0.05) == 13 * 13
    assert mesh_points(0.15, 0.05) == 7 * 7
    assert mesh_points(0.16, 0.05) == 8 * 8  # rounded up: the mesh covers at least the half width


@pytest.mark.parametrize("value", ["/data/sem 7 µm.tif", "C:\\data\\x.tif", ["x", 1.0, None],
                                   {"done": [1, 2], "key": ["/a.tif", 3, [1.5]]}])
def test_values_the_environment_gives_back_intact_are_accepted(value: object) -> None:
    check_storable("it", value)
    # DataBaseds on MariaDB turns every \\" into " (tests/facility/test_database_differences.py)
    assert json.loads(json.dumps(value).replace('\\"', '"')) == value


@pytest.mark.parametrize("value", ['/data/sem"copy.tif', "C:\\data\\", {"key": json.dumps(["/a.tif", 3])}])
def test_values_that_would_come_back_broken_are_refused(value: object) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(json.dumps(value).replace('\\"', '"'))
    with pytest.raises(SmartMacroError, match="SMART_BadArgument: it holds a double quote"):
        check_storable("it", value)
