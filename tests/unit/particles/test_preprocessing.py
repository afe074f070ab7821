"""Each OpenCV step gives what the trackpy step it replaces gives, on random images."""

from __future__ import annotations

import numpy as np
import pytest
import trackpy
from trackpy.find import grey_dilation, percentile_threshold, where_close

from servers.ParticleDS import preprocessing

from .synthetic import render_spots


def _spots(seed: int, dtype: type) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(10, 246, (60, 2))
    peak = 120.0 if dtype == np.uint8 else 3000.0
    return render_spots((256, 256), xy, peak=peak, background=peak / 6, noise=peak / 30, seed=seed,
                        dtype=dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("seed", range(4))
def test_percentile_threshold_is_the_same_float_as_trackpy(dtype: type, seed: int) -> None:
    image = _spots(seed, dtype)
    for percentile in (0.0, 30.0, 64.0, 99.5):
        assert preprocessing.percentile_threshold(image, percentile) == percentile_threshold(image, percentile)


@pytest.mark.parametrize("seed", range(3))
def test_bandpass_matches_trackpy_within_float32_rounding(seed: int) -> None:
    image = _spots(seed, np.uint16)
    ours = preprocessing.bandpass(image, 1.0, 11, 1.0)
    theirs = trackpy.preprocessing.bandpass(image, 1.0, 11, 1.0)
    assert np.max(np.abs(ours - theirs)) < 1e-3 * theirs.max()


@pytest.mark.parametrize("separation", [5.0, 8.0, 12.0, 7.5])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_local_maxima_are_trackpys_candidates(separation: float, dtype: type) -> None:
    image = trackpy.preprocessing.convert_to_int(
        trackpy.preprocessing.bandpass(_spots(3, dtype), 1, 9, 1), dtype)[1]
    margin = (5, 5)
    ours = preprocessing.local_maxima(image, separation, 64.0, margin)
    theirs = grey_dilation(image, separation, 64.0, margin, precise=False)
    assert len(ours) > 10
    assert sorted(map(tuple, ours)) == sorted(map(tuple, theirs.astype(int)))


@pytest.mark.parametrize("separation", [0.0, 3.0, 8.0, 12.5])
@pytest.mark.parametrize("seed", range(3))
def test_where_close_drops_what_trackpy_drops(separation: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 200, (400, 2))
    pos[::3] = np.rint(pos[::3])  # ties in the coordinate sum too
    intensity = rng.integers(0, 5, len(pos)).astype(float)  # many equal intensities: the tie rule
    expected = np.asarray(where_close(pos, (separation, separation), intensity), dtype=np.intp)
    dropped = preprocessing.where_close(pos, separation, intensity)
    assert len(expected) > 0 or separation == 0.0
    np.testing.assert_array_equal(dropped, expected)
