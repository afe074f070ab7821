"""Real images shipped inside installed packages (nothing is downloaded).

Every real photograph or micrograph that scikit-image bundles in its wheel (the ones that
need a download are left out on purpose: the corpus must build offline), plus matplotlib's
bundled sample photograph and digital elevation model (a smooth, low-contrast real
measurement, the hardest kind for correlation). Synthetic images (checkerboard, logo,
binary blobs, phantom, text renders) are not "real" and are excluded.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return getattr(data, name)()
    return load


def _matplotlib_photo() -> np.ndarray:
    import matplotlib
    import matplotlib.image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return matplotlib.image.imread(str(path))


def _matplotlib_dem() -> np.ndarray:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "jacksboro_fault_dem.npz"
    with np.load(path) as archive:
        return np.asarray(archive["elevation"], dtype=np.float32)


LOADERS: dict[str, Callable[[], np.ndarray]] = {
    # microscopy and other measured images
    "cell": _skimage("cell"),                      # phase-contrast micrograph
    "immunohistochemistry": _skimage("immunohistochemistry"),  # stained tissue, bright-field
    "moon": _skimage("moon"),                      # telescope, smooth shading
    "hubble_deep_field": _skimage("hubble_deep_field"),  # sparse point sources on dark
    "retina": _skimage("retina"),                  # fundus photograph, smooth + vessels
    "dem": _matplotlib_dem,                        # elevation model: smooth, little texture
    # photographs
    "camera": _skimage("camera"),
    "coins": _skimage("coins"),
    "astronaut": _skimage("astronaut"),
    "brick": _skimage("brick"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
    "clock": _skimage("clock"),
    "coffee": _skimage("coffee"),
    "chelsea": _skimage("chelsea"),
    "rocket": _skimage("rocket"),
    "page": _skimage("page"),
    "grace_hopper": _matplotlib_photo,
}

TUNED: tuple[str, ...] = ("camera", "coins", "cell", "moon", "astronaut", "grass", "page")
"""Sources looked at while choosing methods and constants."""

HELD_OUT: tuple[str, ...] = ("immunohistochemistry", "hubble_deep_field", "retina", "dem", "brick",
                             "gravel", "clock", "coffee", "chelsea", "rocket", "grace_hopper")
"""Sources only reported on: never used to choose anything."""

assert set(TUNED) | set(HELD_OUT) == set(LOADERS) and not set(TUNED) & set(HELD_OUT)


@functools.lru_cache(maxsize=32)
def load(name: str) -> np.ndarray:
    """The source as float32 grey levels in [0, 1] (colour: luminance), read-only."""
    image = np.asarray(LOADERS[name](), dtype=np.float64)
    if image.ndim == 3:
        image = image[..., :3] @ np.array([0.2125, 0.7154, 0.0721])
    image = image - image.min()
    image = image / max(float(image.max()), 1e-12)
    out = image.astype(np.float32)
    out.setflags(write=False)
    return out


def split_of(name: str) -> str:
    return "tuned" if name in TUNED else "held-out"
