"""Which particles are isolated: no other feature within IsolationRadius.

A beam on a particle also hits whatever lies within its footprint, so every detected
feature counts as a neighbour, including clusters that MaxSize removed from the results.
Beyond the edge of the analysed region nothing is known, so a particle nearer to that
edge than IsolationRadius cannot be confirmed isolated and is reported crowded: the
unattended loop would rather skip a particle than put the beam on an unseen cluster.
A k-d tree answers all nearest-neighbour queries in O(n log n) instead of a double loop.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def nearest_neighbour_distance(particles_xy: np.ndarray, all_features_xy: np.ndarray) -> np.ndarray:
    """Distance (px) from each particle to the nearest *other* feature; inf when there is none.

    ``particles_xy`` must be rows of ``all_features_xy`` (each particle is itself a feature),
    so the first neighbour returned is the particle itself and the second is the answer.
    """
    particles_xy = np.asarray(particles_xy, dtype=np.float64).reshape(-1, 2)
    all_features_xy = np.asarray(all_features_xy, dtype=np.float64).reshape(-1, 2)
    if len(particles_xy) == 0:
        return np.empty(0, dtype=np.float64)
    if len(all_features_xy) < 2:
        return np.full(len(particles_xy), np.inf)
    distances, _ = cKDTree(all_features_xy).query(particles_xy, k=2)
    return distances[:, 1]


def isolated_mask(nn_distance: np.ndarray, isolation_radius: float) -> np.ndarray:
    """True where the nearest neighbour is at least ``isolation_radius`` away."""
    return np.asarray(nn_distance) >= isolation_radius


def edge_distance(xy: np.ndarray, roi: tuple[int, int, int, int]) -> np.ndarray:
    """Distance (px) from each point to the border of the region [x, y, w, h].

    Pixel centres are integers, so the region's border runs half a pixel outside them.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    x0, y0, w, h = roi
    return np.minimum.reduce([xy[:, 0] - (x0 - 0.5), (x0 + w - 0.5) - xy[:, 0],
                              xy[:, 1] - (y0 - 0.5), (y0 + h - 0.5) - xy[:, 1]])
