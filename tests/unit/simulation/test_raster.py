"""Rasteriser details the renderers rely on."""

from __future__ import annotations

import numpy as np

from simulation.geometry import homogeneous
from simulation.raster import (
    COVERAGE_BLOCK_PX,
    PixelFrame,
    _patch_sample_coords,
    _rect_sdf,
    rectangle_coverage,
    splat_points,
)


def test_axis_aligned_fast_path_equals_the_distance_field():
    frame = PixelFrame(homogeneous(np.eye(2) * 0.7, (-3.1, -2.3)), 60, 50)
    rect = (10.3, 12.9, 17.2, 9.4, 0.0)
    fast = rectangle_coverage(frame, rect)
    xs = 0.7 * np.arange(60) - 3.1
    ys = 0.7 * np.arange(50) - 2.3
    sd = _rect_sdf(xs[None, :], ys[:, None], rect) / 0.7
    slow = np.clip(0.5 - sd, 0, 1)
    inside = (slow > 0) & (slow < 1)
    # identical along the straight edges; the corners differ by the ramp product only
    edges = inside & ~((np.abs(np.abs(xs[None, :] - 10.3) - 8.6) < 1) & (np.abs(np.abs(ys[:, None] - 12.9) - 4.7) < 1))
    assert np.allclose(fast[edges], slow[edges], atol=1e-6)
    assert np.isclose(fast.sum() * 0.49, 17.2 * 9.4, rtol=1e-3)


def test_block_skipping_gives_the_distance_field_exactly():
    """A turned, anisotropic grid (an SEM overview with scan errors) over a turned rectangle whose
    edges and a corner cross it: the blocks decided at once hold exactly the field's 0 and 1, and
    most of the grid is decided that way."""
    angle = np.radians(9.0)
    linear = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.diag([0.132, 0.129])
    linear[0, 1] += 0.0007  # shear
    width = height = 5 * COVERAGE_BLOCK_PX + 37
    frame = PixelFrame(homogeneous(linear, (-20.0, -15.0)), width, height)
    rect = (45.0, 50.0, 70.0, 55.0, 3.0)
    sx, sy = _patch_sample_coords(frame, 0, 0, width, height)
    field = np.clip(0.5 - _rect_sdf(sx, sy, rect) / frame.pixel_size_um, 0.0, 1.0).astype(np.float32)
    coverage = rectangle_coverage(frame, rect)
    assert np.array_equal(coverage, field)
    assert 0 < np.count_nonzero((field > 0) & (field < 1)) < 0.05 * field.size


def test_splat_conserves_weight_and_centroid():
    frame = PixelFrame(homogeneous(np.eye(2) * 0.5, (0.0, 0.0)), 40, 40)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.uniform(5, 15, 2)
        img = splat_points(frame, np.array([x]), np.array([y]), np.array([2.0]))
        yy, xx = np.mgrid[:40, :40]
        assert np.isclose(img.sum(), 2.0, rtol=1e-6)
        assert np.isclose((img * xx).sum() / img.sum() * 0.5, x, atol=1e-5)
        assert np.isclose((img * yy).sum() / img.sum() * 0.5, y, atol=1e-5)
