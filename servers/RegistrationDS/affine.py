"""Affine refinement of a similarity registration, judged against the affine model.

Why: two SEM images (or an SEM image and a camera frame) each carry their instrument's own
scan errors, a magnification error of 1-2 % per axis and a shear of a few tenths of a
degree, so the true mapping between them is affine. A similarity leaves that non-conformal
part as residuals (up to ~1 µm at the corners of an 82 µm tile) and its agreement gate,
rightly, refuses it. The affine model starts from the similarity search (which finds the
rotation, scale and place), then:

1. the reference is resampled into target pixels through the current estimate and a grid
   of target patches is matched there by sub-pixel phase correlation (two rounds, the
   second at the first round's affine);
2. an affine is fitted to the patch positions by robust least squares
   (:func:`servers.common.pointfit.fit_points`, outliers rejected);
3. a patch *agrees* when the affine puts it within :data:`AGREEMENT_PX` of where it was
   measured; :func:`agreement_problem` is the gate: most of the parts must agree (the
   contained similarity's rule);
4. the affine's departure from a similarity (anisotropic scale, shear) must be plausible
   for the instruments (``max_anisotropy``, ``max_shear_deg``): six free parameters fitted
   to unrelated images may otherwise bend to chance patch peaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from math import comb

import numpy as np

from servers.common.errors import BadArgument
from servers.common.pointfit import fit_points
from servers.RegistrationDS.parts import measure_parts, part_grid
from servers.RegistrationDS.uncertainty import PATCH_NOISE_FLOOR_PX

PATCH_GRID = 4
"""Patches per side: 16 positions over-determine the 6 affine parameters well, and keep the
patches large enough (a third of the target's side) to match on sparse SEM fields."""
PATCH_MIN_SIDE = 24
AGREEMENT_PX = 0.5
"""A patch agrees with the affine when the affine puts it within this of where it was
measured (target px at the common pixel size): the same bar as the contained similarity's."""
ROUNDS = 2
AFFINE_PARAMETERS = 6
MIN_AGREEMENT = 0.6
"""Fraction of all parts that must agree with the affine: the contained similarity's rule
(markers repeat from sample to sample, so a match of the marker parts alone is no evidence of
the right sample). Counting only the parts that show structure would let an 82 µm tile of
mostly empty membrane pass, but also another sample's SEM field in a camera frame (the study
benchmarks/study_contained_agreement: 8 of 8 such negatives had 8-11 of their 9-11 matching
parts agree), so it is not done."""

@dataclass
class AffineEstimate:
    """Affine target px -> reference px (of the arrays given to :func:`refine_affine`)."""

    matrix: np.ndarray
    agreeing: int = 0
    total: int = 0
    probability: float = 1.0
    """Chance that unrelated images make this many patches agree (binomial tail, see
    :func:`agreement_probability`)."""
    covariance: np.ndarray | None = None
    """6x6 covariance of the entries of ``matrix`` (a11, a12, a13, a21, a22, a23)."""
    anisotropy: float = 0.0
    """Ratio of the singular values of the affine relative to the starting similarity, minus 1."""
    shear_deg: float = 0.0
    """90 deg minus the angle between the images of the target's x and y axes."""
    residual_rms_px: float = math.nan
    matched: int = 0
    """Parts with a distinct correlation peak (the others show no structure to match)."""
    warnings: list[str] = field(default_factory=list)


def agreement_problem(estimate: AffineEstimate) -> str | None:
    """Why the parts do not vouch for the affine (None when they do)."""
    if estimate.agreeing < MIN_AGREEMENT * max(estimate.total, 1):
        return (f"only {estimate.agreeing} of {estimate.total} parts of the target agree with the fitted affine "
                f"({estimate.matched} show structure that matches)")
    return None


def agreement_probability(agreeing: int, total: int, patch: int) -> float:
    """Binomial tail: chance that ``agreeing`` of ``total`` patches of unrelated images land
    within :data:`AGREEMENT_PX` of the fitted positions. A chance peak is uniform over the
    searched disc (radius patch/4); the per-patch probability is that disc fraction times the
    6 parameters the affine adapts to the patches themselves."""
    q = min(1.0, AFFINE_PARAMETERS * (AGREEMENT_PX / (patch / 4.0)) ** 2)
    return float(min(1.0, sum(comb(total, k) * q ** k * (1 - q) ** (total - k) for k in range(agreeing, total + 1))))


def departure(linear: np.ndarray) -> tuple[float, float]:
    """(anisotropy, shear deg) of a 2x2 linear map: singular value ratio - 1, and 90 deg minus
    the angle between the images of the x and y axes."""
    singular = np.linalg.svd(linear, compute_uv=False)
    anisotropy = float(singular[0] / singular[1] - 1.0) if singular[1] > 0 else math.inf
    c1, c2 = linear[:, 0], linear[:, 1]
    cosine = float(np.dot(c1, c2) / (np.linalg.norm(c1) * np.linalg.norm(c2)))
    shear = 90.0 - math.degrees(math.acos(max(-1.0, min(1.0, cosine))))
    return anisotropy, shear


def refine_affine(reference: np.ndarray, target: np.ndarray, matrix: np.ndarray) -> AffineEstimate:
    """Affine from patch positions, starting at ``matrix`` (target px -> reference px, float32
    representations of a common pixel size); see the module doc."""
    layout = part_grid(target.shape, PATCH_GRID, PATCH_MIN_SIDE)
    estimate = AffineEstimate(np.asarray(matrix, float).copy())
    if layout is None:
        estimate.warnings.append("the target is too small for an affine fit of its parts")
        return estimate
    patch, ys, xs = layout
    total = len(ys) * len(xs)
    start_linear = estimate.matrix[:2, :2].copy()
    current = estimate.matrix
    for _ in range(ROUNDS):
        centres, moved = measure_parts(reference, target, current, patch, ys, xs)
        if len(centres) < 4:
            estimate.warnings.append(f"only {len(centres)} of {total} parts of the target matched: "
                                     "too few for an affine fit")
            estimate.agreeing, estimate.total, estimate.matched = 0, total, len(centres)
            return estimate
        try:
            fit = fit_points(np.array(centres), np.array(moved), "affine")
            if not fit.sigma >= PATCH_NOISE_FLOOR_PX:
                fit = fit_points(np.array(centres), np.array(moved), "affine", noise_sigma=PATCH_NOISE_FLOOR_PX)
        except BadArgument as exc:
            estimate.warnings.append(f"the affine fit of the parts failed ({exc})")
            estimate.agreeing, estimate.total, estimate.matched = 0, total, len(centres)
            return estimate
        previous, current = current, current @ fit.matrix
        residuals = np.linalg.norm(fit.transform(np.array(centres)) - np.array(moved), axis=1)
        agreeing = int(np.count_nonzero(residuals <= AGREEMENT_PX))
        estimate.agreeing, estimate.total, estimate.matched = agreeing, total, len(centres)
        estimate.probability = agreement_probability(agreeing, total, patch)
        estimate.residual_rms_px = float(np.sqrt(np.mean(residuals[fit.inliers] ** 2)))
        # The fit's covariance is over the entries of the correction F in current = previous @ F;
        # the result's entries are linear in F's, so the Jacobian by unit perturbations is exact.
        estimate.covariance = _propagate(previous, fit.matrix, fit.covariance)
    estimate.matrix = current
    estimate.anisotropy, estimate.shear_deg = departure(np.linalg.inv(start_linear) @ current[:2, :2])
    return estimate


def _entries(matrix: np.ndarray) -> np.ndarray:
    return np.concatenate([matrix[0, :3], matrix[1, :3]])


def _propagate(left: np.ndarray, correction: np.ndarray, covariance6: np.ndarray) -> np.ndarray | None:
    """Covariance of the entries of ``left @ correction`` from that of ``correction``'s."""
    if not np.all(np.isfinite(covariance6)):
        return None
    base = _entries(left @ correction)
    jacobian = np.zeros((6, 6))
    for k in range(6):
        bumped = correction.copy()
        bumped[k // 3, k % 3] += 1.0
        jacobian[:, k] = _entries(left @ bumped) - base
    return jacobian @ covariance6 @ jacobian.T


def transform_covariance(covariance6: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Covariance of the entries of ``left @ M @ right`` from that of ``M``'s (exact: linear)."""
    jacobian = np.zeros((6, 6))
    for k in range(6):
        unit = np.zeros((3, 3))
        unit[k // 3, k % 3] = 1.0
        jacobian[:, k] = _entries(left @ unit @ right)
    return jacobian @ covariance6 @ jacobian.T
