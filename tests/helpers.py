"""Test helpers shared by both tiers; free of Tango (the Tango ones are in tests/tango_helpers.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    """True as soon as ``predicate()`` is, False when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def write_sequence(folder: Path, n: int = 4, shape: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    """Frames whose pixel [0, 0] is their index, so a received image says which file it was."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    rng = np.random.default_rng(0)
    for i in range(n):
        data = rng.integers(100, 4000, size=shape, dtype=np.uint16)
        data[0, 0] = i
        tifffile.imwrite(folder / f"img_{i:03d}.tif", data)
        frames.append(data)
    return frames


class FakeClock:
    """A clock the test moves by hand: ``clock.t += 1.0``; called, it answers ``t``."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
