"""Small homogeneous-transform helpers shared by every renderer.

docs/interface.md fixes one convention for every transform in the project: a 3x3 matrix,
row-major, acting on the column vector ``[x, y, 1]``. Keeping the few helpers that build
and apply such matrices in one place means the SEM, camera and XRF models cannot drift
apart in sign or axis order.
"""

from __future__ import annotations

import math

import numpy as np


def rotation_2x2(angle_deg: float) -> np.ndarray:
    """Counter-clockwise rotation in a frame whose axes are (x, y); with image-like axes
    (y down) the same matrix turns clockwise on screen."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]], dtype=float)


def homogeneous(linear: np.ndarray, translation: np.ndarray | tuple[float, float]) -> np.ndarray:
    """Build the 3x3 matrix ``[[L, t], [0, 0, 1]]`` from a 2x2 part and a translation."""
    matrix = np.eye(3)
    matrix[:2, :2] = np.asarray(linear, dtype=float)
    matrix[:2, 2] = np.asarray(translation, dtype=float)
    return matrix


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map an ``(N, 2)`` array of points (or one ``(2,)`` point) through a 3x3 matrix."""
    pts = np.asarray(points, dtype=float)
    single = pts.ndim == 1
    pts2 = np.atleast_2d(pts)
    out = pts2 @ matrix[:2, :2].T + matrix[:2, 2]
    return out[0] if single else out


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of an affine 3x3 matrix (kept exact in the last row)."""
    inverse = np.linalg.inv(np.asarray(matrix, dtype=float))
    inverse[2] = (0.0, 0.0, 1.0)
    return inverse
