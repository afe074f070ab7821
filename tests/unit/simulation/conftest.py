"""Shared fixtures: one default beamline per session (its camera maps take ~1 s to build)."""

from __future__ import annotations

import numpy as np
import pytest

from simulation.config import CameraOptics, default_beamline
from simulation.sample import Sample


@pytest.fixture(scope="session")
def beamline():
    return default_beamline(11)


@pytest.fixture(scope="session")
def small_camera(beamline) -> CameraOptics:
    """A 512x512 camera with the beamline's rotation: same physics, 16x less work."""
    return CameraOptics.model_validate({**beamline.camera.model_dump(), "width": 512, "height": 512})


def scattered_cubes(rng: np.random.Generator, n: int, spacing_um: float = 2.0) -> Sample:
    """Cubes on a coarse grid with random sub-pixel offsets, sizes and angles: many isolated
    particles in a small SEM field, for localisation statistics."""
    side = int(np.ceil(np.sqrt(n)))
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    margin = 20.0  # keep the membrane edge far outside the SEM field
    x = margin + (gx.ravel()[:n] + 1.0 + rng.uniform(-0.2, 0.2, n)) * spacing_um
    y = margin + (gy.ravel()[:n] + 1.0 + rng.uniform(-0.2, 0.2, n)) * spacing_um
    d = 0.05 * np.exp(0.15 * rng.standard_normal(n))
    extent = (side + 1) * spacing_um + 2 * margin
    return Sample(width=extent, height=extent, x=x, y=y, d=d, angle_deg=rng.uniform(0, 90, n),
                  material=["CeO2"] * n, markers=[])


def window_centroid(image: np.ndarray, x: float, y: float, radius: int) -> tuple[float, float]:
    """Intensity-weighted centroid in a square window around (x, y), after subtracting a
    plane fitted to the window's border (removes the membrane level and any gradient)."""
    cx, cy = int(round(x)), int(round(y))
    win = image[cy - radius:cy + radius + 1, cx - radius:cx + radius + 1].astype(np.float64)
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    border = (np.abs(xx) == radius) | (np.abs(yy) == radius)
    design = np.column_stack([np.ones(border.sum()), xx[border], yy[border]])
    coef, *_ = np.linalg.lstsq(design, win[border], rcond=None)
    signal = win - (coef[0] + coef[1] * xx + coef[2] * yy)
    mass = signal.sum()
    return cx + (signal * xx).sum() / mass, cy + (signal * yy).sum() / mass
