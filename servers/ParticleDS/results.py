"""One detection's results, immutable so readers never see half of a new detection.

The core swaps a whole :class:`ParticleResults` in when a detection succeeds; a failed
detection never touches the previous one. What the core returns from ``detect`` is a
:class:`DetectSummary`; the shell's replies are :class:`DetectReply` (``Detect``) and
:class:`DetectionRecord` (``LastResult``): frozen dataclasses whose ``as_dict()`` is the reply's
JSON object, keys in the order of docs/interface.md, and ``to_json()`` what the shell sends.
Positions are in the source image's pixels (ROI offset added), x = column, y = row, (0, 0) =
centre of the top-left pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servers.common.json_result import JsonResult

TABLE_COLUMNS: tuple[str, ...] = ("index", "x", "y", "mass", "size", "ecc", "signal", "isolated",
                                  "nn_distance", "multiplicity", "on_bright_area")
"""Columns of Table rows and of the CSV export, in order."""


@dataclass(frozen=True)
class ParticleResults:
    """Per-particle arrays (all the same length, index = particle number) and their context."""

    x: np.ndarray
    y: np.ndarray
    mass: np.ndarray
    size: np.ndarray
    ecc: np.ndarray
    signal: np.ndarray
    isolated: np.ndarray
    nn_distance: np.ndarray
    multiplicity: np.ndarray
    """Particles in this detection's blob: 1, 2, or 3 for three or more (see crowding.py)."""
    on_bright_area: np.ndarray
    """True where the detection sits on an extended bright area (a Pt marker), not a particle."""
    roi: tuple[int, int, int, int]
    image_shape: tuple[int, int]
    settings: dict[str, Any]
    elapsed_ms: float
    timestamp: float
    neighbours_only: int = 0
    """Features counted as neighbours but not reported (larger than MaxSize: clusters)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("x", "y", "mass", "size", "ecc", "signal", "isolated", "nn_distance", "multiplicity",
                     "on_bright_area"):
            getattr(self, name).setflags(write=False)

    @property
    def count(self) -> int:
        return int(self.x.shape[0])

    @property
    def isolated_count(self) -> int:
        return int(np.count_nonzero(self.isolated))

    def rows(self) -> list[dict[str, Any]]:
        """Table rows as plain Python values; non-finite distances become None."""
        rows = []
        for i in range(self.count):
            distance = float(self.nn_distance[i])
            rows.append({
                "index": i,
                "x": float(self.x[i]),
                "y": float(self.y[i]),
                "mass": float(self.mass[i]),
                "size": float(self.size[i]),
                "ecc": float(self.ecc[i]),
                "signal": float(self.signal[i]),
                "isolated": bool(self.isolated[i]),
                "nn_distance": distance if np.isfinite(distance) else None,
                "multiplicity": int(self.multiplicity[i]),
                "on_bright_area": bool(self.on_bright_area[i]),
            })
        return rows

    def summary(self) -> DetectSummary:
        """What ``detect`` returns: count, isolated, elapsed_ms, plus the ROI actually used."""
        return DetectSummary(self.count, self.isolated_count, round(self.elapsed_ms, 3), self.roi)

    def record(self, source: str) -> DetectionRecord:
        """The ``LastResult`` attribute: the summary, where the image came from, and the context."""
        return DetectionRecord(self.summary(), source, self.image_shape, dict(self.settings), self.timestamp)


@dataclass(frozen=True)
class DetectSummary(JsonResult):
    """A detection in four numbers: particles, isolated ones, time (ms), the ROI [x, y, w, h] used."""

    count: int
    isolated: int
    elapsed_ms: float
    roi: tuple[int, int, int, int]

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "isolated": self.isolated, "elapsed_ms": self.elapsed_ms,
                "roi": list(self.roi)}


@dataclass(frozen=True)
class DetectReply(JsonResult):
    """The ``Detect`` reply: the summary with the whole command's time (reading the image
    included, ``elapsed_ms``), the reading's share (``read_ms``) and the image ``source``."""

    summary: DetectSummary
    elapsed_ms: float
    read_ms: float
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.summary.as_dict(), "elapsed_ms": self.elapsed_ms, "read_ms": self.read_ms,
                "source": self.source}


@dataclass(frozen=True)
class DetectionRecord(JsonResult):
    """The ``LastResult`` attribute: the last detection's summary (its own ``elapsed_ms``), the
    image source, the image shape (rows, columns), the settings in force and when it ran."""

    summary: DetectSummary
    source: str
    image_shape: tuple[int, int]
    settings: dict[str, Any]
    timestamp: float

    def as_dict(self) -> dict[str, Any]:
        return {**self.summary.as_dict(), "source": self.source, "image_shape": list(self.image_shape),
                "settings": dict(self.settings), "timestamp": self.timestamp}
