"""Shared test images: micrographs bundled in the scikit-image wheel (nothing downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

GREY_NAMES = ("camera", "brick", "moon", "grass", "gravel", "coins", "clock", "cell")
COLOUR_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def grey(name: str) -> np.ndarray:
    image = getattr(data, name)()
    if image.ndim == 3:
        image = image[..., :3].astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
    return image.astype(np.float32)


def fourier_shift(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Exact band-limited sub-pixel shift: content at x moves to x + (dx, dy)."""
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1])[None, :]
    spectrum = np.fft.fft2(image) * np.exp(-2j * np.pi * (kx * dx + ky * dy))
    return np.fft.ifft2(spectrum).real.astype(np.float32)


@pytest.fixture(scope="session")
def micrographs() -> dict[str, np.ndarray]:
    return {name: grey(name) for name in GREY_NAMES + COLOUR_NAMES}
