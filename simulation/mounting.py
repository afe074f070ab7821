"""Where the sample is in the lab for a given stage position, and the inverse.

Physical picture (all in the sample plane, lab frame in mm, beam at the lab origin):
a sample point ``q`` (µm, sample frame) sits at

    L(q, S) = R(θ) (q - c) / 1000 + N (S - o)

when the motors read ``S`` (mm). ``R(θ)`` is the mounting rotation, ``c`` the centre of the
sample field, ``o`` the mounting offset (the motor position that centres the field on the
beam) and ``N`` the stage's motion matrix: column k is the lab direction motor k moves the
sample, unit x for the x motor and ``(-sin γ, cos γ)`` for a y motor sheared by γ.
Solving ``L = 0`` gives the public ``sample_to_stage``. Every renderer goes through these
functions, so the camera, SEM, XRF and truth file agree by construction.
"""

from __future__ import annotations

import math

import numpy as np

from simulation.config import Mounting
from simulation.geometry import homogeneous, invert, rotation_2x2
from simulation.sample import Sample


def stage_motion_matrix(mounting: Mounting) -> np.ndarray:
    """``N``: lab displacement (mm) per motor step (mm), columns = motor x, motor y."""
    g = math.radians(mounting.nonorthogonality_deg)
    return np.array([[1.0, -math.sin(g)], [0.0, math.cos(g)]])


def sample_to_stage(sample: Sample, mounting: Mounting) -> np.ndarray:
    """3x3: sample µm -> the stage position (mm) that puts that sample point in the beam."""
    n_inv = np.linalg.inv(stage_motion_matrix(mounting))
    linear = -n_inv @ rotation_2x2(mounting.rotation_deg) / 1000.0
    c = np.asarray(sample.centre)
    return homogeneous(linear, np.asarray(mounting.offset_mm) - linear @ c)


def stage_to_sample(sample: Sample, mounting: Mounting) -> np.ndarray:
    """3x3: stage position (mm) -> the sample point (µm) that is then in the beam."""
    return invert(sample_to_stage(sample, mounting))


def lab_to_sample(sample: Sample, mounting: Mounting, stage_mm: tuple[float, float]) -> np.ndarray:
    """3x3: lab position (mm, beam at the origin) -> sample µm, with the motors at ``stage_mm``."""
    rt = rotation_2x2(mounting.rotation_deg).T
    shift = stage_motion_matrix(mounting) @ (np.asarray(stage_mm, float) - np.asarray(mounting.offset_mm))
    linear = 1000.0 * rt
    return homogeneous(linear, np.asarray(sample.centre) - linear @ shift)
