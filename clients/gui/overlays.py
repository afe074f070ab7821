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
from macros.smart_support import SmartMacroError, stage_of_frame

BEAM_COLOUR = (255, 0, 255)        # magenta: never a grey camera pixel, easy to find in a screenshot
OUTLINE_COLOUR = (0, 255, 255)     # cyan
ISOLATED_COLOUR = (0, 230, 0)      # green, as in ParticleDS AnnotatedImage
CROWDED_COLOUR = (255, 110, 0)     # orange-red
SCALE_COLOUR = (255, 255, 0)       # yellow
SCANNED_COLOUR = (80, 170, 255)    # sky blue: a square around a particle the loop has scanned
MARKER_COLOUR = (160, 160, 160)    # grey: a detection on a Pt marker or other large bright area
LABEL_COLOUR = (235, 235, 235)
LABEL_MIN_SPACING_SCREEN_PX = 16.0
"""A particle's index label is shown once its nearest neighbour is this far away on screen:
isolated particles are labelled at the reference zoom, members of a cluster only when zoomed
into it, and at full-frame zoom nothing piles up into an unreadable blot."""
REFERENCE_SLOT = "reference"       # the slot smart_register loads the reference into


@dataclass
class OverlayData:
    """Overlay geometry in camera px for one frame; ``notes`` says what could not be drawn."""

    beam: tuple[float, float] | None = None
    outline: np.ndarray | None = None
    particles: np.ndarray | None = None
    isolated: np.ndarray | None = None
    on_marker: np.ndarray | None = None
    """True for detections on an extended bright area (ParticleDS ``on_bright_area``, e.g. a Pt
    marker): not particles, drawn as grey crosses instead of circles."""
    indices: np.ndarray | None = None
    """The particle-table index of each row of ``particles`` (what `smart_goto` takes)."""
    scanned: np.ndarray | None = None
    """True for the particles the scan loop has finished (``SmartScanProgress``)."""
    pixel_size_um: float | None = None
    frame: str | None = None
    notes: list[str] = field(default_factory=list)


def particle_classes(isolated: np.ndarray, on_marker: np.ndarray | None) -> np.ndarray:
    """Per detection: ``"isolated"``, ``"crowded"`` (a doublet, a cluster, a near neighbour) or
    ``"marker"`` (on a Pt marker or another large bright area, not a particle). A marker
    detection is never a particle, whatever its other flags say."""
    classes = np.where(np.asarray(isolated, bool), "isolated", "crowded").astype(object)
    if on_marker is not None:
        classes[np.asarray(on_marker, bool)] = "marker"
    return classes


def frame_stage_position(client: SmartClient, metadata: dict[str, Any]) -> list[float] | None:
    """The stage position stamped on a frame, in the mapper's MotorX/MotorY order."""
    try:
        return stage_of_frame(metadata.get("stage") or {}, client.motor_names())
    except (CommandError, SmartMacroError):
        return None


def reference_frame(client: SmartClient) -> str | None:
    """The registered reference frame: ``sem`` when present, else the first non-built-in one."""
    frames = [str(f) for f in (client.read("mapper", "Frames") or [])]
    others = [f for f in frames if f not in ("stage", "camera")]
    return "sem" if "sem" in others else (others[0] if others else None)


def scanned_particles(environment: dict[str, Any], rows: list[dict[str, Any]]) -> set[int]:
    """The table indices the scan loop has finished, if its progress belongs to this detection.

    ``SmartScanProgress`` is ``{"key", "done", "started"}``; the key (a list; a JSON text of it
    before 2026-12) holds the image, the number of particles and the rounded x of each particle
    in the loop's order. A new
    detection makes the old ``done`` list meaningless, so it is used only when the count
    matches and every x of the key is an x of the current table."""
    progress = environment.get("SmartScanProgress")
    if not isinstance(progress, dict) or not isinstance(progress.get("done"), (list, tuple)):
        return set()
    try:
        key = progress.get("key") or []
        key = json.loads(key) if isinstance(key, str) else key
        count, xs = int(key[1]), {round(float(v), 3) for v in key[2]}
    except (ValueError, TypeError, IndexError):
        return set()
    table_xs = {round(float(r["x"]), 3) for r in rows}
    if count != len(rows) or not xs <= table_xs:
        return set()
    return {int(i) for i in progress["done"] if 0 <= int(i) < len(rows)}


def macroserver_environment(client: SmartClient, macroserver: str | None) -> dict[str, Any]:
    """The MacroServer's environment (where Sardana macros keep their state), or {}."""
    if not macroserver:
        return {}
    try:
        from taurus.core.util.codecs import CodecFactory

        return dict(CodecFactory().decode(client.read(macroserver, "Environment")).get("new", {}))
    except Exception:  # noqa: BLE001 - an unreadable environment only hides the "scanned" marks
        return {}


