"""How well the contained search tells the right SEM image from another sample's (not part of
`make bench`: ~1 min per seed on 2 cores).

For each seed: the camera frame of that sample with the SEM field at a random offset, registered
with (pos) the sample's own SEM image and (neg) the SEM image of another sample. Generated
samples share their marker layout, as real substrates of one kind do, so a negative differs only
in its particles. Prints per pair: patches agreeing / total, peak distinctness, confidence,
success, and for positives the largest corner/centre error in camera px against the truth.

    PYTHONPATH=. .venv/bin/python -m benchmarks.study_contained_agreement 6 30
    PYTHONPATH=. .venv/bin/python -m benchmarks.study_contained_agreement 6 30 affine

The optional third argument is the ``Register`` model (default similarity); for ``affine`` the
warnings of a refused pair are printed too.
"""

from __future__ import annotations

import sys

import numpy as np

import servers.RegistrationDS.core as registration_core
from simulation import config as sim
from simulation.sem import render_sem
from tests.unit.registration.test_sem_camera import _scene


def main(first: int, stop: int, model: str = "similarity") -> None:
    captured = {}
    original = registration_core.estimate_contained

    def capture(*args, **kwargs):
        captured["estimate"] = original(*args, **kwargs)
        return captured["estimate"]

    registration_core.estimate_contained = capture
    original_affine = registration_core.refine_affine

    def capture_affine(*args, **kwargs):
        captured["affine"] = original_affine(*args, **kwargs)
        return captured["affine"]

    registration_core.refine_affine = capture_affine
    rng = np.random.default_rng(0)
    for seed in range(first, stop):
        frame, camera_px, sem, truth = _scene(seed, tuple(rng.uniform(-300, 300, 2)))
        other = sim.default_beamline(seed + 100)
        other_sem = render_sem(other.sample, other.sem, seed=seed + 100)
        for kind, image, pixel in (("pos", sem.image, sem.pixel_size_um),
                                   ("neg", other_sem.image, other_sem.pixel_size_um)):
            core = registration_core.RegistrationCore()
            core.put_image("camera", frame, camera_px)
            core.put_image("sem", image, pixel)
            result = core.register({"reference": "camera", "target": "sem", "model": model})
            estimate = captured["estimate"]
            affine = captured.pop("affine", None)
            parts = "" if affine is None else (f"affine {affine.agreeing}/{affine.matched}/{affine.total} "
                                               f"aniso {100 * affine.anisotropy:.2f} % shear {affine.shear_deg:+.2f}")
            error = ""
            if kind == "pos":
                h, w = image.shape
                probes = np.array([[0, 0, 1], [w - 1, h - 1, 1], [w / 2, h / 2, 1]], float).T
                error = f"{np.abs((result.matrix_array @ probes - truth @ probes)[:2]).max():.3f}"
            print(seed, kind, f"{estimate.patches_agreeing}/{estimate.patches_total}",
                  f"dist {estimate.peak.distinctness:.2f}", f"conf {result.confidence:.4f}",
                  result.success, error, parts,
                  "" if result.success or model != "affine" else result.warnings[:1], flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:4])
