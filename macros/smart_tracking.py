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
a wide uncertainty and the loop re-aligns before going on.

**One offset, several mappings.** A night fine-aligns every SEM region (frame) in turn, minutes
apart: each frame's mapping absorbed the offset of *its* alignment time. So the filter tracks one
offset for the whole beamline, and each fine-aligned frame keeps an *anchor*: a copy of the
offset state taken when that frame was aligned (:meth:`DriftTracker.anchor`, stochastic cloning,
so the anchor stays correlated with everything the filter learns later). A scan of a particle
of frame F measures the offset now minus F's anchor; the correction for F's next target is the
predicted offset minus that anchor. A frame without an anchor (mapped through the camera
registration) measures the offset since the last :meth:`DriftTracker.reset`. Without anchors a
filter reset at the last frame's alignment would apply the drift since *that* alignment to
every frame, wrong by the drift between the alignments. The whole state is a plain dict
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
    "step_um": 0.1,
}
"""The tracker's prior and process noise (``SmartDriftModel`` overrides any of them):
``velocity_um_per_h`` the 1-sigma drift rate before anything is measured (thermal drift of a
few tenths of a um per hour); ``acceleration_um_per_h2`` how fast that rate turns (1 sigma per
hour); ``random_walk_um_per_sqrt_h`` the random walk on top; ``centre_sigma_um`` the 1-sigma
error per axis of one Ce-map centre (stage repeatability of 10-30 nm plus the peak fit);
``initial_sigma_um`` how well the offset is known right after an alignment; ``step_um`` the 1-sigma
step (per axis) the sample may make when the beam comes back after an outage (a refill, a loss:
the heat load changes)."""

DEFAULT_JUMP_SIGMA = 5.0
"""A measurement this many sigma (Mahalanobis distance, 2-D) from the prediction is a jump:
under the filter's own model a false alarm happens once in ~270 000 scans."""

PROBE_FRAME = "~drift_probe"
"""The anchor of the night's drift probe: a particle measured once and again later (at the end of
every fine alignment), whose Ce centre moved by the drift in between: the drift rate is known
before the first target is scanned (``smart_fine_align``)."""

