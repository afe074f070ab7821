"""How well a registration is known, and whether two independent estimates agree.

Translation. The shift maximises ``r(d) = sum_k h_k Re(S_k exp(2 pi i k.d))`` over the
weighted, whitened cross-power spectrum ``S`` (:mod:`translation`). Its sandwich
(M-estimator) covariance is ``H^-1 B H^-1``: ``H`` the curvature of ``r`` at the maximum,
``B`` the sum of the squared per-frequency gradient terms. Both come from the spectrum
itself: frequencies whose phases disagree with the found shift (noise, content that is in
one image only, window effects) widen it, coherent ones narrow it. Frequencies are
treated as independent; the window correlates neighbouring ones and real images have
errors that are not noise, which one factor, :data:`SHIFT_SIGMA_FACTOR`, calibrated on the
*tuned* sources of the accuracy corpus (``benchmarks/corpus``), makes good.

Two independent estimates: the same maximisation restricted to the low and to the high
half of the frequencies (split where each half carries half of the curvature, so both
are equally precise) sees disjoint data. A true match gives the same shift in both within
their errors; a match driven by something in one band only (a periodic texture, a JPEG
grid, an edge of the window) does not. :func:`band_agreement` is that test.

Similarity. Rotation, scale and the target centre's position come from the patch fit's
covariance (:mod:`servers.common.pointfit`, residual-based with its coverage factor).

Everything is also expressed as the 6x6 covariance over the matrix entries
(a11, a12, a13, a21, a22, a23) that CoordMapperDS's ``SetTransform`` takes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import scipy.fft

from servers.common.parallel import pair
from servers.common.pointfit import affine_point_covariance

SUMMED_MAX_SIDE = 256
"""The sums run over at most this many rows and columns of the spectrum (every m-th one,
rescaled): a 2048 px pair costs 1/64 of a pass over its spectrum (33 000 frequencies are
plenty for a 2x2 covariance; the band estimates get correspondingly larger, self-consistent
errors)."""

SHIFT_SIGMA_FACTOR = 2.0
"""Multiplies the sandwich sigma (see module doc). Calibrated on the tuned sources of the
corpus: the 95th percentile of |error| / sandwich sigma there was 4.0 (held-out: 3.3)."""

SHIFT_SIGMA_FLOOR_PX = 0.015
"""Added in quadrature: errors the spectrum cannot show. On the tuned sources, images with
plenty of structure had sandwich sigmas of 0.004 px and errors of 0.01-0.03 px per axis
(the target's resampling and the window's edge treat the two images differently)."""

PATCH_NOISE_FLOOR_PX = 0.03
"""Smallest per-patch position noise assumed in the patch fits: patches are located on a
1/20-1/50 px grid (0.015 px RMS) and resampled once more than the reference; a fit whose
residuals happen to be smaller would otherwise claim a near-zero uncertainty."""

AGREEMENT_CHI2 = 18.4
"""Squared Mahalanobis distance between the two band estimates above which they disagree
(chi-square, 2 dof, p = 1e-4: a true match is refused for this reason 1 time in 10 000)."""

AGREEMENT_FLOOR_PX = 0.05
"""Band estimates this close always agree (systematic differences of the bands' own)."""


@dataclass(frozen=True)
class BandEstimate:
    shift: tuple[float, float]
    covariance: np.ndarray


@dataclass(frozen=True)
class _Frequencies:
    """The subsampled rfft2 frequencies of one shape and the products the sums take of them.

    The same for every spectrum of that shape, so built once per shape (:func:`_frequencies`)
    instead of in every Newton step: per 2048 px registration that saves ~5 ms, most of it an
    argsort of the radii, and every number stays what it was."""

    step: int
    kx: np.ndarray
    ky: np.ndarray
    kx_line: np.ndarray
    """The distinct values of ``kx`` (one row) and of ``ky`` (one column), for :func:`_phase`."""
    ky_line: np.ndarray
    weights: np.ndarray
    a: np.ndarray
    """``2 pi kx``; ``b`` likewise for ky, ``aa`` = a*a, ``ab`` = a*b, ``bb`` = b*b."""
    b: np.ndarray
    aa: np.ndarray
    ab: np.ndarray
    bb: np.ndarray
    radius: np.ndarray
    radius2: np.ndarray
    sorted_radius: np.ndarray
    """``radius`` flattened in the order of :attr:`order` (ascending)."""
    order: np.ndarray


@functools.lru_cache(maxsize=8)
def _frequencies(shape: tuple[int, int]) -> _Frequencies:
    height, width = shape
    step = max(1, int(math.ceil(max(height, width) / SUMMED_MAX_SIDE)))
    rows = np.arange(0, height, step)
    cols = np.arange(0, width // 2 + 1, step)
    sub_shape = (rows.size, cols.size)
    ky_line = scipy.fft.fftfreq(height)[rows]
    kx_line = cols / width
    ky = np.broadcast_to(ky_line[:, None], sub_shape)
    kx = np.broadcast_to(kx_line[None, :], sub_shape)
    half = np.full(width // 2 + 1, 2.0)
    half[0] = 1.0
    if width % 2 == 0:
        half[-1] = 1.0
    weights = np.broadcast_to(half[cols][None, :], sub_shape)
    a, b = 2 * np.pi * kx, 2 * np.pi * ky
    radius = np.hypot(kx, ky)
    order = np.argsort(radius, axis=None)
    arrays = (a, b, a * a, a * b, b * b, radius, radius ** 2, radius.ravel()[order], order)
    for array in (*arrays, kx_line, ky_line):
        array.setflags(write=False)
    return _Frequencies(step, kx, ky, kx_line, ky_line, weights, *arrays)


def _phase(grid: _Frequencies, shift: tuple[float, float]) -> np.ndarray:
    """``exp(2 pi i (kx dx + ky dy))`` on the grid, as the outer product of its row and column
    factors: 385 complex exponentials instead of 33 000 (numpy's complex ``exp`` is not
    vectorised; 0.6 ms of each 0.85 ms :func:`_sandwich` went there). The same numbers to
    within a few units in the last place."""
    return np.exp(2j * np.pi * grid.ky_line * shift[1])[:, None] * np.exp(2j * np.pi * grid.kx_line * shift[0])[None, :]


def _subsampled(spectrum: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, _Frequencies]:
    """Every step-th row and column of the half spectrum (complex128), times the half-spectrum
    weights, and its frequencies."""
    grid = _frequencies((int(shape[0]), int(shape[1])))
    sub = spectrum[::grid.step, ::grid.step].astype(np.complex128)
    return sub * grid.weights, grid


def _sandwich(sub: np.ndarray, grid: _Frequencies, shift: tuple[float, float],
              mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient, curvature (of -r) and sandwich covariance at ``shift`` over ``mask``."""
    term = sub * _phase(grid, shift)
    if mask is not None:
        term = np.where(mask, term, 0.0)
    real, imag = term.real, term.imag
    ga, gb = grid.a * imag, grid.b * imag
    gradient = -np.array([np.sum(ga), np.sum(gb)])
    cross = np.sum(grid.ab * real)
    curvature = np.array([[np.sum(grid.aa * real), cross], [cross, np.sum(grid.bb * real)]])
    mixed = np.sum(ga * gb)
    meat = np.array([[np.sum(ga * ga), mixed], [mixed, np.sum(gb * gb)]])
    if np.linalg.det(curvature) <= 0 or curvature[0, 0] <= 0:
        return gradient, curvature, np.full((2, 2), np.inf)
    inverse = np.linalg.inv(curvature)
    # Sums over every step-th row and column: the full sums are step^2 times larger.
    covariance = inverse @ meat @ inverse / (grid.step * grid.step)
    return gradient, curvature, covariance


def shift_covariance(spectrum: np.ndarray, shape: tuple[int, int], shift: tuple[float, float],
                     polarity: int = 1) -> np.ndarray:
    """Calibrated 2x2 covariance (px^2, order x, y) of a correlation-peak shift (see module doc)."""
    sub, grid = _subsampled(spectrum, shape)
    _, _, covariance = _sandwich(sub * polarity, grid, shift, None)
    return _calibrated(covariance)


def _calibrated(covariance: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(covariance)):
        return np.full((2, 2), np.inf)
    return covariance * SHIFT_SIGMA_FACTOR ** 2 + np.eye(2) * SHIFT_SIGMA_FLOOR_PX ** 2


def band_estimates(spectrum: np.ndarray, shape: tuple[int, int], shift: tuple[float, float],
                   polarity: int = 1, iterations: int = 4) -> tuple[BandEstimate, BandEstimate]:
    """The shift re-estimated (Newton steps from ``shift``) on the low and on the high half of
    the frequencies, each with its own calibrated covariance."""
    sub, grid = _subsampled(spectrum, shape)
    sub = sub * polarity
    term = (sub * _phase(grid, shift)).real
    information = np.maximum(term, 0.0) * grid.radius2
    cumulative = np.cumsum(information.ravel()[grid.order])
    if cumulative[-1] <= 0:
        infinite = BandEstimate(shift, np.full((2, 2), np.inf))
        return infinite, infinite
    split = grid.sorted_radius[int(np.searchsorted(cumulative, 0.5 * cumulative[-1]))]

    def estimate_on(mask: np.ndarray) -> BandEstimate:
        estimate = np.array(shift, dtype=float)
        covariance = np.full((2, 2), np.inf)
        for _ in range(iterations):
            gradient, curvature, covariance = _sandwich(sub, grid, (estimate[0], estimate[1]), mask)
            if not np.all(np.isfinite(covariance)):
                break
            move = np.linalg.solve(curvature, gradient)  # gradient of r; curvature = -Hessian
            move = np.clip(move, -0.5, 0.5)
            estimate = estimate + move
            if np.max(np.abs(move)) < 1e-4:
                break
        return BandEstimate((float(estimate[0]), float(estimate[1])), _calibrated(covariance))

    # The two bands share nothing but the (read-only) inputs: one core each.
    low, high = grid.radius <= split, grid.radius > split
    return pair(lambda: estimate_on(low), lambda: estimate_on(high))


def band_agreement(low: BandEstimate, high: BandEstimate) -> tuple[bool, float]:
    """Whether the two band estimates agree, and their squared Mahalanobis distance."""
    difference = np.subtract(low.shift, high.shift)
    if np.max(np.abs(difference)) <= AGREEMENT_FLOOR_PX:
        return True, 0.0
    combined = low.covariance + high.covariance
    if not np.all(np.isfinite(combined)):
        return True, float("nan")  # one band carries no information: nothing to compare
    distance = float(difference @ np.linalg.solve(combined, difference))
    return distance <= AGREEMENT_CHI2, distance


def similarity_parameters(matrix: np.ndarray, pivot: tuple[float, float]) -> np.ndarray:
    """(x, y of the pivot's image, rotation rad, scale) of a similarity-like matrix."""
    a = 0.5 * (matrix[0, 0] + matrix[1, 1])
    b = 0.5 * (matrix[1, 0] - matrix[0, 1])
    mapped = matrix @ np.array([pivot[0], pivot[1], 1.0])
    return np.array([mapped[0], mapped[1], math.atan2(b, a), math.hypot(a, b)])


def matrix_from_parameters(parameters: np.ndarray, pivot: tuple[float, float]) -> np.ndarray:
    x, y, angle, scale = parameters
    a, b = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[a, -b, x - a * pivot[0] + b * pivot[1]],
                     [b, a, y - b * pivot[0] - a * pivot[1]],
                     [0.0, 0.0, 1.0]])


def entry_covariance(matrix: np.ndarray, pivot: tuple[float, float], parameter_sigma: np.ndarray) -> np.ndarray:
    """6x6 covariance of (a11, a12, a13, a21, a22, a23) from independent 1-sigmas of
    (pivot x, pivot y, rotation rad, scale), by the Jacobian at ``matrix``."""
    parameters = similarity_parameters(matrix, pivot)
    jacobian = np.zeros((6, 4))
    steps = (1e-3, 1e-3, 1e-6, 1e-6)
    for column, h in enumerate(steps):
        plus, minus = parameters.copy(), parameters.copy()
        plus[column] += h
        minus[column] -= h
        jacobian[:, column] = ((matrix_from_parameters(plus, pivot) - matrix_from_parameters(minus, pivot))[:2]
                               .ravel() / (2 * h))
    return jacobian @ np.diag(np.square(parameter_sigma)) @ jacobian.T


def rotation_scale_sigma(matrix: np.ndarray, covariance6: np.ndarray) -> tuple[float, float]:
    """1-sigma of the rotation (deg) and relative scale of the closest similarity of ``matrix``
    (:func:`~servers.RegistrationDS.similarity.rotation_and_scale`), to first order, from the
    6x6 covariance of its entries (a11, a12, a13, a21, a22, a23).

    The similarity part is a = (a11 + a22)/2, b = (a21 - a12)/2; rotation = atan2(b, a),
    scale = hypot(a, b), so d(rotation) = (a db - b da)/s^2 and d(scale)/scale = (a da + b db)/s^2."""
    a = 0.5 * (matrix[0, 0] + matrix[1, 1])
    b = 0.5 * (matrix[1, 0] - matrix[0, 1])
    da = np.array([0.5, 0.0, 0.0, 0.0, 0.5, 0.0])
    db = np.array([0.0, -0.5, 0.0, 0.5, 0.0, 0.0])
    norm = a * a + b * b
    d_rotation = (a * db - b * da) / norm
    d_scale = (a * da + b * db) / norm
    return (math.degrees(math.sqrt(max(float(d_rotation @ covariance6 @ d_rotation), 0.0))),
            math.sqrt(max(float(d_scale @ covariance6 @ d_scale), 0.0)))


def point_sigma(covariance6: np.ndarray, point: tuple[float, float]) -> tuple[float, float]:
    """Per-axis 1-sigma of the image of ``point`` under a matrix with this entry covariance."""
    cov = affine_point_covariance(np.array([point], float), covariance6)[0]
    return float(math.sqrt(max(cov[0, 0], 0.0))), float(math.sqrt(max(cov[1, 1], 0.0)))


def from_fit_covariance(covariance6: np.ndarray, linear: np.ndarray, pivot: tuple[float, float],
                        rotation_scale_of: np.ndarray) -> tuple[float, float, float, float]:
    """1-sigma (x, y of ``pivot``'s image, rotation deg, relative scale) of ``fit @ linear``,
    where ``fit`` (entries' covariance ``covariance6``) acts after ``linear``.

    ``rotation_scale_of`` is the fit matrix: its a and b entries carry the rotation and scale."""
    point = linear @ np.array([pivot[0], pivot[1], 1.0])
    sx, sy = point_sigma(covariance6, (float(point[0]), float(point[1])))
    rotation, scale = rotation_scale_sigma(rotation_scale_of, covariance6)
    return sx, sy, rotation, scale
