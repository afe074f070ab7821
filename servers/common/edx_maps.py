"""Lab EDX element maps (Bruker Esprit ``.bcf``) as reference images, read through rosettasciio.

A lab EDX map is often the best reference for an X-ray nanoprobe: the same element
contrast the XRF map will show, where an SEM image shows topography. Esprit stores the
spectrum cube (one spectrum per pixel), the electron images recorded with it and the list
of X-ray lines the user selected, but not the element maps themselves; a map is the sum of
each pixel's counts in a window around the line's energy, as Esprit and HyperSpy compute it.

* The reader is rosettasciio (``rsciio.bruker``), HyperSpy's maintained I/O library.
* Line energies come from xraydb (Elam et al. tables): ``Fe_Ka`` is Fe ``Ka1``, ``Ce_La``
  is ``La1``, ``Th_Ma`` is ``Ma``; the window is +-1 FWHM of the detector at that energy,
  FWHM^2 = FWHM(Mn Ka)^2 + 2.5 eV * (E - 5898.7 eV), all in eV (the Fano + noise model
  HyperSpy uses), with FWHM(Mn Ka) from the file's metadata (130 eV if absent).
* ``channel`` names a selected line (``Fe_Ka``), an element of the selection (``Fe``), any
  line ``Element_Line`` of an element (``Cu_La``), or one of the electron images in the
  file by its title (``BSE``, ``SE``). Without a channel the call is refused with the list,
  because which element registers best is the user's decision.

Pixel size and stage come from the file's metadata (``axes`` scale in um; ``Stage`` X/Y/Z
in um, rotation in degrees, as Esprit writes them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servers.common.errors import BadArgument

EDX_SUFFIXES = (".bcf",)
MN_KA_KEV = 5.8987
DEFAULT_FWHM_MN_KA_EV = 130.0
_LINE_NAMES = {"Ka": "Ka1", "Kb": "Kb1", "La": "La1", "Lb": "Lb1", "Lg": "Lg1", "Ma": "Ma", "Mb": "Mb",
               "Mg": "Mg", "Ll": "Ll", "Ln": "Ln"}
_LINE_PATTERN = re.compile(r"^([A-Z][a-z]?)_([KLM][a-z]\d?)$")


@dataclass
class EdxImage:
    """One element map (or electron image) of an EDX file and what the file says of it."""

    data: np.ndarray
    pixel_size_um: float | None
    pixel_size_source: str | None
    channel: str
    channels: list[str]
    stage: dict[str, float] = field(default_factory=dict)
    stage_source: str | None = None
    warnings: list[str] = field(default_factory=list)
    window_kev: tuple[float, float] | None = None


def line_energy_kev(line: str) -> float:
    """Energy of ``Element_Line`` (e.g. ``Fe_Ka``) in keV from xraydb; BadArgument if unknown."""
    match = _LINE_PATTERN.match(line)
    if not match:
        raise BadArgument(f"{line!r} is not an X-ray line; write Element_Line, e.g. Fe_Ka, Ce_La or Pb_Ma")
    element, name = match.groups()
    import xraydb

    try:
        lines = xraydb.xray_lines(element)
    except Exception:  # xraydb raises ValueError or its own errors for unknown symbols
        raise BadArgument(f"{element!r} in {line!r} is not a chemical element symbol") from None
    entry = lines.get(_LINE_NAMES.get(name, name))
    if entry is None:
        raise BadArgument(f"{element} has no {name} line in the X-ray tables; its lines: "
                          f"{', '.join(sorted(lines))}")
    return float(entry.energy) / 1000.0


def fwhm_kev(energy_kev: float, fwhm_mn_ka_ev: float) -> float:
    """Detector resolution at ``energy_kev`` from its resolution at Mn Ka (Fano + noise model)."""
    squared = fwhm_mn_ka_ev ** 2 + 2.5 * (energy_kev - MN_KA_KEV) * 1000.0
    return math.sqrt(max(squared, 1.0)) / 1000.0


def read_edx(path: str, channel: str | None, shown: str) -> EdxImage:
    """The map of ``channel`` (an X-ray line, an element, or an electron image) of a ``.bcf`` file."""
    try:
        from rsciio.bruker import file_reader
    except ImportError as exc:
        raise BadArgument(f"{shown} is a Bruker EDX file, but its reader (rosettasciio) is not installed "
                          f"on the server ({exc}); install the package rosettasciio") from None
    try:
        signals = file_reader(path, select_type=None)
    except Exception as exc:  # 'not SFS container', truncated chunks, XML errors, ...
        raise BadArgument(f"{shown} is not a readable Bruker .bcf file ({type(exc).__name__}: {exc}); "
                          "check the file, or export it again from Esprit") from None
    cube = next((s for s in signals if np.asarray(s["data"]).ndim == 3), None)
    images = {str(s["metadata"].get("General", {}).get("title", f"image {i}")): s
              for i, s in enumerate(signals) if np.asarray(s["data"]).ndim == 2}
    lines = list((cube or {}).get("metadata", {}).get("Sample", {}).get("xray_lines", []) or [])
    channels = lines + [name for name in images if name not in lines]
    if not channel:
        raise BadArgument(f"{shown} is a Bruker EDX file; choose the map to load with \"channel\": an X-ray "
                          f"line ({', '.join(lines) or 'none selected in the file; any Element_Line, e.g. Fe_Ka'}) "
                          f"or an electron image ({', '.join(images) or 'none in the file'})")
    if channel in images:
        signal = images[channel]
        data = np.asarray(signal["data"])
        size, source = _pixel_size(signal, f"image {channel!r}")
        result = EdxImage(np.ascontiguousarray(data), size, source, channel, channels)
    else:
        if cube is None:
            raise BadArgument(f"{shown} holds no spectrum image, so no element map; it has the images "
                              f"{', '.join(images) or 'none'}")
        line = _resolve_line(channel, lines, shown, list(images))
        result = _element_map(cube, line, channels)
    _add_stage(cube or next(iter(images.values()), {}), result)
    return result


def _resolve_line(channel: str, lines: list[str], shown: str, images: list[str]) -> str:
    if channel in lines:
        return channel
    selected = [line for line in lines if line.split("_")[0] == channel]
    if selected:
        return selected[0]
    if _LINE_PATTERN.match(channel):
        return channel
    raise BadArgument(f"{shown} has no map {channel!r}; choose an X-ray line "
                      f"({', '.join(lines) or 'any Element_Line'}) or an electron image "
                      f"({', '.join(images) or 'none in the file'})")


def _element_map(cube: dict[str, Any], line: str, channels: list[str]) -> EdxImage:
    data = np.asarray(cube["data"])
    energy_axis = cube["axes"][-1]
    scale, offset = float(energy_axis.get("scale", 0.0)), float(energy_axis.get("offset", 0.0))
    if not (math.isfinite(scale) and scale > 0):
        raise BadArgument(f"the spectrum image has an energy scale of {scale!r} keV/channel; the file is damaged")
    energy = line_energy_kev(line)
    eds = cube["metadata"].get("Acquisition_instrument", {}).get("SEM", {}).get("Detector", {}).get("EDS", {})
    resolution = eds.get("energy_resolution_MnKa")
    warnings: list[str] = []
    if not (isinstance(resolution, (int, float)) and math.isfinite(resolution) and resolution > 0):
        resolution = DEFAULT_FWHM_MN_KA_EV
        warnings.append(f"the file gives no detector resolution; {DEFAULT_FWHM_MN_KA_EV:g} eV at Mn Ka assumed")
    width = fwhm_kev(energy, float(resolution))
    low, high = energy - width, energy + width
    first = max(int(math.floor((low - offset) / scale)), 0)
    last = min(int(math.ceil((high - offset) / scale)), data.shape[-1] - 1)
    if last < first:
        top = offset + scale * (data.shape[-1] - 1)
        raise BadArgument(f"{line} at {energy:.3f} keV lies outside the recorded spectrum "
                          f"({offset:.3f}-{top:.3f} keV); choose another line")
    counts = data[..., first:last + 1].sum(axis=-1, dtype=np.float64).astype(np.float32)
    size, source = _pixel_size(cube, f"spectrum image, {line} {low:.3f}-{high:.3f} keV")
    return EdxImage(counts, size, source, line, channels, warnings=warnings,
                    window_kev=(offset + first * scale, offset + (last + 1) * scale))


def _pixel_size(signal: dict[str, Any], what: str) -> tuple[float | None, str | None]:
    """Scale of the width axis in um, or None when the file gives pixels only."""
    axes = [a for a in signal.get("axes", []) if a.get("name") in ("width", "x")]
    if not axes:
        return None, None
    axis = axes[0]
    unit = str(axis.get("units", ""))
    scale = axis.get("scale")
    factor = {"µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "nm": 1e-3, "mm": 1e3}.get(unit)
    if factor is None or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        return None, None
    return float(scale) * factor, f"Bruker .bcf {what}: width axis scale ({unit}, rosettasciio)"


def _add_stage(signal: dict[str, Any], result: EdxImage) -> None:
    stage = signal.get("original_metadata", {}).get("Stage") or {}
    for key, name in (("X", "x_um"), ("Y", "y_um"), ("Z", "z_um"), ("Rotation", "rotation_deg"),
                      ("Tilt", "tilt_deg")):
        value = stage.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            result.stage[name] = float(value)
    if result.stage:
        result.stage_source = "Bruker .bcf Stage X/Y/Z (um), Rotation/Tilt (deg)"
