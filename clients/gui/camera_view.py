"""The live camera image in camera pixel coordinates, and clicks on it.

The view's data coordinates are exactly the SMART image convention (x = column,
y = row, (0, 0) the centre of the top-left pixel), so overlays and clicks need no
conversion: what the mapper returns in ``camera`` px is drawn as is, and a click
gives the camera pixel that `smart_goto_xy camera x y` expects.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from taurus.external.qt import Qt

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)


class CameraView(pg.PlotWidget):
    """A pyqtgraph plot holding the camera ImageItem; emits ``pointClicked(x, y)``."""

    pointClicked = Qt.pyqtSignal(float, float)

    def __init__(self, parent: Qt.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground("k")
        self.image_item = pg.ImageItem()
        self.addItem(self.image_item)
        box = self.getViewBox()
        box.invertY(True)  # row 0 at the top, as every image viewer shows it
        box.setAspectLocked(True)
        box.setMenuEnabled(False)
        self.getPlotItem().setLabels(bottom="x (camera px)", left="y (camera px)")
        self.frame_number = -1
        self.shape: tuple[int, int] | None = None
        self.scene().sigMouseClicked.connect(self._on_click)

    def show_frame(self, image: np.ndarray, frame_number: int) -> None:
        """Display one frame, contrast-stretched on a subsample (cheap on 2048 x 2048 uint16)."""
        sample = image[:: max(1, image.shape[0] // 256), :: max(1, image.shape[1] // 256)]
        low, high = np.percentile(sample, (0.5, 99.5))
        if high <= low:
            high = low + 1
        first = self.shape != image.shape
        self.image_item.setImage(image, autoLevels=False, levels=(float(low), float(high)))
        # pixel i covers [i - 0.5, i + 0.5]: centres land on integer coordinates
        self.image_item.setRect(Qt.QRectF(-0.5, -0.5, image.shape[1], image.shape[0]))
        self.shape = image.shape
        self.frame_number = frame_number
        if first:
            self.getViewBox().autoRange(padding=0.0)

    def widget_pos(self, x: float, y: float) -> Qt.QPoint:
        """Where camera pixel (x, y) is on the viewport: for tests and tools that click."""
        scene = self.getViewBox().mapViewToScene(Qt.QPointF(x, y))
        return self.mapFromScene(scene)

    def _on_click(self, event) -> None:  # noqa: ANN001 - pyqtgraph's MouseClickEvent
        if event.button() != Qt.Qt.LeftButton or event.double() or self.shape is None:
            return
        point = self.getViewBox().mapSceneToView(event.scenePos())
        height, width = self.shape
        if -0.5 <= point.x() <= width - 0.5 and -0.5 <= point.y() <= height - 0.5:
            event.accept()
            self.pointClicked.emit(float(point.x()), float(point.y()))
