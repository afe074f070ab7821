"""A small SEM-like renderer with known truth, for the detection tests.

Particles are pixel-integrated Gaussian spots (an SEM probe blurring a small particle) on
a flat background with Gaussian noise. Integrating over each pixel, rather than sampling
the centre, keeps the rendered centroid at the true position, so a measured position
error is the detector's, not the renderer's.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import erf


def render_spots(shape: tuple[int, int], xy: np.ndarray, *, sigma: float = 1.8,
                 peak: float | np.ndarray = 120.0,
                 background: float = 20.0, noise: float = 4.0, seed: int = 0,
                 dtype: type = np.uint8) -> np.ndarray:
    """Bright spots of peak height ``peak`` (counts above background) at ``xy`` = (x, y) px."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, background, dtype=np.float64)
    half = int(np.ceil(5 * sigma))
    width = sigma * np.sqrt(2.0)
    peaks = np.broadcast_to(np.asarray(peak, dtype=float), (len(xy),))
    for (x0, y0), height in zip(xy, peaks, strict=True):
        ix, iy = int(round(x0)), int(round(y0))
        xs = np.arange(max(ix - half, 0), min(ix + half + 1, shape[1]))
        ys = np.arange(max(iy - half, 0), min(iy + half + 1, shape[0]))
        if xs.size == 0 or ys.size == 0:
            continue
        gx = 0.5 * (erf((xs + 0.5 - x0) / width) - erf((xs - 0.5 - x0) / width))
        gy = 0.5 * (erf((ys + 0.5 - y0) / width) - erf((ys - 0.5 - y0) / width))
        image[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] += height * 2 * np.pi * sigma**2 * np.outer(gy, gx)
    image += rng.normal(0.0, noise, shape)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(image), info.min, info.max).astype(dtype)
    return image.astype(dtype)


def render_brightfield_rings(shape: tuple[int, int], xy: np.ndarray, *, ring_radius: float = 6.0,
                             ring_width: float = 1.2, ring_depth: float = 90.0, interior: float = 40.0,
                             interior_offset: tuple[float, float] = (0.0, 0.0), background: float = 140.0,
                             noise: float = 2.0, seed: int = 0) -> np.ndarray:
    """Bright-field particles: a dark ring of ``ring_radius`` around a brighter interior.

    ``interior_offset`` moves the bright interior off the ring centre (oblique
    illumination), which is what separates a real ring fit from a centroid.
    """
    rng = np.random.default_rng(seed)
    image = np.full(shape, background, dtype=np.float64)
    half = int(np.ceil(ring_radius + 5 * ring_width))
    for x0, y0 in xy:
        ix, iy = int(round(x0)), int(round(y0))
        ys, xs = np.mgrid[iy - half:iy + half + 1, ix - half:ix + half + 1]
        r = np.hypot(xs - x0, ys - y0)
        ring = -ring_depth * np.exp(-0.5 * ((r - ring_radius) / ring_width) ** 2)
        ri = np.hypot(xs - x0 - interior_offset[0], ys - y0 - interior_offset[1])
        inside = interior * np.exp(-0.5 * (ri / (0.45 * ring_radius)) ** 2)
        image[iy - half:iy + half + 1, ix - half:ix + half + 1] += ring + inside
    image += rng.normal(0.0, noise, shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def random_layout(rng: np.random.Generator, shape: tuple[int, int], n_single: int, n_clusters: int, *,
                  margin: float = 20.0, min_distance: float = 12.0, cluster_size: tuple[int, int] = (2, 5),
                  cluster_spacing: float = 4.0) -> np.ndarray:
    """Random (x, y) positions: well-spread singles plus tight clusters (agglomerates).

    Singles keep ``min_distance`` from everything placed before them, as drop-cast
    particles rarely touch unless agglomerated; clusters are packed at ``cluster_spacing``.
    """
    height, width = shape
    points: list[np.ndarray] = []
    for _ in range(n_clusters):
        centre = rng.uniform([margin, margin], [width - margin, height - margin])
        members = rng.integers(cluster_size[0], cluster_size[1] + 1)
        angles = rng.uniform(0, 2 * np.pi, members)
        radii = cluster_spacing * np.sqrt(np.arange(members))
        points.extend(centre + np.column_stack([radii * np.cos(angles), radii * np.sin(angles)]))
    tries = 0
    placed = 0
    while placed < n_single and tries < 200 * n_single:
        tries += 1
        candidate = rng.uniform([margin, margin], [width - margin, height - margin])
        if points and np.min(np.hypot(*(np.asarray(points) - candidate).T)) < min_distance:
            continue
        points.append(candidate)
        placed += 1
    return np.asarray(points)


def true_isolation(xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour distance of each true particle and whether it is >= ``radius``."""
    if len(xy) < 2:
        return np.full(len(xy), np.inf), np.ones(len(xy), dtype=bool)
    distance, _ = cKDTree(xy).query(xy, k=2)
    return distance[:, 1], distance[:, 1] >= radius
