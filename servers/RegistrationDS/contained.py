"""Similarity registration when the reference contains a much smaller target.

This is the workflow's coarse alignment: an SEM field of tens of µm (the target) somewhere
in an optical camera frame of ~1 mm (the reference). Fourier-Mellin needs the two images to
show mostly the same area, so it cannot be used here; instead:

1. Search (rotation x position), binned so the target is ~:data:`SEARCH_TARGET_SIDE` px: the
   target is rotated in steps of :data:`ANGLE_STEP_DEG` over the whole circle, and each
   rotated copy is phase-correlated with the whole reference (one reference spectrum, one
   small forward and one inverse FFT per angle). The most distinct peak wins; the angle is
   then refined by a parabola through its neighbours.
2. Patch refinement at full resolution on a reference crop around the found footprint
   (the same grid-of-patches fit as :mod:`similarity`).
3. Direct refinement: enhanced correlation coefficient (``cv2.findTransformECC``, affine)
   of the two representations over the target's footprint (less its border band, whose
   gradients are made from reflected pixels), reported as the closest similarity. The
   patches give a robust start; ECC uses every pixel at once, which is what reaches 1/100 deg
   and 1/10 px when the target is only ~150 px wide. Its scale is averaged with the patch
   fit's (:func:`_shared_scale`: the two instruments' different drawing of feature sizes
   pulls ECC's scale, not its rotation).

Confidence: the distinctness of the translation peak at the final rotation in one ordinary
search over the reference (what :mod:`confidence` is calibrated for), divided by the
number of independent angles tried (Bonferroni) so that scanning does not buy chance matches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from servers.common.pointfit import fit_points
from servers.RegistrationDS.parts import measure_parts, part_grid
from servers.RegistrationDS.preprocess import GRADIENT_BORDER_PX, apodise, pad_to, resample
from servers.RegistrationDS.similarity import (
    PATCH_SIGMA_FACTOR,
    closest_similarity,
    rotation_and_scale,
    similarity_matrix,
    warp,
)
from servers.RegistrationDS.translation import (
    PeakEstimate,
    estimate_translation,
    real_spectrum,
)
from servers.RegistrationDS.uncertainty import PATCH_NOISE_FLOOR_PX, from_fit_covariance

CONTAINED_AREA_RATIO = 0.25
"""Below this target/reference area ratio (after resampling) the contained search is used."""

SEARCH_TARGET_SIDE = 64
MAX_SEARCH_BINNING = 2.5
"""The search bins the target to ~SEARCH_TARGET_SIDE px, but never by more than this: an SEM
field in a camera frame (~150 px) keeps its 64 px search, while a high-magnification tile in
an SEM overview (~400 px at the common pixel size) would lose at 6x binning the single
particles that tell its place from other areas with the same markers and blobs."""
ANGLE_STEP_DEG = 2.0
FULL_CIRCLE_ANGLES = round(360.0 / ANGLE_STEP_DEG)
"""The scan's cost is (angles) x (binned reference pixels); the binning above is sized for a scan
over the whole circle. A scan over a rotation window tries fewer angles and spends what it saves
on resolution (:func:`search_factor`)."""
SCAN_AGREEMENT_STEPS = 1.5
"""The fine alignment's rotation must lie within this many scan steps of the scan's
(parabola-refined) angle: the two are independent estimates (64 px binned scan vs full
resolution patches and ECC) and a larger difference means the refinement went elsewhere."""
SCALE_MODEL_SIGMA = 0.001
"""Added in quadrature to the scale sigma of a contained (cross-instrument) registration:
what the similarity model and the two instruments' different contrast leave over. On the
virtual beamline the stage shear shows as a scale error of +0.05 to +0.12 % (10 scenes;
+0.06 to +0.10 % before the scale was shared with the patch fit, :func:`_shared_scale`). On
the corpus renderer's cross-modal cases the errors were 0.05-0.19 %, most of it a shared bias
from the target's reflected border band (:func:`_ecc`); without it, 0.056 % rms on the tuning
split (52 cases), where the patch fit's own sigma (median 0.07 %) would already cover 98 %.
Kept at 0.1 % for the virtual beamline's shear, which no fit of a similarity can see."""
POSITION_MODEL_SIGMA_PX = 0.03
"""Added in quadrature to each axis of the target centre's position sigma of a contained
registration (working reference px: the coarser, camera pixel): what the two instruments'
different drawing of the same features (optical PSF and defocus, vignetting, SEM edge
brightening) leaves in the position of the final (ECC) answer. The patch fit's sigma alone
does not see it: on the tuning split (renderer seeds 1-3, 144 cases, 106 accepted;
``benchmarks/study_crossmodal_sigma tuning 48``) the centre errors were 0.040 / 0.043 px rms
(x / y) whatever the fit's sigma (median 0.033 px, no correlation with |error|), and only 87 %
of the axes lay within 2 sigma (max 4.5 sigma). The maximum-likelihood constant for
error ~ N(0, sigma_fit^2 + c^2) there is 0.027 px; with 0.03, 204 of 212 axes (96 %) lie
within 2 sigma, 210 within 3, the largest at 3.4. On the virtual beamline (24 scenes) the
errors are smaller (<= 0.03 px) and the sigma was already conservative."""
ECC_ITERATIONS = 200


