"""Several regions of one sample: a low-magnification SEM overview and high-magnification tiles.

A night at the nanoprobe covers hundreds of particles, more than one SEM field at 20 nm/px
holds. Users bring what they took in the lab: an overview of the whole membrane (the corner
markers in view, so it registers to the beamline camera) and several high-magnification
images of regions of interest (tiles), each of which registers into the overview (same
modality, ten times finer pixels). This module makes that set on the virtual beamline:

- :func:`night_sample`: the default sample plus, in every tile's field, a dense drop of
  isolated cubes and a few agglomerates (what the overview registration of a tile needs);
- :func:`tile_layout`: the tiles' fields (centre, scan rotation), on a grid around the
  membrane centre, never overlapping (no particle lies in two tiles, so none is queued twice);
- :func:`prepare_regions`: everything a night run starts from, written to one folder:
  ``beamline.json``, ``sample.json``, ``overview.tif``, one TIFF per tile, the manifest
  ``regions.json`` (name -> file, pixel size, size) and ``truth.json`` with
  ``regions: {name: {"pixel_to_sample": 3x3, ...}}`` for every SEM image;
- :func:`imaged_geometries`: the overview and the tiles as the SEM really scanned them: each
  image with its own magnification error, shear and scan non-linearity (:class:`ScanErrors`),
  drawn per image. The TIFF says the nominal pixel size, as a real SEM does; the truth's
  ``pixel_to_sample`` is the best affine of the true (non-linear) mapping.

Nothing here imports Tango; the truth is for scoring only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from simulation.config import (
    NIGHT_SEM_NONLINEARITY,
    NIGHT_SEM_SCALE_ERROR,
    NIGHT_SEM_SHEAR_MAX_DEG,
    SemGeometry,
    VirtualBeamline,
    default_beamline,
)
from simulation.generate import SampleRecipe, _agglomerate, _draw_diameters, generate_sample, isolated_mask
from simulation.geometry import apply
from simulation.sample import Sample
from simulation.sem import render_sem, scan_nonlinearity_px, sem_pixel_to_sample
from simulation.tiffio import write_tiff
from simulation.truth import truth

REGIONS_STREAM = 0x7E6
"""Stream tag of this module's random draws (tile placement, extra particles, image noise)."""
OVERVIEW = "overview"
"""Frame and region name of the overview image."""
MANIFEST = "regions.json"
ISOLATION_UM = 2.0
"""The workflow's isolation radius: no other particle centre within 2 µm."""


@dataclass(frozen=True)
class ScanErrors:
    """How imperfect each SEM image of the set is; every image draws its own errors.

    Defaults are a real lab SEM's (the night beamline's figures, docs/simulation.md): the
    magnification is calibrated to 1-2 % per axis (magnitude uniform in ``scale_error``, random
    sign, x and y independent), the scan axes are orthogonal to +-0.3 deg (``shear_max_deg``,
    uniform), and the scan is non-linear by a few 0.1 % across the field (``nonlinearity``, the
    cubic of :func:`simulation.sem.scan_nonlinearity_px`: 0.003 puts a point at the edge of the
    field 0.4 x 0.003 half widths off, 50 nm on an 82 µm tile, 0.3 µm on the 520 µm overview)."""

    scale_error: tuple[float, float] = NIGHT_SEM_SCALE_ERROR
    """(low, high) of the magnitude of the magnification error per axis, a fraction."""
    shear_max_deg: float = NIGHT_SEM_SHEAR_MAX_DEG
    nonlinearity: float = NIGHT_SEM_NONLINEARITY
    """Amplitude of the cubic scan non-linearity, the same on both axes."""

    def draw(self, rng: np.random.Generator, geometry: SemGeometry) -> SemGeometry:
        """``geometry`` (what the SEM says) with this image's own errors (what it did)."""
        low, high = self.scale_error

        def signed() -> float:
            return float(rng.uniform(low, high) * rng.choice([-1.0, 1.0]))

        scale = (signed(), signed())
        shear = float(rng.uniform(-self.shear_max_deg, self.shear_max_deg))
        return geometry.model_copy(update={"scale_error": scale, "shear_deg": shear,
                                           "nonlinearity": (self.nonlinearity, self.nonlinearity)})


