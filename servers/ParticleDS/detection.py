"""Particle detection: trackpy's ``locate`` and ``locate_brightfield_ring``, fast and exact.

``locate`` follows trackpy.locate step by step (invert, band-pass, integer conversion,
local maxima, numba centre-of-mass refinement, duplicate removal, mass/size filters) with
the pixel-heavy steps from :mod:`preprocessing`. The refinement is trackpy's own
``refine_com_arr``, so positions, mass, size, eccentricity and signal mean exactly what
they mean in trackpy.

``locate_brightfield_ring`` is the real ring fit: the reference tool silently fell back
to ``locate``. Initial positions come from ``locate`` (bright interiors, or dark
particles with Invert), then trackpy's ``refine_brightfield_ring`` fits the dark ring
around each one on the non-inverted image.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from trackpy.preprocessing import invert_image
from trackpy.refine import refine_brightfield_ring
from trackpy.refine.center_of_mass import refine_com_arr

from servers.ParticleDS import preprocessing, scratch
from servers.ParticleDS.settings import ParticleSettings

MAX_ITERATIONS = 10
"""trackpy's default number of centre-of-mass iterations."""


@dataclass(frozen=True)
class Features:
    """Detected features in the coordinates of the image given to the detector.

    ``kept`` marks the particles: exactly what trackpy would return. The other rows are
    neighbours only, features that trackpy discards but that a beam would still hit:
    clusters larger than MaxSize, and maxima that trackpy's duplicate removal dropped
    although they sit clearly apart from the brighter feature (two touching particles
    closer than Separation). They are no result, but they count when isolation is judged.
    """

    y: np.ndarray
    x: np.ndarray
    mass: np.ndarray
    size: np.ndarray
    ecc: np.ndarray
    signal: np.ndarray
    kept: np.ndarray

    @classmethod
    def empty(cls) -> Features:
        empty = np.empty(0, dtype=np.float64)
        return cls(empty, empty, empty, empty, empty, empty, np.empty(0, dtype=bool))

    @classmethod
    def from_refined(cls, refined: np.ndarray, scale_factor: float, kept: np.ndarray) -> Features:
        """From trackpy's refine_com_arr columns (y, x, mass, size, ecc, signal, raw_mass)."""
        return cls(y=refined[:, 0].copy(), x=refined[:, 1].copy(), mass=refined[:, 2] / scale_factor,
                   size=refined[:, 3].copy(), ecc=refined[:, 4].copy(), signal=refined[:, 5] / scale_factor,
                   kept=np.asarray(kept, dtype=bool))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def select(self, rows: np.ndarray) -> Features:
        return Features(self.y[rows], self.x[rows], self.mass[rows], self.size[rows], self.ecc[rows],
                        self.signal[rows], self.kept[rows])

    def concat(self, other: Features) -> Features:
        return Features(*(np.concatenate([getattr(self, n), getattr(other, n)])
                          for n in ("y", "x", "mass", "size", "ecc", "signal", "kept")))


def _processed_dtype(raw: np.ndarray) -> type[np.integer]:
    """trackpy keeps integer images in their dtype and maps float images to 8 bits."""
    if np.issubdtype(raw.dtype, np.integer):
        return raw.dtype.type
    return np.uint8


def prepare_raw(image: np.ndarray) -> np.ndarray:
    """Bring any 2-D image to a dtype the fast path handles with trackpy's meaning.

    uint8/uint16/float32/float64 pass unchanged. Other integer images are shifted to start
    at zero and kept as uint16 when their range fits (the band-pass removes offsets, so
    nothing is lost), else they become float64, which trackpy treats as an 8-bit scale.
    """
    if image.dtype in (np.uint8, np.uint16, np.float32, np.float64):
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):
        low, high = int(image.min()), int(image.max())
        if high - low <= np.iinfo(np.uint16).max:
            return (image.astype(np.int64) - low).astype(np.uint16)
        return image.astype(np.float64)
    return image.astype(np.float64)


def detection_image(image: np.ndarray, settings: ParticleSettings) -> np.ndarray:
    """The image as ``locate`` sees it: bright particles (inverted when ``settings.Invert``)."""
    raw = prepare_raw(image)
    return invert_image(raw) if settings.Invert else raw


def locate(image: np.ndarray, settings: ParticleSettings, work: scratch.Scratch | None = None) -> Features:
    """trackpy.locate with these settings; features in (row, col) = (y, x) of ``image``.

    Returns every feature above MinMass, neighbours included (see :class:`Features`);
    trackpy's own result is ``features.select(features.kept)``. The full-size work images
    go into ``work`` (default: the process's kept scratch, see :mod:`scratch`).
    """
    with scratch.borrow(work) as borrowed:
        return _locate(image, settings, borrowed)


