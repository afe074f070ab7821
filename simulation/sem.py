"""The lab SEM image of the sample: the reference the workflow registers and detects on.

Contrast model (secondary electrons, ~10 keV): thin SiN membrane dark, Si chip frame
brighter, Pt markers and CeO2 cubes bright (heavy elements) with a brighter rim (edge
effect), a Gaussian probe blur, a slow multiplicative charging gradient and shot-like
noise (variance proportional to the signal). Every term is centrally symmetric about an
isolated particle, so the rendered intensity centroid stays on its true position.
"""

from __future__ import annotations

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


def sem_pixel_to_sample(sample: Sample, geometry: SemGeometry) -> np.ndarray:
    """3x3: SEM pixel -> sample µm. The image centre ``((W-1)/2, (H-1)/2)`` shows
    ``centre_um``; image axes are the sample axes turned by ``rotation_deg``."""
    centre = geometry.centre_um if geometry.centre_um is not None else sample.centre
    linear = geometry.pixel_size_um * rotation_2x2(geometry.rotation_deg)
    pc = np.array([(geometry.width - 1) / 2.0, (geometry.height - 1) / 2.0])
    return homogeneous(linear, np.asarray(centre, float) - linear @ pc)


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
