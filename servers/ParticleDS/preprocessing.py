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

from servers.ParticleDS.scratch import Scratch

FAST_INTEGER_DTYPES = (np.uint8, np.uint16)
"""Integer dtypes OpenCV dilates natively; trackpy keeps the processed image in the raw dtype."""
HISTOGRAM_EXACT_PIXELS = 2**24
"""Below this many pixels OpenCV's float32 histogram counts are exact integers."""


def lowpass(image: np.ndarray, sigma: float, truncate: float = 4.0, scratch: Scratch | None = None) -> np.ndarray:
    """``trackpy.preprocessing.lowpass``: Gaussian blur with zero padding, as float32.

    With ``scratch`` the result is written into its slot ``"a"`` (see :mod:`scratch`).
    """
    # integer pixels are exact in float32, and OpenCV's float32 filter is vectorised where its
    # integer-to-float one is not: converting first is the same result at half the cost
    source = (scratch or Scratch()).array("a", image.shape, np.float32)
    np.copyto(source, image, casting="unsafe")
    if sigma <= 0:
        return source
    kernel = gaussian_kernel(sigma, truncate).astype(np.float32)
    return cv2.sepFilter2D(source, cv2.CV_32F, kernel, kernel, dst=source, borderType=cv2.BORDER_CONSTANT)


def boxcar(image: np.ndarray, size: int) -> np.ndarray:
    """``trackpy.preprocessing.boxcar``: running mean with edge replication, as float32."""
    return _boxcar(image, size, Scratch()).astype(np.float32, copy=False)


def _boxcar(image: np.ndarray, size: int, scratch: Scratch) -> np.ndarray:
    """:func:`boxcar` as int32 for integer images, else float32, in ``scratch`` slots ``"b"``, ``"c"``.

    trackpy filters in the raw dtype, so for integer images each 1-D pass truncates; the
    integer branch reproduces that exactly with integer box sums, because a background off
    by one count moves features across MinMass and would change which particles are found.
    Its int32 means are exact in float32 (below 2**24), so the caller subtracts them as they are.
    """
    if size <= 1:
        return image
    if image.dtype in FAST_INTEGER_DTYPES:
        # divided in place; the truncated row means fit the raw dtype, so the second pass
        # sums them as int32 directly instead of converting back
        rows = cv2.boxFilter(image, cv2.CV_32S, (1, size), dst=scratch.array("b", image.shape, np.int32),
                             normalize=False, borderType=cv2.BORDER_REPLICATE)
        np.floor_divide(rows, size, out=rows)
        both = cv2.boxFilter(rows, cv2.CV_32S, (size, 1), dst=scratch.array("c", image.shape, np.int32),
                             normalize=False, borderType=cv2.BORDER_REPLICATE)
        np.floor_divide(both, size, out=both)
        return both
    source = image.astype(np.float32, copy=False)
    return cv2.blur(source, (size, size), dst=scratch.array("c", image.shape, np.float32),
                    borderType=cv2.BORDER_REPLICATE)


def bandpass(image: np.ndarray, noise_size: float, smoothing_size: int, threshold: float,
             scratch: Scratch | None = None) -> np.ndarray:
    """``trackpy.preprocessing.bandpass``: lowpass minus boxcar background, clipped below threshold.

    With ``scratch`` the result is its slot ``"a"``.
    """
    scratch = scratch or Scratch()
    result = lowpass(image, noise_size, scratch=scratch)
    background = _boxcar(image, smoothing_size, scratch)
    # float32 minus the background converted to float32, as ``result -= boxcar(...)``, in one pass
    cv2.subtract(result, background, dst=result, dtype=cv2.CV_32F)
    # ``result[result < threshold] = 0`` (compared in float32) as one OpenCV pass: keep what
    # lies above the float32 just below the threshold
    below = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    cv2.threshold(result, below, 0, cv2.THRESH_TOZERO, dst=result)
    return result


