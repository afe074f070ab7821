"""Registration from clicked fiducial pairs, on top of the shared least-squares fit.

The fit, its residuals and the outlier rejection are :func:`servers.common.pointfit.fit_points`
(the same numbers CoordMapperDS reports for the same clicks); this module only turns
that fit into a Register-style result with a confidence.
"""

from __future__ import annotations

import numpy as np

from servers.common.pointfit import fit_points, min_pairs, pairs_to_points
from servers.RegistrationDS.confidence import fiducial_confidence
from servers.RegistrationDS.results import FiducialRegistration, as_matrix
from servers.RegistrationDS.similarity import rotation_and_scale

CLICK_TOLERANCE_PX = 2.0
"""Residual RMS (reference px) still typical of careful clicking on a marker corner."""


def register_pairs(pairs: list[list[float]], model: str, min_confidence: float = 0.5) -> FiducialRegistration:
    """Fit target px -> reference px from ``[[xt, yt, xr, yr], ...]`` and describe the result
    (``reference``, ``target`` and ``elapsed_ms`` are the caller's to fill in)."""
    source, destination = pairs_to_points(pairs)
    fit = fit_points(source, destination, model, reflection=False, reject_outliers=len(pairs) >= 4)
    inliers = tuple(bool(v) for v in fit.inliers)
    needed = min_pairs(model)
    confidence = fiducial_confidence(fit.rms, sum(inliers), len(inliers), needed, CLICK_TOLERANCE_PX)
    rotation, scale = rotation_and_scale(fit.matrix)
    warnings = list(fit.warnings)
    if len(pairs) <= needed:
        warnings.append(f"{len(pairs)} pairs determine a {model} exactly: nothing checks the clicks; "
                        "add pairs for residuals and outlier rejection")
    if fit.rejected:
        warnings.append("rejected pairs (0-based): " + ", ".join(str(i) for i in fit.rejected))
    matrix = np.asarray(fit.matrix, dtype=float)
    return FiducialRegistration(
        model=model,
        reference="",
        target="",
        matrix=as_matrix(matrix),
        shift_px=(float(matrix[0, 2]), float(matrix[1, 2])),
        rotation_deg=float(rotation),
        scale=float(scale),
        confidence=float(confidence),
        success=bool(confidence >= min_confidence),
        warnings=tuple(warnings),
        elapsed_ms=0.0,
        residuals_px=tuple(float(r) for r in fit.residuals),
        rms_px=float(fit.rms),
        inliers=inliers,
        rejected=tuple(int(i) for i in fit.rejected),
    )
