"""Drift tracking and scan sizing (macros/smart_tracking.py), without a MacroServer.

The simulated drifts are the night's: a smooth thermal drift of a few tenths of a um per
hour that slowly turns, a random walk on top, measured by one Ce-map centre per particle
(30 nm per axis) every ~40 s; errors are scored against the simulated truth.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from macros.smart_tracking import PROBE_FRAME, DriftTracker, exposing_fraction, sized_half_width


def night(rng: np.random.Generator, hours: float = 8.0, every_s: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """Times (s) and true offsets (um): 0.3 um/h turning by 0.25 rad per hour, plus a walk."""
    times = np.arange(0.0, hours * 3600.0, every_s)
    angle = 0.5 + 0.25 * times / 3600.0
    velocity = 0.3 / 3600.0 * np.column_stack([np.cos(angle), np.sin(angle)])
    walk = np.cumsum(rng.normal(0, 0.05 * math.sqrt(every_s / 3600.0), (len(times), 2)), axis=0)
    return times, np.cumsum(velocity * every_s, axis=0) + walk


def test_tracking_corrects_a_night_of_drift() -> None:
    rng = np.random.default_rng(1)
    times, truth = night(rng)
    tracker = DriftTracker(started=0.0)
    corrected, uncorrected = [], []
    for t, offset in zip(times, truth, strict=True):
        predicted, _ = tracker.predict(t)
        corrected.append(np.linalg.norm(offset - predicted))
        uncorrected.append(np.linalg.norm(offset))
        tracker.update(t, offset + rng.normal(0, 0.03, 2))
    # uncorrected: ~1 um median; corrected: median 15 nm, 95th percentile 31 nm (seed 1)
    assert np.median(uncorrected) > 1.0
    assert np.percentile(corrected, 95) < 0.1
    assert tracker.jumps == 0


def test_the_reported_sigma_covers_the_prediction_error() -> None:
    rng = np.random.default_rng(2)
    times, truth = night(rng, hours=4.0)
    tracker = DriftTracker(started=0.0)
    inside = []
    for t, offset in zip(times, truth, strict=True):
        predicted, covariance = tracker.predict(t)
        error = offset - predicted
        inside.append(error @ np.linalg.solve(covariance, error) <= 9.21)  # chi2(2) 99 %
        tracker.update(t, offset + rng.normal(0, 0.03, 2))
    assert np.mean(inside[20:]) > 0.9


def test_a_step_is_a_jump_the_filter_restarts_from_it_and_is_less_sure() -> None:
    rng = np.random.default_rng(3)
    tracker = DriftTracker(started=0.0)
    for k in range(30):
        tracker.update(40.0 * k, rng.normal(0, 0.03, 2))
    before = tracker.sigma_um(1200.0)
    step = np.array([0.6, -0.4])
    result = tracker.update(1200.0, step)
    assert result["jump"] and result["mahalanobis"] > 5
    np.testing.assert_allclose(result["estimate_um"], step)
    assert tracker.sigma_um(1240.0) > 3 * before
    # the next measurements near the new offset are no jump, and the filter settles again
    for k in range(1, 20):
        assert not tracker.update(1200.0 + 40.0 * k, step + rng.normal(0, 0.03, 2))["jump"]
    assert tracker.sigma_um(2000.0) < 2 * before


def test_state_survives_a_round_trip_through_json() -> None:
    rng = np.random.default_rng(4)
    tracker = DriftTracker(started=10.0)
    for k in range(5):
        tracker.update(10.0 + 40 * k, rng.normal(0.1, 0.03, 2))
    restored = DriftTracker.from_plain(json.loads(json.dumps(tracker.to_plain())))
    for at in (200.0, 5000.0):
        np.testing.assert_allclose(restored.predict(at)[0], tracker.predict(at)[0])
        np.testing.assert_allclose(restored.predict(at)[1], tracker.predict(at)[1])
    assert restored.updates == 5


@pytest.mark.parametrize("damaged", [None, "text", {"version": 99}, {"version": 1, "x": [1, 2], "p": []},
                                     {"version": 1, "x": [0, 0, 0, float("nan")], "p": np.eye(4).tolist()}])
def test_damaged_state_gives_a_fresh_tracker(damaged: object) -> None:
    tracker = DriftTracker.from_plain(damaged)
    assert tracker.updates == 0 and np.allclose(tracker.x, 0)


def test_bad_measurements_and_models_are_refused() -> None:
    with pytest.raises(ValueError):
        DriftTracker().update(0.0, [float("nan"), 0.0])
    with pytest.raises(ValueError):
        DriftTracker({"centre_sigma_um": -1.0})
    with pytest.raises(ValueError):
        DriftTracker(jump_sigma=0.0)


def test_scan_half_width_follows_what_is_known_within_the_limits() -> None:
    assert sized_half_width(0.01, 0.01, 0.15, 0.3) == 0.15          # sure: the smallest allowed
    assert sized_half_width(0.05, 0.05, 0.15, 0.3) == pytest.approx(3 * math.hypot(0.05, 0.05))
    assert sized_half_width(0.05, 0.5, 0.15, 0.3) == 0.3             # after a jump: the largest
    assert sized_half_width(None, 0.0, 0.15, 0.3) == 0.3             # unknown mapping error
    assert sized_half_width(float("nan"), 0.0, 0.15, 0.3) == 0.3
    assert sized_half_width(0.02, 0.02, 0.1, 1.0, uncorrected_um=0.4) == pytest.approx(0.4 + 3 * math.hypot(
        0.02, 0.02))
    with pytest.raises(ValueError):
        sized_half_width(0.01, 0.01, 0.3, 0.15)


def test_exposing_fraction() -> None:
    assert exposing_fraction(169, 0.01, 5.2) == pytest.approx(0.325, abs=1e-3)
    assert exposing_fraction(49, 0.01, 0.0) is None


def test_frames_aligned_at_different_times_get_each_their_own_correction() -> None:
    """Two SEM regions fine-aligned 20 min apart under a 0.45 um/h drift: each mapping holds the
    offset of its own alignment (150 nm apart). Scans of both, in blocks, are corrected for each
    frame's drift since its own alignment; a single offset reset at the last alignment would put
    every target of the first frame 150 nm and more off."""
    rng = np.random.default_rng(5)
    velocity = np.array([0.45, -0.1]) / 3600.0

    def offset(t: float) -> np.ndarray:
        return velocity * t

    aligned = {"tile1": 0.0, "tile2": 1200.0}
    tracker = DriftTracker(started=0.0)
    for frame, at in aligned.items():
        tracker.anchor(frame, at)
    errors, single = [], []
    for k in range(90):
        t = 1800.0 + 40.0 * k
        frame = "tile1" if (k // 15) % 2 == 0 else "tile2"
        since = offset(t) - offset(aligned[frame])
        predicted, covariance = tracker.predict(t, frame)
        errors.append(np.linalg.norm(predicted - since))
        if frame == "tile1":
            single.append(np.linalg.norm(offset(t) - offset(aligned["tile2"]) - since))
        result = tracker.update(t, since + rng.normal(0, 0.03, 2), 0.03, frame)
        assert not result["jump"]
    assert min(single) > 0.14                 # what one offset since the last alignment gets wrong
    assert np.median(errors[15:]) < 0.04 and max(errors[15:]) < 0.1
    assert tracker.jumps == 0
    # the anchors survive a MacroServer restart
    restored = DriftTracker.from_plain(json.loads(json.dumps(tracker.to_plain())))
    for frame in aligned:
        np.testing.assert_allclose(restored.predict(9000.0, frame)[0], tracker.predict(9000.0, frame)[0])
    # re-aligning a frame starts its correction again at zero, as sure as an alignment is
    tracker.anchor("tile1", 6000.0)
    assert np.linalg.norm(tracker.predict(6000.0, "tile1")[0]) < 1e-9
    assert tracker.sigma_um(6000.0, "tile1") == pytest.approx(0.03 * math.sqrt(2))
    assert np.linalg.norm(tracker.predict(6000.0, "tile2")[0]) > 0.5


def test_a_jump_of_an_anchored_frame_restarts_its_offset_at_the_measurement() -> None:
    rng = np.random.default_rng(6)
    tracker = DriftTracker(started=0.0)
    tracker.anchor("tile1", 0.0)
    tracker.anchor("tile2", 600.0)
    for k in range(20):
        tracker.update(1000.0 + 40 * k, rng.normal(0, 0.03, 2), 0.0, "tile2")
    step = np.array([0.5, 0.3])
    result = tracker.update(1800.0, step, 0.0, "tile2")
    assert result["jump"]
    np.testing.assert_allclose(tracker.predict(1800.0, "tile2")[0], step, atol=1e-9)
    assert not tracker.update(1840.0, step + rng.normal(0, 0.03, 2), 0.0, "tile2")["jump"]


def test_a_state_without_anchors_is_still_read() -> None:
    old = {"version": 1, "x": [0.1, 0.2, 0.0, 0.0], "p": (np.eye(4) * 1e-4).tolist(), "t": 5.0}
    tracker = DriftTracker.from_plain(old)
    np.testing.assert_allclose(tracker.predict(5.0)[0], [0.1, 0.2])
    assert tracker.anchors == {}
    assert DriftTracker.from_plain({**old, "version": 2, "anchors": {"a": 8}}).anchors == {}  # damaged


def test_a_probe_measured_twice_gives_the_drift_rate_before_any_target() -> None:
    """A particle measured at the start of the night's first fine alignment and again at the end
    of the second (35 min later) tells the rate: the first frame's first target, scanned 40 min
    after its alignment, is corrected for most of the 300 nm it drifted meanwhile."""
    rng = np.random.default_rng(7)
    velocity = np.array([0.4, 0.2]) / 3600.0
    tracker = DriftTracker(started=0.0)
    tracker.anchor(PROBE_FRAME, 100.0, 0.0)
    tracker.anchor("tile1", 400.0)
    tracker.update(700.0, velocity * 600.0 + rng.normal(0, 0.03, 2), 0.03 * math.sqrt(2), PROBE_FRAME)
    tracker.anchor("tile2", 1500.0)
    tracker.update(2200.0, velocity * 2100.0 + rng.normal(0, 0.03, 2), 0.03 * math.sqrt(2), PROBE_FRAME)
    tracker.forget(PROBE_FRAME)
    assert set(tracker.anchors) == {"tile1", "tile2"} and len(tracker.x) == 8
    since = velocity * (2800.0 - 400.0)
    predicted, _ = tracker.predict(2800.0, "tile1")
    assert np.linalg.norm(since) > 0.29
    assert np.linalg.norm(predicted - since) < 0.35 * np.linalg.norm(since)
    unprobed = DriftTracker(started=0.0)
    unprobed.anchor("tile1", 400.0)
    assert np.linalg.norm(unprobed.predict(2800.0, "tile1")[0] - since) > 0.29   # without: nothing known


def test_after_a_beam_outage_one_measurement_takes_the_step_in() -> None:
    """A 150 nm step of the sample when the beam comes back (a refill): told that the beam was off,
    the filter takes one measurement of the step (the drift probe) nearly in full, so the next
    target is corrected for it; not told, it averages the step away over many scans."""
    rng = np.random.default_rng(8)
    results = {}
    for told in (True, False):
        tracker = DriftTracker(started=0.0)
        tracker.anchor("tile1", 0.0)
        for k in range(20):
            tracker.update(40.0 * k, rng.normal(0, 0.03, 2), 0.03, "tile1")
        step = np.array([-0.15, 0.0])
        if told:
            tracker.step_possible(1000.0)
        update = tracker.update(1000.0, step, 0.0, "tile1")
        assert not update["jump"]
        results[told] = np.linalg.norm(tracker.predict(1040.0, "tile1")[0] - step)
    assert results[True] < 0.03 < 0.05 < results[False]
