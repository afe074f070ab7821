"""Translation accuracy and conventions on real micrographs under known sub-pixel shifts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from servers.RegistrationDS.core import RegistrationCore
from servers.RegistrationDS.preprocess import apodise
from servers.RegistrationDS.translation import _argmax_on_grid, cross_power_spectrum, refine_peak

from .conftest import fourier_shift


def _pair(image: np.ndarray, dx: float, dy: float, margin: int, noise: float, rng: np.random.Generator):
    """Reference = centre crop; target = centre crop of the image shifted by (dx, dy) (not periodic)."""
    shifted = fourier_shift(image, dx, dy)
    h, w = image.shape
    ref = image[margin:h - margin, margin:w - margin]
    tgt = shifted[margin:h - margin, margin:w - margin]
    sigma = noise * float(image.std())
    return (ref + rng.normal(0, sigma, ref.shape)).astype(np.float32), \
        (tgt + rng.normal(0, sigma, tgt.shape)).astype(np.float32)


def test_subpixel_translation_rms_below_five_hundredths(micrographs):
    rng = np.random.default_rng(20240501)
    core = RegistrationCore()
    errors = []
    for name in ("camera", "brick", "moon", "grass", "coins", "astronaut", "hubble_deep_field", "cell"):
        for _ in range(4):
            dx, dy = rng.uniform(-25, 25, 2)
            ref, tgt = _pair(micrographs[name], dx, dy, 40, 0.05, rng)
            core.put_image("ref", ref, 1.0, {})
            core.put_image("tgt", tgt, 1.0, {})
            result = core.register({"reference": "ref", "target": "tgt", "upsample": 100})
            assert result["success"], (name, result)
            # target content at x sits at x + (dx, dy) in the shifted image, i.e. at x - (dx, dy) in ref
            errors.append((result["shift_px"][0] + dx, result["shift_px"][1] + dy))
    rms = math.sqrt(float(np.mean(np.sum(np.square(errors), axis=1))))
    assert rms <= 0.05, rms


def test_sign_matrix_and_rois_in_each_images_pixels(micrographs):
    image = micrographs["camera"]
    core = RegistrationCore()
    core.put_image("ref", image, 1.0, {})
    core.put_image("tgt", image[100:400, 50:350], 1.0, {})
    # target pixel (0, 0) is reference pixel (50, 100)
    result = core.register({"reference": "ref", "target": "tgt"})
    assert result["shift_px"] == pytest.approx([50, 100], abs=0.02)
    # with ROIs on both images, the matrix still maps full target px -> full reference px
    result = core.register({"reference": "ref", "target": "tgt", "reference_roi": [120, 160, 200, 180],
                            "target_roi": [60, 40, 150, 150]})
    matrix = np.array(result["matrix"])
    assert matrix @ [10.0, 20.0, 1.0] == pytest.approx([60.0, 120.0, 1.0], abs=0.02)


def test_negative_and_large_shifts_wrap_correctly(micrographs):
    image = micrographs["grass"]
    core = RegistrationCore()
    core.put_image("ref", image[0:300, 0:300], 1.0, {})
    core.put_image("tgt", image[90:390, 120:420], 1.0, {})
    result = core.register({"reference": "ref", "target": "tgt"})
    assert result["shift_px"] == pytest.approx([120, 90], abs=0.02)
    swapped = core.register({"reference": "tgt", "target": "ref"})
    assert swapped["shift_px"] == pytest.approx([-120, -90], abs=0.02)


def test_max_shift_excludes_far_matches(micrographs):
    image = micrographs["camera"]
    core = RegistrationCore()
    core.put_image("ref", image[0:256, 0:256], 1.0, {})
    core.put_image("tgt", image[40:296, 30:286], 1.0, {})
    free = core.register({"reference": "ref", "target": "tgt"})
    assert free["shift_px"] == pytest.approx([30, 40], abs=0.02)
    limited = core.register({"reference": "ref", "target": "tgt", "max_shift_px": 10})
    assert math.hypot(*limited["shift_px"]) <= 10.0 + 1e-9
    assert not limited["success"]


def test_contrast_inversion_is_found(micrographs):
    image = micrographs["moon"]
    core = RegistrationCore()
    core.put_image("ref", image[0:400, 0:400], 1.0, {})
    core.put_image("tgt", 255 - image[17:417, 23:423], 1.0, {})
    result = core.register({"reference": "ref", "target": "tgt"})
    assert result["success"] and result["polarity"] == -1
    assert result["shift_px"] == pytest.approx([23, 17], abs=0.02)


def test_two_stage_refinement_equals_single_step_grid(micrographs):
    """The shortcut in refine_peak must give the argmax of the full 1.5*upsample DFT grid."""
    rng = np.random.default_rng(7)
    image = micrographs["brick"]
    for _ in range(10):
        dx, dy = rng.uniform(-5, 5, 2)
        ref, tgt = _pair(image, dx, dy, 60, 0.1, rng)
        spectrum = cross_power_spectrum(apodise(ref), apodise(tgt))
        centre = (float(round(-dy)), float(round(-dx)))
        fast, _ = refine_peak(spectrum, ref.shape, centre, 100)
        full, _ = _argmax_on_grid(spectrum, ref.shape, centre, 100, 150, 1)
        assert fast == pytest.approx(full, abs=1e-9)
