"""A second cross-modal renderer, written independently of ``simulation/`` (imports nothing from it).

Scene (sample coordinates in µm): clustered particles of several shapes (triangles,
squares, hexagons, ellipses; log-normal sizes 0.2-3 µm), thin irregular flakes 5-25 µm,
curved fibres, and four marker crosses at random places (no fixed marker layout).
Every feature has two material properties: its SEM brightness and its optical absorbance.

Each image is rasterised by mapping the feature polygons into a supersampled pixel grid
(``cv2.fillPoly`` with sub-pixel vertices), filtered by that instrument's point-spread
function there, and area-binned to the pixel size, so pixel integration is real:

- SEM: material contrast plus edge brightening (secondary-electron edge effect), substrate
  texture, a charging gradient, a narrow beam PSF, shot and scan-line noise.
- Optical (bright field): absorbance makes features *dark* (contrast inverted w.r.t. SEM),
  flakes nearly transparent, particles under the resolution merge into grey smudges; a
  diffraction (Gaussian) PSF convolved with a defocus disc, vignetting (cos^4-like), a
  gamma curve, noise and 8-bit quantisation.

The truth returned is the exact matrix SEM px -> camera px implied by the two pixel grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

SUBPIXEL_BITS = 4


@dataclass
class Feature:
    polygon: np.ndarray | None
    """(n, 2) vertices in µm (filled), or None for a fibre."""
    polyline: np.ndarray | None
    width_um: float
    sem: float
    absorbance: float


@dataclass
class Scene:
    size_um: tuple[float, float]
    features: list[Feature]
    texture_seed: int

    @staticmethod
    def random(seed: int, size_um: tuple[float, float]) -> Scene:
        rng = np.random.default_rng(10_000 + seed)
        width, height = size_um
        features: list[Feature] = []
        # Flakes first (underneath): smooth star-shaped outlines.
        for _ in range(int(rng.integers(10, 18))):
            centre = rng.uniform((0, 0), (width, height))
            radius = rng.uniform(5.0, 25.0)
            angles = np.linspace(0, 2 * math.pi, 64, endpoint=False)
            harmonics = sum(rng.normal(0, 0.12) * np.cos(k * angles + rng.uniform(0, 6.3)) for k in range(1, 5))
            r = radius * (1.0 + harmonics)
            features.append(Feature(np.c_[centre[0] + r * np.cos(angles), centre[1] + r * np.sin(angles)], None,
                                    0.0, rng.uniform(0.12, 0.3), rng.uniform(0.05, 0.25)))
        # Fibres: smooth random walks.
        for _ in range(int(rng.integers(3, 7))):
            start = rng.uniform((0, 0), (width, height))
            heading = rng.uniform(0, 2 * math.pi)
            points = [start]
            for _ in range(40):
                heading += rng.normal(0, 0.15)
                points.append(points[-1] + 2.5 * np.array([math.cos(heading), math.sin(heading)]))
            features.append(Feature(None, np.array(points), rng.uniform(0.4, 1.5), rng.uniform(0.4, 0.7),
                                    rng.uniform(0.3, 0.6)))
        # Particles: 60 % in clusters, 40 % scattered.
        count = int(width * height / 45.0)
        clusters = rng.uniform((0, 0), (width, height), (max(1, count // 60), 2))
        for index in range(count):
            if index % 5 < 3:
                centre = clusters[rng.integers(len(clusters))] + rng.normal(0, 6.0, 2)
            else:
                centre = rng.uniform((0, 0), (width, height))
            radius = float(np.clip(rng.lognormal(math.log(0.6), 0.6), 0.2, 3.0))
            sides = int(rng.choice([3, 4, 6, 24]))
            aspect = rng.uniform(0.6, 1.0) if sides == 24 else 1.0
            turn = rng.uniform(0, 2 * math.pi)
            angles = turn + np.linspace(0, 2 * math.pi, sides, endpoint=False)
            local = np.c_[radius * np.cos(angles), aspect * radius * np.sin(angles)]
            rot = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
            features.append(Feature(centre + local @ rot.T, None, 0.0, rng.uniform(0.6, 1.0),
                                    rng.uniform(0.4, 0.9)))
        # Marker crosses at random places.
        for _ in range(4):
            centre = rng.uniform((10, 10), (width - 10, height - 10))
            arm, half = rng.uniform(4.0, 9.0), rng.uniform(0.6, 1.2)
            cross = np.array([[-half, -arm], [half, -arm], [half, -half], [arm, -half], [arm, half], [half, half],
                              [half, arm], [-half, arm], [-half, half], [-arm, half], [-arm, -half],
                              [-half, -half]])
            features.append(Feature(centre + cross, None, 0.0, 0.9, 0.95))
        return Scene((width, height), features, int(rng.integers(1 << 30)))


def _raster(scene: Scene, to_pixels: np.ndarray, shape: tuple[int, int], supersample: int,
            attribute: str, background: float) -> np.ndarray:
    """Feature ``attribute`` rasterised on the supersampled grid of an image whose pixel
    p maps to sample point ``inv(to_pixels) @ p``; fine pixel f covers p = (f + 0.5)/ss - 0.5."""
    fine_shape = (shape[0] * supersample, shape[1] * supersample)
    out = np.full(fine_shape, background, np.float32)
    fine = np.array([[supersample, 0, 0.5 * supersample - 0.5], [0, supersample, 0.5 * supersample - 0.5],
                     [0, 0, 1.0]]) @ to_pixels
    scale = float(1 << SUBPIXEL_BITS)
    linear, offset = fine[:2, :2], fine[:2, 2]
    unit = math.sqrt(abs(np.linalg.det(linear)))
    for feature in scene.features:
        value = float(getattr(feature, attribute))
        points = feature.polygon if feature.polygon is not None else feature.polyline
        mapped = points @ linear.T + offset
        if (mapped[:, 0].max() < -50 or mapped[:, 1].max() < -50 or mapped[:, 0].min() > fine_shape[1] + 50
                or mapped[:, 1].min() > fine_shape[0] + 50):
            continue
        vertices = np.round(mapped * scale).astype(np.int32)
        if feature.polygon is not None:
            cv2.fillPoly(out, [vertices], value, lineType=cv2.LINE_AA, shift=SUBPIXEL_BITS)
        else:
            thickness = max(1, int(round(feature.width_um * unit)))
            cv2.polylines(out, [vertices], False, value, thickness, lineType=cv2.LINE_AA, shift=SUBPIXEL_BITS)
    return out


def _bin(image: np.ndarray, factor: int) -> np.ndarray:
    h, w = image.shape[0] // factor, image.shape[1] // factor
    return image[:h * factor, :w * factor].reshape(h, factor, w, factor).mean(axis=(1, 3))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    noise = rng.normal(0, 1, shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), scale_px)
    return noise / max(float(noise.std()), 1e-9)


CAMERA_ORIGIN_UM = 20.0
"""The camera frame's top-left corner in scene µm (the scene extends 20 µm beyond it)."""


