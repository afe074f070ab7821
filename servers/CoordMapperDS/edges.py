"""Edges of the frame graph: validated affine transforms with the covariance of their parameters.

Two kinds share one shape so that composition and uncertainty need no special cases:

``affine``  a fixed 3x3 matrix ``M`` (``from`` -> ``to``); parameters = its six free entries
            ``[a11, a12, a13, a21, a22, a23]``.
``camera``  the moving camera: ``X = S + A (p - b) + d``, stored ``camera`` -> stage. Its
            parameters are ``[A11, A12, d1, A21, A22, d2]``: the 2x2 calibration ``A`` and an
            offset ``d`` that is always 0 but carries the uncertainty of where the beam point
            maps (from a fit). Its concrete 3x3 needs the stage position ``S`` of the camera
            frame and the beam position ``b`` (camera px), which are given per use.

Both give ``matrix6 = fixed + basis @ params`` (:meth:`Edge.concrete`), and the Jacobian
``basis`` (6x6 here) maps a parameter covariance to the covariance of the matrix entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from servers.common.errors import BadArgument

EdgeKind = Literal["affine", "camera"]

MAX_CONDITION = 1e10
"""Largest accepted condition number of the 2x2 linear part: beyond it, the inverse map
(needed whenever a path runs backwards) amplifies rounding errors past any useful precision."""

BOTTOM_ROW_TOLERANCE = 1e-12


def check_matrix(matrix: object, what: str = "matrix") -> np.ndarray:
    """Return a finite, affine, invertible and well-conditioned 3x3 array or raise BadArgument."""
    try:
        array = np.array(matrix, dtype=float)
    except (TypeError, ValueError):
        raise BadArgument(f"the {what} must be 3 rows of 3 numbers") from None
    if array.shape != (3, 3):
        raise BadArgument(f"the {what} must be 3x3 (row-major, [[a11, a12, tx], [a21, a22, ty], [0, 0, 1]]), "
                          f"got shape {array.shape}")
    if not np.isfinite(array).all():
        raise BadArgument(f"the {what} contains NaN or infinity; send finite numbers only")
    if np.max(np.abs(array[2] - [0.0, 0.0, 1.0])) > BOTTOM_ROW_TOLERANCE:
        raise BadArgument(f"the {what} has bottom row {array[2].tolist()}; only affine transforms "
                          "(bottom row [0, 0, 1]) are supported")
    linear = array[:2, :2]
    singular = np.linalg.svd(linear, compute_uv=False)
    if singular[-1] == 0.0 or singular[0] / singular[-1] > MAX_CONDITION:
        raise BadArgument(f"the {what} is singular or ill-conditioned (2x2 part {linear.tolist()}, "
                          f"condition {singular[0] / max(singular[-1], 1e-300):.3g}); it cannot be "
                          "inverted, check the scale and that no row or column is zero")
    array[2] = [0.0, 0.0, 1.0]
    return array


def check_covariance(covariance: object, what: str = "covariance", allow_unknown: bool = False) -> np.ndarray:
    """Return a symmetric positive semi-definite 6x6 array (or all-NaN when ``allow_unknown``)."""
    try:
        array = np.array(covariance, dtype=float)
    except (TypeError, ValueError):
        raise BadArgument(f"the {what} must be 6 rows of 6 numbers") from None
    if array.shape != (6, 6):
        raise BadArgument(f"the {what} must be 6x6 over (a11, a12, a13, a21, a22, a23), got {array.shape}")
    if allow_unknown and np.isnan(array).all():
        return array
    if not np.isfinite(array).all():
        raise BadArgument(f"the {what} contains NaN or infinity; send finite numbers only")
    scale = max(float(np.max(np.abs(array))), 1e-300)
    if np.max(np.abs(array - array.T)) > 1e-9 * scale:
        raise BadArgument(f"the {what} is not symmetric; a covariance must equal its transpose")
    if np.linalg.eigvalsh((array + array.T) / 2).min() < -1e-9 * scale:
        raise BadArgument(f"the {what} has a negative eigenvalue; a covariance is positive semi-definite")
    return (array + array.T) / 2


def camera_basis(beam: np.ndarray) -> np.ndarray:
    """d(matrix entries)/d(A11, A12, d1, A21, A22, d2) for ``[A | S - A b + d]``."""
    basis = np.eye(6)
    basis[2, 0], basis[2, 1] = -beam[0], -beam[1]
    basis[5, 3], basis[5, 4] = -beam[0], -beam[1]
    return basis


def inverse_jacobian(matrix: np.ndarray) -> np.ndarray:
    """d(entries of M^-1)/d(entries of M), 6x6, from d(M^-1) = -M^-1 dM M^-1."""
    inverse = np.linalg.inv(matrix)
    jacobian = np.zeros((6, 6))
    for column in range(6):
        delta = np.zeros((3, 3))
        delta.flat[column] = 1.0
        jacobian[:, column] = (-inverse @ delta @ inverse)[:2].ravel()
    return jacobian


def translation_covariance(sigma: float) -> np.ndarray:
    """Covariance of an edge known to ``sigma`` (isotropic position error in ``to`` units)."""
    covariance = np.zeros((6, 6))
    covariance[2, 2] = covariance[5, 5] = sigma**2
    return covariance


@dataclass(frozen=True)
class Edge:
    """One stored transform between two frames, oriented ``source`` -> ``target``.

    ``stage_position``: for an ``affine`` edge touching ``camera``, the stage position of
    that camera frame (required); for the ``camera`` edge, the default used when a Map
    from or to ``camera`` gives none. ``record`` is the provenance shown in Transforms and
    kept in the history (command, time, model, rms, ...).
    """

    source: str
    target: str
    kind: EdgeKind
    matrix: np.ndarray  # affine: the 3x3; camera: [[A, 0], [0, 0, 1]]
    covariance: np.ndarray  # 6x6 over the parameters (NaN: unknown)
    stage_position: tuple[float, float] | None = None
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # exactly symmetric, so that a JSON round trip (which re-symmetrises) changes no bit
        object.__setattr__(self, "covariance", (self.covariance + self.covariance.T) / 2)

    @property
    def key(self) -> tuple[str, str]:
        """Undirected identity: one edge per pair of frames."""
        return edge_key(self.source, self.target)

    def concrete(self, stage_position: np.ndarray | None, beam: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The 3x3 (``source`` -> ``target``) in use and d(entries)/d(parameters) (6x6)."""
        if self.kind == "affine":
            return self.matrix, np.eye(6)
        if stage_position is None or beam is None:
            raise AssertionError("camera edge used without stage position and beam position")
        linear = self.matrix[:2, :2]
        matrix = np.eye(3)
        matrix[:2, :2] = linear
        matrix[:2, 2] = stage_position - linear @ beam
        return matrix, camera_basis(beam)

    def to_plain(self) -> dict[str, Any]:
        """JSON-ready description (NaN covariance becomes None: unknown)."""
        unknown = bool(np.isnan(self.covariance).all())
        return {
            "from": self.source,
            "to": self.target,
            "kind": self.kind,
            "matrix": self.matrix.tolist(),
            "covariance": None if unknown else self.covariance.tolist(),
            "stage_position": None if self.stage_position is None else list(self.stage_position),
            "record": self.record,
        }