@dataclass
class ContainedEstimate:
    matrix: np.ndarray
    peak: PeakEstimate
    angles_tried: int
    patch_probability: float = 1.0
    """Chance that unrelated images make this many patches agree (see :func:`_agreement_probability`)."""
    patches_agreeing: int = 0
    patches_total: int = 0
    warnings: list[str] = field(default_factory=list)
    sigma: tuple[float, float, float, float] = (2.0, 2.0, 1.0, 0.02)
    """1-sigma of (x, y of the target centre's image in reference px, rotation deg, relative
    scale) from the patch fit, with :data:`POSITION_MODEL_SIGMA_PX` and :data:`SCALE_MODEL_SIGMA`
    in quadrature; the default (no fit) is the coarse scan's resolution."""


def is_contained(reference_shape: tuple[int, int], target_shape: tuple[int, int]) -> bool:
    return (target_shape[0] * target_shape[1] < CONTAINED_AREA_RATIO * reference_shape[0] * reference_shape[1]
            and target_shape[0] <= reference_shape[0] and target_shape[1] <= reference_shape[1])


def _rotated_canvas(target: np.ndarray, angle_deg: float, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """Apodised target rotated about its centre into a ``canvas`` square; returns it and the
    target px -> canvas px matrix."""
    centre = ((target.shape[1] - 1) / 2, (target.shape[0] - 1) / 2)
    matrix = similarity_matrix(angle_deg, 1.0, centre)
    matrix[:2, 2] += ((canvas - 1) / 2 - centre[0], (canvas - 1) / 2 - centre[1])
    return warp(apodise(target), matrix, (canvas, canvas)), matrix


def _centred(canvas: np.ndarray, shape: tuple[int, ...], to_canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``canvas`` zero-padded into the middle of ``shape``: the wrap-around shift range
    [-N/2, N/2) of the correlation then covers every position of the reference."""
    y0, x0 = (shape[0] - canvas.shape[0]) // 2, (shape[1] - canvas.shape[1]) // 2
    out = np.zeros(shape, np.float32)
    out[y0:y0 + canvas.shape[0], x0:x0 + canvas.shape[1]] = canvas
    moved = to_canvas.copy()
    moved[:2, 2] += (x0, y0)
    return out, moved


def _search_reference(reference: np.ndarray) -> np.ndarray:
    """Apodised reference zero-padded to sizes the FFT is fast for (even, small primes)."""
    rows, cols = (cv2.getOptimalDFTSize(n + (n & 1)) for n in reference.shape)
    shape = (rows + (rows & 1), cols + (cols & 1))
    return pad_to(apodise(reference), shape)


def _scan(reference: np.ndarray, target: np.ndarray, angles: np.ndarray,
          max_shift: float | None) -> list[tuple[float, PeakEstimate, np.ndarray]]:
    """For each angle: the translation peak of the rotated target in the reference."""
    canvas = int(math.ceil(math.hypot(*target.shape))) + 2
    ref = _search_reference(reference)
    ref_spectrum = real_spectrum(ref)
    results = []
    for angle in angles:
        rotated, to_canvas = _rotated_canvas(target, float(angle), canvas)
        padded, to_canvas = _centred(rotated, ref.shape, to_canvas)
        # Plain whitening here: the scan only needs the integer peak, 180 times over, and the
        # signal-fraction weights would cost two power profiles per angle.
        peak = estimate_translation(ref, padded, 1, max_shift, polarity_invariant=False,
                                    reference_spectrum=ref_spectrum, snr_weighting=False)
        shift = np.eye(3)
        shift[:2, 2] = peak.shift
        results.append((float(angle), peak, shift @ to_canvas))
    return results


def search_angles(angle_range: tuple[float, float] | None) -> tuple[np.ndarray, bool]:
    """Rotations to scan, :data:`ANGLE_STEP_DEG` apart, and whether they close a full circle
    (then the first and last are neighbours). A partial range includes both its ends."""
    low, high = (-180.0, 180.0) if angle_range is None else angle_range
    if high - low >= 360.0 - 1e-9:
        return low + ANGLE_STEP_DEG * np.arange(int(round(360.0 / ANGLE_STEP_DEG))), True
    count = int(math.floor((high - low) / ANGLE_STEP_DEG + 1e-9)) + 1
    angles = low + ANGLE_STEP_DEG * np.arange(count)
    if high - angles[-1] > 1e-9:
        angles = np.append(angles, high)
    return angles, False


def search_factor(target_shape: tuple[int, ...], angles: int) -> float:
    """Resampling factor (<= 1) of the rotation scan. Over the whole circle the target is binned
    to ~:data:`SEARCH_TARGET_SIDE` px (by at most :data:`MAX_SEARCH_BINNING`). A scan over fewer
    angles keeps the same total cost (angles x binned reference pixels) and so bins less, by
    sqrt(:data:`FULL_CIRCLE_ANGLES` / angles): a rotation window of +-5 deg (6 angles) scans at the
    working pixel size. Why: a 31 µm tile (154 px in a 0.2 µm overview) binned to 64 px keeps its
    six blobs but loses the single particles around them, and another area of the membrane then
    correlates as well as its own (docs/workflow.md, "Tiles into the overview")."""
    circle = min(1.0, max(SEARCH_TARGET_SIDE / max(target_shape), 1.0 / MAX_SEARCH_BINNING))
    return min(1.0, circle * math.sqrt(FULL_CIRCLE_ANGLES / max(1, angles)))


def estimate_contained(reference: np.ndarray, target: np.ndarray, max_shift_px: float | None = None,
                       angle_range: tuple[float, float] | None = None) -> ContainedEstimate:
    """Similarity target px -> reference px (both float32 representations, same pixel size);
    ``angle_range`` (deg, target onto reference) limits the rotation scan."""
    warnings: list[str] = []
    angles, circular = search_angles(angle_range)
    factor = search_factor(target.shape, len(angles))
    ref_small = resample(reference, factor)
    tgt_small = resample(target, factor)
    to_small = np.diag([factor, factor, 1.0])
    to_small[:2, 2] = 0.5 * factor - 0.5
    from_small = np.linalg.inv(to_small)
    limit = None if max_shift_px is None else max_shift_px * factor
    scan = _scan(ref_small, tgt_small, angles, limit)
    best = max(range(len(scan)), key=lambda i: scan[i][1].distinctness)
    angle = scan[best][0]
    if circular or 0 < best < len(scan) - 1:
        # Parabola through the peak heights of the best angle and its neighbours.
        heights = [scan[(best + k) % len(scan)][1].peak for k in (-1, 0, 1)]
        denominator = heights[0] - 2 * heights[1] + heights[2]
        offset = 0.5 * (heights[0] - heights[2]) / denominator if denominator < 0 else 0.0
        angle += float(np.clip(offset, -0.5, 0.5)) * ANGLE_STEP_DEG
    refined = _scan(ref_small, tgt_small, np.array([angle]), limit)[0]
    matrix = from_small @ refined[2] @ to_small

    # Full resolution on a crop of the reference around the footprint.
    corners = np.array([[0, 0, 1], [target.shape[1] - 1, 0, 1], [0, target.shape[0] - 1, 1],
                        [target.shape[1] - 1, target.shape[0] - 1, 1]], float)
    mapped = (matrix @ corners.T)[:2].T
    margin = 16
    x0 = int(max(0, math.floor(mapped[:, 0].min()) - margin))
    y0 = int(max(0, math.floor(mapped[:, 1].min()) - margin))
    x1 = int(min(reference.shape[1], math.ceil(mapped[:, 0].max()) + margin + 1))
    y1 = int(min(reference.shape[0], math.ceil(mapped[:, 1].max()) + margin + 1))
    crop = np.ascontiguousarray(reference[y0:y1, x0:x1])
    to_crop = np.eye(3)
    to_crop[:2, 2] = (-x0, -y0)
    local = to_crop @ matrix
    local, agreement, fit_sigma = _patch_fit(crop, target, local, warnings)
    direct = _ecc(crop, target, local, warnings)
    if direct is not None:
        local = _shared_scale(crop, target, direct)
    matrix = np.linalg.inv(to_crop) @ local
    sigma = ContainedEstimate.sigma
    if fit_sigma is not None:
        # The centre's sigma is in target px: the map to the reference scales it.
        scale = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))
        sigma = (math.hypot(fit_sigma[0] * scale, POSITION_MODEL_SIGMA_PX),
                 math.hypot(fit_sigma[1] * scale, POSITION_MODEL_SIGMA_PX), fit_sigma[2],
                 math.hypot(fit_sigma[3], SCALE_MODEL_SIGMA))
    found_angle = math.degrees(math.atan2(matrix[1, 0] - matrix[0, 1], matrix[0, 0] + matrix[1, 1]))
    scan_off = (found_angle - angle + 180.0) % 360.0 - 180.0
    if abs(scan_off) > SCAN_AGREEMENT_STEPS * ANGLE_STEP_DEG:
        warnings.append(f"the rotation scan ({angle:.1f} deg) and the fine alignment ({found_angle:.2f} deg) "
                        "disagree: the fine alignment may have locked onto something else")
        agreement = (0, agreement[1], 1.0)

    # Confidence: one ordinary search at the final rotation/scale over the whole reference.
    linear = matrix.copy()
    linear[:2, 2] = 0.0
    confirm = _confirm(reference, target, linear, max_shift_px)
    agreeing, total, probability = agreement
    return ContainedEstimate(matrix, confirm, len(angles), probability, agreeing, total, warnings, sigma)


def _confirm(reference: np.ndarray, target: np.ndarray, linear: np.ndarray,
             max_shift: float | None) -> PeakEstimate:
    canvas = int(math.ceil(math.hypot(*target.shape))) + 2
    centre = ((target.shape[1] - 1) / 2, (target.shape[0] - 1) / 2)
    place = linear.copy()
    mapped_centre = place @ np.array([centre[0], centre[1], 1.0])
    place[:2, 2] += ((canvas - 1) / 2 - mapped_centre[0], (canvas - 1) / 2 - mapped_centre[1])
    rotated = warp(apodise(target), place, (canvas, canvas))
    ref = _search_reference(reference)
    padded, _ = _centred(rotated, ref.shape, place)
    return estimate_translation(ref, padded, 10, max_shift, polarity_invariant=False)


PATCH_GRID = 4


PATCH_AGREEMENT_PX = 0.5
"""A patch agrees with the fit when its measured position is within this of the fitted one."""


def _agreement_probability(agreeing: int, total: int, patch: int) -> float:
    """Binomial tail: chance that ``agreeing`` of ``total`` patches of unrelated images land
    within :data:`PATCH_AGREEMENT_PX` of the fitted positions. A chance peak of one patch is
    uniform over the searched disc (radius patch/4); the per-patch probability is that disc
    fraction, times 4 for the 4 parameters the fit adapts to the patches themselves."""
    from math import comb

    q = min(1.0, 4.0 * (PATCH_AGREEMENT_PX / (patch / 4.0)) ** 2)
    return float(min(1.0, sum(comb(total, k) * q ** k * (1 - q) ** (total - k) for k in range(agreeing, total + 1))))


def _patch_fit(reference: np.ndarray, target: np.ndarray, matrix: np.ndarray,
               warnings: list[str]) -> tuple[np.ndarray, tuple[int, int, float],
                                             tuple[float, float, float, float] | None]:
    """Refine ``matrix`` from the shifts of a grid of target patches (two rounds); the last
    item is the 1-sigma of (centre x, y in target px, rotation deg, scale) of the last fit."""
    height, width = target.shape
    agreement = (0, 0, 1.0)
    sigma: tuple[float, float, float, float] | None = None
    centre = ((width - 1) / 2, (height - 1) / 2)
    layout = part_grid(target.shape, PATCH_GRID, 24)
    if layout is None:
        return matrix, agreement, sigma
    patch, ys, xs = layout
    for _ in range(2):
        centres, moved = measure_parts(reference, target, matrix, patch, ys, xs)
        total = len(ys) * len(xs)
        if len(centres) < 3:
            warnings.append(f"only {len(centres)} patches matched in the fine alignment")
            return matrix, (len(centres), total, 1.0), sigma
        fit = fit_points(np.array(centres), np.array(moved), "similarity")
        if not fit.sigma >= PATCH_NOISE_FLOOR_PX:
            fit = fit_points(np.array(centres), np.array(moved), "similarity", noise_sigma=PATCH_NOISE_FLOOR_PX)
        if np.all(np.isfinite(fit.covariance)):
            sx, sy, rotation_sigma, scale_sigma = from_fit_covariance(fit.covariance, np.eye(3), centre, fit.matrix)
            sigma = (PATCH_SIGMA_FACTOR * sx, PATCH_SIGMA_FACTOR * sy, PATCH_SIGMA_FACTOR * rotation_sigma,
                     PATCH_SIGMA_FACTOR * scale_sigma)
        matrix = matrix @ fit.matrix
        predicted = np.array(centres) @ fit.matrix[:2, :2].T + fit.matrix[:2, 2]
        agreeing = int(np.count_nonzero(np.linalg.norm(predicted - np.array(moved), axis=1) <= PATCH_AGREEMENT_PX))
        agreement = (agreeing, total, _agreement_probability(agreeing, total, patch))
    return matrix, agreement, sigma


def _shared_scale(reference: np.ndarray, target: np.ndarray, direct: np.ndarray) -> np.ndarray:
    """``direct`` (ECC) with its scale replaced by the geometric mean of its own and that of one
    more round of the patch fit, measured at ``direct``; the rotation and the image of the
    target centre stay ECC's.

    Why: two instruments draw a feature's size differently (optical PSF, SEM edge
    brightening, vignetting across a large flake). ECC fits every pixel at once, so a ring
    drawn wider in one image moves its edge outward all around the feature: that projects on
    the scale of the whole fit, never on its rotation or centre. The patch fit measures shifts
    of 16 windows, which such symmetric size changes hardly move, but it has fewer
    independent measurements. On the tuning split (renderer seeds 1-3, 52 accepted cases,
    ``benchmarks/study_crossmodal_scale``) the ECC scale scattered by 0.083 % rms and the patch
    scale by 0.055 %, with errors not shared between them; their mean by 0.056 %, and the
    largest point error fell from 0.30 to 0.21 camera px. The rotation stays ECC's: there it is
    twice as precise as the patch fit (max 0.08 against 0.15 deg). The patches are measured
    again at ECC's answer (not taken from the fit that started ECC) so that the result does not
    depend on where the search started: ECC converges to the same optimum from nearby starts,
    and the patch scale measured from there is the same to 0.001 %."""
    layout = part_grid(target.shape, PATCH_GRID, 24)
    if layout is None:
        return direct
    centres, moved = measure_parts(reference, target, direct, *layout)
    if len(centres) < 3:
        return direct
    patch_scale = rotation_and_scale(fit_points(np.array(centres), np.array(moved), "similarity").matrix)[1]
    centre = np.array([(target.shape[1] - 1) / 2, (target.shape[0] - 1) / 2, 1.0])
    out = direct.copy()
    out[:2, :2] *= math.sqrt(patch_scale)
    out[:2, 2] = (direct @ centre)[:2] - out[:2, :2] @ centre[:2]
    return out


def _ecc(reference: np.ndarray, target: np.ndarray, matrix: np.ndarray, warnings: list[str]) -> np.ndarray | None:
    """Enhanced-correlation refinement of target px -> reference px, as the closest similarity;
    None (and a warning: the patch estimate is kept) when it fails or moves too far.

    The target's outer :data:`~preprocess.GRADIENT_BORDER_PX` band is left out: its gradient
    representation is made from reflected pixels (no edge across the border), while the
    reference has real data there, and that mismatch on all four sides biased the scale."""
    border = GRADIENT_BORDER_PX if min(target.shape) > 8 * GRADIENT_BORDER_PX else 0
    inner = target[border:target.shape[0] - border, border:target.shape[1] - border]
    to_inner = np.eye(3)
    to_inner[:2, 2] = (border, border)
    warp_matrix = (matrix @ to_inner)[:2].astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, 1e-6)
    try:
        _, warp_matrix = cv2.findTransformECC(np.ascontiguousarray(inner, np.float32),  # type: ignore[call-overload]  # OpenCV takes None for the mask; its stubs do not say so
                                              np.ascontiguousarray(reference, np.float32),
                                              warp_matrix, cv2.MOTION_AFFINE, criteria, None, 1)
    except cv2.error:
        warnings.append("the direct (ECC) refinement did not converge; patch estimate kept")
        return None
    affine = np.vstack([warp_matrix.astype(np.float64), [0.0, 0.0, 1.0]]) @ np.linalg.inv(to_inner)
    centre = np.array([(target.shape[1] - 1) / 2, (target.shape[0] - 1) / 2, 1.0])
    step = np.linalg.norm((affine @ centre - matrix @ centre)[:2])
    if not np.all(np.isfinite(affine)) or step > 3.0:
        warnings.append("the direct (ECC) refinement moved too far; patch estimate kept")
        return None
    return closest_similarity(affine, centre[:2])

