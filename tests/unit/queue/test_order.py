"""The automatic order: never longer than the given one, and close to the optimum."""

from __future__ import annotations

import itertools

import numpy as np

from servers.QueueDS.order import nearest_neighbour, path_length, shortest_order, two_opt


def test_route_visits_every_point_once_and_is_not_longer_than_the_given_order() -> None:
    rng = np.random.default_rng(3)
    points = rng.uniform(0, 100, (60, 2))
    route = shortest_order(points)
    assert sorted(route) == list(range(60))
    given = path_length(points, list(range(60)))
    assert path_length(points, route) < 0.5 * given  # random order zig-zags; a route does not


def test_two_opt_removes_a_crossing() -> None:
    # a square visited corner to corner crosses itself; 2-opt uncrosses it
    points = np.array([[0, 0], [1, 1], [1, 0], [0, 1]], float)
    route = two_opt(points, [0, 1, 2, 3])
    assert path_length(points, route) < path_length(points, [0, 1, 2, 3])


def test_small_instances_match_the_brute_force_optimum_within_ten_percent() -> None:
    rng = np.random.default_rng(11)
    for _ in range(5):
        points = rng.uniform(0, 1, (7, 2))
        start = np.array([0.5, 0.5])
        best = min(path_length(points, list(p), start) for p in itertools.permutations(range(7)))
        assert path_length(points, shortest_order(points, start), start) <= 1.1 * best


def test_start_point_is_honoured() -> None:
    points = np.array([[0, 0], [10, 0], [20, 0]], float)
    assert nearest_neighbour(points, np.array([21.0, 0.0])) == [2, 1, 0]
    assert shortest_order(points, np.array([21.0, 0.0])) == [2, 1, 0]