def edge_key(first: str, second: str) -> tuple[str, str]:
    return (first, second) if first <= second else (second, first)


def edge_from_plain(data: dict[str, Any]) -> Edge:
    """Rebuild an edge from :meth:`Edge.to_plain`, re-checking everything (stored text may be edited)."""
    if not isinstance(data, dict):
        raise BadArgument("each stored edge must be a JSON object")
    expected = {"from", "to", "kind", "matrix", "covariance", "stage_position", "record"}
    if set(data) != expected:
        raise BadArgument(f"stored edge keys {sorted(data)} differ from {sorted(expected)}")
    kind = data["kind"]
    if kind not in ("affine", "camera"):
        raise BadArgument(f"stored edge kind '{kind}' is neither 'affine' nor 'camera'")
    if not all(isinstance(data[k], str) and data[k] for k in ("from", "to")) or data["from"] == data["to"]:
        raise BadArgument("a stored edge needs two different frame names in 'from' and 'to'")
    matrix = check_matrix(data["matrix"], f"stored matrix {data['from']} -> {data['to']}")
    covariance = (np.full((6, 6), np.nan) if data["covariance"] is None
                  else check_covariance(data["covariance"], "stored covariance"))
    position = data["stage_position"]
    if position is not None:
        position = check_position(position, "stored stage_position")
    if not isinstance(data["record"], dict):
        raise BadArgument("a stored edge's record must be a JSON object")
    return Edge(data["from"], data["to"], kind, matrix, covariance, position, dict(data["record"]))


def check_position(position: object, what: str) -> tuple[float, float]:
    """A finite 2-vector as a tuple, or BadArgument."""
    try:
        array = np.asarray(position, dtype=float)
    except (TypeError, ValueError):
        raise BadArgument(f"{what} must be [x, y]") from None
    if array.shape != (2,) or not np.isfinite(array).all():
        raise BadArgument(f"{what} must be two finite numbers [x, y], got {position!r}")
    return (float(array[0]), float(array[1]))
