"""What the registration confidence means, in one place.

The confidence is ``1 - p``, where ``p`` is the probability that two *unrelated* images
would produce a correlation peak at least as distinct as the one found. Distinctness is
the height of the best peak over the best peak elsewhere in the searched range
(:class:`~servers.RegistrationDS.translation.PeakEstimate`). It was chosen over the
textbook "peak over noise sigma" because real unrelated micrographs do not correlate
like white noise: shared edge orientations, JPEG blocks and illumination envelopes give
heavy-tailed chance peaks (z = 10-20 sigma), so a Gaussian noise model claims certainty
where there is none. The runner-up peak rises with those same effects and cancels them.

Calibration (scripts in tests/unit/registration/test_confidence.py): 600 random crops
of different scikit-image micrographs and noise, 64-200 px, intensity and gradient
representations. Their log-distinctness has an exponential upper tail; anchored at the
measured 99th percentile (distinctness 1.72) with decay 0.14 (conservative: the measured
decay is 0.10-0.13) it gives ``p = 0.01 * exp(-(ln d - ln 1.72) / 0.14)``.
So confidence 0.99 ~ d = 1.72, 0.995 ~ d = 1.89, 0.999 ~ d = 2.16; clear matches of real
images have d = 5-50 and a confidence of 1 to many decimals.
"""

from __future__ import annotations

import math

NULL_ANCHOR_DISTINCTNESS = 1.72
NULL_ANCHOR_PROBABILITY = 0.01
NULL_TAIL_DECAY = 0.14

DEFAULT_MIN_CONFIDENCE = 0.995
"""Below this a result has ``success: false`` (the device goes to ALARM); measured false
success on unrelated pairs at this threshold: well under 1 % (see docs/registration.md)."""


def chance_probability(distinctness: float) -> float:
    """Probability that unrelated images give a peak at least this distinct (calibrated tail)."""
    if not math.isfinite(distinctness) or distinctness <= 1.0:
        return 1.0
    excess = (math.log(distinctness) - math.log(NULL_ANCHOR_DISTINCTNESS)) / NULL_TAIL_DECAY
    return float(min(1.0, NULL_ANCHOR_PROBABILITY * math.exp(-excess)))


def confidence_from_peak(distinctness: float) -> float:
    """``1 - chance_probability``: the probability that the match is not a coincidence."""
    return 1.0 - chance_probability(distinctness)


def fiducial_confidence(rms_px: float, inliers: int, total: int, minimum_pairs: int,
                        click_tolerance_px: float) -> float:
    """Confidence of a point-pair fit, from redundancy and the size of the residuals.

    With exactly the minimum number of pairs the fit is exact and nothing can be checked,
    so the confidence is 0.5 (a coin flip is the honest summary of "unverifiable"). With
    redundancy it is the inlier fraction times a Gaussian factor that is 1 for residuals
    well inside ``click_tolerance_px`` and falls off beyond it.
    """
    if total <= minimum_pairs:
        return 0.5
    if inliers <= minimum_pairs:
        return 0.5 * inliers / total
    fraction = inliers / total
    spread = math.exp(-0.5 * (rms_px / click_tolerance_px) ** 2)
    return float(max(0.0, min(1.0, fraction * spread)))
