"""The night's timelines: sample drift, beam drift and beam intensity against simulated time.

Each is a deterministic function of (beamline settings, seed, simulated seconds): the
random parts are drawn once on a grid of :data:`GRID_S` simulated seconds over the night
(plus :data:`MARGIN_H`) from ``SeedSequence([seed, DRIFT_STREAM])`` and interpolated, so
every process that loads the same beamline file sees the same night, and the scorer can ask
for any instant. Beyond the grid the values hold their last state.

Frames (lab, beam at the origin at the night's start, see :mod:`simulation.mounting`):

- the **sample drift** ``d_s(t)`` (lab µm) moves the sample against the lab: the camera
  and the X-rays both see it;
- the **beam drift** ``d_b(t)`` (lab µm) moves the X-ray beam against the lab, i.e. against
  the camera, which does not see it.

The stage position that puts sample point ``q`` in the beam at time t is then
``sample_to_stage(q) + N^-1 (d_b(t) - d_s(t)) / 1000`` (``N`` the stage's motion matrix):
that offset is :meth:`Timelines.stage_offset_mm`, the ``drift`` of ``truth.json``.
"""

from __future__ import annotations

import math

import numpy as np

from simulation.config import VirtualBeamline
from simulation.mounting import stage_motion_matrix

DRIFT_STREAM = 0xD71F7
GRID_S = 10.0
"""Spacing of the precomputed grid, simulated seconds."""
MARGIN_H = 2.0
"""The grid runs this long past the night's planned duration."""
LOSS_WINDOW = (0.05, 0.95)
"""Beam losses start at random within this fraction of the night."""


