"""The night in smart-gui: the queue's targets and their states, progress, time left, the
running target's map as it is scanned, pause / resume / skip, and the targets on the camera.

Everything shown is read from the queue device (QueueDS, ``smart/queue/1``: ``Targets``,
``Counts``, ``CurrentTarget``, ``TimeLeft``, ``Paused``, ``PauseReason``, ``Activity``,
``Revision``; docs/queue.md) and from the Door that runs the night: Sardana's JsonRecorder
sends every scan point on the Door's ``RecordData`` (``senv JsonRecorder True``, set by
``smart up``), which is what Spock's and Taurus' live plots use too.

The buttons steer through a Door, with the queue macros (``smart_queue_pause``,
``smart_queue_resume``, ``smart_queue_skip``), as a user in Spock would: on the night's Door
when it is idle, else on a second Door of the same MacroServer (``smart/door/02`` in the stack),
because a Door busy with ``smart_run_queue`` runs nothing else. Without a free Door the button
says so and nothing is sent.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyqtgraph as pg
import tango
from taurus.external.qt import Qt

from clients.commands import CommandError, SmartClient
from clients.display import duration
from clients.door import DoorClient, MacroFailed
from clients.scandata import grid
from macros.smart_calls import TangoThread

QUEUE_DEVICE = "smart/queue/1"
STEER_DOOR = "smart/door/02"
STATES = ("pending", "running", "done", "failed", "skipped")
STATE_COLOURS: dict[str, tuple[int, int, int]] = {
    "pending": (255, 255, 255),   # white: still to do
    "running": (255, 230, 0),     # yellow: in the beam now
    "done": (0, 220, 90),         # green
    "failed": (255, 40, 40),      # red
    "skipped": (170, 120, 255),   # violet: left out on purpose
}
QUEUE_ATTRIBUTES = ("Revision", "Counts", "CurrentTarget", "TimeLeft", "Paused", "PauseReason", "Activity")
LIVE_REDRAW_S = 0.3
"""The live map is redrawn at most this often: a 10 ms-per-point mesh sends 100 points a second."""
TABLE_COLUMNS = ("id", "state", "particle", "region", "point", "scan", "tries", "reason")


@dataclass
class QueueSnapshot:
    """The queue as the device reported it at one moment."""

    revision: int = -1
    counts: dict[str, int] = field(default_factory=dict)
    current: dict[str, Any] = field(default_factory=dict)
    time_left_s: float = math.nan
    paused: bool = False
    pause_reason: str = ""
    activity: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return sum(int(self.counts.get(state, 0)) for state in ("done", "failed", "skipped"))

    @property
    def total(self) -> int:
        return int(self.counts.get("total", sum(int(self.counts.get(s, 0)) for s in STATES)))

    def summary(self) -> str:
        """``12 targets: 3 pending, 1 running, 7 done, 1 failed, 0 skipped``."""
        parts = ", ".join(f"{int(self.counts.get(state, 0))} {state}" for state in STATES)
        return f"{self.total} targets: {parts}"

    def status(self) -> str:
        """What the loop is doing, or that the queue is paused and why."""
        if self.paused:
            return "paused" + (f": {self.pause_reason}" if self.pause_reason else "") + \
                " (the current target finishes; Resume hands out the next)"
        activity = str(self.activity.get("activity", "idle") or "idle")
        message = str(self.activity.get("message", "") or "")
        return activity.replace("_", " ") + (f": {message}" if message else "")


def read_queue(device: tango.DeviceProxy, previous: QueueSnapshot | None = None) -> QueueSnapshot:
    """One read of the queue's state; the target list only when ``Revision`` moved."""
    values = {a.name: a.value for a in device.read_attributes(list(QUEUE_ATTRIBUTES))}
    snap = QueueSnapshot(
        revision=int(values["Revision"]), counts=json.loads(values["Counts"] or "{}"),
        current=json.loads(values["CurrentTarget"] or "{}"), time_left_s=float(values["TimeLeft"]),
        paused=bool(values["Paused"]), pause_reason=str(values["PauseReason"] or ""),
        activity=json.loads(values["Activity"] or "{}"))
    if previous is not None and previous.revision == snap.revision:
        snap.targets = previous.targets
    else:
        snap.targets = json.loads(device.read_attribute("Targets").value or "[]")
    return snap


def target_point(target: dict[str, Any]) -> str:
    x, y = float(target.get("x", math.nan)), float(target.get("y", math.nan))
    return f"{target.get('frame', '?')} ({x:.1f}, {y:.1f})"


