"""Reading micrographs and camera frames from files, at full bit depth, for every server.

SEM, AFM, XRF and camera images arrive as TIFF (8/16/32-bit integer or float), PNG or
JPEG. Registration and particle detection need the real intensities, not a display
pixmap, so nothing is rescaled here; colour images become one grey channel because every
algorithm downstream works on intensity. The pixel size travels with the image because
it is what lets images of different instruments be compared at all.

Errors use the SMART vocabulary so a device shell can pass them straight on:
a missing file is :class:`NotFound`, anything unreadable or unreasonable is
:class:`BadArgument`. Nothing is decoded before the header has been checked against
:data:`MAX_PIXELS`, so a hostile or mistaken 50 GB file costs no memory; only regular files
are opened and every read is time-limited (:mod:`servers.common.safefile`), so no path can
block the device that asked.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from servers.common import safefile
from servers.common.errors import BadArgument

MAX_PIXELS = 100_000_000
"""Largest image accepted (100 Mpx, e.g. 10k x 10k): beyond this a float32 working copy
alone needs 400 MB, which a control-system server should not silently allocate."""

TIFF_SUFFIXES = (".tif", ".tiff")
OTHER_SUFFIXES = (".png", ".jpg", ".jpeg")

_LUMA = np.array([0.2125, 0.7154, 0.0721])  # ITU-R BT.709, as skimage.color.rgb2gray
_UM_PER_UNIT = {2: 25_400.0, 3: 10_000.0}  # TIFF ResolutionUnit: 2 = inch, 3 = centimetre
_IMAGEJ_MICRON_UNITS = {"micron", "um", "µm", "\\u00B5m", "microns"}


@dataclass
class LoadedImage:
    """A decoded 2-D image and what the file says about it.

    ``data`` keeps the stored dtype for grey images (uint8/uint16/uint32/int*/float*);
    colour images become float32 grey, because averaging channels creates fractions.
    ``pixel_size_um`` is ``None`` when the file does not say; the caller decides the default.
    """

    data: np.ndarray
    pixel_size_um: float | None
    source_dtype: str
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def to_grey(array: np.ndarray) -> np.ndarray:
    """Return a 2-D image: grey stays as is, RGB(A) becomes float32 luminance."""
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3].astype(np.float32)
        return (rgb @ _LUMA.astype(np.float32)).astype(np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        return array[..., 0]
    raise BadArgument(
        f"the image has shape {array.shape}; expected a 2-D grey image or RGB(A) with 3 or 4 "
        "channels last. Save a single plane (e.g. one slice of a stack) and load that"
    )


def check_pixel_count(shape: tuple[int, ...], where: str) -> None:
    """Refuse empty and oversized images before any pixel is decoded."""
    pixels = int(np.prod(shape[:2])) if len(shape) >= 2 else 0
    if pixels == 0:
        raise BadArgument(f"{where} is empty (shape {tuple(shape)}); give an image with pixels")
    if pixels > MAX_PIXELS:
        raise BadArgument(
            f"{where} has {pixels / 1e6:.1f} Mpx, more than the limit of {MAX_PIXELS / 1e6:.0f} Mpx; "
            "bin or crop it first"
        )


def read_image(path: str, timeout_s: float = safefile.DEFAULT_TIMEOUT_S) -> LoadedImage:
    """Decode ``path`` (TIFF, PNG, JPEG) into a 2-D array with its pixel size if known.

    Only a regular file is read, within ``timeout_s`` (see :mod:`servers.common.safefile`):
    a FIFO, device or directory is refused at once, a path that does not answer gives
    :class:`~servers.common.errors.Failed` naming it, and the caller is never blocked longer.
    """
    safefile.check_path_text(path, "image path")
    return safefile.run_with_time_limit(lambda: _read_now(path), f"reading {safefile.describe_path(path)}",
                                        timeout_s)


def _read_now(path: str) -> LoadedImage:
    with safefile.open_regular(path, "image file") as stream:
        suffix = os.path.splitext(path)[1].lower()
        if suffix in TIFF_SUFFIXES:
            return _read_tiff(path, stream)
        if suffix in OTHER_SUFFIXES:
            return _read_with_pillow(path, stream)
        # Unknown extension: try TIFF first (instrument software often uses odd suffixes).
        try:
            return _read_tiff(path, stream)
        except BadArgument:
            stream.seek(0)
            return _read_with_pillow(path, stream)


def _read_tiff(path: str, stream: BinaryIO) -> LoadedImage:
    import tifffile

    shown = safefile.describe_path(path)
    if os.fstat(stream.fileno()).st_size == 0:
        raise BadArgument(f"{shown} is empty (0 bytes); save the image again")
    try:
        with tifffile.TiffFile(stream) as tif:
            if not tif.pages:
                raise BadArgument(f"{shown} is a TIFF without images; save the image again")
            page = tif.pages[0]
            shape = tuple(page.shape)
            check_pixel_count(shape if len(shape) == 2 or shape[-1] in (1, 3, 4) else shape[-2:],
                              f"the image in {shown}")
            raw = page.asarray()
            description = page.description or ""
            tags = {tag.name: tag.value for tag in page.tags.values()}
            imagej = tif.imagej_metadata or {}
    except BadArgument:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt or non-TIFF input
        raise BadArgument(f"{shown} is not a readable TIFF image ({type(exc).__name__}: {exc}); "
                          "check the file, or export it again as TIFF, PNG or JPEG") from None
    if raw.ndim == 3 and raw.shape[-1] not in (1, 3, 4):
        raise BadArgument(f"{shown} holds a stack of shape {raw.shape}; save the one plane to register")
    data = to_grey(raw)
    pixel_size, metadata, warnings = _tiff_pixel_size(description, tags, imagej)
    if raw.ndim == 3:
        warnings.append("colour image converted to grey (BT.709 luminance)")
    return LoadedImage(data, pixel_size, str(raw.dtype), metadata, warnings)


def _tiff_pixel_size(description: str, tags: dict[str, Any],
                     imagej: dict[str, Any]) -> tuple[float | None, dict[str, Any], list[str]]:
    """Pixel size from our JSON ImageDescription, else ImageJ/resolution tags, else None."""
    warnings: list[str] = []
    metadata: dict[str, Any] = {}
    if description.strip().startswith("{"):
        try:
            parsed = json.loads(description)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            metadata = parsed
            value = parsed.get("pixel_size_um")
            if _is_positive_number(value):
                return float(value), metadata, warnings
    x_resolution = tags.get("XResolution")
    unit = tags.get("ResolutionUnit")
    unit_code = int(getattr(unit, "value", unit)) if unit is not None else 2
    pixels_per_unit = _rational(x_resolution)
    if pixels_per_unit and pixels_per_unit > 0:
        if imagej and str(imagej.get("unit", "")).strip().lower() in _IMAGEJ_MICRON_UNITS:
            return 1.0 / pixels_per_unit, metadata, warnings
        if unit_code in _UM_PER_UNIT:
            size = _UM_PER_UNIT[unit_code] / pixels_per_unit
            warnings.append(
                f"pixel size {size:.6g} um taken from the TIFF resolution tags; check it "
                "(many programs write a screen resolution there), or pass pixel_size_um"
            )
            return size, metadata, warnings
    return None, metadata, warnings


def _rational(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 2:
        numerator, denominator = value
        return float(numerator) / float(denominator) if denominator else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _is_positive_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _read_with_pillow(path: str, stream: BinaryIO) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(stream) as image:
            width, height = image.size
            check_pixel_count((height, width), f"the image in {safefile.describe_path(path)}")
            mode = image.mode
            if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                image = image.convert("RGB")
                mode = "RGB"
            raw = np.asarray(image)
    except BadArgument:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own header check, before ours can run
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        check_pixel_count((int(claimed.group(1)), 1) if claimed else (MAX_PIXELS + 1, 1),
                          f"the image in {safefile.describe_path(path)}")
        raise BadArgument(f"{safefile.describe_path(path)} is too large to decode ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadArgument(f"{safefile.describe_path(path)} is not a readable image ({type(exc).__name__}: {exc}); "
                          "give a TIFF, PNG or JPEG file") from None
    if mode == "1":
        raw = raw.astype(np.uint8)
    warnings: list[str] = []
    if raw.ndim == 3:
        warnings.append("colour image converted to grey (BT.709 luminance)")
    data = to_grey(raw)
    return LoadedImage(np.ascontiguousarray(data), None, str(raw.dtype), {}, warnings)