PERFECT_SCANS = ScanErrors(scale_error=(0.0, 0.0), shear_max_deg=0.0, nonlinearity=0.0)
"""Every image a perfect similarity: the exact nominal pixel size, no shear, a linear scan."""


@dataclass(frozen=True)
class RegionsRecipe:
    """The overview, the tiles and the particles put into the tiles; lengths in µm."""

    tiles: int = 4
    tile_px: int = 4096
    """Width and height of each tile (the lab SEM image of today: 4096 px)."""
    tile_pixel_size_um: float = 0.02
    gap_um: float = 8.0
    """Clearance between the footprints of neighbouring tiles (after their scan rotation)."""
    isolated_per_um2: float = 0.025
    """Density of the cubes dropped on each tile's field. A Poisson drop keeps a fraction
    exp(-4 pi rho) of them isolated at 2 µm: 0.025/µm² gives about 125 isolated per 82 µm tile,
    near the optimum 1/(4 pi) = 0.08/µm² would give only a few more and crowd the image."""
    agglomerates_per_tile: int = 6
    """Micrometre blobs visible at the overview's pixel size: the structure that registers a tile
    into the overview. Markers repeat (three alike crosses near the centre), so a tile holding
    one cross and two blobs matches the wrong cross; six blobs make the place unique."""
    tile_agglomerate_radius_um: tuple[float, float] = (0.8, 2.0)
    overview_pixel_size_um: float = 0.13
    """The membrane and its margin in 4000 px, the largest side RegistrationDS works at without
    binning, as a lab SEM writes an overview (4096 px lines). Fine enough that single 50 nm cubes
    show, so every part of a tile holds structure to register it into the overview by: at
    0.2 µm (2600 px) they did not, and 5 of the 12 tiles of seeds 4-6 were refused (blank parts,
    docs/workflow.md, "Tiles into the overview"). The camera (0.55 µm/px) sees the overview as a
    945 px field in its 2048 px frame."""
    overview_margin_um: float = 10.0
    """The overview spans the membrane plus this margin on each side (the Si chip's edge)."""
    overview_probe_sigma_um: float = 0.065
    """Effective probe of the overview: half its pixel, so single cubes are sampled without
    aliasing (a real SEM integrates along the line at this magnification)."""
    scan_rotation_max_deg: float = 10.0
    """The overview's scan rotation lies within +-this of the sample axes."""
    tile_rotation_jitter_deg: float = 2.0
    """Each tile's scan rotation differs from the overview's by at most this."""
    base: SampleRecipe = field(default_factory=SampleRecipe)
    """The rest of the sample (membrane, markers, isolated cubes elsewhere)."""
    scan_errors: ScanErrors = field(default_factory=ScanErrors)
    """The SEM's imperfections, drawn per image (overview and every tile); a real SEM's by
    default, :data:`PERFECT_SCANS` for ideal images."""

    @property
    def tile_side_um(self) -> float:
        return self.tile_px * self.tile_pixel_size_um


def small_recipe() -> RegionsRecipe:
    """Two 1536 px tiles (31 µm): the fast variant for system tests. It keeps the real SEM's
    scan errors (:class:`ScanErrors` defaults) on the overview and both tiles."""
    return RegionsRecipe(tiles=2, tile_px=1536)


@dataclass(frozen=True)
class Tile:
    name: str
    geometry: SemGeometry


def tile_names(count: int) -> list[str]:
    """``tile1``, ``tile2``, ...: valid mapper frame names and queue region labels."""
    return [f"tile{k + 1}" for k in range(count)]


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), REGIONS_STREAM, *tags]))