def scan_text(scan: dict[str, Any]) -> str:
    """``mesh ±0.3 µm, 50 nm, 10 ms``."""
    if not scan:
        return "-"
    try:
        return (f"{scan.get('macro', '?')} ±{float(scan['half_width_um']):g} µm, "
                f"{float(scan['step_um']) * 1000:g} nm, {float(scan['exposure']) * 1000:g} ms")
    except (KeyError, TypeError, ValueError):
        return json.dumps(scan)


def decode_record_packet(value: Any) -> dict[str, Any] | None:
    """A Door ``RecordData`` value (DevEncoded: format ``utf8_json`` and bytes) as a dict."""
    if not value or not isinstance(value, tuple | list) or len(value) != 2:
        return None
    fmt, data = value
    if str(fmt) != "utf8_json":
        return None
    try:
        return json.loads(bytes(data).decode("utf-8") if not isinstance(data, str) else data)
    except (TypeError, ValueError):
        return None


class LiveScan:
    """The points of the scan the Door is running, from its RecordData packets.

    ``data_desc`` starts a scan (columns, reference moveables, expected intervals),
    ``record_data`` adds a point, ``record_end`` closes it. The map uses the scan's first two
    moveables as x, y (the reference one first) and the column labelled ``channel`` as counts."""

    def __init__(self, channel: str = "xrf_ce") -> None:
        self.channel = channel
        self.lock = threading.Lock()
        self.title = ""
        self.serialno: int | None = None
        self.expected = 0
        self.ended = False
        self.columns: tuple[str, str, str] | None = None
        self.points: list[tuple[float, float, float]] = []
        self.changed = False

    def feed(self, packet: dict[str, Any]) -> None:
        kind, data = packet.get("type"), packet.get("data") or {}
        with self.lock:
            if kind == "data_desc":
                self.title, self.serialno = str(data.get("title", "")), data.get("serialno")
                intervals = data.get("total_scan_intervals")
                self.expected = 0
                if isinstance(intervals, int | float) and intervals >= 0:
                    self.expected = int(intervals) + 1
                if self.title.split()[:1] == ["mesh"]:
                    words = self.title.split()
                    with contextlib.suppress(IndexError, ValueError):
                        self.expected = (int(words[4]) + 1) * (int(words[8]) + 1)
                self.columns = self._columns(data.get("column_desc") or [], data.get("ref_moveables") or [])
                self.points, self.ended, self.changed = [], False, True
            elif kind == "record_data" and self.columns is not None:
                try:
                    self.points.append(tuple(float(data[name]) for name in self.columns))
                except (KeyError, TypeError, ValueError):
                    return
                self.changed = True
            elif kind == "record_end":
                self.ended, self.changed = True, True

    def _columns(self, desc: Sequence[dict[str, Any]], references: Sequence[str]) -> tuple[str, str, str] | None:
        """x, y and counts column names. A mesh names only its first motor as the reference
        moveable; every moveable column carries ``is_reference`` (true or false)."""
        by_label = {str(d.get("label")): str(d.get("name")) for d in desc}
        names = {str(d.get("name")) for d in desc}
        axes = [m if m in names else by_label.get(m, m) for m in references]
        axes += [str(d.get("name")) for d in desc if "is_reference" in d and str(d.get("name")) not in axes]
        axes = axes[:2]
        counts = by_label.get(self.channel) or next((n for n in names if n.endswith("/" + self.channel)), None)
        if len(axes) < 2 or counts is None:
            return None
        return axes[0], axes[1], counts

    def image(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x values, y values, counts[y, x]) of the points so far; NaN where not yet scanned."""
        with self.lock:
            self.changed = False
            if not self.points:
                return np.zeros(0), np.zeros(0), np.zeros((0, 0))
            data = np.array(self.points)
        return grid(data[:, 0], data[:, 1], data[:, 2])

    def progress_text(self) -> str:
        with self.lock:
            if self.columns is None and self.title:
                return f"{self.title}: no '{self.channel}' column to map"
            if not self.title:
                return "no scan yet (the Door's RecordData needs: senv JsonRecorder True)"
            total = f"/{self.expected}" if self.expected else ""
            return f"scan {self.serialno}: {len(self.points)}{total} points" + (" (ended)" if self.ended else "")


class QueueOverlay:
    """The queue's targets on the camera view, one symbol colour per state."""

    def __init__(self, plot: pg.PlotWidget) -> None:
        self.items: dict[str, pg.ScatterPlotItem] = {}
        for state in STATES:
            pen = pg.mkPen(STATE_COLOURS[state], width=2)
            pen.setCosmetic(True)
            item = pg.ScatterPlotItem(symbol="d", size=18 if state == "running" else 12, pen=pen, brush=None)
            item.setZValue(11)
            plot.addItem(item)
            self.items[state] = item
        self.positions: dict[str, np.ndarray] = {state: np.empty((0, 2)) for state in STATES}

    def update(self, client: SmartClient, targets: Sequence[dict[str, Any]], stage_position: list[float] | None,
               notes: list[str] | None = None) -> None:
        """Map every target to camera px (one Map per frame, at the frame's stage position) and draw it."""
        by_frame: dict[str, list[dict[str, Any]]] = {}
        for target in targets:
            by_frame.setdefault(str(target.get("frame")), []).append(target)
        positions: dict[str, list[list[float]]] = {state: [] for state in STATES}
        for frame, group in by_frame.items():
            points = [[float(t["x"]), float(t["y"])] for t in group]
            try:
                mapped = points if frame == "camera" else client.map(frame, "camera", points, stage_position)["points"]
            except CommandError as exc:
                if notes is not None:
                    notes.append(f"queue targets in {frame}: {exc.one_line()}")
                continue
            for target, point in zip(group, mapped, strict=True):
                positions.setdefault(str(target.get("state")), []).append(point)
        for state in STATES:
            self.positions[state] = np.asarray(positions.get(state) or np.empty((0, 2)), float).reshape(-1, 2)
            self.items[state].setData(pos=self.positions[state])


