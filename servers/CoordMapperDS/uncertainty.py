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
    n = points.shape[0]
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
    covariance = np.zeros((n, 2, 2))
    edges = {step.edge.key: step.edge for step in steps}
    for key, jacobian in jacobians.items():
        parameter_cov = edges[key].covariance
        covariance += np.einsum("nij,jk,nlk->nil", jacobian, parameter_cov, jacobian)
    return Mapped(current, covariance, composed)
