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
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tango

from clients.display import camera_geometry, duration, format_table, nanometres, significant, um_per_unit
from clients.door import DoorClient, MacroFailed
from clients.particle_profiles import CEO2_50NM, particle_profile

UM_PER_MM = 1000.0
SCAN_FILE = "scans.h5"
"""Sardana's ScanFile in ``<run>/scans``: one NXentry per mesh, each with its SMART metadata."""
EVENTS_FILE = "smart_events.jsonl"
"""The loop's event log next to visits.csv (macros/smart_records.py)."""


PARTICLE_SETTINGS_50NM: dict[str, Any] = {
    name: value for name, value in particle_profile(CEO2_50NM).items() if name != "IsolationRadius"}
"""ParticleDS settings for ~50 nm particles on a 20 nm/px SEM image, for the demo and the night:
the ``ceo2_50nm`` profile that ``smart up`` defines, but for IsolationRadius, which the runs set
from ``isolation_um`` and the pixel size of the image they detect on."""


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
    particle_settings: dict[str, Any] = field(default_factory=lambda: dict(PARTICLE_SETTINGS_50NM))
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
    from simulation.config import default_beamline
    from simulation.sem import render_sem
    from simulation.tiffio import write_tiff
    from simulation.truth import write_truth

    out_dir.mkdir(parents=True, exist_ok=True)
    beamline = default_beamline(seed)
    paths = Inputs(out_dir / "beamline.json", out_dir / "sample.json", out_dir / "sem.tif", out_dir / "truth.json")
    beamline.save(paths.beamline)
    beamline.sample.save(paths.sample)
    write_truth(beamline, paths.truth)
    sem = render_sem(beamline.sample, beamline.sem, seed=seed)
    write_tiff(paths.sem, sem.image, beamline.sem.pixel_size_um, {"modality": "SEM", "seed": seed})
    return paths


@dataclass
class Step:
    """One Door command of the workflow and how to say, in one line, what it achieved."""

    macro: str
    title: str
    outcome: Callable[[], str] | None = None
    announce: str | None = None
    """Said before a step that takes minutes, so a silent console does not look stuck."""


