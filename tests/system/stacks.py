"""Stacks for system tests that need their own (not the session's) and the queue tests' set-up:
one place for bringing a stack up and down and for the particles a queue is filled from."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tango

from clients.launcher import Stack
from tests.tango_helpers import stack_proxy

QUEUE_PARTICLE_PROFILE = {"Diameter": 7, "MinMass": 1.0e4, "MaxSize": 1.6, "Separation": 4.0,
                          "IsolationRadius": 100.0}
"""ParticleDS settings that find the virtual sample's cubes on its SEM image."""


@contextlib.contextmanager
def running_stack(stack: Stack) -> Iterator[Stack]:
    """``stack`` up with TANGO_HOST pointing at it (as a beamline shell has it); afterwards every
    process it started is stopped by PID and TANGO_HOST is as it was."""
    previous = os.environ.get("TANGO_HOST")
    try:
        os.environ["TANGO_HOST"] = stack.up()
        yield stack
    finally:
        stack.down(quiet=True)
        if previous is None:
            os.environ.pop("TANGO_HOST", None)
        else:
            os.environ["TANGO_HOST"] = previous


def detect_with_true_sem_mapping(stack: Stack, sem: Path) -> tango.DeviceProxy:
    """sem -> stage from the simulation's truth (what smart_fine_align measures: test_workflow.py
    covers that) and the particles of the SEM image detected; the ParticleDS proxy."""
    from simulation.config import load_beamline
    from simulation.truth import truth

    facts = truth(load_beamline(stack.beamline))
    sem_to_stage = np.array(facts["sample_to_stage"]) @ np.array(facts["sem"]["pixel_to_sample"])
    stack_proxy(stack, "smart/coordmapper/1").SetTransform(json.dumps(
        {"from": "sem", "to": "stage", "matrix": sem_to_stage.tolist(), "from_unit": "px", "to_unit": "mm"}))
    particles = stack_proxy(stack, "smart/particles/1")
    for name, value in QUEUE_PARTICLE_PROFILE.items():
        particles.write_attribute(name, value)
    particles.set_timeout_millis(120_000)
    particles.Detect(json.dumps({"path": str(sem)}))
    return particles
