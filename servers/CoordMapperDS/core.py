"""CoordMapperCore: the Tango-free heart of CoordMapperDS (docs/coordmapper.md).

Commands return the frozen dataclasses of :mod:`servers.CoordMapperDS.results`; the shell
sends their ``to_json()``.

Thread safety: every public method holds one re-entrant lock, and every command that
changes something builds a complete new :class:`GraphState` and swaps it in only when
nothing was refused -- so a refused command leaves the stored graph exactly as it was,
and a concurrent reader never sees half an update.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from servers.common.errors import BadArgument, NotFound, NotReady
from servers.common.frames import CAMERA, STAGE
from servers.common.jsonargs import dumps
from servers.common.pointfit import PointFit, as_points, fit_points, pairs_to_points
from servers.common.priorfit import refine_with_prior
from servers.CoordMapperDS.args import CalibrateCameraArgs, FitTransformArgs, MapArgs, SetTransformArgs
from servers.CoordMapperDS.edges import (
    Edge,
    camera_basis,
    check_covariance,
    check_matrix,
    check_position,
    edge_key,
    inverse_jacobian,
    translation_covariance,
)
from servers.CoordMapperDS.graph import build_chain, find_path
from servers.CoordMapperDS.persistence import UNITS, GraphState, state_from_json, state_to_json
from servers.CoordMapperDS.results import (
    CameraCalibration,
    CameraEdgeReading,
    LinearReading,
    MappedPoints,
    RemovedFrame,
    StoredTransform,
)
from servers.CoordMapperDS.uncertainty import compose, entry_covariance

Limits = tuple[tuple[float, float], tuple[float, float]]
MAX_HISTORY = 500
"""History entries kept (oldest dropped): enough for a beamtime, small enough for a DB property."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class CoordMapperCore:
    """The frame graph, the beam position and their history.

    ``stage_unit`` is the motors' user unit (the device reads it from the motors); frames
    ``stage`` (in that unit) and ``camera`` (px) always exist.
    """

    def __init__(self, stage_unit: str = "mm", clock: Callable[[], str] = _now,
                 max_history: int = MAX_HISTORY) -> None:
        if stage_unit not in UNITS:
            raise BadArgument(f"stage unit '{stage_unit}' is not one of {', '.join(UNITS)}")
        self._lock = threading.RLock()
        self._state = GraphState.empty(stage_unit)
        self._clock = clock
        self._max_history = max_history

    # ------------------------------------------------------------------ reading
    @property
    def stage_unit(self) -> str:
        return self._state.stage_unit

    def frames(self) -> list[str]:
        """Frame names, ``stage`` and ``camera`` first, then the others alphabetically."""
        with self._lock:
            others = sorted(f for f in self._state.units if f not in (STAGE, CAMERA))
            return [STAGE, CAMERA, *others]

    def frame_units(self) -> dict[str, str]:
        with self._lock:
            return dict(self._state.units)

    def transforms(self) -> list[dict[str, Any]]:
        """Every stored edge as a plain dict (see :meth:`Edge.to_plain`), in a stable order."""
        with self._lock:
            return [self._state.edges[key].to_plain() for key in sorted(self._state.edges)]

    def transforms_json(self) -> str:
        """The ``Transforms`` attribute: ``{"frames": {name: unit}, "edges": [...], "beam_position"}``."""
        with self._lock:
            state = self._state
            return dumps({"frames": dict(sorted(state.units.items())), "edges": self.transforms(),
                          "beam_position": None if state.beam_position is None else list(state.beam_position)})

    def history(self) -> list[dict[str, Any]]:
        """Which command changed what, and when (UTC ISO 8601), oldest first."""
        with self._lock:
            return [dict(entry) for entry in self._state.history]

    @property
    def beam_position(self) -> tuple[float, float] | None:
        """Where the X-ray beam sits in camera pixels (``b``), or None until it is set."""
        with self._lock:
            return self._state.beam_position

    # ---------------------------------------------------------------- persisting
    def to_json(self) -> str:
        """The whole state (graph, beam position, history) for the Tango DB property."""
        with self._lock:
            return state_to_json(self._state)

    def from_json(self, text: str) -> None:
        """Replace the whole state by a stored one; on any problem, refuse and keep the current."""
        state = state_from_json(text, self.stage_unit)
        with self._lock:
            self._state = state

    # ------------------------------------------------------------------ changing
    def set_beam_position(self, position: object) -> None:
        """Set ``b`` (camera px). It is not part of any edge: camera edges use the current one."""
        beam = check_position(position, "BeamPosition")
        if max(abs(beam[0]), abs(beam[1])) > 1e7:
            raise BadArgument(f"BeamPosition {list(beam)} is beyond 1e7 px; give the beam's camera pixel")
        with self._lock:
            state = self._state.copy()
            state.beam_position = beam
            self._log(state, "BeamPosition", {"beam_position": list(beam)})
            self._state = state

    def set_transform(self, args: SetTransformArgs) -> StoredTransform:
        """Store a known matrix as the edge ``from -> to`` (replacing any edge between them)."""
        matrix = check_matrix(args.matrix)
        if args.covariance is not None:
            covariance = check_covariance(args.covariance)
        elif args.sigma is not None:
            covariance = translation_covariance(args.sigma)
        else:
            covariance = np.zeros((6, 6))
        details = {"sigma": args.sigma, "covariance_given": args.covariance is not None}
        return self._store(args, matrix, covariance, "SetTransform", details)

    def fit_transform(self, args: FitTransformArgs) -> StoredTransform:
        """Fit ``pairs`` ``[x, y, X, Y]`` (``from`` -> ``to``) and store the result as the edge."""
        source, destination = pairs_to_points(args.pairs)
        if args.prior:
            return self._refine(args, source, destination)
        fit = _fit(source, destination, args.model or "affine", args.reflection, args.noise_sigma,
                   args.reject_outliers, with_translation=True)
        details = _fit_details(fit, len(args.pairs))
        stored = self._store(args, fit.matrix, fit.covariance, "FitTransform", details)
        return replace(stored, fit=fit)

    def _refine(self, args: FitTransformArgs, source: np.ndarray, destination: np.ndarray) -> StoredTransform:
        """FitTransform with ``prior``: the mapping the graph gives now is refined by the pairs,
        each weighed by its uncertainty (``servers/common/priorfit.py``), and stored as the edge."""
        with self._lock:
            state = self._state
            for frame in (args.from_, args.to):
                if frame not in state.units:
                    raise NotFound(f"there is no frame '{frame}' to refine; the frames are {', '.join(self.frames())}. "
                                   "A fit with a prior refines an existing mapping: store one first")
            call_position = None if args.stage_position is None else check_position(args.stage_position,
                                                                                     "stage_position")
            path = find_path(state.edges, args.from_, args.to)
            steps = build_chain(state.edges, path, call_position, state.beam_position)
            prior_matrix, prior_cov = entry_covariance(steps)
            prior_path = [step.describe() for step in steps]
        assert args.noise_sigma is not None  # FitTransformArgs refuses a prior fit without it
        fit = refine_with_prior(source, destination, prior_matrix, prior_cov, float(args.noise_sigma),
                                args.model or "auto", args.linear_sigma, args.translation_sigma)
        details = {"model": fit.model, "prior": True, "prior_path": prior_path, "pairs": len(args.pairs),
                   "rms": fit.rms, "prior_rms": fit.prior_rms, "sigma": fit.sigma, "consistent": fit.consistent,
                   "log_evidence": fit.log_evidence}
        stored = self._store(args, fit.matrix, fit.covariance, "FitTransform", details)
        return replace(stored, fit=fit, prior_path=tuple(prior_path),
                       uncertainty=tuple(float(v) for v in fit.point_uncertainty(source)))

    def calibrate_camera(self, args: CalibrateCameraArgs) -> CameraCalibration:
        """Store the camera calibration ``A`` from stage steps and image shifts (see the args doc)."""
        steps = np.asarray(args.steps, dtype=float)
        shifts_px, stage_steps = steps[:, 2:], steps[:, :2]
        fit = _fit(shifts_px, -stage_steps, args.model, args.reflection, args.noise_sigma,
                   args.reject_outliers, with_translation=False)
        linear = fit.matrix[:2, :2]
        reading = _describe_linear(linear)
        details = {**_fit_details(fit, len(args.steps)), **reading.as_dict()}
        with self._lock:
            state = self._state.copy()
            edge = Edge(CAMERA, STAGE, "camera", fit.matrix.copy(), _camera_parameter_cov(fit.covariance, None),
                        None if args.stage_position is None else check_position(args.stage_position,
                                                                                "stage_position"),
                        {"command": "CalibrateCamera", "time": self._clock(), **details})
            state.edges[edge.key] = edge
            self._log(state, "CalibrateCamera", {"from": CAMERA, "to": STAGE, **details})
            self._state = state
        return CameraCalibration(fit, reading)

    def remove_frame(self, name: str) -> RemovedFrame:
        """Forget a frame and every edge touching it. ``stage`` and ``camera`` stay (their edges go)."""
        with self._lock:
            if name not in self._state.units:
                raise NotFound(f"there is no frame '{name}'; the frames are {', '.join(self.frames())}")
            if name == STAGE:
                raise BadArgument("'stage' is the motor frame and cannot be removed; remove the other frames "
                                  "or their edges instead")
            state = self._state.copy()
            removed = [key for key in state.edges if name in key]
            for key in removed:
                del state.edges[key]
            if name != CAMERA:
                del state.units[name]
            result = RemovedFrame(name, tuple(removed))
            self._log(state, "RemoveFrame", result.as_dict())
            self._state = state
            return result

    # ------------------------------------------------------------------- mapping
    def map_points(self, args: MapArgs, limits: Limits | None = None) -> MappedPoints:
        """Map points ``from -> to`` with 1-sigma uncertainty and the stage-limit flags.

        ``limits`` ``((xmin, xmax), (ymin, ymax))`` in stage units, as read from the motors;
        None (or an infinite bound) means the motors have none: then nothing is within them.
        ``within_limits`` says, for every target frame,
        whether the stage position that brings the point into the beam lies inside them;
        it is False where that position cannot be computed (a warning says why).
        """
        points = as_points(args.points, "points")
        call_position = None if args.stage_position is None else check_position(args.stage_position,
                                                                                 "stage_position")
        checked_limits = _check_limits(limits)
        with self._lock:
            state = self._state
            for frame in (args.from_, args.to):
                if frame not in state.units:
                    raise NotFound(f"there is no frame '{frame}'; the frames are {', '.join(self.frames())}")
            mapped = _map(state, args.from_, args.to, points, call_position)
            warnings: list[str] = []
            if args.to == STAGE:
                stage_points = mapped.points
            elif args.from_ == STAGE:
                stage_points = points
            else:
                try:
                    stage_points = _map(state, args.from_, STAGE, points, call_position).points
                except (NotFound, NotReady) as exc:  # the stage position of these points is unknown
                    stage_points = None
                    warnings.append(f"within_limits is false: {exc.desc}")
            within = (np.zeros(len(points), dtype=bool) if stage_points is None
                      else _inside(stage_points, checked_limits))
            if stage_points is not None and (checked_limits is None or not np.isfinite(checked_limits).all()):
                warnings.append("within_limits is false: the stage limits are unknown (a motor's Position has "
                                "no min_value/max_value); nothing is called within unknown limits")
            uncertainty = mapped.uncertainty
            if np.isnan(uncertainty).any():
                warnings.append("an edge on the path has an unknown uncertainty (an exact fit); "
                                "uncertainty is null")
            return MappedPoints(
                source=args.from_,
                target=args.to,
                unit=state.units[args.to],
                points=tuple(map(tuple, mapped.points.tolist())),  # tolist: fast for 10k points
                uncertainty=tuple(uncertainty.tolist()),
                within_limits=tuple(within.tolist()),
                matrix=_rows(mapped.matrix),
                path=tuple(mapped.path),
                warnings=tuple(warnings),
            )

    # ------------------------------------------------------------------ internal
    def _store(self, args: SetTransformArgs | FitTransformArgs, matrix: np.ndarray, covariance: np.ndarray,
               command: str, details: dict[str, Any]) -> StoredTransform:
        source, target = args.from_, args.to
        position = None if args.stage_position is None else check_position(args.stage_position,
                                                                           "stage_position")
        with self._lock:
            state = self._state.copy()
            _claim_unit(state, source, args.from_unit)
            _claim_unit(state, target, args.to_unit)
            record: dict[str, Any] = {"command": command, "time": self._clock(), **details}
            if {source, target} == {CAMERA, STAGE}:
                edge, camera = _camera_edge(source, matrix, covariance, position, state.beam_position, record)
            else:
                touches_camera = CAMERA in (source, target)
                if touches_camera and position is None:
                    raise BadArgument(f"an edge between '{source}' and '{target}' touches the moving camera "
                                      "frame: give \"stage_position\", where the stage was when that camera "
                                      "frame was taken")
                if not touches_camera and position is not None:
                    raise BadArgument(f"\"stage_position\" only applies to edges touching 'camera'; the edge "
                                      f"{source} -> {target} does not, remove the key")
                edge, camera = Edge(source, target, "affine", matrix, covariance, position, record), None
            state.edges[edge_key(source, target)] = edge
            self._log(state, command, {"from": source, "to": target, **details,
                                       **({} if camera is None else camera.as_dict())})
            self._state = state
        return StoredTransform(source, target, _rows(matrix), camera=camera)

    def _log(self, state: GraphState, command: str, details: dict[str, Any]) -> None:
        state.history.append({"time": self._clock(), "command": command, **_plain(details)})
        del state.history[: max(0, len(state.history) - self._max_history)]


