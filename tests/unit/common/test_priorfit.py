"""Refinement of a coarse mapping by a few noisy measured points (servers/common/priorfit.py).

The simulations are the fine alignment's situation: an SEM field of ~4100 px at 20 nm/px,
a coarse mapping off by ~30 nm in translation and 3e-4 in its linear part, and 3-8 X-ray
centres measured with 30 nm stage repeatability. Errors are scored against the truth over
the whole field, never against the fit's own residuals.
"""

from __future__ import annotations

import numpy as np
import pytest

from servers.common.errors import BadArgument
from servers.common.pointfit import affine_point_covariance, apply_matrix, fit_points
from servers.common.priorfit import refine_with_prior

PIXEL_MM = 2e-5
FIELD_PX = 4100.0


def true_map(rng: np.random.Generator, shear: float = 0.0) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    matrix = np.eye(3)
    matrix[:2, :2] = PIXEL_MM * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix[:2, :2] = matrix[:2, :2] @ np.array([[1 + shear, shear], [0.0, 1 - shear]])
    matrix[:2, 2] = rng.uniform(-5, 5, 2)
    return matrix


def spread(points: np.ndarray, count: int) -> np.ndarray:
    chosen = [0]
    while len(chosen) < count:
        distance = np.min(np.linalg.norm(points[:, None] - points[chosen][None], axis=2), axis=1)
        chosen.append(int(np.argmax(distance)))
    return points[chosen]


def field_error_nm(matrix: np.ndarray, truth: np.ndarray, field: np.ndarray) -> np.ndarray:
    return np.linalg.norm(apply_matrix(matrix, field) - apply_matrix(truth, field), axis=1) * 1e6


def demo_like_trial(rng: np.random.Generator, count: int, noise_mm: float = 30e-6):
    truth = true_map(rng)
    coarse = truth.copy()
    coarse[:2, :2] = truth[:2, :2] @ (np.eye(2) + rng.normal(0, 3e-4, (2, 2)))
    coarse[:2, 2] += rng.normal(0, 30e-6, 2)
    field = rng.uniform(0, FIELD_PX, (200, 2))
    source = spread(field[:20], count)
    measured = apply_matrix(truth, source) + rng.normal(0, noise_mm, source.shape)
    refined = refine_with_prior(source, measured, coarse, None, noise_mm)
    free = fit_points(source, measured, "affine", reject_outliers=False).matrix
    return (np.median(field_error_nm(coarse, truth, field)), np.median(field_error_nm(refined.matrix, truth, field)),
            np.median(field_error_nm(free, truth, field)), refined)


@pytest.mark.parametrize("count", [3, 4, 8])
def test_with_30_nm_repeatability_the_refinement_beats_the_coarse_map_and_a_free_affine(count: int) -> None:
    rng = np.random.default_rng(count)
    trials = [demo_like_trial(rng, count) for _ in range(60)]
    coarse, refined, free = (np.median([t[i] for t in trials]) for i in range(3))
    # a free affine through 3-4 noisy centres extrapolates their noise (the 80 nm medians)
    assert refined < coarse
    assert refined < free
    # noise-limited: the translation of n centres is known to 30 / sqrt(n) nm per axis
    assert refined < 1.5 * 30 * np.sqrt(2 / count) + 10


def test_few_clustered_points_keep_the_coarse_linear_part() -> None:
    rng = np.random.default_rng(3)
    truth = true_map(rng)
    coarse = truth.copy()
    coarse[:2, 2] += [50e-6, -40e-6]
    source = np.array([[2000.0, 2000.0], [2030.0, 2010.0], [2010.0, 2040.0]])
    measured = apply_matrix(truth, source) + rng.normal(0, 30e-6, source.shape)
    refined = refine_with_prior(source, measured, coarse, None, 30e-6)
    assert refined.model == "translation"
    np.testing.assert_allclose(refined.matrix[:2, :2], coarse[:2, :2])


def test_many_spread_points_with_a_real_shear_choose_an_affine_correction() -> None:
    rng = np.random.default_rng(4)
    truth = true_map(rng, shear=0.01)
    coarse = true_map(np.random.default_rng(4))  # the same map without the shear
    field = rng.uniform(0, FIELD_PX, (200, 2))
    source = spread(field, 10)
    measured = apply_matrix(truth, source) + rng.normal(0, 10e-6, source.shape)
    refined = refine_with_prior(source, measured, coarse, None, 10e-6)
    assert refined.model == "affine"
    assert refined.log_evidence["affine"] > refined.log_evidence["similarity"]
    assert np.median(field_error_nm(refined.matrix, truth, field)) < 0.2 * np.median(
        field_error_nm(coarse, truth, field))


