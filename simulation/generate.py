"""Seeded generator of the NFFA reference sample: CeO2 nanocubes drop-cast on a SiN
membrane, with IBID/EBID Pt markers.

Drop-casting leaves mostly isolated cubes plus a few small clusters and micrometre
agglomerates; the workflow must find the isolated ones and the registration needs the
agglomerates and markers (the only things the optical camera can see). The marker layout
follows the NFFA recipe (D15.5, Fig. 12): in three of the four membrane corners a 10x10 µm
frame holding a 2x2 µm square and a 6x3 µm L; three corners, not four, so that the
orientation is never ambiguous. Guiding crosses and L's lead to the centre, where the
default SEM field lies, so that an SEM image of the centre shares markers and
agglomerates with the camera view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulation.sample import Marker, Sample


@dataclass(frozen=True)
class SampleRecipe:
    """Everything that shapes a generated sample; lengths in µm."""

    width: float = 500.0
    height: float = 500.0
    isolated: int = 700
    small_clusters: int = 50
    agglomerates: int = 9
    central_agglomerates: int = 4
    """How many of the agglomerates are forced into the central ``central_half_um`` box."""
    central_half_um: float = 30.0
    agglomerate_radius_um: tuple[float, float] = (0.4, 1.5)
    agglomerate_fill: float = 0.35
    median_d_um: float = 0.050
    sigma_log_d: float = 0.15
    corner_inset_um: float = 50.0
    """Distance from the membrane corner to the corner of the 10x10 µm marker frame (NFFA uses
    200 µm on larger membranes)."""
    edge_margin_um: float = 5.0


def _corner_markers(recipe: SampleRecipe) -> list[Marker]:
    half = 5.0
    inset = recipe.corner_inset_um + half
    centres = [(inset, inset), (recipe.width - inset, inset), (inset, recipe.height - inset)]
    markers = []
    for cx, cy in centres:
        markers.append(Marker(cx, cy, "frame", 10.0, 0.0, line=0.5))
        markers.append(Marker(cx + 2.5, cy - 2.5, "square", 2.0, 0.0))
        markers.append(Marker(cx - 1.0, cy + 2.0, "L", 6.0, 0.0, w=6.0, h=3.0, line=1.0))
    return markers


def _guiding_markers(recipe: SampleRecipe) -> list[Marker]:
    cx, cy = recipe.width / 2.0, recipe.height / 2.0
    near = 22.0
    far = min(recipe.width, recipe.height) * 0.24
    return [
        # around the centre (inside the default 82 µm SEM field): three crosses and an L
        Marker(cx - near, cy - near, "cross", 4.0, 0.0, line=0.8),
        Marker(cx + near, cy - near, "cross", 4.0, 0.0, line=0.8),
        Marker(cx - near, cy + near, "cross", 4.0, 0.0, line=0.8),
        Marker(cx + near, cy + near, "L", 6.0, 0.0, w=6.0, h=3.0, line=1.0),
        # leading from the corners to the centre, each pointing another way
        Marker(cx - far, cy, "L", 10.0, 0.0, w=10.0, h=5.0, line=1.5),
        Marker(cx + far, cy, "L", 10.0, 90.0, w=10.0, h=5.0, line=1.5),
        Marker(cx, cy - far, "L", 10.0, 180.0, w=10.0, h=5.0, line=1.5),
        Marker(cx, cy + far, "cross", 8.0, 45.0, line=1.5),
    ]


def _draw_diameters(rng: np.random.Generator, n: int, recipe: SampleRecipe) -> np.ndarray:
    return recipe.median_d_um * np.exp(recipe.sigma_log_d * rng.standard_normal(n))


def _agglomerate(rng: np.random.Generator, centre: np.ndarray, recipe: SampleRecipe) -> np.ndarray:
    """Cubes on a turned, jittered lattice inside an irregular blob (union of a few discs):
    they touch and hardly overlap, like a dried drop's residue."""
    radius = rng.uniform(*recipe.agglomerate_radius_um)
    lobes = [(centre, radius)]
    for _ in range(rng.integers(0, 3)):
        direction = rng.uniform(0, 2 * math.pi)
        lobes.append((centre + 0.7 * radius * np.array([math.cos(direction), math.sin(direction)]),
                      radius * rng.uniform(0.4, 0.8)))
    spacing = recipe.median_d_um * 1.25
    reach = radius * 2.0
    grid = np.arange(-reach, reach + spacing, spacing)
    gx, gy = np.meshgrid(grid, grid)
    points = np.column_stack([gx.ravel(), gy.ravel()]) + centre
    inside = np.zeros(len(points), bool)
    for c, r in lobes:
        inside |= np.hypot(points[:, 0] - c[0], points[:, 1] - c[1]) <= r
    keep = inside & (rng.random(len(points)) < recipe.agglomerate_fill)
    # turn the lattice by a random angle and jitter it so that no grid shows in the SEM
    turn = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    local = (points[keep] - centre) @ rot.T
    return centre + local + rng.uniform(-0.15, 0.15, local.shape) * spacing


