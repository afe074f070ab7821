"""`smart-gui`: the live camera with beam, registration and particles, click-to-move,
device forms, the particle table and the macro queue, in one Taurus window.

Everything that moves the stage goes through the Door (`smart_goto_xy`, `smart_goto`)
so Sardana's limits, Stop/Abort and the macros' safety checks apply; a move is asked
for with a confirmation (``--yes`` skips it for scripted use) and refused while the
Door is busy, with the reason in the status bar.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tango
from taurus.external.qt import Qt

from clients.commands import DEFAULT_DOOR, CommandError, SmartClient, resolve_tango_host
from clients.gui.camera_view import CameraView
from clients.gui.gc_thread import collect_in_this_thread_only
from clients.gui.overlays import OverlayData, OverlayItems, collect, frame_stage_position
from clients.gui.panels import FORM_TITLES, MacroPanel, ParticleTable, device_form, stage_form
from clients.gui.queue_tab import STATE_COLOURS, QueueOverlay, QueuePanel, queue_device_exists
from macros.smart_calls import TangoThread

FORM_POLL_MS = 1000
"""Taurus polls the attributes a device does not push events for (most settings and States);
its 3 s default makes a State change look late on a beamline panel."""

STAGE_PERIOD_S = 0.5
"""How often the status bar reads the motors' positions and the Door's State."""

LEGEND_HTML = ('<span style="color:#00e600">○ isolated</span> &nbsp; <span style="color:#ff6e00">○ crowded</span>'
               ' &nbsp; <span style="color:#a0a0a0">× marker / large bright area (not a particle)</span>'
               ' &nbsp; <span style="color:#50aaff">□ scanned</span> &nbsp; <span style="color:#ebebeb">17</span>'
               '<span style="color:#aaaaaa"> particle-table index (zoom in)</span> &nbsp; '
               '<span style="color:#ff40ff">+ beam</span> &nbsp; <span style="color:#00ffff">▭ registered SEM</span>'
               ' &nbsp; <span style="color:#ffff60">▬ scale</span>')
QUEUE_LEGEND_HTML = " &nbsp; ◇ queue: " + " ".join(
    f'<span style="color:#{r:02x}{g:02x}{b:02x}">{state}</span>' for state, (r, g, b) in STATE_COLOURS.items())

QUEUE_PERIOD_S = 1.0
"""How often the Queue tab reads the queue's counts, activity and time left (cheap: one
read_attributes; the target list only when its Revision moved)."""

OVERLAY_PERIOD_S = 3.0
"""Overlays follow the frame's stage position at most this often (plus after every move):
a Map of a few hundred points per frame would load the mapper for nothing."""


def configure_taurus() -> None:
    """Taurus settings the panel needs, applied before any widget gets a model.

    Most SMART attributes are not pushed as change events, so Taurus falls back to
    polling; by default its widgets then wait for the first poll instead of reading
    at once, and a freshly opened form shows "-----" for seconds."""
    import taurus
    from taurus import tauruscustomsettings

    tauruscustomsettings.TANGO_FORCE_READ_IF_SUBSCRIPTION_FAILS = "ALWAYS"
    taurus.Factory("tango").changeDefaultPollingPeriod(FORM_POLL_MS)
    # Sardana's Taurus classes for MacroServer/Door (the sequencer needs them); spock and
    # Sardana's own applications register them, an embedding application must do it itself.
    from sardana.taurus.qt.qtcore.tango.sardana import registerExtensions

    registerExtensions()


class SmartWindow(Qt.QMainWindow):
    """The SMART beamline panel for one Tango database and Door."""

    macroFinished = Qt.pyqtSignal(bool, str)
    doorLine = Qt.pyqtSignal(str, str)

    def __init__(self, client: SmartClient, assume_yes: bool = False, poll_hz: float = 2.0,
                 with_macro_panel: bool = True) -> None:
        super().__init__()
        configure_taurus()
        self.client = client
        self.assume_yes = assume_yes
        self.setWindowTitle(f"SMART on Tango — {client.tango_host}")
        self.camera_view = CameraView()
        self.overlays = OverlayItems(self.camera_view)
        self.overlay_data = OverlayData()
        self.overlay_time = 0.0
        self.overlay_stage: list[float] | None = None
        self.frame_stage: list[float] | None = None
        self.move_running = False
        self.last_click: tuple[float, float] | None = None
        self.last_result: tuple[bool, str] | None = None
        self.camera_view.pointClicked.connect(self.on_camera_click)
        self.macroFinished.connect(self._on_macro_finished)

        self._build_tabs(client, with_macro_panel)
        self._build_camera_side()
        self._build_toolbar()
        self._build_status_bar()
        self.motors = _motor_devices(client)
        try:
            self.stage_unit = str(client.read("mapper", "StageUnit") or "")
        except CommandError:
            self.stage_unit = ""
        self.stage_time = 0.0
        self.doorLine.connect(self.macro_panel.append_log)
        try:
            self.door = client.door(echo=lambda stream, line: self.doorLine.emit(stream, line))
        except CommandError as exc:
            self.door = None
            self.statusBar().showMessage(exc.one_line())

        self.poll_timer = Qt.QTimer(self)
        self.poll_timer.timeout.connect(self.poll)
        self.poll_timer.start(int(1000 / max(poll_hz, 0.1)))
        # the queue has its own timer: a slow or failing camera read must not freeze the night's view
        self.queue_timer = Qt.QTimer(self)
        self.queue_timer.timeout.connect(self.refresh_queue)
        if self.queue_panel is not None:
            self.queue_timer.start(int(QUEUE_PERIOD_S * 1000))
        self._snapped = False
        Qt.QTimer.singleShot(0, self.poll)

    # ---------------------------------------------------------------- layout
    def _build_tabs(self, client: SmartClient, with_macro_panel: bool) -> None:
        """The devices' forms, the stage, the particle table, the macros and (when QueueDS
        is configured) the queue, one tab each."""
        self.tabs = Qt.QTabWidget()
        # seven tabs side by side would be cut off behind scroll arrows at any usable panel
        # width: on the left edge, one under the other, every title stays readable
        self.tabs.setTabPosition(Qt.QTabWidget.West)
        self._tab_style = _HorizontalWestTabs()  # Qt does not own a style set on a widget: keep it alive
        self.tabs.tabBar().setStyle(self._tab_style)
        self.forms = {role: device_form(client, role) for role in FORM_TITLES}
        for role, form in self.forms.items():
            self.tabs.addTab(_scrolled(form), FORM_TITLES[role])
        try:
            self.forms["stage"] = stage_form(client)
            self.tabs.addTab(_scrolled(self.forms["stage"]), "Stage")
        except CommandError as exc:
            self.tabs.addTab(Qt.QLabel(exc.one_line()), "Stage")
        self.particle_table = ParticleTable()
        self.particle_table.gotoRequested.connect(self.goto_particle)
        self.tabs.addTab(self.particle_table, "Particle table")
        self.macroserver = _macroserver(client)
        self.macro_panel = MacroPanel(client, self.macroserver if with_macro_panel else None)
        self.tabs.addTab(self.macro_panel, "Macros")
        self.queue_panel: QueuePanel | None = None
        self.queue_overlay: QueueOverlay | None = None
        self.queue_time = 0.0
        self.queue_revision = -1
        if queue_device_exists(client, client.devices.get("queue", "smart/queue/1")):
            self.queue_panel = QueuePanel(client, client.devices.get("queue", "smart/queue/1"))
            self.tabs.addTab(self.queue_panel, "Queue")
            self.queue_overlay = QueueOverlay(self.camera_view)

    def _build_camera_side(self) -> None:
        """The camera with its legend beside the tabs; the camera keeps most of the room."""
        self.splitter = Qt.QSplitter(Qt.Qt.Horizontal)
        camera_side = Qt.QWidget()
        camera_layout = Qt.QVBoxLayout(camera_side)
        camera_layout.setContentsMargins(0, 0, 0, 0)
        camera_layout.setSpacing(2)
        self.legend = Qt.QLabel(LEGEND_HTML + (QUEUE_LEGEND_HTML if self.queue_panel is not None else ""))
        self.legend.setStyleSheet("background: black; padding: 3px;")
        self.legend.setWordWrap(True)  # a narrow window wraps the legend instead of growing
        camera_layout.addWidget(self.legend)
        camera_layout.addWidget(self.camera_view, 1)
        self.splitter.addWidget(camera_side)
        self.splitter.addWidget(self.tabs)
        self.tabs.setMinimumWidth(320)
        self.splitter.setStretchFactor(0, 3)  # the camera keeps most of the room
        self.splitter.setStretchFactor(1, 2)
        self.setCentralWidget(self.splitter)

    def _build_status_bar(self) -> None:
        self.stage_label = Qt.QLabel("stage: -")
        self.door_label = Qt.QLabel("Door: -")
        for label in (self.stage_label, self.door_label):
            label.setStyleSheet("font-family: monospace; padding: 0 8px;")
            self.statusBar().addPermanentWidget(label)

    def _build_toolbar(self) -> None:
        bar = self.addToolBar("Camera")
        bar.setObjectName("smart-toolbar")
        for text, slot in (("Start camera", lambda: self._camera("Start")),
                           ("Stop camera", lambda: self._camera("Stop")),
                           ("Snap", lambda: self._camera("Snap")),
                           ("Refresh overlays", self.refresh_overlays),
                           ("Zoom to reference", self.zoom_to_reference),
                           ("Whole frame", lambda: self.camera_view.getViewBox().autoRange(padding=0.0)),
                           ("Stop macro", self.stop_macro)):
            bar.addAction(text, slot)

    def _camera(self, command: str) -> None:
        try:
            self.client.proxy("camera").command_inout(command)
        except tango.DevFailed as exc:
            self.statusBar().showMessage(f"camera {command}: {exc.args[0].reason}: {exc.args[0].desc.strip()}")

    # ------------------------------------------------------------- live data
    def poll(self) -> None:
        """Show a new camera frame if there is one; refresh overlays when due."""
        try:
            number = int(self.client.read("camera", "FrameNumber"))
        except (CommandError, TypeError, ValueError) as exc:
            self.statusBar().showMessage(f"camera: {exc}")
            return
        if number <= 0 and not self._snapped:
            self._snapped = True  # an idle camera has no frame yet: take one so there is something to see
            self._camera("Snap")
            return
        if number != self.camera_view.frame_number:
            try:
                values = self.client.proxy("camera").read_attributes(["Image", "FrameMetadata"])
            except tango.DevFailed as exc:
                self.statusBar().showMessage(f"camera image: {exc.args[0].desc.strip()}")
                return
            image = values[0].value
            if image is None:
                return
            metadata = json.loads(values[1].value or "{}")
            self.camera_view.show_frame(np.asarray(image), int(metadata.get("frame_number", number)))
            self.frame_stage = frame_stage_position(self.client, metadata)
        due = time.monotonic() - self.overlay_time > OVERLAY_PERIOD_S
        if due or self.frame_stage != self.overlay_stage:
            self.refresh_overlays()
        if time.monotonic() - self.stage_time > STAGE_PERIOD_S:
            self.refresh_stage_and_door()

    def refresh_queue(self) -> None:
        """The Queue tab, and the targets on the camera when the queue changed."""
        self.queue_time = time.monotonic()
        snapshot = self.queue_panel.refresh() if self.queue_panel is not None else None
        if snapshot is not None and snapshot.revision != self.queue_revision:
            self.queue_revision = snapshot.revision
            self.draw_queue_targets()

    def draw_queue_targets(self) -> None:
        if self.queue_overlay is not None and self.queue_panel is not None:
            self.queue_overlay.update(self.client, self.queue_panel.snapshot.targets, self.frame_stage,
                                      self.overlay_data.notes)

    def refresh_stage_and_door(self) -> None:
        """The motors' positions and the Door's State in the status bar."""
        self.stage_time = time.monotonic()
        parts = []
        for name, device in self.motors:
            try:
                position = float(self.client.read(device, "Position"))
                parts.append(f"{name} {position:+.5f} {self.stage_unit}")
            except (CommandError, TypeError, ValueError):
                parts.append(f"{name} ?")
        self.stage_label.setText("stage: " + ("   ".join(parts) if parts else "no motors"))
        try:
            state = str(self.door.proxy.state()) if self.door is not None else "no Door"
        except tango.DevFailed:
            state = "not answering"
        self.door_label.setText(f"Door {self.client.door_name}: {state}")

    def refresh_overlays(self) -> None:
        self.overlay_time = time.monotonic()
        self.overlay_stage = self.frame_stage
        self.overlay_data = collect(self.client, self.frame_stage, self.macroserver)
        self.overlays.update(self.overlay_data, self.camera_view.shape)
        self.draw_queue_targets()
        with contextlib.suppress(CommandError, ValueError):
            self.particle_table.set_rows(self.client.read_json("particles", "Table") or [])

    def zoom_to_reference(self) -> None:
        """Show the registered reference's outline with a margin (particles are tiny on the frame)."""
        outline = self.overlay_data.outline
        if outline is None:
            self.statusBar().showMessage("no registered reference to zoom to")
            return
        (x0, y0), (x1, y1) = outline.min(axis=0), outline.max(axis=0)
        margin = 0.15 * max(x1 - x0, y1 - y0)
        self.camera_view.getViewBox().setRange(xRange=(x0 - margin, x1 + margin), yRange=(y0 - margin, y1 + margin),
                                               padding=0.0)

    def show_tab(self, title: str) -> bool:
        """Bring the side tab with this title to the front; False if there is none."""
        for index in range(self.tabs.count()):
            if self.tabs.tabText(index).lower() == title.lower():
                self.tabs.setCurrentIndex(index)
                return True
        return False

    def populated(self) -> bool:
        """A frame is on screen and the overlays were drawn for it (used before a screenshot)."""
        return self.camera_view.frame_number > 0 and self.overlay_time > 0 and self.overlay_stage == self.frame_stage

    # ------------------------------------------------------------------ moves
    def on_camera_click(self, x: float, y: float) -> None:
        self.last_click = (x, y)
        self.request_macro(["smart_goto_xy", "camera", repr(x), repr(y)],
                           f"Move the stage so that camera pixel ({x:.1f}, {y:.1f}) is in the beam?")

    def goto_particle(self, index: int) -> None:
        self.request_macro(["smart_goto", str(index)], f"Move the stage so that particle {index} is in the beam?")

    def request_macro(self, words: Sequence[str], question: str) -> bool:
        """Run a moving macro through the Door after a confirmation; False if refused."""
        busy_reason = self._busy_reason()
        if busy_reason:
            self.statusBar().showMessage(f"refused: {busy_reason}")
            return False
        if not self.assume_yes:
            answer = Qt.QMessageBox.question(self, "SMART: move the stage", question,
                                             Qt.QMessageBox.Yes | Qt.QMessageBox.No, Qt.QMessageBox.No)
            if answer != Qt.QMessageBox.Yes:
                self.statusBar().showMessage("move cancelled")
                return False
        self.move_running = True
        self.last_result = None
        command = " ".join(words)
        self.statusBar().showMessage(f"running {command} ...")
        TangoThread(target=self._run_macro, args=(list(words),), daemon=True, name="smart-gui-macro").start()
        return True

    def _busy_reason(self) -> str | None:
        if self.door is None:
            return "SMART_NotReady: no Door"
        if self.move_running:
            return "SMART_NotReady: a move started here is still running"
        try:
            if self.door.is_busy():
                return (f"SMART_NotReady: the Door {self.client.door_name} is busy ({self.door.proxy.state()}) "
                        "with another macro; wait or stop it")
        except tango.DevFailed as exc:
            return f"SMART_NotReady: the Door does not answer: {exc.args[0].desc.strip()}"
        return None

    def _run_macro(self, words: list[str]) -> None:
        try:
            output = self.client.run_macro(words)
            self.macroFinished.emit(True, (output[-1] if output else f"{words[0]} done"))
        except CommandError as exc:
            self.macroFinished.emit(False, exc.one_line())
        except Exception as exc:  # noqa: BLE001 - a GUI thread must report, never die silently
            self.macroFinished.emit(False, f"SMART_Failed: {exc}")

    def _on_macro_finished(self, ok: bool, message: str) -> None:
        self.move_running = False
        self.last_result = (ok, message)
        self.statusBar().showMessage(message if ok else f"refused: {message}")
        self.refresh_overlays()

    def stop_macro(self) -> None:
        if self.door is not None:
            try:
                self.door.proxy.StopMacro()
            except tango.DevFailed as exc:
                self.statusBar().showMessage(f"StopMacro: {exc.args[0].desc.strip()}")

    def closeEvent(self, event: Qt.QCloseEvent) -> None:  # noqa: N802 - Qt's name
        self.poll_timer.stop()
        self.queue_timer.stop()
        if self.queue_panel is not None:
            self.queue_panel.close_events()
        # Taurus keeps the attributes of the forms subscribed (and retrying, logging every
        # try) after the window is gone unless their models are released
        from taurus.qt.qtgui.panel import TaurusForm

        for form in self.findChildren(TaurusForm):
            form.setModel([])
        self.client.close()
        super().closeEvent(event)


