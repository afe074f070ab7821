"""What is drawn over the camera image, and where it comes from.

Everything is asked of the devices for the frame on screen: the beam at
CoordMapperDS ``BeamPosition``, the registered reference outline and the detected
particles mapped to ``camera`` px with ``Map`` at the stage position stamped on that
frame (so overlays stay right while the stage moves between frames), the scale bar
from CameraDS ``PixelSize``. Each part fails alone: a missing registration hides the
outline and says why, the rest is still drawn.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyqtgraph as pg
from taurus.external.qt import Qt

from clients.commands import CommandError, SmartClient

BEAM_COLOUR = (255, 0, 255)        # magenta: never a grey camera pixel, easy to find in a screenshot
OUTLINE_COLOUR = (0, 255, 255)     # cyan
ISOLATED_COLOUR = (0, 230, 0)      # green, as in ParticleDS AnnotatedImage
CROWDED_COLOUR = (255, 110, 0)     # orange-red
SCALE_COLOUR = (255, 255, 0)       # yellow
REFERENCE_SLOT = "reference"       # the slot smart_register loads the reference into


@dataclass
class OverlayData:
    """Overlay geometry in camera px for one frame; ``notes`` says what could not be drawn."""

    beam: tuple[float, float] | None = None
    outline: np.ndarray | None = None
    particles: np.ndarray | None = None
    isolated: np.ndarray | None = None
    pixel_size_um: float | None = None
    frame: str | None = None
    notes: list[str] = field(default_factory=list)


def frame_stage_position(client: SmartClient, metadata: dict[str, Any]) -> list[float] | None:
    """The stage position stamped on a frame, in the mapper's MotorX/MotorY order."""
    stage = metadata.get("stage") or {}
    try:
        motors = client.motor_names()
    except CommandError:
        return None
    values = []
    for motor in motors:
        found = [v for k, v in stage.items() if k == motor or k.rsplit("/", 1)[-1] == motor]
        if not found or found[0] is None:
            return None
        values.append(float(found[0]))
    return values


def reference_frame(client: SmartClient) -> str | None:
    """The registered reference frame: ``sem`` when present, else the first non-built-in one."""
    frames = [str(f) for f in (client.read("mapper", "Frames") or [])]
    others = [f for f in frames if f not in ("stage", "camera")]
    return "sem" if "sem" in others else (others[0] if others else None)


def collect(client: SmartClient, stage_position: list[float] | None) -> OverlayData:
    """Ask the devices for everything drawn over the frame taken at ``stage_position``."""
    data = OverlayData()
    try:
        data.pixel_size_um = float(client.read("camera", "PixelSize"))
    except (CommandError, TypeError, ValueError) as exc:
        data.notes.append(f"no pixel size ({exc})")
    try:
        beam = client.read("mapper", "BeamPosition")
        if beam is not None and len(beam) == 2 and all(math.isfinite(v) for v in beam):
            data.beam = (float(beam[0]), float(beam[1]))
    except CommandError:
        data.notes.append("beam position not set")
    try:
        data.frame = reference_frame(client)
    except CommandError as exc:
        data.notes.append(exc.one_line())
    if data.frame is None:
        data.notes.append("no registered reference")
        return data
    points: list[list[float]] = []
    corners = _reference_corners(client)
    points += corners
    try:
        rows = client.read_json("particles", "Table") or []
    except (CommandError, ValueError):
        rows = []
    points += [[float(r["x"]), float(r["y"])] for r in rows]
    if not points:
        return data
    try:
        mapped = np.asarray(client.map(data.frame, "camera", points, stage_position)["points"], float)
    except CommandError as exc:
        data.notes.append(f"{data.frame} -> camera: {exc.one_line()}")
        return data
    if corners:
        data.outline = np.vstack([mapped[:4], mapped[:1]])
    if rows:
        data.particles = mapped[len(corners):]
        data.isolated = np.array([bool(r.get("isolated")) for r in rows])
    return data


def _reference_corners(client: SmartClient) -> list[list[float]]:
    """Corners (pixel-centre convention) of the image registered as the reference."""
    try:
        slots = json.loads(client.read("registration", "SlotInfo") or "[]")
    except (CommandError, ValueError):
        return []
    info = next((s for s in slots if isinstance(s, dict) and s.get("slot") == REFERENCE_SLOT), None)
    if not info:
        return []
    w, h = float(info["width"]), float(info["height"])
    return [[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]]


def nice_length_um(span_um: float) -> float:
    """A 1-2-5 length near a fifth of the field, so the bar reads at a glance."""
    target = max(span_um / 5.0, 1e-6)
    power = 10 ** math.floor(math.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target)


class OverlayItems:
    """The pyqtgraph items over the camera image; ``update`` redraws from one OverlayData."""

    def __init__(self, plot: pg.PlotWidget) -> None:
        def pen(colour: tuple[int, int, int], width: float) -> Qt.QPen:
            p = pg.mkPen(colour, width=width)
            p.setCosmetic(True)
            return p

        self.beam = pg.PlotCurveItem(pen=pen(BEAM_COLOUR, 3), connect="pairs")
        self.outline = pg.PlotCurveItem(pen=pen(OUTLINE_COLOUR, 2))
        self.isolated = pg.ScatterPlotItem(symbol="o", size=14, pen=pen(ISOLATED_COLOUR, 2), brush=None)
        self.crowded = pg.ScatterPlotItem(symbol="o", size=10, pen=pen(CROWDED_COLOUR, 1.5), brush=None)
        self.scale = pg.PlotCurveItem(pen=pen(SCALE_COLOUR, 5))
        self.scale_text = pg.TextItem(color=SCALE_COLOUR, anchor=(0.5, 1.0))
        for item in (self.outline, self.crowded, self.isolated, self.beam, self.scale, self.scale_text):
            item.setZValue(10)
            plot.addItem(item)

    def update(self, data: OverlayData, shape: tuple[int, int] | None) -> None:
        if data.beam is not None:
            bx, by = data.beam
            arm = 0.04 * (max(shape) if shape else 1000)
            gap = arm * 0.25  # the beam pixel itself stays visible
            xs = [bx - arm, bx - gap, bx + gap, bx + arm, bx, bx, bx, bx]
            ys = [by, by, by, by, by - arm, by - gap, by + gap, by + arm]
            self.beam.setData(xs, ys)
        else:
            self.beam.setData([], [])
        if data.outline is not None:
            self.outline.setData(data.outline[:, 0], data.outline[:, 1])
        else:
            self.outline.setData([], [])
        if data.particles is not None and data.isolated is not None:
            self.isolated.setData(pos=data.particles[data.isolated])
            self.crowded.setData(pos=data.particles[~data.isolated])
        else:
            self.isolated.setData(pos=np.empty((0, 2)))
            self.crowded.setData(pos=np.empty((0, 2)))
        if data.pixel_size_um and shape:
            height, width = shape
            length_um = nice_length_um(width * data.pixel_size_um)
            length_px = length_um / data.pixel_size_um
            x0, y0 = 0.05 * width, 0.94 * height
            self.scale.setData([x0, x0 + length_px], [y0, y0])
            self.scale_text.setText(f"{length_um:g} µm")
            self.scale_text.setPos(x0 + length_px / 2, y0 - 0.01 * height)
        else:
            self.scale.setData([], [])
            self.scale_text.setText("")
