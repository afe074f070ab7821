"""The fast locate is trackpy.locate; the ring fit is a real ring fit; positions are accurate."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import trackpy
from scipy.spatial import cKDTree

from servers.ParticleDS import ParticleSettings
from servers.ParticleDS.detection import detect, locate

from .synthetic import render_brightfield_rings, render_spots


def _trackpy(image: np.ndarray, settings: ParticleSettings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trackpy.locate(image, settings.Diameter, minmass=settings.MinMass, maxsize=settings.max_size_px,
                              separation=settings.separation_px, noise_size=settings.NoiseSize,
                              threshold=settings.Threshold or None, percentile=settings.Percentile,
                              invert=settings.Invert, engine="numba")


CASES = [
    (np.uint8, {"Diameter": 11, "MinMass": 400.0}),
    (np.uint8, {"Diameter": 9, "MinMass": 0.0}),
    (np.uint16, {"Diameter": 11, "MinMass": 8000.0, "MaxSize": 2.2}),
    (np.uint16, {"Diameter": 7, "MinMass": 3000.0, "Separation": 5.0, "NoiseSize": 1.5, "Percentile": 30.0}),
    (np.float32, {"Diameter": 11, "MinMass": 1.0, "Threshold": 0.01}),
    (np.uint16, {"Diameter": 11, "MinMass": 10.0, "Invert": True}),
]


@pytest.mark.parametrize(("dtype", "values"), CASES)
def test_locate_finds_what_trackpy_finds_at_the_same_positions(dtype: type, values: dict) -> None:
    rng = np.random.default_rng(5)
    xy = rng.uniform(12, 500, (150, 2))
    peak = {np.uint8: 120.0, np.uint16: 3000.0, np.float32: 0.5}[dtype]
    image = render_spots((512, 512), xy, peak=peak, background=peak / 6, noise=peak / 25, seed=5, dtype=dtype)
    if values.get("Invert"):
        image = (np.iinfo(np.uint16).max - image).astype(np.uint16)
    settings = ParticleSettings(**values)
    features = locate(image, settings)
    ours = features.select(features.kept)
    theirs = _trackpy(image, settings)
    assert len(ours) == len(theirs) > 100
    distance, index = cKDTree(np.column_stack([ours.x, ours.y])).query(theirs[["x", "y"]].to_numpy())
    assert distance.max() < 0.05, "the benchmark's contract"
    assert np.median(distance) < 1e-3
    assert len(set(index)) == len(theirs)
    np.testing.assert_allclose(ours.mass[index], theirs["mass"].to_numpy(), rtol=0.02)
    np.testing.assert_allclose(ours.size[index], theirs["size"].to_numpy(), rtol=0.02, atol=0.01)


@pytest.mark.parametrize("seed", range(5))
def test_isolated_spots_are_located_to_a_tenth_of_a_pixel(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    xy = np.array([[x, y] for y in range(30, 500, 40) for x in range(30, 500, 40)], float)
    xy += rng.uniform(-5, 5, xy.shape)
    image = render_spots((512, 512), xy, sigma=1.6, peak=rng.uniform(80, 160, len(xy)), background=25,
                         noise=5, seed=seed)
    features = detect(image, ParticleSettings(Diameter=9, MinMass=300.0))
    found = np.column_stack([features.x, features.y])[features.kept]
    distance, _ = cKDTree(found).query(xy)
    assert np.all(distance < 1.0), "every spot found"
    assert np.sqrt(np.mean(distance**2)) <= 0.1
    assert features.kept.sum() == len(xy), "no spurious features"


def test_touching_particle_dropped_by_trackpy_stays_a_neighbour() -> None:
    # 6.5 px apart: both are local maxima of the dilation window (+-5 px for Separation 8), and
    # trackpy's duplicate removal then drops the dimmer one because it is nearer than 8 px.
    xy = np.array([[100.0, 100.0], [106.5, 100.0], [200.0, 200.0]])
    image = render_spots((300, 300), xy, sigma=1.5, peak=[150, 100, 150], noise=2, seed=1)
    settings = ParticleSettings(Diameter=9, MinMass=200.0, Separation=8.0)
    assert len(_trackpy(image, settings)) == 2
    features = locate(image, settings)
    kept = np.column_stack([features.x, features.y])[features.kept]
    neighbours = np.column_stack([features.x, features.y])[~features.kept]
    assert len(kept) == 2, "trackpy keeps the brighter of two features closer than Separation"
    assert cKDTree(neighbours).query([106.5, 100.0])[0] < 1.5, "the dimmer one is kept as a neighbour"


def test_brightfield_ring_fit_finds_the_ring_centre_not_the_bright_centroid() -> None:
    rng = np.random.default_rng(3)
    xy: list[np.ndarray] = []
    while len(xy) < 30:
        candidate = rng.uniform(40, 472, 2)
        if all(np.hypot(*(candidate - p)) > 45 for p in xy):
            xy.append(candidate)
    truth = np.asarray(xy)
    image = render_brightfield_rings((512, 512), truth, ring_radius=12.0, ring_width=1.5,
                                     interior_offset=(3.0, 0.0), seed=3)
    errors = {}
    for method in ("locate", "locate_brightfield_ring"):
        features = detect(image, ParticleSettings(Diameter=25, MinMass=2000.0, Method=method))
        found = np.column_stack([features.x, features.y])[features.kept]
        distance, index = cKDTree(found).query(truth)
        assert np.all(distance < 3.0)
        errors[method] = np.sqrt(np.mean(distance**2))
        if method == "locate_brightfield_ring":
            assert np.median(features.size[features.kept]) == pytest.approx(12.0, abs=0.5), "Size is the ring radius"
    assert errors["locate"] > 0.7, "the bright interior is off-centre, so a centroid is biased"
    assert errors["locate_brightfield_ring"] < 0.4
