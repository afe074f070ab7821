"""Least-squares fits of 2-D point pairs, with covariance, residuals and outlier rejection.

Shared by CoordMapperDS (``FitTransform``, camera calibration) and RegistrationDS
(``RegisterFiducials``) so that both report the same numbers for the same clicks.

Conventions (docs/interface.md): a transform is a 3x3 homogeneous, row-major matrix mapping the
column ``[x, y, 1]`` of the *source* points to the *destination* points. Noise is assumed
to be in the destination coordinates, independent, isotropic and Gaussian with one unknown
standard deviation per axis, ``sigma`` (estimated from the residuals, or given).

Models (``dst = M @ [x, y, 1]``)::

    translation   [[1, 0, tx], [0, 1, ty]]                 2 parameters, >= 1 pair
    similarity    [[a, -b, tx], [b, a, ty]]                4 parameters, >= 2 pairs
    (reflected)   [[a,  b, tx], [b, -a, ty]]               mirror image, e.g. a flipped camera
    affine        [[a11, a12, tx], [a21, a22, ty]]         6 parameters, >= 3 non-collinear pairs

``with_translation=False`` fixes ``tx = ty = 0`` (a purely linear map, e.g. a calibration
from stage steps and image shifts, where the offset is known to be zero).

Every covariance this module returns is over the six affine entries
``[a11, a12, a13, a21, a22, a23]`` (the first two rows of the matrix, row-major) whatever
the model, so that composing transforms of different models needs no special cases.

Outlier rejection (from 4 pairs on) is backward elimination on *externally studentised*
residuals: each pair is compared with the fit of all the *other* inliers, so a gross
outlier cannot hide by dragging the fit towards itself. Under the noise model above the
statistic has a known distribution (F(2, dof-2), or chi-square(2) when ``noise_sigma`` is
given), so the Bonferroni threshold ``alpha / n`` bounds the chance of rejecting a good
pair in a clean data set by ``alpha`` -- the threshold needs no tuning per instrument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from math import comb
from typing import Literal

import numpy as np
from scipy import stats

from servers.common.errors import BadArgument

Model = Literal["translation", "similarity", "affine"]
MODELS: tuple[str, ...] = ("translation", "similarity", "affine")

AFFINE_ENTRIES = ("a11", "a12", "a13", "a21", "a22", "a23")
"""Order of the six free entries of a 3x3 affine matrix in every covariance here."""

DEFAULT_ALPHA = 0.01
"""Family-wise probability of wrongly rejecting a good pair in a clean set (Bonferroni)."""

DEGENERACY_LIMIT = 1e-9
"""Smallest acceptable ratio of singular values of the normalised design matrix: below it
the pairs do not determine the model (coincident or collinear points)."""

ROBUST_START_FACTOR = 2
"""A robust (least-median) start is used from ``2 * minimum + 2`` pairs on: with fewer,
the median residual of the other pairs is no reliable noise scale, and masking by several
outliers needs several outliers, hence many pairs, to matter."""

ROBUST_SUBSETS = 300
"""Minimal subsets tried by the least-median start (all of them when there are fewer)."""

LEVERAGE_LIMIT = 1e-9
"""A pair whose removal leaves the model undetermined (leverage ~1) cannot be tested."""


@dataclass(frozen=True)
class _ModelSpace:
    """An affine matrix as ``entries6 = fixed + basis @ params`` (linear in the parameters)."""

    fixed: np.ndarray  # (6,)
    basis: np.ndarray  # (6, k)


def _model_space(model: str, reflection: bool, with_translation: bool) -> _ModelSpace:
    if model == "affine":
        fixed = np.zeros(6)
        basis = np.eye(6)
    elif model == "similarity":
        fixed = np.zeros(6)
        flip = -1.0 if reflection else 1.0
        # params (a, b, tx, ty); proper: a11=a, a12=-b, a21=b, a22=a; reflected: a12=b, a22=-a
        basis = np.zeros((6, 4))
        basis[0, 0] = 1.0
        basis[1, 1] = -flip
        basis[2, 2] = 1.0
        basis[3, 1] = 1.0
        basis[4, 0] = flip
        basis[5, 3] = 1.0
    elif model == "translation":
        fixed = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
        basis = np.zeros((6, 2))
        basis[2, 0] = 1.0
        basis[5, 1] = 1.0
    else:
        raise BadArgument(f"unknown model '{model}'; use one of {', '.join(MODELS)}")
    if not with_translation:
        if model == "translation":
            raise BadArgument("a translation model without translation fits nothing; "
                              "use with_translation=True or another model")
        keep = [j for j in range(basis.shape[1]) if not (basis[2, j] or basis[5, j])]
        basis = basis[:, keep]
    return _ModelSpace(fixed, basis)


def min_pairs(model: str, with_translation: bool = True) -> int:
    """Fewest pairs that determine ``model`` exactly (no residual, no noise estimate)."""
    space = _model_space(model, False, with_translation)
    return int(np.ceil(space.basis.shape[1] / 2))


def as_points(points: object, what: str = "points") -> np.ndarray:
    """Return ``points`` as a finite (N, 2) float array or raise :class:`BadArgument`."""
    try:
        array = np.asarray(points, dtype=float)
    except (TypeError, ValueError):
        raise BadArgument(f"{what} must be a list of [x, y] number pairs") from None
    if array.size == 0:
        raise BadArgument(f"{what} is empty; give at least one [x, y] point")
    if array.ndim != 2 or array.shape[1] != 2:
        raise BadArgument(f"{what} must be a list of [x, y] pairs, got an array of shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise BadArgument(f"{what} {bad[:5].tolist()} contain NaN or infinity; send finite numbers only")
    return array


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) ``points`` with a 3x3 affine ``matrix`` (the bottom row is not used)."""
    matrix = np.asarray(matrix, dtype=float)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def affine_design(points: np.ndarray) -> np.ndarray:
    """Jacobian d(mapped point)/d(six affine entries) for each point: shape (N, 2, 6).

    It does not depend on the matrix, which is why one function serves both fitting and
    uncertainty propagation.
    """
    n = points.shape[0]
    design = np.zeros((n, 2, 6))
    design[:, 0, 0] = points[:, 0]
    design[:, 0, 1] = points[:, 1]
    design[:, 0, 2] = 1.0
    design[:, 1, 3] = points[:, 0]
    design[:, 1, 4] = points[:, 1]
    design[:, 1, 5] = 1.0
    return design


