"""The AnnotatedImage: the source image with every particle circled and numbered.

Isolated particles and crowded ones get two colours (green / orange-red in RGB, white /
black in grey) and the number of their Table row, so a user checking the detection by eye
can name a particle to ``smart_goto``. The image is contrast-stretched on robust
percentiles because SEM images often hold a few saturated pixels (markers, charging).
"""

from __future__ import annotations

import cv2
import numpy as np

from servers.ParticleDS.results import ParticleResults

ISOLATED_RGB = (0, 220, 0)
CROWDED_RGB = (255, 70, 0)
ROI_RGB = (255, 220, 0)
ISOLATED_GREY = 255
CROWDED_GREY = 0
ROI_GREY = 255
GREY_SPAN = (40, 215)
"""Grey annotations draw at 0 and 255, so the image is squeezed into this span to keep them visible."""

_STRETCH_SAMPLES = 500_000


def display_image(image: np.ndarray, low_high: tuple[int, int] = (0, 255)) -> np.ndarray:
    """uint8 rendering of any 2-D image, stretched between its 0.5 and 99.5 percentiles."""
    data = np.asarray(image)
    step = max(1, int(np.sqrt(data.size / _STRETCH_SAMPLES)))
    sample = data[::step, ::step].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    low, high = (np.percentile(sample, [0.5, 99.5]) if sample.size else (0.0, 1.0))
    if high <= low:
        high = low + 1.0
    span = low_high[1] - low_high[0]
    scaled = (data.astype(np.float32) - np.float32(low)) * np.float32(span / (high - low)) + low_high[0]
    return np.clip(np.nan_to_num(scaled, nan=low_high[0]), low_high[0], low_high[1]).astype(np.uint8)


def annotate(image: np.ndarray, results: ParticleResults, diameter: int, *, rgb: bool = True,
             labels: bool = True) -> np.ndarray:
    """Draw ``results`` on ``image`` (the full source image, not the ROI crop).

    Returns (H, W, 3) uint8 RGB, or (H, W) uint8 grey with ``rgb=False`` (Tango image
    attributes are 2-D, so a shell without RGB support can still publish it).
    """
    grey = display_image(image, (0, 255) if rgb else GREY_SPAN)
    canvas = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2)) if rgb else grey.copy()
    radius = max(int(round(diameter / 2 + 2)), 4)
    font_scale = float(np.clip(diameter / 22.0, 0.3, 1.2))
    isolated_colour = ISOLATED_RGB if rgb else ISOLATED_GREY
    crowded_colour = CROWDED_RGB if rgb else CROWDED_GREY
    x0, y0, w, h = results.roi
    if (w, h) != (image.shape[1], image.shape[0]):
        cv2.rectangle(canvas, (x0, y0), (x0 + w - 1, y0 + h - 1), ROI_RGB if rgb else ROI_GREY, 1)
    for index in range(results.count):
        centre = (int(round(results.x[index])), int(round(results.y[index])))
        colour = isolated_colour if results.isolated[index] else crowded_colour
        cv2.circle(canvas, centre, radius, colour, 1, lineType=cv2.LINE_8)
        if labels:
            label_at = (centre[0] + radius, centre[1] - radius)
            cv2.putText(canvas, str(index), label_at, cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, 1,
                        lineType=cv2.LINE_AA)
    return canvas