def _motor_devices(client: SmartClient) -> list[tuple[str, str]]:
    """(name, device) of the mapper's stage motors, looked up once (the database is not polled)."""
    try:
        return [(name, client.motor_device(name)) for name in client.motor_names()]
    except CommandError:
        return []


class _HorizontalWestTabs(Qt.QProxyStyle):
    """Tabs on the left edge with their titles written horizontally (Qt turns them by 90°)."""

    def sizeFromContents(self, kind, option, size, widget):  # noqa: ANN001, ANN201, N802 - Qt's API
        size = super().sizeFromContents(kind, option, size, widget)
        if kind == Qt.QStyle.CT_TabBarTab:
            size.transpose()
            size.setWidth(size.width() + 16)
        return size

    def drawControl(self, element, option, painter, widget=None):  # noqa: ANN001, ANN201, N802 - Qt's API
        if element == Qt.QStyle.CE_TabBarTabLabel:
            horizontal = Qt.QStyleOptionTab(option)
            horizontal.shape = Qt.QTabBar.RoundedNorth
            super().drawControl(element, horizontal, painter, widget)
            return
        super().drawControl(element, option, painter, widget)


def _scrolled(widget: Qt.QWidget) -> Qt.QScrollArea:
    area = Qt.QScrollArea()
    area.setWidgetResizable(True)
    area.setWidget(widget)
    return area


