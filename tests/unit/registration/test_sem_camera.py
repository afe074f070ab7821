"""SEM -> optical camera on the virtual beamline: the workflow's coarse alignment step.

The truth (SEM px -> sample um -> stage -> camera px) is used only to set up the scene
(where the stage stands) and to score the result; the registration sees the two images
and their pixel sizes only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import simulation.config as sim
from servers.RegistrationDS.contained import ANGLE_STEP_DEG, search_angles
from servers.RegistrationDS.core import RegistrationCore
from simulation.geometry import apply
from simulation.scenes import sem_in_camera
from simulation.sem import render_sem


def _rotation_scale(matrix: np.ndarray) -> tuple[float, float]:
    a = 0.5 * (matrix[0, 0] + matrix[1, 1])
    b = 0.5 * (matrix[1, 0] - matrix[0, 1])
    return math.degrees(math.atan2(b, a)), math.hypot(a, b)


@pytest.mark.parametrize(("seed", "offset"), [(1, (0.0, 0.0)), (4, (250.0, -180.0)), (5, (250.0, -180.0))])
def test_sem_in_camera_frame_similarity_accuracy(seed, offset):
    frame, camera_px, sem, truth = sem_in_camera(seed, offset)
    core = RegistrationCore()
    core.put_image("camera", frame, camera_px)
    core.put_image("sem", sem.image, sem.pixel_size_um)
    result = core.register({"reference": "camera", "target": "sem", "model": "similarity"})
    matrix = np.array(result.matrix)
    rotation, scale = _rotation_scale(matrix)
    true_rotation, true_scale = _rotation_scale(truth)
    h, w = sem.image.shape
    probes = np.array([[(w - 1) / 2, (h - 1) / 2], [0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float)
    errors = np.linalg.norm(apply(matrix, probes) - apply(truth, probes), axis=1)
    assert abs((rotation - true_rotation + 180) % 360 - 180) <= 0.1
    assert abs(scale / true_scale - 1) <= 0.002
    assert errors.max() <= 0.3, errors
    assert result.success, result.warnings


def test_sem_of_another_sample_is_not_a_success():
    """Same marker layout, different particles: the markers alone must not make a success."""
    frame, camera_px, _, _ = sem_in_camera(3, (0.0, 0.0))
    other = sim.default_beamline(9)
    sem = render_sem(other.sample, other.sem, seed=9)
    core = RegistrationCore()
    core.put_image("camera", frame, camera_px)
    core.put_image("sem", sem.image, sem.pixel_size_um)
    result = core.register({"reference": "camera", "target": "sem", "model": "similarity"})
    assert not result.success


def test_search_angles_cover_the_range():
    full, circular = search_angles(None)
    assert circular and len(full) == round(360 / ANGLE_STEP_DEG) and full[0] == -180.0
    part, circular = search_angles((-5.0, 10.0))
    assert not circular and part[0] == -5.0 and part[-1] == 10.0
    assert np.all(np.diff(part) <= ANGLE_STEP_DEG + 1e-9) and len(part) == 9


def test_rotation_range_limits_the_contained_search():
    """With the rotation known to +-10 deg the search (11 angles instead of 180) finds the
    same answer; a range that excludes the true rotation gives no success."""
    frame, camera_px, sem, truth = sem_in_camera(4, (250.0, -180.0))
    true_rotation, _ = _rotation_scale(truth)
    core = RegistrationCore()
    core.put_image("camera", frame, camera_px)
    core.put_image("sem", sem.image, sem.pixel_size_um)
    args = {"reference": "camera", "target": "sem", "model": "similarity"}
    full = core.register(args)
    ranged = core.register({**args, "rotation_range_deg": [true_rotation - 10, true_rotation + 10]})
    assert ranged.success
    np.testing.assert_allclose(ranged.matrix, full.matrix, atol=0.02)
    wrong = core.register({**args, "rotation_range_deg": [true_rotation + 30, true_rotation + 90]})
    assert not wrong.success
