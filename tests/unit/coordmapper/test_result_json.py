"""CoordMapperCore's replies are frozen dataclasses; their JSON is what the shell published when
they were dicts. ``recorded/*.json`` is ``dumps`` of the dict each command returned for
:func:`scenario`, recorded before the change; :func:`tests.helpers.assert_same_json` holds
today's ``to_json()`` to it (keys, their order, JSON types, texts and numbers)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servers.CoordMapperDS.args import CalibrateCameraArgs, FitTransformArgs, MapArgs, SetTransformArgs
from servers.CoordMapperDS.core import CoordMapperCore
from tests.helpers import assert_same_json

RECORDED = Path(__file__).with_name("recorded")
LIMITS = ((-5.0, 5.0), (-5.0, 5.0))


def scenario(folder: Path | None = None) -> dict[str, Any]:
    """Every kind of reply, on fixed inputs with a fixed clock."""
    core = CoordMapperCore(clock=lambda: "2026-01-01T00:00:00.000+00:00")
    results: dict[str, Any] = {}
    core.set_beam_position([640.0, 512.0])
    results["calibrate_camera"] = core.calibrate_camera(CalibrateCameraArgs.model_validate(
        {"steps": [[0.055, 0, -100, 0.2], [0, 0.055, 0.1, 100], [0.055, 0.055, -100, 100.1], [-0.055, 0, 100, 0]]}))
    results["set_camera_stage"] = core.set_transform(SetTransformArgs.model_validate(
        {"from": "camera", "to": "stage", "matrix": [[5.5e-4, 0, 1.0], [0, -5.5e-4, 2.0], [0, 0, 1]],
         "stage_position": [1.0, 2.0]}))
    sem_to_camera = [[0.0364, 0.0, 300.0], [0.0, 0.0364, 200.0], [0.0, 0.0, 1.0]]
    results["set_sem_camera"] = core.set_transform(SetTransformArgs.model_validate(
        {"from": "sem", "to": "camera", "matrix": sem_to_camera, "stage_position": [1.0, 2.0], "sigma": 0.05}))
    source = np.array([[500.0, 400.0], [3500.0, 600.0], [2000.0, 3600.0], [3800.0, 3900.0]])
    coarse = core.map_points(MapArgs.model_validate({"from": "sem", "to": "stage", "points": source.tolist()}))
    results["map_without_limits"] = coarse
    offsets = np.array([[1.5e-4, -0.8e-4], [1.6e-4, -0.7e-4], [1.4e-4, -0.9e-4], [1.5e-4, -0.75e-4]])
    # a dict when the replies were recorded, a MappedPoints now
    measured = np.array(coarse.as_dict()["points"] if hasattr(coarse, "as_dict") else coarse["points"]) + offsets
    pairs = np.hstack([source, measured]).tolist()
    results["fit_with_prior"] = core.fit_transform(FitTransformArgs.model_validate(
        {"from": "sem", "to": "stage", "pairs": pairs, "prior": True, "noise_sigma": 2e-5, "from_unit": "px"}))
    grid = [[x, y, 0.001 * x + 0.0002 * y + 0.3 + 1e-5 * (i % 3), -0.0002 * x + 0.001 * y - 0.1 - 1e-5 * (i % 2)]
            for i, (x, y) in enumerate([(0, 0), (100, 0), (0, 100), (100, 100), (50, 60), (20, 80)])]
    results["fit_similarity"] = core.fit_transform(FitTransformArgs.model_validate(
        {"from": "afm", "to": "sem2", "pairs": grid, "model": "similarity", "from_unit": "px", "to_unit": "um"}))
    results["map_with_limits"] = core.map_points(MapArgs.model_validate(
        {"from": "sem", "to": "camera", "points": [[500.0, 400.0], [1.0e6, 0.0]], "stage_position": [1.0, 2.0]}),
        LIMITS)
    results["remove_frame"] = core.remove_frame("sem")
    return results


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return scenario()


@pytest.mark.parametrize("name", ["calibrate_camera", "set_camera_stage", "set_sem_camera", "map_without_limits",
                                  "fit_with_prior", "fit_similarity", "map_with_limits", "remove_frame"])
def test_the_json_is_what_the_shell_published(results: dict[str, Any], name: str) -> None:
    assert_same_json(results[name].to_json(), (RECORDED / f"{name}.json").read_text())


def test_the_map_reply_the_shell_completes_keeps_its_keys(results: dict[str, Any]) -> None:
    """Map from the camera: the shell adds the motor position it read, after every other key."""
    reply = dataclasses.replace(results["map_with_limits"], stage_position_used=(1.0, 2.0)).as_dict()
    assert list(reply)[-1] == "stage_position_used" and reply["stage_position_used"] == [1.0, 2.0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        results["map_with_limits"].unit = "um"
