"""CoordMapper: vectorised Map with uncertainty vs a per-point numpy loop; fitting vs skimage.

Map: 10k SEM points through sem -> camera@S -> stage with covariance propagation, against
the loop a user would write (compose the 3x3s, map each point, propagate each Jacobian).
Fit: 20 fiducial pairs with 2 gross outliers, ``pointfit.fit_points`` against
``skimage.measure.ransac(AffineTransform)`` -- time and error at fresh points.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import ransac
from skimage.transform import AffineTransform

from benchmarks.harness import Report, best_time
from servers.common.pointfit import apply_matrix, fit_points
from servers.CoordMapperDS.args import MapArgs, SetTransformArgs
from servers.CoordMapperDS.core import CoordMapperCore


def _core() -> CoordMapperCore:
    core = CoordMapperCore()
    core.set_beam_position([768.0, 551.0])
    core.set_transform(SetTransformArgs.model_validate(
        {"from": "camera", "to": "stage", "matrix": [[5.5e-4, 0, 0], [0, -5.5e-4, 0], [0, 0, 1]],
         "sigma": 1e-4}))
    core.set_transform(SetTransformArgs.model_validate(
        {"from": "sem", "to": "camera", "matrix": [[0.02, 0.001, 400], [-0.001, 0.02, 300], [0, 0, 1]],
         "stage_position": [50.0, 50.0], "sigma": 0.3}))
    return core


def _loop(points: np.ndarray, matrices: list[np.ndarray], covariances: list[np.ndarray]) -> list:
    """Per point: apply each matrix, propagate each edge's covariance with its Jacobian."""
    out = []
    for point in points:
        x = np.array([point[0], point[1], 1.0])
        cov = np.zeros((2, 2))
        for matrix, covariance in zip(matrices, covariances, strict=True):
            jacobian = np.array([[x[0], x[1], 1, 0, 0, 0], [0, 0, 0, x[0], x[1], 1]])
            cov = matrix[:2, :2] @ cov @ matrix[:2, :2].T + jacobian @ covariance @ jacobian.T
            x = matrix @ x
        out.append((x[:2], np.sqrt(np.trace(cov))))
    return out


def run(report: Report) -> None:
    rng = np.random.default_rng(0)
    core = _core()
    points = rng.uniform(0, 4096, (10_000, 2))
    args = MapArgs.model_validate({"from": "sem", "to": "stage", "points": points.tolist()})
    result = core.map_points(args, ((0, 100), (0, 100)))
    sem_cam = np.array([[0.02, 0.001, 400], [-0.001, 0.02, 300], [0, 0, 1]])
    cam_stage = np.array([[5.5e-4, 0, 50 - 5.5e-4 * 768], [0, -5.5e-4, 50 + 5.5e-4 * 551], [0, 0, 1]])
    cov_a, cov_b = np.zeros((6, 6)), np.zeros((6, 6))
    cov_a[2, 2] = cov_a[5, 5] = 0.09
    cov_b[2, 2] = cov_b[5, 5] = 1e-8
    loop = _loop(points, [sem_cam, cam_stage], [cov_a, cov_b])
    assert np.allclose([p for p, _ in loop], result.points, rtol=1e-12)
    assert np.allclose([u for _, u in loop], result.uncertainty, rtol=1e-9)
    ours = best_time(lambda: core.map_points(args, ((0, 100), (0, 100))), repeat=5)
    naive = best_time(lambda: _loop(points, [sem_cam, cam_stage], [cov_a, cov_b]), repeat=3)
    report.add("coordmapper_map_10k_ms", ours * 1e3, "ms", naive * 1e3, naive / ours,
               "Map of 10k points with uncertainty + limits vs per-point numpy loop (same answers)")

    truth = np.array([[1e-3, 2e-4, 5.0], [-1.5e-4, 9e-4, -3.0], [0, 0, 1]])
    errors_ours, errors_sk, times_ours, times_sk = [], [], [], []
    for trial in range(20):
        src = rng.uniform(0, 2000, (20, 2))
        dst = apply_matrix(truth, src) + rng.normal(0, 1e-4, (20, 2))
        dst[:2] += 0.05  # two clicks on the wrong marker
        queries = rng.uniform(0, 2000, (100, 2))
        expected = apply_matrix(truth, queries)
        times_ours.append(best_time(lambda s=src, d=dst: fit_points(s, d, "affine"), repeat=3))
        fit = fit_points(src, dst, "affine")
        errors_ours.append(np.sqrt(np.mean(np.sum((fit.transform(queries) - expected) ** 2, axis=1))))

        def sk(s: np.ndarray = src, d: np.ndarray = dst, seed: int = trial) -> object:
            return ransac((s, d), AffineTransform, min_samples=3, residual_threshold=5e-4, max_trials=200,
                          rng=seed)[0]
        times_sk.append(best_time(sk, repeat=3))
        model = sk()
        errors_sk.append(np.sqrt(np.mean(np.sum((model(queries) - expected) ** 2, axis=1))))
    report.add("pointfit_affine_20pairs_ms", np.median(times_ours) * 1e3, "ms", np.median(times_sk) * 1e3,
               np.median(times_sk) / np.median(times_ours),
               "fit + covariance + named outliers vs skimage ransac(AffineTransform), 2/20 outliers")
    report.add("pointfit_error_um", np.median(errors_ours) * 1e3, "um", np.median(errors_sk) * 1e3,
               np.median(errors_sk) / np.median(errors_ours),
               "RMS map error at 100 fresh points (mm->um); ransac needs a hand-set threshold, ours none")
    fine_alignment_accuracy(report, rng)