def overview_rotation(seed: int, recipe: RegionsRecipe) -> float:
    return float(_rng(seed, 0).uniform(-recipe.scan_rotation_max_deg, recipe.scan_rotation_max_deg))


def tile_layout(seed: int, recipe: RegionsRecipe, width_um: float = 500.0, height_um: float = 500.0) -> list[Tile]:
    """The tiles' fields on a grid centred on the membrane: pitch = the footprint of a tile
    turned by the largest possible scan rotation, plus ``gap_um``, so tiles never overlap."""
    if recipe.tiles < 1:
        raise ValueError("a night needs at least one tile")
    rng = _rng(seed, 1)
    base = overview_rotation(seed, recipe)
    turn = math.radians(recipe.scan_rotation_max_deg + recipe.tile_rotation_jitter_deg)
    pitch = recipe.tile_side_um * (abs(math.cos(turn)) + abs(math.sin(turn))) + recipe.gap_um
    columns = math.ceil(math.sqrt(recipe.tiles))
    rows = math.ceil(recipe.tiles / columns)
    reach = max(columns, rows) * pitch / 2.0
    if reach > min(width_um, height_um) / 2.0 - 70.0:  # keep clear of the corner markers
        raise ValueError(f"{recipe.tiles} tiles of {recipe.tile_side_um:g} µm do not fit on the membrane")
    tiles = []
    for k, name in enumerate(tile_names(recipe.tiles)):
        row, column = divmod(k, columns)
        centre = (width_um / 2.0 + (column - (columns - 1) / 2.0) * pitch,
                  height_um / 2.0 + (row - (rows - 1) / 2.0) * pitch)
        rotation = base + float(rng.uniform(-recipe.tile_rotation_jitter_deg, recipe.tile_rotation_jitter_deg))
        tiles.append(Tile(name, SemGeometry(pixel_size_um=recipe.tile_pixel_size_um, width=recipe.tile_px,
                                            height=recipe.tile_px, centre_um=centre, rotation_deg=rotation)))
    return tiles


def overview_geometry(seed: int, recipe: RegionsRecipe, width_um: float = 500.0,
                      height_um: float = 500.0) -> SemGeometry:
    """The overview's field: the whole membrane plus a margin, at the overview's pixel size."""
    side = max(width_um, height_um) + 2 * recipe.overview_margin_um
    pixels = int(math.ceil(side / recipe.overview_pixel_size_um))
    return SemGeometry(pixel_size_um=recipe.overview_pixel_size_um, width=pixels, height=pixels,
                       rotation_deg=overview_rotation(seed, recipe), probe_sigma_um=recipe.overview_probe_sigma_um)


def night_sample(seed: int, recipe: RegionsRecipe | None = None) -> Sample:
    """The default sample plus, in every tile's field, ``isolated_per_um2`` cubes and
    ``agglomerates_per_tile`` agglomerates, all clear of the markers. Same seed, same sample."""
    recipe = recipe or RegionsRecipe()
    sample = generate_sample(seed, recipe.base)
    rng = _rng(seed, 2)
    keep_out = np.array([(m.x, m.y, m.extent() + 1.5) for m in sample.markers])

    def clear(points: np.ndarray, clearance: float = 0.0) -> np.ndarray:
        ok = np.ones(len(points), bool)
        for mx, my, r in keep_out:
            ok &= np.hypot(points[:, 0] - mx, points[:, 1] - my) > r + clearance
        return ok

    blobs = replace(recipe.base, agglomerate_radius_um=recipe.tile_agglomerate_radius_um)
    groups = []
    for tile in tile_layout(seed, recipe, sample.width, sample.height):
        to_sample = sem_pixel_to_sample(sample, tile.geometry)
        side = recipe.tile_px - 1
        for _ in range(recipe.agglomerates_per_tile):
            for _ in range(1000):  # inside the inner 70 % of the tile, clear of the markers
                centre = apply(to_sample, rng.uniform(0.15 * side, 0.85 * side, 2))
                if clear(centre[None, :], clearance=4.0)[0]:
                    break
            groups.append(_agglomerate(rng, centre, blobs))
        count = int(rng.poisson(recipe.isolated_per_um2 * recipe.tile_side_um ** 2))
        groups.append(apply(to_sample, rng.uniform(0.0, side, (count, 2))))
    points = np.concatenate(groups)
    points = points[clear(points)]
    n = len(points)
    d = _draw_diameters(rng, n, recipe.base)
    angle = rng.uniform(0.0, 90.0, n)
    return Sample(width=sample.width, height=sample.height,
                  x=np.concatenate([sample.x, np.round(points[:, 0], 6)]),
                  y=np.concatenate([sample.y, np.round(points[:, 1], 6)]),
                  d=np.concatenate([sample.d, np.round(d, 6)]),
                  angle_deg=np.concatenate([sample.angle_deg, np.round(angle, 4)]),
                  material=[*sample.material, *(["CeO2"] * n)], markers=list(sample.markers))