def _macroserver(client: SmartClient) -> str | None:
    """The MacroServer our Door belongs to (its ``MacroServerName`` property)."""
    try:
        names = list(client.proxy(client.door_name).get_property("MacroServerName")["MacroServerName"])
        if names:
            return names[0]
        host, _, port = client.tango_host.partition(":")
        exported = list(tango.Database(host, int(port or 10000)).get_device_exported_for_class("MacroServer"))
        return exported[0] if exported else None
    except (tango.DevFailed, CommandError):
        return None


def save_screenshot(window: SmartWindow, path: Path, app: Qt.QApplication, timeout_s: float = 30.0,
                    settle_s: float = 3.0, zoom_reference: bool = False) -> bool:
    """Wait until the window shows a frame and its overlays, then save it as PNG."""
    deadline = time.monotonic() + timeout_s
    while not window.populated() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.05)
    if zoom_reference:
        window.zoom_to_reference()
    settle = time.monotonic() + settle_s  # forms receive their first values (Taurus reads them asynchronously)
    while time.monotonic() < settle:
        app.processEvents()
        time.sleep(0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    return bool(window.grab().save(str(path), "PNG")) and window.populated()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smart-gui", description=__doc__)
    parser.add_argument("--tango-host", default=None,
                        help="HOST:PORT of the Tango database (default: TANGO_HOST, else run/stack/env.sh)")
    parser.add_argument("--door", default=DEFAULT_DOOR, help="Door that runs the macros (default smart/door/01)")
    parser.add_argument("--yes", action="store_true", help="move without asking for confirmation")
    parser.add_argument("--poll-hz", type=float, default=2.0, help="camera refresh rate (default 2 Hz)")
    parser.add_argument("--screenshot", type=Path, default=None,
                        help="save the populated window to this PNG and exit")
    parser.add_argument("--zoom", choices=("camera", "reference"), default="camera",
                        help="start on the whole camera frame or on the registered reference (default camera)")
    parser.add_argument("--size", default="1700x1000", help="window size WxH (default 1700x1000)")
    parser.add_argument("--tab", default=None, help="side tab to show first, by title (e.g. Queue)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        host = resolve_tango_host(args.tango_host)
    except CommandError as exc:
        print(f"smart-gui: {exc.one_line()}", file=sys.stderr)
        return 1
    from taurus.qt.qtgui.application import TaurusApplication

    app = Qt.QApplication.instance() or TaurusApplication([sys.argv[0]], cmd_line_parser=None,
                                                          app_name="smart-gui")
    collect_in_this_thread_only(app)
    window = SmartWindow(SmartClient(host, door=args.door), assume_yes=args.yes, poll_hz=args.poll_hz)
    width, _, height = args.size.partition("x")
    window.resize(int(width), int(height))
    window.show()
    window.splitter.setSizes([int(0.56 * int(width)), int(0.44 * int(width))])
    if args.tab:
        window.show_tab(args.tab)
    if args.zoom == "reference" and args.screenshot is None:
        Qt.QTimer.singleShot(3000, window.zoom_to_reference)
    if args.screenshot is not None:
        ok = save_screenshot(window, args.screenshot, app, zoom_reference=args.zoom == "reference")
        window.close()
        print(f"screenshot {'written' if ok else 'written before the window was fully populated'}: "
              f"{args.screenshot}")
        return 0 if ok else 1
    return app.exec_()


if __name__ == "__main__":
    raise SystemExit(main())