STATE_VERSION = 2
READ_VERSIONS = (1, 2)
"""States of these versions are read (1: without anchors)."""


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
        """Offset zero, as right after an alignment made at ``at`` (None: at the first update);
        every frame's anchor is dropped (a new registration replaces the mappings)."""
        position = self.model["initial_sigma_um"] ** 2
        velocity = (self.model["velocity_um_per_h"] / HOUR_S) ** 2
        self.x = np.zeros(4)
        self.p = np.diag([position, position, velocity, velocity])
        self.t = None if at is None else float(at)
        self.anchors: dict[str, int] = {}
        """Frame -> index of its anchor's first entry in the state (x, y)."""
        self.updates = 0
        self.jumps = 0

    def to_plain(self) -> dict[str, Any]:
        """JSON/pickle-safe state (the Sardana environment keeps it across a MacroServer kill)."""
        return {"version": STATE_VERSION, "x": self.x.tolist(), "p": self.p.tolist(), "t": self.t,
                "anchors": dict(self.anchors), "updates": self.updates, "jumps": self.jumps,
                "model": dict(self.model), "jump_sigma": self.jump_sigma}

    @classmethod
    def from_plain(cls, data: Any, model: Mapping[str, float] | None = None,
                   jump_sigma: float = DEFAULT_JUMP_SIGMA) -> DriftTracker:
        """The tracker stored by :meth:`to_plain`; a fresh one when ``data`` is missing or damaged.
        ``model``/``jump_sigma`` given now win over the stored ones (the user changed them)."""
        tracker = cls(model, jump_sigma)
        if not isinstance(data, Mapping) or data.get("version") not in READ_VERSIONS:
            return tracker
        try:
            x, p = np.asarray(data["x"], float), np.asarray(data["p"], float)
            t = None if data.get("t") is None else float(data["t"])
            anchors = {str(k): int(v) for k, v in (data.get("anchors") or {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            return tracker
        size = 4 + 2 * len(anchors)
        if x.shape != (size,) or p.shape != (size, size) or not (np.isfinite(x).all() and np.isfinite(p).all()):
            return tracker
        if sorted(anchors.values()) != list(range(4, size, 2)):
            return tracker
        tracker.x, tracker.p, tracker.t, tracker.anchors = x, (p + p.T) / 2, t, anchors
        tracker.updates, tracker.jumps = int(data.get("updates", 0)), int(data.get("jumps", 0))
        return tracker

    # ------------------------------------------------------------ prediction
    def _propagate(self, at: float) -> tuple[np.ndarray, np.ndarray]:
        """State and covariance at ``at``: the offset moves with its rate, the anchors stay."""
        if self.t is None:
            return self.x.copy(), self.p.copy()
        dt = max(0.0, float(at) - self.t)
        size = len(self.x)
        transition = np.eye(size)
        transition[0, 2] = transition[1, 3] = dt
        acceleration = (self.model["acceleration_um_per_h2"] / HOUR_S**2) ** 2 * HOUR_S  # um^2/s^3
        walk = self.model["random_walk_um_per_sqrt_h"] ** 2 / HOUR_S  # um^2/s
        block = acceleration * np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]])
        noise = np.zeros((size, size))
        for axis in (0, 1):
            index = [axis, axis + 2]
            noise[np.ix_(index, index)] = block
            noise[axis, axis] += walk * dt
        return transition @ self.x, transition @ self.p @ transition.T + noise

    def _observation(self, frame: str | None) -> np.ndarray:
        """2 x n: what a measurement of ``frame`` sees, the offset minus the frame's anchor."""
        h = np.zeros((2, len(self.x)))
        h[:, :2] = np.eye(2)
        slot = self.anchors.get(frame) if frame is not None else None
        if slot is not None:
            h[:, slot:slot + 2] = -np.eye(2)
        return h

    def anchor(self, frame: str, at: float, sigma_um: float | None = None) -> None:
        """``frame`` was (re-)aligned at ``at``: its mapping holds the offset of that moment, so
        its anchor becomes a copy of the offset then (with its covariance: cloned, not guessed),
        plus the alignment's own error, ``sigma_um`` per axis (default the model's
        ``initial_sigma_um``: how well the offset is known right after an alignment)."""
        at = float(at) if self.t is None else max(float(at), self.t)  # the filter does not run backwards
        x, p = self._propagate(at)
        size = len(x)
        slot = self.anchors.get(frame)
        rows = np.eye(size)
        if slot is None:
            slot, rows = size, np.vstack([rows, np.eye(2, size)])
        else:
            rows[slot:slot + 2] = np.eye(2, size)
        self.x, self.p, self.t = rows @ x, rows @ p @ rows.T, float(at)
        sigma = self.model["initial_sigma_um"] if sigma_um is None else float(sigma_um)
        self.p[slot:slot + 2, slot:slot + 2] += sigma**2 * np.eye(2)
        self.p = (self.p + self.p.T) / 2
        self.anchors[frame] = slot

    def step_possible(self, at: float, sigma_um: float | None = None) -> None:
        """The beam was off until ``at`` (a refill, a loss): the heat load changed and the sample
        may have stepped. The offset's uncertainty grows by ``sigma_um`` (default the model's
        ``step_um``) per axis, so the next measurement (the drift probe, a scan) takes the step
        in at once instead of averaging it away; the frames' anchors are not touched."""
        sigma = self.model["step_um"] if sigma_um is None else float(sigma_um)
        at = float(at) if self.t is None else max(float(at), self.t)
        self.x, self.p = self._propagate(at)
        self.t = at
        self.p[:2, :2] += sigma**2 * np.eye(2)

    def forget(self, frame: str) -> None:
        """Drop ``frame``'s anchor (marginalised out: the rest of the state keeps what it learned)."""
        slot = self.anchors.pop(frame, None)
        if slot is None:
            return
        keep = [i for i in range(len(self.x)) if i not in (slot, slot + 1)]
        self.x, self.p = self.x[keep], self.p[np.ix_(keep, keep)]
        self.anchors = {name: index - 2 if index > slot else index for name, index in self.anchors.items()}

    def predict(self, at: float, frame: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Offset (um, x and y) a target of ``frame`` has moved by since its mapping, expected at
        ``at``, and its 2x2 covariance; changes nothing."""
        x, p = self._propagate(at)
        h = self._observation(frame)
        return h @ x, h @ p @ h.T

    def sigma_um(self, at: float, frame: str | None = None) -> float:
        """1-sigma radial error (sqrt of the trace) of the predicted offset at ``at``."""
        return float(math.sqrt(max(np.trace(self.predict(at, frame)[1]), 0.0)))

    # ---------------------------------------------------------------- update
    def update(self, at: float, measured_um: Any, extra_sigma_um: float = 0.0,
               frame: str | None = None) -> dict[str, Any]:
        """Take one measured offset (um) of a target of ``frame`` at ``at`` (the Ce centre minus
        the frame's mapped target); ``extra_sigma_um`` is the target's own mapping error (radial
        1 sigma) on top of the centre's. Returns what happened (``innovation_um``,
        ``mahalanobis``, ``jump``, the new estimate) for the event log."""
        z = np.asarray(measured_um, float)
        if z.shape != (2,) or not np.isfinite(z).all():
            raise ValueError(f"a drift measurement is two finite numbers (um), got {measured_um!r}")
        state, covariance = self._propagate(at)
        h = self._observation(frame)
        predicted = h @ state
        per_axis = self.model["centre_sigma_um"] ** 2 + float(extra_sigma_um) ** 2 / 2.0
        noise = per_axis * np.eye(2)
        innovation = z - predicted
        s = h @ covariance @ h.T + noise
        distance = float(math.sqrt(max(innovation @ np.linalg.solve(s, innovation), 0.0)))
        jump = distance > self.jump_sigma
        size = len(state)
        if jump:
            # a step: the offset starts again from the measurement (the frame's anchor plus what
            # was measured), as unsure as the step was large; its rate is kept, less sure
            rows = np.eye(size)
            rows[:2] = 0.0                   # offset_new = the frame's anchor (or 0) + z + a fresh error
            slot = self.anchors.get(frame) if frame is not None else None
            if slot is not None:
                rows[:2, slot:slot + 2] = np.eye(2)
            x = rows @ state
            x[:2] += z
            p = rows @ covariance @ rows.T
            p[:2, :2] += noise + np.eye(2) * float(innovation @ innovation) / 4.0
            p[2:4, :] *= 2.0
            p[:, 2:4] *= 2.0
            self.jumps += 1
        else:
            gain = covariance @ h.T @ np.linalg.inv(s)
            x = state + gain @ innovation
            keep = np.eye(size) - gain @ h
            p = keep @ covariance @ keep.T + gain @ noise @ gain.T  # Joseph form: stays symmetric PSD
        self.x, self.p, self.t = x, (p + p.T) / 2, float(at)
        self.updates += 1
        estimate = h @ self.x
        return {"measured_um": z.tolist(), "predicted_um": predicted.tolist(),
                "innovation_um": innovation.tolist(), "mahalanobis": distance, "jump": bool(jump),
                "estimate_um": estimate.tolist(), "velocity_um_per_h": (self.x[2:4] * HOUR_S).tolist(),
                "sigma_um": float(math.sqrt(max(np.trace(h @ self.p @ h.T), 0.0))), "updates": self.updates,
                "frame": frame if frame in self.anchors else None}


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
