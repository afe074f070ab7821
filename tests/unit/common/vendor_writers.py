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
* Bruker Nanoscope ``.spm`` (v5 and later): a CR LF text header of ``\\key: value`` lines from
  ``\\*File list`` to ``\\*File list end``, its length in the File list's ``\\Data length``; a
  ``\\*Scanner list`` with the soft scale ``\\@Sens. Zsens: V <nm/V> nm/V``; one
  ``\\*Ciao image list`` per image with ``\\Data offset``/``\\Data length``/``\\Bytes/pixel``,
  ``\\Samps/line``, ``\\Number of lines``, ``\\Scan Size``, ``\\Line Direction``,
  ``\\@2:Image Data: S [Height] "Height"`` and ``\\@2:Z scale: V [Sens. Zsens] (<V/LSB> V/LSB)
  <range> V``; then the images as little-endian integers (the fields pySPM's Bruker reader,
  which AFMReader uses, parses).
* Asylum Research ``.ibw``: an Igor binary wave version 5 (WaveMetrics TN003: 64-byte
  BinHeader5, 320-byte WaveHeader5, data, note, dimension labels), float32 (points, lines,
  channels), the channel names as labels of dimension 2 and the scan in the wave note
  (``FastScanSize``/``SlowScanSize`` in m, ``ScanPoints``/``ScanLines``), as igor2 reads it.
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


def write_nanoscope(path: Path, channels: dict[str, np.ndarray], scan_size_nm: float, volts_per_lsb_range: float,
                    sensitivity_nm_per_v: float, header_bytes: int = 8192) -> None:
    """A Bruker Nanoscope (v5+) ``.spm``: text header, then each image's int16 counts.

    Keys of ``channels`` are ``Name`` or ``Name Retrace`` (``\\Line Direction: Retrace``);
    values are the int16 counts, row 0 the first line in the file (the bottom of the scan).
    Height = counts * (``volts_per_lsb_range`` / 65536) V * ``sensitivity_nm_per_v`` nm/V:
    the layer's ``\\@2:Z scale: V [Sens. Zsens] (... V/LSB) <range> V`` names the soft scale
    ``\\@Sens. Zsens: V <nm/V> nm/V`` of the ``\\*Scanner list``.
    """
    first = next(iter(channels.values()))
    lines, samples = first.shape
    data_length = lines * samples * 2
    header = ["\\*File list", "\\Version: 0x09300201", f"\\Data length: {header_bytes}",
              "\\*Scanner list", "\\Scanner type: Multimode", f"\\@Sens. Zsens: V {sensitivity_nm_per_v} nm/V",
              "\\*Ciao scan list", f"\\Scan Size: {scan_size_nm} {scan_size_nm} nm", f"\\Samps/line: {samples}",
              f"\\Lines: {lines}"]
    for index, key in enumerate(channels):
        name, _, direction = key.partition(" ")
        header += ["\\*Ciao image list", f"\\Data offset: {header_bytes + index * data_length}",
                   f"\\Data length: {data_length}", "\\Bytes/pixel: 2", f"\\Samps/line: {samples}",
                   f"\\Number of lines: {lines}", f"\\Scan Size: {scan_size_nm} {scan_size_nm} nm",
                   f"\\Line Direction: {direction or 'Trace'}",
                   f'\\@2:Image Data: S [{name}] "{name}"',
                   f"\\@2:Z scale: V [Sens. Zsens] ({volts_per_lsb_range / 65536:.9f} V/LSB) "
                   f"{volts_per_lsb_range:.4f} V",
                   "\\@2:Z offset: V [Sens. Zsens] (0.000000000 V/LSB) 0.0000 V"]
    text = ("\r\n".join([*header, "\\*File list end"]) + "\r\n\x1a").encode("latin-1")
    if len(text) > header_bytes:
        raise ValueError(f"header of {len(text)} bytes does not fit in {header_bytes}")
    body = b"".join(np.asarray(counts, "<i2").tobytes() for counts in channels.values())
    path.write_bytes(text + b"\x00" * (header_bytes - len(text)) + body)


IGOR_NT_FP32 = 2
"""Igor number type of 32-bit float data, as Asylum Research stores its images."""


def asylum_note(fields: dict[str, str]) -> bytes:
    """An Asylum Research wave note: ``Key: value`` lines ended by carriage returns."""
    return "".join(f"{key}: {value}\r" for key, value in fields.items()).encode("latin-1")


def write_ibw(path: Path, channels: dict[str, np.ndarray], note: bytes, pixel_m: float,
              after_nul: dict[str, bytes] | None = None) -> None:
    """An Igor binary wave, version 5 (TN003), laid out as Asylum Research saves an image.

    One float32 wave of (points, lines, channels), column-major, dimension 0 the fast scan
    with line 0 at the bottom of the scan; the channel names are the labels of dimension 2
    (32-byte NUL-padded C strings, the first one naming the dimension itself, left empty).
    ``channels`` holds each image in metres with row 0 at the top of the scan. ``after_nul``
    puts bytes after a label's terminating NUL, where Asylum's software leaves the tail of an
    earlier, longer label (TN003 leaves those bytes unspecified).
    """
    names = list(channels)
    stack = np.stack([np.flipud(np.asarray(image, np.float64)).T for image in channels.values()], axis=2)
    points, lines, count = stack.shape
    data = stack.astype("<f4").ravel(order="F").tobytes()
    tails = after_nul or {}
    labels = b"".join((label.encode("latin-1") + b"\x00" + tails.get(label, b"")).ljust(32, b"\x00")
                      for label in ["", *names])
    wave_header = struct.pack(
        "<IIIih h6sh32sii4i4d4d4s16shhddI4I4II16ihhhBBIihhII",
        0, 0, 0, stack.size, IGOR_NT_FP32, 0, b"", 1, b"Image0001".ljust(32, b"\x00"), 0, 0,
        points, lines, count, 0, pixel_m, pixel_m, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0,
        b"m", b"m\x00\x00\x00m\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 0, 0, 0.0, 0.0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, *([0] * 16), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert len(wave_header) == 320, len(wave_header)
    dim_labels = (0, 0, len(labels), 0)

    def bin_header(checksum: int) -> bytes:
        return struct.pack("<hhiiii4i4iiii", 5, checksum, 320 + len(data), 0, len(note), 0, 0, 0, 0, 0,
                           *dim_labels, 0, 0, 0)

    # the int16 words of both headers sum to zero (TN003); the checksum word makes it so
    words = np.frombuffer(bin_header(0) + wave_header, "<i2").astype(np.int64)
    checksum = int((-words.sum() + 32768) % 65536 - 32768)
    path.write_bytes(bin_header(checksum) + wave_header + data + note + labels)
