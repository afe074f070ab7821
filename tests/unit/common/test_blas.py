"""servers/common/blas.py: same products, BLAS thread count restored, no spinning left behind."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info

from servers.common import blas


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_split_product_equals_the_plain_product():
    rng = np.random.default_rng(0)
    for rows, inner, cols in ((2048, 2050, 62), (1001, 300, 7), (16, 16, 3)):
        left = rng.normal(size=(rows, inner)).astype(np.float32)
        right = rng.normal(size=(inner, cols)).astype(np.float32)
        with blas.single_threaded_blas(left.size):
            split = blas.split_product(left, right)
        np.testing.assert_allclose(split, left @ right, rtol=1e-5, atol=1e-3)
        assert split.shape == (rows, cols) and split.dtype == np.float32


def test_single_threaded_blas_limits_large_work_and_restores():
    before = _blas_threads()
    with blas.single_threaded_blas(blas.SPLIT_MIN_ELEMENTS):
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == before
    with blas.single_threaded_blas(blas.SPLIT_MIN_ELEMENTS - 1):
        assert _blas_threads() == before  # small work: left alone
