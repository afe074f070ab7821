"""The translation's faster transforms give pocketfft's numbers (to the last bit where the
docstrings say so, to float32 rounding where another library computes them), the kept work
arrays are reused only by one registration at a time, and the uncertainty's separable phase
is the direct one."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.fft

from servers.RegistrationDS import translation, uncertainty
from servers.RegistrationDS.preprocess import apodise
from servers.RegistrationDS.translation import (
    Buffers,
    buffers,
    estimate_translation,
    inverse_real_spectrum,
    opencv_real_spectrum,
)

from .conftest import fourier_shift

SHAPES = [(256, 256), (64, 100), (100, 64), (96, 96), (300, 301), (17, 32), (32, 17), (2048, 2048)]


def _image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_opencv_spectrum_is_the_real_fft(shape):
    image = _image(shape)
    expected = scipy.fft.rfft2(image)
    found = opencv_real_spectrum(image.copy())
    assert found.shape == expected.shape and found.dtype == np.complex64
    assert np.abs(found - expected).max() <= 1e-6 * np.abs(expected).max()
    if shape[0] % 2 or shape[1] % 2:  # pocketfft itself, on one thread
        assert np.array_equal(found, expected)


def test_opencv_spectrum_fills_the_given_array():
    image = _image((128, 64))
    out = np.empty((128, 33), np.complex64)
    assert opencv_real_spectrum(image.copy(), out=out) is out
    assert np.abs(out - scipy.fft.rfft2(image)).max() <= 1e-6 * np.abs(out).max()


@pytest.mark.parametrize("shape", SHAPES + [(512, 768), (4096, 4096), (2, 2)])
def test_inverse_is_irfft2_to_the_last_bit(shape):
    spectrum = scipy.fft.rfft2(_image(shape, 1)).astype(np.complex64)
    kept = spectrum.copy()
    assert np.array_equal(inverse_real_spectrum(spectrum, shape),
                          scipy.fft.irfft2(kept, s=shape, workers=-1).astype(np.float32))
    assert np.array_equal(spectrum, kept)  # the input is not overwritten


@pytest.mark.parametrize("shape", [(256, 256), (64, 100), (2048, 2048)])
def test_surface_from_copy_is_irfft2(shape):
    spectrum = scipy.fft.rfft2(_image(shape, 2)).astype(np.complex64)
    expected = scipy.fft.irfft2(spectrum, s=shape)
    out = np.empty(shape, np.float32)
    assert translation._surface_from_copy(spectrum.copy(), shape, out) is out
    assert np.abs(out - expected).max() <= 1e-6 * np.abs(expected).max()


def test_buffers_are_kept_per_shape_and_lent_to_one_call_at_a_time():
    with buffers((64, 64)) as first:
        assert isinstance(first, Buffers) and first.shape == (64, 64)
        with buffers((64, 64)) as nested:  # held: a second user gets its own
            assert nested is not first
        seen: list[Buffers | None] = []
        thread = threading.Thread(target=lambda: seen.append(buffers((64, 64)).__enter__()))
        thread.start()
        thread.join()
        assert seen[0] is not first
    with buffers((64, 64)) as again:
        assert again is first
    with buffers((32, 64)) as other:
        assert other is not first and other.shape == (32, 64)
    with buffers((64, 64)) as after:  # one shape is kept, not every shape seen
        assert after is not first
    with buffers((31, 64)) as odd:
        assert odd is None


def test_large_buffers_are_not_kept(monkeypatch):
    monkeypatch.setattr(translation, "KEPT_BUFFER_BYTES", 1000)
    monkeypatch.setattr(translation, "_kept", None)
    with buffers((64, 64)) as first:
        assert first is not None
    with buffers((64, 64)) as second:
        assert second is not first


def test_buffers_must_hold_the_spectra():
    image = _image((64, 64))
    with buffers((64, 64)) as work, pytest.raises(Exception, match="buffers"):
        estimate_translation(image, image, 10, buffers=work)


def test_buffered_translation_is_the_plain_one(micrographs):
    image = micrographs["camera"][:300, :300]
    ref = apodise(image[22:278, 22:278].astype(np.float32))
    tgt = apodise(fourier_shift(image, 3.37, -5.61)[22:278, 22:278].astype(np.float32))
    plain = estimate_translation(ref, tgt, 100, with_uncertainty=True)
    with buffers(ref.shape) as work:
        assert work is not None
        work.windowed[0][...] = ref
        work.windowed[1][...] = tgt
        spectra = [opencv_real_spectrum(work.windowed[i], out=work.spectra[i]) for i in (0, 1)]
        fast = estimate_translation(work.windowed[0], work.windowed[1], 100, reference_spectrum=spectra[0],
                                    target_spectrum=spectra[1], with_uncertainty=True, buffers=work)
    assert fast.shift == plain.shift
    assert fast.distinctness == pytest.approx(plain.distinctness, rel=1e-5)
    assert fast.covariance == pytest.approx(plain.covariance, rel=1e-4)
    assert fast.polarity == plain.polarity and fast.bands_agree == plain.bands_agree


def test_separable_phase_is_the_direct_exponential():
    grid = uncertainty._frequencies((2048, 2048))
    for shift in ((-13.37, 7.61), (0.0, 0.0), (511.3, -1020.9)):
        direct = np.exp(2j * np.pi * (grid.kx * shift[0] + grid.ky * shift[1]))
        # both round their phase arguments, of up to 2 pi * 1000 rad here: ~1e-13 apart
        assert np.abs(uncertainty._phase(grid, shift) - direct).max() <= 1e-11
