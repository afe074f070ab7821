"""Camera renderer: determinism, the public X = S + A (p - b) rule, optics and speed-relevant shapes."""

from __future__ import annotations

import numpy as np
import pytest

from simulation.camera import CameraRenderer, camera_calibration
from simulation.config import CameraOptics, Mounting
from simulation.geometry import apply, invert
from simulation.mounting import sample_to_stage

from .conftest import window_centroid


@pytest.fixture(scope="module")
def renderer(beamline, small_camera):
    return CameraRenderer(beamline.sample, beamline.mounting, small_camera, seed=4)


def _centre_stage(beamline):
    return tuple(apply(sample_to_stage(beamline.sample, beamline.mounting), beamline.sample.centre))


def test_same_seed_and_frame_same_bytes_other_frame_other_noise(beamline, small_camera, renderer):
    stage = _centre_stage(beamline)
    a = renderer.render(stage, 7).copy()
    b = CameraRenderer(beamline.sample, beamline.mounting, small_camera, seed=4).render(stage, 7)
    c = renderer.render(stage, 8)
    d = CameraRenderer(beamline.sample, beamline.mounting, small_camera, seed=5).render(stage, 7)
    assert a.dtype == np.uint16 and a.shape == (512, 512)
    assert a.tobytes() == b.tobytes()
    assert (a != c).mean() > 0.5 and (a != d).mean() > 0.5
    # same frame again after others: no hidden state
    assert renderer.render(stage, 7).tobytes() == a.tobytes()


def test_output_is_12_bit_and_noise_matches_the_model(beamline, small_camera, renderer):
    stage = _centre_stage(beamline)
    frames = np.stack([renderer.render(stage, i).astype(float) for i in range(12)])
    clean = renderer.render(stage, 0, noise=False).astype(float)
    assert frames.max() <= 4095
    o = small_camera
    electrons = (clean - o.offset_dn) / o.gain_dn_per_e
    expected_var = o.gain_dn_per_e**2 * (electrons + o.read_noise_e**2) + 1 / 12  # + rounding
    measured_var = frames.var(axis=0, ddof=1)
    ratio = measured_var.mean() / expected_var.mean()
    assert 0.95 < ratio < 1.05
    # unbiased: the noise averages out to the noise-free frame (standard error ~0.006 sigma)
    assert abs((frames.mean(axis=0) - clean).mean()) < 0.03 * np.sqrt(expected_var.mean())


def _marker_pixel(renderer, stage, marker):
    to_px = invert(renderer.pixel_to_sample(stage))
    guess = apply(to_px, (marker.x, marker.y))
    image = np.mean([renderer.render(stage, i).astype(float) for i in range(4)], axis=0)
    radius = int(np.ceil(marker.extent() / renderer.optics.zooms[renderer.optics.zoom].pixel_size_um)) + 4
    return np.array(window_centroid(image, *guess, radius))


@pytest.mark.parametrize("zoom", ["mid", "high"])
def test_camera_pixel_maps_to_stage_by_the_public_rule(beamline, small_camera, zoom):
    """Measured on rendered frames: the centroid p of a symmetric marker (a cross) in a frame
    taken at S must satisfy S + A (p - b) = sample_to_stage(marker centre)."""
    optics = CameraOptics.model_validate({**small_camera.model_dump(), "zoom": zoom})
    r = CameraRenderer(beamline.sample, beamline.mounting, optics, seed=1)
    a = camera_calibration(optics, beamline.mounting, zoom)
    b = np.array(optics.beam())
    to_stage = sample_to_stage(beamline.sample, beamline.mounting)
    pixel_mm = optics.zooms[zoom].pixel_size_um / 1000
    for cross in [m for m in beamline.sample.markers if m.shape == "cross" and m.angle_deg == 0.0]:
        target = apply(to_stage, (cross.x, cross.y))
        for shift in ((0.0, 0.0), (0.03, -0.02), (-0.025, 0.035)):
            stage = (target[0] + shift[0], target[1] + shift[1])
            p = _marker_pixel(r, stage, cross)
            predicted = np.asarray(stage) + a @ (p - b)
            assert np.hypot(*(predicted - target)) < 0.1 * pixel_mm


def test_calibration_sign_follows_the_geometry():
    """No rotation, no flip: moving the stage +x moves features to -x in the image, so A
    has a negative diagonal; a flipped camera mirrors the x column."""
    plain = camera_calibration(CameraOptics(), Mounting())
    assert np.allclose(plain, -np.eye(2) * 0.55e-3)
    flipped = camera_calibration(CameraOptics(flip_x=True), Mounting())
    assert np.allclose(flipped, np.diag([0.55e-3, -0.55e-3]))
    rotated = camera_calibration(CameraOptics(rotation_deg=3.0), Mounting(rotation_deg=2.0))
    assert np.isclose(np.degrees(np.arctan2(rotated[1, 0], rotated[0, 0])) % 360, 183.0)


