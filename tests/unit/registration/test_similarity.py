"""Rotation/scale/translation accuracy on real micrographs, same- and cross-pixel-size."""

from __future__ import annotations

import math

import cv2
import numpy as np

from servers.RegistrationDS.core import RegistrationCore
from servers.RegistrationDS.similarity import rotation_and_scale, similarity_matrix, warp, within_rotation_range


def _scene(image: np.ndarray, rotation: float, scale: float, shift, size: int):
    """Reference = centre crop; target = centre crop of the image warped by the inverse truth.

    Returns reference, target and the true target px -> reference px matrix.
    """
    h, w = image.shape
    y0, x0 = (h - size) // 2, (w - size) // 2
    to_crop = np.eye(3)
    to_crop[:2, 2] = (-x0, -y0)
    truth_full = similarity_matrix(rotation, scale, ((w - 1) / 2, (h - 1) / 2), shift)
    target_full = warp(image, np.linalg.inv(truth_full), image.shape)  # target = image seen through truth^-1
    truth = to_crop @ truth_full @ np.linalg.inv(to_crop)
    return image[y0:y0 + size, x0:x0 + size], target_full[y0:y0 + size, x0:x0 + size], truth


def _errors(result: dict, truth: np.ndarray, probe: tuple[float, float]) -> tuple[float, float, float]:
    matrix = np.array(result.matrix)
    rotation, scale = rotation_and_scale(truth)
    point = np.array([probe[0], probe[1], 1.0])
    return (abs((result.rotation_deg - rotation + 180) % 360 - 180), abs(result.scale / scale - 1),
            float(np.linalg.norm((matrix @ point - truth @ point)[:2])))


def test_similarity_accuracy_on_micrographs(micrographs):
    rng = np.random.default_rng(11)
    core = RegistrationCore()
    worst = np.zeros(3)
    for name in ("camera", "brick", "moon", "grass", "coins", "astronaut", "hubble_deep_field", "chelsea"):
        for _ in range(2):
            rotation, scale = rng.uniform(-40, 40), rng.uniform(0.85, 1.15)
            shift = tuple(rng.uniform(-15, 15, 2))
            ref, tgt, truth = _scene(micrographs[name], rotation, scale, shift, 256)
            noise = 0.03 * float(ref.std())
            core.put_image("ref", ref + rng.normal(0, noise, ref.shape).astype(np.float32), 1.0, {})
            core.put_image("tgt", tgt + rng.normal(0, noise, tgt.shape).astype(np.float32), 1.0, {})
            result = core.register({"reference": "ref", "target": "tgt", "model": "similarity"})
            assert result.success, (name, result)
            worst = np.maximum(worst, _errors(result, truth, (127.5, 127.5)))
    assert worst[0] <= 0.1, worst
    assert worst[1] <= 0.002, worst
    assert worst[2] <= 0.3, worst


def test_different_pixel_sizes_and_inverted_blurred_modality(micrographs):
    """Reference at 0.5 um/px; target at 1.3 um/px, rotated, blurred, contrast-inverted, noisy."""
    rng = np.random.default_rng(5)
    core = RegistrationCore()
    for name in ("camera", "astronaut", "brick"):
        image = micrographs[name]
        rotation = rng.uniform(-30, 30)
        ref, fine_target, truth_fine = _scene(image, rotation, 1.0, tuple(rng.uniform(-10, 10, 2)), 384)
        factor = 0.5 / 1.3
        size = round(fine_target.shape[1] * factor)
        coarse = cv2.resize(cv2.GaussianBlur(fine_target, (0, 0), 1.0), (size, size), interpolation=cv2.INTER_AREA)
        coarse = 300.0 - coarse + rng.normal(0, 0.03 * coarse.std(), coarse.shape).astype(np.float32)
        # coarse px -> fine px: x_fine = (x_coarse + 0.5) / f - 0.5
        f = size / fine_target.shape[1]
        coarse_to_fine = np.array([[1 / f, 0, 0.5 / f - 0.5], [0, 1 / f, 0.5 / f - 0.5], [0, 0, 1]])
        truth = truth_fine @ coarse_to_fine
        core.put_image("sem", ref, 0.5, {})
        core.put_image("camera", coarse.astype(np.float32), 1.3, {"frame_number": 3})
        result = core.register({"reference": "sem", "target": "camera", "model": "similarity"})
        assert result.success, (name, result)
        rot_err, scale_err, shift_err = _errors(result, truth, (size / 2, size / 2))
        assert rot_err <= 0.1 and scale_err <= 0.002, (name, rot_err, scale_err)
        # 0.3 target (camera) px, measured in reference px: 0.3 * 1.3 / 0.5
        assert shift_err <= 0.3 * 1.3 / 0.5, (name, shift_err)
        assert math.isclose(result.scale, 1 / f, rel_tol=0.002)  # ~1.3 / 0.5, up to the rounded size


def test_within_rotation_range_wraps_whole_turns():
    assert within_rotation_range(175.0, (170.0, 190.0)) and within_rotation_range(-175.0, (170.0, 190.0))
    assert within_rotation_range(370.0, (0.0, 20.0)) and within_rotation_range(-350.0, (0.0, 20.0))
    assert within_rotation_range(-0.9, (0.0, 20.0)) and not within_rotation_range(-1.1, (0.0, 20.0))
    assert not within_rotation_range(100.0, (-10.0, 10.0)) and within_rotation_range(100.0, None)


def test_rotation_range_picks_the_candidate_and_refuses_a_result_outside(micrographs):
    """Fourier-Mellin: a range around the truth keeps the answer; a range that excludes it
    makes the result a failure that says why, and the earlier good result stays."""
    ref, tgt, truth = _scene(micrographs["astronaut"], 23.0, 1.05, (4.0, -6.0), 256)
    core = RegistrationCore()
    core.put_image("ref", ref, 1.0, {})
    core.put_image("tgt", tgt, 1.0, {})
    args = {"reference": "ref", "target": "tgt", "model": "similarity"}
    inside = core.register({**args, "rotation_range_deg": [10, 40]})
    assert inside.success and _errors(inside, truth, (127.5, 127.5))[0] <= 0.1
    outside = core.register({**args, "rotation_range_deg": [-60, 0]})
    assert not outside.success and outside.confidence == 0.0
    assert any("outside rotation_range_deg" in warning for warning in outside.warnings)
    assert core.last_good_result == inside
