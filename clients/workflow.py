"""The correlative workflow on the virtual beamline, end to end, scored against the truth.

What a user does at the beamline, as Door calls: calibrate the camera, register the SEM
image to it, find the particles, refine with X-ray maps, scan every isolated particle.
The simulation's truth file is read only *after* the run, to score it: how far each
target landed from the particle it was meant for, before and after fine alignment.
Used by ``make demo`` and by the system test of the whole workflow.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tango

from clients.door import DoorClient

UM_PER_MM = 1000.0


@dataclass
class WorkflowOptions:
    """Knobs of one run; lengths in micrometres as users give them."""

    particles: int = 20
    fine_particles: int = 4
    search_um: float = 1.0
    """Half width of the fine alignment's search maps: the coarse alignment's error budget."""
    calibration_step_um: float = 20.0
    scan_half_width_um: float = 0.3
    scan_step_um: float = 0.05
    exposure_s: float = 0.01
    drift_every: int = 10
    rotation_range_deg: tuple[float, float] | None = None
    """Where the SEM image's rotation onto the camera lies, if known (SmartRotationRange);
    None searches the whole circle."""
    isolation_um: float = 2.0
    """No other particle within this distance: the X-ray maps then see one particle only."""
    particle_settings: dict[str, Any] = field(default_factory=lambda: {
        "Diameter": 7, "MinMass": 1.0e4, "MaxSize": 1.6, "Separation": 4.0})
    """ParticleDS settings for ~50 nm particles on a 20 nm/px SEM image (see docs/particles.md)."""


@dataclass
class Inputs:
    """The files a run starts from, as a user would bring them (plus the hidden truth)."""

    beamline: Path
    sample: Path
    sem: Path
    truth: Path


def prepare_inputs(out_dir: Path, seed: int) -> Inputs:
    """Generate the sample, the virtual beamline, its truth and the lab SEM image."""
    from simulation.config import default_beamline, write_truth
    from simulation.sem import render_sem
    from simulation.tiffio import write_tiff

    out_dir.mkdir(parents=True, exist_ok=True)
    beamline = default_beamline(seed)
    paths = Inputs(out_dir / "beamline.json", out_dir / "sample.json", out_dir / "sem.tif", out_dir / "truth.json")
    beamline.save(paths.beamline)
    beamline.sample.save(paths.sample)
    write_truth(beamline, paths.truth)
    sem = render_sem(beamline.sample, beamline.sem, seed=seed)
    write_tiff(paths.sem, sem.image, beamline.sem.pixel_size_um, {"modality": "SEM", "seed": seed})
    return paths


def run_workflow(tango_host: str, inputs: Inputs, out_dir: Path, options: WorkflowOptions,
                 echo: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Drive the workflow through the Door; returns the timings of each step."""
    import time

    def trl(name: str) -> str:
        return f"tango://{tango_host}/{name}"

    camera = tango.DeviceProxy(trl("smart/camera/1"))
    mapper = tango.DeviceProxy(trl("smart/coordmapper/1"))
    camera.Snap()  # Width and Height are those of the last frame; there is none before the first
    width, height = camera.read_attribute("Width").value, camera.read_attribute("Height").value
    if not (width > 0 and height > 0):
        raise RuntimeError(f"the camera reports a {width} x {height} frame; check smart/camera/1")
    # The beam's camera pixel is a beamline calibration (measured once on a scintillator);
    # the simulated optics put it at the image centre.
    mapper.write_attribute("BeamPosition", [(width - 1) / 2.0, (height - 1) / 2.0])
    particles = tango.DeviceProxy(trl("smart/particles/1"))
    sem_pixel_um = _tiff_pixel_size_um(inputs.sem)
    for name, value in {**options.particle_settings,
                        "IsolationRadius": options.isolation_um / sem_pixel_um}.items():
        particles.write_attribute(name, value)
    visits = out_dir / "visits.csv"
    visits.unlink(missing_ok=True)
    steps = [
        f"senv SmartScanLog {visits}",
        f"senv SmartDriftEvery {options.drift_every}",
        *([f"senv SmartRotationRange {options.rotation_range_deg[0]} {options.rotation_range_deg[1]}"]
          if options.rotation_range_deg is not None else []),
        f"smart_calibrate_camera {options.calibration_step_um} 3",
        f"smart_register {inputs.sem} similarity sem",
        f"smart_find_particles {inputs.sem}",
        f"smart_fine_align {options.fine_particles} {options.search_um} {options.exposure_s}",
        f"smart_scan_particles mesh {options.scan_half_width_um} {options.scan_step_um} {options.exposure_s} "
        f"True {options.particles}",
    ]
    timings: dict[str, float] = {}
    with DoorClient(trl("smart/door/01"), echo=echo) as door:
        for step in steps:
            started = time.monotonic()
            door.run(step, timeout_s=3600)
            timings[step.split()[0]] = time.monotonic() - started
    return timings