def fine_alignment_accuracy(report: Report, rng: np.random.Generator, trials: int = 200) -> None:
    """The fine alignment's situation: an SEM field of 4100 px at 20 nm/px, a coarse (camera)
    mapping off by ~30 nm in translation and 3e-4 in its linear part, 4 particles spread over
    the field measured with 30 nm stage repeatability. Median error (nm) over 200 field points,
    median over the trials, against the truth: the refinement with the coarse map as prior
    (``priorfit.refine_with_prior``, what smart_fine_align stores) vs a free least-squares affine
    through the 4 centres (what it stored before) and vs the coarse map itself."""
    from servers.common.priorfit import refine_with_prior

    refined, free, coarse_errors = [], [], []
    for _ in range(trials):
        angle = rng.uniform(0, 2 * np.pi)
        truth = np.eye(3)
        truth[:2, :2] = 2e-5 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        coarse = truth.copy()
        coarse[:2, :2] = truth[:2, :2] @ (np.eye(2) + rng.normal(0, 3e-4, (2, 2)))
        coarse[:2, 2] += rng.normal(0, 30e-6, 2)
        field = rng.uniform(0, 4100, (200, 2))
        chosen = [0]
        while len(chosen) < 4:
            chosen.append(int(np.argmax(np.min(np.linalg.norm(field[:, None] - field[chosen][None], axis=2),
                                                axis=1))))
        source = field[chosen]
        measured = apply_matrix(truth, source) + rng.normal(0, 30e-6, source.shape)

        def error_nm(matrix: np.ndarray, field: np.ndarray = field, truth: np.ndarray = truth) -> float:
            return float(np.median(np.linalg.norm(apply_matrix(matrix, field) - apply_matrix(truth, field),
                                                  axis=1)) * 1e6)
        refined.append(error_nm(refine_with_prior(source, measured, coarse, None, 30e-6).matrix))
        free.append(error_nm(fit_points(source, measured, "affine", reject_outliers=False).matrix))
        coarse_errors.append(error_nm(coarse))
    report.add("fine_alignment_prior_error_nm", np.median(refined), "nm", np.median(free),
               np.median(free) / np.median(refined),
               "median field error, 4 X-ray centres at 30 nm repeatability: refinement with the coarse map as "
               f"prior vs a free affine (coarse map alone: {np.median(coarse_errors):.1f} nm)")


if __name__ == "__main__":
    rep = Report()
    run(rep)
    for name, figure in rep.figures.items():
        print(f"{name}: {figure.value:.4g} {figure.unit} (baseline {figure.baseline:.4g}, "
              f"ratio {figure.ratio:.3g}) -- {figure.note}")
