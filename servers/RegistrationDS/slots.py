"""Named image slots: the images a registration is computed between.

A slot is immutable once stored, so a registration running on a snapshot of two slots
can never see half of a reload, and a refused load leaves the old image in place
(the new one is fully validated before it replaces anything).
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servers.common.errors import BadArgument, NotFound
from servers.common.grey import to_grey
from servers.common.imageio import check_pixel_count
from servers.RegistrationDS.results import SlotDescription

MAX_SLOTS = 32
"""Slots live in server memory; 32 x 100 Mpx would already be far too much, so cap the count."""

_SLOT_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True)
class ImageSlot:
    """One stored image: pixels at full depth, pixel size in µm, provenance."""

    name: str
    data: np.ndarray
    pixel_size_um: float
    source_dtype: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    loaded_at: float = field(default_factory=time.time)

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    def describe(self) -> SlotDescription:
        """The start of the LoadImage/GrabImage result: what the user needs to check the load was right."""
        return SlotDescription(self.name, self.width, self.height, self.pixel_size_um, self.source_dtype,
                               tuple(self.warnings))


def validate_image(array: Any, where: str) -> np.ndarray:
    """Return a read-only 2-D real array, refusing what no registration can use."""
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except Exception:
            raise BadArgument(f"{where} is not an array of pixels") from None
    if array.dtype.kind not in "uifb":
        raise BadArgument(f"{where} has dtype {array.dtype}; give integer or float pixels")
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    check_pixel_count(array.shape, where)
    array = to_grey(array)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise BadArgument(f"{where} contains {bad} NaN or infinite pixels; replace them "
                          "(e.g. with the background level) before loading")
    if min(array.shape) < 8:
        raise BadArgument(f"{where} is only {array.shape[1]}x{array.shape[0]} px; at least 8x8 is needed")
    low, high = array.min(), array.max()
    if low == high:
        raise BadArgument(f"{where} is constant (every pixel is {low}); nothing can be registered "
                          "on it. Check exposure, illumination or the lens cap")
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


def validate_pixel_size(value: Any) -> float:
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or value <= 0 or value > 1e6):
        raise BadArgument(f"pixel_size_um must be a positive number of micrometres per pixel, got {value!r}")
    return float(value)


def validate_slot_name(name: Any) -> str:
    if not isinstance(name, str) or not _SLOT_NAME.match(name):
        raise BadArgument(f"slot name {name!r} is not valid; use 1-64 letters, digits, '_', '-' or '.'")
    return name


class SlotStore:
    """Thread-safe mapping of slot name -> :class:`ImageSlot`."""

    def __init__(self, max_slots: int = MAX_SLOTS) -> None:
        self._slots: dict[str, ImageSlot] = {}
        self._lock = threading.Lock()
        self._max_slots = max_slots

    def put(self, slot: ImageSlot) -> None:
        with self._lock:
            if slot.name not in self._slots and len(self._slots) >= self._max_slots:
                raise BadArgument(f"all {self._max_slots} slots are in use ({', '.join(sorted(self._slots))}); "
                                  "reuse a name or remove a slot first")
            self._slots[slot.name] = slot

    def get(self, name: str) -> ImageSlot:
        with self._lock:
            slot = self._slots.get(name)
            known = sorted(self._slots)
        if slot is None:
            listing = ", ".join(known) if known else "none yet"
            raise NotFound(f"no image in slot '{name}' (slots: {listing}); load one with LoadImage or GrabImage")
        return slot

    def remove(self, name: str) -> None:
        with self._lock:
            if name not in self._slots:
                raise NotFound(f"no image in slot '{name}'; nothing to remove")
            del self._slots[name]

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._slots)

    def describe_all(self) -> list[SlotDescription]:
        with self._lock:
            slots = [self._slots[name] for name in sorted(self._slots)]
        return [slot.describe() for slot in slots]
