"""Scenes for registration studies and tests: the SEM image and a camera frame of the same
virtual beamline, with the true map between them (what the workflow's coarse alignment must find)."""

from __future__ import annotations

import numpy as np

import simulation.config as sim
from simulation.camera import CameraRenderer, camera_pixel_to_sample
from simulation.geometry import apply
from simulation.mounting import sample_to_stage
from simulation.sem import SemImage, render_sem


def sem_in_camera(seed: int, offset_px: tuple[float, float]) -> tuple[np.ndarray, float, SemImage, np.ndarray]:
    """Camera frame with the SEM field ``offset_px`` from the camera centre, the camera's pixel
    size (um), the SEM image, and the true SEM px -> camera px matrix. The truth is used only to
    set the stage and to score; a registration sees the two images and their pixel sizes."""
    beamline = sim.default_beamline(seed)
    sem = render_sem(beamline.sample, beamline.sem, seed=seed)
    centre = beamline.sem.centre_um or beamline.sample.centre
    stage = apply(sample_to_stage(beamline.sample, beamline.mounting), np.asarray(centre, float))
    camera = CameraRenderer(beamline.sample, beamline.mounting, beamline.camera, seed=seed)
    stage = stage - camera.calibration() @ np.asarray(offset_px, float)  # X = S + A (p - b)
    frame = camera.render(tuple(stage))
    to_camera = np.linalg.inv(camera_pixel_to_sample(beamline.sample, beamline.mounting, beamline.camera,
                                                     tuple(stage)))
    pixel_size = beamline.camera.zooms[beamline.camera.zoom].pixel_size_um
    return frame, pixel_size, sem, to_camera @ sem.pixel_to_sample
