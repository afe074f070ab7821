"""The lab SEM image of the sample: the reference the workflow registers and detects on.

Contrast model (secondary electrons, ~10 keV): thin SiN membrane dark, Si chip frame
brighter, Pt markers and CeO2 cubes bright (heavy elements) with a brighter rim (edge
effect), a Gaussian probe blur, a slow multiplicative charging gradient and shot-like
noise (variance proportional to the signal). Every term is centrally symmetric about an
isolated particle, so the rendered intensity centroid stays on its true position.

A real SEM image is not a perfect similarity: the magnification is off by a percent or two
(``scale_error``), the scan axes are slightly sheared (``shear_deg``), and the scan is not
linear across a large field (``nonlinearity``). The first two are affine and part of the
truth ``pixel_to_sample``; the non-linearity is extra (zero mean, no affine part, so the
truth stays the best affine). With any of them the image is rasterised on the nominal
(conformal) grid with a margin and resampled once, bilinearly, before charging and noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from simulation.config import SemGeometry
from simulation.geometry import homogeneous, rotation_2x2
from simulation.raster import PixelFrame, draw_cubes, draw_markers, rectangle_coverage
from simulation.sample import Sample

SEM_STREAM = 0x5E3
"""Stream tag mixed into the seed so SEM noise never repeats camera or XRF noise."""


@dataclass(frozen=True)
class SemImage:
    image: np.ndarray
    """uint16, rows x columns."""
    pixel_to_sample: np.ndarray
    """Truth: 3x3, SEM pixel (x=col, y=row) -> sample µm."""
    pixel_size_um: float


ROW_BAND = 256
"""Rows resampled at a time when the scan is imperfect (bounds the map's memory)."""


def _centre_px(geometry: SemGeometry) -> np.ndarray:
    return np.array([(geometry.width - 1) / 2.0, (geometry.height - 1) / 2.0])


def sem_nominal_pixel_to_sample(sample: Sample, geometry: SemGeometry) -> np.ndarray:
    """3x3: what the SEM says: pixel -> sample µm at the nominal pixel size, a similarity.
    The image centre ``((W-1)/2, (H-1)/2)`` shows ``centre_um``; image axes are the sample
    axes turned by ``rotation_deg``."""
    centre = geometry.centre_um if geometry.centre_um is not None else sample.centre
    linear = geometry.pixel_size_um * rotation_2x2(geometry.rotation_deg)
    return homogeneous(linear, np.asarray(centre, float) - linear @ _centre_px(geometry))


def scan_error_matrix(geometry: SemGeometry) -> np.ndarray:
    """3x3 in pixels, about the image centre: magnification error and shear of the scan."""
    ex, ey = geometry.scale_error
    sh = math.radians(geometry.shear_deg)
    linear = np.array([[1.0 + ex, (1.0 + ey) * math.sin(sh)], [0.0, (1.0 + ey) * math.cos(sh)]])
    pc = _centre_px(geometry)
    return homogeneous(linear, pc - linear @ pc)


def sem_pixel_to_sample(sample: Sample, geometry: SemGeometry) -> np.ndarray:
    """Truth, 3x3: SEM pixel -> sample µm, the best affine (magnification error and shear
    included; the scan non-linearity is extra, :func:`scan_nonlinearity_px`)."""
    return sem_nominal_pixel_to_sample(sample, geometry) @ scan_error_matrix(geometry)


def scan_nonlinearity_px(geometry: SemGeometry, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel displacement of the scan non-linearity: pixel (x, y) shows what the affine
    truth puts at ``(x + dx, y + dy)``; ``dx`` depends on x only (fast scan), ``dy`` on y."""
    pc = _centre_px(geometry)
    hx, hy = max(pc[0], 0.5), max(pc[1], 0.5)
    u, v = (np.asarray(x, float) - pc[0]) / hx, (np.asarray(y, float) - pc[1]) / hy
    ax, ay = geometry.nonlinearity
    return ax * hx * (u**3 - 0.6 * u), ay * hy * (v**3 - 0.6 * v)


def _imperfect(geometry: SemGeometry) -> bool:
    return any(v != 0.0 for v in (*geometry.scale_error, geometry.shear_deg, *geometry.nonlinearity))


def _resample(ideal: np.ndarray, geometry: SemGeometry, margin: int) -> np.ndarray:
    """The real scan from the image rasterised on the nominal grid (offset by ``margin``)."""
    error = scan_error_matrix(geometry)
    out = np.empty((geometry.height, geometry.width), np.float32)
    xs = np.arange(geometry.width, dtype=np.float64)
    dx, _ = scan_nonlinearity_px(geometry, xs, np.zeros(1))
    for top in range(0, geometry.height, ROW_BAND):
        ys = np.arange(top, min(top + ROW_BAND, geometry.height), dtype=np.float64)
        _, dy = scan_nonlinearity_px(geometry, np.zeros(1), ys)
        px = (xs + dx)[None, :]
        py = (ys + dy)[:, None]
        mx = (error[0, 0] * px + error[0, 1] * py + error[0, 2] + margin).astype(np.float32)
        my = (error[1, 0] * px + error[1, 1] * py + error[1, 2] + margin).astype(np.float32)
        out[top:top + len(ys)] = cv2.remap(ideal, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


def _margin(geometry: SemGeometry) -> int:
    """Pixels the nominal grid must extend beyond the image to cover the real scan."""
    corners = np.array([[0, 0], [geometry.width - 1, 0], [0, geometry.height - 1],
                        [geometry.width - 1, geometry.height - 1]], float)
    error = scan_error_matrix(geometry)
    moved = corners @ error[:2, :2].T + error[:2, 2]
    reach = float(np.abs(moved - corners).max())
    reach += 0.4 * max(abs(geometry.nonlinearity[0]) * geometry.width, abs(geometry.nonlinearity[1]) * geometry.height)
    return int(math.ceil(reach)) + 4


def _charging(shape: tuple[int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field in [1 - a, 1 + a]: slow drift along the scan plus a tilt."""
    h, w = shape
    yn = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    xn = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    c = rng.uniform(-1.0, 1.0, 4).astype(np.float32)
    field = c[0] * xn + c[1] * yn + c[2] * xn * yn + c[3] * (yn * yn - 0.5)
    scale = np.float32(amplitude / max(float(np.abs(c).sum()), 1e-9))
    return (1.0 + scale * field).astype(np.float32)


def render_sem(sample: Sample, geometry: SemGeometry, seed: int = 0) -> SemImage:
    """Render the SEM image; a pure function of (sample, geometry, seed)."""
    matrix = sem_pixel_to_sample(sample, geometry)
    imperfect = _imperfect(geometry)
    margin = _margin(geometry) if imperfect else 0
    if imperfect:
        nominal = sem_nominal_pixel_to_sample(sample, geometry) @ homogeneous(np.eye(2), (-margin, -margin))
        frame = PixelFrame(nominal, geometry.width + 2 * margin, geometry.height + 2 * margin)
    else:
        frame = PixelFrame(matrix, geometry.width, geometry.height)
    px = geometry.pixel_size_um
    g = geometry

    membrane = rectangle_coverage(frame, (sample.width / 2, sample.height / 2, sample.width, sample.height, 0.0))
    if membrane.min() >= 1.0:  # the usual case: the field lies inside the membrane window
        image = np.full(membrane.shape, g.level_membrane, np.float32)
    else:
        image = (g.level_frame + (g.level_membrane - g.level_frame) * membrane).astype(np.float32)
    flat = image.reshape(-1)

    def paint(coverage: np.ndarray, rim: np.ndarray, level: float) -> None:
        """Replace the background by ``level`` (rim: ``level * edge_gain``) where covered;
        only the touched pixels are visited, a few percent of a 16-Mpixel field."""
        touched = np.flatnonzero(coverage)
        cov = np.minimum(coverage.reshape(-1)[touched], 1.0)
        edge = np.minimum(rim.reshape(-1)[touched], cov)
        flat[touched] = flat[touched] * (1.0 - cov) + level * (cov - edge) + (level * g.edge_gain) * edge

    marker_cov, marker_rim = draw_markers(frame, sample.markers, g.rim_um)
    paint(marker_cov, marker_rim, g.level_pt)
    if g.probe_sigma_um > 0:  # the cubes below come already convolved with the probe
        image = cv2.GaussianBlur(image, (0, 0), g.probe_sigma_um / px, borderType=cv2.BORDER_REFLECT)
        flat = image.reshape(-1)
    materials = np.asarray(sample.material)
    for material, level in (("CeO2", g.level_ceo2), ("Pt", g.level_pt)):
        sel = materials == material
        if sel.any():
            cov, rim = draw_cubes(frame, sample.x[sel], sample.y[sel], sample.d[sel], sample.angle_deg[sel],
                                  g.rim_um, blur_um=g.probe_sigma_um)
            paint(cov, rim, level)
    if imperfect:
        image = _resample(image, geometry, margin)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SEM_STREAM]))
    if g.charging > 0:
        cv2.multiply(image, _charging(image.shape, g.charging, rng), dst=image)
    if g.noise and g.noise_gain > 0:
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        sigma = cv2.sqrt(cv2.max(image, 0.0) * np.float32(g.noise_gain))
        cv2.multiply(noise, sigma, dst=noise)
        cv2.add(image, noise, dst=image)
    np.rint(image, out=image)
    np.clip(image, 0, 65535, out=image)
    out = image.astype(np.uint16)
    return SemImage(out, matrix, px)