def _plain(details: dict[str, Any]) -> dict[str, Any]:
    """Details as plain JSON values (numpy scalars and NaN would not survive persistence)."""
    return json.loads(dumps(details))


def _fit(source: np.ndarray, destination: np.ndarray, model: str, reflection: bool | str,
         noise_sigma: float | None, reject_outliers: bool, with_translation: bool) -> PointFit:
    return fit_points(source, destination, model, reflection=None if reflection == "auto" else bool(reflection),
                      with_translation=with_translation, noise_sigma=noise_sigma,
                      reject_outliers=reject_outliers)


def _fit_details(fit: PointFit, pairs: int) -> dict[str, Any]:
    return {"model": fit.model, "reflection": fit.reflection, "pairs": pairs, "rms": fit.rms,
            "rejected": list(fit.rejected), "sigma": fit.sigma if np.isfinite(fit.sigma) else None,
            "dof": fit.dof}


def _rows(matrix: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """A matrix as nested tuples of Python floats (immutable, JSON-ready)."""
    return tuple(tuple(float(v) for v in row) for row in np.asarray(matrix, dtype=float))


def _describe_linear(linear: np.ndarray) -> LinearReading:
    """Human-readable camera calibration: pixel size, rotation, mirror, shear."""
    determinant = float(np.linalg.det(linear))
    # polar-like split: rotation of the first column, scale from |det|
    return LinearReading(pixel_size=float(np.sqrt(abs(determinant))),
                         rotation_deg=float(np.degrees(np.arctan2(linear[1, 0], linear[0, 0]))),
                         mirrored=determinant < 0,
                         column_norms=(float(np.linalg.norm(linear[:, 0])), float(np.linalg.norm(linear[:, 1]))))


def _camera_parameter_cov(entry_covariance: np.ndarray, beam: tuple[float, float] | None) -> np.ndarray:
    """Covariance of (A11, A12, d1, A21, A22, d2) from that of the camera -> stage matrix entries."""
    inverse_basis = np.linalg.inv(camera_basis(np.zeros(2) if beam is None else np.asarray(beam)))
    return inverse_basis @ entry_covariance @ inverse_basis.T


def _camera_edge(source: str, matrix: np.ndarray, covariance: np.ndarray, position: tuple[float, float] | None,
                 beam: tuple[float, float] | None, record: dict[str, Any]) -> tuple[Edge, CameraEdgeReading]:
    """The calibration edge from a camera <-> stage matrix measured in the camera frame at ``position``.

    Only the 2x2 part ``A`` defines the calibration; the translation of the given matrix is
    ``S - A b`` for that frame and is reported as the beam position it implies, so a user
    can compare it with BeamPosition instead of having two competing definitions of ``b``.
    """
    if source == STAGE:
        covariance = inverse_jacobian(matrix) @ covariance @ inverse_jacobian(matrix).T
        matrix = np.linalg.inv(matrix)
    linear = np.eye(3)
    linear[:2, :2] = matrix[:2, :2]
    implied = None
    if position is not None:
        solved = np.linalg.solve(matrix[:2, :2], np.asarray(position) - matrix[:2, 2])
        implied = (float(solved[0]), float(solved[1]))
    reading = CameraEdgeReading(None if beam is None else (float(beam[0]), float(beam[1])), implied,
                                _describe_linear(matrix[:2, :2]))
    record = {**record, **_plain(reading.as_dict())}
    return (Edge(CAMERA, STAGE, "camera", linear, _camera_parameter_cov(covariance, beam), position, record),
            reading)


def _claim_unit(state: GraphState, frame: str, unit: str | None) -> None:
    """Give a new frame its unit, or refuse a unit that contradicts the frame's (no silent mixing)."""
    known = state.units.get(frame)
    if known is None:
        state.units[frame] = unit or "px"
    elif unit is not None and unit != known:
        raise BadArgument(f"frame '{frame}' is in {known}, not {unit}; convert the matrix to {known}, or "
                          f"remove the frame and set it again in {unit}")


def _check_limits(limits: Limits | None) -> np.ndarray | None:
    if limits is None:
        return None
    try:
        array = np.asarray(limits, dtype=float)
    except (TypeError, ValueError):
        raise BadArgument("limits must be ((xmin, xmax), (ymin, ymax))") from None
    if array.shape != (2, 2) or np.isnan(array).any() or (array[:, 0] > array[:, 1]).any():
        raise BadArgument(f"limits must be ((xmin, xmax), (ymin, ymax)) with min <= max, got {limits!r}")
    return array


def _inside(stage_points: np.ndarray, limits: np.ndarray | None) -> np.ndarray:
    """Inside the limits; unknown limits (None, or an infinite bound: the motor declares none)
    are never "inside", so nothing is declared safe to drive to by default."""
    finite = np.isfinite(stage_points).all(axis=1)
    if limits is None or not np.isfinite(limits).all():
        return np.zeros(len(stage_points), dtype=bool)
    return finite & ((stage_points >= limits[:, 0]) & (stage_points <= limits[:, 1])).all(axis=1)


class _Mapped:
    def __init__(self, points: np.ndarray, uncertainty: np.ndarray, matrix: np.ndarray, path: list[str]) -> None:
        self.points, self.uncertainty, self.matrix, self.path = points, uncertainty, matrix, path


def _map(state: GraphState, source: str, target: str, points: np.ndarray,
         call_position: tuple[float, float] | None) -> _Mapped:
    if source == target:
        return _Mapped(points.copy(), np.zeros(len(points)), np.eye(3), [])
    path = find_path(state.edges, source, target)
    steps = build_chain(state.edges, path, call_position, state.beam_position)
    mapped = compose(steps, points)
    return _Mapped(mapped.points, mapped.uncertainty, mapped.matrix, [step.describe() for step in steps])
