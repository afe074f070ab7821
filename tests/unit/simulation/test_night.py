"""The night's effects of the virtual beamline, each measured the way the workflow would see it:
simulated clock, sample and beam drift, beam intensity, imperfect optics and SEM scan, truth."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from servers.common.errors import BadArgument
from simulation.camera import (
    CameraRenderer,
    camera_calibration,
    camera_lab_matrix,
    camera_pixel_to_sample,
    illumination_field,
)
from simulation.clock import SimClock
from simulation.config import (
    CameraOptics,
    OpticalPath,
    SemGeometry,
    VirtualBeamline,
    beamline_from_json,
    default_beamline,
    night_beamline,
)
from simulation.drift import Timelines, stage_offset_mm
from simulation.generate import isolated_mask
from simulation.geometry import apply, invert
from simulation.mounting import sample_to_stage
from simulation.optics import parallax_shift_um, undistort_pixel
from simulation.pool_link import count_at
from simulation.ring_schedule import RingSchedule, night_of
from simulation.runtime import SimulatedBeamline
from simulation.sem import render_sem, scan_nonlinearity_px, sem_nominal_pixel_to_sample, sem_pixel_to_sample
from simulation.truth import truth
from simulation.xrf import XrfDetector
from tests.unit.simulation.conftest import scattered_cubes, window_centroid

HOUR = 3600.0


@pytest.fixture(scope="module")
def night() -> VirtualBeamline:
    return night_beamline(11)


def _with(beamline: VirtualBeamline, **sections) -> VirtualBeamline:
    """A copy of the beamline with some settings sections updated (dicts of fields)."""
    data = beamline.to_json()
    for key, update in sections.items():
        data[key] = {**data[key], **update}
    return beamline_from_json(json.loads(json.dumps(data)))


def _small(optics: CameraOptics) -> CameraOptics:
    return optics.model_copy(update={"width": 512, "height": 512, "beam_px": None, "beam_px_calibrated": None})


def _shift_px(a: np.ndarray, b: np.ndarray, optics: CameraOptics, margin: int = 40) -> np.ndarray:
    """Translation d (px) with b(p) = a(p - d), by Gauss-Newton on the flat-fielded noise-free
    frames (the illumination is fixed in the camera and would pull a correlation to 0;
    cv2.phaseCorrelate's sub-pixel peak is biased by ~0.2 px here, this is good to ~0.03 px)."""
    illumination = illumination_field(optics)
    a, b = ((img.astype(np.float32) - np.float32(optics.offset_dn)) / illumination for img in (a, b))
    h, w = a.shape
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    inner = (slice(margin, h - margin), slice(margin, w - margin))
    d = np.zeros(2)
    for _ in range(30):
        moved = cv2.remap(a, xx - np.float32(d[0]), yy - np.float32(d[1]), cv2.INTER_CUBIC)
        gx = cv2.Sobel(moved, cv2.CV_32F, 1, 0, ksize=3)[inner].ravel() / 8
        gy = cv2.Sobel(moved, cv2.CV_32F, 0, 1, ksize=3)[inner].ravel() / 8
        step = np.linalg.lstsq(-np.column_stack([gx, gy]), (b - moved)[inner].ravel(), rcond=None)[0]
        d += step
        if np.abs(step).max() < 1e-4:
            break
    return d


# ---------------------------------------------------------------------------- clock
def test_simulated_clock_runs_accelerated_from_the_epoch_and_stands_still_without_one() -> None:
    wall = [1000.0]
    clock = SimClock(acceleration=16.0, epoch_unix=1000.0, wall=lambda: wall[0])
    assert clock.now_s() == 0.0
    wall[0] = 1010.0
    assert clock.now_s() == pytest.approx(160.0)
    assert clock.unix_at(160.0) == pytest.approx(1010.0)
    assert SimClock(16.0, 2000.0, wall=lambda: 1000.0).now_s() == 0.0  # before the night: held at 0
    assert SimClock.from_beamline(default_beamline(1)).now_s() == 0.0  # today's world has no time
    bl = night_beamline(1, epoch_unix=500.0, acceleration=8.0)
    assert SimClock.from_beamline(bl, wall=lambda: 510.0).now_s() == pytest.approx(80.0)


# ---------------------------------------------------------------------------- defaults
def test_default_beamline_keeps_todays_kind_world() -> None:
    bl = default_beamline(5)
    timelines = Timelines(bl)
    t = np.linspace(0, 8 * HOUR, 50)
    assert np.all(timelines.stage_offset_mm(t) == 0.0) and np.all(timelines.camera_shift_mm(t) == 0.0)
    assert all(timelines.intensity(x) == 1.0 for x in t) and timelines.beam_off == []
    assert bl.camera.beam_calibrated() == bl.camera.beam()
    assert bl.optical_path == OpticalPath()
    assert np.allclose(sem_pixel_to_sample(bl.sample, bl.sem), sem_nominal_pixel_to_sample(bl.sample, bl.sem))


def test_night_beamline_keeps_the_mounting_round_trips_and_refuses_unknown_keys(night) -> None:
    assert night.mounting == default_beamline(11).mounting
    again = beamline_from_json(json.loads(json.dumps(night.to_json())))
    assert again.to_json() == night.to_json()
    assert night_beamline(11).to_json() == night.to_json()
    for section in ("clock", "drift", "beam_drift", "ring", "optical_path"):
        data = night.to_json()
        data[section] = {**data[section], "typo": 1}
        with pytest.raises(BadArgument, match=section):
            beamline_from_json(data)
    assert 0.010 <= night.stage.repeatability_mm * 1000 <= 0.030


# ---------------------------------------------------------------------------- drift
def test_sample_drift_is_thermal_plus_walk_plus_steps_and_deterministic(night) -> None:
    thermal_only = _with(night, drift={"random_walk_um_per_sqrt_h": 0.0, "step_um": 0.0})
    tl = Timelines(thermal_only)
    speed = np.linalg.norm(tl.sample_drift_um(600.0) - tl.sample_drift_um(0.0)) / (600.0 / HOUR)
    assert speed == pytest.approx(night.drift.thermal_um_per_h, rel=0.02)
    # the direction turns: after a quarter of the turn period the velocity is ~90 degrees away
    v0 = tl.sample_drift_um(60.0) - tl.sample_drift_um(0.0)
    quarter = night.drift.turn_period_h * HOUR / 4
    v1 = tl.sample_drift_um(quarter + 60.0) - tl.sample_drift_um(quarter)
    assert abs(np.dot(v0, v1)) / (np.linalg.norm(v0) * np.linalg.norm(v1)) < 0.05
    # a step at the refill, the size of the setting
    steps_only = _with(night, drift={"random_walk_um_per_sqrt_h": 0.0, "thermal_um_per_h": 0.0})
    tls = Timelines(steps_only)
    refill = tls.refills[0]
    jump = np.linalg.norm(tls.sample_drift_um(refill + 10.0) - tls.sample_drift_um(refill - 10.0))
    assert jump == pytest.approx(night.drift.step_um, rel=1e-6)
    full = Timelines(night)
    t = np.linspace(0, 8 * HOUR, 97)
    assert np.array_equal(full.sample_drift_um(t), Timelines(night_beamline(11)).sample_drift_um(t))
    over_night = np.linalg.norm(full.stage_offset_mm(t) * 1e6, axis=1)
    assert 100 < over_night.max() < 2000  # a few hundred nm, as documented


def test_camera_sees_the_sample_drift_and_not_the_beam_drift(night) -> None:
    bl = _with(night, drift={"thermal_um_per_h": 10.0, "random_walk_um_per_sqrt_h": 0.0, "step_um": 0.0},
               beam_drift={"drift_um_per_h": 30.0}, optical_path=OpticalPath().model_dump())
    tl = Timelines(bl)
    now = [0.0]
    optics = _small(bl.camera)
    renderer = CameraRenderer(bl.sample, bl.mounting, optics, bl.seed, drift=lambda: tl.camera_shift_mm(now[0]))
    stage = tuple(bl.mounting.offset_mm)  # the field centre: guiding markers in view
    first = renderer.render(stage, noise=False)
    now[0] = 0.5 * HOUR
    second = renderer.render(stage, noise=False)
    measured = _shift_px(first, second, optics)
    # expected: the sample moved by d_s in the lab, the camera shows it at C^-1 d_s pixels
    d_s_mm = (tl.sample_drift_um(now[0]) - tl.sample_drift_um(0.0)) / 1000.0
    expected = np.linalg.solve(camera_lab_matrix(optics), d_s_mm)
    assert np.linalg.norm(expected) > 5  # a visible drift, 5 µm
    assert np.allclose(measured, expected, atol=0.05)
    # the beam drift alone: the camera does not move
    beam_only = _with(bl, drift={"thermal_um_per_h": 0.0})
    tlb = Timelines(beam_only)
    renderer_b = CameraRenderer(bl.sample, bl.mounting, optics, bl.seed, drift=lambda: tlb.camera_shift_mm(now[0]))
    now[0] = 0.0
    a = renderer_b.render(stage, noise=False)
    now[0] = 0.5 * HOUR
    assert np.array_equal(a, renderer_b.render(stage, noise=False))


def _isolated_particle(bl: VirtualBeamline) -> np.ndarray:
    i = int(np.flatnonzero(isolated_mask(bl.sample, 2.0))[0])
    return np.array([bl.sample.x[i], bl.sample.y[i]])


def _xrf_centre(sim: SimulatedBeamline, wall: list[float], centre_mm: np.ndarray, half_nm: float = 300.0,
                step_nm: float = 30.0) -> np.ndarray:
    """A mesh scan through the simulated axes: Ce-L centroid above the background (stage mm)."""
    offsets = np.arange(-half_nm, half_nm + step_nm / 2, step_nm) * 1e-6
    points, counts = [], []
    for oy in offsets:
        for ox in offsets:
            target = centre_mm + (ox, oy)
            sim.x.move(float(target[0]))
            sim.y.move(float(target[1]))
            wall[0] += 10.0
            points.append(sim.true_stage())
            counts.append(sim.count(1.0)["Ce_L"])
    w = np.maximum(np.asarray(counts, float) - 5.0, 0.0) ** 2
    return (np.asarray(points) * w[:, None]).sum(axis=0) / w.sum()


def test_xrf_peak_is_where_truth_drift_says_with_sample_and_beam_drift(night) -> None:
    bl = _with(night, stage={"repeatability_mm": 0.0, "readback_noise_mm": 0.0, "backlash_mm": [0.0, 0.0]},
               drift={"thermal_um_per_h": 1.0}, beam_drift={"drift_um_per_h": 1.0},
               ring={"losses": 0, "refill_period_h": None, "lifetime_h": None})
    wall, sim_now = [0.0], [0.0]
    q = _isolated_particle(bl)
    home = apply(sample_to_stage(bl.sample, bl.mounting), q)
    sim = SimulatedBeamline(bl, start_mm=tuple(home), clock=lambda: wall[0], sim_time=lambda: sim_now[0])
    data = truth(bl)
    table_t = np.asarray(data["drift"]["t_s"])
    table = np.asarray(data["drift"]["stage_offset"])
    at_start = _xrf_centre(sim, wall, home)
    assert np.linalg.norm(at_start - home) * 1e6 < 10
    sim_now[0] = 2 * HOUR
    k = int(np.searchsorted(table_t, sim_now[0]))
    expected = home + table[k]
    assert np.linalg.norm(table[k]) * 1e6 > 500  # the peak really moved
    assert np.allclose(table[k], stage_offset_mm(bl, sim_now[0]))
    later = _xrf_centre(sim, wall, expected)
    assert np.linalg.norm(later - expected) * 1e6 < 10


def test_xrf_sees_the_beam_drift_that_the_camera_does_not(night) -> None:
    bl = _with(night, stage={"repeatability_mm": 0.0, "readback_noise_mm": 0.0, "backlash_mm": [0.0, 0.0]},
               drift={"thermal_um_per_h": 0.0, "random_walk_um_per_sqrt_h": 0.0, "step_um": 0.0},
               beam_drift={"drift_um_per_h": 1.0, "random_walk_um_per_sqrt_h": 0.0},
               ring={"losses": 0, "refill_period_h": None, "lifetime_h": None})
    wall, sim_now = [0.0], [2 * HOUR]
    home = apply(sample_to_stage(bl.sample, bl.mounting), _isolated_particle(bl))
    sim = SimulatedBeamline(bl, start_mm=tuple(home), clock=lambda: wall[0], sim_time=lambda: sim_now[0])
    tl = Timelines(bl)
    assert np.all(tl.camera_shift_mm(sim_now[0]) == 0.0)  # the camera sees nothing of it
    gamma = np.radians(bl.mounting.nonorthogonality_deg)
    n = np.array([[1.0, -np.sin(gamma)], [0.0, np.cos(gamma)]])
    moved = np.linalg.solve(n, tl.beam_drift_um(sim_now[0]) / 1000.0)  # N^-1 d_b, stage mm
    assert np.linalg.norm(moved) * 1e6 > 1500  # 2 µm in 2 h
    found = _xrf_centre(sim, wall, home + moved)
    assert np.linalg.norm(found - (home + moved)) * 1e6 < 10


# ---------------------------------------------------------------------------- intensity
def test_counts_follow_the_intensity_and_are_zero_in_a_loss(night) -> None:
    tl = Timelines(night)
    xrf = XrfDetector(night.sample, night.mounting, night.xrf, seed=3)
    q = _isolated_particle(night)
    loss_start, loss_end = next((s, e) for s, e in tl.beam_off if s not in tl.refills)
    home = apply(sample_to_stage(night.sample, night.mounting), q)

    def on_particle(t: float) -> tuple[float, float]:  # the beam on the particle at t
        return tuple(home + tl.stage_offset_mm(t))

    assert count_at(xrf, tl, on_particle(loss_start + 1.0), loss_start + 1.0, 1.0) == {"Ce_L": 0, "Pt_L": 0}
    assert tl.intensity(loss_end + 1.0) == pytest.approx(1.0, abs=1e-3)  # back at full current after a loss
    assert tl.intensity(tl.refills[0] - 1.0) == pytest.approx(np.exp(-night.ring.refill_period_h
                                                                        / night.ring.lifetime_h), rel=1e-3)
    decayed = tl.refills[0] - 1.0
    counts = [count_at(xrf, tl, on_particle(decayed), decayed, 1.0)["Ce_L"] for _ in range(30)]
    full = [count_at(xrf, tl, on_particle(1.0), 1.0, 1.0)["Ce_L"] for _ in range(30)]
    assert np.mean(counts) / np.mean(full) == pytest.approx(tl.intensity(decayed), rel=0.05)


def test_ring_current_follows_the_same_timeline(tmp_path, night) -> None:
    path = tmp_path / "beamline.json"
    bl = night_beamline(11, epoch_unix=0.0, acceleration=1.0)
    bl.save(path)
    intensity, sim_time = night_of(str(path))
    assert sim_time() > 1e9  # epoch 0, acceleration 1: the Unix time
    tl = Timelines(bl)
    ring = RingSchedule(100.0, [(5.0, 5.0)], started=0.0, intensity=lambda: tl.intensity(tl.refills[0] - 1.0))
    assert ring.current(1.0) == pytest.approx(100.0 * tl.intensity(tl.refills[0] - 1.0))
    assert ring.current(6.0) == 0.0  # a scheduled (wall-clock) loss still holds
    lost = RingSchedule(100.0, [], started=0.0, intensity=lambda: tl.intensity(tl.beam_off[0][0] + 1.0))
    assert lost.current(0.0) == 0.0


# ---------------------------------------------------------------------------- optics
def test_parallax_shifts_the_camera_view_by_a_few_hundred_nm(night) -> None:
    path = night.optical_path
    flat = path.model_copy(update={"distortion_k1": 0.0, "defocus_sigma_um": 0.0})
    optics = _small(night.camera)
    stage = tuple(night.mounting.offset_mm)
    ideal = CameraRenderer(night.sample, night.mounting, optics, night.seed).render(stage, noise=False)
    seen = CameraRenderer(night.sample, night.mounting, optics, night.seed, path=flat).render(stage, noise=False)
    measured = _shift_px(ideal, seen, optics)
    shift_um = parallax_shift_um(path, night.sample, np.array(night.sample.centre))
    expected = np.linalg.solve(camera_lab_matrix(optics), shift_um / 1000.0)
    assert 100 < np.linalg.norm(shift_um) * 1000 < 1000
    assert np.allclose(measured, expected, atol=0.05)


def test_camera_registration_alone_lands_a_few_hundred_nm_off() -> None:
    """A perfect camera registration (the particle's true camera pixel, distortion included)
    with the calibrated beam pixel: where X = S + A (p - b_cal) sends the stage, against the
    truth at the night's start. Parallax and calibration error are independent random
    vectors, so on some nights they partly cancel: the claim is about the typical night."""
    errors = []
    for seed in range(1, 13):
        bl = night_beamline(seed)
        to_stage = sample_to_stage(bl.sample, bl.mounting)
        a_mm_per_px = camera_calibration(bl.camera, bl.mounting)
        for q in (np.array(bl.sample.centre) + d for d in ((0, 0), (30, -20), (-35, 25))):
            stage = apply(to_stage, q)  # the particle under the beam, as after the coarse move
            ideal_px = apply(invert(camera_pixel_to_sample(bl.sample, bl.mounting, bl.camera, tuple(stage),
                                                           path=bl.optical_path)), q)
            p = ideal_px.copy()  # the camera pixel that shows q: invert the radial law by fixed point
            for _ in range(20):
                p = p + (ideal_px - undistort_pixel(bl.camera, bl.optical_path, p))
            landed = stage + a_mm_per_px @ (p - np.asarray(bl.camera.beam_calibrated()))
            errors.append(np.linalg.norm(landed - stage) * 1e6)
    assert 150 < np.median(errors) < 1000 and max(errors) < 1500, np.round(errors)


def test_defocus_blurs_and_distortion_moves_the_corners(night) -> None:
    optics = _small(night.camera)
    stage = tuple(night.mounting.offset_mm)
    sharp = CameraRenderer(night.sample, night.mounting, optics, night.seed).render(stage, noise=False)
    blurred = CameraRenderer(night.sample, night.mounting, optics, night.seed,
                             path=OpticalPath(defocus_sigma_um=1.0)).render(stage, noise=False)
    grad = [float(np.abs(np.diff(img.astype(float), axis=1)).sum()) for img in (sharp, blurred)]
    assert grad[1] < 0.8 * grad[0]
    path = OpticalPath(distortion_k1=0.01)
    corner = np.array([0.0, 0.0])
    centre = np.array([(optics.width - 1) / 2.0, (optics.height - 1) / 2.0])
    assert np.allclose(undistort_pixel(optics, path, corner) - centre, (corner - centre) * 1.01)
    assert np.allclose(undistort_pixel(optics, path, centre), centre)


# ---------------------------------------------------------------------------- SEM
def test_sem_scale_shear_and_nonlinearity_put_particles_where_the_model_says() -> None:
    rng = np.random.default_rng(4)
    sample = scattered_cubes(rng, 100, spacing_um=1.0)
    geometry = SemGeometry(pixel_size_um=0.02, width=640, height=640, noise=False, charging=0.0,
                           scale_error=(0.02, -0.015), shear_deg=0.3, nonlinearity=(0.01, 0.01))
    image = render_sem(sample, geometry, seed=1)
    truth_m = image.pixel_to_sample
    nominal = sem_nominal_pixel_to_sample(sample, geometry)
    assert np.linalg.norm(truth_m[:2, 0]) / np.linalg.norm(nominal[:2, 0]) == pytest.approx(1.02)
    assert image.pixel_size_um == geometry.pixel_size_um  # what the SEM says, not the truth
    affine_px = apply(invert(truth_m), np.column_stack([sample.x, sample.y]))
    inside = np.all((affine_px > 12) & (affine_px < 627), axis=1)
    deviation, residual = [], []
    for x, y in affine_px[inside]:
        # where the scan really shows it: p with p + dx(p) = affine pixel (fixed point)
        px, py = x, y
        for _ in range(20):
            dx, dy = scan_nonlinearity_px(geometry, np.array(px), np.array(py))
            px, py = x - float(dx), y - float(dy)
        cx, cy = window_centroid(image.image, px, py, 5)
        residual.append(np.hypot(cx - px, cy - py))
        deviation.append(np.hypot(px - x, py - y))
    assert max(residual) < 0.05
    assert max(deviation) > 0.5  # the non-linearity is there, beyond the affine truth
    # and it has no affine part over the field
    g = np.arange(geometry.width, dtype=float)
    dx, _ = scan_nonlinearity_px(geometry, g, np.zeros(1))
    design = np.column_stack([np.ones_like(g), g])
    coef, *_ = np.linalg.lstsq(design, dx, rcond=None)
    assert np.abs(coef).max() < 0.01 * np.abs(dx).max()


# ---------------------------------------------------------------------------- truth
def test_truth_has_the_drift_over_the_night(night) -> None:
    data = truth(night)
    t = np.asarray(data["drift"]["t_s"])
    assert t[0] == 0.0 and t[-1] == pytest.approx(night.clock.duration_h * HOUR)
    assert np.allclose(data["drift"]["stage_offset"], Timelines(night).stage_offset_mm(t))
    assert data["camera"]["beam_px"] != data["camera"]["beam_px_calibrated"]
    assert data["beam_off"] == [list(p) for p in Timelines(night).beam_off]
    json.dumps(data)


# ---------------------------------------------------------------------------- wiring
class _Motors:
    """A stage reader for the camera's sim source: fixed motor positions."""

    def __init__(self, x: float, y: float) -> None:
        self.names = ["samx", "samy"]
        self.values = {"samx": x, "samy": y}

    def read(self) -> dict[str, float | None]:
        return dict(self.values)


def test_camera_sim_source_and_pool_stage_run_on_the_files_night(tmp_path) -> None:
    """The CameraDS sim source and the Pool's shared stage, built from one beamline file
    whose night started 3 simulated hours ago: both apply that moment's drift."""
    import time

    from servers.CameraDS.simbuild import SimProperties, build_sim_source
    from simulation.pool_link import stage_for

    accel = 100.0
    bl = night_beamline(7, epoch_unix=time.time() - 3 * HOUR / accel, acceleration=accel)
    path = tmp_path / "beamline.json"
    bl.save(path)
    tl, clock = Timelines(bl), SimClock.from_beamline(bl)
    source = build_sim_source("sim", SimProperties(beamline=str(path)), _Motors(*bl.mounting.offset_mm))
    assert source.renderer.path == bl.optical_path
    before = clock.now_s()
    shift = source.renderer.drift()
    after = clock.now_s()
    assert before > 3 * HOUR - 1 and np.linalg.norm(shift) > 0
    # the drift at a moment between the two clock reads, microseconds apart (~10 nm per wall second here)
    assert np.allclose(shift, tl.camera_shift_mm(0.5 * (before + after)), atol=1e-7)
    stage = stage_for(str(path))
    assert stage.clock == clock.__class__.from_beamline(bl, wall=stage.clock.wall)
    t = clock.now_s()
    assert np.allclose(stage.timelines.stage_offset_mm(t), tl.stage_offset_mm(t))