def isolated_in_image(sample: Sample, geometry: SemGeometry, radius_um: float = ISOLATION_UM) -> int:
    """How many truly isolated particles (no other particle centre or marker within
    ``radius_um``, counting particles outside the image too) an SEM image shows."""
    ok = isolated_mask(sample, radius_um)
    to_pixel = np.linalg.inv(sem_pixel_to_sample(sample, geometry))
    px = apply(to_pixel, np.column_stack([sample.x, sample.y]))
    inside = ((px[:, 0] >= 0) & (px[:, 0] <= geometry.width - 1)
              & (px[:, 1] >= 0) & (px[:, 1] <= geometry.height - 1))
    return int(np.count_nonzero(ok & inside))


@dataclass
class RegionInputs:
    """The files a night over several regions starts from (plus the hidden truth)."""

    beamline: Path
    sample: Path
    truth: Path
    manifest: Path
    overview: Path
    tiles: dict[str, Path]
    """Tile name (its mapper frame and queue region) -> its SEM image."""


def _noise_seed(seed: int, k: int) -> int:
    return int(np.random.SeedSequence([int(seed), REGIONS_STREAM, 3, k]).generate_state(1)[0])


def imaged_geometries(seed: int, recipe: RegionsRecipe, sample: Sample) -> dict[str, SemGeometry]:
    """The overview and the tiles as the SEM scanned them: the nominal fields
    (:func:`overview_geometry`, :func:`tile_layout`, what the SEM says) with each image's own
    scan errors drawn from ``recipe.scan_errors`` (seeded per image). The sample is placed on
    the nominal fields; a tile's true field is off by its errors (1-2 % of its size)."""
    images = {OVERVIEW: overview_geometry(seed, recipe, sample.width, sample.height)}
    images.update({tile.name: tile.geometry for tile in tile_layout(seed, recipe, sample.width, sample.height)})
    return {name: recipe.scan_errors.draw(_rng(seed, 4, k), geometry)
            for k, (name, geometry) in enumerate(images.items())}


def region_truth(sample: Sample, images: dict[str, SemGeometry]) -> dict[str, Any]:
    """``{name: {"pixel_to_sample": 3x3, "pixel_size_um", "size_px": [w, h], "rotation_deg",
    "scale_error": [ex, ey], "shear_deg", "nonlinearity": [ax, ay]}}``. ``pixel_to_sample`` is
    the best affine of the true mapping (magnification error and shear included; the scan
    non-linearity, zero mean and without affine part, is not), ``pixel_size_um`` the nominal
    pixel size the SEM and the TIFF say."""
    return {name: {"pixel_to_sample": sem_pixel_to_sample(sample, g).tolist(), "pixel_size_um": g.pixel_size_um,
                   "size_px": [g.width, g.height], "rotation_deg": g.rotation_deg,
                   "scale_error": list(g.scale_error), "shear_deg": g.shear_deg,
                   "nonlinearity": list(g.nonlinearity)}
            for name, g in images.items()}


