"""The side panels: device settings and States (TaurusForm), stage motors, the particle
table and the macro queue (Sardana's sequencer).

Forms are plain Taurus attribute models, so what users see and edit is exactly what
Jive or Spock would: writes go to the memorized device settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taurus.external.qt import Qt
from taurus.qt.qtgui.panel import TaurusForm

from clients.commands import SmartClient

FORM_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "camera": ("State", "FrameNumber", "FrameRate", "ExposureTime", "Gain", "TargetFrameRate", "PixelSize",
               "Width", "Height", "Source"),
    "registration": ("State", "Confidence", "Rotation", "Scale", "Shift", "MinConfidence"),
    "particles": ("State", "Count", "IsolatedCount", "Diameter", "MinMass", "MaxSize", "Separation", "NoiseSize",
                  "Threshold", "Percentile", "Invert", "Method", "IsolationRadius"),
    "mapper": ("State", "Status", "BeamPosition", "StageUnit"),
}
FORM_TITLES = {"camera": "Camera", "registration": "Registration", "particles": "Particles",
               "mapper": "Mapper"}


def device_form(client: SmartClient, role: str, attributes: Sequence[str] | None = None) -> TaurusForm:
    """A TaurusForm of one SMART device's settings and State."""
    form = TaurusForm()
    form.setWithButtons(False)  # writes apply per widget, as in Jive
    device = client.trl(client.devices[role])
    form.setModel([f"{device}/{name}" for name in (attributes or FORM_ATTRIBUTES[role])])
    return form


def stage_form(client: SmartClient) -> TaurusForm:
    """The stage motors' Position (and State) by their device names."""
    form = TaurusForm()
    form.setWithButtons(False)
    models = []
    for motor in client.motor_names():
        device = client.trl(client.motor_device(motor))
        models += [f"{device}/Position", f"{device}/State"]
    form.setModel(models)
    return form


class ParticleTable(Qt.QWidget):
    """ParticleDS ``Table`` as a table; activating a row (double-click, Enter or the button)
    asks for `smart_goto <index>` through ``gotoRequested``. A plain selection never moves
    anything: browsing the table with the arrow keys must not drive the stage."""

    gotoRequested = Qt.pyqtSignal(int)
    COLUMNS = ("index", "x", "y", "mass", "size", "ecc", "isolated", "nn_distance")

    def __init__(self, parent: Qt.QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = Qt.QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.setSelectionBehavior(Qt.QAbstractItemView.SelectRows)
        self.table.setSelectionMode(Qt.QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(Qt.QAbstractItemView.NoEditTriggers)
        self.table.itemActivated.connect(lambda item: self._request(item.row()))
        self.summary = Qt.QLabel("no detection yet")
        button = Qt.QPushButton("Go to selected particle")
        button.clicked.connect(self._request_selected)
        layout = Qt.QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)
        layout.addWidget(button)
        self.rows: list[dict[str, Any]] = []

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        if rows == self.rows:
            return
        self.rows = rows
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, key in enumerate(self.COLUMNS):
                value = row.get(key)
                text = f"{value:.2f}" if isinstance(value, float) else str(value)
                self.table.setItem(i, j, Qt.QTableWidgetItem(text))
        isolated = sum(bool(r.get("isolated")) for r in rows)
        self.summary.setText(f"{len(rows)} particles, {isolated} isolated (double-click a row to go there)")

    def _request_selected(self) -> None:
        selected = self.table.selectionModel().selectedRows()
        if selected:
            self._request(selected[0].row())

    def _request(self, row: int) -> None:
        if 0 <= row < len(self.rows):
            self.gotoRequested.emit(int(self.rows[row]["index"]))


class MacroPanel(Qt.QWidget):
    """Sardana's sequencer on our Door, a one-click way to queue `smart_scan_particles`
    runs into it, and the Door's output (the macros' progress lines) as it arrives."""

    def __init__(self, client: SmartClient, macroserver: str | None, parent: Qt.QWidget | None = None) -> None:
        super().__init__(parent)
        layout = Qt.QVBoxLayout(self)
        self.sequencer = None
        self.queued: list[str] = []
        if macroserver:
            from sardana.taurus.qt.qtgui.extra_macroexecutor import TaurusSequencerWidget

            self.sequencer = TaurusSequencerWidget()
            self.sequencer.setModel(client.trl(macroserver))
            self.sequencer.onDoorChanged(client.trl(client.door_name))
            layout.addWidget(self.sequencer, 3)
        else:
            layout.addWidget(Qt.QLabel("no MacroServer found: the sequencer is not available"))
        row = Qt.QHBoxLayout()
        self.half_width = self._spin(0.3, 0.01, 100.0, " µm half width")
        self.step = self._spin(0.05, 0.001, 10.0, " µm step")
        self.exposure = self._spin(0.01, 0.001, 60.0, " s")
        self.max_particles = Qt.QSpinBox()
        self.max_particles.setRange(0, 100_000)
        self.max_particles.setSuffix(" particles (0 = all)")
        self.isolated_only = Qt.QCheckBox("isolated only")
        self.isolated_only.setChecked(True)
        add = Qt.QPushButton("Queue smart_scan_particles")
        add.clicked.connect(lambda: self.queue_scan())
        for widget in (self.half_width, self.step, self.exposure, self.max_particles, self.isolated_only, add):
            row.addWidget(widget)
        layout.addLayout(row)
        self.log = Qt.QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setPlaceholderText("Door output appears here while macros run")
        layout.addWidget(self.log, 2)

    @staticmethod
    def _spin(value: float, low: float, high: float, suffix: str) -> Qt.QDoubleSpinBox:
        spin = Qt.QDoubleSpinBox()
        spin.setDecimals(3)
        spin.setRange(low, high)
        spin.setValue(value)
        spin.setSuffix(suffix)
        return spin

    def scan_line(self) -> str:
        return (f"smart_scan_particles mesh {self.half_width.value():g} {self.step.value():g} "
                f"{self.exposure.value():g} {self.isolated_only.isChecked()} {self.max_particles.value()}")

    def queue_scan(self, line: str | None = None) -> None:
        """Append a scan run to the sequence; the sequencer's Play runs the queue on the Door."""
        self.queued.append(line or self.scan_line())
        if self.sequencer is not None:
            self.sequencer.fromPlainText("\n".join(self.queued))
        self.append_log("Queue", self.queued[-1])

    def append_log(self, stream: str, line: str) -> None:
        self.log.appendPlainText(f"[{stream}] {line}")