def _locate(image: np.ndarray, settings: ParticleSettings, work: scratch.Scratch) -> Features:
    raw = prepare_raw(image)
    diameter = settings.Diameter
    radius = diameter // 2
    separation = settings.separation_px
    smoothing_size = diameter
    is_float = not np.issubdtype(raw.dtype, np.integer)
    threshold = settings.Threshold if settings.Threshold > 0 else (1 / 255.0 if is_float else 1.0)
    if settings.Invert:
        raw = invert_image(raw)

    bandpassed = preprocessing.bandpass(raw, settings.NoiseSize, smoothing_size, threshold, scratch=work)
    scale_factor, processed = preprocessing.convert_to_int(bandpassed, _processed_dtype(raw), scratch=work)
    margin = (max(radius, separation // 2 - 1, smoothing_size // 2),) * 2
    candidates = preprocessing.local_maxima(processed, separation, settings.Percentile, margin, scratch=work)
    if len(candidates) == 0:
        return Features.empty()

    # Most candidates are noise maxima below MinMass, and they leave in the end anyway. Without
    # them nothing else changes: a feature is dropped only for a brighter one (above MinMass
    # too), and a faint one within the duplicate tolerance (< Separation) of a dropped, brighter
    # feature would have been dropped itself, so it never decides that feature's distinctness.
    faint_ones_leave = separation * (1 - 1e-6) > duplicate_tolerance_px(diameter) or separation <= 0
    if faint_ones_leave:
        # each candidate is refined on its own: those that cannot reach MinMass need no refinement
        candidates = candidates[preprocessing.may_reach_mass(processed, candidates, radius, MAX_ITERATIONS,
                                                             settings.MinMass, scale_factor, scratch=work)]
        if len(candidates) == 0:
            return Features.empty()
    refined = refine_com_arr(raw, processed, (radius, radius), candidates, max_iterations=MAX_ITERATIONS,
                             engine="numba", characterize=True)
    dropped = np.empty((0, refined.shape[1]))
    if faint_ones_leave:
        refined = refined[refined[:, 2] / scale_factor > settings.MinMass]
    if separation > 0:
        to_drop = preprocessing.where_close(refined[:, :2], separation, refined[:, 2])
        dropped = refined[to_drop]
        refined = np.delete(refined, to_drop, axis=0)
    kept = refined[:, 2] / scale_factor > settings.MinMass
    if settings.max_size_px is not None:
        kept &= refined[:, 3] < settings.max_size_px
    features = Features.from_refined(refined, scale_factor, kept)
    neighbours = Features.from_refined(dropped, scale_factor, np.zeros(len(dropped), dtype=bool))
    features = features.concat(neighbours)
    passed_mass = features.mass > settings.MinMass
    distinct = np.ones(len(features), dtype=bool)
    if len(dropped) and len(refined):
        distance, _ = cKDTree(refined[:, :2]).query(dropped[:, :2])
        distinct[len(refined):] = distance > duplicate_tolerance_px(settings.Diameter)
    return features.select(passed_mass & distinct)


def duplicate_tolerance_px(diameter: int) -> float:
    """Maxima dropped by trackpy that refine to within this of a kept feature are the same
    particle (a flat peak seen twice); farther ones are a second, touching particle."""
    return max(1.0, (diameter // 2) / 2.0)


def locate_brightfield_ring(image: np.ndarray, settings: ParticleSettings,
                            work: scratch.Scratch | None = None) -> Features:
    """Ring-fitted positions for bright-field images; ``size`` is the fitted ring radius in px.

    Only particles are ring-fitted; neighbours keep their centroid. A particle whose ring
    cannot be fitted (too little of the circumference found) is no result, as in trackpy,
    but stays a neighbour: something is there. Mass, eccentricity and signal come from
    the initial locate.
    """
    initial = locate(image, settings, work)
    if not initial.kept.any():
        return initial
    raw = prepare_raw(image)
    if not np.issubdtype(raw.dtype, np.integer):
        _, ring_image = preprocessing.convert_to_int(np.clip(raw, 0, None).astype(np.float32), np.uint8)
    else:
        ring_image = raw
    radius = settings.Diameter / 2.0
    y, x, size, kept = initial.y.copy(), initial.x.copy(), initial.size.copy(), initial.kept.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row in np.flatnonzero(initial.kept):
            fitted = _fit_ring(ring_image, radius, float(initial.y[row]), float(initial.x[row]))
            if fitted is None:
                kept[row] = False
                continue
            y[row], x[row], size[row] = fitted
    particles = np.flatnonzero(kept)
    separation = settings.separation_px
    to_drop = preprocessing.where_close(np.column_stack([y[particles], x[particles]]), separation,
                                        initial.mass[particles])
    kept[particles[to_drop]] = False  # two rings fitted onto one particle: keep the brighter start
    return Features(y=y, x=x, mass=initial.mass, size=size, ecc=initial.ecc, signal=initial.signal, kept=kept)


RING_WINDOW_RADII = 2.4
"""trackpy widens the ring search range by 3 % per retry (10 retries: x1.34); the window
must hold the farthest sample, radius + 1.34 radius, plus the spline's reach."""

SPLINE_MARGIN_PX = 10


def _fit_ring(image: np.ndarray, radius: float, y: float, x: float) -> tuple[float, float, float] | None:
    """trackpy's ring fit on a window around (y, x): (y, x, r), or None if no ring was found.

    trackpy spline-filters the image it is given (order 4) for every particle; on the
    window instead of the whole image the fit is the same and costs milliseconds, not seconds.
    """
    half = int(np.ceil(RING_WINDOW_RADII * radius)) + SPLINE_MARGIN_PX
    top, left = max(int(round(y)) - half, 0), max(int(round(x)) - half, 0)
    window = image[top:int(round(y)) + half + 1, left:int(round(x)) + half + 1]
    start = pd.Series({"y": y - top, "x": x - left})
    try:
        fitted = refine_brightfield_ring(window, (radius, radius), start, pos_columns=["y", "x"])
    except (ValueError, IndexError, np.linalg.LinAlgError):
        return None
    if fitted is None:
        return None
    result = (float(fitted["y"]) + top, float(fitted["x"]) + left, float(fitted["r"]))
    return result if np.all(np.isfinite(result)) else None


def detect(image: np.ndarray, settings: ParticleSettings, work: scratch.Scratch | None = None) -> Features:
    """Run the detector named by ``settings.Method`` (``work``: see :func:`locate`)."""
    if settings.Method == "locate_brightfield_ring":
        return locate_brightfield_ring(image, settings, work)
    return locate(image, settings, work)