def run_workflow(tango_host: str, inputs: Inputs, out_dir: Path, options: WorkflowOptions,
                 echo: Callable[[str, str], None] | None = None,
                 report: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Drive the workflow through the Door; returns the timings of each step (s).

    ``echo`` receives every line the Door says (stream, line): Spock's view. ``report``
    receives the middle view for people: one line per step with what it found, read from
    the devices (units on every number), and one line per scanned particle with the time
    spent and left, read from the visit log as the loop writes it."""
    import time

    def trl(name: str) -> str:
        return f"tango://{tango_host}/{name}"

    say = report or (lambda line: None)
    mapper = tango.DeviceProxy(trl("smart/coordmapper/1"))
    registration = tango.DeviceProxy(trl("smart/registration/1"))
    particles = tango.DeviceProxy(trl("smart/particles/1"))
    _prepare_devices(tango.DeviceProxy(trl("smart/camera/1")), mapper, particles, inputs, options)
    visits = out_dir / "visits.csv"
    setup = _session_variables(out_dir, visits, options)
    unit = str(mapper.read_attribute("StageUnit").value or "mm")
    steps = [
        Step(f"smart_calibrate_camera {options.calibration_step_um} 3", "camera calibrated",
             lambda: describe_calibration(_edge(mapper, "camera", "stage"), unit)),
        Step(f"smart_register {inputs.sem} similarity sem", f"{inputs.sem.name} registered to the camera",
             lambda: describe_registration(json.loads(registration.LastResult or "{}"))),
        Step(f"smart_find_particles {inputs.sem}", "particles detected",
             lambda: f"{particles.Count} on {inputs.sem.name}, {particles.IsolatedCount} isolated"),
        Step(f"smart_fine_align {options.fine_particles} {options.search_um} {options.exposure_s}",
             "fine alignment", lambda: describe_fine_alignment(_edge(mapper, "sem", "stage"), unit),
             f"X-ray maps of {options.fine_particles} particles, each searched ±{options.search_um:g} µm "
             "(a few minutes)"),
    ]
    total_steps = len(steps) + 1
    timings: dict[str, float] = {}
    with DoorClient(trl("smart/door/01"), echo=echo) as door:
        for line in setup:
            door.run(line, timeout_s=60)
        for number, step in enumerate(steps, start=1):
            if step.announce:
                say(f"[{number}/{total_steps}] {step.title}: {step.announce} ...")
            started = time.monotonic()
            door.run(step.macro, timeout_s=3600)
            timings[step.macro.split()[0]] = elapsed = time.monotonic() - started
            outcome = step.outcome() if step.outcome else ""
            say(f"[{number}/{total_steps}] {step.title} in {duration(elapsed)}" + (f": {outcome}" if outcome else ""))
        timings["smart_scan_particles"] = _scan_particles(door, int(particles.IsolatedCount), visits, options,
                                                          f"[{total_steps}/{total_steps}]", say)
    return timings


def _prepare_devices(camera: tango.DeviceProxy, mapper: tango.DeviceProxy, particles: tango.DeviceProxy,
                     inputs: Inputs, options: WorkflowOptions) -> None:
    """What a beamline has set before a user starts: the beam's camera pixel and the
    detection settings for this sample; refused when the stack runs another beamline file."""
    camera.Snap()  # Width and Height are those of the last frame; there is none before the first
    width, height = camera.read_attribute("Width").value, camera.read_attribute("Height").value
    if not (width > 0 and height > 0):
        raise RuntimeError(f"the camera reports a {width} x {height} frame; check smart/camera/1")
    # The beam's camera pixel is a beamline calibration (measured once on a scintillator): the
    # value the virtual beamline's calibration file gives (camera.beam_px_calibrated; exact,
    # the image centre, in today's default beamline; a few hundred nm off on a night).
    from simulation.config import load_beamline

    optics = load_beamline(inputs.beamline).camera
    if (optics.width, optics.height) != (width, height):
        raise RuntimeError(f"the camera gives {width} x {height} frames, the beamline file {optics.width} x "
                           f"{optics.height}; start the stack with this run's beamline file")
    mapper.write_attribute("BeamPosition", list(optics.beam_calibrated()))
    sem_pixel_um = _tiff_pixel_size_um(inputs.sem)
    for name, value in {**options.particle_settings,
                        "IsolationRadius": options.isolation_um / sem_pixel_um}.items():
        particles.write_attribute(name, value)


def _session_variables(out_dir: Path, visits: Path, options: WorkflowOptions) -> list[str]:
    """The ``senv`` lines of this run, after clearing a previous run's files from ``out_dir``
    (its scans, visits and events are not this run's)."""
    visits.unlink(missing_ok=True)
    scans = out_dir / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    (scans / SCAN_FILE).unlink(missing_ok=True)
    (out_dir / EVENTS_FILE).unlink(missing_ok=True)
    return [
        f"senv ScanDir {scans}",  # every mesh is kept (Sardana's NXscan HDF5 recorder), as at a beamline
        f"senv ScanFile {SCAN_FILE}",
        f"senv SmartScanLog {visits}",
        f"senv SmartDriftEvery {options.drift_every}",
        *([f"senv SmartRotationRange {options.rotation_range_deg[0]} {options.rotation_range_deg[1]}"]
          if options.rotation_range_deg is not None else []),
    ]


def _scan_particles(door: DoorClient, isolated: int, visits: Path, options: WorkflowOptions, step: str,
                    say: Callable[[str], None]) -> float:
    """The last step, with one line per particle as the loop logs it; its time (s)."""
    import time

    to_scan = min(options.particles, isolated) if options.particles > 0 else isolated
    say(f"{step} scanning {to_scan} isolated particles: "
        f"mesh ±{options.scan_half_width_um:g} µm, {options.scan_step_um * 1000:g} nm steps, "
        f"{options.exposure_s * 1000:g} ms per point")
    started = time.monotonic()
    with VisitWatcher(visits, to_scan, say):
        door.run(f"smart_scan_particles mesh {options.scan_half_width_um} {options.scan_step_um} "
                 f"{options.exposure_s} True {options.particles}", timeout_s=3600)
    elapsed = time.monotonic() - started
    rows = _read_visits(visits)
    if to_scan > 0 and not rows:  # the macro ended well but visited nothing: never a result
        raise MacroFailed(f"smart_scan_particles ended without visiting any of the {to_scan} particles "
                          f"(no row in {visits}); its output above says why", [])
    with_signal = sum(r.get("outcome") == "scanned" for r in rows)
    say(f"{step} {len(rows)} particles visited in {duration(elapsed)}, {with_signal} with a Ce signal")
    return elapsed


def _edge(mapper: tango.DeviceProxy, first: str, second: str) -> dict[str, Any] | None:
    """The stored mapper edge between two frames (either direction), or None."""
    for edge in json.loads(mapper.Transforms or "{}").get("edges", []):
        if {edge.get("from"), edge.get("to")} == {first, second}:
            return edge
    return None


def describe_calibration(edge: dict[str, Any] | None, stage_unit: str) -> str:
    """The camera calibration as a scientist reads it: pixel size, rotation, flip, residual."""
    if edge is None:
        return "no camera -> stage edge stored"
    text = camera_geometry(edge["matrix"], stage_unit).describe()
    record = edge.get("record") or {}
    if record.get("rms") is not None:
        text += f"; residual {nanometres(record['rms'] * um_per_unit(stage_unit) * 1000)} RMS"
        if record.get("pairs"):
            text += f" over {record['pairs']} moves"
    return text


def describe_registration(result: dict[str, Any]) -> str:
    """A reference -> camera registration: rotation, scale (camera px per reference px), confidence."""
    if not result:
        return "no result"
    return (f"rotation {result.get('rotation_deg', math.nan):+.2f}°, scale {significant(result.get('scale', math.nan))}"
            f" camera px per reference px, confidence {result.get('confidence', math.nan):.2f}")


def describe_fine_alignment(edge: dict[str, Any] | None, stage_unit: str) -> str:
    """The X-ray refined reference -> stage edge: how many maps, how well they agree."""
    if edge is None:
        return "no reference -> stage edge stored"
    record = edge.get("record") or {}
    pairs = record.get("pairs")
    rms = record.get("rms")
    text = f"{pairs} X-ray maps" if pairs else "stored"
    if rms is not None:
        rms_nm = rms * um_per_unit(stage_unit) * 1000
        if pairs and pairs <= 3 and abs(rms_nm) < 1e-3:
            # 3 maps fix an affine (2 a similarity) exactly: the "residual" is rounding noise
            text += " (an exact fit: nothing left to judge it by; 4 or more maps give a residual)"
        else:
            text += f", residual {nanometres(rms_nm)} RMS"
    return text


def _read_visits(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as stream:
            return list(csv.DictReader(stream))
    except OSError:
        return []


class VisitWatcher:
    """Reports each particle the scan loop finishes, from its visit log, with the time left.

    The loop appends one CSV row per finished particle (SmartScanLog); reading that file is
    what any observer of an overnight run can do, and needs nothing from the Door's text."""

    def __init__(self, path: Path, total: int, say: Callable[[str], None], period_s: float = 0.5) -> None:
        self.path, self.total, self.say, self.period_s = path, total, say, period_s
        self.reported = 0
        self.started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="visit-watcher")

    def __enter__(self) -> VisitWatcher:
        import time

        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()  # the rows written just before the loop ended

    def _watch(self) -> None:
        while not self._stop.wait(self.period_s):
            self.poll()

    def poll(self) -> None:
        import time

        rows = _read_visits(self.path)
        for row in rows[self.reported:]:
            self.reported += 1
            elapsed = time.monotonic() - self.started
            left = elapsed / self.reported * max(self.total - self.reported, 0)
            self.say(particle_line(row, self.reported, max(self.total, self.reported), elapsed, left))


def particle_line(row: dict[str, str], number: int, total: int, elapsed_s: float, left_s: float) -> str:
    """One finished particle: outcome, time spent on it, elapsed and estimated time left."""
    def seconds(key: str) -> str:
        try:
            return f"{float(row[key]):.2f} s"
        except (KeyError, TypeError, ValueError):
            return "-"

    width = len(str(total))
    return (f"  {number:>{width}}/{total} particle {row.get('index', '?'):>5}: {row.get('outcome', '?'):<17} "
            f"scan {seconds('scan_s')}, move + bookkeeping {seconds('overhead_s')}; "
            f"elapsed {duration(elapsed_s)}, " + (f"~{duration(left_s)} left" if number < total else "done"))


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


SUMMARY_COLUMNS = (("particle", "d"), ("outcome", ""), ("coarse error (nm)", ".0f"), ("fine error (nm)", ".0f"),
                   ("scan (s)", ".2f"), ("move + bookkeeping (s)", ".2f"))


def summary_table(summary: dict[str, Any]) -> str:
    """Every visited particle and the run's figures of merit; hit errors all in nm."""
    rows = [(r["index"], r["outcome"], r["coarse_error_um"] * 1000, r["fine_error_um"] * 1000, r["scan_s"],
             r["overhead_s"]) for r in summary["particles"]]
    lines = [format_table(SUMMARY_COLUMNS, rows), ""]
    lines.append(f"coarse alignment (camera registration only): {summary['coarse_within_1um']:.0%} within 1000 nm "
                 f"(median {summary['coarse_error_um_median'] * 1000:.0f} nm, "
                 f"95th percentile {summary['coarse_error_um_p95'] * 1000:.0f} nm)")
    lines.append(f"fine alignment (after the X-ray maps):       {summary['fine_within_100nm']:.0%} within 100 nm "
                 f"(median {summary['fine_error_nm_median']:.0f} nm, "
                 f"95th percentile {summary['fine_error_nm_p95']:.0f} nm)")
    lines.append(f"per particle, move + bookkeeping: median {summary['overhead_s_median']:.2f} s, "
                 f"max {summary['overhead_s_max']:.2f} s")
    return "\n".join(lines)