def convert_to_int(image: np.ndarray, dtype: type[np.integer],
                   scratch: Scratch | None = None) -> tuple[float, np.ndarray]:
    """``trackpy.preprocessing.convert_to_int`` for a non-negative float32 band-passed image.

    With ``scratch`` the result is its slot ``"p"``.
    """
    max_value = np.iinfo(dtype).max
    image_max = float(image.max()) if image.size else 0.0
    scale_factor = 1.0 if image_max == 0 else max_value / image_max
    converted = (scratch or Scratch()).array("p", image.shape, dtype)
    # the float32 product, truncated to the integer dtype as astype does, in one pass
    np.multiply(image, np.float32(scale_factor), out=converted, casting="unsafe")
    return scale_factor, converted


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
                 margin: tuple[int, int] | tuple[float, float], scratch: Scratch | None = None) -> np.ndarray:
    """``trackpy.find.grey_dilation(precise=False)``: (row, col) of peaks above the percentile.

    scipy's grey dilation with an even square window reaches one pixel further right than
    left; the anchor reproduces that so plateaus resolve to the same pixel as in trackpy.
    With ``scratch`` its slots ``"b"``, ``"m1"`` and ``"m2"`` hold the work images.
    """
    threshold = percentile_threshold(image, percentile)
    if math.isnan(threshold):
        return np.empty((0, 2), dtype=np.intp)
    scratch = scratch or Scratch()
    size = max(int(2 * separation / math.sqrt(2)), 1)
    anchor = (size - 1) // 2
    kernel = np.ones((size, size), np.uint8)
    dilation = cv2.dilate(image, kernel, dst=scratch.array("b", image.shape, image.dtype), anchor=(anchor, anchor),
                          borderType=cv2.BORDER_CONSTANT, borderValue=0)
    # OpenCV compares an integer image with a real threshold exactly (floor for ">")
    maxima = cv2.compare(image, dilation, cv2.CMP_EQ, dst=scratch.array("m1", image.shape, np.uint8))
    above = cv2.compare(image, threshold, cv2.CMP_GT, dst=scratch.array("m2", image.shape, np.uint8))  # type: ignore[call-overload]  # OpenCV takes a scalar; its stubs do not say so
    cv2.bitwise_and(maxima, above, dst=maxima)
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


def may_reach_mass(processed: np.ndarray, candidates: np.ndarray, radius: int, max_iterations: int,
                   min_mass: float, scale_factor: float, scratch: Scratch | None = None) -> np.ndarray:
    """True for the candidates whose refined mass can still pass ``mass / scale_factor > min_mass``.

    trackpy's centre-of-mass refinement (``refine_com_arr``) moves a feature's mask by at most
    one pixel per axis and iteration, and its mass is the sum of the non-negative processed
    image under the mask in the last iteration, at most ``max_iterations - 1`` pixels from the
    start along each axis. The sum over the square that covers every such mask is therefore
    an upper bound of the mass, and exact (integer sums). A candidate whose bound fails the
    MinMass test fails it after refinement too, so it need not be refined: on a large noisy
    image most of the candidates are noise maxima far from any particle. With ``scratch`` the
    sums are its slot ``"c"`` (or ``"d"``).
    """
    scratch = scratch or Scratch()
    h, w = processed.shape
    reach = radius + max(max_iterations - 1, 0)
    side = 2 * reach + 1
    y, x = candidates[:, 0], candidates[:, 1]
    if side * side * int(np.iinfo(processed.dtype).max) < 2**31:
        # the square sums of the whole image at once: one integer box filter (zeros beyond the edge)
        sums = cv2.boxFilter(processed, cv2.CV_32S, (side, side), dst=scratch.array("c", (h, w), np.int32),
                             normalize=False, borderType=cv2.BORDER_CONSTANT)
        bound = sums.ravel()[y * w + x].astype(np.float64)
    else:  # a large mask: int32 sums could overflow; an integral image in float64 is exact
        integral = cv2.integral(processed, scratch.array("d", (h + 1, w + 1), np.float64), sdepth=cv2.CV_64F)
        top, bottom = np.clip(y - reach, 0, h), np.clip(y + reach + 1, 0, h)
        left, right = np.clip(x - reach, 0, w), np.clip(x + reach + 1, 0, w)
        bound = integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left]
    return bound / scale_factor > min_mass
