"""Acceptance: isolated particles in simulated SEM images of the reference sample.

The virtual beamline (``simulation``) generates the NFFA sample (CeO2 cubes, ~50 nm,
mostly isolated, plus touching clusters, agglomerates and Pt markers) and renders the lab
SEM image with its truth. The detector must find the isolated particles with recall and
precision >= 99 % and place them within 0.1 px RMS.

Settings follow from the physics, not from these images: 20 nm pixels make a 50 nm cube
2.5 px wide, so Diameter 7 holds it with its blur; touching cubes sit 1.15 x 50 nm =
2.9 px apart, so Separation 4 px lets the second cube of a pair show as its own maximum
(the neighbour that makes the first one crowded); a lone cube's radius of gyration is
~1.3 px, MaxSize 1.6 refuses blobs of merged cubes. The seeds differ from the one the
settings were first tried on (7).

Scoring: "isolated" is the simulation's own definition (no other particle centre and no
marker within the radius). Only particles whose whole isolation disc lies inside the
image are scored, because what lies beyond the edge cannot be seen (the core reports
such particles as crowded, on purpose).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy.spatial import cKDTree

from servers.ParticleDS import ParticleCore
from servers.ParticleDS.isolation import edge_distance
from simulation.config import SemGeometry
from simulation.generate import SampleRecipe, generate_sample, isolated_mask
from simulation.geometry import apply, invert
from simulation.sem import render_sem

ISOLATION_RADIUS_UM = 0.4
SIZE_PX = 2048
MATCH_PX = 1.5
SEEDS = (11, 12, 13)


@dataclass(frozen=True)
class Score:
    recalled: int
    """Truly isolated, scored particles that were reported isolated."""
    wanted: int
    correct: int
    """Reported isolated particles that are truly isolated particles."""
    reported: int
    errors_px: np.ndarray


def _score(seed: int) -> Score:
    recipe = SampleRecipe(width=120.0, height=120.0, isolated=2500, small_clusters=80, agglomerates=2,
                          central_agglomerates=1, corner_inset_um=5.0)
    sample = generate_sample(seed, recipe)
    geometry = SemGeometry(width=SIZE_PX, height=SIZE_PX, rotation_deg=float(seed % 10))
    sem = render_sem(sample, geometry, seed=seed)
    radius_px = ISOLATION_RADIUS_UM / geometry.pixel_size_um
    truth_px = apply(invert(sem.pixel_to_sample), np.column_stack([sample.x, sample.y]))
    truth_isolated = isolated_mask(sample, ISOLATION_RADIUS_UM)
    scored = edge_distance(truth_px, (0, 0, SIZE_PX, SIZE_PX)) >= radius_px

    core = ParticleCore({"Diameter": 7, "MinMass": 10000.0, "MaxSize": 1.6, "Separation": 4.0,
                         "IsolationRadius": radius_px})
    core.detect(sem.image)
    found = np.column_stack([core.x, core.y])[core.isolated]

    wanted = truth_px[truth_isolated & scored]
    distance_to_found, _ = cKDTree(found).query(wanted)
    distance_to_truth, nearest = cKDTree(truth_px).query(found)
    correct = (distance_to_truth < MATCH_PX) & truth_isolated[nearest]
    return Score(recalled=int(np.count_nonzero(distance_to_found < MATCH_PX)), wanted=len(wanted),
                 correct=int(np.count_nonzero(correct)), reported=len(found),
                 errors_px=distance_to_truth[correct])


@pytest.fixture(scope="module")
def scores() -> list[Score]:
    return [_score(seed) for seed in SEEDS]


def test_enough_isolated_particles_are_scored(scores: list[Score]) -> None:
    assert sum(s.wanted for s in scores) >= 600


def test_isolated_particles_recall_at_least_99_percent(scores: list[Score]) -> None:
    recalled, wanted = sum(s.recalled for s in scores), sum(s.wanted for s in scores)
    assert recalled / wanted >= 0.99, f"{recalled}/{wanted}"


def test_isolated_particles_precision_at_least_99_percent(scores: list[Score]) -> None:
    correct, reported = sum(s.correct for s in scores), sum(s.reported for s in scores)
    assert correct / reported >= 0.99, f"{correct}/{reported}"


def test_position_rms_at_most_a_tenth_of_a_pixel(scores: list[Score]) -> None:
    errors = np.concatenate([s.errors_px for s in scores])
    assert np.sqrt(np.mean(errors**2)) <= 0.1, f"{np.sqrt(np.mean(errors**2)):.3f} px"
