"""The virtual beamline: a ground-truth sample, its mounting on the stage, and renderers
for the SEM, the optical camera and the XRF counter, plus plain-Python motor and detector
models for the Sardana controllers. No Tango or Sardana import here.

See docs/simulation.md for the models, conventions, CLI and truth file.
"""

from simulation.axis import SimulatedAxis
from simulation.camera import CameraRenderer, camera_calibration, camera_pixel_to_sample
from simulation.clock import SimClock
from simulation.config import (
    CameraOptics,
    Mounting,
    SemGeometry,
    StageSettings,
    VirtualBeamline,
    XrfSettings,
    default_beamline,
    load_beamline,
    night_beamline,
)
from simulation.drift import Timelines, stage_offset_mm
from simulation.generate import SampleRecipe, generate_sample, isolated_mask
from simulation.mounting import sample_to_stage, stage_to_sample
from simulation.runtime import SimulatedBeamline
from simulation.sample import Marker, Sample, load_sample, sample_from_json
from simulation.sem import SemImage, render_sem, sem_pixel_to_sample
from simulation.truth import truth, write_truth
from simulation.xrf import XrfDetector

__all__ = [
    "CameraOptics", "CameraRenderer", "Marker", "Mounting", "Sample", "SampleRecipe", "SemGeometry", "SemImage",
    "SimClock", "SimulatedAxis", "SimulatedBeamline", "StageSettings", "Timelines", "VirtualBeamline", "XrfDetector",
    "XrfSettings", "night_beamline", "stage_offset_mm",
    "camera_calibration", "camera_pixel_to_sample", "default_beamline", "generate_sample", "isolated_mask",
    "load_beamline", "load_sample", "render_sem", "sample_from_json", "sample_to_stage", "sem_pixel_to_sample",
    "stage_to_sample", "truth", "write_truth",
]
