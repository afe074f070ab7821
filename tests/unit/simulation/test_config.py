"""Mounting maths, the beamline bundle and the truth file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from servers.common.errors import BadArgument
from simulation import config as cfg
from simulation.config import Mounting, beamline_from_json, default_beamline, load_beamline
from simulation.geometry import apply
from simulation.mounting import lab_to_sample, sample_to_stage, stage_motion_matrix, stage_to_sample
from simulation.truth import truth, write_truth


def test_sample_to_stage_is_the_stage_position_that_puts_the_point_in_the_beam(beamline):
    """Independent check through the physical picture: at X = sample_to_stage(q) the lab
    position of q (beam at the lab origin) must be zero."""
    rng = np.random.default_rng(1)
    m = sample_to_stage(beamline.sample, beamline.mounting)
    for q in rng.uniform(0, 500, (20, 2)):
        x = apply(m, q)
        lab_of_q = apply(np.linalg.inv(lab_to_sample(beamline.sample, beamline.mounting, x)), q)
        assert np.allclose(lab_of_q, 0.0, atol=1e-12)
    assert np.allclose(stage_to_sample(beamline.sample, beamline.mounting) @ m, np.eye(3), atol=1e-9)


def test_offset_centres_the_field_and_scale_is_one_micron_per_micron():
    beamline = default_beamline(3)
    m = sample_to_stage(beamline.sample, beamline.mounting)
    assert np.allclose(apply(m, beamline.sample.centre), beamline.mounting.offset_mm)
    # 1 µm on the sample is 1e-3 mm of travel (up to the stage shear)
    assert np.allclose(np.abs(np.linalg.det(m[:2, :2])) * np.cos(np.radians(beamline.mounting.nonorthogonality_deg)),
                       1e-6)


def test_nonorthogonality_shears_the_y_motor():
    n = stage_motion_matrix(Mounting(nonorthogonality_deg=1.0))
    angle = np.degrees(np.arccos(n[:, 0] @ n[:, 1] / np.linalg.norm(n[:, 1])))
    assert np.isclose(angle, 91.0)


def test_default_mounting_errors_are_random_within_documented_ranges():
    seen = [default_beamline(s, sample=default_beamline(0).sample) for s in range(40)]
    rot = np.array([b.mounting.rotation_deg for b in seen])
    off = np.array([b.mounting.offset_mm for b in seen])
    cam = np.array([b.camera.rotation_deg for b in seen])
    assert np.all(np.abs(rot) <= cfg.MOUNT_ROTATION_MAX_DEG) and rot.std() > 1.0
    assert np.all(np.abs(off) <= cfg.MOUNT_OFFSET_MAX_MM) and off.std() > 0.3
    assert np.all(np.abs(cam) <= cfg.CAMERA_ROTATION_MAX_DEG) and cam.std() > 0.5
    assert len(set(rot.round(9))) == 40


def test_beamline_json_round_trip_and_same_seed_same_bundle(tmp_path):
    a = default_beamline(9)
    a.save(tmp_path / "a.json")
    default_beamline(9).save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    back = load_beamline(tmp_path / "a.json")
    assert back.to_json() == a.to_json()


def test_truth_file_has_the_matrices(tmp_path, beamline):
    data = write_truth(beamline, tmp_path / "truth.json")
    on_disk = json.loads((tmp_path / "truth.json").read_text())
    assert on_disk == json.loads(json.dumps(data))
    assert np.allclose(on_disk["sample_to_stage"], sample_to_stage(beamline.sample, beamline.mounting))
    assert set(on_disk["camera"]["A_mm_per_px"]) == {"low", "mid", "high"}
    assert np.array(on_disk["sem"]["pixel_to_sample"]).shape == (3, 3)
    assert truth(beamline)["camera"]["beam_px"] == [1023.5, 1023.5]


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["camera"].update(width=-5), "camera.width"),
    (lambda d: d["camera"].update(zoom="ultra"), "zoom 'ultra' is not one of"),
    (lambda d: d["mounting"].update(rotation_dg=1.0), "mounting.rotation_dg"),
    (lambda d: d["xrf"].update(beam_fwhm_nm="100"), "xrf.beam_fwhm_nm"),
    (lambda d: d["stage"].update(limits_mm=[1, -1]), "limits_mm"),
    (lambda d: d.update(colour=1), "beamline.colour: unknown key"),
    (lambda d: d["sample"]["particles"][0].update(d=-1), "particles[0].d: must be a positive number"),
])
def test_malformed_beamline_is_refused_naming_the_field(mutate, expected):
    data = json.loads(json.dumps(default_beamline(1).to_json()))
    mutate(data)
    with pytest.raises(BadArgument) as err:
        beamline_from_json(data)
    assert expected in err.value.desc
