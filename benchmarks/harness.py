"""The contract between ``make bench`` and the benchmark modules.

Each ``benchmarks/bench_*.py`` defines ``run(report: Report) -> None`` and calls
``report.add(...)`` once per figure. A figure is always a ratio against what a user
would otherwise use, measured in the same run on the same inputs, so the number says
something on any machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Figure:
    value: float
    unit: str
    baseline: float | None
    ratio: float | None
    note: str


@dataclass
class Report:
    figures: dict[str, Figure] = field(default_factory=dict)

    def add(self, name: str, value: float, unit: str, baseline: float | None = None,
            ratio: float | None = None, note: str = "") -> None:
        self.figures[name] = Figure(float(value), unit, None if baseline is None else float(baseline),
                                    None if ratio is None else float(ratio), note)

    def as_json(self) -> dict[str, Any]:
        return {name: asdict(fig) for name, fig in self.figures.items()}


def best_time(function: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time in seconds of ``function()`` after ``warmup`` untimed calls.

    The median resists the odd scheduler hiccup on a 2-core machine better than
    the mean, and unlike the minimum it does not reward a lucky cache state.
    """
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


SETTLE_S = 0.3
"""Idle time before each timed call of :func:`paired_times`. OpenBLAS worker threads keep
spinning for ~0.1 s after a matrix product (its THREAD_TIMEOUT); without a pause, the
previous call's spinning threads take a core from the next call's FFT threads, so the call
timed second pays for the first. Measured on the 2-core machine: a 2048x2048 rfft2 takes
17 ms right after a threaded 2048x2050 by 62 matrix product and 9-10 ms after 0.3 s idle.

The pause is also how a call meets the machine in use: a Register follows a camera frame, not
another library's call. It is not neutral for every library: arrays freed back to the system
cost fresh pages after a pause, which is why bench_registration also times both libraries back
to back (:func:`looped_times`) and reports the lower of the two ratios."""


def paired_times(ours: Callable[[], Any], baseline: Callable[[], Any], rounds: int = 5,
                 warmup: int = 1, settle_s: float = SETTLE_S) -> tuple[float, float, float]:
    """Median times of ``ours`` and ``baseline`` timed alternately, and the median of the
    per-round ratios baseline/ours.

    On a shared 2-core machine the load changes between two timing blocks; alternating
    the two calls in every round exposes both to the same load, so the ratio is fair even
    when the absolute times are not. Each timed call starts after ``settle_s`` idle, so
    neither pays for the other's leftover worker threads (a Register command or a
    user's script call does not follow another library's call within 0.1 s either).
    """
    for _ in range(warmup):
        ours()
        baseline()
    mine, theirs, ratios = [], [], []
    for _ in range(rounds):
        time.sleep(settle_s)
        start = time.perf_counter()
        ours()
        t_ours = time.perf_counter() - start
        time.sleep(settle_s)
        start = time.perf_counter()
        baseline()
        t_base = time.perf_counter() - start
        mine.append(t_ours)
        theirs.append(t_base)
        ratios.append(t_base / t_ours)
    return statistics.median(mine), statistics.median(theirs), statistics.median(ratios)


def looped_times(ours: Callable[[], Any], baseline: Callable[[], Any], rounds: int = 5,
                 calls: int = 3) -> tuple[float, float, float]:
    """Median times of ``ours`` and ``baseline`` each called back to back with itself (a
    script calling one library in a loop), and the median of the per-round ratios.

    Every round runs ``calls + 1`` calls of ours in a row, then as many of the baseline,
    and times all but the first of each block (which follows the other library or the
    previous round). Rounds alternate which library goes first, so a change of load on the
    shared machine reaches both, as in :func:`paired_times`."""
    mine, theirs, ratios = [], [], []
    for round_index in range(rounds):
        blocks: dict[str, list[float]] = {"ours": [], "baseline": []}
        order = (("ours", ours), ("baseline", baseline))
        for name, function in order if round_index % 2 == 0 else order[::-1]:
            function()
            for _ in range(calls):
                start = time.perf_counter()
                function()
                blocks[name].append(time.perf_counter() - start)
        t_ours, t_base = statistics.median(blocks["ours"]), statistics.median(blocks["baseline"])
        mine.append(t_ours)
        theirs.append(t_base)
        ratios.append(t_base / t_ours)
    return statistics.median(mine), statistics.median(theirs), statistics.median(ratios)
