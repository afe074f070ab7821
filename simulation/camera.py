"""The on-axis optical camera: what the beamline microscope shows at given motor positions.

Geometry (see :mod:`simulation.mounting`): the camera is fixed in the lab and looks at the
beam. Camera pixel ``p`` sees the lab point ``C (p - b)`` (mm), where
``C = pixel_size/1000 * R(camera rotation) * F(flip)`` and ``b`` is the beam pixel. Solving
for the stage position that brings that sample point into the beam gives exactly the
public rule ``X = S + A (p - b)`` with ``A = -N^-1 C`` (:func:`camera_calibration`):
the minus sign is physical, moving the stage +x carries the sample, so features move
against the motor in the image.

Speed: a 2048x2048 frame must render in well under 33 ms for 30 fps. Everything that does
not change between frames is precomputed once per zoom level: the sample's reflectance,
rasterised on a grid in sample coordinates at half the camera pixel and already blurred
by the objective's PSF. A frame is then one ``cv2.warpAffine`` (bilinear) plus the fixed
illumination and the noise, all in preallocated float32 buffers.

Output: uint16 holding 12-bit data (0..4095). Noise: shot noise as a Gaussian of variance
= electrons (exact enough above ~20 e-, the darkest pixel here has ~2000) plus read noise.
The normal deviates come from OpenCV's ``cv2.randn`` (4x faster than numpy's generator),
reseeded for every frame from a numpy ``SeedSequence([seed, stream, frame_index])`` and
filled in two bands by two threads, each with its own seed; OpenCV's RNG is per thread, so
no state leaks between frames or threads.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from servers.common.errors import BadArgument
from simulation.config import CameraOptics, Mounting, OpticalPath
from simulation.geometry import homogeneous, rotation_2x2
from simulation.mounting import lab_to_sample, stage_motion_matrix
from simulation.optics import distorted_grid, parallax_matrix
from simulation.raster import PixelFrame, draw_markers, rectangle_coverage, splat_points
from simulation.sample import Sample

CAMERA_STREAM = 0xCA3
NOISE_BANDS = 2
FULL_SCALE_DN = 4095
RASTER_MARGIN_UM = 25.0


def camera_lab_matrix(optics: CameraOptics, zoom: str | None = None) -> np.ndarray:
    """``C``: camera pixel offset -> lab mm (2x2)."""
    level = optics.zooms[zoom or optics.zoom]
    flip = np.diag([-1.0, 1.0]) if optics.flip_x else np.eye(2)
    return level.pixel_size_um / 1000.0 * rotation_2x2(optics.rotation_deg) @ flip


def camera_calibration(optics: CameraOptics, mounting: Mounting, zoom: str | None = None) -> np.ndarray:
    """Truth: the 2x2 ``A`` (mm per px) of ``X = S + A (p - b)``. For tests and scoring only;
    the workflow has to calibrate it (smart_calibrate_camera)."""
    return -np.linalg.inv(stage_motion_matrix(mounting)) @ camera_lab_matrix(optics, zoom)


def camera_pixel_to_sample(sample: Sample, mounting: Mounting, optics: CameraOptics,
                           stage_mm: tuple[float, float], zoom: str | None = None,
                           path: OpticalPath | None = None) -> np.ndarray:
    """Truth: 3x3 camera pixel -> sample µm for a frame taken at ``stage_mm``; with an
    optical ``path``, its parallax is included (its lens distortion, not affine, is not:
    it applies to the pixel first, :func:`simulation.optics.undistort_pixel`)."""
    b = np.asarray(optics.beam(), float)
    c = camera_lab_matrix(optics, zoom)
    pixel_to_lab = homogeneous(c, -c @ b)
    if path is not None:
        pixel_to_lab = parallax_matrix(path, sample, mounting, stage_mm) @ pixel_to_lab
    return lab_to_sample(sample, mounting, stage_mm) @ pixel_to_lab


@dataclass(frozen=True)
class ReflectanceMap:
    """The blurred reflectance of the sample on a grid in sample coordinates."""

    image: np.ndarray
    frame: PixelFrame
    outside: float
    """Reflectance beyond the map (the Si chip)."""


def reflectance_map(sample: Sample, optics: CameraOptics, zoom: str, defocus_sigma_um: float = 0.0) -> ReflectanceMap:
    """Rasterise the sample's optical reflectance at half the camera pixel and blur it with
    the objective PSF (and a defocus blur, added in quadrature). Single cubes are
    area-weighted point splats (they are far below the resolution), agglomerates add up to
    visible blobs, markers are Pt-bright."""
    level = optics.zooms[zoom]
    spacing = level.pixel_size_um / 2.0
    origin = -RASTER_MARGIN_UM
    width = int(math.ceil((sample.width + 2 * RASTER_MARGIN_UM) / spacing)) + 1
    height = int(math.ceil((sample.height + 2 * RASTER_MARGIN_UM) / spacing)) + 1
    frame = PixelFrame(homogeneous(np.eye(2) * spacing, (origin, origin)), width, height)

    membrane = rectangle_coverage(frame, (sample.width / 2, sample.height / 2, sample.width, sample.height, 0.0))
    refl = optics.reflectance_frame + (optics.reflectance_membrane - optics.reflectance_frame) * membrane
    markers, _ = draw_markers(frame, sample.markers)
    refl = refl * (1.0 - markers) + optics.reflectance_pt * markers
    materials = np.asarray(sample.material)
    for material, value in (("CeO2", optics.reflectance_ceo2), ("Pt", optics.reflectance_pt)):
        sel = materials == material
        if sel.any():
            area = np.minimum(splat_points(frame, sample.x[sel], sample.y[sel], sample.d[sel] ** 2) / spacing**2, 1.0)
            refl = refl * (1.0 - area) + value * area
    sigma = math.hypot(level.psf_sigma_um, defocus_sigma_um) / spacing
    blurred = cv2.GaussianBlur(refl.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return ReflectanceMap(blurred, frame, optics.reflectance_frame)


def illumination_field(optics: CameraOptics) -> np.ndarray:
    """Uneven illumination fixed in the camera frame: quadratic vignetting plus a tilt, 1.0
    at the image centre."""
    yn = np.linspace(-1.0, 1.0, optics.height, dtype=np.float32)[:, None]
    xn = np.linspace(-1.0, 1.0, optics.width, dtype=np.float32)[None, :]
    tx, ty = optics.illumination_tilt
    field = 1.0 - optics.illumination_falloff * (xn * xn + yn * yn) / 2.0 + tx * xn + ty * yn
    return np.maximum(field, 0.0).astype(np.float32)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _noise_pool() -> ThreadPoolExecutor:
    """Shared by all renderers: each task seeds and fills its band inside one worker
    thread, so concurrent renderers cannot disturb each other's sequences."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=NOISE_BANDS, thread_name_prefix="sim-camera-noise")
        return _POOL