def _interp(t: np.ndarray | float, grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``values`` (len(grid), 2) at ``t``; held at the ends."""
    tt = np.asarray(t, float)
    out = np.stack([np.interp(tt, grid, values[:, k]) for k in range(values.shape[1])], axis=-1)
    return out


class Timelines:
    """The precomputed night of one beamline (build once per process: ~1 ms)."""

    def __init__(self, beamline: VirtualBeamline) -> None:
        self.beamline = beamline
        rng = np.random.default_rng(np.random.SeedSequence([int(beamline.seed), DRIFT_STREAM]))
        night_s = beamline.clock.duration_h * 3600.0
        self.night_s = night_s
        self.grid = np.arange(0.0, night_s + MARGIN_H * 3600.0 + GRID_S, GRID_S)
        ring = beamline.ring
        self.refills = ([] if ring.refill_period_h is None else
                        list(np.arange(1, int(night_s / (ring.refill_period_h * 3600.0)) + 1)
                             * ring.refill_period_h * 3600.0))
        starts = np.sort(rng.uniform(LOSS_WINDOW[0] * night_s, LOSS_WINDOW[1] * night_s, ring.losses))
        lengths = rng.uniform(ring.loss_duration_s[0], ring.loss_duration_s[1], ring.losses)
        off = [(float(s), float(s + d)) for s, d in zip(starts, lengths, strict=True)]
        off += [(float(r), float(r + ring.refill_duration_s)) for r in self.refills if ring.refill_duration_s > 0]
        self.beam_off = sorted(off)
        """(start, end) simulated seconds without X-rays: losses and refills."""
        self._restores = np.array(sorted([0.0] + [e for _, e in off] + [float(r) for r in self.refills]))
        self._sample = self._sample_drift(rng)
        self._beam = self._beam_drift(rng)
        self._n_inv = np.linalg.inv(stage_motion_matrix(beamline.mounting))

    # ------------------------------------------------------------------ construction
    def _random_walk(self, rng: np.random.Generator, sigma_um_per_sqrt_h: float) -> np.ndarray:
        steps = rng.standard_normal((len(self.grid), 2)) * sigma_um_per_sqrt_h * math.sqrt(GRID_S / 3600.0)
        steps[0] = 0.0
        return np.cumsum(steps, axis=0)

    def _sample_drift(self, rng: np.random.Generator) -> np.ndarray:
        d = self.beamline.drift
        phi0 = float(rng.uniform(0.0, 2.0 * math.pi))
        period_s = d.turn_period_h * 3600.0
        radius = d.thermal_um_per_h / 3600.0 * period_s / (2.0 * math.pi)
        phi = phi0 + 2.0 * math.pi * self.grid / period_s
        thermal = radius * np.column_stack([np.sin(phi) - math.sin(phi0), -(np.cos(phi) - math.cos(phi0))])
        walk = self._random_walk(rng, d.random_walk_um_per_sqrt_h)
        steps = np.zeros_like(thermal)
        step_times = sorted(self.refills + [e for s, e in self.beam_off if s not in self.refills])
        for when in step_times:
            angle = float(rng.uniform(0.0, 2.0 * math.pi))
            steps[self.grid >= when] += d.step_um * np.array([math.cos(angle), math.sin(angle)])
        return thermal + walk + steps

    def _beam_drift(self, rng: np.random.Generator) -> np.ndarray:
        b = self.beamline.beam_drift
        psi = float(rng.uniform(0.0, 2.0 * math.pi))
        steady = b.drift_um_per_h * (self.grid / 3600.0)[:, None] * np.array([math.cos(psi), math.sin(psi)])
        return steady + self._random_walk(rng, b.random_walk_um_per_sqrt_h)

    # ------------------------------------------------------------------ queries
    def sample_drift_um(self, t_s: np.ndarray | float) -> np.ndarray:
        """Lab µm the sample has moved by at simulated time ``t_s`` (shape (..., 2))."""
        return _interp(t_s, self.grid, self._sample)

    def beam_drift_um(self, t_s: np.ndarray | float) -> np.ndarray:
        """Lab µm the X-ray beam has moved by against the camera at ``t_s``."""
        return _interp(t_s, self.grid, self._beam)

    def stage_offset_mm(self, t_s: np.ndarray | float) -> np.ndarray:
        """Stage mm to add to ``sample_to_stage(q)`` to put ``q`` in the beam at ``t_s``."""
        lab = (self.beam_drift_um(t_s) - self.sample_drift_um(t_s)) / 1000.0
        return lab @ self._n_inv.T

    def camera_shift_mm(self, t_s: np.ndarray | float) -> np.ndarray:
        """Stage mm that the sample drift adds to what the camera sees: a frame taken with the
        motors at S shows the sample as an ideal one would at ``S + camera_shift_mm(t)``."""
        return (self.sample_drift_um(t_s) / 1000.0) @ self._n_inv.T

    def beam_on(self, t_s: float) -> bool:
        return not any(s <= t_s < e for s, e in self.beam_off)

    def intensity(self, t_s: float) -> float:
        """Beam intensity at ``t_s`` as a fraction of nominal: 0 without X-rays, else the
        exponential decay since the last refill or return of the beam."""
        t = float(t_s)
        if not self.beam_on(t):
            return 0.0
        lifetime = self.beamline.ring.lifetime_h
        if lifetime is None:
            return 1.0
        since = t - float(self._restores[np.searchsorted(self._restores, t, side="right") - 1])
        return math.exp(-since / (lifetime * 3600.0))

    def truth_table(self, step_s: float = 60.0) -> dict[str, list]:
        """The ``drift`` entry of truth.json: ``t_s`` over the night and ``stage_offset``."""
        t = np.arange(0.0, self.night_s + step_s / 2, step_s)
        return {"t_s": t.tolist(), "stage_offset": self.stage_offset_mm(t).tolist()}


def stage_offset_mm(beamline: VirtualBeamline, t_s: float) -> tuple[float, float]:
    """Convenience for the scorer: the stage offset of ``beamline`` at simulated ``t_s``."""
    dx, dy = Timelines(beamline).stage_offset_mm(float(t_s))
    return float(dx), float(dy)
