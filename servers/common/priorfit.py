"""Refine a known 2-D mapping with a few measured points, weighing both by their uncertainties.

The fine alignment measures a handful of particles with X-rays: each gives a source point
(reference image px) and where it really is (stage). A free least-squares affine through
three or four such centres fits their noise exactly and extrapolates it over the field
(30 nm stage repeatability gave medians of 80+ nm, worse than the camera registration it
was meant to improve). Here the coarse mapping ``M0`` (the camera chain) is the *prior* and
the X-ray centres the *measurements* of one Bayesian linear model:

    X_i = M0(p_i) + t + L u_i + e_i,    u_i = M0_lin (p_i - c) / s,    e_i ~ N(0, sigma^2 I)

``t`` is a translation (flat prior: the coarse translation also carries the beam-position
error and the drift since the registration, which its covariance does not contain), ``L`` a
2x2 correction of the linear part in stage coordinates (``u`` is the source point carried to
the stage by the coarse linear part, centred on the particles' centroid ``c`` and scaled by
their spread ``s``, so ``L``'s entries are stage lengths at one spread from the centre).
``L``'s prior is the coarse mapping's own linear covariance plus ``linear_sigma`` (relative)
for what the coarse model cannot express (an SEM's magnification error and shear).

Models are the shapes ``L`` may take: ``translation`` (L = 0), ``similarity`` (a small
rotation and scale, ``[[a, -b], [b, a]]``) and ``affine`` (any ``L``). The model is chosen by
its *evidence* (marginal likelihood of the measured offsets): a model richer than the number
and spread of the particles supports spreads its prior over corrections the data cannot pin
down and loses (the Bayesian Occam factor), so three clustered particles keep the coarse
linear part and only move it, and many well-spread ones with a real shear choose affine.

The result is the posterior mean and covariance of the refined map: with a prior that is
right about the coarse mapping's error, the refined map's expected error is never larger
than the coarse one's anywhere in the field (the posterior is the coarse prior updated by
evidence), which ``tests/unit/common/test_priorfit.py`` checks by simulation.

The residuals of the chosen model are tested against ``sigma`` (chi-square): when they are
larger than the measurement noise explains, ``consistent`` is false (the caller may measure
more particles) and ``sigma`` is raised to what the residuals say, so the reported
uncertainty stays honest.

Every covariance is over the six affine entries ``[a11, a12, a13, a21, a22, a23]`` of the
refined 3x3 (``servers.common.pointfit.AFFINE_ENTRIES``), in source -> destination units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from servers.common.errors import BadArgument
from servers.common.pointfit import affine_design, affine_point_covariance, apply_matrix, radial_sigma

REFINE_MODELS: tuple[str, ...] = ("translation", "similarity", "affine")

MIN_POINTS = {"translation": 1, "similarity": 2, "affine": 3}
"""Fewest measured points a model is offered for (with the prior none is singular, but a
correction of a shape the points cannot even span is no evidence)."""

DEFAULT_LINEAR_SIGMA = 0.01
"""Relative 1-sigma error of the coarse linear part that its covariance does not hold: SEM
magnification errors of 1-2 % are absorbed by the registration's scale, what remains
(anisotropic scale, shear, scan non-linearity) is of the order of 1 %."""

CONSISTENCY_ALPHA = 0.01
"""Residuals whose chi-square exceeds this tail probability are called inconsistent with sigma."""

FLAT_TRANSLATION = 1e6
"""Prior translation variance, in units of the data's own scale squared: flat for the fit, but
finite so that the evidence of the models (which all share it) can be compared."""


@dataclass(frozen=True)
class RefinedFit:
    """The refined map and how it was chosen; arrays are indexed like the input points."""

    model: str
    matrix: np.ndarray
    covariance: np.ndarray
    residual_vectors: np.ndarray
    prior_residual_vectors: np.ndarray
    rms: float
    prior_rms: float
    sigma: float
    sigma_given: float
    chi2: float
    dof: int
    p_value: float
    consistent: bool
    log_evidence: dict[str, float]
    linear_sigma: float
    warnings: tuple[str, ...] = field(default=())

    def point_uncertainty(self, points: np.ndarray) -> np.ndarray:
        """1-sigma radial error of the refined map at ``points`` (destination units)."""
        return radial_sigma(affine_point_covariance(np.asarray(points, float), self.covariance))

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary (the keys FitTransform returns with ``prior``)."""
        return {
            "model": self.model,
            "matrix": self.matrix.tolist(),
            "residuals": np.linalg.norm(self.residual_vectors, axis=1).tolist(),
            "prior_residuals": np.linalg.norm(self.prior_residual_vectors, axis=1).tolist(),
            "rms": self.rms,
            "prior_rms": self.prior_rms,
            "sigma": self.sigma,
            "sigma_given": self.sigma_given,
            "chi2": self.chi2,
            "dof": self.dof,
            "p_value": self.p_value,
            "consistent": self.consistent,
            "log_evidence": dict(self.log_evidence),
            "linear_sigma": self.linear_sigma,
            "warnings": list(self.warnings),
        }


