"""File reading at full bit depth, colour to grey, and where the pixel size comes from."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tifffile

from servers.common.imageio import read_image
from servers.RegistrationDS.core import RegistrationCore


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int32, np.float32, np.float64])
def test_tiff_depths_are_kept(tmp_path, dtype):
    rng = np.random.default_rng(0)
    image = (rng.random((40, 50)) * 60000).astype(dtype) if np.dtype(dtype).itemsize > 1 else \
        rng.integers(0, 255, (40, 50)).astype(dtype)
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, image, description=json.dumps({"pixel_size_um": 0.25, "frame_number": 9}))
    loaded = read_image(str(path))
    assert loaded.data.dtype == image.dtype
    np.testing.assert_array_equal(loaded.data, image)
    assert loaded.pixel_size_um == 0.25 and loaded.metadata["frame_number"] == 9


def test_tiff_resolution_tags_give_pixel_size_with_a_warning(tmp_path):
    path = tmp_path / "res.tif"
    tifffile.imwrite(path, np.arange(400, dtype=np.uint16).reshape(20, 20), resolution=(20000, 20000),
                     resolutionunit="CENTIMETER")
    loaded = read_image(str(path))
    assert loaded.pixel_size_um == pytest.approx(0.5)
    assert any("resolution tags" in w for w in loaded.warnings)


def test_png16_jpeg_rgb_and_default_pixel_size(tmp_path):
    core = RegistrationCore()
    image16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 13 % 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), image16)
    info = core.load_image("png", str(tmp_path / "a.png"))
    assert info.slot.dtype == "uint16" and info.slot.pixel_size_um == 1.0
    assert any("no pixel size" in w for w in info.slot.warnings)
    np.testing.assert_array_equal(core.slots.get("png").data, image16)
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[..., 1] = 200  # pure green -> 0.7154 * 200
    rgb[:4, :4, 1] = 0  # not constant (a constant image is refused)
    cv2.imwrite(str(tmp_path / "b.jpg"), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    info = core.load_image("jpg", str(tmp_path / "b.jpg"), pixel_size_um=2.0)
    grey = core.slots.get("jpg").data
    assert info.slot.pixel_size_um == 2.0 and info.slot.width == 48 and info.slot.height == 32
    assert grey.ndim == 2 and abs(float(np.median(grey)) - 0.7154 * 200) < 3
    assert any("grey" in w for w in info.slot.warnings)
