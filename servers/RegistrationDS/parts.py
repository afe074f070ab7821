"""The parts of a target measured against a reference at a proposed mapping.

Both the contained search's final similarity and the affine model judge a mapping the same way:
resample the reference into target pixels at the mapping, cut both into a grid of parts and
measure each part's residual shift. The two fits then differ only in the model they fit to
those shifts, so the measuring lives here once.
"""

from __future__ import annotations

import numpy as np

from servers.RegistrationDS.preprocess import apodise, hann_window
from servers.RegistrationDS.similarity import warp
from servers.RegistrationDS.translation import estimate_translation

PART_MIN_DISTINCTNESS = 2.0
"""A part whose correlation peak stands out less than this is blank membrane or noise: left out."""


def part_grid(shape: tuple[int, int], grid: int, min_side: int) -> tuple[int, np.ndarray, np.ndarray] | None:
    """Side of the square parts and the top-left corners (rows ``ys``, columns ``xs``) of a
    ``grid`` x ``grid`` layout over an image of ``shape``; None when the image is too small."""
    height, width = shape
    side = max(min_side, int(min(height, width) // (grid - 1)) & ~1)
    if min(height, width) < 2 * side:
        return None
    return side, np.linspace(0, height - side, grid).astype(int), np.linspace(0, width - side, grid).astype(int)


def measure_parts(reference: np.ndarray, target: np.ndarray, matrix: np.ndarray, side: int,
                  ys: np.ndarray, xs: np.ndarray) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Centres of the parts that matched (target px) and where the reference shows them, with
    ``matrix`` (target px -> reference px) as the starting mapping."""
    window = hann_window((side, side))
    # The reference resampled into target pixels: parts then compare like with like.
    back = warp(reference, np.linalg.inv(matrix), target.shape)
    centres: list[tuple[float, float]] = []
    moved: list[tuple[float, float]] = []
    for y in ys:
        for x in xs:
            ref_part = back[y:y + side, x:x + side]
            tgt_part = target[y:y + side, x:x + side]
            if np.ptp(ref_part) == 0 or np.ptp(tgt_part) == 0:
                continue
            peak = estimate_translation(apodise(ref_part, window), apodise(tgt_part, window), 50,
                                        max_shift_px=side / 4, polarity_invariant=False)
            if peak.distinctness < PART_MIN_DISTINCTNESS:
                continue
            centre = (x + (side - 1) / 2, y + (side - 1) / 2)
            centres.append(centre)
            moved.append((centre[0] + peak.shift[0], centre[1] + peak.shift[1]))
    return centres, moved
