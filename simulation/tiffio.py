"""TIFF output with the pixel size where every reader looks for it.

RegistrationDS.LoadImage reads the pixel size from the TIFF; different tools look in
different places (ImageJ/Fiji and most viewers in the resolution tags, our own loaders in
the JSON ImageDescription), so simulated images carry both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import tifffile


def write_tiff(path: str | Path, image: np.ndarray, pixel_size_um: float,
               metadata: dict[str, Any] | None = None) -> None:
    """Write ``image`` with XResolution/YResolution in pixels per centimetre
    (ResolutionUnit CENTIMETER) and a JSON ImageDescription holding ``pixel_size_um``."""
    description = {"pixel_size_um": float(pixel_size_um), **(metadata or {})}
    pixels_per_cm = 1e4 / float(pixel_size_um)
    tifffile.imwrite(
        str(path), image, photometric="minisblack",
        resolution=(pixels_per_cm, pixels_per_cm), resolutionunit=tifffile.RESUNIT.CENTIMETER,
        description=json.dumps(description, sort_keys=True), metadata=None,
    )


def read_tiff(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Image (all pages of the first series) and the decoded ImageDescription JSON (empty
    dict if absent or not JSON)."""
    with tifffile.TiffFile(str(path)) as tif:
        page = tif.pages[0]
        image = tif.asarray()  # all pages of the first series (the XRF map has one per channel)
        try:
            meta = json.loads(page.description) if page.description else {}
        except json.JSONDecodeError:
            meta = {}
    return image, meta
