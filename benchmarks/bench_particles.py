"""ParticleDS detection speed against plain trackpy, on the same images in the same run.

Figures:
- ``particles_locate_2048``: the core's locate (OpenCV band-pass and dilation, histogram
  percentile, trackpy's numba refinement) against ``trackpy.locate(engine="numba")`` with
  the same parameters on a 2048 x 2048 uint16 image with 1000 particles. The note gives the
  set difference and the largest position difference between the two results.
- ``particles_brightfield_ring``: the core's ring fit (windowed) against
  ``trackpy.locate_brightfield_ring`` (which spline-filters the whole image per particle).

Run alone: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_particles.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import trackpy
from scipy.spatial import cKDTree
from scipy.special import erf

from benchmarks.harness import Report, best_time
from servers.ParticleDS.detection import locate, locate_brightfield_ring
from servers.ParticleDS.settings import ParticleSettings

SHAPE = (2048, 2048)
PARTICLES = 1000


def _spots(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    """uint16 SEM-like image: pixel-integrated Gaussian spots, varied brightness, shot-like noise."""
    image = np.full(shape, 2000.0)
    xy = rng.uniform(15, np.array(shape[::-1]) - 15, (n, 2))
    sigma, half = 1.8, 9
    for (x0, y0), peak in zip(xy, rng.uniform(2000, 6000, n), strict=True):
        xs = np.arange(int(x0) - half, int(x0) + half + 1)
        ys = np.arange(int(y0) - half, int(y0) + half + 1)
        w = sigma * np.sqrt(2)
        gx = 0.5 * (erf((xs + 0.5 - x0) / w) - erf((xs - 0.5 - x0) / w))
        gy = 0.5 * (erf((ys + 0.5 - y0) / w) - erf((ys - 0.5 - y0) / w))
        image[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] += peak * 2 * np.pi * sigma**2 * np.outer(gy, gx)
    image += rng.normal(0, 1, shape) * np.sqrt(image * 20)
    return np.clip(np.rint(image), 0, 65535).astype(np.uint16)


def _rings(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    shape = (512, 512)
    image = np.full(shape, 140.0)
    points: list[np.ndarray] = []
    while len(points) < n:
        c = rng.uniform(40, 472, 2)
        if all(np.hypot(*(c - p)) > 45 for p in points):
            points.append(c)
    for x0, y0 in points:
        ys, xs = np.mgrid[int(y0) - 25:int(y0) + 26, int(x0) - 25:int(x0) + 26]
        r = np.hypot(xs - x0, ys - y0)
        image[ys, xs] += -90 * np.exp(-0.5 * ((r - 12) / 1.5) ** 2) + 40 * np.exp(-0.5 * (r / 5.4) ** 2)
    image += rng.normal(0, 2, shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), np.asarray(points)


def _bench_locate(report: Report) -> None:
    rng = np.random.default_rng(2024)
    image = _spots(rng, SHAPE, PARTICLES)
    settings = ParticleSettings(Diameter=11, MinMass=20000.0, Separation=8.0, Percentile=64.0)
    params = dict(minmass=settings.MinMass, separation=settings.separation_px, noise_size=settings.NoiseSize,
                  percentile=settings.Percentile, engine="numba")
    theirs = trackpy.locate(image, settings.Diameter, **params)  # numba warm-up for both
    ours = locate(image, settings)
    baseline = best_time(lambda: trackpy.locate(image, settings.Diameter, **params), repeat=5)
    value = best_time(lambda: locate(image, settings), repeat=5)
    ours = ours.select(ours.kept)
    ours_xy = np.column_stack([ours.x, ours.y])
    theirs_xy = theirs[["x", "y"]].to_numpy()
    distance, _ = cKDTree(ours_xy).query(theirs_xy)
    back, _ = cKDTree(theirs_xy).query(ours_xy)
    same = distance < 0.5
    note = (f"2048x2048 uint16, {PARTICLES} particles, Diameter 11, MinMass 2e4; trackpy found {len(theirs)}, "
            f"core {len(ours)}; only trackpy {int(np.count_nonzero(~same))}, only core "
            f"{int(np.count_nonzero(back >= 0.5))}; max position difference {distance[same].max():.2e} px; "
            "median of 5 after warm-up")
    report.add("particles_locate_2048", value * 1e3, "ms", baseline * 1e3, baseline / value, note)


def _bench_ring(report: Report) -> None:
    rng = np.random.default_rng(7)
    image, truth = _rings(rng, 20)
    settings = ParticleSettings(Diameter=25, MinMass=2000.0, Method="locate_brightfield_ring")
    ours = locate_brightfield_ring(image, settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        starts = pd.DataFrame({"y": ours.y, "x": ours.x, "particle": np.arange(len(ours))})
        baseline = best_time(lambda: trackpy.locate_brightfield_ring(
            image, 25, separation=26, previous_coords=starts, processes=1), repeat=1, warmup=0)
        value = best_time(lambda: locate_brightfield_ring(image, settings), repeat=3, warmup=1)
    error = np.sqrt(np.mean(cKDTree(np.column_stack([ours.x, ours.y])).query(truth)[0] ** 2))
    report.add("particles_brightfield_ring", value * 1e3, "ms", baseline * 1e3, baseline / value,
               f"512x512 uint8, 20 ring particles (Diameter 25); core includes its own initial locate, "
               f"trackpy is given the starts; core RMS vs truth {error:.2f} px")


def run(report: Report) -> None:
    _bench_locate(report)
    _bench_ring(report)


if __name__ == "__main__":
    result = Report()
    run(result)
    for name, figure in result.figures.items():
        print(f"{name}: {figure.value:.1f} {figure.unit} (baseline {figure.baseline:.1f}, "
              f"ratio {figure.ratio:.2f}x) -- {figure.note}")
