"""What RegistrationCore returns: frozen dataclasses, one per kind of result.

Why not dicts: a dict built in one place and read in three (the reply, the attributes, the
State/Status text) lets a misspelt key or a changed value type through to clients unnoticed;
a frozen dataclass names every field once, with its type, and cannot be changed by a reader
after the core stored it as ``last_result``. The public form stays the JSON of
docs/interface.md: :meth:`as_dict` gives its keys in the order clients have always seen, and
:meth:`to_json` is what the shell sends (``servers.common.jsonargs.dumps``: numpy values plain,
non-finite numbers ``null``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from servers.common.json_result import JsonResult

Matrix = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]


def as_matrix(matrix: np.ndarray) -> Matrix:
    """A 3x3 array as nested tuples of Python floats (immutable, JSON-ready)."""
    rows = np.asarray(matrix, dtype=float).tolist()
    return (tuple(rows[0]), tuple(rows[1]), tuple(rows[2]))


@dataclass(frozen=True)
class SlotDescription(JsonResult):
    """One slot as ``SlotInfo`` lists it, and the start of a LoadImage/GrabImage reply."""

    slot: str
    width: int
    height: int
    pixel_size_um: float
    dtype: str
    warnings: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, "width": self.width, "height": self.height,
                "pixel_size_um": self.pixel_size_um, "dtype": self.dtype, "warnings": list(self.warnings)}


@dataclass(frozen=True)
class FileSource(JsonResult):
    """What an image file said (:class:`servers.common.imageio.LoadedImage`): format, where the pixel size
    came from, and, where the file gives them, the stage position and the channels."""

    format: str
    pixel_size_source: str | None
    stage: dict[str, float] | None = None
    stage_source: str | None = None
    channel: str | None = None
    channels: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        described: dict[str, Any] = {"format": self.format, "pixel_size_source": self.pixel_size_source}
        if self.stage is not None:
            described["stage"] = dict(self.stage)
            described["stage_source"] = self.stage_source
        if self.channel is not None:
            described["channel"] = self.channel
            described["channels"] = list(self.channels)
        return described


@dataclass(frozen=True)
class LoadedImage(JsonResult):
    """The LoadImage reply (``file`` set) or the GrabImage reply (``metadata`` set: the frame's)."""

    slot: SlotDescription
    file: FileSource | None = None
    metadata: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        result = self.slot.as_dict()
        if self.file is not None:
            result.update(self.file.as_dict())
        if self.metadata is not None:
            result["metadata"] = dict(self.metadata)
        return result


@dataclass(frozen=True)
class Uncertainty(JsonResult):
    """1-sigma of an image registration: the target centre's image (``point``) per axis in
    reference px, the rotation (deg) and the relative scale."""

    shift_px: tuple[float, float]
    rotation_deg: float
    scale: float
    point: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        return {"shift_px": list(self.shift_px), "rotation_deg": self.rotation_deg, "scale": self.scale,
                "point": list(self.point)}


@dataclass(frozen=True)
class Registration(JsonResult):
    """What every registration result has: the matrix (target px -> reference px), its
    similarity reading, the confidence and whether it passed (``success``).

    One :meth:`as_dict` for every kind: the fit's keys, then the kind's own (:meth:`details`),
    then the warnings. Only where the slot names stand differs, as the replies have always had
    them (``SLOTS_FIRST``): right after ``model`` in Register, just before ``elapsed_ms`` in
    RegisterFiducials."""

    SLOTS_FIRST: ClassVar[bool] = True

    model: str
    reference: str
    target: str
    matrix: Matrix
    shift_px: tuple[float, float]
    rotation_deg: float
    scale: float
    confidence: float
    success: bool
    warnings: tuple[str, ...]
    elapsed_ms: float

    @property
    def matrix_array(self) -> np.ndarray:
        return np.array(self.matrix, dtype=float)

    def details(self) -> dict[str, Any]:
        """The keys of this kind of result, between ``success`` and ``warnings``."""
        return {}

    def as_dict(self) -> dict[str, Any]:
        slots = {"reference": self.reference, "target": self.target}
        return {
            "model": self.model,
            **(slots if self.SLOTS_FIRST else {}),
            "matrix": [list(row) for row in self.matrix],
            "shift_px": list(self.shift_px),
            "rotation_deg": self.rotation_deg,
            "scale": self.scale,
            "confidence": self.confidence,
            "success": self.success,
            **self.details(),
            "warnings": list(self.warnings),
            **({} if self.SLOTS_FIRST else slots),
            "elapsed_ms": self.elapsed_ms,
        }


@dataclass(frozen=True)
class ImageRegistration(Registration):
    """The Register reply (docs/interface.md, ``Register``)."""

    uncertainty: Uncertainty
    covariance: tuple[tuple[float, ...], ...]
    """6x6 covariance of (a11, a12, a13, a21, a22, a23): CoordMapperDS's SetTransform form."""
    distinctness: float
    polarity: int
    representation: str
    common_pixel_size_um: float

    def details(self) -> dict[str, Any]:
        return {
            "uncertainty": self.uncertainty.as_dict(),
            "covariance": [list(row) for row in self.covariance],
            "distinctness": self.distinctness,
            "polarity": self.polarity,
            "representation": self.representation,
            "common_pixel_size_um": self.common_pixel_size_um,
        }


@dataclass(frozen=True)
class FiducialRegistration(Registration):
    """The RegisterFiducials reply: a Register-style result plus the pairs' residuals."""

    SLOTS_FIRST: ClassVar[bool] = False

    residuals_px: tuple[float, ...]
    rms_px: float
    inliers: tuple[bool, ...]
    rejected: tuple[int, ...]

    def details(self) -> dict[str, Any]:
        return {
            "residuals_px": list(self.residuals_px),
            "rms_px": self.rms_px,
            "inliers": list(self.inliers),
            "rejected": list(self.rejected),
        }