def affine_point_covariance(points: np.ndarray, covariance6: np.ndarray) -> np.ndarray:
    """(N, 2, 2) covariance of ``M @ p`` for exact points ``p`` given the entries' covariance."""
    design = affine_design(points)
    return np.einsum("nij,jk,nlk->nil", design, covariance6, design)


def radial_sigma(point_covariance: np.ndarray) -> np.ndarray:
    """1-sigma *distance* error sqrt(trace(C)) per point: the RMS of the 2-D position error.

    A per-axis sigma would under-state the error of a 2-D position: with an isotropic error
    only 86 % of points fall within twice the per-axis sigma, while twice sqrt(trace) covers
    between 95.4 % (error along one axis) and 98.2 % (isotropic) when sigma is known.
    """
    return np.sqrt(np.maximum(np.trace(point_covariance, axis1=-2, axis2=-1), 0.0))


@dataclass(frozen=True)
class PointFit:
    """The result of :func:`fit_points`; every array is indexed like the input pairs.

    ``residuals`` and ``residual_vectors`` (``fit(src) - dst``, destination units) are given
    for *all* pairs, rejected ones included, so a GUI can show why a pair was dropped.
    ``rms`` is over the inliers. ``covariance`` is the 6x6 covariance of the affine entries
    (see :data:`AFFINE_ENTRIES`); it is NaN when it cannot be known (an exact fit with no
    ``noise_sigma``). ``sigma`` is the per-axis noise used for it and ``sigma_source`` says
    where it came from: ``"residuals"``, ``"given"`` or ``"unknown"``. When sigma is
    estimated, ``covariance`` already includes ``coverage_factor**2`` (see
    :func:`coverage_factor`), so that twice the reported 1-sigma is an honest 95 % bound.
    """

    model: str
    reflection: bool
    with_translation: bool
    matrix: np.ndarray
    covariance: np.ndarray
    residuals: np.ndarray
    residual_vectors: np.ndarray
    inliers: np.ndarray
    rejected: tuple[int, ...]
    rms: float
    sigma: float
    sigma_source: str
    dof: int
    coverage_factor: float = 1.0
    warnings: tuple[str, ...] = field(default=())

    def transform(self, points: object) -> np.ndarray:
        """Map (N, 2) source points to the destination frame."""
        return apply_matrix(self.matrix, as_points(points))

    def point_covariance(self, points: object) -> np.ndarray:
        """(N, 2, 2) covariance of the mapped positions due to the fit (NaN when unknown)."""
        return affine_point_covariance(as_points(points), self.covariance)

    def point_uncertainty(self, points: object) -> np.ndarray:
        """1-sigma position error per mapped point (destination units), see :func:`radial_sigma`."""
        return radial_sigma(self.point_covariance(points))

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary with the keys the SMART commands return."""
        return {
            "model": self.model,
            "reflection": self.reflection,
            "matrix": self.matrix.tolist(),
            "residuals": self.residuals.tolist(),
            "rms": self.rms,
            "inliers": self.inliers.tolist(),
            "rejected": list(self.rejected),
            "sigma": self.sigma,
            "dof": self.dof,
            "coverage_factor": self.coverage_factor,
            "warnings": list(self.warnings),
        }


@dataclass
class _Solution:
    entries6: np.ndarray
    unscaled_cov6: np.ndarray  # (D^T D)^-1 mapped to the 6 entries; times sigma^2 = covariance
    residual_vectors: np.ndarray  # (N, 2) fit - dst for all pairs
    hat_blocks: np.ndarray  # (n_in, 2, 2) diagonal blocks of the hat matrix for the inliers
    rss: float
    dof: int


def _normaliser(src: np.ndarray, model: str, with_translation: bool) -> np.ndarray:
    """3x3 ``N`` so that ``N @ src`` is centred and of unit RMS size.

    Conditioning: pixel coordinates of ~1e4 next to a column of ones make the design
    matrix badly scaled, and the degeneracy test would then depend on where the image
    origin is. Right-multiplying by ``N`` keeps every model's form (a pure translation
    stays one because it is not scaled).
    """
    centre = src.mean(axis=0) if with_translation else np.zeros(2)
    spread = np.sqrt(np.mean(np.sum((src - centre) ** 2, axis=1)) / 2.0)
    scale = 1.0 if model == "translation" or spread == 0.0 else 1.0 / spread
    return np.array([[scale, 0.0, -scale * centre[0]], [0.0, scale, -scale * centre[1]], [0.0, 0.0, 1.0]])


def _solve(src: np.ndarray, dst: np.ndarray, inliers: np.ndarray, space: _ModelSpace,
           normaliser: np.ndarray, model: str) -> _Solution:
    norm_src = apply_matrix(normaliser, src)
    design_all = affine_design(norm_src)  # (N, 2, 6) in normalised source coordinates
    design = (design_all[inliers] @ space.basis).reshape(-1, space.basis.shape[1])
    offset = (design_all[inliers] @ space.fixed).reshape(-1)
    target = dst[inliers].reshape(-1)
    u, singular, vt = np.linalg.svd(design, full_matrices=False)
    if singular[-1] <= DEGENERACY_LIMIT * singular[0]:
        what = "collinear" if model == "affine" else "coincident"
        raise BadArgument(
            f"the source points of the pairs are {what}, so a {model} fit is not determined; "
            "click points spread over the field (not on one line)")
    params = vt.T @ ((u.T @ (target - offset)) / singular)
    inverse_normal = (vt.T / singular**2) @ vt  # (D^T D)^-1
    # entries in normalised coordinates -> original: M = M_n @ N, row r = r_n @ N
    back = np.zeros((6, 6))
    back[:3, :3] = normaliser.T
    back[3:, 3:] = normaliser.T
    entries6 = back @ (space.fixed + space.basis @ params)
    to_entries = back @ space.basis
    unscaled_cov6 = to_entries @ inverse_normal @ to_entries.T
    fitted = apply_matrix(_entries_to_matrix(entries6), src)
    residual_vectors = fitted - dst
    u_blocks = u.reshape(-1, 2, u.shape[1])
    hat_blocks = u_blocks @ u_blocks.transpose(0, 2, 1)
    rss = float(np.sum(residual_vectors[inliers] ** 2))
    return _Solution(entries6, unscaled_cov6, residual_vectors, hat_blocks, rss,
                     design.shape[0] - design.shape[1])


def _entries_to_matrix(entries6: np.ndarray) -> np.ndarray:
    return np.vstack([entries6.reshape(2, 3), [0.0, 0.0, 1.0]])


def _outlier_p_values(solution: _Solution, inliers: np.ndarray, noise_sigma: float | None,
                      floor: float) -> np.ndarray:
    """p-value of each inlier under 'this pair fits the model of the others' (1 = untestable).

    ``floor`` is the double-precision noise floor: without it, the rounding residuals of an
    exact fit would be tested against each other and one of them called an outlier.
    """
    errors = solution.residual_vectors[inliers]
    complement = np.eye(2) - solution.hat_blocks
    p_values = np.ones(errors.shape[0])
    determinants = np.linalg.det(complement)
    testable = determinants > LEVERAGE_LIMIT
    if not testable.any():
        return p_values
    solved = np.linalg.solve(complement[testable], errors[testable][..., None])[..., 0]
    deleted_q = np.einsum("ni,ni->n", errors[testable], solved)
    if noise_sigma is not None:
        p_values[testable] = stats.chi2.sf(deleted_q / noise_sigma**2, 2)
        return p_values
    deleted_dof = solution.dof - 2
    if deleted_dof < 1:
        return p_values
    deleted_var = np.maximum(np.maximum(solution.rss - deleted_q, 0.0) / deleted_dof, floor**2)
    f_stat = (deleted_q / 2.0) / deleted_var
    p_values[testable] = stats.f.sf(f_stat, 2, deleted_dof)
    return p_values


def _check_pairs(src: object, dst: object) -> tuple[np.ndarray, np.ndarray]:
    source = as_points(src, "source points")
    destination = as_points(dst, "destination points")
    if source.shape != destination.shape:
        raise BadArgument(f"{source.shape[0]} source points but {destination.shape[0]} destination "
                          "points; give one destination per source point")
    return source, destination


def pairs_to_points(pairs: object) -> tuple[np.ndarray, np.ndarray]:
    """Split ``[[x, y, X, Y], ...]`` (the SMART command format) into source and destination."""
    try:
        array = np.asarray(pairs, dtype=float)
    except (TypeError, ValueError):
        raise BadArgument("pairs must be a list of [x, y, X, Y] number lists") from None
    if array.ndim != 2 or array.shape[1] != 4:
        raise BadArgument(f"pairs must be a list of [x, y, X, Y], got an array of shape {array.shape}")
    return array[:, :2], array[:, 2:]


def fit_points(src: object, dst: object, model: str = "affine", *, reflection: bool | None = False,
               with_translation: bool = True, noise_sigma: float | None = None,
               reject_outliers: bool = True, alpha: float = DEFAULT_ALPHA) -> PointFit:
    """Fit ``dst ~ M @ src`` by least squares and say how well it is known.

    ``src``/``dst``: (N, 2) corresponding points (source and destination units).
    ``reflection``: similarity only -- ``False`` proper (rotation + scale), ``True`` mirrored,
    ``None`` try both and keep the smaller residual (needs one pair more than the minimum,
    since with the minimum both fit exactly).
    ``noise_sigma``: known per-axis noise of ``dst`` (e.g. the click or centroid precision);
    without it the noise is estimated from the residuals, which needs more pairs than the
    minimum for a covariance.
    ``reject_outliers``: from 4 pairs on, drop pairs inconsistent with the others at
    family-wise level ``alpha`` (see the module doc) and name them in ``rejected``.

    Raises :class:`BadArgument` for malformed, non-finite, too few or degenerate pairs.
    """
    source, destination = _check_pairs(src, dst)
    if noise_sigma is not None and not (np.isfinite(noise_sigma) and noise_sigma > 0):
        raise BadArgument(f"noise_sigma must be a positive finite number, got {noise_sigma}")
    if not 0.0 < alpha < 1.0:
        raise BadArgument(f"alpha must lie between 0 and 1, got {alpha}")
    needed = min_pairs(model, with_translation)
    n = source.shape[0]
    if n < needed:
        raise BadArgument(f"a {model} fit needs at least {needed} point pairs, got {n}; add pairs")
    if reflection is None:
        if model != "similarity":
            reflection = False
        elif n <= needed:
            raise BadArgument(f"with {n} pairs a proper and a mirrored similarity both fit exactly; "
                              "give one more pair or set reflection to true or false")
        else:
            candidates = [_fit_fixed(source, destination, model, flip, with_translation, noise_sigma,
                                     reject_outliers, alpha) for flip in (False, True)]
            return min(candidates, key=lambda fit: (-int(fit.inliers.sum()), fit.rms))
    return _fit_fixed(source, destination, model, bool(reflection) and model == "similarity",
                      with_translation, noise_sigma, reject_outliers, alpha)


def _fit_fixed(source: np.ndarray, destination: np.ndarray, model: str, reflection: bool,
               with_translation: bool, noise_sigma: float | None, reject_outliers: bool,
               alpha: float) -> PointFit:
    space = _model_space(model, reflection, with_translation)
    normaliser = _normaliser(source, model, with_translation)
    needed = int(np.ceil(space.basis.shape[1] / 2))
    n = source.shape[0]
    inliers = np.ones(n, dtype=bool)
    solution = _solve(source, destination, inliers, space, normaliser, model)
    warnings: list[str] = []
    if reject_outliers and n >= ROBUST_START_FACTOR * needed + 2:
        inliers = _robust_start(source, destination, space, normaliser, model, noise_sigma, alpha)
        solution = _solve(source, destination, inliers, space, normaliser, model)
    if reject_outliers and n >= 4:
        while int(inliers.sum()) > needed:
            p_values = _outlier_p_values(solution, inliers, noise_sigma, _tiny(destination))
            worst = int(np.argmin(p_values))
            if p_values[worst] >= alpha / int(inliers.sum()):
                break
            candidate = inliers.copy()
            candidate[np.flatnonzero(inliers)[worst]] = False
            try:
                solution = _solve(source, destination, candidate, space, normaliser, model)
            except BadArgument:
                break  # the rest would be degenerate: keep the pair rather than lose the model
            inliers = candidate
        if noise_sigma is None and solution.dof < 3 and int(inliers.sum()) == n:
            warnings.append(f"{n} pairs are too few to test a {model} fit for outliers without a "
                            "known noise level; add pairs or give noise_sigma")
    if noise_sigma is not None:
        sigma, source_of_sigma, factor = float(noise_sigma), "given", 1.0
    elif solution.dof > 0:
        sigma, source_of_sigma = float(np.sqrt(solution.rss / solution.dof)), "residuals"
        factor = coverage_factor(solution.dof)
    else:
        sigma, source_of_sigma, factor = float("nan"), "unknown", float("nan")
        warnings.append("an exact fit has no residual, so its uncertainty is unknown; "
                        "add pairs or give noise_sigma")
    covariance = solution.unscaled_cov6 * (sigma * factor) ** 2
    distances = np.hypot(solution.residual_vectors[:, 0], solution.residual_vectors[:, 1])
    rms = float(np.sqrt(np.mean(distances[inliers] ** 2)))
    return PointFit(model=model, reflection=reflection, with_translation=with_translation,
                    matrix=_entries_to_matrix(solution.entries6), covariance=covariance,
                    residuals=distances, residual_vectors=solution.residual_vectors, inliers=inliers,
                    rejected=tuple(int(i) for i in np.flatnonzero(~inliers)), rms=rms, sigma=sigma,
                    sigma_source=source_of_sigma, dof=solution.dof, coverage_factor=factor,
                    warnings=tuple(warnings))


def coverage_factor(dof: int) -> float:
    """Inflation of a 1-sigma computed with a *residual-estimated* noise (GUM, Student t).

    sigma estimated from ``dof`` residuals is itself uncertain, so errors follow a Student t
    rather than a normal law and ``2 * sigma`` covers less than 95 %. The factor
    ``t_dof(0.97725) / 2`` restores the normal-law meaning of "2 sigma" (95.45 % two-sided
    along any direction); it is 2.26 for 2 dof, 1.26 for 6, 1.07 for 18 and tends to 1.
    """
    if dof <= 0:
        return float("nan")
    return float(stats.t.ppf(stats.norm.cdf(2.0), dof) / 2.0)


def _robust_start(source: np.ndarray, destination: np.ndarray, space: _ModelSpace,
                  normaliser: np.ndarray, model: str, noise_sigma: float | None,
                  alpha: float) -> np.ndarray:
    """Inlier set from a least-median-of-squares fit, grown back by prediction tests.

    Backward elimination alone is *masked* by two or more outliers (each inflates the
    noise estimate used to judge the other). A least-median fit over minimal subsets is
    not, so it gives a clean core; every other pair is then re-admitted if its prediction
    from the core is consistent with the noise (same Bonferroni level as the elimination).
    """
    n = source.shape[0]
    size = int(np.ceil(space.basis.shape[1] / 2))
    rng = np.random.default_rng(0)  # deterministic: the same clicks always give the same answer
    if comb(n, size) <= ROBUST_SUBSETS:
        subsets = [np.array(c) for c in combinations(range(n), size)]
    else:
        subsets = [rng.choice(n, size, replace=False) for _ in range(ROBUST_SUBSETS)]
    best_score, best_errors = _least_median(source, destination, np.array(subsets), space, normaliser)
    if best_errors is None:
        return np.ones(n, dtype=bool)
    # median of |e|^2 for a 2-D normal error of per-axis sigma is 2 ln 2 sigma^2
    robust_sigma = np.sqrt(best_score / (2.0 * np.log(2.0))) if noise_sigma is None else noise_sigma
    inliers = best_errors <= stats.chi2.ppf(1.0 - alpha, 2) * max(robust_sigma, _tiny(destination)) ** 2
    if int(inliers.sum()) < size + 1:
        return np.ones(n, dtype=bool)
    for _ in range(n):
        try:
            core = _solve(source, destination, inliers, space, normaliser, model)
        except BadArgument:
            return np.ones(n, dtype=bool)
        grown = inliers | _consistent_predictions(core, inliers, source, space, normaliser, noise_sigma,
                                                  alpha, destination)
        if np.array_equal(grown, inliers):
            break
        inliers = grown
    return inliers


def _tiny(destination: np.ndarray) -> float:
    """A noise floor at double precision, so that noise-free data do not divide by zero."""
    return 1e-12 * max(1.0, float(np.max(np.abs(destination))))


def _consistent_predictions(core: _Solution, inliers: np.ndarray, source: np.ndarray,
                            space: _ModelSpace, normaliser: np.ndarray, noise_sigma: float | None,
                            alpha: float, destination: np.ndarray) -> np.ndarray:
    """Which pairs outside ``inliers`` agree with the fit of the inliers (prediction test)."""
    outside = ~inliers
    accepted = np.zeros_like(inliers)
    if not outside.any():
        return accepted
    if noise_sigma is None and core.dof < 1:
        return accepted
    norm_src = apply_matrix(normaliser, source[outside])
    design = affine_design(norm_src) @ space.basis  # (m, 2, k)
    design_in = (affine_design(apply_matrix(normaliser, source[inliers])) @ space.basis).reshape(
        -1, space.basis.shape[1])
    inverse_normal = np.linalg.pinv(design_in.T @ design_in)
    prediction_var = np.eye(2) + design @ inverse_normal @ design.transpose(0, 2, 1)
    errors = core.residual_vectors[outside]
    q = np.einsum("ni,ni->n", errors, np.linalg.solve(prediction_var, errors[..., None])[..., 0])
    threshold = alpha / source.shape[0]
    if noise_sigma is not None:
        p_values = stats.chi2.sf(q / noise_sigma**2, 2)
    else:
        variance = max(core.rss / core.dof, _tiny(destination) ** 2)
        p_values = stats.f.sf(q / 2.0 / variance, 2, core.dof)
    accepted[np.flatnonzero(outside)[p_values >= threshold]] = True
    return accepted


def _least_median(source: np.ndarray, destination: np.ndarray, subsets: np.ndarray, space: _ModelSpace,
                  normaliser: np.ndarray) -> tuple[float, np.ndarray | None]:
    """Exact fits of all minimal ``subsets`` at once; the one with the least median residual.

    Every model here has an even number of parameters, so a minimal subset gives a square
    system and all of them are solved in one batched call (about 50x faster than a loop of
    least-squares fits, which matters when RegistrationDS re-fits on every click).
    Returns (median squared residual of the pairs outside the subset, squared residuals).
    """
    k = space.basis.shape[1]
    design_all = affine_design(apply_matrix(normaliser, source))  # (n, 2, 6)
    design = (design_all[subsets] @ space.basis).reshape(len(subsets), -1, k)[:, :k]
    offset = (design_all[subsets] @ space.fixed).reshape(len(subsets), -1)[:, :k]
    target = destination[subsets].reshape(len(subsets), -1)[:, :k]
    with np.errstate(all="ignore"):
        conditioned = np.linalg.cond(design) < 1.0 / DEGENERACY_LIMIT
    if not conditioned.any():
        return np.inf, None
    design, offset, target, subsets = design[conditioned], offset[conditioned], target[conditioned], \
        subsets[conditioned]
    params = np.linalg.solve(design, (target - offset)[..., None])[..., 0]  # (B, k)
    entries = space.fixed + params @ space.basis.T  # (B, 6) in normalised source coordinates
    predicted = np.einsum("nij,bj->bni", design_all, entries)  # (B, n, 2)
    squared = np.sum((predicted - destination) ** 2, axis=2)
    outside = np.ones_like(squared, dtype=bool)
    np.put_along_axis(outside, subsets, False, axis=1)
    scores = np.median(squared[outside].reshape(len(subsets), -1), axis=1)
    best = int(np.argmin(scores))
    return float(scores[best]), squared[best]
