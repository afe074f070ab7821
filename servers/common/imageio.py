"""Reading micrographs and camera frames from files, at full bit depth, for every server.

This is the one loading path for images from files: RegistrationDS ``LoadImage``,
ParticleDS ``Detect`` (``path``), and through them the ``smart`` CLI and the macros.
SEM, AFM, EDX, XRF and camera images arrive as TIFF (8/16/32-bit integer or float), PNG or
JPEG, or in the formats the lab instruments write:

* SEM TIFFs of Thermo Fisher/FEI, Zeiss and TESCAN software: pixel size and stage position
  from the vendor's private tag (:mod:`servers.common.sem_tiff`);
* AFM files (Bruker Nanoscope ``.spm``, Gwyddion ``.gwy``, Asylum/Igor ``.ibw``, JPK
  ``.jpk``) through AFMReader (:mod:`servers.common.afm_files`);
* Bruker EDX ``.bcf`` element maps through rosettasciio (:mod:`servers.common.edx_maps`).

Registration and particle detection need the real intensities, not a display
pixmap, so nothing is rescaled here; colour images become one grey channel because every
algorithm downstream works on intensity. The pixel size travels with the image because
it is what lets images of different instruments be compared at all, and so does the name
of the metadata field it was read from, so that a user can check it.

Errors use the SMART vocabulary so a device shell can pass them straight on:
a missing file is :class:`NotFound`, anything unreadable or unreasonable is
:class:`BadArgument`. Nothing is decoded before the header has been checked against
:data:`MAX_PIXELS`, so a hostile or mistaken 50 GB file costs no memory; only regular files
are opened and every read is time-limited (:mod:`servers.common.safefile`), so no path can
block the device that asked.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeGuard, cast

import numpy as np

from servers.common import afm_files, edx_maps, safefile, sem_tiff
from servers.common.errors import BadArgument
from servers.common.grey import to_grey

MAX_PIXELS = 100_000_000
"""Largest image accepted (100 Mpx, e.g. 10k x 10k): beyond this a float32 working copy
alone needs 400 MB, which a control-system server should not silently allocate."""

TIFF_SUFFIXES = (".tif", ".tiff")
OTHER_SUFFIXES = (".png", ".jpg", ".jpeg")

_UM_PER_UNIT = {2: 25_400.0, 3: 10_000.0}  # TIFF ResolutionUnit: 2 = inch, 3 = centimetre
_IMAGEJ_MICRON_UNITS = {"micron", "um", "µm", "\\u00B5m", "microns"}


@dataclass
class LoadedImage:
    """A decoded 2-D image and what the file says about it.

    ``data`` keeps the stored dtype for grey images (uint8/uint16/uint32/int*/float*);
    colour images become float32 grey, because averaging channels creates fractions.
    ``pixel_size_um`` is ``None`` when the file does not say; the caller decides the default.
    ``pixel_size_source`` names the metadata field it came from; ``stage`` is the stage
    position the instrument recorded (``x_um``, ``y_um``, ``z_um``, ``rotation_deg``,
    ``tilt_deg``, as far as given) and ``stage_source`` its fields. ``channel`` is the
    channel read from a multi-channel file (AFM, EDX) and ``channels`` those it has.
    """

    data: np.ndarray
    pixel_size_um: float | None
    source_dtype: str
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    pixel_size_source: str | None = None
    file_format: str = ""
    stage: dict[str, float] = field(default_factory=dict)
    stage_source: str | None = None
    channel: str | None = None
    channels: list[str] = field(default_factory=list)


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


KNOWN_FORMATS = ("TIFF (incl. FEI/Thermo Fisher, Zeiss, TESCAN SEM), PNG, JPEG, AFM .spm/.gwy/.ibw/.jpk, "
                 "Bruker EDX .bcf")
MULTI_CHANNEL_SUFFIXES = afm_files.AFM_SUFFIXES + edx_maps.EDX_SUFFIXES
_READER_MODULES = {".spm": ("AFMReader.spm",), ".gwy": ("AFMReader.gwy",), ".ibw": ("AFMReader.ibw",),
                   ".jpk": ("AFMReader.jpk",), ".bcf": ("rsciio.bruker", "xraydb")}
"""Imported on the first file of that format, outside the time limit. Not at server start:
pySPM alone took 45 s to import on a loaded 2-core host, time the servers' own start-up
(trackpy's compilation in ParticleDS) needs more, and most beamlines use one or two formats."""


VENDOR_TIMEOUT_S = 25.0
"""Time limit for AFM and EDX files: their readers parse tens of MB in Python (a 17 MB
Gwyddion file takes ~12 s on a busy 2-core host), which is slow but not a hang. It stays
below the 30 s timeout the ``smart`` CLI and the macros give LoadImage and Detect."""


def read_image(path: str, timeout_s: float | None = None,
               channel: str | None = None) -> LoadedImage:
    """Decode ``path`` into a 2-D array with its pixel size (and its source) if known.

    Formats: see the module doc. ``channel`` chooses the channel of an AFM file (default:
    its height channel) or the element map / electron image of an EDX file (required
    there); other formats have one image and refuse a channel.

    Only a regular file is read, within ``timeout_s`` (see :mod:`servers.common.safefile`):
    a FIFO, device or directory is refused at once, a path that does not answer gives
    :class:`~servers.common.errors.Failed` naming it, and the caller is never blocked longer.
    The reader library of the format is imported before the time limit starts (importing is
    slow on a busy host, but cannot hang on a file). ``timeout_s`` defaults to
    :data:`~servers.common.safefile.DEFAULT_TIMEOUT_S`, or :data:`VENDOR_TIMEOUT_S` for AFM
    and EDX files.
    """
    safefile.check_path_text(path, "image path")
    suffix = os.path.splitext(path)[1].lower()
    if timeout_s is None:
        timeout_s = VENDOR_TIMEOUT_S if suffix in MULTI_CHANNEL_SUFFIXES else safefile.DEFAULT_TIMEOUT_S
    if channel is not None and suffix not in MULTI_CHANNEL_SUFFIXES:
        raise BadArgument(f"\"channel\" {channel!r} was given, but {safefile.describe_path(path)} is not a "
                          f"multi-channel file ({', '.join(MULTI_CHANNEL_SUFFIXES)}); leave channel out")
    _import_reader(suffix)
    return safefile.run_with_time_limit(lambda: _read_now(path, suffix, channel),
                                        f"reading {safefile.describe_path(path)}", timeout_s)


def _import_reader(suffix: str) -> None:
    """Import the readers of ``suffix``; a missing one is named later by read_afm / read_edx."""
    import importlib

    for name in _READER_MODULES.get(suffix, ()):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _read_now(path: str, suffix: str, channel: str | None) -> LoadedImage:
    with safefile.open_regular(path, "image file") as stream:
        if suffix in afm_files.AFM_SUFFIXES:
            return _read_afm(path, stream, suffix, channel)
        if suffix in edx_maps.EDX_SUFFIXES:
            return _read_edx(path, stream, channel)
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


def _refuse_empty(path: str, stream: BinaryIO) -> None:
    if os.fstat(stream.fileno()).st_size == 0:
        raise BadArgument(f"{safefile.describe_path(path)} is empty (0 bytes); save the image again")


def _read_afm(path: str, stream: BinaryIO, suffix: str, channel: str | None) -> LoadedImage:
    """An AFM channel (AFMReader reads by path; the open stream proved it a regular file)."""
    _refuse_empty(path, stream)
    image = afm_files.read_afm(path, suffix, channel, safefile.describe_path(path))
    check_pixel_count(image.data.shape, f"channel {image.channel!r} of {safefile.describe_path(path)}")
    return LoadedImage(image.data, image.pixel_size_um, str(image.data.dtype),
                       {"channel": image.channel}, [], image.pixel_size_source,
                       f"AFM {image.format_name} ({suffix})", channel=image.channel,
                       channels=[image.channel])


def _read_edx(path: str, stream: BinaryIO, channel: str | None) -> LoadedImage:
    """An element map or electron image of a Bruker .bcf file."""
    _refuse_empty(path, stream)
    image = edx_maps.read_edx(path, channel, safefile.describe_path(path))
    check_pixel_count(image.data.shape, f"map {image.channel!r} of {safefile.describe_path(path)}")
    metadata: dict[str, Any] = {"channel": image.channel}
    if image.window_kev is not None:
        metadata["energy_window_kev"] = [round(v, 4) for v in image.window_kev]
    return LoadedImage(image.data, image.pixel_size_um, str(image.data.dtype), metadata, list(image.warnings),
                       image.pixel_size_source, "EDX Bruker Esprit (.bcf)", dict(image.stage),
                       image.stage_source, image.channel, list(image.channels))


def _read_tiff(path: str, stream: BinaryIO) -> LoadedImage:
    import tifffile

    shown = safefile.describe_path(path)
    _refuse_empty(path, stream)
    try:
        with tifffile.TiffFile(stream) as tif:
            if not tif.pages:
                raise BadArgument(f"{shown} is a TIFF without images; save the image again")
            page = cast("tifffile.TiffPage", tif.pages[0])  # the first page is never a TiffFrame
            shape = tuple(page.shape)
            check_pixel_count(shape if len(shape) == 2 or shape[-1] in (1, 3, 4) else shape[-2:],
                              f"the image in {shown}")
            raw = page.asarray()
            description = page.description or ""
            tags = {tag.name: tag.value for tag in page.tags.values()}
            imagej = tif.imagej_metadata or {}
            vendor = sem_tiff.read_sem_calibration(tif, page)
    except BadArgument:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt or non-TIFF input
        raise BadArgument(f"{shown} is not a readable TIFF image ({type(exc).__name__}: {exc}); "
                          "check the file, or export it again as TIFF, PNG or JPEG") from None
    if raw.ndim == 3 and raw.shape[-1] not in (1, 3, 4):
        raise BadArgument(f"{shown} holds a stack of shape {raw.shape}; save the one plane to register")
    warnings: list[str] = []
    if vendor is not None and vendor.crop_rows is not None and 0 < vendor.crop_rows < raw.shape[0]:
        warnings.append(f"the {raw.shape[0] - vendor.crop_rows} rows below the {vendor.crop_rows}-row scan "
                        "(the microscope's data bar) were cut off")
        raw = raw[:vendor.crop_rows]
    data = to_grey(raw)
    pixel_size, metadata, tiff_warnings, source = _tiff_pixel_size(description, tags, imagej)
    file_format = "TIFF"
    stage: dict[str, float] = {}
    stage_source = None
    if vendor is not None:
        file_format = f"SEM TIFF ({vendor.vendor})"
        warnings.extend(vendor.warnings)
        stage, stage_source = dict(vendor.stage), vendor.stage_source
        if vendor.pixel_size_um is not None and source != _OWN_JSON:
            pixel_size, source, tiff_warnings = vendor.pixel_size_um, vendor.pixel_size_source, []
    warnings.extend(tiff_warnings)
    if raw.ndim == 3:
        warnings.append("colour image converted to grey (BT.709 luminance)")
    return LoadedImage(data, pixel_size, str(raw.dtype), metadata, warnings, source, file_format,
                       stage, stage_source)


_OWN_JSON = "ImageDescription JSON pixel_size_um"


def _tiff_pixel_size(description: str, tags: dict[str, Any], imagej: dict[str, Any]
                     ) -> tuple[float | None, dict[str, Any], list[str], str | None]:
    """Pixel size from our JSON ImageDescription, else ImageJ/resolution tags, else None.

    The last item names where the value came from (None when nothing was found).
    """
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
                return float(value), metadata, warnings, _OWN_JSON
    x_resolution = tags.get("XResolution")
    unit = tags.get("ResolutionUnit")
    unit_code = int(getattr(unit, "value", unit)) if unit is not None else 2
    pixels_per_unit = _rational(x_resolution)
    if pixels_per_unit and pixels_per_unit > 0:
        if imagej and str(imagej.get("unit", "")).strip().lower() in _IMAGEJ_MICRON_UNITS:
            return 1.0 / pixels_per_unit, metadata, warnings, "ImageJ unit (um) and XResolution"
        if unit_code in _UM_PER_UNIT:
            size = _UM_PER_UNIT[unit_code] / pixels_per_unit
            warnings.append(
                f"pixel size {size:.6g} um taken from the TIFF resolution tags; check it "
                "(many programs write a screen resolution there), or pass pixel_size_um"
            )
            return size, metadata, warnings, "TIFF XResolution and ResolutionUnit"
    return None, metadata, warnings, None


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


def _is_positive_number(value: Any) -> TypeGuard[float]:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _read_with_pillow(path: str, stream: BinaryIO) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(stream) as opened:
            image: Image.Image = opened
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
                          f"give a file of a known format: {KNOWN_FORMATS}") from None
    if mode == "1":
        raw = raw.astype(np.uint8)
    warnings: list[str] = []
    if raw.ndim == 3:
        warnings.append("colour image converted to grey (BT.709 luminance)")
    data = to_grey(raw)
    return LoadedImage(np.ascontiguousarray(data), None, str(raw.dtype), {}, warnings,
                       file_format=suffix_format(path))


def suffix_format(path: str) -> str:
    """PNG or JPEG, as named by the suffix (for the result's ``format``)."""
    suffix = os.path.splitext(path)[1].lower()
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(suffix, "image (Pillow)")
