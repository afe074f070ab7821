"""The XRF counter: Ce-L and Pt-L counts a Gaussian X-ray beam gives at a stage position.

The expected rate is exact, not sampled: for an isotropic Gaussian beam the flux falling
on a rectangle (a cube's footprint, a piece of a marker) is a product of two normal-CDF
differences in the rectangle's own axes. So a mesh scan over a particle is a true,
noise-limited picture of it and a 2-D fit finds its centre to a fraction of a nanometre,
which is what lets the workflow use the X-ray map as a second registration.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import ndtr

from servers.common.errors import BadArgument
from simulation.config import Mounting, XrfSettings
from simulation.geometry import apply
from simulation.mounting import stage_to_sample
from simulation.sample import Sample

XRF_STREAM = 0xF1
REFERENCE_CUBE_UM = 0.050
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _box_fraction(ux: np.ndarray, uy: np.ndarray, half_w: np.ndarray, half_h: np.ndarray, sigma: float) -> np.ndarray:
    """Fraction of a unit Gaussian beam (std ``sigma``) centred at offset (ux, uy) from a
    rectangle's centre, in the rectangle's axes, that falls on the rectangle."""
    fx = ndtr((half_w - ux) / sigma) - ndtr((-half_w - ux) / sigma)
    fy = ndtr((half_h - uy) / sigma) - ndtr((-half_h - uy) / sigma)
    return fx * fy


class XrfDetector:
    """Counts for ``(stage_x_mm, stage_y_mm, integration_time_s)``; seeded Poisson noise.

    The stage position given must be the *true* load position (the simulated axes give it);
    the detector does not model motion during the count.
    """

    def __init__(self, sample: Sample, mounting: Mounting, settings: XrfSettings | None = None,
                 seed: int = 0) -> None:
        self.settings = settings or XrfSettings()
        self.sample = sample
        self._stage_to_sample = stage_to_sample(sample, mounting)
        self._sigma_um = self.settings.beam_fwhm_nm / 1000.0 / FWHM_PER_SIGMA
        sel = np.asarray(sample.material) == "CeO2"
        self._ce = (sample.x[sel], sample.y[sel], sample.d[sel], np.radians(sample.angle_deg[sel]))
        self._tree = cKDTree(np.column_stack(self._ce[:2])) if sel.any() else None
        self._reach_um = 6.0 * self._sigma_um + (float(self._ce[2].max()) if sel.any() else 0.0)
        rects = [r for m in sample.markers for r in m.rectangles()]
        rects += [(x, y, d, d, a) for x, y, d, a, mat in
                  zip(sample.x, sample.y, sample.d, sample.angle_deg, sample.material, strict=True) if mat == "Pt"]
        self._pt_rects = np.array(rects, float).reshape(-1, 5)
        half = REFERENCE_CUBE_UM / 2.0
        self._reference_fraction = float(_box_fraction(np.zeros(1), np.zeros(1), np.array([half]),
                                                       np.array([half]), self._sigma_um)[0])
        self._rng = np.random.default_rng(np.random.SeedSequence([int(seed), XRF_STREAM]))

    @property
    def beam_sigma_um(self) -> float:
        return self._sigma_um

    def expected_rates(self, stage_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free (Ce-L, Pt-L) counts per second, backgrounds included, for an ``(N, 2)``
        array of stage positions (mm)."""
        stage = np.atleast_2d(np.asarray(stage_mm, float))
        q = apply(self._stage_to_sample, stage)
        s = self.settings
        ce = np.full(len(q), s.ce_background_cps)
        if self._tree is not None:
            lists = self._tree.query_ball_point(q, self._reach_um)
            counts = np.array([len(v) for v in lists])
            if counts.sum():
                point = np.repeat(np.arange(len(q)), counts)
                part = np.concatenate([np.asarray(v, int) for v in lists if v])
                x, y, d, a = (arr[part] for arr in self._ce)
                dx, dy = q[point, 0] - x, q[point, 1] - y
                ux, uy = np.cos(a) * dx + np.sin(a) * dy, -np.sin(a) * dx + np.cos(a) * dy
                frac = _box_fraction(ux, uy, d / 2, d / 2, self._sigma_um)
                weight = s.ce_cps_reference * (d / REFERENCE_CUBE_UM) * frac / self._reference_fraction
                ce += np.bincount(point, weights=weight, minlength=len(q))
        pt = np.full(len(q), s.pt_background_cps)
        if len(self._pt_rects):
            cx, cy, w, h, a = (self._pt_rects[:, i][None, :] for i in range(5))
            a = np.radians(a)
            dx, dy = q[:, 0:1] - cx, q[:, 1:2] - cy
            ux, uy = np.cos(a) * dx + np.sin(a) * dy, -np.sin(a) * dx + np.cos(a) * dy
            pt += s.pt_cps_full * _box_fraction(ux, uy, w / 2, h / 2, self._sigma_um).sum(axis=1)
        return ce, pt

    def counts(self, stage_x_mm: float, stage_y_mm: float, integration_time_s: float,
               intensity: float = 1.0) -> dict[str, int]:
        """One count: Poisson-distributed Ce-L and Pt-L counts. ``intensity`` is the beam
        intensity as a fraction of nominal (:meth:`simulation.drift.Timelines.intensity`):
        every rate, backgrounds included, scales with it; 0 = no X-rays, no counts."""
        if not (math.isfinite(integration_time_s) and integration_time_s > 0):
            raise BadArgument(f"integration time {integration_time_s} s: must be a positive number of seconds")
        ce, pt = self.expected_rates(np.array([[stage_x_mm, stage_y_mm]]))
        scale = integration_time_s * max(float(intensity), 0.0)
        return {"Ce_L": int(self._rng.poisson(ce[0] * scale)), "Pt_L": int(self._rng.poisson(pt[0] * scale))}

    def map(self, xs_mm: np.ndarray, ys_mm: np.ndarray, integration_time_s: float,
            intensity: float = 1.0) -> dict[str, np.ndarray]:
        """A mesh scan: counts on the grid ``ys_mm`` (rows) x ``xs_mm`` (columns)."""
        if not (math.isfinite(integration_time_s) and integration_time_s > 0):
            raise BadArgument(f"integration time {integration_time_s} s: must be a positive number of seconds")
        gx, gy = np.meshgrid(np.asarray(xs_mm, float), np.asarray(ys_mm, float))
        ce, pt = self.expected_rates(np.column_stack([gx.ravel(), gy.ravel()]))
        shape, scale = gx.shape, integration_time_s * max(float(intensity), 0.0)
        return {"Ce_L": self._rng.poisson(ce * scale).reshape(shape),
                "Pt_L": self._rng.poisson(pt * scale).reshape(shape)}