def _model_basis(model: str) -> np.ndarray:
    """Columns spanning the correction's 6 normalised entries ``[L11, L12, t1, L21, L22, t2]``."""
    if model == "translation":
        basis = np.zeros((6, 2))
        basis[2, 0] = basis[5, 1] = 1.0
    elif model == "similarity":
        basis = np.zeros((6, 4))
        basis[0, 0] = basis[4, 0] = 1.0          # scale
        basis[1, 1], basis[3, 1] = -1.0, 1.0     # rotation
        basis[2, 2] = basis[5, 3] = 1.0
    elif model == "affine":
        basis = np.eye(6)
    else:
        raise BadArgument(f"unknown model '{model}'; use one of {', '.join(REFINE_MODELS)} or auto")
    return basis


def _prior_covariance(prior_cov6: np.ndarray | None, back: np.ndarray, linear_sigma: float, spread: float,
                      translation_sigma: float | None, flat: float) -> np.ndarray:
    """6x6 prior covariance of the normalised correction ``[L11, L12, t1, L21, L22, t2]``.

    The coarse map's own error ``dM0`` is the correction ``back^-1 vec(dM0)`` (so ``t`` holds
    the coarse error at the centroid and ``L`` that of the linear part, with their correlations);
    ``linear_sigma * spread`` is added to ``L``. The translation is flat unless
    ``translation_sigma`` says how well the coarse translation is known beyond its covariance."""
    prior = np.zeros((6, 6))
    if prior_cov6 is not None and np.isfinite(prior_cov6).all():
        inverse = np.linalg.inv(back)
        prior = inverse @ prior_cov6 @ inverse.T
    linear, translation = [0, 1, 3, 4], [2, 5]
    prior[linear, linear] += (linear_sigma * spread) ** 2
    if translation_sigma is None:
        prior[translation, :] = 0.0
        prior[:, translation] = 0.0
        prior[translation, translation] = flat
    else:
        prior[translation, translation] += translation_sigma**2
    return (prior + prior.T) / 2


def _log_evidence(offsets: np.ndarray, design: np.ndarray, prior_cov: np.ndarray, sigma: float) -> float:
    """log N(offsets; 0, sigma^2 I + D P D^T), offsets flattened (2N,)."""
    covariance = sigma**2 * np.eye(len(offsets)) + design @ prior_cov @ design.T
    sign, logdet = np.linalg.slogdet(covariance)
    if sign <= 0:
        return -np.inf
    return float(-0.5 * (offsets @ np.linalg.solve(covariance, offsets) + logdet + len(offsets) * np.log(2 * np.pi)))


