"""The three models of ``Register``, each with its own search and its own confidence rules.

A translation trusts one phase-correlation peak (two band-pass scales must agree); a small
target inside a large reference (the SEM field in a camera frame) is searched by the contained
method and vouched for by its peak or by its parts; any other pair goes through the
Fourier-Mellin similarity. ``affine`` is a similarity search refined by the parts of the
target (:mod:`affine`). The core then turns the result into full-resolution pixels and applies
the rules every model shares (``RegistrationCore.register``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servers.common.parallel import pair
from servers.RegistrationDS.affine import AffineEstimate, agreement_problem, refine_affine
from servers.RegistrationDS.args import RegisterArgs
from servers.RegistrationDS.confidence import chance_probability, confidence_from_peak
from servers.RegistrationDS.contained import estimate_contained, is_contained
from servers.RegistrationDS.preprocess import apodise, hann_window, pad_to
from servers.RegistrationDS.similarity import estimate_similarity
from servers.RegistrationDS.translation import buffers as translation_buffers
from servers.RegistrationDS.translation import estimate_translation, opencv_real_spectrum

CONTAINED_MIN_PATCH_AGREEMENT = 0.6
"""A small target inside a large reference must agree over most of its area: standard
marker layouts repeat from sample to sample, so agreement on the markers alone (about
half of a central SEM field) is not evidence of the right sample. Measured on the virtual
beamline: same sample 11-14 of 16 patches agree, another sample with the same markers 7-9."""
DOUBT_CONFIDENCE = 0.5
"""Confidence given to a result one of the refusal rules doubts (two estimates disagree,
peak on the edge of the search, prior not met): below any sensible threshold."""
SIMILARITY_MIN_PATCH_AGREEMENT = 0.5
"""If fewer than half of the refinement patches agree with the fitted similarity, the
global peak may be right by luck but the rotation/scale are not trustworthy."""


@dataclass
class ModelEstimate:
    """One model's answer in working pixels (target -> reference, common pixel size)."""

    matrix: np.ndarray
    peak: Any
    """The correlation peak the answer rests on (``distinctness``, ``polarity``, ``on_edge``)."""
    sigma: tuple[float, float, float, float]
    """1-sigma of (shift x, shift y in working px, rotation deg, scale)."""
    confidence: float
    affine: AffineEstimate | None = None
    warnings: list[str] = field(default_factory=list)


def estimate_model(args: RegisterArgs, ref_rep: np.ndarray, tgt_rep: np.ndarray,
                   intensity: tuple[np.ndarray, np.ndarray], max_shift: float | None,
                   rotation_range: tuple[float, float] | None) -> ModelEstimate:
    """The estimate of ``args.model`` for the represented working images."""
    if args.model == "translation":
        return _translation(args, ref_rep, tgt_rep, max_shift)
    if is_contained(ref_rep.shape, tgt_rep.shape):
        return _contained(args, ref_rep, tgt_rep, max_shift, rotation_range)
    return _similarity(args, ref_rep, tgt_rep, intensity, max_shift, rotation_range)


def _translation(args: RegisterArgs, ref_rep: np.ndarray, tgt_rep: np.ndarray,
                 max_shift: float | None) -> ModelEstimate:
    shape = (max(ref_rep.shape[0], tgt_rep.shape[0]), max(ref_rep.shape[1], tgt_rep.shape[1]))

    # The two images are independent up to their spectra: windowed and transformed side by side,
    # one core each (OpenCV's DFT is single-threaded), in arrays kept from call to call (or
    # allocated by this thread: see preprocess.apodise). The windowed images become the DFT's
    # packed output in place.
    with translation_buffers(shape) as work:
        windowed = work.windowed if work is not None else (np.empty(shape, np.float32), np.empty(shape, np.float32))

        def spectrum_of(image: np.ndarray, which: int) -> np.ndarray:
            if image.shape == shape:
                apodise(image, hann_window(image.shape), out=windowed[which])
            else:
                windowed[which][...] = pad_to(apodise(image, hann_window(image.shape)), shape)
            return opencv_real_spectrum(windowed[which], out=None if work is None else work.spectra[which])

        ref_spectrum, tgt_spectrum = pair(lambda: spectrum_of(ref_rep, 0), lambda: spectrum_of(tgt_rep, 1))
        peak = estimate_translation(windowed[0], windowed[1], args.upsample, max_shift, polarity_invariant=True,
                                    reference_spectrum=ref_spectrum, with_uncertainty=True,
                                    target_spectrum=tgt_spectrum, buffers=work)
    matrix = np.eye(3)
    matrix[0, 2], matrix[1, 2] = peak.shift
    covariance = peak.covariance if peak.covariance is not None else np.full((2, 2), np.inf)
    estimate = ModelEstimate(matrix, peak, (math.sqrt(covariance[0, 0]), math.sqrt(covariance[1, 1]), 0.0, 0.0),
                             confidence_from_peak(peak.distinctness))
    if not peak.bands_agree:
        estimate.confidence = min(estimate.confidence, DOUBT_CONFIDENCE)
        estimate.warnings.append(f"the low- and high-frequency estimates of the shift disagree (squared distance "
                                 f"{peak.band_distance:.1f} in their errors): the peak may come from a periodic "
                                 "pattern or from one image's borders; check ROIs")
    return estimate


