"""servers.common.pointfit over generated transforms and point sets (hypothesis): exact pairs give
back the transform that made them, for every model; the fit of the inverse pairs is the inverse;
collinear points never pass for an affine fit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servers.common.errors import BadArgument
from servers.common.pointfit import apply_matrix, fit_points

SETTINGS = settings(max_examples=40, deadline=None)

angles = st.floats(-np.pi, np.pi)
log_scales = st.floats(-3.0, 3.0)  # 1e-3 .. 1e3: px -> mm up to nm -> um
shifts = st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3))
seeds = st.integers(0, 2 ** 32 - 1)


def _points(seed: int, n: int) -> np.ndarray:
    """``n`` points spread over a 2000 px field (random, so never collinear in practice)."""
    return np.random.default_rng(seed).uniform(0.0, 2000.0, (n, 2))


def _matrix(linear: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    matrix = np.eye(3)
    matrix[:2, :2], matrix[:2, 2] = linear, shift
    return matrix


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _assert_same_map(fitted: np.ndarray, truth: np.ndarray, points: np.ndarray) -> None:
    """Same destination for every point, to 1e-9 of the destination's extent."""
    expected = apply_matrix(truth, points)
    scale = max(float(np.ptp(expected)), 1e-12)
    assert np.max(np.abs(apply_matrix(fitted, points) - expected)) <= 1e-9 * scale


@SETTINGS
@given(angles, log_scales, st.floats(-0.5, 0.5), st.floats(-1.0, 1.0), shifts, seeds, st.integers(3, 12))
def test_exact_pairs_give_back_the_affine(angle, log_scale, shear, log_aspect, shift, seed, n) -> None:
    linear = 10.0 ** log_scale * _rotation(angle) @ np.array([[1.0, shear], [0.0, 10.0 ** log_aspect]])
    truth = _matrix(linear, shift)
    src = _points(seed, n)
    fit = fit_points(src, apply_matrix(truth, src), "affine")
    _assert_same_map(fit.matrix, truth, src)
    assert fit.rejected == ()


@SETTINGS
@given(angles, log_scales, shifts, st.booleans(), seeds, st.integers(2, 10))
def test_exact_pairs_give_back_the_similarity(angle, log_scale, shift, mirrored, seed, n) -> None:
    linear = 10.0 ** log_scale * _rotation(angle) @ np.diag([1.0, -1.0 if mirrored else 1.0])
    truth = _matrix(linear, shift)
    src = _points(seed, n)
    fit = fit_points(src, apply_matrix(truth, src), "similarity", reflection=mirrored)
    _assert_same_map(fit.matrix, truth, src)
    assert fit.reflection is mirrored


@SETTINGS
@given(shifts, seeds, st.integers(1, 10))
def test_exact_pairs_give_back_the_translation(shift, seed, n) -> None:
    truth = _matrix(np.eye(2), shift)
    src = _points(seed, n)
    fit = fit_points(src, apply_matrix(truth, src), "translation")
    assert np.allclose(fit.matrix, truth, rtol=0, atol=1e-9 * max(1.0, float(np.abs(shift).max())))


@SETTINGS
@given(angles, log_scales, st.floats(-0.5, 0.5), shifts, seeds, st.integers(3, 10))
def test_the_fit_of_the_inverse_pairs_is_the_inverse(angle, log_scale, shear, shift, seed, n) -> None:
    truth = _matrix(10.0 ** log_scale * _rotation(angle) @ np.array([[1.0, shear], [0.0, 1.0]]), shift)
    src = _points(seed, n)
    dst = apply_matrix(truth, src)
    forward, backward = fit_points(src, dst, "affine"), fit_points(dst, src, "affine")
    _assert_same_map(backward.matrix @ forward.matrix, np.eye(3), src)


@SETTINGS
@given(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), angles, st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=10,
                                                                     unique=True))
def test_collinear_points_are_refused_for_an_affine(x0, y0, angle, offsets) -> None:
    direction = np.array([np.cos(angle), np.sin(angle)])
    src = np.array([[x0, y0] + t * direction for t in offsets])
    with pytest.raises(BadArgument):
        fit_points(src, src * 2.0, "affine")