def _camera_to_pixels(pixel_um: float) -> np.ndarray:
    """Scene µm -> camera px: pixel p covers [p - 0.5, p + 0.5] * pixel_um + origin + pixel_um / 2."""
    return np.array([[1 / pixel_um, 0, -CAMERA_ORIGIN_UM / pixel_um - 0.5],
                     [0, 1 / pixel_um, -CAMERA_ORIGIN_UM / pixel_um - 0.5], [0, 0, 1.0]])


def render_optical(scene: Scene, pixel_um: float, shape: tuple[int, int], rng: np.random.Generator,
                   inverted: bool = True, supersample: int = 4) -> np.ndarray:
    """Bright-field camera frame (dark features when ``inverted``), float32 in 8-bit levels."""
    absorbance = _raster(scene, _camera_to_pixels(pixel_um), shape, supersample, "absorbance", 0.0)
    fine_um = pixel_um / supersample
    sigma = rng.uniform(0.35, 0.6) / fine_um            # diffraction-limited spot
    defocus = rng.uniform(0.2, 1.0) / fine_um            # defocus disc radius
    radius = int(math.ceil(defocus))
    ys, xs = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disc = (np.hypot(xs, ys) <= defocus).astype(np.float32)
    blurred = cv2.filter2D(absorbance, -1, disc / disc.sum(), borderType=cv2.BORDER_REFLECT)
    blurred = cv2.GaussianBlur(blurred, (0, 0), sigma)
    signal = _bin(blurred, supersample)
    transmission = np.exp(-1.5 * signal) if inverted else 0.2 + signal
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    centre = np.array([w / 2, h / 2]) + rng.uniform(-0.2, 0.2, 2) * np.array([w, h])
    r2 = ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (0.5 * math.hypot(w, h)) ** 2
    vignetting = (1.0 / (1.0 + rng.uniform(0.3, 0.8) * r2)) ** 2
    illumination = 0.8 * vignetting * (1.0 + 0.05 * _smooth_noise(rng, shape, 40.0))
    image = (transmission * illumination) ** rng.uniform(0.7, 1.0)
    image = 230.0 * image / max(float(image.max()), 1e-9)
    image = image + rng.normal(0, 1.0, shape) * np.sqrt(np.maximum(image, 1.0)) * 0.25 + rng.normal(0, 1.5, shape)
    return np.clip(np.round(image), 0, 255).astype(np.float32)


def render_sem(scene: Scene, pixel_um: float, field_um: float, centre_um: tuple[float, float],
               rotation_deg: float, camera_pixel_um: float, rng: np.random.Generator,
               supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """SEM field of ``field_um`` centred at ``centre_um`` (camera-frame µm), its scan rotated by
    ``rotation_deg``; returns the image and the truth SEM px -> camera px."""
    side = int(round(field_um / pixel_um))
    angle = math.radians(rotation_deg)
    c, s = math.cos(angle), math.sin(angle)
    half = (side - 1) / 2
    centre = np.array(centre_um) + CAMERA_ORIGIN_UM
    # SEM px q -> scene µm: centre + R (q - half) * pixel_um
    to_scene = np.array([[c * pixel_um, -s * pixel_um, 0.0], [s * pixel_um, c * pixel_um, 0.0], [0, 0, 1.0]])
    to_scene[:2, 2] = centre - to_scene[:2, :2] @ np.array([half, half])
    material = _raster(scene, np.linalg.inv(to_scene), (side, side), supersample, "sem", 0.08)
    texture = 0.02 * _smooth_noise(rng, material.shape, 6.0)
    smooth = cv2.GaussianBlur(material, (0, 0), 0.8)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    edges = cv2.magnitude(gx, gy)
    edges /= max(float(np.percentile(edges, 99.5)), 1e-9)
    signal = material + 0.5 * np.minimum(edges, 1.5) + texture
    signal = cv2.GaussianBlur(signal, (0, 0), rng.uniform(0.4, 1.0))  # beam spot
    image = _bin(signal, supersample)
    yy, xx = np.mgrid[0:side, 0:side] / max(side, 1)
    charging = 1.0 + 0.15 * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))
    image = image * charging * 180.0
    image = image + rng.normal(0, 1.0, image.shape) * np.sqrt(np.maximum(image, 1.0)) * 0.8
    image = image + rng.normal(0, 2.0, (side, 1))  # scan-line offsets
    truth = _camera_to_pixels(camera_pixel_um) @ to_scene
    return np.clip(image, 0, 4095).astype(np.float32), truth