def refine_with_prior(source: np.ndarray, destination: np.ndarray, prior_matrix: np.ndarray,
                      prior_cov6: np.ndarray | None, noise_sigma: float, model: str = "auto",
                      linear_sigma: float = DEFAULT_LINEAR_SIGMA,
                      translation_sigma: float | None = None) -> RefinedFit:
    """Refine ``prior_matrix`` (source -> destination, 3x3) with measured ``destination`` points.

    ``noise_sigma``: per-axis 1-sigma error of a measured destination point (stage units).
    ``prior_cov6``: covariance of the prior's six entries (None or NaN: only ``linear_sigma``).
    ``model``: one of :data:`REFINE_MODELS`, or ``auto`` (the one with the most evidence).
    ``translation_sigma``: how far off the coarse translation may be beyond its covariance
    (beam position, drift); None: not known at all (flat), the measurements alone place it.

    Steps: the correction is parametrised in a frame centred on the points and scaled by their
    spread (:class:`_CorrectionFrame`); each candidate model's evidence decides the model
    (:func:`_choose_model`); its posterior, with the noise raised when the residuals say so,
    gives the matrix and its covariance (:func:`_posterior`).
    """
    source, destination = _checked_points(source, destination, noise_sigma, linear_sigma)
    prior_matrix = np.asarray(prior_matrix, float)
    warnings: list[str] = []
    frame = _CorrectionFrame.of(source, prior_matrix)
    offsets = (destination - apply_matrix(prior_matrix, source)).reshape(-1)
    design_full = affine_design(frame.u).reshape(-1, 6)
    scale2 = max(float(np.mean(offsets**2)), noise_sigma**2)
    full_prior = _prior_covariance(prior_cov6, frame.back, linear_sigma, frame.spread, translation_sigma,
                                   FLAT_TRANSLATION * scale2)
    if prior_cov6 is not None and not np.isfinite(prior_cov6).all():
        warnings.append("the coarse mapping's uncertainty is unknown (an exact fit on its path): its linear part "
                        f"is taken as known to {linear_sigma:.1%}")
    chosen, evidence = _choose_model(model, len(source), offsets, design_full, full_prior, noise_sigma)
    basis = _model_basis(chosen)
    fit = _posterior(offsets, design_full @ basis, basis.T @ full_prior @ basis, noise_sigma, basis.shape[1])
    if not fit.consistent:
        warnings.append(f"the residuals ({fit.refit_rms:.3g} per axis) exceed the measurement "
                        f"noise ({noise_sigma:.3g}): sigma raised to {fit.sigma:.3g}; more points would tell why")
    to_entries = frame.back @ basis
    matrix = prior_matrix.copy()
    matrix[:2] += (to_entries @ fit.params).reshape(2, 3)
    covariance = to_entries @ fit.params_cov @ to_entries.T
    fitted = apply_matrix(matrix, source)
    prior_fitted = apply_matrix(prior_matrix, source)
    return RefinedFit(
        model=chosen, matrix=matrix, covariance=(covariance + covariance.T) / 2,
        residual_vectors=fitted - destination, prior_residual_vectors=prior_fitted - destination,
        rms=float(np.sqrt(np.mean(np.sum((fitted - destination) ** 2, axis=1)))),
        prior_rms=float(np.sqrt(np.mean(np.sum((prior_fitted - destination) ** 2, axis=1)))),
        sigma=fit.sigma, sigma_given=float(noise_sigma), chi2=fit.chi2, dof=fit.dof, p_value=fit.p_value,
        consistent=fit.consistent, log_evidence=evidence, linear_sigma=float(linear_sigma),
        warnings=tuple(warnings))


