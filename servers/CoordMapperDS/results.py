"""What CoordMapperCore's commands return: frozen dataclasses, one per command.

Why not dicts: the replies are built from parts (the stored edge, the fit, the camera
calibration's reading) and a dict merged from parts hid which key came from where and in
which order a client sees them. Each dataclass names its parts once; :meth:`as_dict` puts
them together in the order the replies have always had (docs/interface.md, docs/coordmapper.md)
and :meth:`to_json` is what the shell sends (``servers.common.jsonargs.dumps``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from servers.common.frames import CAMERA, STAGE
from servers.common.json_result import JsonResult
from servers.common.pointfit import PointFit
from servers.common.priorfit import RefinedFit


@dataclass(frozen=True)
class LinearReading(JsonResult):
    """A camera calibration as people read it: pixel size (stage units per px), rotation of
    the first column, mirror (negative determinant), and the two column lengths (shear, aspect)."""

    pixel_size: float
    rotation_deg: float
    mirrored: bool
    column_norms: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        return {"pixel_size": self.pixel_size, "rotation_deg": self.rotation_deg, "mirrored": self.mirrored,
                "column_norms": list(self.column_norms)}


@dataclass(frozen=True)
class CameraEdgeReading(JsonResult):
    """What storing a camera <-> stage matrix says besides the edge: the BeamPosition in use,
    the beam position the matrix's translation implies (given a stage_position), its reading."""

    beam_position_in_use: tuple[float, float] | None
    implied_beam_position: tuple[float, float] | None
    linear: LinearReading

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"beam_position_in_use": None if self.beam_position_in_use is None
                                  else list(self.beam_position_in_use)}
        if self.implied_beam_position is not None:
            result["implied_beam_position"] = list(self.implied_beam_position)
        result.update(self.linear.as_dict())
        return result


@dataclass(frozen=True)
class StoredTransform(JsonResult):
    """The SetTransform and FitTransform reply: the edge stored, plus (FitTransform) the fit,
    plus (a fit with ``prior``) the prior's path (edges as ``a -> b``) and the pairs' 1-sigma
    radial position uncertainty."""

    source: str
    target: str
    matrix: tuple[tuple[float, ...], ...]
    camera: CameraEdgeReading | None = None
    fit: PointFit | RefinedFit | None = None
    prior_path: tuple[str, ...] | None = None
    uncertainty: tuple[float, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"from": self.source, "to": self.target,
                                  "matrix": [list(row) for row in self.matrix], "stored": True}
        if self.camera is not None:
            result.update(self.camera.as_dict())
        if self.fit is not None:
            result.update(self.fit.as_dict())  # the fit's own keys; "matrix" keeps its place
        if self.prior_path is not None:
            result["prior_path"] = list(self.prior_path)
        if self.uncertainty is not None:
            result["uncertainty"] = list(self.uncertainty)
        return result


@dataclass(frozen=True)
class CameraCalibration(JsonResult):
    """The CalibrateCamera reply: the fit of image shifts to stage steps, and its reading."""

    fit: PointFit
    linear: LinearReading

    def as_dict(self) -> dict[str, Any]:
        return {**self.fit.as_dict(), "from": CAMERA, "to": STAGE, **self.linear.as_dict()}


@dataclass(frozen=True)
class RemovedFrame(JsonResult):
    """The RemoveFrame reply: the frame and the edges ``[first, second]`` that went with it."""

    frame: str
    removed_edges: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"frame": self.frame, "removed_edges": [list(key) for key in self.removed_edges]}


@dataclass(frozen=True)
class MappedPoints(JsonResult):
    """The Map reply (docs/coordmapper.md, "within_limits"); ``stage_position_used`` is the
    motor position the shell read for a Map from or to ``camera`` without one."""

    source: str
    target: str
    unit: str
    points: tuple[tuple[float, float], ...]
    uncertainty: tuple[float, ...]
    within_limits: tuple[bool, ...]
    matrix: tuple[tuple[float, ...], ...]
    path: tuple[str, ...]
    warnings: tuple[str, ...]
    stage_position_used: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "from": self.source,
            "to": self.target,
            "unit": self.unit,
            "points": [list(point) for point in self.points],
            "uncertainty": list(self.uncertainty),
            "within_limits": list(self.within_limits),
            "matrix": [list(row) for row in self.matrix],
            "path": list(self.path),
            "warnings": list(self.warnings),
        }
        if self.stage_position_used is not None:
            result["stage_position_used"] = list(self.stage_position_used)
        return result
