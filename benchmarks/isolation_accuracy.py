"""Isolation accuracy on the independent particle corpus: ParticleDS against trackpy + k-d tree.

Both methods see the same images with the same settings. The settings are the ones a user
would give: Diameter, Separation and IsolationRadius of the settings family, and MinMass a
fixed fraction of a typical single cube's mass (the main peak a user reads off the mass
histogram; here the median trackpy mass of the truly isolated cubes).

The baseline is what a user builds from trackpy alone: ``trackpy.locate`` with those
settings, a particle is isolated when no other located feature and no image edge is within
IsolationRadius (``scipy.spatial.cKDTree``), and its multiplicity is its mass over the
median mass, rounded (1, 2, 3+).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import trackpy
from scipy.spatial import cKDTree

from benchmarks.particle_corpus import SETTINGS, Case, Field, IsolationScore, render_field, score_isolation
from servers.ParticleDS import ParticleCore
from servers.ParticleDS.detection import locate
from servers.ParticleDS.isolation import edge_distance
from servers.ParticleDS.settings import ParticleSettings


def user_settings(case: Case, field: Field) -> dict[str, float]:
    """ParticleDS settings for ``case``: the family's values and a MinMass from the typical cube."""
    family = dict(SETTINGS[case.settings])
    fraction = family.pop("min_mass_fraction")
    probe = ParticleSettings(Diameter=int(family["Diameter"]), Separation=family["Separation"])
    features = locate(field.image, probe)
    features = features.select(features.kept)
    truly = field.isolated(family["IsolationRadius"])
    distance, nearest = cKDTree(field.xy).query(np.column_stack([features.x, features.y]))
    typical = float(np.median(features.mass[(distance < 1.0) & truly[nearest]]))
    family["MinMass"] = fraction * typical
    family["Diameter"] = int(family["Diameter"])
    return family


def run_ours(field: Field, settings: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xy, Isolated, Multiplicity) from the ParticleDS core."""
    core = ParticleCore(settings)
    core.detect(field.image)
    return np.column_stack([core.x, core.y]), core.isolated.copy(), core.multiplicity.copy()


def run_trackpy_kdtree(field: Field, settings: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xy, Isolated, Multiplicity) from trackpy.locate plus a k-d tree, as a user would build it."""
    separation = settings["Separation"] or settings["Diameter"] + 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = trackpy.locate(field.image, int(settings["Diameter"]), minmass=settings["MinMass"],
                               separation=separation, engine="numba")
    xy = frame[["x", "y"]].to_numpy()
    radius = settings["IsolationRadius"]
    nn = cKDTree(xy).query(xy, k=2)[0][:, 1] if len(xy) > 1 else np.full(len(xy), np.inf)
    h, w = field.image.shape
    isolated = (nn >= radius) & (edge_distance(xy, (0, 0, w, h)) >= radius)
    mass = frame["mass"].to_numpy()
    multiplicity = np.clip(np.rint(mass / np.median(mass)), 1, 3).astype(int) if len(mass) else mass
    return xy, isolated, multiplicity


def evaluate(cases: Iterable[Case]) -> dict[str, dict[str, IsolationScore]]:
    """Scores per settings family and method ("ours", "trackpy"), plus "all" over every case."""
    scores: dict[str, dict[str, IsolationScore]] = {}
    for case in cases:
        field = render_field(case.seed, case.size, case.dtype)
        settings = user_settings(case, field)
        radius = settings["IsolationRadius"]
        for method, runner in (("ours", run_ours), ("trackpy", run_trackpy_kdtree)):
            xy, isolated, multiplicity = runner(field, settings)
            score = score_isolation(field, xy, isolated, multiplicity, radius)
            for key in (case.settings, "all"):
                scores.setdefault(key, {}).setdefault(method, IsolationScore())
                scores[key][method] += score
    return scores


def format_confusion(scores: dict[str, dict[str, IsolationScore]]) -> str:
    """A text table: precision, recall and multiplicity confusion per row and method."""
    lines = ["| cases | method | precision of Isolated | recall of Isolated | multiplicity confusion "
             "(rows true 1/2/3+, columns estimated 1/2/3+) |", "|---|---|---|---|---|"]
    for key, methods in scores.items():
        for method, score in methods.items():
            name = "ParticleDS" if method == "ours" else "trackpy + k-d tree"
            confusion = " / ".join(" ".join(str(v) for v in row) for row in score.confusion.tolist())
            lines.append(f"| {key} | {name} | {score.precision:.4f} ({score.correct}/{score.flagged}) | "
                         f"{score.recall:.4f} ({score.recalled}/{score.wanted}) | {confusion} |")
    return "\n".join(lines)
