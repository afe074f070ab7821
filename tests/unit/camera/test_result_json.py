"""A frame's metadata is a frozen dataclass (acquisition.FrameMetadata); its JSON is what the
camera published as FrameMetadata (and wrote into saved TIFFs) when it was a dict.
``recorded/*.json`` was recorded from the dict for :func:`scenario` before the change."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servers.CameraDS.acquisition import Frame
from tests.helpers import assert_same_json

RECORDED = Path(__file__).with_name("recorded")


def scenario(folder: Path | None = None) -> dict[str, Any]:
    """The metadata of a frame with every kind of value: a refused gain (None), an unread motor."""
    data = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64)
    frame = Frame(data, 7, 1_796_000_000.25, 20.0, None, 0.55, {"samx": 0.25, "samy": None}, "sim:grid")
    return {"frame_metadata": frame.metadata()}


def test_frame_metadata_is_what_the_camera_published() -> None:
    metadata = scenario()["frame_metadata"]
    recorded = (RECORDED / "frame_metadata.json").read_text()
    assert_same_json(metadata.to_json(), recorded)
    assert_same_json(json.dumps(metadata.as_dict(), allow_nan=False), recorded)  # the saved TIFF's description
    with pytest.raises(dataclasses.FrozenInstanceError):
        metadata.gain = 1.0