class QueuePanel(Qt.QWidget):
    """The Queue tab: targets with their state, progress, time left, live map, steering buttons."""

    recordPacket = Qt.pyqtSignal(object)
    steerFinished = Qt.pyqtSignal(bool, str)

    def __init__(self, client: SmartClient, queue_device: str = QUEUE_DEVICE, steer_door: str = STEER_DOOR,
                 channel: str = "xrf_ce", parent: Qt.QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.queue_name = queue_device
        self.steer_door = steer_door
        self.snapshot = QueueSnapshot()
        self.live = LiveScan(channel)
        self.last_steer: tuple[bool, str] | None = None
        self.steering = False
        self._live_drawn = 0.0
        self._record_events: list[tuple[tango.DeviceProxy, int]] = []
        self._build()
        self.recordPacket.connect(self._on_packet)
        self.steerFinished.connect(self._on_steer_finished)
        self._subscribe_record_data()

    # ---------------------------------------------------------------- layout
    def _build(self) -> None:
        layout = Qt.QVBoxLayout(self)
        self.summary_label = Qt.QLabel("queue: -")
        self.summary_label.setWordWrap(True)
        self.status_label = Qt.QLabel("-")
        self.status_label.setWordWrap(True)
        self.progress = Qt.QProgressBar()
        self.progress.setFormat("%v of %m targets finished")
        self.time_left_label = Qt.QLabel("time left: -")
        buttons = Qt.QHBoxLayout()
        self.pause_button = Qt.QPushButton("Pause after this target")
        self.resume_button = Qt.QPushButton("Resume")
        self.skip_button = Qt.QPushButton("Skip selected (or current)")
        self.pause_button.clicked.connect(self.pause)
        self.resume_button.clicked.connect(self.resume)
        self.skip_button.clicked.connect(self.skip)
        for button in (self.pause_button, self.resume_button, self.skip_button):
            buttons.addWidget(button)
        self.steer_label = Qt.QLabel("")
        self.steer_label.setWordWrap(True)
        self.table = Qt.QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
        self.table.setEditTriggers(Qt.QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(Qt.QAbstractItemView.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.live_title = Qt.QLabel("live map: -")
        self.live_plot = pg.PlotWidget()
        self.live_plot.setAspectLocked(True)
        self.live_plot.getPlotItem().invertY(False)
        self.live_plot.setLabel("bottom", "x from the scan centre (µm)")
        self.live_plot.setLabel("left", "y (µm)")
        self.live_image = pg.ImageItem()
        self.live_image.setColorMap(pg.colormap.get("magma"))
        self.live_plot.addItem(self.live_image)
        self.live_plot.setMinimumHeight(220)
        for widget in (self.summary_label, self.status_label, self.progress, self.time_left_label):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        layout.addWidget(self.steer_label)
        splitter = Qt.QSplitter(Qt.Qt.Vertical)
        splitter.addWidget(self.table)
        live = Qt.QWidget()
        live_layout = Qt.QVBoxLayout(live)
        live_layout.setContentsMargins(0, 0, 0, 0)
        live_layout.addWidget(self.live_title)
        live_layout.addWidget(self.live_plot, 1)
        splitter.addWidget(live)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        layout.addWidget(splitter, 1)

    # ------------------------------------------------------------- live data
    def _subscribe_record_data(self) -> None:
        """Every Door of this GUI may run a scan: follow the night's Door's RecordData."""
        try:
            door = tango.DeviceProxy(self.client.trl(self.client.door_name))
            event_id = door.subscribe_event("RecordData", tango.EventType.CHANGE_EVENT, self._on_record_event)
            self._record_events.append((door, event_id))
        except tango.DevFailed as exc:
            self.live_title.setText(f"live map: cannot follow the Door's scans ({exc.args[0].desc.strip()[:120]})")

    def _on_record_event(self, event: tango.EventData) -> None:
        """A Tango event thread: hand the packet to the Qt thread."""
        if event.err or event.attr_value is None:
            return
        packet = decode_record_packet(event.attr_value.value)
        if packet is not None:
            self.recordPacket.emit(packet)

    def _on_packet(self, packet: dict[str, Any]) -> None:
        self.live.feed(packet)
        if packet.get("type") != "record_data" or time.monotonic() - self._live_drawn > LIVE_REDRAW_S:
            self.draw_live()

    def draw_live(self) -> None:
        self._live_drawn = time.monotonic()
        xs, ys, image = self.live.image()
        current = self.snapshot.current
        who = (f"target {current.get('id')}" + (f" (particle {current['particle']})"
                                                  if current.get("particle") is not None else "")) if current else ""
        self.live_title.setText(f"live map{': ' + who if who else ''} — {self.live.progress_text()}")
        if image.size == 0:
            self.live_image.clear()
            return
        finite = image[np.isfinite(image)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        self.live_image.setImage(np.nan_to_num(image, nan=low).T, levels=(low, max(high, low + 1e-9)))
        # stage units (mm at the virtual beamline) -> µm from the scan centre; one pixel per scan point
        scale = 1000.0 if abs(float(np.ptp(xs)) if len(xs) else 0.0) < 1.0 else 1.0
        cx, cy = float(np.mean(xs)), float(np.mean(ys))
        dx = (xs[1] - xs[0]) * scale if len(xs) > 1 else 0.05
        dy = (ys[1] - ys[0]) * scale if len(ys) > 1 else 0.05
        self.live_image.setRect(Qt.QRectF((xs[0] - cx) * scale - dx / 2, (ys[0] - cy) * scale - dy / 2,
                                          dx * len(xs), dy * len(ys)))

    # ----------------------------------------------------------------- state
    def refresh(self) -> QueueSnapshot | None:
        """Read the queue and show it; None (and a note) when the queue device does not answer."""
        try:
            snap = read_queue(self.client.proxy(self.queue_name), self.snapshot)
        except (tango.DevFailed, CommandError, ValueError, KeyError) as exc:
            text = exc.args[0].desc.strip() if isinstance(exc, tango.DevFailed) else str(exc)
            self.summary_label.setText(f"queue {self.queue_name}: not answering ({text[:160]})")
            return None
        if self.live.changed:  # points that came after the last throttled redraw
            self.draw_live()
        rebuild = snap.revision != self.snapshot.revision or not self.table.rowCount()
        self.snapshot = snap
        self.summary_label.setText(snap.summary())
        self.status_label.setText(snap.status())
        self.progress.setMaximum(max(snap.total, 1))
        self.progress.setValue(snap.finished)
        self.time_left_label.setText(f"time left: about {duration(snap.time_left_s)}"
                                     if snap.counts.get("pending") or snap.counts.get("running")
                                     else "time left: nothing left to scan")
        if rebuild:
            self.fill_table(snap.targets)
        return snap

    def fill_table(self, targets: Sequence[dict[str, Any]]) -> None:
        selected = set(self.selected_ids())
        self.table.setRowCount(len(targets))
        for row, target in enumerate(targets):
            state = str(target.get("state", ""))
            reason = str(target.get("reason") or "")
            if target.get("skip_requested"):
                reason = ("skip requested; " + reason).strip("; ")
            values = (target.get("id"), state, "-" if target.get("particle") is None else target.get("particle"),
                      target.get("region", ""), target_point(target), scan_text(target.get("scan") or {}),
                      target.get("attempts", 0), reason)
            for column, value in enumerate(values):
                item = Qt.QTableWidgetItem(str(value))
                if column == 1:
                    colour = Qt.QColor(*STATE_COLOURS.get(state, (200, 200, 200)))
                    item.setBackground(colour)
                    item.setForeground(Qt.QColor(0, 0, 0))
                self.table.setItem(row, column, item)
            if target.get("id") in selected:
                self.table.selectRow(row)
        self.table.resizeColumnsToContents()

    def selected_ids(self) -> list[int]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()}) \
            if self.table.selectionModel() else []
        ids = []
        for row in rows:
            item = self.table.item(row, 0)
            with contextlib.suppress(AttributeError, ValueError):
                ids.append(int(item.text()))
        return ids

    # ---------------------------------------------------------------- steering
    def pause(self) -> bool:
        return self.steer(["smart_queue_pause", "paused from smart-gui"], "pause")

    def resume(self) -> bool:
        return self.steer(["smart_queue_resume"], "resume")

    def skip(self) -> bool:
        ids = self.selected_ids() or ([int(self.snapshot.current["id"])] if self.snapshot.current.get("id") is not None
                                      else [])
        if not ids:
            self._say(False, "skip: select a target in the table (nothing is running)")
            return False
        return self.steer_many([["smart_queue_skip", str(i), "skipped from smart-gui"] for i in ids], "skip")

    def steer(self, words: list[str], what: str) -> bool:
        return self.steer_many([words], what)

    def steer_many(self, commands: list[list[str]], what: str) -> bool:
        """Run queue macros through a free Door (the night's when idle, else the steering Door)."""
        if self.steering:
            self._say(False, f"{what}: SMART_NotReady: the previous request is still running")
            return False
        door_name, why = self.free_door()
        if door_name is None:
            self._say(False, f"{what}: SMART_NotReady: {why}; nothing was sent")
            return False
        self.steering = True
        self.steer_label.setText(f"{what}: running {'; '.join(' '.join(c) for c in commands)} on {door_name} ...")
        TangoThread(target=self._run_on_door, args=(door_name, commands, what), daemon=True,
                         name="smart-gui-steer").start()
        return True

    def free_door(self) -> tuple[str | None, str]:
        """The Door to steer through: the night's when idle, else the steering Door when idle."""
        reasons = []
        for name in dict.fromkeys((self.client.door_name, self.steer_door)):
            try:
                state = self.client.proxy(name).state()
            except (tango.DevFailed, CommandError) as exc:
                reasons.append(f"{name} does not answer ({exc})"[:160])
                continue
            if state in (tango.DevState.RUNNING, tango.DevState.MOVING):
                reasons.append(f"{name} is busy ({state})")
                continue
            return name, ""
        return None, "no free Door: " + "; ".join(reasons)

    def _run_on_door(self, door_name: str, commands: list[list[str]], what: str) -> None:
        lines: list[str] = []
        try:
            with DoorClient(self.client.trl(door_name)) as door:
                for words in commands:
                    run = door.run(words, timeout_s=60)
                    lines += [line for stream, line in run.lines if stream == "Output"]
            self.steerFinished.emit(True, f"{what} (via {door_name}): " + ("; ".join(lines[-3:]) or "done"))
        except MacroFailed as exc:
            errors = [line for stream, line in exc.lines if stream == "Error"]
            self.steerFinished.emit(False, f"{what} refused (via {door_name}): " + (errors[-1] if errors else str(exc)))
        except Exception as exc:  # noqa: BLE001 - a GUI thread must report, never die silently
            self.steerFinished.emit(False, f"{what} failed (via {door_name}): {exc}")

    def _on_steer_finished(self, ok: bool, message: str) -> None:
        self.steering = False
        self._say(ok, message)
        self.refresh()

    def _say(self, ok: bool, message: str) -> None:
        self.last_steer = (ok, message)
        self.steer_label.setText(message if ok else f"<span style='color:#c00000'>{message}</span>")

    def close_events(self) -> None:
        for door, event_id in self._record_events:
            with contextlib.suppress(tango.DevFailed):
                door.unsubscribe_event(event_id)
        self._record_events = []


def queue_device_exists(client: SmartClient, name: str = QUEUE_DEVICE) -> bool:
    """Whether the Tango database knows the queue device (a stack without QueueDS has no tab)."""
    host, _, port = client.tango_host.partition(":")
    try:
        tango.Database(host, int(port or 10000)).get_device_info(name)
    except (tango.DevFailed, ValueError):
        return False
    return True

