"""AFM images in the formats the instruments write, read through AFMReader.

AFM topographs are reference images like SEM micrographs, but each vendor has its own
container: Bruker Nanoscope ``.spm``, Gwyddion ``.gwy``, Asylum Research/Igor ``.ibw`` and
JPK ``.jpk``. AFMReader (maintained by the TopoStats team) reads all four and returns the
chosen channel with its pixel size in nanometres, so we do not keep parsers of our own.

A file holds several channels (height, amplitude, phase, trace and retrace); the one to
use is named by the caller, and when it is not, each format's usual height channel is
taken. A channel that is not in the file is refused with the list of channels it has.
AFMReader flips the rows so that row 0 is the top of the scan as the instrument shows it.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from servers.common.errors import BadArgument

AFM_SUFFIXES = (".spm", ".gwy", ".ibw", ".jpk")
DEFAULT_CHANNELS = {".spm": "Height", ".gwy": "Height", ".ibw": "HeightTracee", ".jpk": "height_trace"}
"""The height channel each format usually has (AFMReader's documented examples)."""
FALLBACK_CHANNELS = {".ibw": ("HeightTrace",)}
"""Tried in turn when the default channel is not in the file.

igor2 joins an Igor dimension label's 32 bytes without the NULs, so the bytes Asylum's
software leaves after the terminating NUL (``HeightTrace\\0e``, the tail of an earlier
``HeightRetrace``) make AFMReader's ``HeightTracee``; a wave whose labels are clean C strings,
as TN003 writes them, has ``HeightTrace``.
"""
PIXEL_SIZE_FIELDS = {".spm": "Nanoscope header Scan Size / Samps/line",
                     ".gwy": "GwyDataField xreal / xres",
                     ".ibw": "wave note SlowScanSize / rows",
                     ".jpk": "JPK tags Grid-uLength / Grid-iLength"}
"""Which fields of each format the pixel size is computed from (by AFMReader)."""
FORMAT_NAMES = {".spm": "Bruker Nanoscope", ".gwy": "Gwyddion", ".ibw": "Asylum Research/Igor",
                ".jpk": "JPK"}


@dataclass
class AfmImage:
    """One channel of an AFM file: heights (as AFMReader scales them) and its pixel size."""

    data: np.ndarray
    pixel_size_um: float
    channel: str
    pixel_size_source: str
    format_name: str


def _quiet_afmreader() -> None:
    """AFMReader logs every load through loguru at INFO to stderr; a server needs none of it."""
    try:
        from loguru import logger

        logger.disable("AFMReader")
    except ImportError:  # loguru is AFMReader's dependency; without it AFMReader fails first
        logging.getLogger("AFMReader").setLevel(logging.WARNING)


def read_afm(path: str, suffix: str, channel: str | None, shown: str) -> AfmImage:
    """Read ``channel`` (default: the format's height channel) of the AFM file at ``path``."""
    loaders = {".spm": ("AFMReader.spm", "load_spm"), ".gwy": ("AFMReader.gwy", "load_gwy"),
               ".ibw": ("AFMReader.ibw", "load_ibw"), ".jpk": ("AFMReader.jpk", "load_jpk")}
    module_name, function_name = loaders[suffix]
    format_name = FORMAT_NAMES[suffix]
    candidates = [channel] if channel else [DEFAULT_CHANNELS[suffix], *FALLBACK_CHANNELS.get(suffix, ())]
    _check_signature(path, suffix, format_name, shown)
    try:
        import importlib

        module = importlib.import_module(module_name)
        _quiet_afmreader()
        load = getattr(module, function_name)
    except ImportError as exc:
        raise BadArgument(f"{shown} is a {format_name} AFM file, but its reader (AFMReader) is not installed "
                          f"on the server ({exc}); install the package AFMReader") from None
    for chosen in candidates:
        try:
            image, nm_per_pixel = load(path, chosen)
            break
        except ValueError as exc:
            message = str(exc)
            if "channel list" in message and chosen != candidates[-1]:
                continue  # the next usual name of the height channel
            _refuse_load(message, candidates, shown, format_name)
        except Exception as exc:  # the readers raise many types for truncated or foreign files
            raise BadArgument(f"{shown} is not a readable {format_name} AFM file ({type(exc).__name__}: "
                              f"{exc}); check the file, or export it again from the instrument software") from None
    array = np.asarray(image)
    if suffix == ".gwy" and array.ndim == 2 and array.shape[0] != array.shape[1]:
        # AFMReader 0.0.7 reshapes Gwyddion data to (xres, yres): right only for square fields
        raise BadArgument(f"{shown} holds a non-square Gwyddion field ({array.shape[1]} x {array.shape[0]} as "
                          "read), which the Gwyddion reader (AFMReader) does not read correctly; crop it to a "
                          "square in Gwyddion, or export it as TIFF")
    if array.ndim != 2:
        raise BadArgument(f"channel {chosen!r} of {shown} has shape {array.shape}, not a 2-D image")
    size_nm = float(nm_per_pixel) if isinstance(nm_per_pixel, (int, float, np.floating)) else math.nan
    if not math.isfinite(size_nm) or size_nm <= 0:
        raise BadArgument(f"{shown} ({format_name}) gives a pixel size of {nm_per_pixel!r} nm; the file's "
                          "scan size is damaged. Export it again, or read it with Gwyddion and save as TIFF")
    return AfmImage(np.ascontiguousarray(array), size_nm / 1000.0, chosen,
                    f"{PIXEL_SIZE_FIELDS[suffix]} (AFMReader, channel {chosen!r})", format_name)


_HEADER_BYTES = 1 << 20
"""A Nanoscope text header is ~40 kB; its end marker must come within the first MiB."""


def _check_signature(path: str, suffix: str, format_name: str, shown: str) -> None:
    """Refuse a file whose first bytes are not the format's before the reader sees it.

    pySPM loops without end on a ``.spm`` that lacks the Nanoscope header, so a foreign or
    truncated file would otherwise only end in the time limit, with a worker left busy.
    """
    with open(path, "rb") as stream:  # noqa: PTH123 - a regular file: the caller opened and checked it
        head = stream.read(_HEADER_BYTES)
    problem = None
    if suffix == ".spm":
        if not head.startswith(b"\\*File list"):
            problem = "it does not start with the Nanoscope header line '\\*File list'"
        elif b"\\*File list end" not in head:
            problem = "its Nanoscope header has no '\\*File list end' (truncated?)"
    elif suffix == ".gwy" and not head.startswith(b"GWYP"):
        problem = "it does not start with the Gwyddion signature 'GWYP'"
    elif suffix == ".ibw" and (len(head) < 2 or (int.from_bytes(head[:2], "little") not in (1, 2, 3, 5)
                                                  and int.from_bytes(head[:2], "big") not in (1, 2, 3, 5))):
        problem = "its first two bytes are not an Igor binary wave version (1, 2, 3 or 5)"
    elif suffix == ".jpk" and head[:4] not in (b"II*\x00", b"MM\x00*"):
        problem = "it is not a TIFF container, which every JPK image file is"
    if problem:
        raise BadArgument(f"{shown} is not a {format_name} AFM file: {problem}; check the file, or export it "
                          "again from the instrument software")


def _channel_names(message: str) -> str:
    """The channel list out of AFMReader's message ("... channel list: [...]" or a dict)."""
    match = re.search(r"channel list: (.*)$", message, re.S)
    return match.group(1).strip() if match else "other channels"


def _refuse_load(message: str, tried: list[str], shown: str, format_name: str) -> NoReturn:
    """Turn AFMReader's ValueError into the user's answer: a missing channel, or a bad file."""
    if "channel list" in message:
        available = _channel_names(message)
        names = " nor ".join(repr(name) for name in tried)
        raise BadArgument(f"{shown} ({format_name}) has no channel {names}; it has {available}. "
                          "Pass \"channel\" with one of them") from None
    raise BadArgument(f"{shown} is not a readable {format_name} AFM file (ValueError: {message}); "
                      "export it again from the instrument software") from None
