"""Several regions: the night's sample holds enough isolated particles in its tiles, the tiles
never overlap, and the files and the truth agree with what the images show."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from simulation.config import SemGeometry, night_beamline
from simulation.geometry import apply, invert
from simulation.regions import (
    ISOLATION_UM,
    OVERVIEW,
    RegionsRecipe,
    isolated_in_image,
    night_sample,
    overview_geometry,
    prepare_regions,
    small_recipe,
    tile_layout,
)
from simulation.sem import scan_nonlinearity_px, sem_pixel_to_sample
from simulation.tiffio import read_tiff

from .conftest import window_centroid


def _inside(sample, geometry) -> np.ndarray:
    px = apply(invert(sem_pixel_to_sample(sample, geometry)), np.column_stack([sample.x, sample.y]))
    return ((px[:, 0] >= 0) & (px[:, 0] <= geometry.width - 1) & (px[:, 1] >= 0)
            & (px[:, 1] <= geometry.height - 1))


def _shown_at(region: dict, affine_px: np.ndarray) -> np.ndarray:
    """Image pixels showing what the affine truth puts at ``affine_px``: the scan
    non-linearity moves pixel p to ``p + d(p)``, solved for p by fixed point (|d'| << 1)."""
    width, height = region["size_px"]
    geometry = SemGeometry(width=width, height=height, nonlinearity=tuple(region["nonlinearity"]))
    shown = np.array(affine_px, float, ndmin=2)
    for _ in range(4):
        dx, dy = scan_nonlinearity_px(geometry, shown[:, 0], shown[:, 1])
        shown = np.array(affine_px, float, ndmin=2) - np.column_stack([dx, dy])
    return shown


@pytest.mark.parametrize("seed", [3, 11])
def test_default_night_holds_300_isolated_particles_in_4_tiles(seed: int) -> None:
    recipe = RegionsRecipe()
    sample = night_sample(seed, recipe)
    tiles = tile_layout(seed, recipe, sample.width, sample.height)
    counts = [isolated_in_image(sample, tile.geometry, ISOLATION_UM) for tile in tiles]
    assert len(tiles) >= 4
    assert sum(counts) >= 300, counts
    assert min(counts) >= 75, counts  # every tile carries its share, not one tile the night


def test_tiles_never_share_a_particle_and_lie_inside_the_overview() -> None:
    recipe = RegionsRecipe(tiles=6)
    sample = night_sample(5, recipe)
    inside = [_inside(sample, tile.geometry) for tile in tile_layout(5, recipe, sample.width, sample.height)]
    for i in range(len(inside)):
        for j in range(i + 1, len(inside)):
            assert not np.any(inside[i] & inside[j]), (i, j)
    overview = _inside(sample, overview_geometry(5, recipe, sample.width, sample.height))
    assert np.all(overview[np.any(inside, axis=0)])


def test_night_sample_is_deterministic_and_keeps_clear_of_the_markers() -> None:
    recipe = small_recipe()
    first, second = night_sample(7, recipe), night_sample(7, recipe)
    assert first.dumps() == second.dumps()
    assert first.dumps() != night_sample(8, recipe).dumps()
    for marker in first.markers:
        assert np.all(np.hypot(first.x - marker.x, first.y - marker.y) > marker.extent())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("regions")
    recipe = replace(small_recipe(), tile_px=1024)
    return prepare_regions(out, 4, recipe, beamline=night_beamline(4)), recipe


def test_prepare_regions_writes_files_manifest_and_truth(prepared) -> None:
    inputs, recipe = prepared
    manifest = json.loads(inputs.manifest.read_text())
    facts = json.loads(inputs.truth.read_text())
    names = [OVERVIEW, *inputs.tiles]
    assert manifest["overview"] == OVERVIEW and sorted(manifest["regions"]) == sorted(names)
    assert len(inputs.tiles) == recipe.tiles
    for name in names:
        entry = manifest["regions"][name]
        image, meta = read_tiff(entry["file"])
        assert meta["pixel_size_um"] == entry["pixel_size_um"] == facts["regions"][name]["pixel_size_um"]
        assert list(image.shape[::-1]) == entry["size_px"] == facts["regions"][name]["size_px"]
        # the TIFF says the nominal pixel size; the true one is off by the image's own
        # magnification error (1-2 % per axis) and shear (< 0.3 deg), as at a real SEM
        region = facts["regions"][name]
        linear = np.asarray(region["pixel_to_sample"])[:2, :2]
        assert np.sqrt(abs(np.linalg.det(linear))) == pytest.approx(entry["pixel_size_um"], rel=0.021)
        assert all(0.01 <= abs(e) <= 0.02 for e in region["scale_error"]), region
        assert abs(region["shear_deg"]) <= 0.3 and region["nonlinearity"] == [0.003, 0.003], region
    # every image draws its own errors
    assert len({tuple(facts["regions"][name]["scale_error"]) for name in names}) == len(names)
    assert manifest["regions"][OVERVIEW]["pixel_size_um"] == recipe.overview_pixel_size_um
    # today's truth keys stay as they were, and the given (night) beamline keeps its sections
    for key in ("sample_to_stage", "stage_to_sample", "camera", "sem", "mounting", "drift"):
        assert key in facts
    saved = json.loads(inputs.beamline.read_text())
    assert saved["drift"] == night_beamline(4).drift.model_dump(mode="json")
    assert len(saved["sample"]["particles"]) == len(json.loads(inputs.sample.read_text())["particles"])


def test_truth_matrices_put_particles_and_markers_where_the_images_show_them(prepared) -> None:
    inputs, _ = prepared
    facts = json.loads(inputs.truth.read_text())
    sample = json.loads(inputs.sample.read_text())
    xy = np.array([[p["x"], p["y"]] for p in sample["particles"]])
    from simulation.generate import isolated_mask
    from simulation.sample import sample_from_json

    isolated = isolated_mask(sample_from_json(sample), ISOLATION_UM)
    checked = 0
    for name, path in inputs.tiles.items():
        image, _ = read_tiff(path)
        to_px = invert(np.asarray(facts["regions"][name]["pixel_to_sample"]))
        px = _shown_at(facts["regions"][name], apply(to_px, xy[isolated]))
        radius = 6
        keep = ((px[:, 0] > radius + 2) & (px[:, 0] < image.shape[1] - radius - 3)
                & (px[:, 1] > radius + 2) & (px[:, 1] < image.shape[0] - radius - 3))
        for tx, ty in px[keep]:
            cx, cy = window_centroid(image, tx, ty, radius)
            assert np.hypot(cx - tx, cy - ty) < 0.5, (name, tx, ty, cx, cy)
            checked += 1
    assert checked >= 10
    # the overview: each corner marker's 2 x 2 µm Pt square, by its bright pixels' centroid
    overview, _ = read_tiff(inputs.overview)
    to_px = invert(np.asarray(facts["regions"][OVERVIEW]["pixel_to_sample"]))
    squares = [m for m in sample["markers"] if m["shape"] == "square"]
    assert len(squares) == 3
    for square in squares:
        tx, ty = _shown_at(facts["regions"][OVERVIEW], apply(to_px, np.array([square["x"], square["y"]])))[0]
        cx, cy = int(round(tx)), int(round(ty))
        window = overview[cy - 7:cy + 8, cx - 7:cx + 8].astype(float)
        bright = window > (window.max() + np.median(overview)) / 2
        yy, xx = np.nonzero(bright)
        assert np.hypot(xx.mean() - 7 + cx - tx, yy.mean() - 7 + cy - ty) < 0.5, square


def _best_similarity_residual(truth: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How far the best similarity (least squares over ``points``) of the affine ``truth``
    lands from it at each point: the part of the relative scan errors (anisotropic
    magnification, shear) no similarity registration can absorb."""
    target = apply(truth, points)
    rows = [[x, -y, 1.0, 0.0] for x, y in points] + [[y, x, 0.0, 1.0] for x, y in points]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.concatenate([target[:, 0], target[:, 1]]), rcond=None)[0]
    similarity = np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 1.0]])
    return np.linalg.norm(apply(similarity, points) - target, axis=1)


def test_a_tile_registers_into_the_overview_where_the_truth_says(prepared) -> None:
    """Same modality, ten times finer pixels: RegistrationDS's core between the two files, with
    the rotation window and scale prior smart_register_region uses; the tile's corners and
    centre through the found similarity against the truth, in overview pixels (0.13 µm).

    Each image has its own SEM scan errors, so the true tile -> overview mapping is an affine
    (a relative anisotropic magnification of up to ~4 % and shear of up to ~0.6 deg) that a
    similarity cannot follow: the bar is that non-conformal part (the best similarity's
    residual at the corners, computed from the truth) plus the 50 nm the registration met on
    perfect images (0.25 px of the 0.2 µm overview it was measured in: 0.04-0.13 px there)."""
    from servers.RegistrationDS.core import RegistrationCore

    inputs, recipe = prepared
    facts = json.loads(inputs.truth.read_text())
    core = RegistrationCore()
    core.load_image("overview", str(inputs.overview))
    ratio = recipe.tile_pixel_size_um / recipe.overview_pixel_size_um
    for name, path in inputs.tiles.items():
        core.load_image("tile", str(path))
        result = core.register({"reference": "overview", "target": "tile", "model": "similarity",
                                "rotation_range_deg": [-5.0, 5.0],
                                "prior": {"scale": ratio, "scale_tolerance": 0.05}})
        assert result.success, (name, result.warnings)
        width, height = facts["regions"][name]["size_px"]
        corners = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1],
                            [(width - 1) / 2, (height - 1) / 2]], float)
        truth = invert(np.asarray(facts["regions"][OVERVIEW]["pixel_to_sample"])) @ np.asarray(
            facts["regions"][name]["pixel_to_sample"])
        error_px = np.linalg.norm(apply(result.matrix_array, corners) - apply(truth, corners), axis=1)
        xs, ys = np.meshgrid(np.linspace(0, width - 1, 9), np.linspace(0, height - 1, 9))
        unabsorbable = _best_similarity_residual(truth, np.column_stack([xs.ravel(), ys.ravel()])).max()
        print(f"{name}: corners {np.round(error_px, 3).tolist()} overview px; a similarity cannot absorb "
              f"{unabsorbable:.3f} px")
        assert error_px.max() < unabsorbable + 0.050 / recipe.overview_pixel_size_um, (name, error_px, unabsorbable)
