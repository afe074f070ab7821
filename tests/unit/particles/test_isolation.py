"""Isolation: nearest neighbour by k-d tree, equal to a brute-force answer."""

from __future__ import annotations

import numpy as np
import pytest

from servers.ParticleDS.isolation import edge_distance, isolated_mask, nearest_neighbour_distance


@pytest.mark.parametrize("seed", range(20))
def test_nearest_neighbour_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 500, (rng.integers(2, 300), 2))
    particles = rng.random(len(points)) < 0.7
    expected = []
    for p in points[particles]:
        d = np.hypot(*(points - p).T)
        expected.append(np.sort(d)[1])
    np.testing.assert_allclose(nearest_neighbour_distance(points[particles], points), expected)


def test_single_feature_has_no_neighbour() -> None:
    assert nearest_neighbour_distance([[5.0, 5.0]], [[5.0, 5.0]])[0] == np.inf
    assert nearest_neighbour_distance(np.empty((0, 2)), np.empty((0, 2))).shape == (0,)


def test_neighbour_exactly_at_the_radius_is_not_nearer_than_it() -> None:
    assert isolated_mask(np.array([9.99, 10.0, np.inf]), 10.0).tolist() == [False, True, True]


def test_edge_distance_counts_from_the_pixel_border() -> None:
    distance = edge_distance(np.array([[0.0, 50.0], [99.0, 50.0], [50.0, 50.0]]), (0, 0, 100, 100))
    np.testing.assert_allclose(distance, [0.5, 0.5, 49.5])
    np.testing.assert_allclose(edge_distance(np.array([[20.0, 30.0]]), (10, 20, 50, 50)), [10.5])
