"""Several regions of one sample, through the Door: overview -> camera, every tile -> overview,
the particles of every tile into the night queue; and the check of that hierarchy against the
simulation's truth.

What a user types in Spock, in order (``region_macros``)::

    smart_register /abs/overview.tif affine overview
    smart_register_region /abs/tile1.tif tile1 overview
    ...
    smart_queue_region tile1 isolated 0.3 0.05 0.01
    ...

The camera calibration, ``BeamPosition`` and the particle profile come first, as for a
single image (clients/workflow.py). ``make night`` calls :func:`run_regions` after them.
The truth file is read only by :func:`region_accuracy`, to score.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tango

from clients.door import DoorClient
from simulation.regions import true_pixel_to_sample

OVERVIEW_FRAME = "overview"


@dataclass
class RegionOptions:
    """The queue targets' scan (lengths in µm, as users give them) and the particles taken."""

    what: str = "isolated"
    scan_half_width_um: float = 0.3
    scan_step_um: float = 0.05
    exposure_s: float = 0.01
    rotation_range_deg: tuple[float, float] | None = None
    """Where the overview's rotation onto the camera lies, if known (SmartRotationRange)."""


def region_macros(overview: Path, tiles: dict[str, Path], options: RegionOptions) -> list[str]:
    """The Door commands, in order: overview to the camera, each tile into the overview, each
    tile's particles into the queue."""
    commands = [f"smart_register {Path(overview).resolve()} affine {OVERVIEW_FRAME}"]
    commands += [f"smart_register_region {Path(path).resolve()} {name} {OVERVIEW_FRAME}"
                 for name, path in tiles.items()]
    commands += [f"smart_queue_region {name} {options.what} {options.scan_half_width_um} {options.scan_step_um} "
                 f"{options.exposure_s}" for name in tiles]
    return commands


_ADDED = re.compile(r"^(\S+): (\d+) target\(s\) added")
_CONFIDENCE = re.compile(r"^(\S+) in \S+: rotation (\S+) deg, scale (\S+) .* confidence (\S+)")


def run_regions(tango_host: str, overview: Path, tiles: dict[str, Path], options: RegionOptions | None = None,
                echo: Callable[[str, str], None] | None = None,
                report: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Run :func:`region_macros` on ``smart/door/01``; returns per region what its macros said:
    ``{name: {"rotation_deg", "scale", "confidence", "added"}}``. A macro that fails raises
    :class:`clients.door.MacroFailed` (nothing of a registration in doubt is stored)."""
    options = options or RegionOptions()
    say = report or (lambda line: None)
    found: dict[str, dict[str, Any]] = {name: {} for name in tiles}
    with DoorClient(f"tango://{tango_host}/smart/door/01", echo=echo) as door:
        if options.rotation_range_deg is not None:
            low, high = options.rotation_range_deg
            door.run(f"senv SmartRotationRange {low} {high}", timeout_s=60)
        for command in region_macros(overview, tiles, options):
            run = door.run(command, timeout_s=1800)
            for _, line in run.lines:
                if (match := _CONFIDENCE.match(line)) and match.group(1) in found:
                    found[match.group(1)].update(rotation_deg=float(match.group(2)), scale=float(match.group(3)),
                                                 confidence=float(match.group(4)))
                if (match := _ADDED.match(line)) and match.group(1) in found:
                    found[match.group(1)]["added"] = int(match.group(2))
            say(f"{command}: done")
    return found


def region_accuracy(tango_host: str, truth_path: Path, names: list[str], grid: int = 5) -> dict[str, dict[str, float]]:
    """Map a ``grid`` x ``grid`` of pixels of every region to the stage through CoordMapperDS
    (whatever path it takes) and compare with the truth (``sample_to_stage`` of what the pixel
    truly shows: the best affine ``pixel_to_sample`` plus the SEM's scan non-linearity).
    Returns ``{name: {"max_nm", "median_nm", "centre_nm"}}``."""
    facts = json.loads(Path(truth_path).read_text(encoding="utf-8"))
    sample_to_stage = np.asarray(facts["sample_to_stage"], float)
    mapper = tango.DeviceProxy(f"tango://{tango_host}/smart/coordmapper/1")
    mapper.set_timeout_millis(10_000)
    unit = str(mapper.read_attribute("StageUnit").value or "mm")
    nm_per_unit = {"mm": 1e6, "um": 1e3, "nm": 1.0}[unit]
    out = {}
    for name in names:
        region = facts["regions"][name]
        width, height = region["size_px"]
        xs, ys = np.meshgrid(np.linspace(0, width - 1, grid), np.linspace(0, height - 1, grid))
        pixels = np.column_stack([xs.ravel(), ys.ravel()])
        sample = true_pixel_to_sample(region, pixels)
        true = (sample_to_stage @ np.column_stack([sample, np.ones(len(sample))]).T)[:2].T
        mapped = json.loads(mapper.Map(json.dumps({"from": name, "to": "stage", "points": pixels.tolist()})))
        errors = np.linalg.norm(np.asarray(mapped["points"], float) - true, axis=1) * nm_per_unit
        out[name] = {"max_nm": float(errors.max()), "median_nm": float(np.median(errors)),
                     "centre_nm": float(errors[len(errors) // 2]), "path": mapped.get("path")}
    return out
