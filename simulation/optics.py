"""The camera's optical path as imperfect as a real one: lens distortion and parallax.

- **Parallax.** The camera looks along the beam only nominally: its axis makes a small
  angle α with the X-rays. The beam pixel was calibrated on a surface at one height; a
  sample surface ``z`` higher appears shifted by ``z tan α`` (lab direction
  ``view_azimuth_deg``) against the beam, and a tilted sample changes ``z`` across its
  field. So the camera's view of the sample is off by a few hundred nm where the X-rays are
  not: the camera registration alone lands that far off. The map is affine (the height is
  linear in the sample position): :func:`parallax_matrix`.
- **Lens distortion.** Radial, about the image centre: a pixel at normalised radius r (1 at
  the image corner) sees the ideal pixel at radius ``r (1 + k1 r^2)``
  (:func:`distorted_grid`). Not affine, so a frame with distortion is rendered with
  ``cv2.remap`` through this grid instead of one ``cv2.warpAffine``.
- **Defocus** is an extra Gaussian blur added to the objective's PSF in the reflectance map
  (:mod:`simulation.camera`).
"""

from __future__ import annotations

import math

import numpy as np

from simulation.config import CameraOptics, Mounting, OpticalPath
from simulation.geometry import homogeneous
from simulation.mounting import lab_to_sample
from simulation.sample import Sample


def view_vector(path: OpticalPath) -> np.ndarray:
    """Apparent lab shift per unit of height: ``tan α`` along the view azimuth."""
    t = math.tan(math.radians(path.view_angle_deg))
    a = math.radians(path.view_azimuth_deg)
    return np.array([t * math.cos(a), t * math.sin(a)])


def sample_height_um(path: OpticalPath, sample: Sample, q_um: np.ndarray) -> np.ndarray:
    """Height (µm) of the sample surface at sample points ``q_um`` (..., 2)."""
    tilt = np.asarray(path.sample_tilt_mrad, float) / 1000.0
    return path.sample_height_um + (np.asarray(q_um, float) - np.asarray(sample.centre)) @ tilt


def parallax_matrix(path: OpticalPath, sample: Sample, mounting: Mounting, stage_mm: tuple[float, float]) -> np.ndarray:
    """3x3: apparent lab position (mm, where the camera shows a point) -> true lab position,
    with the motors at ``stage_mm``. Identity without a view angle."""
    v = view_vector(path)
    if not v.any():
        return np.eye(3)
    to_sample = lab_to_sample(sample, mounting, stage_mm)
    m_lin, m_off = to_sample[:2, :2], to_sample[:2, 2]
    tilt = np.asarray(path.sample_tilt_mrad, float) / 1000.0
    # apparent = true + v z(q(true)) / 1000, with z linear in q and q affine in the true lab point
    a = np.eye(2) + np.outer(v, tilt @ m_lin) / 1000.0
    k = v / 1000.0 * (path.sample_height_um + tilt @ (m_off - np.asarray(sample.centre)))
    a_inv = np.linalg.inv(a)
    return homogeneous(a_inv, -a_inv @ k)


def parallax_shift_um(path: OpticalPath, sample: Sample, q_um: np.ndarray) -> np.ndarray:
    """Lab µm by which the camera shows sample point ``q_um`` away from where it truly is."""
    return sample_height_um(path, sample, q_um)[..., None] * view_vector(path)


def distorted_grid(optics: CameraOptics, path: OpticalPath) -> np.ndarray | None:
    """(H, W, 2) float32: the ideal pixel each camera pixel sees; ``None`` without distortion."""
    if path.distortion_k1 == 0.0:
        return None
    cx, cy = (optics.width - 1) / 2.0, (optics.height - 1) / 2.0
    half_diag = math.hypot(cx, cy)
    x = np.arange(optics.width, dtype=np.float64)[None, :] - cx
    y = np.arange(optics.height, dtype=np.float64)[:, None] - cy
    factor = 1.0 + path.distortion_k1 * (x * x + y * y) / half_diag**2
    grid = np.empty((optics.height, optics.width, 2), np.float32)
    grid[..., 0] = cx + x * factor
    grid[..., 1] = cy + y * factor
    return grid


def undistort_pixel(optics: CameraOptics, path: OpticalPath, p: np.ndarray) -> np.ndarray:
    """The ideal pixel that camera pixel(s) ``p`` (..., 2) see (the grid's law, for any point)."""
    pts = np.asarray(p, float)
    c = np.array([(optics.width - 1) / 2.0, (optics.height - 1) / 2.0])
    half_diag = float(np.hypot(*c))
    d = pts - c
    r2 = (d * d).sum(axis=-1, keepdims=True) / half_diag**2
    return c + d * (1.0 + path.distortion_k1 * r2)
