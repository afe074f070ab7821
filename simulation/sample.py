"""The ground-truth sample: particles and Pt markers in the sample's own frame (µm).

The sample JSON is the one input every renderer shares and the one thing a user may
hand-edit, so the loader is strict and names the exact field that is wrong
(``particles[3].d: must be a positive number``): a silently ignored typo would make a
test score a different sample than the one the user meant.

Frame: x to the right, y down (the same handedness as image pixels), origin at the
top-left corner of the membrane field, which spans ``[0, width] x [0, height]``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from servers.common.errors import BadArgument, NotFound
from simulation.geometry import rotation_2x2

MATERIALS = ("CeO2", "Pt")
MARKER_SHAPES = ("L", "square", "cross", "frame")
MAX_PARTICLES = 200_000
MAX_MARKERS = 10_000


@dataclass(frozen=True)
class Marker:
    """One Pt marker. ``(x, y)`` is the centre of its bounding box, ``angle_deg`` turns it
    about that centre (positive from +x towards +y). ``w``/``h`` (L only) and ``line``
    (stroke width of L, cross and frame) are optional; ``None`` means the documented default."""

    x: float
    y: float
    shape: str
    size: float
    angle_deg: float = 0.0
    w: float | None = None
    h: float | None = None
    line: float | None = None

    def rectangles(self) -> list[tuple[float, float, float, float, float]]:
        """The marker as non-overlapping rectangles ``(cx, cy, w, h, angle_deg)`` in µm.

        Rectangles are the one primitive the SEM and camera rasterisers and the exact
        XRF beam overlap all understand; non-overlapping so that Pt is never counted twice.
        """
        s = self.size
        if self.shape == "square":
            local = [(0.0, 0.0, s, s)]
        elif self.shape == "L":
            w = self.w if self.w is not None else s
            h = self.h if self.h is not None else s / 2.0
            t = self.line if self.line is not None else min(w, h) / 3.0
            # vertical arm on the left (-x), foot along the bottom (+y, image-like axes)
            local = [(-w / 2 + t / 2, 0.0, t, h), (t / 2, h / 2 - t / 2, w - t, t)]
        elif self.shape == "cross":
            t = self.line if self.line is not None else s / 5.0
            arm = (s - t) / 2.0
            local = [(0.0, 0.0, s, t), (0.0, -(t + arm) / 2, t, arm), (0.0, (t + arm) / 2, t, arm)]
        else:  # frame
            t = self.line if self.line is not None else s / 20.0
            local = [(0.0, -s / 2 + t / 2, s, t), (0.0, s / 2 - t / 2, s, t),
                     (-s / 2 + t / 2, 0.0, t, s - 2 * t), (s / 2 - t / 2, 0.0, t, s - 2 * t)]
        rot = rotation_2x2(self.angle_deg)
        out = []
        for cx, cy, rw, rh in local:
            gx, gy = rot @ (cx, cy)
            out.append((self.x + gx, self.y + gy, rw, rh, self.angle_deg))
        return out

    def extent(self) -> float:
        """Radius (µm) of a circle about (x, y) that contains the whole marker."""
        w = self.w if self.w is not None else self.size
        h = self.h if self.h is not None else self.size
        return 0.5 * math.hypot(max(w, self.size), max(h, self.size))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"x": self.x, "y": self.y, "shape": self.shape, "size": self.size,
                                "angle_deg": self.angle_deg}
        for key in ("w", "h", "line"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data


@dataclass
class Sample:
    """Particles as parallel numpy arrays (thousands of them are rendered per call, so
    vectorised access matters) plus a short list of markers."""

    width: float
    height: float
    x: np.ndarray
    y: np.ndarray
    d: np.ndarray
    angle_deg: np.ndarray
    material: list[str]
    markers: list[Marker] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.x.size)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.width / 2.0, self.height / 2.0)

    def to_json(self) -> dict[str, Any]:
        particles = [
            {"x": round(float(x), 6), "y": round(float(y), 6), "d": round(float(d), 6),
             "material": m, "angle_deg": round(float(a), 4)}
            for x, y, d, a, m in zip(self.x, self.y, self.d, self.angle_deg, self.material, strict=True)
        ]
        return {"field": {"width": self.width, "height": self.height}, "particles": particles,
                "markers": [m.to_json() for m in self.markers]}

    def dumps(self) -> str:
        """Deterministic text: the same sample always gives the same bytes."""
        return json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps(), encoding="utf-8")


# --------------------------------------------------------------------------- loading


def _number(value: Any, where: str, *, positive: bool = False, non_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadArgument(f"{where}: must be a finite number, got {json.dumps(value)[:40]}; fix the sample file")
    if positive and value <= 0:
        raise BadArgument(f"{where}: must be a positive number, got {value}; fix the sample file")
    if non_negative and value < 0:
        raise BadArgument(f"{where}: must not be negative, got {value}; fix the sample file")
    return float(value)


def _check_keys(obj: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    if not isinstance(obj, dict):
        raise BadArgument(f"{where}: must be a JSON object, got {type(obj).__name__}; fix the sample file")
    for key in required:
        if key not in obj:
            raise BadArgument(f"{where}.{key}: missing; every entry needs {', '.join(required)}")
    for key in obj:
        if key not in required and key not in optional:
            allowed = ", ".join(required + optional)
            raise BadArgument(f"{where}.{key}: unknown key; allowed keys are {allowed}")


def sample_from_json(data: Any) -> Sample:
    """Validate a decoded sample JSON object; raise :class:`BadArgument` naming the bad field."""
    _check_keys(data, "sample", ("field", "particles", "markers"))
    _check_keys(data["field"], "field", ("width", "height"))
    width = _number(data["field"]["width"], "field.width", positive=True)
    height = _number(data["field"]["height"], "field.height", positive=True)

    particles = data["particles"]
    if not isinstance(particles, list):
        raise BadArgument("particles: must be a list of {x, y, d, material} objects")
    if len(particles) > MAX_PARTICLES:
        raise BadArgument(f"particles: {len(particles)} entries, more than the limit of {MAX_PARTICLES}")
    n = len(particles)
    xs, ys, ds, angles = np.empty(n), np.empty(n), np.empty(n), np.zeros(n)
    materials: list[str] = []
    for i, p in enumerate(particles):
        where = f"particles[{i}]"
        _check_keys(p, where, ("x", "y", "d", "material"), ("angle_deg",))
        xs[i] = _number(p["x"], f"{where}.x")
        ys[i] = _number(p["y"], f"{where}.y")
        ds[i] = _number(p["d"], f"{where}.d", positive=True)
        if "angle_deg" in p:
            angles[i] = _number(p["angle_deg"], f"{where}.angle_deg")
        if p["material"] not in MATERIALS:
            raise BadArgument(f"{where}.material: must be one of {', '.join(MATERIALS)}, "
                              f"got {json.dumps(p['material'])[:40]}")
        materials.append(p["material"])

    markers_in = data["markers"]
    if not isinstance(markers_in, list):
        raise BadArgument("markers: must be a list of {x, y, shape, size, angle_deg} objects")
    if len(markers_in) > MAX_MARKERS:
        raise BadArgument(f"markers: {len(markers_in)} entries, more than the limit of {MAX_MARKERS}")
    markers = []
    for i, m in enumerate(markers_in):
        where = f"markers[{i}]"
        _check_keys(m, where, ("x", "y", "shape", "size", "angle_deg"), ("w", "h", "line"))
        if m["shape"] not in MARKER_SHAPES:
            raise BadArgument(f"{where}.shape: must be one of {', '.join(MARKER_SHAPES)}, "
                              f"got {json.dumps(m['shape'])[:40]}")
        if m["shape"] != "L" and ("w" in m or "h" in m):
            raise BadArgument(f"{where}.w/h: only an L marker has w and h; use size for a {m['shape']}")
        if m["shape"] == "square" and "line" in m:
            raise BadArgument(f"{where}.line: a square is filled and has no line width; remove it")
        extra = {k: _number(m[k], f"{where}.{k}", positive=True) for k in ("w", "h", "line") if k in m}
        marker = Marker(x=_number(m["x"], f"{where}.x"), y=_number(m["y"], f"{where}.y"), shape=m["shape"],
                        size=_number(m["size"], f"{where}.size", positive=True),
                        angle_deg=_number(m["angle_deg"], f"{where}.angle_deg"), **extra)
        if marker.line is not None and marker.line * 2 >= marker.size and marker.shape in ("cross", "frame"):
            raise BadArgument(f"{where}.line: {marker.line} is too wide for size {marker.size}; "
                              "use a line narrower than half the size")
        markers.append(marker)
    return Sample(width=width, height=height, x=xs, y=ys, d=ds, angle_deg=angles, material=materials,
                  markers=markers)


def load_sample(path: str | Path) -> Sample:
    """Read and validate a sample JSON file."""
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"sample file {str(p)!r} does not exist; give the path of a sample JSON "
                       "(create one with `python -m simulation sample --seed N -o sample.json`)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise BadArgument(f"sample file {str(p)!r} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return sample_from_json(data)


def _refuse_constant(name: str) -> Any:
    raise BadArgument(f"{name} is not allowed in a sample file; write finite numbers")
