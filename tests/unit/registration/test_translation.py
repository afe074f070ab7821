"""Translation accuracy and conventions on real micrographs under known sub-pixel shifts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from servers.RegistrationDS.core import RegistrationCore
from servers.RegistrationDS.preprocess import apodise
from servers.RegistrationDS.translation import (
    _argmax_on_grid,
    cross_power_spectrum,
    gaussian_peak_offset,
    inverse_real_spectrum,
    refine_peak,
)

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
            assert result.success, (name, result)
            # target content at x sits at x + (dx, dy) in the shifted image, i.e. at x - (dx, dy) in ref
            errors.append((result.shift_px[0] + dx, result.shift_px[1] + dy))
    rms = math.sqrt(float(np.mean(np.sum(np.square(errors), axis=1))))
    assert rms <= 0.05, rms


def test_sign_matrix_and_rois_in_each_images_pixels(micrographs):
    image = micrographs["camera"]
    core = RegistrationCore()
    core.put_image("ref", image, 1.0, {})
    core.put_image("tgt", image[100:400, 50:350], 1.0, {})
    # target pixel (0, 0) is reference pixel (50, 100)
    result = core.register({"reference": "ref", "target": "tgt"})
    assert result.shift_px == pytest.approx([50, 100], abs=0.02)
    # with ROIs on both images, the matrix still maps full target px -> full reference px
    result = core.register({"reference": "ref", "target": "tgt", "reference_roi": [120, 160, 200, 180],
                            "target_roi": [60, 40, 150, 150]})
    matrix = np.array(result.matrix)
    assert matrix @ [10.0, 20.0, 1.0] == pytest.approx([60.0, 120.0, 1.0], abs=0.02)


def test_negative_and_large_shifts_wrap_correctly(micrographs):
    image = micrographs["grass"]
    core = RegistrationCore()
    core.put_image("ref", image[0:300, 0:300], 1.0, {})
    core.put_image("tgt", image[90:390, 120:420], 1.0, {})
    result = core.register({"reference": "ref", "target": "tgt"})
    assert result.shift_px == pytest.approx([120, 90], abs=0.02)
    swapped = core.register({"reference": "tgt", "target": "ref"})
    assert swapped.shift_px == pytest.approx([-120, -90], abs=0.02)


def test_max_shift_excludes_far_matches(micrographs):
    image = micrographs["camera"]
    core = RegistrationCore()
    core.put_image("ref", image[0:256, 0:256], 1.0, {})
    core.put_image("tgt", image[40:296, 30:286], 1.0, {})
    free = core.register({"reference": "ref", "target": "tgt"})
    assert free.shift_px == pytest.approx([30, 40], abs=0.02)
    limited = core.register({"reference": "ref", "target": "tgt", "max_shift_px": 10})
    assert math.hypot(*limited.shift_px) <= 10.0 + 1e-9
    assert not limited.success


def test_contrast_inversion_is_found(micrographs):
    image = micrographs["moon"]
    core = RegistrationCore()
    core.put_image("ref", image[0:400, 0:400], 1.0, {})
    core.put_image("tgt", 255 - image[17:417, 23:423], 1.0, {})
    result = core.register({"reference": "ref", "target": "tgt"})
    assert result.success and result.polarity == -1
    assert result.shift_px == pytest.approx([23, 17], abs=0.02)


@pytest.mark.parametrize("upsample", [100, 37, 20])
def test_refinement_equals_single_step_grid(micrographs, upsample):
    """refine_peak must give the argmax of the full 1.5 px single-step DFT grid, whether it
    starts from the Gaussian fit, from the integer peak, or from a poor start (the patch walks)."""
    rng = np.random.default_rng(7)
    image = micrographs["brick"]
    moves = 0
    for noise in (0.1, 2.0):
        for _ in range(5):
            dx, dy = rng.uniform(-5, 5, 2)
            ref, tgt = _pair(image, dx, dy, 60, noise, rng)
            spectrum = cross_power_spectrum(apodise(ref), apodise(tgt))
            surface = inverse_real_spectrum(spectrum, ref.shape)
            row, col = np.unravel_index(int(np.argmax(surface)), surface.shape)
            centre = (float(row - ref.shape[0] if row > ref.shape[0] // 2 else row),
                      float(col - ref.shape[1] if col > ref.shape[1] // 2 else col))
            size = int(math.ceil(1.5 * upsample)) | 1
            full, full_value = _argmax_on_grid(spectrum, ref.shape, centre, upsample, size, 1)
            offset = gaussian_peak_offset(surface, row, col, 1)
            for start in ((centre[0] + offset[0], centre[1] + offset[1]), None,
                          (centre[0] - 0.6, centre[1] + 0.6)):
                fast, value = refine_peak(spectrum, ref.shape, centre, upsample, 1, start=start)
                assert fast == pytest.approx(full, abs=1e-9)
                assert value == pytest.approx(full_value, rel=1e-6)
            moves += abs(full[0] - centre[0] - offset[0]) > 0.15 or abs(full[1] - centre[1] - offset[1]) > 0.15
    assert moves <= 3, "the Gaussian start should usually be within the first patch"


def test_refinement_grid_stays_in_the_neighbourhood(micrographs):
    """Even from a start outside it, the answer stays within 0.75 px of the integer peak."""
    ref, tgt = _pair(micrographs["brick"], 2.3, -1.4, 60, 0.1, np.random.default_rng(3))
    spectrum = cross_power_spectrum(apodise(ref), apodise(tgt))
    best, _ = refine_peak(spectrum, ref.shape, (1.0, -2.0), 100, 1, start=(4.0, 3.0))
    assert abs(best[0] - 1.0) <= 0.75 + 1e-9 and abs(best[1] + 2.0) <= 0.75 + 1e-9
    assert best == pytest.approx((1.4, -2.3), abs=0.05)
