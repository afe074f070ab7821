"""The display overlay: reference with the registered target blended in.

For a human check only, so it is 8-bit and capped in size (a Tango image attribute of
100 Mpx would stall every client); the registration itself never uses it.
"""

from __future__ import annotations

import cv2
import numpy as np

MAX_OVERLAY_SIDE = 2048
"""Longest side of the overlay; larger references are shown binned by an integer factor."""


def to_display(image: np.ndarray) -> np.ndarray:
    """uint8 with a 0.5-99.5 % percentile stretch, so a few hot pixels do not black out the rest."""
    data = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(data, (0.5, 99.5))
    if high <= low:
        low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    return np.clip((data - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)


def blend(reference: np.ndarray, target: np.ndarray, matrix: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 image in reference pixels: ``alpha`` target where it lands, the reference elsewhere.

    ``matrix`` maps target px -> reference px (docs/interface.md convention).
    """
    step = max(1, int(np.ceil(max(reference.shape) / MAX_OVERLAY_SIDE)))
    binning = np.array([[1 / step, 0, 0.5 / step - 0.5], [0, 1 / step, 0.5 / step - 0.5], [0, 0, 1]])
    ref_display = to_display(reference)
    if step > 1:
        ref_display = cv2.resize(ref_display, (reference.shape[1] // step, reference.shape[0] // step),
                                 interpolation=cv2.INTER_AREA)
    forward = (binning @ matrix)[:2]
    size = (ref_display.shape[1], ref_display.shape[0])
    tgt_display = cv2.warpAffine(to_display(target), forward, size, flags=cv2.INTER_LINEAR)
    covered = cv2.warpAffine(np.full(target.shape, 255, np.uint8), forward, size, flags=cv2.INTER_NEAREST) > 0
    out = ref_display.copy()
    mixed = (1 - alpha) * ref_display[covered].astype(np.float32) + alpha * tgt_display[covered]
    out[covered] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    return out
