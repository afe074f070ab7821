"""Small files in instrument formats, written by the tests following each format's specification.

Used where no small real file can be kept in the repository (see
tests/data/vendor_images/README.md):

* TESCAN SEM TIFF: TIFF tag 50431 (BYTE) holding blocks of ``uint32 size, uint16 type,
  text`` with ``size`` counting the type and the text; type 2 = MAIN (``PixelSizeX`` in m),
  type 3 = SEM (``StageX/Y/Z`` in m, ``StageRotation``/``StageTilt`` in deg), type 0 ends
  (the layout documented by Gwyddion's TESCAN reader).
* Gwyddion ``.gwy``: ``GWYP`` magic, then serialised objects: name NUL, uint32 body size,
  components (name NUL, one type character, value; ``o`` object, ``i`` int32, ``d`` double,
  ``s`` NUL-terminated string, ``D`` uint32 count + doubles), little-endian (Gwyddion's
  "GWY file format" specification).
* JPK ``.jpk``: a TIFF whose first page carries the scan grid (tags 32834/32835 fast/slow
  length in m, 32838/32839 pixels) and each further page one channel (32848 name, 32849
  trace=0/retrace=1, 32896 number of conversion slots, 32897 default slot, 32912 + 48 n slot
  name, 32931 + 48 n scaling type, 32932/32933 + 48 n multiplier and offset) (JPKImageSpec
  2.0, the tag numbers AFMReader's configuration lists).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import tifffile


def tescan_tag(main: dict[str, str], sem: dict[str, str]) -> bytes:
    """The bytes of TESCAN tag 50431 for the given MAIN and SEM fields."""
    def block(kind: int, fields: dict[str, str]) -> bytes:
        text = "".join(f"{key}={value}\r\n" for key, value in fields.items()).encode("latin-1")
        return struct.pack("<IH", len(text) + 2, kind) + text

    return block(2, main) + block(3, sem) + struct.pack("<IH", 2, 0)


def write_tescan_tiff(path: Path, image: np.ndarray, tag: bytes) -> None:
    tifffile.imwrite(path, image, software="TESCAN Essence", extratags=[(50431, "B", len(tag), tag, True)])


def _gwy_string(text: str) -> bytes:
    return text.encode("utf-8") + b"\x00"


def _gwy_object(name: str, components: list[bytes]) -> bytes:
    body = b"".join(components)
    return _gwy_string(name) + struct.pack("<I", len(body)) + body


def _gwy_component(name: str, kind: str, value: object) -> bytes:
    head = _gwy_string(name) + kind.encode("ascii")
    if kind == "o":
        return head + value  # type: ignore[operator]
    if kind == "i":
        return head + struct.pack("<i", value)
    if kind == "d":
        return head + struct.pack("<d", value)
    if kind == "s":
        return head + _gwy_string(str(value))
    if kind == "D":
        array = np.asarray(value, dtype="<f8").ravel()
        return head + struct.pack("<I", array.size) + array.tobytes()
    raise ValueError(kind)


def write_gwy(path: Path, channels: dict[str, np.ndarray], xreal_m: float) -> None:
    """A Gwyddion file with one data field per channel (heights in m), square pixels."""
    components = []
    for index, (title, heights) in enumerate(channels.items()):
        rows, cols = heights.shape
        unit = _gwy_object("GwySIUnit", [_gwy_component("unitstr", "s", "m")])
        field = _gwy_object("GwyDataField", [
            _gwy_component("xres", "i", cols), _gwy_component("yres", "i", rows),
            _gwy_component("xreal", "d", xreal_m), _gwy_component("yreal", "d", xreal_m * rows / cols),
            _gwy_component("si_unit_xy", "o", unit),
            _gwy_component("si_unit_z", "o", _gwy_object("GwySIUnit", [_gwy_component("unitstr", "s", "m")])),
            _gwy_component("data", "D", heights),
        ])
        components.append(_gwy_component(f"/{index}/data", "o", field))
        components.append(_gwy_component(f"/{index}/data/title", "s", title))
    path.write_bytes(b"GWYP" + _gwy_object("GwyContainer", components))


def write_jpk(path: Path, channels: dict[str, np.ndarray], ulength_m: float, metres_per_count: float) -> None:
    """A JPK image file: thumbnail page with the grid, then one page per ``name_trace`` channel.

    Each channel stores int32 counts with two conversion slots, as JPK software writes them:
    slot 0 ``raw`` (NullScaling) and slot 1 ``nominal`` (LinearScaling: ``metres_per_count``,
    offset 0), the default.
    """
    first = next(iter(channels.values()))
    rows, cols = first.shape
    grid = [(32834, "d", 1, ulength_m, True), (32835, "d", 1, ulength_m * rows / cols, True),
            (32838, "i", 1, cols, True), (32839, "i", 1, rows, True)]
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.zeros((8, 8), np.uint8), extratags=[*grid, (32848, "s", 0, "thumbnail", True)])
        for key, counts in channels.items():
            name, _, direction = key.rpartition("_")
            tags = [(32848, "s", 0, name, True), (32849, "h", 1, 0 if direction == "trace" else 1, True),
                    (32896, "i", 1, 2, True), (32897, "s", 0, "nominal", True),
                    (32912, "s", 0, "raw", True), (32931, "s", 0, "NullScaling", True),
                    (32960, "s", 0, "nominal", True), (32979, "s", 0, "LinearScaling", True),
                    (32980, "d", 1, metres_per_count, True), (32981, "d", 1, 0.0, True)]
            tif.write(np.asarray(counts, np.int32), extratags=tags)
