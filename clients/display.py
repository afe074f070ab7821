"""Numbers and tables for people: units on every number, digits that mean something.

The devices answer in their own units with full float precision (stage units, px, s);
what a scientist reads at the console should say what each number is, with the digits
its uncertainty allows: a pixel size to 4 significant digits, residuals and hit errors
in nm, a camera rotation as the small angle it really is. The demo and the CLI print
through these helpers so the same quantity reads the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

UM_PER_UNIT = {"mm": 1000.0, "um": 1.0, "µm": 1.0, "micron": 1.0, "nm": 0.001, "m": 1.0e6}
"""Micrometres in one stage unit, for the units a Pool motor's Position may carry."""


def um_per_unit(unit: str | None) -> float:
    """Micrometres per stage unit; the simulated and most real nanoprobe stages use mm."""
    return UM_PER_UNIT.get((unit or "mm").strip(), 1000.0)


def significant(value: float, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits, never in exponent form for lab ranges."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
    return f"{value:.{decimals}f}"


def nanometres(value_nm: float) -> str:
    """A small length in nm: whole nm from 10 nm, 0.1 nm from 1 nm, two significant digits
    below (a residual of 0.012 nm must not read as 0.0)."""
    if value_nm is None or not math.isfinite(value_nm):
        return "n/a"
    if abs(value_nm) >= 10:
        return f"{value_nm:.0f} nm"
    if abs(value_nm) >= 1:
        return f"{value_nm:.1f} nm"
    return f"{significant(value_nm, 2)} nm"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: how long something took or will take."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class CameraGeometry:
    """A camera -> stage calibration said the way a scientist thinks of the camera.

    The calibration ``A`` of ``X = S + A (p - b)`` carries a physical minus sign: moving the
    stage +x carries the sample, so a feature right of the beam needs the stage moved left.
    Read naively, ``A`` of a camera turned by +1.3° is a rotation of -178.7°. The camera
    itself is ``C = -A`` (camera px -> lab), written as ``pixel size * R(rotation) * F`` with
    F no flip or a flip of x or of y; a flip can be written either way with rotations 180°
    apart, so we choose the one that leaves the rotation within ±90°."""

    pixel_size_um: float
    rotation_deg: float
    flip: str | None
    """None, "x" (columns mirrored) or "y" (rows mirrored), applied before the rotation."""
    shear_deg: float
    aspect: float
    """Ratio of the pixel's stage lengths along its columns and rows (1 = square pixels)."""

    def describe(self) -> str:
        mirror = "not mirrored" if self.flip is None else f"image mirrored in {self.flip}"
        text = (f"pixel size {significant(self.pixel_size_um, 4)} µm/px, camera turned {self.rotation_deg:+.2f}°, "
                f"{mirror}")
        if abs(self.shear_deg) >= 0.05:
            text += f", shear {self.shear_deg:+.2f}°"
        if abs(self.aspect - 1.0) >= 0.001:
            text += f", aspect {self.aspect:.4f}"
        return text


def camera_geometry(calibration: Sequence[Sequence[float]], stage_unit: str | None = "mm") -> CameraGeometry:
    """Pixel size, rotation, flip, shear and aspect of the camera from the 2x2 calibration
    ``A`` (stage units per px) of ``X = S + A (p - b)``; see :class:`CameraGeometry`."""
    c = -np.asarray(calibration, float)[:2, :2] * um_per_unit(stage_unit)
    det = float(np.linalg.det(c))
    theta = math.degrees(math.atan2(c[1, 0], c[0, 0]))
    flip: str | None = None
    rotation, unflipped = theta, c
    if det < 0:
        # C = R(theta) @ diag(-1, 1) ("x") = R(theta + 180°) @ diag(1, -1) ("y"): the same matrix
        flip, rotation = ("x", _wrap(theta + 180.0)) if abs(theta) > 90 else ("y", theta)
        unflipped = c @ (np.diag([-1.0, 1.0]) if flip == "x" else np.diag([1.0, -1.0]))
    column_x, column_y = unflipped[:, 0], unflipped[:, 1]
    angle_between = math.degrees(math.atan2(column_x[0] * column_y[1] - column_x[1] * column_y[0],
                                            float(column_x @ column_y)))
    return CameraGeometry(pixel_size_um=math.sqrt(abs(det)), rotation_deg=rotation, flip=flip,
                          shear_deg=90.0 - angle_between,
                          aspect=float(np.linalg.norm(column_x) / np.linalg.norm(column_y)))


def _wrap(degrees: float) -> float:
    """An angle in (-180°, 180°]."""
    wrapped = (degrees + 180.0) % 360.0 - 180.0
    return 180.0 if wrapped == -180.0 else wrapped


def format_table(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with a header row: ``columns`` are (title, format spec) pairs,
    e.g. ``("x (px)", ".2f")``; None and NaN cells print as ``-``; every column is right
    aligned to the wider of its title and its cells."""
    def cell(value: Any, spec: str) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return format(value, spec) if spec else str(value)

    cells = [[cell(v, spec) for v, (_, spec) in zip(row, columns, strict=True)] for row in rows]
    widths = [max([len(title), *(len(r[i]) for r in cells)]) for i, (title, _) in enumerate(columns)]
    lines = ["  ".join(title.rjust(w) for (title, _), w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
