"""Pixel size and stage position from the private TIFF tags that SEM software writes.

SEM images reach the beamline as the microscope saved them, and the vendor software keeps
the calibration in its own tag rather than in the TIFF resolution tags (which often hold a
screen resolution). Reading those tags is what lets a user load an SEM image without typing
its pixel size, and it is more reliable than typing it. Three families are read:

* Thermo Fisher / FEI (xT, Helios, Quanta, ...): tag 34682 ``FEI_HELIOS`` or 34680
  ``FEI_SFEG``, an INI text parsed by ``tifffile`` (``TiffFile.fei_metadata``). Pixel size:
  ``[Scan] PixelWidth`` in metres (``[EScan]``/``[IScan]`` as fallbacks); stage: ``[Stage]``
  ``StageX/Y/Z`` in metres, ``StageR``/``StageT`` in radians. The data bar that xT software
  appends below the scan is cut off, using ``[Image] ResolutionY``.
* Zeiss SmartSEM: tag 34118 ``CZ_SEM``, parsed by ``tifffile`` (``TiffFile.sem_metadata``)
  into ``(label, value, unit)`` tuples. Pixel size: ``ap_image_pixel_size`` or
  ``ap_pixel_size`` with their unit; stage: ``ap_stage_at_x/y/z`` (mm), ``_r``/``_t`` (deg).
* TESCAN (MIRA, VEGA, LYRA, ...): tag 50431, which ``tifffile`` leaves as bytes. It is a
  sequence of blocks (uint32 size, uint16 type, text), the layout Gwyddion's reader
  documents; type 2 ``MAIN`` holds ``PixelSizeX`` in metres, type 3 ``SEM`` holds
  ``StageX/Y/Z`` in metres and ``StageRotation``/``StageTilt`` in degrees.

Positions are returned in micrometres and degrees, named after the vendor field they came
from, so a user can compare them with what the microscope displayed.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

TESCAN_TAG = 50431
_TESCAN_MAIN, _TESCAN_SEM = 2, 3
_LENGTH_TO_UM = {"m": 1e6, "mm": 1e3, "um": 1.0, "µm": 1.0, "\u03bcm": 1.0, "nm": 1e-3, "pm": 1e-6}


@dataclass
class SemCalibration:
    """What a vendor tag says about one image.

    ``pixel_size_source`` names the tag and field (e.g. ``FEI_HELIOS [Scan] PixelWidth``)
    so the user can check it against the microscope; ``crop_rows`` is the number of image
    rows that hold the scan (the rest is a burnt-in data bar), ``None`` for all rows.
    """

    vendor: str
    pixel_size_um: float | None = None
    pixel_size_source: str | None = None
    stage: dict[str, float] = field(default_factory=dict)
    stage_source: str | None = None
    crop_rows: int | None = None
    warnings: list[str] = field(default_factory=list)


def read_sem_calibration(tif: Any, page: Any) -> SemCalibration | None:
    """The calibration of the first image of an open ``tifffile.TiffFile``; None if no vendor tag."""
    if page.is_fei:
        return _fei(tif.fei_metadata or {}, "FEI_HELIOS" if 34682 in page.tags else "FEI_SFEG")
    if page.is_sem:
        return _zeiss(tif.sem_metadata or {})
    tescan = page.tags.get(TESCAN_TAG)
    if tescan is not None:
        return _tescan(tescan.value)
    return None


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fei(meta: dict[str, Any], tag: str) -> SemCalibration:
    result = SemCalibration("Thermo Fisher/FEI")
    for section in ("Scan", "EScan", "IScan"):
        size = _positive((meta.get(section) or {}).get("PixelWidth"))
        if size is not None:
            result.pixel_size_um = size * 1e6
            result.pixel_size_source = f"{tag} [{section}] PixelWidth (m)"
            break
    else:
        result.warnings.append(f"the {tag} metadata has no [Scan] PixelWidth (a navigation-camera "
                               "image?); pass pixel_size_um")
    stage = meta.get("Stage") or {}
    for key, name, factor in (("StageX", "x_um", 1e6), ("StageY", "y_um", 1e6), ("StageZ", "z_um", 1e6),
                              ("StageR", "rotation_deg", 180.0 / math.pi),
                              ("StageT", "tilt_deg", 180.0 / math.pi)):
        value = _finite(stage.get(key))
        if value is not None:
            result.stage[name] = value * factor
    if result.stage:
        result.stage_source = f"{tag} [Stage] StageX/Y/Z (m), StageR/T (rad)"
    rows = (meta.get("Image") or {}).get("ResolutionY")
    if isinstance(rows, int) and not isinstance(rows, bool) and rows > 0:
        result.crop_rows = rows
    return result


def _zeiss_length_um(entry: Any) -> float | None:
    """``('Pixel Size', 5.825, 'nm')`` -> 0.005825 (um); None if not a length."""
    if not isinstance(entry, tuple) or len(entry) < 3:
        return None
    value, unit = _finite(entry[1]), str(entry[2]).strip()
    if value is None or unit not in _LENGTH_TO_UM:
        return None
    return value * _LENGTH_TO_UM[unit]


def _zeiss(meta: dict[str, Any]) -> SemCalibration:
    result = SemCalibration("Zeiss")
    for key in ("ap_image_pixel_size", "ap_pixel_size"):
        size = _zeiss_length_um(meta.get(key))
        if size is not None and size > 0:
            result.pixel_size_um = size
            result.pixel_size_source = f"CZ_SEM {key} ({meta[key][0]}, {meta[key][2]})"
            break
    else:
        result.warnings.append("the CZ_SEM metadata has no usable ap_image_pixel_size or ap_pixel_size; "
                               "pass pixel_size_um")
    for axis in "xyz":
        value = _zeiss_length_um(meta.get(f"ap_stage_at_{axis}"))
        if value is not None:
            result.stage[f"{axis}_um"] = value
    for axis, name in (("r", "rotation_deg"), ("t", "tilt_deg")):
        entry = meta.get(f"ap_stage_at_{axis}")
        value = _finite(entry[1]) if isinstance(entry, tuple) and len(entry) >= 2 else None
        if value is not None:
            result.stage[name] = value
    if result.stage:
        result.stage_source = "CZ_SEM ap_stage_at_x/y/z (mm), ap_stage_at_r/t (deg)"
    return result


def tescan_fields(raw: Any) -> dict[str, dict[str, str]]:
    """Parse the blocks of TESCAN tag 50431 into ``{"MAIN": {...}, "SEM": {...}}``.

    Raises ``ValueError`` naming the problem when the blocks do not add up (a truncated
    or foreign tag), so the caller can tell the user the file is damaged.
    """
    if isinstance(raw, str):
        raw = raw.encode("latin-1", "replace")
    if isinstance(raw, tuple):
        raw = bytes(raw)
    if not isinstance(raw, (bytes, bytearray)):
        raise ValueError(f"tag {TESCAN_TAG} holds {type(raw).__name__}, not bytes")
    data = bytes(raw)
    sections: dict[str, dict[str, str]] = {}
    names = {_TESCAN_MAIN: "MAIN", _TESCAN_SEM: "SEM", 4: "GAMA", 5: "FIB"}
    offset = 0
    while offset < len(data):
        if len(data) - offset < 6:
            raise ValueError(f"tag {TESCAN_TAG} ends inside a block header at byte {offset}")
        size, kind = struct.unpack_from("<IH", data, offset)
        if size < 2 or offset + 4 + size > len(data):
            raise ValueError(f"tag {TESCAN_TAG} has a block of {size} bytes at byte {offset} that does not fit "
                             f"in its {len(data)} bytes")
        body = data[offset + 6: offset + 4 + size]
        offset += 4 + size
        if kind == 0:
            break
        if kind in names:
            text = body.replace(b"\x00", b"").decode("latin-1")
            entries = sections.setdefault(names[kind], {})
            for line in text.splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    entries[key.strip()] = value.strip()
    return sections


def _tescan(raw: Any) -> SemCalibration:
    result = SemCalibration("TESCAN")
    try:
        sections = tescan_fields(raw)
    except ValueError as exc:
        result.warnings.append(f"the TESCAN metadata (tag {TESCAN_TAG}) is damaged ({exc}); pass pixel_size_um")
        return result
    main, sem = sections.get("MAIN", {}), sections.get("SEM", {})
    size = _positive(_finite(main.get("PixelSizeX")))
    if size is not None:
        result.pixel_size_um = size * 1e6
        result.pixel_size_source = f"TESCAN tag {TESCAN_TAG} [MAIN] PixelSizeX (m)"
    else:
        result.warnings.append(f"the TESCAN metadata (tag {TESCAN_TAG}) has no usable [MAIN] PixelSizeX; "
                               "pass pixel_size_um")
    for key, name, factor in (("StageX", "x_um", 1e6), ("StageY", "y_um", 1e6), ("StageZ", "z_um", 1e6),
                              ("StageRotation", "rotation_deg", 1.0), ("StageTilt", "tilt_deg", 1.0)):
        value = _finite(sem.get(key))
        if value is not None:
            result.stage[name] = value * factor
    if result.stage:
        result.stage_source = f"TESCAN tag {TESCAN_TAG} [SEM] StageX/Y/Z (m), StageRotation/StageTilt (deg)"
    return result
