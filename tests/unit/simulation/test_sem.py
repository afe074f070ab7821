"""SEM renderer: determinism, honest sub-pixel placement, TIFF metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from simulation.config import SemGeometry
from simulation.generate import isolated_mask
from simulation.geometry import apply, invert
from simulation.sem import render_sem
from simulation.tiffio import read_tiff, write_tiff

from .conftest import scattered_cubes, window_centroid


def _centroid_errors(sample, geometry, seed=0):
    sem = render_sem(sample, geometry, seed)
    to_px = invert(sem.pixel_to_sample)
    truth = apply(to_px, np.column_stack([sample.x, sample.y]))
    # the window holds the largest cube plus 4 probe sigmas of blur on each side
    radius = int(np.ceil((0.75 * sample.d.max() + 4 * geometry.probe_sigma_um) / geometry.pixel_size_um)) + 2
    errors = []
    for tx, ty in truth:
        if radius + 1 < tx < geometry.width - radius - 2 and radius + 1 < ty < geometry.height - radius - 2:
            cx, cy = window_centroid(sem.image, tx, ty, radius)
            errors.append((cx - tx, cy - ty))
    return np.array(errors)


@pytest.mark.parametrize("trial", range(4))
def test_every_isolated_particle_centroid_within_0_05_px(trial):
    """Noise off, everything else on (edge rim, probe blur, charging gradient), random scan
    rotation and sub-pixel positions: the renderer itself must not move any particle."""
    rng = np.random.default_rng(100 + trial)
    sample = scattered_cubes(rng, 144, spacing_um=0.8)
    geometry = SemGeometry(pixel_size_um=float(rng.uniform(0.01, 0.025)), width=512, height=512,
                           rotation_deg=float(rng.uniform(-180, 180)), noise=False)
    errors = _centroid_errors(sample, geometry)
    assert len(errors) > 50
    worst = np.abs(errors).max()
    assert worst < 0.05, f"worst centroid error {worst:.4f} px"


def test_isolated_particles_of_generated_sample_centroid_within_0_05_px(beamline):
    sample = beamline.sample
    geometry = SemGeometry(pixel_size_um=0.02, width=2048, height=2048, rotation_deg=7.0, noise=False)
    iso = isolated_mask(sample, 0.5)
    sub = type(sample)(sample.width, sample.height, sample.x[iso], sample.y[iso], sample.d[iso],
                       sample.angle_deg[iso], ["CeO2"] * int(iso.sum()), [])
    errors = _centroid_errors(sub, geometry)
    assert len(errors) >= 3
    assert np.abs(errors).max() < 0.05


def test_centroid_with_noise_is_unbiased():
    """With shot noise on, single centroids scatter; pooled over 1200 particles in three
    independently seeded images the mean error must vanish within 4 standard errors (no
    systematic shift) and the typical error stays a small fraction of a pixel."""
    pooled = []
    for seed in range(3):
        rng = np.random.default_rng(50 + seed)
        sample = scattered_cubes(rng, 400, spacing_um=0.5)
        geometry = SemGeometry(pixel_size_um=0.02, width=1024, height=1024, rotation_deg=float(rng.uniform(-90, 90)))
        pooled.append(_centroid_errors(sample, geometry, seed=seed))
    errors = np.concatenate(pooled)
    assert len(errors) > 1000
    standard_error = errors.std(axis=0) / np.sqrt(len(errors))
    assert np.all(np.abs(errors.mean(axis=0)) < 4 * standard_error)
    assert np.median(np.hypot(*errors.T)) < 0.25


def test_same_seed_same_bytes_and_different_seed_differs(beamline):
    g = SemGeometry(width=256, height=256, pixel_size_um=0.05)
    a = render_sem(beamline.sample, g, 5).image
    b = render_sem(beamline.sample, g, 5).image
    c = render_sem(beamline.sample, g, 6).image
    assert a.dtype == np.uint16
    assert a.tobytes() == b.tobytes()
    assert (a != c).mean() > 0.5


def test_pixel_to_sample_puts_the_centre_where_asked(beamline):
    g = SemGeometry(width=101, height=51, pixel_size_um=0.03, centre_um=(200.0, 210.0), rotation_deg=30.0)
    sem = render_sem(beamline.sample, g, 0)
    assert np.allclose(apply(sem.pixel_to_sample, (50.0, 25.0)), (200.0, 210.0))
    step = apply(sem.pixel_to_sample, (51.0, 25.0)) - apply(sem.pixel_to_sample, (50.0, 25.0))
    assert np.isclose(np.hypot(*step), 0.03)
    assert np.isclose(np.degrees(np.arctan2(step[1], step[0])), 30.0)


def test_markers_and_particles_are_bright_on_dark_membrane(beamline):
    """A guiding cross near the centre: Pt far above the membrane level."""
    cross = next(m for m in beamline.sample.markers if m.shape == "cross")
    g = SemGeometry(width=400, height=400, pixel_size_um=0.02, centre_um=(cross.x, cross.y), noise=False)
    img = render_sem(beamline.sample, g, 0).image.astype(float)
    assert img[200, 200] > 3 * np.median(img[:20, :20])


def test_tiff_has_resolution_tags_and_json_pixel_size(tmp_path):
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    path = tmp_path / "x.tif"
    write_tiff(path, image, 0.025, {"modality": "SEM"})
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        num, den = page.tags["XResolution"].value
        assert np.isclose(1e4 / (num / den), 0.025)
        num, den = page.tags["YResolution"].value
        assert np.isclose(1e4 / (num / den), 0.025)
        assert json.loads(page.description)["pixel_size_um"] == 0.025
    back, meta = read_tiff(path)
    assert np.array_equal(back, image) and meta["modality"] == "SEM"
