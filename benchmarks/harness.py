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
