"""ParticleDS's results are frozen dataclasses; their JSON is what the shell published when
they were dicts. ``recorded/*.json`` holds, for :func:`scenario`, the core's ``detect`` summary,
the ``Detect`` reply and the ``LastResult`` attribute as the shell built them from dicts,
recorded before the change; :func:`tests.helpers.assert_same_json` holds today's to them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servers.ParticleDS import ParticleCore
from servers.ParticleDS.results import DetectReply
from tests.helpers import assert_same_json

from .synthetic import render_spots

RECORDED = Path(__file__).with_name("recorded")
LAYOUT = np.array([[40.0, 40.0], [200.0, 60.0], [120.0, 150.0], [128.0, 152.0], [60.0, 200.0], [215.0, 215.0]])
SOURCE = "file /data/sem.tif"
"""The ``source`` the shell names (a path or an image attribute)."""
SHELL_ELAPSED_MS, READ_MS = 12.5, 3.25
"""The shell's own timings in the Detect reply (the whole command, the image read)."""


def scenario() -> tuple[Any, Any]:
    """One detection with an ROI: the core's summary and its stored results."""
    image = render_spots((256, 256), LAYOUT, sigma=1.5, peak=150, background=20, noise=3, seed=2)
    core = ParticleCore({"Diameter": 7, "MinMass": 200.0, "Separation": 5.0, "IsolationRadius": 20.0})
    summary = core.detect(image, roi=[10, 20, 230, 220])
    return summary, core.results


@pytest.fixture(scope="module")
def detected() -> tuple[Any, Any]:
    return scenario()


def test_the_summary_is_what_detect_returned(detected: tuple[Any, Any]) -> None:
    summary, _ = detected
    assert_same_json(summary.to_json(), (RECORDED / "summary.json").read_text(), volatile=("elapsed_ms",))


def test_the_detect_reply_is_what_the_shell_sent(detected: tuple[Any, Any]) -> None:
    summary, _ = detected
    reply = DetectReply(summary, SHELL_ELAPSED_MS, READ_MS, SOURCE)
    assert_same_json(reply.to_json(), (RECORDED / "detect_reply.json").read_text())


def test_last_result_is_what_the_shell_published(detected: tuple[Any, Any]) -> None:
    _, results = detected
    assert_same_json(results.record(SOURCE).to_json(), (RECORDED / "last_result.json").read_text(),
                     volatile=("elapsed_ms", "timestamp"))


def test_the_summary_is_frozen(detected: tuple[Any, Any]) -> None:
    summary, _ = detected
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.count = 0