def test_never_worse_than_the_prior_when_the_prior_is_right_about_its_error() -> None:
    """The truth drawn from the coarse map's own stated uncertainty: the refined map's mean
    squared error is below the coarse one's at every point of the field, far from the
    particles included."""
    rng = np.random.default_rng(5)
    prior_cov = np.diag([(3e-4 * PIXEL_MM) ** 2] * 2 + [(40e-6) ** 2] + [(3e-4 * PIXEL_MM) ** 2] * 2
                        + [(40e-6) ** 2])
    field = np.array([[x, y] for x in (-4000.0, 0.0, 2000.0, 8000.0) for y in (-4000.0, 2000.0, 8000.0)])
    coarse_sq, refined_sq = np.zeros(len(field)), np.zeros(len(field))
    for _ in range(300):
        coarse = true_map(rng)
        truth = coarse.copy()
        truth[:2] += rng.multivariate_normal(np.zeros(6), prior_cov).reshape(2, 3)
        source = rng.uniform(1500, 2600, (3, 2))  # clustered: extrapolation far beyond them
        measured = apply_matrix(truth, source) + rng.normal(0, 30e-6, source.shape)
        refined = refine_with_prior(source, measured, coarse, prior_cov, 30e-6, linear_sigma=1e-9,
                                    translation_sigma=1e-9)
        coarse_sq += field_error_nm(coarse, truth, field) ** 2
        refined_sq += field_error_nm(refined.matrix, truth, field) ** 2
    assert (refined_sq < coarse_sq).all()


def test_reported_uncertainty_covers_the_true_error() -> None:
    inside: list[bool] = []
    rng = np.random.default_rng(7)
    for _ in range(300):
        truth = true_map(rng)
        coarse = truth.copy()
        coarse[:2, 2] += rng.normal(0, 100e-6, 2)
        field = rng.uniform(0, FIELD_PX, (50, 2))
        source = spread(field[:20], 4)
        measured = apply_matrix(truth, source) + rng.normal(0, 30e-6, source.shape)
        refined = refine_with_prior(source, measured, coarse, None, 30e-6, model="translation")
        sigma = np.sqrt(np.trace(affine_point_covariance(field, refined.covariance), axis1=1, axis2=2))
        error = field_error_nm(refined.matrix, truth, field) * 1e-6
        inside.extend(error <= 2 * sigma)
    assert 0.93 < np.mean(inside) < 0.995


def test_residuals_larger_than_the_noise_raise_sigma_and_say_so() -> None:
    rng = np.random.default_rng(8)
    truth = true_map(rng)
    source = spread(rng.uniform(0, FIELD_PX, (50, 2)), 6)
    measured = apply_matrix(truth, source) + rng.normal(0, 200e-6, source.shape)
    refined = refine_with_prior(source, measured, truth, None, 10e-6)
    assert not refined.consistent
    assert refined.sigma > 5 * refined.sigma_given
    assert any("exceed" in warning for warning in refined.warnings)


def test_one_point_gives_a_translation() -> None:
    coarse = true_map(np.random.default_rng(9))
    source = np.array([[100.0, 200.0]])
    measured = apply_matrix(coarse, source) + [1e-4, -2e-4]
    refined = refine_with_prior(source, measured, coarse, None, 1e-5)
    assert refined.model == "translation"
    np.testing.assert_allclose(refined.matrix[:2, 2] - coarse[:2, 2], [1e-4, -2e-4], rtol=1e-6)


@pytest.mark.parametrize("change", [{"noise_sigma": 0.0}, {"noise_sigma": float("nan")}, {"linear_sigma": 0.0},
                                    {"model": "projective"}])
def test_bad_arguments_are_refused(change: dict) -> None:
    kw = {"noise_sigma": 1e-5, "model": "auto", "linear_sigma": 0.01, **change}
    coarse = np.eye(3)
    with pytest.raises(BadArgument):
        refine_with_prior(np.zeros((2, 2)) + [[0, 0], [1, 1]], np.zeros((2, 2)), coarse, None, **kw)


def test_an_affine_is_not_offered_for_two_points() -> None:
    with pytest.raises(BadArgument):
        refine_with_prior(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 0.0], [1.0, 1.0]]), np.eye(3), None,
                          1e-3, model="affine")
