"""Confidence means something (unrelated pairs fail), and fiducial fits name their outliers."""

from __future__ import annotations

import numpy as np
import pytest

from servers.RegistrationDS.confidence import DEFAULT_MIN_CONFIDENCE, confidence_from_peak
from servers.RegistrationDS.core import RegistrationCore
from servers.RegistrationDS.preprocess import apodise, represent
from servers.RegistrationDS.similarity import similarity_matrix
from servers.RegistrationDS.translation import estimate_translation


def _random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape
    size = min(size, h, w)
    y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    return image[y:y + size, x:x + size]


def test_unrelated_pairs_fail_in_at_least_99_percent(micrographs):
    """Seed differs from the calibration run in confidence.py, so this is a fresh sample."""
    rng = np.random.default_rng(987654)
    names = sorted(micrographs)
    failures = trials = 0
    for trial in range(800):
        size = int(rng.choice([64, 96, 128, 200]))
        first, second = rng.choice(len(names), 2, replace=False)
        a = _random_crop(micrographs[names[first]], size, rng)
        b = _random_crop(micrographs[names[second]], size, rng)
        side = min(a.shape + b.shape)
        a, b = a[:side, :side], b[:side, :side]
        if trial % 5 == 0:
            b = rng.normal(0, 1, a.shape).astype(np.float32)
        kind = "gradient" if trial % 2 else "intensity"
        peak = estimate_translation(apodise(represent(a, kind)), apodise(represent(b, kind)), 10)
        trials += 1
        failures += confidence_from_peak(peak.distinctness) < DEFAULT_MIN_CONFIDENCE
    assert failures / trials >= 0.99, failures / trials


def test_related_pairs_are_confident(micrographs):
    rng = np.random.default_rng(42)
    for name in ("camera", "brick", "moon", "grass", "coins", "astronaut"):
        image = micrographs[name]
        a = image[:200, :200]
        b = image[7:207, 11:211] + rng.normal(0, 0.1 * float(image.std()), (200, 200)).astype(np.float32)
        peak = estimate_translation(apodise(a), apodise(b), 10)
        assert confidence_from_peak(peak.distinctness) > 0.9999, name


def _points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return (matrix[:2, :2] @ points.T).T + matrix[:2, 2]


def test_fiducials_similarity_affine_and_named_outlier(micrographs):
    core = RegistrationCore()
    core.put_image("ref", micrographs["camera"], 0.5, {})
    core.put_image("tgt", micrographs["coins"], 1.0, {})
    truth = similarity_matrix(12.0, 1.2, (0, 0), (40.0, 20.0))
    targets = np.array([[10, 10], [300, 20], [40, 250], [200, 200], [350, 280], [120, 90]], float)
    refs = _points(truth, targets)
    exact = core.register_fiducials({"reference": "ref", "target": "tgt",
                                     "pairs": np.hstack([targets[:2], refs[:2]]).tolist()})
    assert np.array(exact.matrix) == pytest.approx(truth, abs=1e-6)
    assert exact.rotation_deg == pytest.approx(12.0) and exact.scale == pytest.approx(1.2)
    assert exact.confidence == 0.5 and any("exactly" in w for w in exact.warnings)
    rng = np.random.default_rng(1)
    noisy = refs + rng.normal(0, 0.3, refs.shape)
    noisy[4] += (25.0, -30.0)  # a mis-click
    result = core.register_fiducials({"reference": "ref", "target": "tgt", "model": "similarity",
                                      "pairs": np.hstack([targets, noisy]).tolist()})
    assert result.inliers == (True, True, True, True, False, True)
    assert result.rejected == (4,) and any("4" in w for w in result.warnings)
    assert result.rms_px < 1.0 and len(result.residuals_px) == 6 and result.residuals_px[4] > 20
    assert result.success and result.confidence > 0.5
    affine = core.register_fiducials({"reference": "ref", "target": "tgt", "model": "affine",
                                      "pairs": np.hstack([targets[:3], refs[:3]]).tolist()})
    assert np.array(affine.matrix) == pytest.approx(truth, abs=1e-6)
    assert core.overlay.shape == micrographs["camera"].shape
