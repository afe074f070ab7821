"""The first-order rotation and scale sigmas (uncertainty.rotation_scale_sigma), written once
for the affine and the similarity models, against a Monte Carlo of the same matrices."""

from __future__ import annotations

import numpy as np
import pytest

from servers.RegistrationDS.similarity import rotation_and_scale
from servers.RegistrationDS.uncertainty import from_fit_covariance, point_sigma, rotation_scale_sigma


def _matrix(entries: np.ndarray) -> np.ndarray:
    return np.array([[entries[0], entries[1], entries[2]], [entries[3], entries[4], entries[5]], [0, 0, 1.0]])


def test_rotation_and_scale_sigma_match_a_monte_carlo() -> None:
    rng = np.random.default_rng(3)
    angle, scale = np.radians(25.0), 1.3
    entries = np.array([scale * np.cos(angle), -scale * np.sin(angle), 4.0,
                        scale * np.sin(angle), scale * np.cos(angle), -2.0])
    root = rng.normal(size=(6, 6)) * 1e-3
    covariance = root @ root.T
    rotation_sigma, scale_sigma = rotation_scale_sigma(_matrix(entries), covariance)
    draws = rng.multivariate_normal(entries, covariance, size=20000)
    found = np.array([rotation_and_scale(_matrix(d)) for d in draws])
    assert rotation_sigma == pytest.approx(np.std(found[:, 0]), rel=0.05)
    assert scale_sigma == pytest.approx(np.std(found[:, 1] / scale), rel=0.05)


def test_from_fit_covariance_is_the_point_and_similarity_sigmas() -> None:
    """A patch fit that acts after a known linear map: the pivot's image is where the fit is evaluated."""
    rng = np.random.default_rng(4)
    root = rng.normal(size=(6, 6)) * 1e-3
    covariance = root @ root.T
    fit = _matrix(np.array([0.9, -0.1, 3.0, 0.1, 0.9, 1.0]))
    linear = _matrix(np.array([2.0, 0.0, 5.0, 0.0, 2.0, -7.0]))
    sx, sy, rotation, scale = from_fit_covariance(covariance, linear, (10.0, 20.0), fit)
    assert (sx, sy) == pytest.approx(point_sigma(covariance, (25.0, 33.0)))
    assert (rotation, scale) == pytest.approx(rotation_scale_sigma(fit, covariance))
