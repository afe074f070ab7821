"""The truth of a virtual beamline: what the workflow must discover, for scoring only.

It is computed by the renderers (camera calibration, mounting, SEM geometry, drift), which
import their settings from :mod:`simulation.config`; so it lives here, above both, and the
settings module imports no renderer (docs/simulation.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from servers.common.errors import BadArgument
from simulation.camera import camera_calibration
from simulation.config import VirtualBeamline
from simulation.drift import Timelines
from simulation.mounting import sample_to_stage, stage_to_sample
from simulation.sem import sem_pixel_to_sample


def _finite_list(matrix: np.ndarray) -> list:
    values = np.asarray(matrix, dtype=float)
    if not np.all(np.isfinite(values)):
        raise BadArgument("a truth matrix is not finite; check the mounting and optics settings")
    return values.tolist()


def truth(beamline: VirtualBeamline) -> dict[str, Any]:
    """What the workflow must discover, for scoring only (see docs/simulation.md)."""
    cam = beamline.camera
    timelines = Timelines(beamline)
    return {
        "seed": beamline.seed,
        "sample_to_stage": _finite_list(sample_to_stage(beamline.sample, beamline.mounting)),
        "stage_to_sample": _finite_list(stage_to_sample(beamline.sample, beamline.mounting)),
        "mounting": beamline.mounting.model_dump(mode="json"),
        "stage": beamline.stage.model_dump(mode="json"),
        "camera": {
            "beam_px": list(cam.beam()),
            "beam_px_calibrated": list(cam.beam_calibrated()),
            "rotation_deg": cam.rotation_deg,
            "flip_x": cam.flip_x,
            "A_mm_per_px": {z: _finite_list(camera_calibration(cam, beamline.mounting, z)) for z in cam.zooms},
            "pixel_size_um": {z: level.pixel_size_um for z, level in cam.zooms.items()},
        },
        "sem": {"pixel_to_sample": _finite_list(sem_pixel_to_sample(beamline.sample, beamline.sem)),
                "pixel_size_um": beamline.sem.pixel_size_um},
        "xrf": {"beam_fwhm_nm": beamline.xrf.beam_fwhm_nm},
        "optical_path": beamline.optical_path.model_dump(mode="json"),
        "clock": beamline.clock.model_dump(mode="json"),
        "drift": timelines.truth_table(),
        "beam_off": [list(p) for p in timelines.beam_off],
        "units": {"sample": "um", "stage": "mm", "camera": "px", "sem": "px"},
    }


def write_truth(beamline: VirtualBeamline, path: str | Path) -> dict[str, Any]:
    data = truth(beamline)
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return data