class CameraRenderer:
    """Renders camera frames of one sample on one mounting. Not thread-safe per instance
    (it reuses its buffers); make one per streaming thread.

    ``path`` adds the optical path's imperfections (:mod:`simulation.optics`); ``drift``
    returns the stage-mm shift the sample has drifted by now
    (:meth:`simulation.drift.Timelines.camera_shift_mm` at the simulated time), which every
    frame adds to the motor position it is rendered at."""

    def __init__(self, sample: Sample, mounting: Mounting, optics: CameraOptics, seed: int = 0,
                 path: OpticalPath | None = None, drift: Callable[[], np.ndarray] | None = None) -> None:
        self.sample = sample
        self.mounting = mounting
        self.optics = optics
        self.seed = int(seed)
        self.path = path or OpticalPath()
        self.drift = drift
        self._grid = distorted_grid(optics, self.path)
        self._map = np.empty((optics.height, optics.width, 2), np.float32) if self._grid is not None else None
        self._maps: dict[str, ReflectanceMap] = {}
        self._lock = threading.Lock()
        shape = (optics.height, optics.width)
        self._illumination = illumination_field(optics)
        self._signal = np.empty(shape, np.float32)
        self._sigma = np.empty(shape, np.float32)
        self._noise = np.empty(shape, np.float32)

    def reflectance(self, zoom: str | None = None) -> ReflectanceMap:
        """The precomputed map for a zoom level (built on first use, then cached)."""
        zoom = zoom or self.optics.zoom
        if zoom not in self.optics.zooms:
            raise BadArgument(f"zoom {zoom!r} is not a zoom level; use one of {', '.join(sorted(self.optics.zooms))}")
        with self._lock:
            if zoom not in self._maps:
                self._maps[zoom] = reflectance_map(self.sample, self.optics, zoom, self.path.defocus_sigma_um)
            return self._maps[zoom]

    def calibration(self, zoom: str | None = None) -> np.ndarray:
        return camera_calibration(self.optics, self.mounting, zoom)

    def pixel_to_sample(self, stage_mm: tuple[float, float], zoom: str | None = None) -> np.ndarray:
        """Truth for a frame at ``stage_mm`` (parallax included, drift not: add
        ``drift()`` to the stage for that)."""
        return camera_pixel_to_sample(self.sample, self.mounting, self.optics, stage_mm, zoom, self.path)

    def frame_seeds(self, frame_index: int) -> list[int]:
        """One OpenCV RNG seed per noise band of this frame, derived through numpy."""
        state = np.random.SeedSequence([self.seed, CAMERA_STREAM, int(frame_index)]).generate_state(NOISE_BANDS)
        return [int(v & 0x7FFFFFFF) for v in state]

    def _fill_gaussian(self, frame_index: int) -> None:
        """Standard normal deviates into the noise buffer, in horizontal bands filled by
        parallel threads: ``cv2.randn`` is single-threaded and was half of the frame time;
        each band has its own seed, so the result does not depend on thread timing."""
        bands = np.array_split(self._noise, NOISE_BANDS, axis=0)
        seeds = self.frame_seeds(frame_index)

        def fill(i: int) -> None:
            cv2.setRNGSeed(seeds[i])
            cv2.randn(bands[i], 0.0, 1.0)

        list(_noise_pool().map(fill, range(NOISE_BANDS)))

    def render(self, stage_mm: tuple[float, float], frame_index: int = 0, zoom: str | None = None,
               exposure_ms: float | None = None, noise: bool = True) -> np.ndarray:
        """One uint16 frame (12-bit data) with the motors at ``stage_mm``. Deterministic in
        (seed, frame_index, stage, zoom, exposure) and the drift at the time of the frame."""
        refl = self.reflectance(zoom)
        optics = self.optics
        if self.drift is not None:
            shift = np.asarray(self.drift(), float)
            stage_mm = (float(stage_mm[0] + shift[0]), float(stage_mm[1] + shift[1]))
        to_map = refl.frame.sample_to_pixel @ self.pixel_to_sample(stage_mm, zoom)
        signal, sigma, gauss = self._signal, self._sigma, self._noise
        if self._grid is None:
            cv2.warpAffine(refl.image, to_map[:2], (optics.width, optics.height), dst=signal,
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=refl.outside)
        else:  # lens distortion: each pixel sees its ideal pixel of the grid, then the affine
            cv2.transform(self._grid, to_map[:2].astype(np.float32), dst=self._map)
            cv2.remap(refl.image, self._map, None, cv2.INTER_LINEAR, dst=signal,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=refl.outside)
        exposure = optics.exposure_ms if exposure_ms is None else float(exposure_ms)
        cv2.multiply(signal, self._illumination, dst=signal, scale=exposure * optics.electrons_per_ms)
        gain = optics.gain_dn_per_e
        out = np.empty((optics.height, optics.width), np.uint16)
        if noise:
            cv2.add(signal, optics.read_noise_e**2, dst=sigma)
            cv2.sqrt(sigma, dst=sigma)
            self._fill_gaussian(frame_index)
            cv2.multiply(gauss, sigma, dst=gauss, scale=gain)
            second, weight = gauss, 1.0
        else:
            second, weight = signal, 0.0
        # electrons -> DN in one pass: OpenCV's saturate_cast rounds to nearest and clamps to 0..65535
        cv2.addWeighted(signal, gain, second, weight, optics.offset_dn, dst=out, dtype=cv2.CV_16U)
        cv2.min(out, FULL_SCALE_DN, dst=out)
        return out
