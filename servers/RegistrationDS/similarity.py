"""Rotation, scale and translation between two images of a common pixel size.

Two stages, because each is good at what the other is bad at:

1. Fourier-Mellin (coarse, global, needs no starting guess): the magnitude spectrum is
   blind to translation, and in log-polar coordinates a rotation or a scale of the image
   is a shift, found by phase correlation. Done on images binned to at most
   :data:`COARSE_SIDE` px, which is plenty for ~0.2 deg / ~0.3 % and keeps it fast. The
   180 deg ambiguity of the spectrum is settled by trying both and keeping the translation
   peak that stands out more.
2. Patch refinement (fine, local): the target is warped with the coarse estimate, a grid
   of patches is matched by sub-pixel phase correlation, and a similarity is fitted to the
   patch displacements with :mod:`servers.common.pointfit` (outlier patches rejected).
   Rotation and scale then come from displacements measured to ~0.02 px over the width
   of the image, not from the angular sampling of a log-polar grid, which is why this is
   more accurate than iterating Fourier-Mellin as imreg_dft does.

The matrix returned maps target pixels to reference pixels of the two given arrays.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import scipy.fft

from servers.common.errors import Failed
from servers.common.pointfit import fit_points
from servers.RegistrationDS.preprocess import apodise, hann_window, pad_to, resample
from servers.RegistrationDS.translation import FFT_WORKERS, PeakEstimate, estimate_translation
from servers.RegistrationDS.uncertainty import PATCH_NOISE_FLOOR_PX, from_fit_covariance

COARSE_SIDE = 512
"""Longest side used for the Fourier-Mellin stage."""

LOG_POLAR_ANGLES = 720
"""Angular samples over 180 deg (0.25 deg each; the peak is located to ~1/10 of that)."""

LOG_POLAR_RADII = 256

PATCH_GRID = 5
"""Patches per side in the refinement: enough pairs to reject a few bad ones and still
over-determine the 4 similarity parameters."""

PATCH_SIGMA_FACTOR = 1.0
"""Multiplies the patch fit's sigmas (calibrated on the tuned sources of the corpus)."""

PATCH_MIN_DISTINCTNESS = 2.0
"""A patch whose correlation peak is less distinct than this carries no position."""

REFINEMENT_ROUNDS = 2

DIRECT_ITERATIONS = 100
"""Iteration cap of the direct (ECC) refinement; from the patch fit it converges in a few."""

DIRECT_SIDE = 384
"""Longest side the direct (ECC) refinement works on: larger images are binned first. ECC
costs ~25 ms per iteration at 1024 px on a shared core; binned to 384 px (22 ms in all) the
1024 px similarity benchmark keeps its rotation error at 0.0002 deg (512 px: 0.0001 deg,
91 ms). The corpus images (256 px) are not binned."""

DIRECT_AGREEMENT_SIGMAS = 3.0
"""The direct (ECC) refinement and the patch fit must agree within this many of the patch
fit's 1-sigmas (rotation, scale, centre): they are two estimates by different means (a
robust fit to a few tens of patch shifts; every pixel at once), and a larger difference
means one of them is wrong in a way its own sigma does not show."""

AGREEMENT_ROTATION_DEG = 1.0
AGREEMENT_SCALE = 0.03
"""Fourier-Mellin (0.25 deg angular samples at <= 512 px) and the patch fit must agree this
well; a larger difference means one of them locked onto something else."""


@dataclass
class SimilarityEstimate:
    """Result in the pixels of the arrays given to :func:`estimate_similarity`."""

    matrix: np.ndarray
    peak: PeakEstimate
    patches_used: int = 0
    patches_total: int = 0
    warnings: list[str] = field(default_factory=list)
    sigma: tuple[float, float, float, float] = (1.0, 1.0, 0.25, 0.01)
    """1-sigma of (x, y of the target centre's image in reference px, rotation deg, relative
    scale); the default is the Fourier-Mellin grid's resolution, used when no patch fit ran."""
    estimates_agree: bool = True
    """Fourier-Mellin and the patch fit agree on rotation and scale, and (when intensity
    images were given) the direct refinement agrees with the patch fit within its sigmas."""


