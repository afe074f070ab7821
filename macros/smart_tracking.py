"""What the night loop knows about where its targets really are: drift tracking and scan sizing.

Plain Python (numpy only), so it is unit-tested without a MacroServer
(``tests/unit/macros/test_smart_tracking.py``); the loops in ``smart_macros.py`` and
``smart_queue_macros.py`` call it.

**Drift.** Every particle scan measures where its particle really is: the Ce-map centre
minus the mapped (uncorrected) target is one measurement of how far sample and beam have
moved against each other since the mapping was made (plus that target's own mapping error,
which the measurement noise includes). :class:`DriftTracker` is a Kalman filter over time
with a constant-velocity model (state: offset x, y in um and its rate in um/s) and white
acceleration plus a random walk as process noise: a real sample drifts smoothly (a few tenths
of a um per hour, slowly turning) with a random walk on top. Its prediction corrects the next
targets; a measurement farther from the prediction than ``jump_sigma`` (Mahalanobis distance)
is a *jump* (a step of the sample, a refill): the filter restarts from that measurement with
a wide uncertainty and the loop re-aligns before going on. The whole state is a plain dict
(:meth:`DriftTracker.to_plain`), kept in the Sardana environment after every update, so a
killed MacroServer resumes with it.

**Scan size.** A mesh must contain the particle: its half width follows what we know about
the target, ``k`` times the 1-sigma radial error of the mapping at the target (CoordMapperDS
``Map`` uncertainty) combined with the drift estimate's, within the user's limits
(:func:`sized_half_width`): small when we are sure, larger after a jump.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

HOUR_S = 3600.0

DEFAULT_DRIFT_MODEL = {
    "velocity_um_per_h": 0.5,
    "acceleration_um_per_h2": 0.3,
    "random_walk_um_per_sqrt_h": 0.05,
    "centre_sigma_um": 0.03,
    "initial_sigma_um": 0.03,
}
"""The tracker's prior and process noise (``SmartDriftModel`` overrides any of them):
``velocity_um_per_h`` the 1-sigma drift rate before anything is measured (thermal drift of a
few tenths of a um per hour); ``acceleration_um_per_h2`` how fast that rate turns (1 sigma per
hour); ``random_walk_um_per_sqrt_h`` the random walk on top; ``centre_sigma_um`` the 1-sigma
error per axis of one Ce-map centre (stage repeatability of 10-30 nm plus the peak fit);
``initial_sigma_um`` how well the offset is known right after an alignment."""

DEFAULT_JUMP_SIGMA = 5.0
"""A measurement this many sigma (Mahalanobis distance, 2-D) from the prediction is a jump:
under the filter's own model a false alarm happens once in ~270 000 scans."""

STATE_VERSION = 1