def test_single_cubes_are_invisible_agglomerates_and_markers_visible(beamline, small_camera, renderer):
    sample = beamline.sample
    from scipy.spatial import cKDTree

    pts = np.column_stack([sample.x, sample.y])
    crowd = np.array([len(v) for v in cKDTree(pts).query_ball_point(pts, 1.0)])
    stage = _centre_stage(beamline)
    clean = renderer.render(stage, 0, noise=False).astype(float)
    noisy = renderer.render(stage, 1).astype(float)
    sigma = (noisy - clean).std()
    to_px = invert(renderer.pixel_to_sample(stage))
    background = np.median(clean)

    def contrast(x, y):
        px, py = np.round(apply(to_px, (x, y))).astype(int)
        if not (2 <= px < 510 and 2 <= py < 510):
            return None
        return clean[py - 1:py + 2, px - 1:px + 2].max() - background

    lonely = [contrast(x, y) for x, y, c in zip(sample.x, sample.y, crowd, strict=True) if c == 1]
    crowded = [contrast(x, y) for x, y, c in zip(sample.x, sample.y, crowd, strict=True) if c > 100]
    lonely = [v for v in lonely if v is not None]
    crowded = [v for v in crowded if v is not None]
    assert lonely and crowded
    assert np.median(lonely) < 0.5 * sigma
    assert max(crowded) > 5 * sigma
    cross = next(m for m in sample.markers if m.shape == "cross")
    assert contrast(cross.x, cross.y) > 20 * sigma


def test_zoom_changes_the_pixel_size(beamline, small_camera):
    r = CameraRenderer(beamline.sample, beamline.mounting, small_camera)
    stage = _centre_stage(beamline)
    for zoom, size in (("low", 1.1), ("mid", 0.55), ("high", 0.275)):
        m = r.pixel_to_sample(stage, zoom)
        assert np.isclose(np.sqrt(abs(np.linalg.det(m[:2, :2]))), size)
    with pytest.raises(Exception, match="zoom"):
        r.render(stage, 0, zoom="ultra")


def test_beam_pixel_shows_the_sample_point_in_the_beam(beamline, renderer):
    stage = (0.1, -0.2)
    q = apply(renderer.pixel_to_sample(stage), np.array(renderer.optics.beam()))
    assert np.allclose(apply(sample_to_stage(beamline.sample, beamline.mounting), q), stage)


def test_features_of_the_default_sem_field_are_visible_in_the_camera(beamline, renderer):
    """SEM <-> camera registration needs shared features: every marker and agglomerate inside
    the default SEM field (82 µm around the centre) must stand out in a camera frame."""
    from simulation.sem import sem_pixel_to_sample

    sample, sem = beamline.sample, beamline.sem
    corners = apply(sem_pixel_to_sample(sample, sem), np.array([[0, 0], [sem.width - 1, sem.height - 1]]))
    lo, hi = corners.min(axis=0) + 3, corners.max(axis=0) - 3
    stage = _centre_stage(beamline)
    clean = renderer.render(stage, 0, noise=False).astype(float)
    sigma = (renderer.render(stage, 1).astype(float) - clean).std()
    to_px = invert(renderer.pixel_to_sample(stage))
    background = np.median(clean)

    def peak(x, y):
        px, py = np.round(apply(to_px, (x, y))).astype(int)
        return clean[py - 3:py + 4, px - 3:px + 4].max() - background

    markers = [m for m in sample.markers if np.all((lo < (m.x, m.y)) & ((m.x, m.y) < hi))]
    assert len(markers) >= 3
    assert all(peak(m.x, m.y) > 20 * sigma for m in markers)
    from scipy.spatial import cKDTree

    pts = np.column_stack([sample.x, sample.y])
    crowd = np.array([len(v) for v in cKDTree(pts).query_ball_point(pts, 0.7)])
    inside = np.all((lo < pts) & (pts < hi), axis=1)
    cores = pts[inside & (crowd > 80)]
    assert len(cores) > 0
    assert max(peak(x, y) for x, y in cores) > 5 * sigma


def test_concurrent_renderers_stay_deterministic(beamline, small_camera):
    from concurrent.futures import ThreadPoolExecutor

    stage = _centre_stage(beamline)
    renderers = [CameraRenderer(beamline.sample, beamline.mounting, small_camera, seed=k) for k in range(3)]
    expected = [r.render(stage, 2).tobytes() for r in renderers]
    with ThreadPoolExecutor(3) as pool:
        for _ in range(5):
            got = list(pool.map(lambda r: r.render(stage, 2).tobytes(), renderers))
            assert got == expected
