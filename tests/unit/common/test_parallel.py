"""servers/common/parallel.py: both results, in order; a pair inside a pair does not wait for itself;
errors reach the caller after both parts ran."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from servers.common import parallel


def test_pair_returns_both_results_in_order():
    assert parallel.pair(lambda: "first", lambda: 2) == ("first", 2)


def test_second_runs_on_another_thread_when_there_are_cores():
    caller = threading.get_ident()
    first, second = parallel.pair(threading.get_ident, threading.get_ident)
    assert first == caller
    assert (second != caller) == (parallel.CORES > 1)


def test_a_pair_inside_the_second_part_runs_inline_instead_of_waiting_for_itself():
    # The pool has one worker: a nested pair submitted from it would wait forever.
    inner = parallel.pair(lambda: 1, lambda: parallel.pair(lambda: 2, lambda: 3))
    assert inner == (1, (2, 3))


def test_an_error_in_either_part_reaches_the_caller_after_both_ran():
    ran = []

    def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        parallel.pair(fails, lambda: ran.append("second"))
    assert ran == ["second"]
    with pytest.raises(ValueError, match="boom"):
        parallel.pair(lambda: ran.append("first"), fails)
    assert ran == ["second", "first"]


def test_halves_of_an_array_filled_side_by_side_equal_one_pass():
    data = np.random.default_rng(0).normal(size=(512, 300)).astype(np.float32)
    out = np.empty_like(data)
    parallel.pair(lambda: np.sqrt(np.abs(data[:256]), out=out[:256]),
                  lambda: np.sqrt(np.abs(data[256:]), out=out[256:]))
    assert np.array_equal(out, np.sqrt(np.abs(data)))