def _contained(args: RegisterArgs, ref_rep: np.ndarray, tgt_rep: np.ndarray, max_shift: float | None,
               rotation_range: tuple[float, float] | None) -> ModelEstimate:
    contained = estimate_contained(ref_rep, tgt_rep, max_shift, rotation_range)
    estimate = ModelEstimate(contained.matrix, contained.peak, contained.sigma, 0.0,
                             warnings=list(contained.warnings))
    patch_probability = contained.patch_probability
    if args.model == "affine":
        estimate.affine = refine_affine(ref_rep, tgt_rep, estimate.matrix)
        estimate.matrix, patch_probability = estimate.affine.matrix, estimate.affine.probability
    # Either test may vouch for the match (x2: two tests); the peak test is corrected for the
    # number of rotations tried.
    chance = min(contained.angles_tried * chance_probability(contained.peak.distinctness), patch_probability)
    estimate.confidence = 1.0 - min(1.0, 2.0 * chance)
    if estimate.affine is not None:
        problem = agreement_problem(estimate.affine)
        if problem is not None:
            estimate.confidence = min(estimate.confidence, 0.5)
            estimate.warnings.append(f"{problem}: the reference may show a similar but different area (e.g. the "
                                     "same marker layout on another sample)")
    elif contained.patches_agreeing < CONTAINED_MIN_PATCH_AGREEMENT * max(contained.patches_total, 1):
        estimate.confidence = min(estimate.confidence, 0.5)
        estimate.warnings.append(f"only {contained.patches_agreeing} of {contained.patches_total} parts of the "
                                 "target agree with the fitted similarity: the reference may show a similar "
                                 "but different area (e.g. the same marker layout on another sample)")
    return estimate


def _similarity(args: RegisterArgs, ref_rep: np.ndarray, tgt_rep: np.ndarray,
                intensity: tuple[np.ndarray, np.ndarray], max_shift: float | None,
                rotation_range: tuple[float, float] | None) -> ModelEstimate:
    found = estimate_similarity(ref_rep, tgt_rep, args.upsample, max_shift, rotation_range, intensity=intensity)
    estimate = ModelEstimate(found.matrix, found.peak, found.sigma, confidence_from_peak(found.peak.distinctness),
                             warnings=list(found.warnings))
    if not found.estimates_agree:
        estimate.confidence = min(estimate.confidence, DOUBT_CONFIDENCE)
    if args.model == "affine":
        estimate.affine = refine_affine(ref_rep, tgt_rep, estimate.matrix)
        estimate.matrix = estimate.affine.matrix
        problem = agreement_problem(estimate.affine)
        if problem is not None:
            estimate.confidence = min(estimate.confidence, 0.5)
            estimate.warnings.append(problem)
    elif found.patches_total >= 3 and found.patches_used < SIMILARITY_MIN_PATCH_AGREEMENT * found.patches_total:
        estimate.confidence = min(estimate.confidence, 0.5)
        estimate.warnings.append(f"only {found.patches_used} of {found.patches_total} image patches "
                                 "agree with the fitted similarity")
    return estimate