def _small_cluster(rng: np.random.Generator, centre: np.ndarray, recipe: SampleRecipe) -> np.ndarray:
    """2-8 cubes stuck together: each new one touches a random earlier one."""
    members = [centre]
    step = recipe.median_d_um * 1.15
    target = int(rng.integers(2, 9))
    for _ in range(200):
        if len(members) >= target:
            break
        anchor = members[int(rng.integers(len(members)))]
        a = rng.uniform(0, 2 * math.pi)
        candidate = anchor + step * np.array([math.cos(a), math.sin(a)])
        if min(np.hypot(*(candidate - m)) for m in members) >= step * 0.95:
            members.append(candidate)
    return np.array(members)


def generate_sample(seed: int, recipe: SampleRecipe | None = None) -> Sample:
    """A new sample; the same ``seed`` and recipe always give the same sample, bit for bit."""
    recipe = recipe or SampleRecipe()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A3]))
    markers = _corner_markers(recipe) + _guiding_markers(recipe)
    keep_out = np.array([(m.x, m.y, m.extent() + 1.5) for m in markers])
    margin = recipe.edge_margin_um

    def free(points: np.ndarray, clearance: float = 0.0) -> np.ndarray:
        ok = ((points[:, 0] > margin) & (points[:, 0] < recipe.width - margin)
              & (points[:, 1] > margin) & (points[:, 1] < recipe.height - margin))
        for mx, my, r in keep_out:
            ok &= np.hypot(points[:, 0] - mx, points[:, 1] - my) > r + clearance
        return ok

    groups: list[np.ndarray] = []
    centre = np.array([recipe.width / 2.0, recipe.height / 2.0])
    for i in range(recipe.agglomerates):
        for _ in range(1000):
            if i < recipe.central_agglomerates:
                c = centre + rng.uniform(-recipe.central_half_um, recipe.central_half_um, 2)
            else:
                c = rng.uniform(margin + 5, [recipe.width - margin - 5, recipe.height - margin - 5])
            if free(c[None, :], clearance=4.0)[0]:
                break
        groups.append(_agglomerate(rng, c, recipe))
    for _ in range(recipe.small_clusters):
        c = rng.uniform(margin, [recipe.width - margin, recipe.height - margin])
        groups.append(_small_cluster(rng, c, recipe))
    isolated = rng.uniform((margin, margin), (recipe.width - margin, recipe.height - margin),
                           (recipe.isolated, 2))
    groups.append(isolated)
    points = np.concatenate(groups)
    points = points[free(points)]
    n = len(points)
    d = _draw_diameters(rng, n, recipe)
    angle = rng.uniform(0.0, 90.0, n)
    # quantised exactly as the JSON writes them, so a sample rendered straight from the
    # generator and one loaded back from its file give the same bytes
    return Sample(width=recipe.width, height=recipe.height, x=np.round(points[:, 0], 6), y=np.round(points[:, 1], 6),
                  d=np.round(d, 6), angle_deg=np.round(angle, 4), material=["CeO2"] * n, markers=markers)


def isolated_mask(sample: Sample, radius_um: float) -> np.ndarray:
    """True for particles with no other particle centre and no marker within ``radius_um``:
    what "isolated" means for the tests and the XRF raster."""
    from scipy.spatial import cKDTree

    pts = np.column_stack([sample.x, sample.y])
    tree = cKDTree(pts)
    counts = np.array([len(c) for c in tree.query_ball_point(pts, radius_um)])
    ok = counts == 1
    for m in sample.markers:
        ok &= np.hypot(sample.x - m.x, sample.y - m.y) > m.extent() + radius_um
    return ok
