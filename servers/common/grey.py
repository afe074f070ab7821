"""Colour to grey, once for every image that enters a server (camera frames, lab images).

Registration and detection work on intensity, so a colour image becomes its luminance with
the ITU-R BT.709 weights that ``skimage.color.rgb2gray`` uses. Lab images become float32
(they are normalised later anyway); camera frames keep their integer dtype
(``keep_dtype=True``), because the Image attribute declares one.
"""

from __future__ import annotations

import numpy as np

from servers.common.errors import BadArgument

__all__ = ["LUMA", "to_grey"]

LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
"""ITU-R BT.709 luminance weights of R, G, B (as ``skimage.color.rgb2gray``)."""


def to_grey(array: np.ndarray, *, keep_dtype: bool = False) -> np.ndarray:
    """A 2-D image: grey stays as is, RGB(A) becomes luminance (float32, or the input's
    integer dtype rounded and clipped when ``keep_dtype``); anything else is refused."""
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[-1] == 1:
        return array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        grey = array[..., :3].astype(np.float32) @ LUMA
        if keep_dtype and np.issubdtype(array.dtype, np.integer):
            info = np.iinfo(array.dtype)
            return np.clip(np.rint(grey), info.min, info.max).astype(array.dtype)
        return grey.astype(np.float32)
    raise BadArgument(
        f"the image has shape {array.shape}; expected a 2-D grey image or RGB(A) with 3 or 4 "
        "channels last. Save a single plane (e.g. one slice of a stack) and load that"
    )
