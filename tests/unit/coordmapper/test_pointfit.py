"""servers.common.pointfit: exact recovery, honest uncertainty, outlier naming, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from servers.common.errors import BadArgument
from servers.common.pointfit import (
    apply_matrix,
    coverage_factor,
    fit_points,
    min_pairs,
    pairs_to_points,
)


def _random_affine(rng: np.random.Generator) -> np.ndarray:
    matrix = np.eye(3)
    matrix[:2, :2] = rng.normal(size=(2, 2)) * 1e-3  # px -> mm scale
    matrix[:2, 2] = rng.uniform(-50, 50, 2)
    return matrix


def _similarity(angle: float, scale: float, shift: tuple[float, float], mirror: bool = False) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    linear = np.array([[c, -s], [s, c]])
    if mirror:
        linear = linear @ np.diag([1.0, -1.0])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = shift
    return matrix


def test_exact_pairs_recover_every_model() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 2000, (6, 2))
    cases = [
        ("affine", _random_affine(rng), False),
        ("similarity", _similarity(0.7, 0.0012, (3.0, -4.0)), False),
        ("similarity", _similarity(-1.2, 0.5, (10.0, 2.0), mirror=True), True),
        ("translation", _similarity(0.0, 1.0, (12.5, -7.25)), False),
    ]
    for model, truth, mirror in cases:
        fit = fit_points(src, apply_matrix(truth, src), model, reflection=mirror)
        np.testing.assert_allclose(fit.matrix, truth, rtol=1e-9, atol=1e-12)
        assert fit.rejected == ()
        assert fit.rms < 1e-9


def test_reflection_auto_picks_the_mirrored_similarity() -> None:
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 1000, (5, 2))
    truth = _similarity(0.3, 0.002, (1.0, 1.0), mirror=True)
    fit = fit_points(src, apply_matrix(truth, src), "similarity", reflection=None)
    assert fit.reflection is True
    np.testing.assert_allclose(fit.matrix, truth, atol=1e-12)


def test_minimum_pairs_fit_exactly_with_unknown_uncertainty() -> None:
    src = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    dst = src * 2 + 1
    fit = fit_points(src, dst, "affine")
    assert fit.sigma_source == "unknown"
    assert np.isnan(fit.point_uncertainty([[50.0, 50.0]])).all()
    assert any("uncertainty is unknown" in w for w in fit.warnings)
    known = fit_points(src, dst, "affine", noise_sigma=0.1)
    assert np.isfinite(known.point_uncertainty([[50.0, 50.0]])).all()


def test_linear_fit_without_translation() -> None:
    shifts = np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, 5.0]])
    linear = np.array([[0.0, -0.001], [-0.001, 0.0]])  # rotated and flipped
    fit = fit_points(shifts, shifts @ linear.T, "affine", with_translation=False)
    np.testing.assert_allclose(fit.matrix[:2, :2], linear, atol=1e-15)
    assert fit.matrix[0, 2] == 0.0 and fit.matrix[1, 2] == 0.0
    assert min_pairs("affine", with_translation=False) == 2


def test_two_sigma_coverage_over_500_random_trials() -> None:
    """The true error at new points lies within twice the reported 1-sigma >= 95 % of the time."""
    rng = np.random.default_rng(12345)
    inside = []
    for trial in range(500):
        model = "affine" if trial % 2 else "similarity"
        truth = _random_affine(rng) if model == "affine" else _similarity(
            rng.uniform(0, 6.3), rng.uniform(1e-4, 1e-2), tuple(rng.uniform(-50, 50, 2)))
        n = int(rng.integers(5, 16))
        noise = 10 ** rng.uniform(-4, -2)
        src = rng.uniform(0, 2048, (n, 2))
        dst = apply_matrix(truth, src) + rng.normal(0, noise, (n, 2))
        fit = fit_points(src, dst, model)
        queries = rng.uniform(-200, 2248, (20, 2))
        error = np.linalg.norm(fit.transform(queries) - apply_matrix(truth, queries), axis=1)
        inside.extend(error <= 2 * fit.point_uncertainty(queries))
    coverage = float(np.mean(inside))
    print(f"observed 2-sigma coverage: {coverage:.4f} over {len(inside)} points")
    assert 0.95 <= coverage <= 0.995  # honest: neither too small nor a uselessly huge sigma


def test_outliers_are_rejected_and_named() -> None:
    rng = np.random.default_rng(7)
    found_exactly = 0
    trials = 100
    for _ in range(trials):
        truth = _random_affine(rng)
        src = rng.uniform(0, 2000, (12, 2))
        dst = apply_matrix(truth, src) + rng.normal(0, 1e-3, (12, 2))
        bad = sorted(rng.choice(12, 2, replace=False).tolist())
        dst[bad] += 0.05 * rng.choice([-1, 1], (2, 2))  # 50 sigma off
        fit = fit_points(src, dst, "affine")
        found_exactly += list(fit.rejected) == bad
        assert set(bad) <= set(fit.rejected)
        assert not fit.inliers[bad].any()
        assert fit.residuals[bad].min() > 0.03  # residuals of rejected pairs are reported too
    assert found_exactly >= 95


def test_one_outlier_among_four_similarity_pairs() -> None:
    src = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, 1000.0], [1000.0, 1000.0]])
    truth = _similarity(0.2, 0.001, (5.0, 5.0))
    dst = apply_matrix(truth, src) + np.array([[1e-4, 0], [0, -1e-4], [-1e-4, 0], [0.2, 0.1]])
    fit = fit_points(src, dst, "similarity")
    assert fit.rejected == (3,)


def test_clean_sets_rarely_lose_a_pair() -> None:
    rng = np.random.default_rng(99)
    wrongly_rejected = 0
    for _ in range(200):
        truth = _random_affine(rng)
        src = rng.uniform(0, 2000, (10, 2))
        dst = apply_matrix(truth, src) + rng.normal(0, 1e-3, (10, 2))
        wrongly_rejected += bool(fit_points(src, dst, "affine").rejected)
    assert wrongly_rejected <= 10  # alpha = 1 % family-wise per test step; allow for 2 steps + chance


def test_reject_outliers_false_keeps_all_pairs() -> None:
    src = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, 1000.0], [1000.0, 1000.0], [500.0, 500.0]])
    dst = src * 0.001
    dst[4] += 1.0
    assert fit_points(src, dst, "similarity", reject_outliers=False).rejected == ()


@pytest.mark.parametrize(
    ("src", "dst", "model", "message"),
    [
        ([[0, 0], [1, 1]], [[0, 0], [1, 1]], "affine", "at least 3"),
        ([[0, 0]], [[0, 0]], "similarity", "at least 2"),
        ([[0, 0], [1, 1], [2, 2]], [[0, 0], [1, 1], [2, 2]], "affine", "collinear"),
        ([[1, 1], [1, 1]], [[0, 0], [1, 1]], "similarity", "coincident"),
        ([[0, 0], [1, np.nan], [2, 0]], [[0, 0], [1, 1], [2, 2]], "affine", "NaN"),
        ([[0, 0], [1, 0], [0, 1]], [[0, 0], [1, 1]], "affine", "destination"),
        ([[0, 0], [1, 0], [0, 1]], [[0, 0], [1, 1], [2, 2]], "projective", "unknown model"),
        ([], [], "affine", "empty"),
    ],
)
def test_bad_input_is_refused_with_a_reason(src: list, dst: list, model: str, message: str) -> None:
    with pytest.raises(BadArgument, match=message):
        fit_points(src, dst, model)


def test_reflection_auto_needs_a_spare_pair() -> None:
    with pytest.raises(BadArgument, match="mirrored"):
        fit_points([[0, 0], [1, 0]], [[0, 0], [0, 1]], "similarity", reflection=None)


def test_pairs_to_points_and_shape_errors() -> None:
    src, dst = pairs_to_points([[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(src, [[1, 2], [5, 6]])
    np.testing.assert_array_equal(dst, [[3, 4], [7, 8]])
    with pytest.raises(BadArgument, match=r"\[x, y, X, Y\]"):
        pairs_to_points([[1, 2, 3]])


def test_coverage_factor_tends_to_one() -> None:
    assert coverage_factor(2) > 2.0
    assert 1.0 < coverage_factor(1000) < 1.01
    assert np.isnan(coverage_factor(0))


def test_covariance_matches_monte_carlo_spread() -> None:
    """The parameter covariance (known noise) equals the scatter of repeated fits."""
    rng = np.random.default_rng(3)
    truth = _random_affine(rng)
    src = rng.uniform(0, 1000, (8, 2))
    noise = 1e-3
    entries = []
    for _ in range(2000):
        dst = apply_matrix(truth, src) + rng.normal(0, noise, (8, 2))
        entries.append(fit_points(src, dst, "affine", reject_outliers=False).matrix[:2].ravel())
    predicted = fit_points(src, apply_matrix(truth, src), "affine", noise_sigma=noise).covariance
    observed = np.cov(np.array(entries).T)
    np.testing.assert_allclose(np.sqrt(np.diag(observed)), np.sqrt(np.diag(predicted)), rtol=0.08)
