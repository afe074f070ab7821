"""Speed work on the detector must not change what it finds.

``detect_reference.npz`` holds the complete results of ``ParticleCore.detect`` on three fixed
fields of the independent particle corpus (touching pairs, clusters, faint debris), written by
the detector before its speed-ups (commit 17db53a). Every later change must reproduce them:
the same particles, the same Isolated flags and multiplicities, positions and mass within float
rounding. A change that means to alter the results regenerates the file on purpose
(``PYTHONPATH=. .venv/bin/python -m tests.unit.particles.test_unchanged_results``) and says so.

The other tests check the fast paths against the plain computation they replace: the MinMass
bound that spares candidates their refinement, the kept work memory, the outline search.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree
from trackpy.refine.center_of_mass import refine_com_arr

from benchmarks.particle_corpus import render_field
from servers.ParticleDS import ParticleCore, crowding, preprocessing, scratch
from servers.ParticleDS.detection import MAX_ITERATIONS

REFERENCE = Path(__file__).with_name("data") / "detect_reference.npz"
FIELDS = {
    # Separation 0 (trackpy's Diameter + 1): faint candidates leave before the duplicate search
    "a21": (21, np.uint16, {"Diameter": 9, "Separation": 0.0, "MinMass": 1800.0, "IsolationRadius": 15.0}),
    "b22": (22, np.uint8, {"Diameter": 9, "Separation": 5.0, "MinMass": 520.0, "IsolationRadius": 15.0}),
    # Separation within the duplicate tolerance: every candidate is refined
    "c23": (23, np.uint16, {"Diameter": 9, "Separation": 2.0, "MinMass": 2500.0, "IsolationRadius": 15.0,
                            "MaxSize": 2.5}),
}
COLUMNS = ("x", "y", "mass", "size", "ecc", "signal", "nn_distance", "isolated", "multiplicity", "on_bright_area")


def _results(name: str) -> dict[str, np.ndarray]:
    seed, dtype, settings = FIELDS[name]
    core = ParticleCore(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        core.detect(render_field(seed, 640, dtype).image)
    results = core.results
    assert results is not None
    return {column: np.asarray(getattr(results, column)) for column in COLUMNS}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_detect_reproduces_the_reference_results(name: str) -> None:
    expected = np.load(REFERENCE)
    ours = _results(name)
    assert len(ours["x"]) == len(expected[f"{name}/x"]) > 100
    assert np.count_nonzero(ours["isolated"]) > 20
    for column in ("isolated", "multiplicity", "on_bright_area"):
        np.testing.assert_array_equal(ours[column], expected[f"{name}/{column}"], err_msg=column)
    for column in ("x", "y", "mass", "size", "ecc", "signal", "nn_distance"):
        np.testing.assert_allclose(ours[column], expected[f"{name}/{column}"], rtol=1e-6, atol=1e-6, err_msg=column)


@pytest.mark.parametrize(("dtype", "radius"), [(np.uint16, 4), (np.uint8, 5), (np.uint16, 120)])
def test_the_mass_bound_never_drops_a_candidate_that_refines_above_min_mass(dtype: type, radius: int) -> None:
    """Radius 120 takes the float64 integral-image branch (int32 box sums could overflow)."""
    rng = np.random.default_rng(radius)
    image = rng.normal(40, 12, (300, 300))
    for x, y in rng.uniform(20, 280, (60, 2)):
        image[int(y) - 3:int(y) + 4, int(x) - 3:int(x) + 4] += rng.uniform(20, 200)
    image = np.clip(image, 0, np.iinfo(dtype).max).astype(dtype)
    bandpassed = preprocessing.bandpass(image, 1.0, 2 * radius + 1, 1.0)
    scale_factor, processed = preprocessing.convert_to_int(bandpassed, dtype)
    margin = min(radius, 100)
    candidates = preprocessing.local_maxima(processed, radius + 1, 30.0, (margin, margin))
    refined = refine_com_arr(image, processed, (radius, radius), candidates, max_iterations=MAX_ITERATIONS,
                             engine="numba", characterize=True)
    mass = refined[:, 2] / scale_factor
    spared = 0
    for min_mass in np.percentile(mass, [10, 50, 90, 99]) * (1 - 1e-9):
        may = preprocessing.may_reach_mass(processed, candidates, radius, MAX_ITERATIONS, min_mass, scale_factor)
        passed = mass > min_mass
        assert passed.any()
        assert np.all(may[passed]), "a candidate above MinMass was left out"
        spared += np.count_nonzero(~may)
    assert spared > 0 or radius == 120  # the bound does spare refinements (not on a mask this large)


def test_results_do_not_depend_on_what_the_kept_work_memory_held() -> None:
    """The shared scratch after a larger, differently typed image gives what fresh memory gives."""
    seed, dtype, settings = FIELDS["b22"]
    image = render_field(seed, 640, dtype).image
    core = ParticleCore(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        core.detect(render_field(5, 900, np.uint16).image)  # dirties the shared slots
        core.detect(image)
        shared = core.results
        with scratch.borrow() as held:  # the shared one is taken: the detection gets fresh memory
            assert held is scratch._SHARED
            core.detect(image)
        fresh = core.results
    assert shared is not None and fresh is not None
    for column in COLUMNS:
        np.testing.assert_array_equal(getattr(shared, column), getattr(fresh, column), err_msg=column)


def test_nearest_foreign_outline_is_the_brute_force_minimum() -> None:
    rng = np.random.default_rng(3)
    points = rng.uniform(0, 200, (3000, 2))
    point_region = rng.integers(1, 40, len(points))
    particles_xy = rng.uniform(0, 200, (60, 2))
    own_region = rng.integers(0, 40, len(particles_xy))  # 0: a particle outside every region
    reach = 25.0
    got = crowding._nearest_foreign_outline(cKDTree(particles_xy), particles_xy, own_region, points, point_region,
                                            reach)
    d = np.hypot(*(points[None, :, :] - particles_xy[:, None, :]).transpose(2, 0, 1))
    d[(point_region[None, :] == own_region[:, None]) | (d > reach)] = np.inf
    np.testing.assert_array_equal(got, d.min(axis=1))
    assert np.isfinite(got).sum() > 30


def write_reference() -> None:
    """Regenerate ``detect_reference.npz`` from the current detector (on purpose only)."""
    arrays = {f"{name}/{column}": values for name in FIELDS for column, values in _results(name).items()}
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, **arrays)


if __name__ == "__main__":
    write_reference()
