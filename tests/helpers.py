"""Test helpers shared by both tiers; free of Tango (the Tango ones are in tests/tango_helpers.py)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def assert_same_json(new: str, recorded: str, volatile: tuple[str, ...] = (), rel: float = 1e-6) -> None:
    """``new`` is the JSON ``recorded`` was, as a client reads it: the same keys in the same
    order, the same JSON types (``7`` is not ``7.0``), equal strings, booleans and nulls, and
    numbers equal to ``rel`` (the last bits of a float may differ between BLAS and OpenCV
    builds) or within 1e-7 (a value near zero moves by more than ``rel`` of itself: with
    OpenCV 5.0 a rotation of -3.14640e-4 deg became -3.14630e-4; 1e-7 px, deg or scale is
    far below anything a registration resolves).
    Values under a key named in ``volatile`` (times, tokens) need only keep their JSON type."""
    def pairs(text: str) -> Any:
        return json.loads(text, object_pairs_hook=lambda items: ("object", items))

    def same(a: Any, b: Any, where: str) -> None:
        if isinstance(b, tuple) and b[:1] == ("object",):
            assert isinstance(a, tuple) and a[:1] == ("object",), f"{where}: {a!r} is not an object"
            assert [k for k, _ in a[1]] == [k for k, _ in b[1]], f"{where}: keys {[k for k, _ in a[1]]} " \
                                                                 f"differ from the recorded {[k for k, _ in b[1]]}"
            for (key, va), (_, vb) in zip(a[1], b[1], strict=True):
                if key in volatile:
                    assert type(va) is type(vb), f"{where}.{key}: {type(va).__name__} is not {type(vb).__name__}"
                else:
                    same(va, vb, f"{where}.{key}")
            return
        assert type(a) is type(b), f"{where}: {a!r} ({type(a).__name__}) is not like the recorded {b!r}"
        if isinstance(b, list):
            assert len(a) == len(b), f"{where}: {len(a)} items, recorded {len(b)}"
            for i, (va, vb) in enumerate(zip(a, b, strict=True)):
                same(va, vb, f"{where}[{i}]")
        elif isinstance(b, float):
            assert math.isclose(a, b, rel_tol=rel, abs_tol=1e-7), f"{where}: {a!r} differs from the recorded {b!r}"
        else:
            assert a == b, f"{where}: {a!r} differs from the recorded {b!r}"

    same(pairs(new), pairs(recorded), "$")