def true_pixel_to_sample(region: dict[str, Any], pixels: np.ndarray) -> np.ndarray:
    """Sample µm that SEM ``pixels`` (N x 2) of a ``truth.json`` region truly show: the best
    affine ``pixel_to_sample`` after the scan non-linearity (pixel p shows what the affine puts
    at ``p + d(p)``, :func:`simulation.sem.scan_nonlinearity_px`). For scoring only."""
    width, height = region["size_px"]
    geometry = SemGeometry(width=width, height=height, nonlinearity=tuple(region.get("nonlinearity", (0.0, 0.0))))
    pixels = np.asarray(pixels, float).reshape(-1, 2)
    dx, dy = scan_nonlinearity_px(geometry, pixels[:, 0], pixels[:, 1])
    return apply(np.asarray(region["pixel_to_sample"], float), pixels + np.column_stack([dx, dy]))


def prepare_regions(out_dir: Path, seed: int, recipe: RegionsRecipe | None = None,
                    beamline: VirtualBeamline | None = None) -> RegionInputs:
    """Generate the night's sample, beamline, overview, tiles, manifest and truth in ``out_dir``.

    ``beamline`` (optional) gives the mounting and settings to use, e.g.
    ``night_beamline(seed)`` (its sample is replaced by the night's); by default
    :func:`simulation.config.default_beamline` of ``seed``. The truth file is
    ``truth(beamline)`` plus ``regions`` for the overview and every tile. The overview and the
    tiles are rendered with their own SEM scan errors from ``recipe.scan_errors``
    (:func:`imaged_geometries`), whatever the beamline (the kind ``default_beamline`` too; the
    beamline's ``sem`` section is for its single SEM image); the TIFFs and the manifest say the
    nominal pixel size, and the truth's 3x3 ``pixel_to_sample`` is the best affine of the true
    mapping, which the scan non-linearity leaves by up to 0.4 x ``nonlinearity`` half widths."""
    recipe = recipe or RegionsRecipe()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sample = night_sample(seed, recipe)
    # every section of a given beamline (night effects included), with the night's sample
    beamline = default_beamline(seed, sample=sample) if beamline is None else replace(beamline, sample=sample)
    images = imaged_geometries(seed, recipe, sample)
    paths = RegionInputs(beamline=out_dir / "beamline.json", sample=out_dir / "sample.json",
                         truth=out_dir / "truth.json", manifest=out_dir / MANIFEST,
                         overview=out_dir / f"{OVERVIEW}.tif", tiles={})
    beamline.save(paths.beamline)
    sample.save(paths.sample)
    manifest: dict[str, Any] = {"overview": OVERVIEW, "regions": {}}
    for k, (name, geometry) in enumerate(images.items()):
        path = out_dir / f"{name}.tif"
        image = render_sem(sample, geometry, seed=_noise_seed(seed, k))
        write_tiff(path, image.image, geometry.pixel_size_um, {"modality": "SEM", "seed": seed, "region": name})
        if name != OVERVIEW:
            paths.tiles[name] = path
        manifest["regions"][name] = {
            "file": str(path.resolve()), "pixel_size_um": geometry.pixel_size_um,
            "size_px": [geometry.width, geometry.height], "role": "overview" if name == OVERVIEW else "tile",
            **({} if name == OVERVIEW else {"parent": OVERVIEW}),
        }
    paths.manifest.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    facts = truth(beamline)
    facts["regions"] = region_truth(sample, images)
    facts["units"]["regions"] = "px"
    paths.truth.write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    return paths


def load_manifest(path: Path) -> dict[str, Any]:
    """The manifest written by :func:`prepare_regions`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
