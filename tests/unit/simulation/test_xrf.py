"""XRF counter: a simulated mesh scan over an isolated particle finds it to < 10 nm."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit

from servers.common.errors import BadArgument
from simulation.config import XrfSettings, default_beamline
from simulation.generate import isolated_mask
from simulation.geometry import apply
from simulation.mounting import sample_to_stage
from simulation.xrf import XrfDetector


def _gauss2d(p, amplitude, x0, y0, sigma, background):
    return amplitude * np.exp(-((p[0] - x0) ** 2 + (p[1] - y0) ** 2) / (2 * sigma**2)) + background


def _mesh_scan_centre(detector, centre_guess, half_nm=150.0, step_nm=15.0, dwell_s=0.1):
    """Call the counter point by point on a grid of stage positions, as a mesh scan would,
    then fit a 2-D Gaussian to the Ce-L counts."""
    offsets = np.arange(-half_nm, half_nm + step_nm / 2, step_nm) * 1e-6
    gx, gy = np.meshgrid(centre_guess[0] + offsets, centre_guess[1] + offsets)
    counts = np.array([detector.counts(x, y, dwell_s)["Ce_L"] for x, y in zip(gx.ravel(), gy.ravel(), strict=True)],
                      float)
    start = [counts.max(), gx.ravel()[counts.argmax()], gy.ravel()[counts.argmax()], 50e-6, 1.0]
    params, _ = curve_fit(_gauss2d, (gx.ravel(), gy.ravel()), counts, p0=start)
    return np.array(params[1:3]), counts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mesh_scan_over_isolated_particles_finds_them_within_10_nm(seed):
    beamline = default_beamline(seed)
    detector = XrfDetector(beamline.sample, beamline.mounting, beamline.xrf, seed=seed)
    to_stage = sample_to_stage(beamline.sample, beamline.mounting)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(np.flatnonzero(isolated_mask(beamline.sample, 2.0)), 6, replace=False)
    for i in chosen:
        truth = apply(to_stage, (beamline.sample.x[i], beamline.sample.y[i]))
        # the scan is centred where the workflow *thinks* the particle is: up to 40 nm off
        guess = truth + rng.uniform(-40e-6, 40e-6, 2)
        found, counts = _mesh_scan_centre(detector, guess)
        error_nm = np.hypot(*(found - truth)) * 1e6
        assert error_nm < 10.0, f"particle {i}: {error_nm:.2f} nm"
        assert counts.max() > 100


def test_counts_are_poisson_with_the_expected_rate(beamline):
    detector = XrfDetector(beamline.sample, beamline.mounting, beamline.xrf, seed=0)
    i = int(np.flatnonzero(isolated_mask(beamline.sample, 2.0))[0])
    stage = apply(sample_to_stage(beamline.sample, beamline.mounting), (beamline.sample.x[i], beamline.sample.y[i]))
    ce_rate, _ = detector.expected_rates(np.array([stage]))
    counts = np.array([detector.counts(stage[0], stage[1], 0.05)["Ce_L"] for _ in range(2000)])
    expected = ce_rate[0] * 0.05
    assert abs(counts.mean() - expected) < 4 * np.sqrt(expected / 2000)
    assert 0.85 < counts.var() / expected < 1.15
    # a 50 nm cube centred in the beam gives the reference rate, scaled by its size
    assert np.isclose(ce_rate[0] - beamline.xrf.ce_background_cps,
                      beamline.xrf.ce_cps_reference * beamline.sample.d[i] / 0.05, rtol=0.25)


def test_pt_lights_up_on_markers_only(beamline):
    detector = XrfDetector(beamline.sample, beamline.mounting, XrfSettings(), seed=0)
    to_stage = sample_to_stage(beamline.sample, beamline.mounting)
    square = next(m for m in beamline.sample.markers if m.shape == "square")
    on = apply(to_stage, (square.x, square.y))
    off = apply(to_stage, (square.x + 20, square.y + 20))
    _, pt = detector.expected_rates(np.array([on, off]))
    assert np.isclose(pt[0], XrfSettings().pt_cps_full + XrfSettings().pt_background_cps, rtol=1e-3)
    assert np.isclose(pt[1], XrfSettings().pt_background_cps)


def test_map_matches_point_counts_in_expectation(beamline):
    detector = XrfDetector(beamline.sample, beamline.mounting, beamline.xrf, seed=0)
    xs = np.linspace(-0.01, 0.01, 7)
    ys = np.linspace(-0.01, 0.01, 5)
    maps = detector.map(xs, ys, 0.1)
    assert maps["Ce_L"].shape == (5, 7) and maps["Pt_L"].shape == (5, 7)
    with pytest.raises(BadArgument):
        detector.counts(0.0, 0.0, 0.0)


def test_same_seed_same_counts(beamline):
    a = XrfDetector(beamline.sample, beamline.mounting, beamline.xrf, seed=3)
    b = XrfDetector(beamline.sample, beamline.mounting, beamline.xrf, seed=3)
    seq_a = [a.counts(0.001 * k, 0.0, 0.1) for k in range(20)]
    seq_b = [b.counts(0.001 * k, 0.0, 0.1) for k in range(20)]
    assert seq_a == seq_b
