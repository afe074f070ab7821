"""RegistrationCore's results are frozen dataclasses; their JSON is what the shell published
when they were dicts. ``recorded/*.json`` is the shell's reply (``dumps`` of the dict the core
returned) to :func:`scenario`, recorded before the change; :func:`tests.helpers.assert_same_json`
holds today's ``to_json()`` to it: keys, key order, JSON types, texts and numbers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from servers.common.jsonargs import dumps
from servers.RegistrationDS.core import RegistrationCore
from tests.helpers import assert_same_json
from tests.unit.registration.conftest import fourier_shift, grey

RECORDED = Path(__file__).with_name("recorded")


def scenario(folder: Path) -> dict[str, Any]:
    """Every kind of result RegistrationCore returns, on fixed inputs."""
    core = RegistrationCore()
    image = grey("camera")[120:376, 140:396]
    results: dict[str, Any] = {}
    results["put_image"] = core.put_image("ref", image, 0.5, {"frame_number": 7, "stage": {"samx": 0.25}},
                                          source="tango:smart/camera/1")
    core.put_image("tgt", fourier_shift(image, 3.25, -2.5), 0.5)
    path = folder / "plain.tif"
    tifffile.imwrite(path, (image * 100).astype(np.uint16))
    results["load_image"] = core.load_image("file", str(path))
    results["load_image_pixel_size"] = core.load_image("file2", str(path), pixel_size_um=0.5)
    results["register_translation"] = core.register({"reference": "ref", "target": "tgt", "model": "translation"})
    results["register_similarity"] = core.register({"reference": "ref", "target": "tgt", "model": "similarity"})
    angle = np.radians(12.0)
    pairs = []
    for xt, yt in [(30, 20), (180, 30), (60, 180), (170, 160), (100, 100), (70, 130)]:
        xr = 1.1 * (np.cos(angle) * xt - np.sin(angle) * yt) + 5.0
        yr = 1.1 * (np.sin(angle) * xt + np.cos(angle) * yt) - 3.0
        pairs.append([xt, yt, round(xr, 3), round(yr, 3)])
    pairs[4][2] += 9.0  # one badly clicked pair
    results["register_fiducials"] = core.register_fiducials(
        {"reference": "ref", "target": "tgt", "model": "similarity", "pairs": pairs})
    results["last_result"] = core.last_result
    results["last_good_result"] = core.last_good_result
    results["slots"] = core.describe_slots()
    return results


def published(result: Any) -> str:
    """What the shell sends for a result: ``to_json()``, SlotInfo a JSON list of the slots."""
    if isinstance(result, list):
        return dumps([slot.as_dict() for slot in result])
    return result.to_json()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return scenario(tmp_path_factory.mktemp("registration"))


@pytest.mark.parametrize("name", ["put_image", "load_image", "load_image_pixel_size", "register_translation",
                                  "register_similarity", "register_fiducials", "last_result", "last_good_result",
                                  "slots"])
def test_the_json_is_what_the_shell_published(results: dict[str, Any], name: str) -> None:
    assert_same_json(published(results[name]), (RECORDED / f"{name}.json").read_text(), volatile=("elapsed_ms",))


def test_a_stored_result_cannot_be_changed_by_a_reader(results: dict[str, Any]) -> None:
    """last_result hands out the stored object itself: frozen, so no reader can alter it."""
    assert results["last_result"] is results["register_fiducials"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        results["last_result"].success = False
