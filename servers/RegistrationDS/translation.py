"""Sub-pixel translation by phase correlation with upsampled-DFT refinement.

Method (Guizar-Sicairos, Thurman & Fienup, Opt. Lett. 33, 156 (2008)): the integer
peak of the phase-correlation surface is found with one inverse FFT, then the surface
is evaluated on a 1/``upsample`` px grid over a 1.5 px neighbourhood of that peak by a
matrix-multiply DFT, which costs O(N * 1.5 * upsample) instead of the O(N * upsample^2)
of zero-padding.

Why this is faster than ``skimage.registration.phase_cross_correlation`` at the same
accuracy, without changing the method:
- real FFTs in float32: half the spectrum, half the bytes. ``scipy.fft`` (pocketfft) in
  general; a registration's own two images (``models``) are transformed by OpenCV's DFT
  (Intel IPP inside, 13 ms of CPU per 2048 px image against pocketfft's 17, single-threaded,
  so the two run side by side) and unpacked from its packed layout into the rfft2 layout, and
  their correlation surface comes back by pocketfft's column pass in place plus OpenCV's row
  pass (:func:`_surface_from_copy`), all in arrays kept from call to call (:class:`Buffers`);
- the band-pass weight is cached per shape and folded with the whitening into one real
  factor, so the spectrum is touched in place a minimum number of times;
- the upsampled DFT sums over the half spectrum only (the correlation is real, so the
  other half is the complex conjugate), as one real float32 matrix product;
- it is evaluated only on a 31-point patch of the 1/upsample grid around a Gaussian fit of
  the integer peak (see :func:`refine_peak`): each evaluation reads the whole 17 MB spectrum
  from memory, so one small patch instead of a coarse grid plus a fine grid halves the cost;
- its DFT kernels are built by a running product instead of complex exponentials, and its
  products leave no OpenBLAS threads spinning into the next call's FFTs
  (:mod:`servers.common.blas`).

Sign convention: ``shift = (dx, dy)`` means the content at target pixel ``(x, y)`` appears
at reference pixel ``(x + dx, y + dy)``; the target -> reference matrix is a pure translation
by ``shift``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft

from servers.common.blas import single_threaded_blas, split_product
from servers.common.errors import BadArgument
from servers.common.parallel import pair
from servers.RegistrationDS import uncertainty

FFT_WORKERS = -1
"""scipy.fft worker threads (-1 = all cores)."""


@dataclass(frozen=True)
class PeakEstimate:
    """A correlation peak and how far it stands out of the noise.

    ``distinctness`` is the peak height over the highest value of the surface outside the
    peak's own neighbourhood (the runner-up): unrelated images give ~1.1, clear matches
    5-50; :mod:`confidence` turns it into a probability. ``z`` (peak over the surface's
    noise standard deviation) and ``tests`` (positions and polarities searched) are kept
    for diagnostics.
    ``polarity`` is -1 when the target matched with inverted contrast.
    """

    shift: tuple[float, float]
    peak: float
    distinctness: float
    z: float
    tests: int
    polarity: int
    covariance: np.ndarray | None = None
    """2x2 (x, y) covariance of ``shift`` in px^2 (only when asked for: :mod:`uncertainty`)."""
    bands_agree: bool = True
    """Whether the low- and high-frequency estimates of the shift agree (when asked for)."""
    band_distance: float = 0.0
    on_edge: bool = False
    """The integer peak lies on the edge of the searched window (the wrap-around limit or
    ``max_shift_px``): the true peak may lie outside it, so the position is not trusted."""


def real_spectrum(image: np.ndarray, workers: int = FFT_WORKERS) -> np.ndarray:
    """``rfft2`` of a float32 image as complex64 (the same numbers for any ``workers``: pocketfft
    splits the independent 1-D transforms between its threads)."""
    return scipy.fft.rfft2(image, workers=workers).astype(np.complex64, copy=False)


@dataclass(frozen=True)
class Buffers:
    """The large arrays of one translation of ``shape`` (both sides even), kept from one call
    to the next by :func:`buffers`.

    Fresh arrays of 8-17 MB cost page faults whenever glibc has handed freed ones back to the
    system, which depends on what else the process allocated in between: 1500 faults per 2048
    px call were seen when calls of two versions of this code alternated, 0 in a loop of one,
    and a fault costs several microseconds on this virtual machine. Kept arrays take no fault.

    Each array serves more than one step, in turn: ``windowed`` holds the apodised images,
    which OpenCV's DFT overwrites with their packed spectra; once those are unpacked into
    ``spectra``, ``windowed[0]`` is the whitening's weight scratch (:attr:`scratch`) and
    ``windowed[1]`` receives the correlation surface (:attr:`surface`); ``spectra[1]``
    (the target's) becomes the cross-power spectrum and ``spectra[0]`` (the reference's), once
    correlated, its copy for the inverse FFT to overwrite. 75 MB for 2048 x 2048."""

    shape: tuple[int, int]
    windowed: tuple[np.ndarray, np.ndarray]
    spectra: tuple[np.ndarray, np.ndarray]
    magnitude: np.ndarray

    @classmethod
    def allocate(cls, shape: tuple[int, int]) -> Buffers:
        half = (shape[0], shape[1] // 2 + 1)
        return cls(shape, (np.empty(shape, np.float32), np.empty(shape, np.float32)),
                   (np.empty(half, np.complex64), np.empty(half, np.complex64)), np.empty(half, np.float32))

    @property
    def scratch(self) -> np.ndarray:
        """float32 of the spectrum's shape, on ``windowed[0]``'s memory."""
        rows, columns = self.magnitude.shape
        return self.windowed[0].reshape(-1)[:rows * columns].reshape(rows, columns)

    @property
    def surface(self) -> np.ndarray:
        return self.windowed[1]

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in (*self.windowed, *self.spectra, self.magnitude))


KEPT_BUFFER_BYTES = 128 << 20
"""Buffers up to this size are kept between calls (one shape at a time): a 2048 x 2048 frame
takes 75 MB; a 4096 x 4096 one would keep 300 MB, so its arrays are allocated per call."""

_kept: Buffers | None = None
_kept_lock = threading.Lock()


@contextlib.contextmanager
def buffers(shape: tuple[int, int]) -> Iterator[Buffers | None]:
    """The kept :class:`Buffers` of ``shape`` for the duration of the block (replacing those of
    another shape), fresh ones when another thread is using the kept ones or they would be too
    large, and None for shapes with an odd side (those take the general path)."""
    global _kept
    shape = (int(shape[0]), int(shape[1]))
    if shape[0] % 2 or shape[1] % 2:
        yield None
        return
    if not _kept_lock.acquire(blocking=False):
        yield Buffers.allocate(shape)  # a registration on another thread holds the kept ones
        return
    try:
        if _kept is None or _kept.shape != shape:
            _kept = None  # the old ones go before the new ones are allocated
            fresh = Buffers.allocate(shape)
            if fresh.nbytes > KEPT_BUFFER_BYTES:
                yield fresh
                return
            _kept = fresh
        yield _kept
    finally:
        _kept_lock.release()


def opencv_real_spectrum(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``real_spectrum(image)`` (the rfft2 half spectrum, complex64) from OpenCV's DFT, for an
    image whose sides are even; other images take :func:`real_spectrum` on one thread.

    One transform takes 13 ms of CPU where pocketfft's takes 17 (2048 px float32, Intel IPP
    inside OpenCV), on one thread: two images are transformed side by side
    (:func:`servers.common.parallel.pair`), which uses both cores better than one transform
    after the other on two threads each. The numbers differ from pocketfft's by rounding
    (~1e-7 of the largest coefficient). ``image`` (float32, C-contiguous) is overwritten: OpenCV
    transforms in place into its packed ("CCS") layout, which is unpacked into ``out``
    (complex64, ``(height, width // 2 + 1)``; allocated when not given). Pass arrays the
    calling thread allocated when this runs on a worker (:mod:`servers.common.parallel`)."""
    height, width = image.shape
    if height % 2 or width % 2 or image.dtype != np.float32 or not image.flags.c_contiguous:
        spectrum = real_spectrum(image, workers=1)
        if out is None:
            return spectrum
        out[...] = spectrum
        return out
    if out is None:
        out = np.empty((height, width // 2 + 1), np.complex64)
    packed = cv2.dft(image, dst=image)
    # Each row of the packed layout is Re0, (Re_k, Im_k) for 0 < k < width/2, Re_(width/2);
    # the columns of Re0 and Re_(width/2), transforms of real columns, are packed the same way
    # down the rows. Everything else is the half spectrum itself.
    out[:, 1:width // 2] = packed[:, 1:width - 1].view(np.complex64)
    half = height // 2
    for source, target in ((0, 0), (width - 1, width // 2)):
        column = packed[:, source]
        out[0, target] = column[0]
        out[1:half, target].real = column[1:height - 1:2]
        out[1:half, target].imag = column[2:height - 1:2]
        out[half, target] = column[height - 1]
        out[half + 1:, target] = np.conj(out[half - 1:0:-1, target])
    return out


def inverse_real_spectrum(spectrum: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``irfft2(spectrum, s=shape)`` as float32, the same numbers to the last bit.

    For power-of-two sides, done as its two passes, the columns' inverse FFT in place on a copy
    of the spectrum, then the rows' real inverse FFT: pocketfft's own ``irfft2`` runs the column
    pass out of place, which took 14 ms of CPU where the copy plus the in-place pass take 12
    (2048 px, float32, in a registration). ``irfft2`` scales by 1/(rows * columns) at the end,
    the passes by 1/rows and 1/columns each: both powers of two, so exact either way. Other
    sizes take ``irfft2`` itself."""
    if (spectrum.shape[0] != shape[0] or spectrum.dtype != np.complex64
            or not all(side > 0 and side & (side - 1) == 0 for side in shape)):
        return scipy.fft.irfft2(spectrum, s=shape, workers=FFT_WORKERS).astype(np.float32, copy=False)
    columns = scipy.fft.ifft(spectrum.copy(), axis=0, workers=FFT_WORKERS, overwrite_x=True)
    return scipy.fft.irfft(columns, n=shape[1], axis=1, workers=FFT_WORKERS).astype(np.float32, copy=False)


def _surface_from_copy(columns: np.ndarray, shape: tuple[int, int], out: np.ndarray) -> np.ndarray:
    """``irfft2`` of the half spectrum ``columns`` (complex64, overwritten) into ``out`` (float32,
    ``shape``, both sides even).

    The columns' inverse FFT runs in place (pocketfft, all cores); the rows' real inverse FFT is
    OpenCV's, 4.5 ms of CPU where pocketfft's took 7 (2048 px), on the rows as they lie: moving
    each row's Re0 into the slot of its Im0 (zero for a real result, and ignored by an inverse
    real FFT) makes the rest of the row OpenCV's packed layout. The two halves of the rows run
    side by side. The numbers differ from ``irfft2``'s by rounding (~1e-7 of the largest)."""
    height, width = shape
    columns = scipy.fft.ifft(columns, axis=0, workers=FFT_WORKERS, overwrite_x=True)
    rows = columns.view(np.float32)
    rows[:, 1] = rows[:, 0]
    packed = rows[:, 1:width + 1]
    flags = cv2.DFT_INVERSE | cv2.DFT_ROWS | cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE
    halves = _row_halves(height, columns.size)
    if len(halves) == 1:
        cv2.dft(packed, dst=out, flags=flags)
    else:
        pair(lambda: cv2.dft(packed[halves[0]], dst=out[halves[0]], flags=flags),
             lambda: cv2.dft(packed[halves[1]], dst=out[halves[1]], flags=flags))
    return out


def cross_power_spectrum(reference: np.ndarray, target: np.ndarray,
                         reference_spectrum: np.ndarray | None = None,
                         snr_weighting: bool = True, target_spectrum: np.ndarray | None = None,
                         buffers: Buffers | None = None) -> np.ndarray:
    """Whitened, band-passed half cross-power spectrum of two apodised float32 images of equal shape.

    ``reference_spectrum`` (``real_spectrum(reference)``) saves one FFT when one reference
    is compared with many targets; ``target_spectrum`` likewise (computed in a batch by the
    caller, and overwritten here: pass a spectrum that is not used again). ``snr_weighting``
    multiplies each frequency by the product of the two images' signal fractions there (see
    :func:`snr_fraction`). With ``buffers`` (the spectra must be its ``spectra``) the work
    arrays are its own, and the result is also copied into ``buffers.spectra[0]`` (the
    reference spectrum, no longer needed by then) for :func:`_surface_from_copy`."""
    if target_spectrum is None:
        target_spectrum = real_spectrum(target)
    if reference_spectrum is None:
        reference_spectrum = real_spectrum(reference)
    shape = reference.shape
    weight = spectral_weight(shape)
    # The product of the two radial tables, looked up once: the same float32 numbers as the
    # product of the two looked-up arrays, for one table look-up instead of two plus a product.
    table = snr_fraction(reference_spectrum, shape) * snr_fraction(target_spectrum, shape) if snr_weighting else None
    product = target_spectrum  # a fresh array: conjugated and whitened in place
    magnitude = np.empty(product.shape, np.float32) if buffers is None else buffers.magnitude
    # The weights of the frequencies go into an array the calling thread owns (the halves run
    # on two threads; see servers.common.parallel on arrays allocated by the worker).
    scratch = None if buffers is None else buffers.scratch
    copy_into = None if buffers is None else buffers.spectra[0]
    # Every step is per frequency except one maximum: the two halves of the rows run side by
    # side (servers.common.parallel), with the numbers of one pass over the whole spectrum.
    halves = _row_halves(product.shape[0], product.size)

    def correlate(rows: slice) -> np.float32:
        part = product[rows]
        np.conjugate(part, out=part)
        part *= reference_spectrum[rows]
        np.abs(part, out=magnitude[rows])
        return magnitude[rows].max()

    def whiten(rows: slice, floor: np.float32) -> None:
        factor = magnitude[rows]
        np.maximum(factor, floor, out=factor)
        if WHITENING_EXPONENT != 1.0:
            np.power(factor, np.float32(WHITENING_EXPONENT), out=factor)
        if table is None:
            part_weight = weight[rows]
        elif scratch is None:
            part_weight = weight[rows] * radial_lookup(table, shape, rows)
        else:
            part_weight = np.multiply(weight[rows], radial_lookup(table, shape, rows, out=scratch[rows]),
                                      out=scratch[rows])
        # One real factor per frequency: band-pass weight / magnitude (whitening).
        np.divide(part_weight, factor, out=factor)
        product[rows] *= factor
        if copy_into is not None:
            copy_into[rows] = product[rows]  # after every half's correlate: the reference is done with

    if len(halves) == 1:
        floor = np.float32(1e-6) * np.float32(correlate(halves[0])) + np.float32(1e-30)
        whiten(halves[0], floor)
        return product
    largest = np.max(pair(lambda: correlate(halves[0]), lambda: correlate(halves[1])))  # NaN stays NaN
    floor = np.float32(1e-6) * np.float32(largest) + np.float32(1e-30)
    pair(lambda: whiten(halves[0], floor), lambda: whiten(halves[1], floor))
    return product


SPLIT_MIN_FREQUENCIES = 1 << 16
"""Spectra smaller than this are whitened in one piece: a thread hand-over costs more."""


def _row_halves(rows: int, size: int) -> list[slice]:
    if size < SPLIT_MIN_FREQUENCIES or rows < 2:
        return [slice(0, rows)]
    return [slice(0, rows // 2), slice(rows // 2, rows)]


PROFILE_SIDE = 192
"""The power profiles are averaged over every m-th row and column, m = side // 192: a few
thousand frequencies per profile are plenty for 64 radial bins."""

RADIAL_BINS = 64
"""Radial resolution (0 to 0.71 cycles/px) of the power profiles behind :func:`snr_fraction`."""

NOISE_BAND = (0.42, 0.5)
"""Radii (cycles/px) whose mean power is taken as the white-noise floor."""

FLAT_RATIO_ALL, FLAT_RATIO_NONE = 1.25, 2.0
"""Power just below the noise band over that in it: up to 1.25 the band is taken as all
noise, from 2 on as all signal (a noiseless image's spectrum keeps falling), linear between."""


@functools.lru_cache(maxsize=8)
def _radial_index(shape: tuple[int, int], step: int) -> np.ndarray:
    """Radial bin of every (every ``step``-th, when step > 1) rfft2 frequency (cached, read-only)."""
    fy = scipy.fft.fftfreq(shape[0])[::step]
    fx = scipy.fft.rfftfreq(shape[1])[::step]
    radius = np.hypot(fy[:, None], fx[None, :])
    index = np.minimum((radius / 0.71 * RADIAL_BINS).astype(np.int32), RADIAL_BINS - 1)
    out = index.astype(np.uint8)
    out.setflags(write=False)
    return out


def snr_fraction(spectrum: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Fraction of an image's power that is signal, per radial bin (``RADIAL_BINS`` float32
    values; :func:`radial_lookup` spreads them over the spectrum): ``S / (S + N)`` from its
    radially averaged power spectrum and a white-noise floor ``N`` measured near Nyquist.

    Whitening alone gives a frequency where the image has nothing but noise the same say
    as one where it has structure; on smooth or low-contrast images (most frequencies
    noise) that made the peak wander by 0.3-1.4 px at 2 % noise. Weighting by the signal
    fractions of both images (their product is the coherence a matched pair can have)
    is what an optimal (maximum-likelihood) shift estimator does, and costs one pass over
    a subsampled spectrum plus a table look-up."""
    step = max(1, int(max(shape) // PROFILE_SIDE))
    sub = spectrum[::step, ::step]
    index = _radial_index(shape, step)
    power = sub.real * sub.real + sub.imag * sub.imag
    counts = np.bincount(index.ravel(), minlength=RADIAL_BINS)
    profile = np.bincount(index.ravel(), weights=power.ravel(), minlength=RADIAL_BINS) / np.maximum(counts, 1)
    radii = (np.arange(RADIAL_BINS) + 0.5) * 0.71 / RADIAL_BINS
    band = (radii >= NOISE_BAND[0]) & (radii <= NOISE_BAND[1]) & (counts > 0)
    below = (radii >= NOISE_BAND[0] - 0.1) & (radii < NOISE_BAND[0] - 0.02) & (counts > 0)
    noise = float(profile[band].mean()) if band.any() else 0.0
    if noise > 0 and below.any():
        # White noise is flat: a profile still falling towards Nyquist is (partly) signal there.
        falling = float(profile[below].mean()) / noise
        noise *= float(np.clip((FLAT_RATIO_NONE - falling) / (FLAT_RATIO_NONE - FLAT_RATIO_ALL), 0.0, 1.0))
    return np.clip((profile - noise) / np.maximum(profile, 1e-30), 0.0, 1.0).astype(np.float32)


def radial_lookup(table: np.ndarray, shape: tuple[int, int], rows: slice = slice(None),
                  out: np.ndarray | None = None) -> np.ndarray:
    """``table[radial bin]`` for every rfft2 frequency of ``shape`` (float32), or for those of ``rows``
    (into ``out``, float32 of that shape, when given).

    OpenCV's 256-entry table look-up on the uint8 bin indices: 1.6 ms for a 2048 px
    spectrum, where numpy's fancy indexing took 5.4 ms (it first widens the 2 M indices to
    64-bit integers). The values are the table's, copied."""
    lut = np.zeros(256, np.float32)
    lut[:RADIAL_BINS] = table
    index = _radial_index(shape, 1)[rows]
    if out is not None:
        cv2.LUT(index, lut, dst=out)
        return out
    return cv2.LUT(index, lut).reshape(index.shape)


WHITENING_EXPONENT = 1.0
"""The cross-power spectrum is divided by its magnitude to this power (1 = phase correlation)."""

LOWPASS_CUTOFF = 0.25
"""Spatial frequency (cycles/px) where the whitened spectrum's Gaussian taper is 1/e.

Whitening gives the frequencies near Nyquist, where images carry little beyond noise,
JPEG block and quantisation patterns, as much weight as the real structure; those
patterns are shared by unrelated images and made them "match". Tapering them keeps the
peak sharp enough for 1/100 px and makes chance peaks behave like the noise model that
:mod:`confidence` assumes."""

HIGHPASS_CYCLES = 2.0
"""Frequencies below this many cycles per image mostly describe the window and the
illumination envelope, which every pair shares at zero shift, so they are suppressed."""


@functools.lru_cache(maxsize=8)
def spectral_weight(shape: tuple[int, int]) -> np.ndarray:
    """Band-pass weight in rfft2 layout: Gaussian low-pass times a soft DC-notch (cached, read-only)."""
    fy = scipy.fft.fftfreq(shape[0]).astype(np.float32)
    fx = scipy.fft.rfftfreq(shape[1]).astype(np.float32)
    radius2 = fy[:, None] ** 2 + fx[None, :] ** 2
    notch = (HIGHPASS_CYCLES / min(shape)) ** 2
    weight = np.exp(-radius2 / np.float32(LOWPASS_CUTOFF ** 2)) * (1 - np.exp(-radius2 / np.float32(notch)))
    weight = weight.astype(np.float32)
    weight.setflags(write=False)
    return weight


def _half_spectrum_weights(width: int) -> np.ndarray:
    """Weights that make a sum over the rfft half spectrum equal the full-spectrum sum's real part."""
    half = width // 2 + 1
    weights = np.full(half, 2.0, dtype=np.float32)
    weights[0] = 1.0
    if width % 2 == 0:
        weights[-1] = 1.0
    return weights


def _phase_ramps(start: float, step: float, count: int, frequencies: np.ndarray, length: int) -> np.ndarray:
    """``exp(2j pi (start + j step) k / length)`` for j < count (rows) and k in ``frequencies``.

    Built as a running product of one step factor rather than count x len(k) complex
    exponentials: 0.1 ms instead of 3 ms for the two kernels of a 31-point 2048 px grid,
    with a rounding error of ~count * 1e-16."""
    ramps = np.empty((count, frequencies.size), np.complex128)
    ramps[0] = np.exp((2j * np.pi * start / length) * frequencies)
    factor = np.exp((2j * np.pi * step / length) * frequencies)
    for row in range(1, count):  # row by row: np.cumprod along axis 0 measured 6x slower
        np.multiply(ramps[row - 1], factor, out=ramps[row])
    return ramps


def upsampled_correlation(spectrum: np.ndarray, shape: tuple[int, int], centre: tuple[float, float],
                          upsample: int, size: int) -> np.ndarray:
    """Correlation surface at ``size`` x ``size`` points spaced 1/upsample around ``centre`` (dy, dx).

    ``spectrum`` is the rfft2-layout cross-power spectrum; the result is real and on the same
    scale as ``irfft2(spectrum)`` (i.e. normalised by the pixel count).
    """
    height, width = shape
    first = -(size // 2) / upsample
    row_kernel = _phase_ramps(centre[0] + first, 1.0 / upsample, size,
                              scipy.fft.fftfreq(height) * height, height).astype(np.complex64)
    # The half-spectrum weights go into the small kernel, not into a copy of the spectrum.
    col_kernel = (_phase_ramps(centre[1] + first, 1.0 / upsample, size,
                               np.arange(width // 2 + 1, dtype=np.float64), width).T
                  * _half_spectrum_weights(width)[:, None]).astype(np.complex64)
    # Contract the long, contiguous axis first: (H x W) @ (W x U) with U small is ~10x faster
    # than (U x H) @ (H x W). And do it as one real float32 product on the interleaved
    # (re, im) view of the spectrum: sgemm measured 16 ms against 24 ms for the same complex64
    # cgemm (2048 x 1025 by 31 points, 2 cores). Real columns give Re(S K), the others Im(S K).
    spectrum = np.ascontiguousarray(spectrum, dtype=np.complex64)
    count = col_kernel.shape[1]
    # Columns padded with zeros to a multiple of 16 (OpenBLAS's sgemm kernels): 62 -> 64 columns
    # took 6.8 instead of 7.5 ms, and each column's sums are the same.
    real_kernel = np.zeros((2 * col_kernel.shape[0], -(-2 * count // 16) * 16), np.float32)
    real_kernel[0::2, :count] = col_kernel.real
    real_kernel[1::2, :count] = -col_kernel.imag
    real_kernel[0::2, count:2 * count] = col_kernel.imag
    real_kernel[1::2, count:2 * count] = col_kernel.real
    with single_threaded_blas(spectrum.size):
        partial = split_product(spectrum.view(np.float32), real_kernel)
        surface = row_kernel.real @ partial[:, :count] - row_kernel.imag @ partial[:, count:2 * count]
    return surface / (height * width)


def _argmax_on_grid(spectrum: np.ndarray, shape: tuple[int, int], centre: tuple[float, float],
                    upsample: int, size: int, polarity: int) -> tuple[tuple[float, float], float]:
    local = upsampled_correlation(spectrum, shape, centre, upsample, size) * polarity
    row, col = np.unravel_index(int(np.argmax(local)), local.shape)
    return ((centre[0] + (row - size // 2) / upsample, centre[1] + (col - size // 2) / upsample),
            float(local[row, col]))


FINE_GRID_HALF_WIDTH_PX = 0.15
"""Half-width of the 1/upsample grid around the Gaussian-fit start. The fit lands within
0.02 px of the final maximum on clean pairs and within 0.35 px on pairs with noise twice
the signal (measured on five scikit-image micrographs); a maximum on the grid's edge moves
the grid, so the margin only decides how often that happens."""

NEIGHBOURHOOD_PX = 0.75
"""The single-step method's search range around the integer peak (a 1.5 px square)."""


def gaussian_peak_offset(surface: np.ndarray, row: int, col: int, polarity: int) -> tuple[float, float]:
    """Sub-pixel (dy, dx) of the peak at (row, col) from a Gaussian (log-parabola) through the
    3 + 3 neighbouring samples: the whitened, tapered spectrum makes the peak ~Gaussian, so
    this is a free first estimate that usually saves the coarse upsampled stage."""
    height, width = surface.shape

    def axis(before: float, centre: float, after: float) -> float:
        if min(before, centre, after) > 0:
            before, centre, after = math.log(before), math.log(centre), math.log(after)
        curvature = before - 2.0 * centre + after
        if curvature >= 0:
            return 0.0
        return float(np.clip(0.5 * (before - after) / curvature, -0.5, 0.5))

    def value(dr: int, dc: int) -> float:
        return polarity * float(surface[(row + dr) % height, (col + dc) % width])

    centre = value(0, 0)
    return axis(value(-1, 0), centre, value(1, 0)), axis(value(0, -1), centre, value(0, 1))


def refine_peak(spectrum: np.ndarray, shape: tuple[int, int], centre: tuple[float, float], upsample: int,
                polarity: int = 1, start: tuple[float, float] | None = None) -> tuple[tuple[float, float], float]:
    """Maximum of the upsampled correlation within 0.75 px of the integer peak ``centre``, on a
    1/upsample grid.

    This is the Guizar-Sicairos single-step DFT (same kernel, same grid, same answer), but
    evaluated only where the maximum lies: on a +-0.15 px patch of the grid around ``start``
    (a sub-pixel estimate such as :func:`gaussian_peak_offset` gives; default ``centre``),
    moved to the best point and evaluated again while that best point is on the patch's
    edge. The peak of the band-limited correlation is smooth and single within the 1.5 px
    neighbourhood, so the patch's interior maximum is the grid's maximum (tests/unit/registration
    check this against the full 1.5*upsample grid). Each evaluation reads the whole spectrum
    once, so one 31-point patch costs a quarter of the full 150-point grid and half of a
    coarse-then-fine pair of grids.
    """
    lattice = np.asarray(centre, dtype=float)
    low, high = lattice - NEIGHBOURHOOD_PX, lattice + NEIGHBOURHOOD_PX
    position = lattice if start is None else np.clip(
        lattice + np.round((np.asarray(start, dtype=float) - lattice) * upsample) / upsample, low, high)
    half = max(1, int(math.ceil(FINE_GRID_HALF_WIDTH_PX * upsample - 1e-9)))
    size = 2 * half + 1
    max_moves = int(math.ceil(2 * NEIGHBOURHOOD_PX * upsample / half)) + 1
    for _ in range(max_moves):
        best, value = _argmax_on_grid(spectrum, shape, (float(position[0]), float(position[1])),
                                      upsample, size, polarity)
        best_array = np.clip(np.asarray(best), low, high)
        on_edge = np.abs(best_array - position) >= (half - 0.5) / upsample
        at_limit = (np.abs(best_array - low) < 0.5 / upsample) | (np.abs(best_array - high) < 0.5 / upsample)
        if not np.any(on_edge & ~at_limit):
            return (float(best_array[0]), float(best_array[1])), value
        position = best_array
    return (float(best_array[0]), float(best_array[1])), value


def _shift_limit_mask(shape: tuple[int, int], max_shift: float | None) -> np.ndarray | None:
    if max_shift is None:
        return None
    return _cached_shift_limit_mask((int(shape[0]), int(shape[1])), float(max_shift))


@functools.lru_cache(maxsize=16)
def _cached_shift_limit_mask(shape: tuple[int, int], max_shift: float) -> np.ndarray:
    """The disc of searched shifts, cached read-only: a patch refinement asks for the same
    one some fifty times per registration."""
    height, width = shape
    dy = scipy.fft.fftfreq(height) * height
    dx = scipy.fft.fftfreq(width) * width
    mask = (dy[:, None] ** 2 + dx[None, :] ** 2) <= max_shift ** 2
    mask.setflags(write=False)
    return mask


def estimate_translation(reference: np.ndarray, target: np.ndarray, upsample: int = 100,
                         max_shift_px: float | None = None, polarity_invariant: bool = True,
                         reference_spectrum: np.ndarray | None = None,
                         snr_weighting: bool = True, with_uncertainty: bool = False,
                         target_spectrum: np.ndarray | None = None, buffers: Buffers | None = None) -> PeakEstimate:
    """Shift of ``target`` onto ``reference``; both apodised float32 arrays of the same shape.

    Shifts are searched in the wrap-around range [-N/2, N/2) of each axis; a peak in the
    upper half of the FFT grid is a negative shift. ``max_shift_px`` (in these pixels)
    restricts the search to a disc, which is how a caller excludes a known-wrong periodic
    match. With ``polarity_invariant`` a strong negative peak (inverted contrast) counts too.
    ``with_uncertainty`` adds the shift's covariance and the two-band agreement test
    (:mod:`uncertainty`). ``reference_spectrum`` / ``target_spectrum``: see
    :func:`cross_power_spectrum`. ``buffers`` (:func:`buffers`, whose ``spectra`` the two
    spectra must be; both are overwritten) holds every large array of the call; then only the
    shapes of ``reference`` and ``target`` are read.
    """
    if reference.shape != target.shape:
        raise BadArgument(f"internal: shapes differ {reference.shape} vs {target.shape}")
    if upsample < 1:
        raise BadArgument(f"upsample must be >= 1, got {upsample}")
    shape = reference.shape
    if buffers is not None and (buffers.shape != shape or reference_spectrum is not buffers.spectra[0]
                                or target_spectrum is not buffers.spectra[1]):
        raise BadArgument("internal: buffers must be of the images' shape and hold both spectra")
    spectrum = cross_power_spectrum(reference, target, reference_spectrum, snr_weighting, target_spectrum, buffers)
    if buffers is None:
        surface = inverse_real_spectrum(spectrum, shape)
    else:
        surface = _surface_from_copy(buffers.spectra[0], shape, buffers.surface)
    mask = _shift_limit_mask(shape, max_shift_px)
    positions = surface.size if mask is None else int(mask.sum())
    found = _abs_peak_and_runner_up(surface) if mask is None and polarity_invariant else None
    if found is None:
        searched = np.abs(surface) if polarity_invariant else surface
        if mask is not None:
            searched = np.where(mask, searched, -np.inf)
        flat_index = int(np.argmax(searched))
        row, col = (int(index) for index in np.unravel_index(flat_index, shape))
        runner_up = _runner_up(searched, (row, col))
    else:
        row, col, runner_up = found
    polarity = 1 if surface[row, col] >= 0 else -1
    peak = float(abs(surface[row, col]))
    z = _peak_significance(surface, peak)
    distinctness = peak / max(runner_up, 1e-30)
    peak_row = row - shape[0] if row > shape[0] // 2 else row
    peak_col = col - shape[1] if col > shape[1] // 2 else col
    dy, dx = float(peak_row), float(peak_col)
    if upsample > 1:
        offset = gaussian_peak_offset(surface, row, col, polarity)
        (dy, dx), refined_peak = refine_peak(spectrum, shape, (dy, dx), upsample, polarity,
                                             start=(dy + offset[0], dx + offset[1]))
        peak = max(peak, refined_peak)
    tests = positions * (2 if polarity_invariant else 1)
    on_edge = _on_edge(shape, peak_row, peak_col, max_shift_px)
    if not with_uncertainty:
        return PeakEstimate((dx, dy), peak, distinctness, z, tests, polarity, on_edge=on_edge)
    covariance = uncertainty.shift_covariance(spectrum, shape, (dx, dy), polarity)
    low, high = uncertainty.band_estimates(spectrum, shape, (dx, dy), polarity)
    agree, distance = uncertainty.band_agreement(low, high)
    return PeakEstimate((dx, dy), peak, distinctness, z, tests, polarity, covariance, agree, distance, on_edge)


EDGE_MARGIN_PX = 1
"""An integer peak this close to the searched window's limit is 'on the edge'."""


def _on_edge(shape: tuple[int, int], row: int, col: int, max_shift_px: float | None) -> bool:
    height, width = shape
    if abs(row) >= height // 2 - EDGE_MARGIN_PX or abs(col) >= width // 2 - EDGE_MARGIN_PX:
        return True
    return max_shift_px is not None and math.hypot(row, col) >= max_shift_px - EDGE_MARGIN_PX


RUNNER_UP_EXCLUSION_PX = 4
"""Half-width of the box around the peak that belongs to the peak itself (the taper in
:func:`spectral_weight` makes a peak ~2 px wide)."""


def _exclusion_box(shape: tuple[int, int], peak_index: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    height, width = shape
    rows = np.arange(peak_index[0] - RUNNER_UP_EXCLUSION_PX, peak_index[0] + RUNNER_UP_EXCLUSION_PX + 1) % height
    cols = np.arange(peak_index[1] - RUNNER_UP_EXCLUSION_PX, peak_index[1] + RUNNER_UP_EXCLUSION_PX + 1) % width
    return np.ix_(rows, cols)


def _abs_peak_and_runner_up(surface: np.ndarray) -> tuple[int, int, float] | None:
    """(row, col) of the first maximum of ``|surface|`` and the highest ``|surface|`` outside
    its exclusion box: what ``np.argmax(np.abs(surface))`` and :func:`_runner_up` give, from
    two OpenCV min/max scans of the surface itself (no 16 MB ``|surface|`` array and three
    passes fewer on a 2048 px surface). None when the surface is not finite (OpenCV's scan
    skips NaN where numpy's argmax returns it): the caller then takes the numpy path."""
    low, high, low_at, high_at = cv2.minMaxLoc(surface)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    width = surface.shape[1]
    low_index = low_at[1] * width + low_at[0]
    high_index = high_at[1] * width + high_at[0]
    # argmax of |surface| is the first position of the largest magnitude; locations are (x, y).
    if -low > high or (-low == high and low_index < high_index):
        row, col = low_at[1], low_at[0]
    else:
        row, col = high_at[1], high_at[0]
    box = _exclusion_box(surface.shape, (row, col))
    saved = surface[box].copy()
    surface[box] = 0.0  # |0| never exceeds a value outside; an all-zero rest gives 0 as before
    low, high, _, _ = cv2.minMaxLoc(surface)
    surface[box] = saved
    return int(row), int(col), float(max(high, -low))


def _runner_up(searched: np.ndarray, peak_index: tuple[int, int]) -> float:
    """Highest value of ``searched`` outside a box around ``peak_index`` (wrap-around aware)."""
    box = _exclusion_box(searched.shape, peak_index)
    saved = searched[box].copy()
    searched[box] = -np.inf
    value = float(searched.max())
    searched[box] = saved
    return value if np.isfinite(value) else 0.0


def _peak_significance(surface: np.ndarray, peak: float) -> float:
    """Peak height in units of the surface's noise level.

    For a whitened spectrum the surface's total energy is known (Parseval), so the noise
    standard deviation is what remains after removing the peak's share. This is cheaper
    and steadier than a robust spread estimate over millions of samples.
    """
    energy = float(cv2.norm(surface, cv2.NORM_L2SQR))  # np.dot would leave BLAS threads spinning
    remaining = max(energy - peak * peak, 1e-30)
    sigma = math.sqrt(remaining / max(surface.size - 1, 1))
    return peak / sigma