def _checked_points(source: np.ndarray, destination: np.ndarray, noise_sigma: float,
                    linear_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    source = np.asarray(source, float)
    destination = np.asarray(destination, float)
    if source.ndim != 2 or source.shape[1] != 2 or source.shape != destination.shape or len(source) == 0:
        raise BadArgument("give matching lists of [x, y] source and destination points (at least one)")
    if not (np.isfinite(source).all() and np.isfinite(destination).all()):
        raise BadArgument("the points contain NaN or infinity; send finite numbers only")
    if not (noise_sigma > 0 and np.isfinite(noise_sigma)):
        raise BadArgument("a fit with a prior needs noise_sigma > 0: the 1-sigma error of one measured point")
    if not (linear_sigma > 0 and np.isfinite(linear_sigma)):
        raise BadArgument("linear_sigma must be a finite number > 0 (the coarse linear part is never exact)")
    return source, destination


@dataclass(frozen=True)
class _CorrectionFrame:
    """Where the correction's parameters live: source points centred on their mean, carried by
    the prior's linear part and divided by their spread (``u``), so that the parameters of every
    model are of one size and the prior on them is simple. ``back`` takes the parameters to the
    six matrix entries: correction delta(p) = Theta N p~ with N = [[B, -B c], [0, 0, 1]],
    B = M0_lin / s; row r of delta is N^T theta_r."""

    u: np.ndarray
    spread: float
    back: np.ndarray

    @classmethod
    def of(cls, source: np.ndarray, prior_matrix: np.ndarray) -> _CorrectionFrame:
        centre = source.mean(axis=0)
        linear0 = prior_matrix[:2, :2]
        carried = (source - centre) @ linear0.T
        spread = float(np.sqrt(np.mean(np.sum(carried**2, axis=1)) / 2.0))
        if spread == 0.0:
            spread = 1.0  # one point (or coincident ones): only a translation is measurable
        b_matrix = linear0 / spread
        lift = np.eye(3)
        lift[:2, :2] = b_matrix
        lift[:2, 2] = -b_matrix @ centre
        back = np.zeros((6, 6))
        back[:3, :3] = lift.T
        back[3:, 3:] = lift.T
        return cls(carried / spread, spread, back)


def _choose_model(model: str, n: int, offsets: np.ndarray, design_full: np.ndarray, full_prior: np.ndarray,
                  noise_sigma: float) -> tuple[str, dict[str, float]]:
    """The model with the most evidence among those the points can determine (``model`` itself
    unless ``auto``), and every candidate's log evidence."""
    candidates = REFINE_MODELS if model == "auto" else (model,)
    evidence: dict[str, float] = {}
    for name in candidates:
        basis = _model_basis(name)
        if n < MIN_POINTS[name]:
            continue
        evidence[name] = _log_evidence(offsets, design_full @ basis, basis.T @ full_prior @ basis, noise_sigma)
    if not evidence:
        raise BadArgument(f"a {model} refinement needs at least {MIN_POINTS.get(model, 1)} points, got {n}")
    return max(evidence, key=lambda name: evidence[name]), evidence


@dataclass(frozen=True)
class _Posterior:
    params: np.ndarray
    params_cov: np.ndarray
    sigma: float
    chi2: float
    dof: int
    p_value: float
    consistent: bool
    refit_rms: float
    """RMS per axis of the residuals after the refit at the raised sigma (what the warning quotes;
    NaN when the residuals were consistent with the given noise)."""


def _posterior(offsets: np.ndarray, design: np.ndarray, prior: np.ndarray, noise_sigma: float,
               n_params: int) -> _Posterior:
    """The parameters' posterior at ``noise_sigma``; when the residuals' chi-square says the noise
    is larger (p < CONSISTENCY_ALPHA), again at the noise the residuals show."""
    prior_precision = np.linalg.pinv(prior)

    def at(sigma: float) -> tuple[np.ndarray, np.ndarray]:
        precision = design.T @ design / sigma**2 + prior_precision
        cov = np.linalg.inv(precision)
        return cov @ design.T @ offsets / sigma**2, cov

    params, params_cov = at(noise_sigma)
    residual = offsets - design @ params
    chi2 = float(residual @ residual / noise_sigma**2)
    dof = max(len(offsets) - n_params, 0)
    p_value = float(stats.chi2.sf(chi2, dof)) if dof > 0 else 1.0
    consistent = p_value >= CONSISTENCY_ALPHA
    sigma, refit_rms = noise_sigma, math.nan
    if not consistent:
        sigma = float(np.sqrt(residual @ residual / dof))
        params, params_cov = at(sigma)
        refit_rms = float(np.sqrt(np.mean((offsets - design @ params) ** 2)))
    return _Posterior(params, params_cov, sigma, chi2, dof, p_value, consistent, refit_rms)