def collect(client: SmartClient, stage_position: list[float] | None, macroserver: str | None = None) -> OverlayData:
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
        # a ParticleDS older than the on_bright_area column: every detection is drawn as a particle
        data.on_marker = np.array([bool(r.get("on_bright_area", False)) for r in rows])
        data.indices = np.array([int(r.get("index", i)) for i, r in enumerate(rows)])
        done = scanned_particles(macroserver_environment(client, macroserver), rows)
        data.scanned = np.isin(data.indices, sorted(done))
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
        self.scanned = pg.ScatterPlotItem(symbol="s", size=22, pen=pen(SCANNED_COLOUR, 2), brush=None)
        # grey with a black edge: readable on the dark membrane and on the white marker it sits on
        self.markers = pg.ScatterPlotItem(symbol="x", size=12, pen=pen((0, 0, 0), 1), brush=pg.mkBrush(MARKER_COLOUR))
        self.scale = pg.PlotCurveItem(pen=pen(SCALE_COLOUR, 5))
        self.scale_text = pg.TextItem(color=SCALE_COLOUR, anchor=(0.5, 1.0))
        for item in (self.outline, self.markers, self.crowded, self.isolated, self.scanned, self.beam, self.scale,
                     self.scale_text):
            item.setZValue(10)
            plot.addItem(item)
        self.plot = plot
        self.labels: list[pg.TextItem] = []
        self.label_spacing = np.empty(0)  # each labelled particle's nearest-neighbour distance (camera px)
        self.label_key: tuple | None = None
        self.pixel_size_um: float | None = None
        plot.getViewBox().sigRangeChanged.connect(lambda *_: self._on_range_changed())

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
            classes = particle_classes(data.isolated, data.on_marker)
            self.isolated.setData(pos=data.particles[classes == "isolated"])
            self.crowded.setData(pos=data.particles[classes == "crowded"])
            self.markers.setData(pos=data.particles[classes == "marker"])
            scanned = data.scanned if data.scanned is not None else np.zeros(len(data.particles), bool)
            self.scanned.setData(pos=data.particles[scanned])
        else:
            self.isolated.setData(pos=np.empty((0, 2)))
            self.crowded.setData(pos=np.empty((0, 2)))
            self.markers.setData(pos=np.empty((0, 2)))
            self.scanned.setData(pos=np.empty((0, 2)))
        self.set_labels(data.particles, data.indices)
        self.pixel_size_um = data.pixel_size_um
        self.place_scale_bar()

    def place_scale_bar(self) -> None:
        """A 1-2-5 µm bar in the lower left of what is on screen, sized to the visible field:
        it stays readable and in view at any zoom."""
        box = self.plot.getViewBox()
        (x0, x1), (y0, y1) = box.viewRange()
        if not self.pixel_size_um or not x1 > x0:
            self.scale.setData([], [])
            self.scale_text.setText("")
            return
        width, height = x1 - x0, y1 - y0
        length_um = nice_length_um(width * self.pixel_size_um)
        length_px = length_um / self.pixel_size_um
        # the y axis is inverted (row 0 on top): "low on screen" is the large-y end
        left, bottom = x0 + 0.05 * width, y0 + 0.94 * height
        self.scale.setData([left, left + length_px], [bottom, bottom])
        self.scale_text.setText(f"{length_um * 1000:g} nm" if length_um < 1 else f"{length_um:g} µm")
        self.scale_text.setPos(left + length_px / 2, bottom - 0.01 * height)

    def _on_range_changed(self) -> None:
        self.update_label_visibility()
        self.place_scale_bar()

    # ------------------------------------------------------------------ labels
    def set_labels(self, points: np.ndarray | None, indices: np.ndarray | None) -> None:
        """One text item per particle with its table index, reused between refreshes."""
        if points is None or indices is None or not len(points):
            points, indices = np.empty((0, 2)), np.empty(0, int)
        key = (points.round(2).tobytes(), indices.tobytes())
        if key == self.label_key:
            return
        self.label_key = key
        while len(self.labels) < len(points):
            label = pg.TextItem(color=LABEL_COLOUR, anchor=(-0.15, 1.05))
            label.setZValue(11)
            self.plot.addItem(label)
            self.labels.append(label)
        for label, (x, y), index in zip(self.labels, points, indices, strict=False):
            label.setText(str(int(index)))
            label.setPos(float(x), float(y))
        for label in self.labels[len(points):]:
            label.setText("")
        self.label_spacing = _neighbour_distances(points)
        self.update_label_visibility()

    def screen_px_per_camera_px(self) -> float:
        box = self.plot.getViewBox()
        (x0, x1), _ = box.viewRange()
        return box.width() / (x1 - x0) if x1 > x0 and box.width() > 0 else 0.0

    def visible_labels(self) -> list[str]:
        """The texts of the labels shown now (for tests and screenshots)."""
        return [label.toPlainText() for label in self.labels if label.isVisible() and label.toPlainText()]

    def update_label_visibility(self) -> None:
        readable = self.label_spacing * self.screen_px_per_camera_px() >= LABEL_MIN_SPACING_SCREEN_PX
        for i, label in enumerate(self.labels):
            label.setVisible(bool(i < len(readable) and readable[i]))


def _neighbour_distances(points: np.ndarray) -> np.ndarray:
    """Each particle's distance to its nearest neighbour (inf when it is alone)."""
    if len(points) < 2:
        return np.full(len(points), np.inf)
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(points).query(points, k=2)
    return distances[:, 1]