class DriftTracker:
    """Constant-velocity Kalman filter of the sample/beam offset (um, seconds of the clock)."""

    def __init__(self, model: Mapping[str, float] | None = None, jump_sigma: float = DEFAULT_JUMP_SIGMA,
                 started: float | None = None) -> None:
        self.model = {**DEFAULT_DRIFT_MODEL, **{k: float(v) for k, v in (model or {}).items()
                                                 if k in DEFAULT_DRIFT_MODEL}}
        for key, value in self.model.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"drift model {key} = {value}: give a finite number >= 0")
        if not (math.isfinite(jump_sigma) and jump_sigma > 0):
            raise ValueError(f"jump_sigma = {jump_sigma}: give a number > 0")
        self.jump_sigma = float(jump_sigma)
        self.reset(started)

    # ----------------------------------------------------------------- state
    def reset(self, at: float | None) -> None:
        """Offset zero, as right after an alignment made at ``at`` (None: at the first update)."""
        position = self.model["initial_sigma_um"] ** 2
        velocity = (self.model["velocity_um_per_h"] / HOUR_S) ** 2
        self.x = np.zeros(4)
        self.p = np.diag([position, position, velocity, velocity])
        self.t = None if at is None else float(at)
        self.updates = 0
        self.jumps = 0

    def to_plain(self) -> dict[str, Any]:
        """JSON/pickle-safe state (the Sardana environment keeps it across a MacroServer kill)."""
        return {"version": STATE_VERSION, "x": self.x.tolist(), "p": self.p.tolist(), "t": self.t,
                "updates": self.updates, "jumps": self.jumps, "model": dict(self.model),
                "jump_sigma": self.jump_sigma}

    @classmethod
    def from_plain(cls, data: Any, model: Mapping[str, float] | None = None,
                   jump_sigma: float = DEFAULT_JUMP_SIGMA) -> DriftTracker:
        """The tracker stored by :meth:`to_plain`; a fresh one when ``data`` is missing or damaged.
        ``model``/``jump_sigma`` given now win over the stored ones (the user changed them)."""
        tracker = cls(model, jump_sigma)
        if not isinstance(data, Mapping) or data.get("version") != STATE_VERSION:
            return tracker
        try:
            x, p = np.asarray(data["x"], float), np.asarray(data["p"], float)
            t = None if data.get("t") is None else float(data["t"])
        except (KeyError, TypeError, ValueError):
            return tracker
        if x.shape != (4,) or p.shape != (4, 4) or not (np.isfinite(x).all() and np.isfinite(p).all()):
            return tracker
        tracker.x, tracker.p, tracker.t = x, (p + p.T) / 2, t
        tracker.updates, tracker.jumps = int(data.get("updates", 0)), int(data.get("jumps", 0))
        return tracker

    # ------------------------------------------------------------ prediction
    def _propagate(self, at: float) -> tuple[np.ndarray, np.ndarray]:
        if self.t is None:
            return self.x.copy(), self.p.copy()
        dt = max(0.0, float(at) - self.t)
        transition = np.eye(4)
        transition[0, 2] = transition[1, 3] = dt
        acceleration = (self.model["acceleration_um_per_h2"] / HOUR_S**2) ** 2 * HOUR_S  # um^2/s^3
        walk = self.model["random_walk_um_per_sqrt_h"] ** 2 / HOUR_S  # um^2/s
        block = acceleration * np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]])
        noise = np.zeros((4, 4))
        for axis in (0, 1):
            index = [axis, axis + 2]
            noise[np.ix_(index, index)] = block
            noise[axis, axis] += walk * dt
        return transition @ self.x, transition @ self.p @ transition.T + noise

    def predict(self, at: float) -> tuple[np.ndarray, np.ndarray]:
        """Offset (um, x and y) expected at ``at`` and its 2x2 covariance; changes nothing."""
        x, p = self._propagate(at)
        return x[:2].copy(), p[:2, :2].copy()

    def sigma_um(self, at: float) -> float:
        """1-sigma radial error (sqrt of the trace) of the predicted offset at ``at``."""
        return float(math.sqrt(max(np.trace(self.predict(at)[1]), 0.0)))

    # ---------------------------------------------------------------- update
    def update(self, at: float, measured_um: Any, extra_sigma_um: float = 0.0) -> dict[str, Any]:
        """Take one measured offset (um) at ``at``; ``extra_sigma_um`` is the target's own
        mapping error (radial 1 sigma) on top of the centre's. Returns what happened
        (``innovation_um``, ``mahalanobis``, ``jump``, the new estimate) for the event log."""
        z = np.asarray(measured_um, float)
        if z.shape != (2,) or not np.isfinite(z).all():
            raise ValueError(f"a drift measurement is two finite numbers (um), got {measured_um!r}")
        predicted, covariance = self._propagate(at)
        per_axis = self.model["centre_sigma_um"] ** 2 + float(extra_sigma_um) ** 2 / 2.0
        noise = per_axis * np.eye(2)
        innovation = z - predicted[:2]
        s = covariance[:2, :2] + noise
        distance = float(math.sqrt(max(innovation @ np.linalg.solve(s, innovation), 0.0)))
        jump = distance > self.jump_sigma
        if jump:
            # a step: start again from the measurement, as unsure as the step was large
            position = noise + np.eye(2) * float(innovation @ innovation) / 4.0
            x = predicted.copy()
            x[:2] = z
            p = covariance.copy()
            p[:2, :] = 0.0
            p[:, :2] = 0.0
            p[:2, :2] = position
            p[2:, 2:] = covariance[2:, 2:] * 4.0
            self.jumps += 1
        else:
            gain = covariance[:, :2] @ np.linalg.inv(s)
            x = predicted + gain @ innovation
            keep = np.eye(4) - gain @ np.eye(2, 4)
            p = keep @ covariance @ keep.T + gain @ noise @ gain.T  # Joseph form: stays symmetric PSD
        self.x, self.p, self.t = x, (p + p.T) / 2, float(at)
        self.updates += 1
        return {"measured_um": z.tolist(), "predicted_um": predicted[:2].tolist(),
                "innovation_um": innovation.tolist(), "mahalanobis": distance, "jump": bool(jump),
                "estimate_um": self.x[:2].tolist(), "velocity_um_per_h": (self.x[2:] * HOUR_S).tolist(),
                "sigma_um": float(math.sqrt(max(np.trace(self.p[:2, :2]), 0.0))), "updates": self.updates}


def sized_half_width(map_sigma_um: float | None, drift_sigma_um: float, low_um: float, high_um: float,
                     k: float = 3.0, uncorrected_um: float = 0.0) -> float:
    """Half width (um) of a mesh that contains the particle with ``k``-sigma confidence.

    ``map_sigma_um``: the mapping's 1-sigma radial error at the target (None or NaN: unknown, so
    the largest allowed); ``drift_sigma_um``: the drift estimate's; ``uncorrected_um``: a drift
    known but not applied (correction off). Clipped to ``[low_um, high_um]``."""
    if not (0 < low_um <= high_um):
        raise ValueError(f"scan half width limits {low_um}..{high_um} um: give 0 < low <= high")
    if map_sigma_um is None or not math.isfinite(float(map_sigma_um)):
        return float(high_um)
    spread = math.sqrt(float(map_sigma_um) ** 2 + float(drift_sigma_um) ** 2)
    return float(min(max(k * spread + abs(float(uncorrected_um)), low_um), high_um))


def exposing_fraction(points: int, exposure_s: float, scan_s: float) -> float | None:
    """Share of a scan's wall time spent exposing (points x exposure / wall time), None when
    the scan took no measurable time."""
    if not (scan_s > 0 and math.isfinite(scan_s)):
        return None
    return float(points * exposure_s / scan_s)
