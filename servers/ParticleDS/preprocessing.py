"""trackpy's band-pass and local-maximum search, rebuilt on OpenCV for speed.

``trackpy.locate`` spends most of its time in scipy.ndimage filters run in float64 on one
core (band-pass, grey dilation) and in ``np.percentile`` over millions of pixels. The same
operations in OpenCV (float32, SIMD, multi-threaded) and a histogram percentile give the
same processed integer image and the same candidate pixels at a fraction of the cost;
trackpy's own numba refinement then runs on them unchanged. Each function names the
trackpy step it reproduces, so a trackpy upgrade can be checked against it
(tests/unit/particles/test_preprocessing.py compares them directly).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy.spatial import cKDTree
from trackpy.masks import gaussian_kernel

FAST_INTEGER_DTYPES = (np.uint8, np.uint16)
"""Integer dtypes OpenCV dilates natively; trackpy keeps the processed image in the raw dtype."""
HISTOGRAM_EXACT_PIXELS = 2**24
"""Below this many pixels OpenCV's float32 histogram counts are exact integers."""


def lowpass(image: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """``trackpy.preprocessing.lowpass``: Gaussian blur with zero padding, as float32."""
    # integer pixels are exact in float32, and OpenCV's float32 filter is vectorised where its
    # integer-to-float one is not: converting first is the same result at half the cost
    source = image.astype(np.float32)
    if sigma <= 0:
        return source
    kernel = gaussian_kernel(sigma, truncate).astype(np.float32)
    return cv2.sepFilter2D(source, cv2.CV_32F, kernel, kernel, dst=source, borderType=cv2.BORDER_CONSTANT)


def boxcar(image: np.ndarray, size: int) -> np.ndarray:
    """``trackpy.preprocessing.boxcar``: running mean with edge replication, as float32.

    trackpy filters in the raw dtype, so for integer images each 1-D pass truncates; the
    integer branch reproduces that exactly with integer box sums, because a background off
    by one count moves features across MinMass and would change which particles are found.
    """
    if size <= 1:
        return image.astype(np.float32)
    if image.dtype in FAST_INTEGER_DTYPES:
        # divided in place; the truncated row means fit the raw dtype, so the second pass
        # sums them as int32 directly instead of converting back
        rows = cv2.boxFilter(image, cv2.CV_32S, (1, size), normalize=False,
                             borderType=cv2.BORDER_REPLICATE)
        np.floor_divide(rows, size, out=rows)
        both = cv2.boxFilter(rows, cv2.CV_32S, (size, 1), normalize=False,
                             borderType=cv2.BORDER_REPLICATE)
        np.floor_divide(both, size, out=both)
        return both.astype(np.float32)
    source = image.astype(np.float32, copy=False)
    return cv2.blur(source, (size, size), borderType=cv2.BORDER_REPLICATE)


def bandpass(image: np.ndarray, noise_size: float, smoothing_size: int, threshold: float) -> np.ndarray:
    """``trackpy.preprocessing.bandpass``: lowpass minus boxcar background, clipped below threshold."""
    result = lowpass(image, noise_size)
    result -= boxcar(image, smoothing_size)
    # ``result[result < threshold] = 0`` (compared in float32) as one OpenCV pass: keep what
    # lies above the float32 just below the threshold
    below = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    cv2.threshold(result, below, 0, cv2.THRESH_TOZERO, dst=result)
    return result


def convert_to_int(image: np.ndarray, dtype: type[np.integer]) -> tuple[float, np.ndarray]:
    """``trackpy.preprocessing.convert_to_int`` for a non-negative float32 band-passed image."""
    max_value = np.iinfo(dtype).max
    image_max = float(image.max()) if image.size else 0.0
    scale_factor = 1.0 if image_max == 0 else max_value / image_max
    scaled = image * np.float32(scale_factor)
    return scale_factor, scaled.astype(dtype)


def percentile_threshold(image: np.ndarray, percentile: float) -> float:
    """``trackpy.find.percentile_threshold`` (percentile of the non-zero pixels) via a histogram.

    Follows numpy's "linear" percentile formula step by step so the threshold is the
    same float, not merely close: the comparison ``image > threshold`` is on integers.
    """
    if image.dtype == np.uint16 and image.size < HISTOGRAM_EXACT_PIXELS:
        # OpenCV's histogram counts in float32, exact below 2**24 pixels, and is faster than bincount
        counts = cv2.calcHist([image], [0], None, [65536], [0, 65536]).ravel().astype(np.int64)
    else:
        counts = np.bincount(image.ravel(), minlength=1)
    counts[0] = 0
    n = int(counts.sum())
    if n == 0:
        return math.nan
    cumulative = np.cumsum(counts)
    q = percentile / 100.0
    virtual = n * q + (1.0 + q * (1.0 - 1.0 - 1.0)) - 1.0
    virtual = min(max(virtual, 0.0), n - 1.0)
    below = math.floor(virtual)
    above = min(below + 1, n - 1)
    gamma = virtual - below
    a = float(np.searchsorted(cumulative, below, side="right"))
    b = float(np.searchsorted(cumulative, above, side="right"))
    diff = b - a
    return b - diff * (1.0 - gamma) if gamma >= 0.5 else a + diff * gamma


def local_maxima(image: np.ndarray, separation: float, percentile: float,
                 margin: tuple[int, int] | tuple[float, float]) -> np.ndarray:
    """``trackpy.find.grey_dilation(precise=False)``: (row, col) of peaks above the percentile.

    scipy's grey dilation with an even square window reaches one pixel further right than
    left; the anchor reproduces that so plateaus resolve to the same pixel as in trackpy.
    """
    threshold = percentile_threshold(image, percentile)
    if math.isnan(threshold):
        return np.empty((0, 2), dtype=np.intp)
    size = max(int(2 * separation / math.sqrt(2)), 1)
    anchor = (size - 1) // 2
    kernel = np.ones((size, size), np.uint8)
    dilation = cv2.dilate(image, kernel, anchor=(anchor, anchor), borderType=cv2.BORDER_CONSTANT,
                          borderValue=0)
    # OpenCV compares an integer image with a real threshold exactly (floor for ">")
    maxima = cv2.bitwise_and(cv2.compare(image, dilation, cv2.CMP_EQ), cv2.compare(image, threshold, cv2.CMP_GT))  # type: ignore[call-overload]  # OpenCV takes a scalar; its stubs do not say so
    points = cv2.findNonZero(maxima)
    if points is None:
        return np.empty((0, 2), dtype=np.intp)
    pos = points.reshape(-1, 2)[:, ::-1].astype(np.intp)
    shape = np.array(image.shape)
    margin_arr = np.asarray(margin, dtype=float)
    near_edge = np.any((pos < margin_arr) | (pos > (shape - margin_arr - 1)), axis=1)
    return pos[~near_edge]


def where_close(pos: np.ndarray, separation: float, intensity: np.ndarray) -> np.ndarray:
    """``trackpy.find.where_close``: rows of ``pos`` nearer than ``separation`` to a brighter one.

    trackpy turns the k-d tree's set of close pairs into arrays one tuple at a time, which
    costs more than the search on a large image with tens of thousands of candidates; the
    tree returns the same pairs as an array directly. Ties in intensity drop the pair member
    with the larger coordinate sum, as in trackpy.
    """
    if len(pos) == 0 or separation == 0:
        return np.empty(0, dtype=np.intp)
    pos_rescaled = pos / np.array([separation] * pos.shape[1], dtype=np.float64)
    pairs = cKDTree(pos_rescaled, 30).query_pairs(1 - 1e-7, output_type="ndarray")
    if len(pairs) == 0:
        return np.empty(0, dtype=np.intp)
    index_0, index_1 = pairs[:, 0], pairs[:, 1]
    intensity = np.asarray(intensity)
    intensity_0, intensity_1 = intensity[index_0], intensity[index_1]
    by_position = np.where(pos_rescaled[index_0].sum(axis=1) > pos_rescaled[index_1].sum(axis=1), index_1, index_0)
    to_drop = np.where(intensity_0 > intensity_1, index_1, index_0)
    to_drop = np.where(intensity_0 == intensity_1, by_position, to_drop)
    return np.unique(to_drop).astype(np.intp)
