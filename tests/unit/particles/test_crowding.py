"""Isolation judged on the image: neighbours the detection list misses, and multiplicity.

Each case builds a field of lone spots (the population the single-particle fit needs) plus
one particle with a neighbour that the list of detections does not hold: one merged into
it (a touching doublet), one below MinMass, one suppressed within Separation. The listed
k-d tree alone calls each of them isolated; ParticleCore must not.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.spatial import cKDTree

from benchmarks.isolation_accuracy import evaluate
from benchmarks.particle_corpus import Case, render_field, score_isolation
from servers.ParticleDS import ParticleCore
from servers.ParticleDS.crowding import _bilinear, analyse, signal_image, smoothing_sigma

from .synthetic import render_spots

SETTINGS = {"Diameter": 9, "MinMass": 600.0, "Separation": 0.0, "IsolationRadius": 15.0}
PROBE = np.array([128.0, 128.0])


def _lone_spots(count: int = 24) -> np.ndarray:
    """Spots on a grid 40 px apart around the probe, none within 30 px of it."""
    grid = np.array([[x, y] for x in range(20, 256, 40) for y in range(20, 256, 40)], dtype=float)
    far = np.hypot(*(grid - PROBE).T) > 30
    return grid[far][:count]


def _field(extra: list[tuple[float, float]], extra_peak: float = 120.0) -> tuple[np.ndarray, np.ndarray]:
    spots = np.vstack([_lone_spots(), PROBE, np.asarray(extra, dtype=float).reshape(-1, 2)])
    peaks = np.full(len(spots), 120.0)
    peaks[-len(extra):] = extra_peak
    image = render_spots((256, 256), spots, sigma=1.6, peak=peaks, background=30, noise=2.0, seed=5,
                         dtype=np.uint16)
    return image, spots


def _probe_row(core: ParticleCore) -> int:
    distance = np.hypot(core.x - PROBE[0], core.y - PROBE[1])
    assert distance.min() < 2.5, "the probe particle was not detected"
    return int(np.argmin(distance))


def _listed_isolated(core: ParticleCore, row: int) -> bool:
    """What a k-d tree over the listed detections alone says about ``row``."""
    xy = np.column_stack([core.x, core.y])
    distance = cKDTree(xy).query(xy[row], k=2)[0][1]
    return bool(distance >= SETTINGS["IsolationRadius"])


def test_lone_particles_stay_isolated_and_single() -> None:
    image, spots = _field([])
    core = ParticleCore(SETTINGS)
    core.detect(image)
    assert core.count == len(spots)
    inside = (core.x >= 15) & (core.x <= 240) & (core.y >= 15) & (core.y <= 240)
    assert core.isolated[inside].all()
    assert (core.multiplicity == 1).all()


def test_a_touching_doublet_is_multiplicity_two_and_not_isolated() -> None:
    image, _ = _field([(PROBE[0] + 4.5, PROBE[1] + 1.0)])  # merged into one feature by Separation 10
    core = ParticleCore(SETTINGS)
    core.detect(image)
    row = _probe_row(core)
    assert _listed_isolated(core, row), "the case must be one the list alone gets wrong"
    assert core.multiplicity[row] >= 2
    assert not core.isolated[row]


def test_a_neighbour_below_min_mass_spoils_isolation() -> None:
    image, _ = _field([(PROBE[0] - 10.0, PROBE[1] + 3.0)], extra_peak=30.0)
    core = ParticleCore(SETTINGS)
    core.detect(image)
    row = _probe_row(core)
    assert _listed_isolated(core, row)
    assert not core.isolated[row]
    # where it is seen first: its maximum (10.4 px) or the edge of the symmetry test (one Diameter)
    assert 7.0 <= core.nn_distance[row] <= np.hypot(10.0, 3.0) + 1.0
    assert core.multiplicity[row] == 1  # not touching: a neighbour, not a doublet


def test_a_neighbour_suppressed_within_separation_spoils_isolation() -> None:
    image, _ = _field([(PROBE[0] + 8.0, PROBE[1])], extra_peak=70.0)
    core = ParticleCore({**SETTINGS, "Separation": 14.0})
    core.detect(image)
    row = _probe_row(core)
    assert _listed_isolated(core, row)
    assert not core.isolated[row]


def test_multiplicity_is_in_the_table_and_the_csv(tmp_path) -> None:
    image, _ = _field([(PROBE[0] + 4.5, PROBE[1] + 1.0)])
    core = ParticleCore(SETTINGS)
    core.detect(image)
    with open(core.export_csv(str(tmp_path / "p.csv")), newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(r["multiplicity"]) for r in rows] == core.multiplicity.tolist()
    assert core.results is not None
    assert [r["multiplicity"] for r in core.results.rows()] == core.multiplicity.tolist()


def test_signal_image_removes_a_gradient_and_measures_the_noise() -> None:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:256, 0:256]
    image = 1000 + 2.0 * xx + rng.normal(0, 10, (256, 256))
    signal, sigma = signal_image(image, 9)
    assert abs(float(np.median(signal))) < 0.5
    # smoothing at sigma 1.5 px divides white noise by about 2 sqrt(pi) 1.5 = 5.3
    assert 1.0 < sigma < 3.0


def test_no_particles_and_a_flat_image_give_empty_answers() -> None:
    empty = analyse(np.ones((64, 64), np.uint16), np.empty((0, 2)), np.empty((0, 2)), 9, 15.0)
    assert empty.multiplicity.shape == (0,) and empty.image_neighbour.shape == (0,)


def test_isolated_flag_on_a_fixed_sample_of_the_independent_corpus() -> None:
    """Isolated on held-out cases of the independent renderer (seeds 300-301, never tuned on).

    Issue 14 asks for precision >= 0.99 at recall >= 0.99. Over the 36 held-out cases of make
    bench both are met (0.992 at 0.999, docs/particles.md), but the false flags (faint debris
    touching a particle or merged into a neighbour's signal) are unevenly spread: on these
    four cases precision is 576/584 = 0.986 at recall 576/576. The test asserts 0.98, far above
    trackpy + k-d tree on the same images (0.51), and not the bar, which four images are too
    few to show.
    """
    cases = [Case(seed, 1024, np.uint16 if seed % 2 else np.uint8, family)
             for seed in (300, 301) for family in ("A", "C")]
    scores = evaluate(cases)["all"]
    ours, baseline = scores["ours"], scores["trackpy"]
    assert ours.wanted >= 300
    assert ours.recall >= 0.99, f"{ours.recalled}/{ours.wanted}"
    assert ours.precision >= 0.98, f"{ours.correct}/{ours.flagged}"
    assert ours.precision > baseline.precision + 0.2


def test_scoring_counts_a_flag_on_a_crowded_cube_as_false() -> None:
    field = render_field(7, 256, np.uint16)
    truly = field.isolated(15.0) & field.scored(15.0)
    crowded = ~field.faint & ~field.isolated(15.0) & field.scored(15.0)
    xy = np.vstack([field.xy[truly], field.xy[crowded][:1]])
    flags = np.ones(len(xy), dtype=bool)
    score = score_isolation(field, xy, flags, np.ones(len(xy), dtype=int), 15.0)
    assert score.recalled == score.wanted == int(np.count_nonzero(truly))
    assert score.flagged - score.correct == 1


def _field_with_a_marker() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lone spots on the membrane plus a flat bright square (a Pt marker, 90 px, 10 diameters)
    with two spots on it: maxima on the marker, as trackpy finds at a cross's centre."""
    spots = _lone_spots(30)
    on_membrane = spots[(spots[:, 0] < 150) | (spots[:, 1] < 150)]
    on_marker = np.array([[200.0, 200.0], [185.0, 225.0]])
    image = render_spots((256, 256), np.vstack([on_membrane, on_marker]), sigma=1.6, peak=120.0, background=30,
                         noise=2.0, seed=5).astype(np.float64)
    image[160:250, 160:250] += 300.0  # far brighter than a particle, far wider than the background window
    return image.astype(np.uint16), on_membrane, on_marker


def test_detections_on_an_extended_bright_area_are_flagged_and_never_isolated(tmp_path) -> None:
    image, on_membrane, on_marker = _field_with_a_marker()
    crowd = analyse(image, np.vstack([on_membrane, on_marker]), np.vstack([on_membrane, on_marker]),
                    SETTINGS["Diameter"], SETTINGS["IsolationRadius"])
    assert crowd.on_bright_area.tolist() == [False] * len(on_membrane) + [True, True]

    core = ParticleCore(SETTINGS)
    core.detect(image)
    xy = np.column_stack([core.x, core.y])
    marker_rows = np.flatnonzero((xy >= 160).all(axis=1) & (xy < 250).all(axis=1))
    assert len(marker_rows) >= 2, "the spots on the marker were not detected"
    assert core.on_bright_area[marker_rows].all()
    assert not core.isolated[marker_rows].any()
    membrane_rows = np.setdiff1d(np.arange(core.count), marker_rows)
    assert not core.on_bright_area[membrane_rows].any()
    assert core.isolated[membrane_rows].sum() >= len(on_membrane) - 4  # those near the square are not
    rows = json.loads(core.table())
    assert [row["on_bright_area"] for row in rows] == core.on_bright_area.tolist()
    with open(core.export_csv(str(tmp_path / "p.csv")), newline="") as stream:
        exported = list(csv.DictReader(stream))
    assert [row["on_bright_area"] == "true" for row in exported] == core.on_bright_area.tolist()


def test_a_background_gradient_is_not_a_bright_area() -> None:
    """A faint image whose shading rises by more than half a particle peak across the field
    (low contrast, a gradient, as in the independent corpus) flags nothing: the bright side
    is the bulk of the background, not an outlier of it like a marker."""
    spots = _lone_spots(36)
    image = render_spots((256, 256), spots, sigma=1.6, peak=20.0, background=30, noise=2.0, seed=5).astype(np.float64)
    image += np.linspace(0.0, 30.0, 256)[None, :]  # 1.5 particle peaks from left to right
    crowd = analyse(image.astype(np.uint16), spots, spots, SETTINGS["Diameter"], SETTINGS["IsolationRadius"])
    assert not crowd.on_bright_area.any()


def test_bilinear_sampling_takes_more_positions_per_row_than_opencv_maps_allow() -> None:
    """A large Diameter samples more than 32 767 positions per particle; cv2.remap refuses maps
    that wide, so the sampling must lay them out itself (Detect failed for Diameter 201-227)."""
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 100, (64, 80)).astype(np.float32)
    ys, xs = rng.integers(0, 64, (2, 40_000)), rng.integers(0, 80, (2, 40_000))
    sampled = _bilinear(image, xs.astype(np.float32), ys.astype(np.float32))
    assert sampled.shape == (2, 40_000)
    np.testing.assert_array_equal(sampled, image[ys, xs])
    half = _bilinear(image, np.array([[10.5]], np.float32), np.array([[3.0]], np.float32))
    assert half[0, 0] == pytest.approx((image[3, 10] + image[3, 11]) / 2, rel=1e-5)