def _tiff_pixel_size_um(path: Path) -> float:
    """The pixel size the SEM file declares (the same metadata RegistrationDS reads)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return float(json.loads(tif.pages[0].description)["pixel_size_um"])


def _percentile_within(errors_um: np.ndarray, limit_um: float) -> float:
    return float(np.mean(errors_um <= limit_um)) if len(errors_um) else float("nan")


def score(out_dir: Path, inputs: Inputs) -> dict[str, Any]:
    """Compare every visited target with the true stage position of its particle."""
    truth = json.loads(inputs.truth.read_text())
    sample = json.loads(inputs.sample.read_text())
    sem_to_sample = np.array(truth["sem"]["pixel_to_sample"])
    sample_to_stage = np.array(truth["sample_to_stage"])
    particles = np.array([[p["x"], p["y"]] for p in sample["particles"]])
    rows = list(csv.DictReader((out_dir / "visits.csv").open()))
    records = []
    for row in rows:
        sem_px = np.array([float(row["sem_x_px"]), float(row["sem_y_px"]), 1.0])
        in_sample = (sem_to_sample @ sem_px)[:2]
        nearest = int(np.argmin(np.linalg.norm(particles - in_sample, axis=1)))
        true_stage = (sample_to_stage @ np.array([*particles[nearest], 1.0]))[:2]

        def error_um(x_key: str, y_key: str, row=row, true_stage=true_stage) -> float:
            try:
                point = np.array([float(row[x_key]), float(row[y_key])])
            except ValueError:
                return math.nan
            return float(np.linalg.norm(point - true_stage) * UM_PER_MM)

        records.append({
            "index": int(row["index"]), "outcome": row["outcome"], "truth_particle": nearest,
            "detection_error_um": float(np.linalg.norm(particles[nearest] - in_sample)),
            "true_x": float(true_stage[0]), "true_y": float(true_stage[1]),
            "coarse_error_um": error_um("coarse_x", "coarse_y"),
            "fine_error_um": error_um("target_x", "target_y"),
            "ce_center_error_um": error_um("ce_center_x", "ce_center_y"),
            "overhead_s": float(row["overhead_s"] or "nan"), "scan_s": float(row["scan_s"] or "nan"),
        })
    coarse = np.array([r["coarse_error_um"] for r in records if math.isfinite(r["coarse_error_um"])])
    fine = np.array([r["fine_error_um"] for r in records if math.isfinite(r["fine_error_um"])])
    overhead = np.array([r["overhead_s"] for r in records if math.isfinite(r["overhead_s"])])
    summary = {
        "particles_visited": len(records),
        "scanned": sum(r["outcome"].startswith("scanned") for r in records),
        "coarse_within_1um": _percentile_within(coarse, 1.0),
        "fine_within_100nm": _percentile_within(fine, 0.1),
        "coarse_error_um_median": float(np.median(coarse)) if len(coarse) else math.nan,
        "coarse_error_um_p95": float(np.percentile(coarse, 95)) if len(coarse) else math.nan,
        "fine_error_nm_median": float(np.median(fine) * 1000) if len(fine) else math.nan,
        "fine_error_nm_p95": float(np.percentile(fine, 95) * 1000) if len(fine) else math.nan,
        "overhead_s_median": float(np.median(overhead)) if len(overhead) else math.nan,
        "overhead_s_max": float(np.max(overhead)) if len(overhead) else math.nan,
        "particles": records,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def summary_table(summary: dict[str, Any]) -> str:
    lines = [f"{'particle':>8} {'outcome':>18} {'coarse err (um)':>16} {'fine err (nm)':>14} {'overhead (s)':>13}"]
    for r in summary["particles"]:
        lines.append(f"{r['index']:>8} {r['outcome']:>18} {r['coarse_error_um']:>16.3f} "
                     f"{r['fine_error_um'] * 1000:>14.1f} {r['overhead_s']:>13.2f}")
    lines.append(f"coarse alignment: {summary['coarse_within_1um']:.0%} within 1 um "
                 f"(median {summary['coarse_error_um_median']:.3f} um, "
                 f"95th pct {summary['coarse_error_um_p95']:.3f} um)")
    lines.append(f"fine alignment:   {summary['fine_within_100nm']:.0%} within 100 nm "
                 f"(median {summary['fine_error_nm_median']:.1f} nm, 95th pct {summary['fine_error_nm_p95']:.1f} nm)")
    lines.append(f"per-particle overhead (goto + bookkeeping): median {summary['overhead_s_median']:.2f} s, "
                 f"max {summary['overhead_s_max']:.2f} s")
    return "\n".join(lines)
