"""Checking the image and ROI a detection is asked to run on, before any work starts.

Every refusal here happens before the previous results could be touched, and names what
to change: a constant image, an ROI outside the image or too small for the feature size
are user mistakes a message can fix, not failures of the detector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from servers.common import imageio
from servers.common.errors import BadArgument
from servers.common.grey import to_grey


def load_image(path: str, channel: str | None = None) -> np.ndarray:
    """Read an image file (any format of :mod:`servers.common.imageio`, full bit depth) for detection."""
    return imageio.read_image(path, channel=channel).data


def as_grey_image(image: np.ndarray) -> np.ndarray:
    """A 2-D real-valued image with finite pixels, or :class:`BadArgument`."""
    array = np.asarray(image)
    if array.dtype == object or np.iscomplexobj(array) or array.dtype.kind not in "biuf":
        raise BadArgument(f"the image has pixel type {array.dtype}; give integer or float pixels")
    array = to_grey(array)
    imageio.check_pixel_count(array.shape, "the image")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BadArgument("the image contains NaN or infinite pixels; replace them (e.g. by the background "
                          "level) before detection")
    return array


def resolve_roi(roi: Sequence[int] | None, shape: tuple[int, ...],
                min_side: int) -> tuple[int, int, int, int]:
    """The ROI as (x, y, w, h) inside an image of ``shape`` (rows, cols); None = whole image.

    ``min_side`` is the smallest side on which a feature of the current Diameter can be
    found at all (trackpy ignores a margin of about Diameter/2 at each edge).
    """
    height, width = shape
    if roi is None:
        x, y, w, h = 0, 0, width, height
    else:
        values = list(roi)
        if len(values) != 4 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                       for v in values):
            raise BadArgument(f"roi must be four integers [x, y, w, h] in pixels, got {values!r}")
        x, y, w, h = (int(v) for v in values)
        if w <= 0 or h <= 0:
            raise BadArgument(f"roi [x, y, w, h] = {values} is empty; give a positive width and height")
        if x < 0 or y < 0 or x + w > width or y + h > height:
            raise BadArgument(
                f"roi [x, y, w, h] = {values} reaches outside the {width} x {height} image; keep "
                f"0 <= x, x + w <= {width}, 0 <= y, y + h <= {height}"
            )
    if w < min_side or h < min_side:
        raise BadArgument(
            f"the region {w} x {h} px is too small for Diameter and Separation: particles are only searched "
            f"at least half a diameter from its edges; use a region of at least {min_side} x {min_side} px"
        )
    return x, y, w, h


def check_not_constant(region: np.ndarray) -> None:
    """A constant region has nothing to detect; usually a blank frame or a wrong ROI."""
    first = region.flat[0]
    # the first row nearly always differs already; only then is the whole region compared
    if np.all(region[0] == first) and np.all(region == first):
        raise BadArgument(
            f"the image (or its ROI) is constant (every pixel = {first!r}): nothing can be "
            "detected; check the image source (exposure, beam on) or move the ROI onto the sample"
        )
