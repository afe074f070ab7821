"""How numbers and tables are shown to people (clients/display.py, the CLI's particle table)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clients.cli import particle_table
from clients.display import camera_geometry, duration, format_table, nanometres, significant


def rotation(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s], [s, c]])


def test_the_simulated_camera_reads_as_its_true_small_rotation_not_near_180_degrees() -> None:
    # A = -N^-1 C carries the physical minus sign (the stage carries the sample): the arctan of
    # its first column alone says -178.7° for a camera turned by +1.3°
    from simulation.camera import camera_calibration
    from simulation.config import default_beamline

    for seed in (5, 6):
        truth = default_beamline(seed)
        for flip_x in (False, True):
            optics = truth.camera.model_copy(update={"flip_x": flip_x})
            geometry = camera_geometry(camera_calibration(optics, truth.mounting), "mm")
            assert geometry.flip == ("x" if flip_x else None)
            # the mounting's stage shear (±0.1°) is the only difference from the camera's rotation
            assert geometry.rotation_deg == pytest.approx(truth.camera.rotation_deg, abs=0.15)
            assert geometry.pixel_size_um == pytest.approx(0.55, rel=1e-3)


def test_describe_names_rotation_and_flip_in_words() -> None:
    calibration = -0.00055 * rotation(1.06) @ np.diag([1.0, -1.0])
    geometry = camera_geometry(calibration, "mm")
    assert (geometry.flip, round(geometry.rotation_deg, 9)) == ("y", 1.06)
    assert geometry.shear_deg == pytest.approx(0.0, abs=1e-9)
    assert geometry.describe() == "pixel size 0.5500 µm/px, camera turned +1.06°, image mirrored in y"
    # the same matrix as a flip in x after a turn of -178.94°: we never say that
    assert camera_geometry(-0.00055 * rotation(-178.94) @ np.diag([-1.0, 1.0]), "mm").rotation_deg == \
        pytest.approx(1.06)


def test_an_unmirrored_camera_keeps_its_rotation_and_reports_shear_and_aspect() -> None:
    geometry = camera_geometry(-rotation(30.0) * 0.5, "um")
    assert geometry.flip is None and geometry.rotation_deg == pytest.approx(30.0)
    assert geometry.pixel_size_um == pytest.approx(0.5)
    skewed = camera_geometry(-np.array([[0.5, 0.01], [0.0, 0.6]]), "um")
    assert abs(skewed.shear_deg) > 0.5 and skewed.aspect != pytest.approx(1.0)
    assert "shear" in skewed.describe() and "aspect" in skewed.describe()


@pytest.mark.parametrize(("value", "text"), [(0.0005500040905890259 * 1000, "0.5500"), (1234.5678, "1235"),
                                             (12.3456, "12.35"), (0.0, "0"), (math.nan, "n/a")])
def test_significant_digits(value: float, text: str) -> None:
    assert significant(value, 4) == text


@pytest.mark.parametrize(("seconds", "text"), [(3.21, "3.2 s"), (42.4, "42 s"), (185, "3 min 05 s"),
                                               (3725, "1 h 02 min"), (math.inf, "n/a")])
def test_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_table_has_a_header_and_aligned_columns() -> None:
    text = format_table((("index", "d"), ("x (px)", ".2f"), ("isolated", "")),
                        [(0, 12.345, True), (10, math.nan, False), (3, None, True)])
    lines = text.splitlines()
    assert lines[0].split() == ["index", "x", "(px)", "isolated"]
    assert lines[1].split() == ["0", "12.35", "yes"]
    assert lines[2].split() == ["10", "-", "no"]
    assert len({len(line) for line in lines}) == 1  # right-aligned to the same width


def test_the_cli_particle_table_has_a_header_with_units() -> None:
    rows = [{"index": 0, "x": 1023.456, "y": 12.0, "mass": 15320.7, "size": 1.41, "ecc": 0.05, "signal": 90.0,
             "isolated": True, "nn_distance": 35.27},
            {"index": 1, "x": 1030.0, "y": 14.5, "mass": 9800.0, "size": 1.2, "ecc": 0.1, "signal": 70.0,
             "isolated": False, "nn_distance": None}]
    text = particle_table({"count": 2, "isolated": 1, "elapsed_ms": 41.7, "particles": rows})
    head, header, first, second = text.splitlines()
    assert head == "2 particles, 1 isolated (detection 42 ms)"
    for title in ("index", "x (px)", "y (px)", "mass", "size (px)", "ecc", "isolated", "nearest (px)"):
        assert title in header
    assert first.split() == ["0", "1023.46", "12.00", "1.53e+04", "1.41", "0.05", "yes", "35.3"]
    assert second.split()[-2:] == ["no", "-"]
    assert particle_table({"count": 0, "isolated": 0, "particles": []}) == "0 particles, 0 isolated"


@pytest.mark.parametrize(("value", "text"), [(123.4, "123 nm"), (6.34, "6.3 nm"), (0.01234, "0.012 nm"),
                                             (0.0, "0 nm"), (math.nan, "n/a")])
def test_nanometres_keep_small_residuals_visible(value: float, text: str) -> None:
    assert nanometres(value) == text
