"""Turning slot pixels into what the correlators compare.

Three things decide whether two images of different instruments can be correlated:
the same pixel size (resampled here, with anti-aliasing), a representation both
instruments share (gradient magnitude is blind to contrast polarity and to smooth
illumination changes, which SEM vs optical vs XRF differ in), and an apodising window
(without it the image borders correlate with each other and pull the peak to zero shift).
"""

from __future__ import annotations

import functools
from typing import Literal

import cv2
import numpy as np

from servers.common.errors import BadArgument

Representation = Literal["intensity", "gradient"]

MIN_REGISTRATION_SIZE = 16
"""Smallest side (px, after resampling) on which a correlation peak can be told from noise."""

MAX_WORKING_SIDE = 4096
"""Longest side correlated at once; larger images are binned first (FFT memory and time)."""


def to_float(image: np.ndarray) -> np.ndarray:
    """float32 copy: enough precision for 16-bit data, half the memory and FFT time of float64."""
    return np.asarray(image, dtype=np.float32)


def crop(image: np.ndarray, roi: list[int] | None, which: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Cut ``roi`` = [x, y, w, h] out of ``image``; return the crop and its (x, y) offset."""
    if roi is None:
        return image, (0, 0)
    x, y, w, h = (int(v) for v in roi)
    height, width = image.shape
    if x < 0 or y < 0 or w < 1 or h < 1 or x + w > width or y + h > height:
        raise BadArgument(
            f"{which}_roi [x, y, w, h] = {roi} is outside the {width}x{height} image; "
            f"x + w must be <= {width} and y + h <= {height}"
        )
    if min(w, h) < MIN_REGISTRATION_SIZE:
        raise BadArgument(f"{which}_roi {roi} is smaller than {MIN_REGISTRATION_SIZE} px on a side; "
                          "enlarge it around the feature")
    return image[y:y + h, x:x + w], (x, y)


def resample(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale by ``factor`` (< 1 shrinks) with area averaging, which is the anti-aliased choice.

    The pixel-centre convention of cv2.resize is x_out = factor * (x_in + 0.5) - 0.5,
    which :func:`resample_matrix` encodes.
    """
    if abs(factor - 1.0) < 1e-12:
        return image
    height, width = image.shape
    new_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, new_size, interpolation=interpolation)


def resample_matrix(image_shape: tuple[int, int], factor: float) -> np.ndarray:
    """3x3 matrix from original pixel coordinates to those of :func:`resample` output."""
    height, width = image_shape
    if abs(factor - 1.0) < 1e-12:
        return np.eye(3)
    fx = max(1, round(width * factor)) / width
    fy = max(1, round(height * factor)) / height
    return np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])


GRADIENT_BORDER_PX = 2
"""Width of the band along an image's border where :func:`represent`'s ``gradient`` (Gaussian of
1 px, then a 3x3 Sobel) reads reflected copies of the image instead of data: there the gradient
across the border is invented (exactly zero on the outermost row). A direct fit that compares
every pixel of such a target with the inside of a larger reference must leave this band out:
the suppressed edge response on all four sides pulls the fitted scale (measured on the corpus
renderer's cross-modal cases: -0.05 % on average, up to -0.29 %)."""


def represent(image: np.ndarray, kind: Representation, smoothing_px: float = 1.0) -> np.ndarray:
    """Return the float32 image to correlate.

    ``gradient``: magnitude of the Gaussian-smoothed gradient. Edges of particles and
    markers appear in SEM, camera and XRF alike even when one modality shows them bright
    and another dark, so the gradient is what the modalities share.
    """
    data = to_float(image)
    if kind == "intensity":
        return data
    if kind != "gradient":
        raise BadArgument(f"unknown representation '{kind}'; use intensity or gradient")
    if smoothing_px > 0:
        data = cv2.GaussianBlur(data, (0, 0), smoothing_px)
    gx = cv2.Sobel(data, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(data, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def hann_window(shape: tuple[int, ...]) -> np.ndarray:
    """Separable 2-D Hann window (float32): tapers the borders so they do not correlate.

    Cached per shape (read-only): a 2048x2048 window costs ~5 ms to build."""
    return _hann_window(int(shape[0]), int(shape[1]))


@functools.lru_cache(maxsize=16)
def _hann_window(height: int, width: int) -> np.ndarray:
    shape = (height, width)
    rows = np.hanning(shape[0] + 2)[1:-1].astype(np.float32)
    cols = np.hanning(shape[1] + 2)[1:-1].astype(np.float32)
    window = rows[:, None] * cols[None, :]
    window.setflags(write=False)
    return window


_CV_MEAN_TYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
"""Input types whose values float32 holds exactly and OpenCV's mean reads directly."""


def apodise(image: np.ndarray, window: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Subtract the mean and apply the window: the input the FFT-based correlators expect.

    The result is a fresh float32 array, or ``out`` (float32, C-contiguous, the image's shape)
    when given: a caller that runs this on a worker thread allocates the array itself, because
    large arrays freed after use by another thread's malloc arena are handed back to the system
    and cost page faults on the next call (measured: ~1500 per 2048 px registration)."""
    if window is None:
        window = hann_window(image.shape)
    # OpenCV's mean (double accumulator) and multiply are SIMD and threaded: 2.0 ms against
    # 4.2 ms for the numpy equivalent on a 2048x2048 uint16 frame. The mean of the input's own
    # type is the same double (its values are exact in float32). The conversion to float32 and
    # the subtraction are two plain passes: numpy's subtraction with a dtype= cast goes through
    # its buffered casting loop, 2.0 ms against 1.1 ms for the copy and the float32 subtraction
    # (the same numbers: the cast is exact, the subtraction the same float32 one).
    image = np.asarray(image)
    if image.dtype in _CV_MEAN_TYPES:
        mean = np.float32(cv2.mean(image)[0])
        data = np.empty(image.shape, np.float32) if out is None else out
        np.copyto(data, image)
        np.subtract(data, mean, out=data)
    else:
        data = image.astype(np.float32)  # always a fresh array, any input dtype
        data -= np.float32(cv2.mean(data)[0])
        if out is not None:
            out[...] = data
            data = out
    cv2.multiply(data, window, dst=data)
    return data


def check_has_structure(image: np.ndarray, what: str) -> None:
    """Refuse a region with no variation: its correlation is undefined, not merely weak."""
    if float(np.ptp(image)) == 0.0:
        raise BadArgument(f"the {what} region is constant (value {float(image.flat[0]):g}); "
                          "choose a region that contains the feature to register")


def pad_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad (after apodisation zero is the neutral value) to ``shape``, top-left aligned."""
    if image.shape == shape:
        return image
    out = np.zeros(shape, dtype=image.dtype)
    out[:image.shape[0], :image.shape[1]] = image
    return out