def _disc_regions(centres: np.ndarray, radius: float, shape: tuple[int, int] = (128, 128)) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    regions = np.zeros(shape, dtype=np.int32)
    for label, (x, y) in enumerate(centres, start=1):
        regions[np.hypot(xx - x, yy - y) <= radius] = label
    return regions


def test_a_region_stretched_by_a_faint_neighbour_reaches_beyond_the_lone_ones() -> None:
    from servers.ParticleDS.crowding import _reach_neighbour

    centres = np.array([[x, y] for x in range(16, 128, 32) for y in range(16, 128, 32)], dtype=float)
    regions = _disc_regions(centres, 4.0)
    jitter = np.random.default_rng(3).uniform(-0.3, 0.3, centres.shape)  # centres known to a few tenths
    xy = centres + jitter
    # a small blob on the flank of the first particle, 7 px out, joined to its region
    yy, xx = np.mgrid[0:128, 0:128]
    regions[np.hypot(xx - (centres[0, 0] + 7), yy - centres[0, 1]) <= 2.0] = 1
    regions[int(centres[0, 1]), int(centres[0, 0]) + 4:int(centres[0, 0]) + 6] = 1
    ys, xs = np.nonzero(regions)
    own = regions[np.rint(xy[:, 1]).astype(int), np.rint(xy[:, 0]).astype(int)]
    features_in_region = np.bincount(own, minlength=regions.max() + 1)
    clear = np.ones(len(xy), dtype=bool)
    distance = _reach_neighbour(regions, (ys, xs), xy, own, features_in_region, clear)
    assert np.isfinite(distance[0]) and 8.0 < distance[0] < 10.0
    assert np.all(np.isinf(distance[1:]))
    # with too few lone particles to judge against, nothing is claimed
    few = np.zeros(len(xy), dtype=bool)
    few[:3] = True
    assert np.all(np.isinf(_reach_neighbour(regions, (ys, xs), xy, own, features_in_region, few)))


def test_the_smoothing_follows_particles_narrower_than_the_diameter() -> None:
    """Diameter/6, narrowed to 0.6 x the particles' radius of gyration where that is narrower,
    never below 1 px by that narrowing (tiny particles keep Diameter/6) nor below 0.8 px."""
    assert smoothing_sigma(9) == pytest.approx(1.5)
    assert smoothing_sigma(9, 3.0) == pytest.approx(1.5)  # particles as wide as the mask
    assert smoothing_sigma(11, 2.5) == pytest.approx(1.5)  # a generous mask: the particles' own width
    assert smoothing_sigma(7, 1.3) == pytest.approx(7 / 6)  # 0.78 px would let pixel noise through
    assert smoothing_sigma(3, None) == pytest.approx(0.8)