def similarity_matrix(rotation_deg: float, scale: float, centre: tuple[float, float],
                      shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """3x3 matrix: rotate by ``rotation_deg`` (x towards y) and scale about ``centre``, then shift."""
    angle = math.radians(rotation_deg)
    a, b = scale * math.cos(angle), scale * math.sin(angle)
    cx, cy = centre
    return np.array([[a, -b, cx - a * cx + b * cy + shift[0]],
                     [b, a, cy - b * cx - a * cy + shift[1]],
                     [0.0, 0.0, 1.0]])


def rotation_and_scale(matrix: np.ndarray) -> tuple[float, float]:
    """Rotation (deg) and isotropic scale of the linear part (for an affine: the closest similarity)."""
    a = 0.5 * (matrix[0, 0] + matrix[1, 1])
    b = 0.5 * (matrix[1, 0] - matrix[0, 1])
    return math.degrees(math.atan2(b, a)), math.hypot(a, b)


ROTATION_RANGE_TOLERANCE_DEG = 1.0
"""How far outside a requested rotation range a result may lie (the searches step in 2 deg
and refine afterwards)."""


def within_rotation_range(rotation_deg: float, rotation_range: tuple[float, float] | None,
                          tolerance_deg: float = ROTATION_RANGE_TOLERANCE_DEG) -> bool:
    """Whether ``rotation_deg`` (any turn) lies in ``[low, high]`` widened by ``tolerance_deg``."""
    if rotation_range is None:
        return True
    low, high = rotation_range
    wrapped = low - tolerance_deg + (rotation_deg - low + tolerance_deg) % 360.0
    return wrapped <= high + tolerance_deg


def warp(image: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Image resampled into the frame where ``matrix`` sends it (bicubic, zero outside)."""
    return cv2.warpAffine(image, matrix[:2].astype(np.float64), (shape[1], shape[0]),
                          flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def _log_polar_spectrum(image: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """High-passed magnitude spectrum in log-polar coordinates; returns it and the log step."""
    spectrum = scipy.fft.fftshift(np.abs(scipy.fft.fft2(pad_to(apodise(image), shape), workers=FFT_WORKERS)))
    weight, map_x, map_y, log_step = _log_polar_grid((int(shape[0]), int(shape[1])))
    spectrum = (spectrum * weight).astype(np.float32)
    polar = cv2.remap(spectrum, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return polar, log_step


@functools.lru_cache(maxsize=4)
def _log_polar_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The spectrum's band weight and the log-polar sampling maps for ``shape``, cached
    read-only (the same for both images of every registration of that size)."""
    fy = scipy.fft.fftshift(scipy.fft.fftfreq(shape[0]))[:, None]
    fx = scipy.fft.fftshift(scipy.fft.fftfreq(shape[1]))[None, :]
    # Emphasise mid frequencies: low ones are the window's, high ones the noise's.
    weight = np.hypot(fx, fy) * np.exp(-(fx ** 2 + fy ** 2) / 0.09)
    side = min(shape)
    r_min, r_max = 2.0, 0.45 * side
    log_step = math.log(r_max / r_min) / LOG_POLAR_RADII
    radii = r_min * np.exp(log_step * np.arange(LOG_POLAR_RADII))
    angles = np.pi * np.arange(LOG_POLAR_ANGLES) / LOG_POLAR_ANGLES
    scale_y, scale_x = shape[0] / side, shape[1] / side  # a circle in frequency is an ellipse on the grid
    map_x = (shape[1] // 2 + scale_x * radii[None, :] * np.cos(angles[:, None])).astype(np.float32)
    map_y = (shape[0] // 2 + scale_y * radii[None, :] * np.sin(angles[:, None])).astype(np.float32)
    for array in (weight, map_x, map_y):
        array.setflags(write=False)
    return weight, map_x, map_y, log_step


def coarse_rotation_scale(reference: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Fourier-Mellin estimate of the rotation (mod 180 deg) and scale of target -> reference."""
    shape = (max(reference.shape[0], target.shape[0]), max(reference.shape[1], target.shape[1]))
    side = max(shape)
    shape = (side, side)  # square spectra: equal frequency spacing on both axes
    ref_polar, log_step = _log_polar_spectrum(reference, shape)
    tgt_polar, _ = _log_polar_spectrum(target, shape)
    radial_window = np.hanning(LOG_POLAR_RADII + 2)[1:-1].astype(np.float32)[None, :]
    ref_polar = (ref_polar - ref_polar.mean()) * radial_window
    tgt_polar = (tgt_polar - tgt_polar.mean()) * radial_window
    estimate = estimate_translation(ref_polar, tgt_polar, upsample=20, polarity_invariant=False)
    d_radius, d_angle = estimate.shift
    rotation = d_angle * 180.0 / LOG_POLAR_ANGLES
    # A larger reference spectrum radius means finer reference features: the target was zoomed out.
    scale = math.exp(-d_radius * log_step)
    return rotation, scale


def _binning_factor(shape: tuple[int, ...]) -> float:
    return min(1.0, COARSE_SIDE / max(shape))


def closest_similarity(affine: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """The similarity nearest to ``affine`` (least squares on the linear part) that maps
    ``pivot`` where ``affine`` does."""
    a = 0.5 * (affine[0, 0] + affine[1, 1])
    b = 0.5 * (affine[1, 0] - affine[0, 1])
    out = np.array([[a, -b, 0.0], [b, a, 0.0], [0.0, 0.0, 1.0]])
    point = np.array([pivot[0], pivot[1], 1.0])
    out[:2, 2] = (affine @ point)[:2] - (out @ point)[:2]
    return out


def refine_direct(reference: np.ndarray, target: np.ndarray, matrix: np.ndarray) -> np.ndarray | None:
    """Enhanced-correlation (``cv2.findTransformECC``, affine, reported as the closest
    similarity) refinement of ``matrix`` (target px -> reference px) on intensity images.

    Why: the patch fit sees each patch through a Hann window and a whitened phase correlation,
    and on smooth, noisy images (skimage ``moon`` at 2 % noise) a fit of a few tens of patch
    shifts, some of them rejected, can be off by twice its sigma (0.1 deg); a least-squares
    fit over every pixel at once is several times more precise there. A target shown with
    inverted contrast is inverted first (ECC maximises a positive correlation). Images larger
    than :data:`DIRECT_SIDE` are binned to it (speed). Returns None when it does not converge
    or moves the centre more than 3 px (it went elsewhere)."""
    full_centre = np.array([(target.shape[1] - 1) / 2, (target.shape[0] - 1) / 2, 1.0])
    factor = min(1.0, DIRECT_SIDE / max(reference.shape + target.shape))
    to_small = np.diag([factor, factor, 1.0])
    to_small[:2, 2] = 0.5 * factor - 0.5
    reference = np.ascontiguousarray(resample(reference, factor), np.float32)
    target = np.ascontiguousarray(resample(target, factor), np.float32)
    small = to_small @ matrix @ np.linalg.inv(to_small)
    warped = warp(target, small, reference.shape)
    inside = warp(np.ones_like(target), small, reference.shape) > 0.99
    if np.count_nonzero(inside) < 64:
        return None
    ref_in = reference[inside] - reference[inside].mean()
    tgt_in = warped[inside] - warped[inside].mean()
    if float(np.dot(ref_in, tgt_in)) < 0.0:
        target = np.ascontiguousarray(-target)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, DIRECT_ITERATIONS, 1e-6)
    try:
        _, warp_matrix = cv2.findTransformECC(target, reference, small[:2].astype(np.float32),  # type: ignore[call-overload]  # OpenCV takes None for the mask; its stubs do not say so
                                              cv2.MOTION_AFFINE, criteria, None, 1)
    except cv2.error:
        return None
    affine = np.linalg.inv(to_small) @ np.vstack([warp_matrix.astype(np.float64), [0.0, 0.0, 1.0]]) @ to_small
    if not np.all(np.isfinite(affine)) or np.linalg.norm((affine @ full_centre - matrix @ full_centre)[:2]) > 3.0:
        return None
    return closest_similarity(affine, full_centre[:2])


def direct_agrees(patch: np.ndarray, direct: np.ndarray, sigma: tuple[float, float, float, float],
                  centre: tuple[float, float]) -> bool:
    """Whether the direct refinement lies within :data:`DIRECT_AGREEMENT_SIGMAS` of the patch
    fit's 1-sigmas in rotation, scale and the position of the target centre."""
    patch_rotation, patch_scale = rotation_and_scale(patch)
    direct_rotation, direct_scale = rotation_and_scale(direct)
    point = np.array([centre[0], centre[1], 1.0])
    moved = (direct @ point - patch @ point)[:2]
    k = DIRECT_AGREEMENT_SIGMAS
    return bool(abs((direct_rotation - patch_rotation + 180.0) % 360.0 - 180.0) <= k * sigma[2]
                and abs(direct_scale / patch_scale - 1.0) <= k * sigma[3]
                and abs(moved[0]) <= k * sigma[0] and abs(moved[1]) <= k * sigma[1])


def _translation_after(reference: np.ndarray, target: np.ndarray, linear: np.ndarray,
                       upsample: int, max_shift_px: float | None) -> tuple[np.ndarray, PeakEstimate]:
    """Warp ``target`` by ``linear`` then find the remaining shift; return the full matrix."""
    shape = reference.shape
    warped = warp(target, linear, shape)
    window = hann_window(shape)
    peak = estimate_translation(apodise(reference, window), apodise(warped, window), upsample,
                                max_shift_px, polarity_invariant=True)
    shift = np.eye(3)
    shift[0, 2], shift[1, 2] = peak.shift
    return shift @ linear, peak


def _covered_patches(matrix: np.ndarray, grid: list[tuple[int, int]], patch: int,
                     target_shape: tuple[int, ...]) -> list[int]:
    """Indices of the patches (top-left (y, x) in ``grid``, side ``patch``) that the target,
    warped by ``matrix`` (target px -> reference px), covers entirely.

    A patch is a square, so its pixels come from a parallelogram of the target: they all lie
    inside it when its four corners do (no warp of an image of ones needed)."""
    height, width = target_shape[:2]
    back = np.linalg.inv(matrix)
    covered = []
    for index, (y, x) in enumerate(grid):
        corners = np.array([[x, y, 1.0], [x + patch - 1, y, 1.0], [x, y + patch - 1, 1.0],
                            [x + patch - 1, y + patch - 1, 1.0]])
        source = corners @ back.T
        if (source[:, 0].min() >= 0 and source[:, 0].max() <= width - 1
                and source[:, 1].min() >= 0 and source[:, 1].max() <= height - 1):
            covered.append(index)
    return covered


def _patch_refinement(reference: np.ndarray, target: np.ndarray, matrix: np.ndarray,
                      warnings: list[str]) -> tuple[np.ndarray, int, int, tuple[float, float, float, float] | None]:
    """Improve ``matrix`` from the displacements of a grid of patches (see module doc); the
    last item is the 1-sigma of (centre x, y, rotation deg, scale) from the last fit."""
    height, width = reference.shape
    patch = int(min(height, width) // (PATCH_GRID - 1))
    patch = max(32, min(patch, 256))
    if min(height, width) < 2 * patch:
        warnings.append("image too small for patch refinement; rotation/scale from Fourier-Mellin only")
        return matrix, 0, 0, None
    window = hann_window((patch, patch))
    ys = np.linspace(0, height - patch, PATCH_GRID).astype(int)
    xs = np.linspace(0, width - patch, PATCH_GRID).astype(int)
    grid = [(int(y), int(x)) for y in ys for x in xs]
    # The reference patches are the same in every round: their spectra are computed once, all
    # in one batched FFT (the same numbers as one FFT per patch, with less overhead per call).
    ref_patches = np.stack([apodise(reference[y:y + patch, x:x + patch], window) for y, x in grid])
    ref_spectra = scipy.fft.rfft2(ref_patches, workers=FFT_WORKERS).astype(np.complex64, copy=False)
    ref_flat = [np.ptp(reference[y:y + patch, x:x + patch]) == 0 for y, x in grid]
    used = total = 0
    sigma: tuple[float, float, float, float] | None = None
    centre = ((target.shape[1] - 1) / 2, (target.shape[0] - 1) / 2)
    for _ in range(REFINEMENT_ROUNDS):
        warped = warp(target, matrix, reference.shape)
        centres, moved = [], []
        covered = _covered_patches(matrix, grid, patch, target.shape)
        total = len(covered)
        matched = [index for index in covered
                   if not ref_flat[index] and np.ptp(warped[grid[index][0]:grid[index][0] + patch,
                                                             grid[index][1]:grid[index][1] + patch]) != 0]
        if matched:
            tgt_patches = np.stack([apodise(warped[grid[i][0]:grid[i][0] + patch, grid[i][1]:grid[i][1] + patch],
                                            window) for i in matched])
            tgt_spectra = scipy.fft.rfft2(tgt_patches, workers=FFT_WORKERS).astype(np.complex64, copy=False)
        for k, index in enumerate(matched):
            y, x = grid[index]
            peak = estimate_translation(ref_patches[index], tgt_patches[k], 20, max_shift_px=patch / 4,
                                        reference_spectrum=ref_spectra[index], target_spectrum=tgt_spectra[k])
            if peak.distinctness < PATCH_MIN_DISTINCTNESS:
                continue
            centre = (x + (patch - 1) / 2, y + (patch - 1) / 2)
            centres.append(centre)
            moved.append((centre[0] + peak.shift[0], centre[1] + peak.shift[1]))
        if len(centres) < 3:
            warnings.append(f"only {len(centres)} of {total} patches matched; "
                            "rotation/scale from Fourier-Mellin only")
            return matrix, len(centres), total, sigma
        fit = fit_points(np.array(centres), np.array(moved), "similarity")
        if not fit.sigma >= PATCH_NOISE_FLOOR_PX:
            fit = fit_points(np.array(centres), np.array(moved), "similarity", noise_sigma=PATCH_NOISE_FLOOR_PX)
        used = int(np.count_nonzero(fit.inliers))
        if np.all(np.isfinite(fit.covariance)):
            sx, sy, rotation_sigma, scale_sigma = from_fit_covariance(fit.covariance, matrix, centre, fit.matrix)
            sigma = (PATCH_SIGMA_FACTOR * sx, PATCH_SIGMA_FACTOR * sy, PATCH_SIGMA_FACTOR * rotation_sigma,
                     PATCH_SIGMA_FACTOR * scale_sigma)
        matrix = fit.matrix @ matrix
    return matrix, used, total, sigma


def estimate_similarity(reference: np.ndarray, target: np.ndarray, upsample: int = 100,
                        max_shift_px: float | None = None,
                        rotation_range: tuple[float, float] | None = None,
                        intensity: tuple[np.ndarray, np.ndarray] | None = None) -> SimilarityEstimate:
    """Similarity mapping ``target`` pixels onto ``reference`` pixels (both float32 representations).

    ``intensity``: the (reference, target) images themselves, same pixels as the
    representations; when given, the patch fit is followed by :func:`refine_direct` on them,
    which gives the result if it agrees with the patch fit (:func:`direct_agrees`), and the
    estimates are marked as disagreeing otherwise (or if it does not converge).

    Fourier-Mellin finds the rotation modulo 180 deg in one step; ``rotation_range`` only
    decides between the two candidates (if neither lies in it, both are tried and the caller
    reports the result as outside the range)."""
    warnings: list[str] = []
    factor = min(_binning_factor(reference.shape), _binning_factor(target.shape))
    ref_small = resample(reference, factor)
    tgt_small = resample(target, factor)
    rotation, scale = coarse_rotation_scale(ref_small, tgt_small)
    if not (0.2 < scale < 5.0):
        raise Failed(f"the scale between the images came out as {scale:.3g}, outside 0.2-5; check the "
                     "slots' pixel sizes, or register a region that shows the same features")
    # Candidates are built in full-resolution pixels; the image centre is the natural pivot.
    centre = ((target.shape[1] - 1) / 2, (target.shape[0] - 1) / 2)
    best: tuple[np.ndarray, PeakEstimate] | None = None
    shift_limit_small = None if max_shift_px is None else max_shift_px * factor
    to_small = np.diag([factor, factor, 1.0])
    to_small[:2, 2] = 0.5 * factor - 0.5
    candidates = [angle for angle in (rotation, rotation + 180.0) if within_rotation_range(angle, rotation_range)]
    for candidate in candidates or (rotation, rotation + 180.0):
        linear = similarity_matrix(candidate, scale, centre)
        linear[:2, 2] += np.array([(reference.shape[1] - target.shape[1]) / 2,
                                   (reference.shape[0] - target.shape[0]) / 2])
        small_linear = to_small @ linear @ np.linalg.inv(to_small)
        matrix_small, peak = _translation_after(ref_small, tgt_small, small_linear, 10, shift_limit_small)
        if best is None or peak.distinctness > best[1].distinctness:
            best = (np.linalg.inv(to_small) @ matrix_small @ to_small, peak)
    assert best is not None
    matrix, peak = best
    # Full-resolution translation at the requested precision with the coarse rotation/scale.
    # The patches below refine the shift to sub-pixel; a 1/10 px start is all they need.
    matrix, fine_peak = _translation_after(reference, target, matrix, min(upsample, 10), None)
    matrix, used, total, sigma = _patch_refinement(reference, target, matrix, warnings)
    peak = PeakEstimate(fine_peak.shift, fine_peak.peak, peak.distinctness, fine_peak.z, peak.tests * 2,
                        fine_peak.polarity)
    final_rotation, final_scale = rotation_and_scale(matrix)
    rotation_off = (final_rotation - rotation + 90.0) % 180.0 - 90.0
    agree = abs(rotation_off) <= AGREEMENT_ROTATION_DEG and abs(final_scale / scale - 1.0) <= AGREEMENT_SCALE
    if not agree:
        warnings.append(f"Fourier-Mellin ({rotation % 180.0:.2f} deg mod 180, scale {scale:.4f}) and the patch fit "
                        f"({final_rotation:.2f} deg, {final_scale:.4f}) disagree: the images may not show the same "
                        "area, or only partly")
    if intensity is not None and sigma is not None and agree:
        target_centre = ((target.shape[1] - 1) / 2, (target.shape[0] - 1) / 2)
        direct = refine_direct(intensity[0], intensity[1], matrix)
        if direct is None:
            agree = False
            warnings.append("the direct (ECC) refinement did not converge or moved far from the patch fit: "
                            "the images may not show the same area, or only partly")
        elif not direct_agrees(matrix, direct, sigma, target_centre):
            agree = False
            direct_rotation, direct_scale = rotation_and_scale(direct)
            warnings.append(f"the patch fit ({final_rotation:.3f} deg, scale {final_scale:.5f}) and the direct "
                            f"(ECC) refinement ({direct_rotation:.3f} deg, {direct_scale:.5f}) disagree beyond "
                            f"{DIRECT_AGREEMENT_SIGMAS:g} sigma: the result is less certain than it looks")
        else:
            matrix = direct
    estimate = SimilarityEstimate(matrix, peak, used, total, warnings, estimates_agree=agree)
    if sigma is not None:
        estimate.sigma = sigma
    return estimate
