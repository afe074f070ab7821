"""Composition of a chain of edges and first-order propagation of their covariances.

For a chain ``y = T_m ... T_1 x`` the error of ``y`` is, to first order, the sum over edges
of ``J_e dtheta_e`` with ``J_e`` the Jacobian of ``y`` wrt edge ``e``'s parameters. Edges
are independent measurements, so ``cov(y) = sum_e J_e C_e J_e^T``. An edge used twice (the
camera calibration in a camera@S1 -> stage -> camera@S2 detour) contributes the *sum* of
its Jacobians: its errors are correlated with themselves and partly cancel.

Local Jacobians (``D(z)`` = d(M z)/d(entries) of :func:`servers.common.pointfit.affine_design`,
``G`` the edge's basis): an edge applied forwards at input ``x`` gives ``D(x) G``; applied
backwards (``z = E^-1 x``, so ``E z = x`` and ``dE z + E dz = 0``) it gives
``-E_lin^-1 D(z) G``. Each is carried to the end of the chain by the linear parts of the
later steps (the derivative of an affine map is its linear part).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from servers.common.pointfit import affine_design, apply_matrix, radial_sigma
from servers.CoordMapperDS.graph import Step


@dataclass(frozen=True)
class Mapped:
    """Points carried along a chain: positions, (N, 2, 2) covariances, the composed 3x3."""

    points: np.ndarray
    covariance: np.ndarray
    matrix: np.ndarray

    @property
    def uncertainty(self) -> np.ndarray:
        """1-sigma position error per point: sqrt(trace(cov)), NaN when an edge's is unknown."""
        return radial_sigma(self.covariance)


def compose(steps: list[Step], points: np.ndarray) -> Mapped:
    """Map ``points`` through ``steps`` and propagate every edge's parameter covariance."""
    current, composed, jacobians, edges = _jacobians(steps, points)
    covariance = np.zeros((points.shape[0], 2, 2))
    for key, jacobian in jacobians.items():
        parameter_cov = edges[key].covariance
        covariance += np.einsum("nij,jk,nlk->nil", jacobian, parameter_cov, jacobian)
    return Mapped(current, covariance, composed)


_ENTRY_POINTS = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
# entries (a11, a12, a13, a21, a22, a23) of an affine map from the images y0, y1, y2 of the
# points (0, 0), (1, 0), (0, 1), flattened as (y0x, y0y, y1x, y1y, y2x, y2y)
_ENTRIES_FROM_IMAGES = np.array([
    [-1, 0, 1, 0, 0, 0], [-1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0],
    [0, -1, 0, 1, 0, 0], [0, -1, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0]], dtype=float)


def entry_covariance(steps: list[Step]) -> tuple[np.ndarray, np.ndarray]:
    """The composed 3x3 of a chain and the 6x6 covariance of its entries (NaN when an edge's
    is unknown): what a refinement of the whole chain takes as its prior. The entries are
    linear in the images of (0, 0), (1, 0), (0, 1), whose joint covariance the Jacobians give."""
    _, composed, jacobians, edges = _jacobians(steps, _ENTRY_POINTS)
    covariance = np.zeros((6, 6))
    for key, jacobian in jacobians.items():
        stacked = _ENTRIES_FROM_IMAGES @ jacobian.reshape(6, -1)
        covariance += stacked @ edges[key].covariance @ stacked.T
    return composed, (covariance + covariance.T) / 2


def _jacobians(steps: list[Step], points: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Mapped points, the composed 3x3, and per edge the (N, 2, k) Jacobian of the mapped points
    wrt its parameters (an edge used twice: the sum of its two)."""
    current = points
    composed = np.eye(3)
    locals_: list[np.ndarray | None] = []
    linears: list[np.ndarray] = []
    for step in steps:
        applied = step.applied
        following = apply_matrix(applied, current)
        if np.any(step.edge.covariance):  # exact edges (all zeros) contribute nothing
            if step.forward:
                local = affine_design(current) @ step.basis
            else:
                local = -np.linalg.inv(step.matrix[:2, :2]) @ (affine_design(following) @ step.basis)
            locals_.append(local)
        else:
            locals_.append(None)
        linears.append(applied[:2, :2])
        composed = applied @ composed
        current = following
    jacobians: dict[tuple[str, str], np.ndarray] = {}
    to_end = np.eye(2)
    for step, local, linear in zip(reversed(steps), reversed(locals_), reversed(linears), strict=True):
        if local is not None:
            contribution = to_end @ local
            key = step.edge.key
            jacobians[key] = jacobians[key] + contribution if key in jacobians else contribution
        to_end = to_end @ linear
    return current, composed, jacobians, {step.edge.key: step.edge for step in steps}
