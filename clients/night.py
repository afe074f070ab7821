"""`make night`: a whole night on the virtual beamline, through the Door, scored against the truth.

Generates the sample and its SEM images, brings the stack up, then does what a user does for a
night at the beamline, as Door calls: calibrate the camera, set the beam's camera pixel (its
calibrated value, never the simulation's truth), register every SEM region, find its particles,
fine-align, fill the queue (QueueDS) with every region's isolated particles, order it and run
``smart_run_queue``. With ``--chaos`` (the default) the night is made unkind on purpose: the
MacroServer and one SMART server (QueueDS) are killed with SIGKILL mid-scan (by the PIDs the
launcher recorded) and restarted, the queue is resumed, and the ring loses its beam for a while;
every target must still be done exactly once and no scan may be taken without beam.

Every visit is then scored against the truth, never against the workflow's own estimates
(clients/night_score.py): the particle it was meant for and where that particle truly was when
the scan started. Results go to ``run/night/``: sample.json, beamline.json, truth.json, the SEM
images, visits.csv, smart_events.jsonl, scans/scans.h5, queue_targets.json, summary.json,
night_drift.png, night_hits.png and report.html; the stack's logs to ``run/night/stack/logs``.
Every process it started is stopped, whatever happens.

Output: by default one line per step and per finished target (elapsed, time left), the chaos
as it happens and the scores; ``--verbose`` adds everything the launcher and the Door print,
``--quiet`` leaves only errors and the scores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from clients.demo import Console, describe_stack
from clients.display import duration
from clients.door import DoorClient, MacroFailed
from clients.launcher import DEFAULT_CONFIG, REPO, LaunchError, Stack, ended_like_ctrl_c
from clients.night_decompose import alignment_times, decompose, decomposition_lines, read_events
from clients.night_score import LossPeriods, Truth, read_visits, score_night, summary_lines
from clients.workflow import (
    EVENTS_FILE,
    PARTICLE_SETTINGS_50NM,
    SCAN_FILE,
    VisitWatcher,
    _edge,
    _tiff_pixel_size_um,
    describe_calibration,
    describe_fine_alignment,
    describe_registration,
)
from macros.smart_calls import TangoThread

NIGHT_DIR = REPO / "run" / "night"
DOOR = "smart/door/01"
BEAM_MIN_MA = 10.0
"""The stack's SmartBeamCondition threshold on smart/ring/1/Current: below it there is no beam."""
CHAOS_SERVER = "QueueDS/smart"
"""The SMART server the chaos kills besides the MacroServer: the queue, which every target's
claim and finish go through (its loss is the one the loop must ride out without a restart)."""
MACROSERVER = "MacroServer/smart"
OVERVIEW = "overview"
"""The overview's frame: the SEM image of the whole membrane that registers to the camera."""


@dataclass
class NightOptions:
    """Knobs of one night; lengths in micrometres as users give them."""

    particles: int = 300
    hours: float = 8.0
    seed: int = 0
    chaos: bool = True
    drift_correction: bool = True
    scan_sizing: bool = True
    """Each mesh sized by the target's mapped uncertainty and the drift estimate; off: every mesh
    is the ``scan_half_width_um`` asked for (the night before sizing; a comparison)."""
    fine_particles: int = 4
    search_um: float = 1.0
    calibration_step_um: float = 20.0
    scan_half_width_um: float = 0.3
    scan_step_um: float = 0.05
    exposure_s: float = 0.01
    drift_every: int = 10
    regions: int = 4
    """SEM tiles (high-magnification regions) besides the overview."""
    tile_px: int = 4096
    """Width and height of each tile (20 nm/px)."""
    sem_scan_errors: bool = True
    """Render the overview and tiles with their own SEM scan errors (magnification, shear,
    non-linearity), as a real SEM scans, and register the overview to the camera with the affine
    model (a similarity registration refuses them; docs/simulation.md)."""
    acceleration: float = 8.0
    """Simulated seconds per wall second: a default night (300 particles, 4 tiles) takes about an
    hour of wall time on 2 shared cores, in which 8 simulated hours of drift pass."""
    beam_loss_s: float = 45.0
    """With chaos: a beam loss this long (wall s) mid-night, longer than a scan, so the loop must
    wait for beam; 0: none."""
    isolation_um: float = 2.0
    particle_settings: dict[str, Any] = field(default_factory=lambda: dict(PARTICLE_SETTINGS_50NM))


@dataclass
class Region:
    """One SEM image of the sample the night takes particles from; its name is its frame."""

    name: str
    image: Path


@dataclass
class NightInputs:
    """The files a night starts from, as a user brings them (plus the hidden truth)."""

    beamline: Path
    sample: Path
    truth: Path
    regions: list[Region]
    overview: Path | None = None
    """The low-magnification SEM overview the regions are registered into (None: one region,
    registered to the camera directly)."""


def forget_earlier_queue(stack: Stack) -> None:
    """A night is a new sample: an earlier night's queue file in the same run directory (kept on
    purpose across restarts, docs/queue.md) would add its targets, done or pending, to this
    night's. Left alone while that earlier stack still runs (``up`` then refuses anyway)."""
    if not stack.running():
        shutil.rmtree(stack.run_dir / "queue", ignore_errors=True)


def prepare_night_inputs(out_dir: Path, options: NightOptions) -> NightInputs:
    """Generate the night's sample, its beamline (``night_beamline``: drift, imperfect optics and
    SEM, a decaying ring with refills and losses, the simulated clock), the SEM overview and
    ``options.regions`` tiles, the manifest and the truth (with ``regions`` and ``drift``)."""
    from simulation.config import night_beamline
    from simulation.regions import PERFECT_SCANS, RegionsRecipe, night_sample, prepare_regions
    from simulation.truth import write_truth

    if options.regions == 0:  # one SEM image of the default sample, registered to the camera as in make demo
        from simulation.sem import render_sem
        from simulation.tiffio import write_tiff

        out_dir.mkdir(parents=True, exist_ok=True)
        beamline = night_beamline(options.seed, hours=options.hours, acceleration=options.acceleration)
        one = NightInputs(out_dir / "beamline.json", out_dir / "sample.json", out_dir / "truth.json",
                          [Region("sem", out_dir / "sem.tif")])
        beamline.save(one.beamline)
        beamline.sample.save(one.sample)
        write_truth(beamline, one.truth)
        image = render_sem(beamline.sample, beamline.sem, seed=options.seed)
        write_tiff(one.regions[0].image, image.image, beamline.sem.pixel_size_um, {"modality": "SEM",
                                                                                    "seed": options.seed})
        return one
    recipe = RegionsRecipe(tiles=options.regions, tile_px=options.tile_px)
    if not options.sem_scan_errors:  # perfect similarities (--no-sem-scan-errors)
        recipe = replace(recipe, scan_errors=PERFECT_SCANS)
    sample = night_sample(options.seed, recipe)
    beamline = night_beamline(options.seed, sample=sample, hours=options.hours, acceleration=options.acceleration)
    paths = prepare_regions(out_dir, options.seed, recipe, beamline=beamline)
    return NightInputs(paths.beamline, paths.sample, paths.truth,
                       [Region(name, path) for name, path in paths.tiles.items()], overview=paths.overview)


def start_the_clock(inputs: NightInputs) -> float:
    """Write the night's start (now) into the beamline file the stack's simulated devices read
    at start-up, and into the truth; returns it (Unix s)."""
    from simulation.config import load_beamline

    epoch = time.time()
    load_beamline(inputs.beamline).starting_at(epoch).save(inputs.beamline)
    facts = json.loads(inputs.truth.read_text())
    if isinstance(facts.get("clock"), dict):
        facts["clock"]["epoch_unix"] = epoch
        inputs.truth.write_text(json.dumps(facts, indent=1) + "\n")
    return epoch


def calibrated_beam_pixel(inputs: NightInputs) -> tuple[float, float]:
    """The beam's camera pixel as the beamline's once-per-beamline calibration gives it (what a
    user reads from the beamline's calibration file), never the simulation's true value."""
    from simulation.config import load_beamline

    x, y = load_beamline(inputs.beamline).camera.beam_calibrated()
    return float(x), float(y)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make night ARGS=...", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--particles", type=int, default=300, help="isolated particles to scan at most (default 300)")
    parser.add_argument("--hours", type=float, default=8.0, help="simulated hours of the night (default 8)")
    parser.add_argument("--seed", type=int, default=None, help="sample and beamline seed (default: a fresh one)")
    parser.add_argument("--chaos", action=argparse.BooleanOptionalAction, default=True,
                        help="SIGKILL the MacroServer and QueueDS mid-scan and lose the beam for a while (default on)")
    parser.add_argument("--no-drift-correction", action="store_true",
                        help="no camera re-registration and no X-ray drift tracking: the night as it drifts")
    parser.add_argument("--scan-sizing", action=argparse.BooleanOptionalAction, default=True,
                        help="size each mesh by the target's uncertainty (default on); off: every mesh is "
                             "--scan-half-um wide")
    parser.add_argument("--regions", type=int, default=4,
                        help="SEM tiles besides the overview (default 4); 0: one SEM image registered to the camera")
    parser.add_argument("--tile-px", type=int, default=4096, help="width and height of each tile, px of 20 nm")
    parser.add_argument("--sem-scan-errors", action=argparse.BooleanOptionalAction, default=True,
                        help="SEM overview and tiles with their own scan errors (1-2 %% magnification, shear, "
                             "non-linearity), the overview registered to the camera with the affine model "
                             "(default on); off: perfect similarities")
    parser.add_argument("--acceleration", type=float, default=8.0,
                        help="simulated seconds per wall second (default 8: 8 h of drift in an hour)")
    parser.add_argument("--fine-particles", type=int, default=4, help="particles mapped for the fine alignment")
    parser.add_argument("--search-um", type=float, default=1.0,
                        help="half width of the fine alignment's search maps (µm, default 1.0)")
    parser.add_argument("--scan-half-um", type=float, default=0.3, help="half width of each particle's mesh (µm)")
    parser.add_argument("--scan-step-um", type=float, default=0.05, help="step of each particle's mesh (µm)")
    parser.add_argument("--exposure", type=float, default=0.01, help="integration time per point (s)")
    parser.add_argument("--beam-loss-s", type=float, default=45.0,
                        help="with --chaos: length of the beam loss mid-night (wall s; 0: none)")
    parser.add_argument("--run-dir", type=Path, default=NIGHT_DIR, help="where inputs, results and logs go")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="stack configuration YAML")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("--verbose", action="store_true", help="everything the launcher and the Door say")
    loudness.add_argument("--quiet", action="store_true", help="only errors and the scores")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------- the night
class BeamMonitor:
    """Records every period the ring had no beam (Current below the beam condition's threshold),
    read from the ring itself: the scorer's truth of when scans would have had no signal."""

    def __init__(self, tango_host: str, period_s: float = 0.1) -> None:
        import tango

        self._ring = tango.DeviceProxy(f"tango://{tango_host}/smart/ring/1")
        self._ring.set_timeout_millis(2000)
        self.period_s = period_s
        self._seen = LossPeriods()
        self._stop = threading.Event()
        self._thread = TangoThread(target=self._watch, daemon=True, name="beam-monitor")

    @property
    def losses(self) -> list[tuple[float, float]]:
        return self._seen.periods

    def __enter__(self) -> BeamMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._seen.close()

    def _watch(self) -> None:
        import tango

        while not self._stop.wait(self.period_s):
            asked = time.time()
            try:
                lost = float(self._ring.read_attribute("Current").value) < BEAM_MIN_MA
            except (tango.DevFailed, TypeError, ValueError):
                continue
            self._seen.saw(lost, asked, time.time())


class NightWatcher(VisitWatcher):
    """Says each target the queue loop finishes, from its visit log: region, particle, outcome,
    scan and move + bookkeeping times, elapsed and time left. A scan found without beam (tried
    again) is said as such and not counted as a finished target."""

    def __init__(self, path: Path, total: int, say: Callable[[str], None]) -> None:
        super().__init__(path, total, say, period_s=1.0)
        self.rows = 0

    def poll(self) -> None:
        rows = read_visits(self.path)
        for row in rows[self.rows:]:
            self.rows += 1
            elapsed = time.monotonic() - self.started
            retried = (row.get("message") or "").startswith("to be tried again")
            if not retried:
                self.reported += 1
            left = elapsed / max(self.reported, 1) * max(self.total - self.reported, 0)
            width = len(str(self.total))
            where = f"{row.get('region') or '?'} particle {row.get('index') or '-':>4}"
            if retried:
                self.say(f"  {'':>{width}} {'':>{width}} {where}: {row.get('outcome')}, to be tried again")
                continue
            self.say(f"  {self.reported:>{width}}/{self.total} {where}: {row.get('outcome', '?'):<17} "
                     f"scan {_seconds(row.get('scan_s'))}, move + bookkeeping {_seconds(row.get('overhead_s'))}; "
                     f"elapsed {duration(elapsed)}, " + (f"~{duration(left)} left" if self.reported < self.total
                                                         else "done"))


def _seconds(value: Any) -> str:
    try:
        return f"{float(value):.2f} s"
    except (TypeError, ValueError):
        return "-"


def _first_line(error: BaseException | None) -> str:
    """What ended a loop, in one line (a DevFailed's description, not its repr)."""
    import tango

    if isinstance(error, tango.DevFailed) and error.args:
        return f"{error.args[0].reason}: {error.args[0].desc.strip().splitlines()[0][:160]}"
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]


class QueueLoop:
    """``smart_run_queue`` on the Door in a thread; it ends when the queue is empty, or when its
    MacroServer dies (then ``error`` says so)."""

    def __init__(self, tango_host: str, echo: Callable[[str, str], None]) -> None:
        self.error: BaseException | None = None
        self._door = DoorClient(f"tango://{tango_host}/{DOOR}", echo=echo)
        self._thread = TangoThread(target=self._run, daemon=True, name="queue-loop")
        self._thread.start()

    def _run(self) -> None:
        try:
            self._door.run("smart_run_queue", timeout_s=24 * 3600)
        except BaseException as exc:  # noqa: BLE001 - a killed MacroServer ends it, as the chaos intends
            self.error = exc

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        self._door.close()


@dataclass
class ChaosStep:
    """Something done to the night once ``after_done`` targets are finished, while one scans."""

    after_done: int
    what: str
    """``kill_macroserver``, ``kill_server`` or ``beam_loss``."""
    done: bool = False


def fair_shares(available: Sequence[int], total: int) -> list[int]:
    """Up to ``total`` particles over regions holding ``available`` isolated ones: equal shares,
    and what a region cannot fill goes to the others (a tile with few isolated particles no
    longer leaves the night short while another has more)."""
    shares, left = [0] * len(available), max(int(total), 0)
    order = sorted(range(len(available)), key=lambda i: available[i])
    for k, i in enumerate(order):
        shares[i] = min(max(int(available[i]), 0), math.ceil(left / (len(order) - k)))
        left -= shares[i]
    return shares


def chaos_plan(total: int, beam_loss_s: float) -> list[ChaosStep]:
    """When to strike: the MacroServer a third into the queue, the beam halfway, the SMART
    server at two thirds (each while a target is being scanned)."""
    steps = [ChaosStep(max(1, total // 3), "kill_macroserver"), ChaosStep(max(2, 2 * total // 3), "kill_server")]
    if beam_loss_s > 0:
        steps.append(ChaosStep(max(1, total // 2), "beam_loss"))
    return sorted(steps, key=lambda s: s.after_done)


class Night:
    """The night through the Door: set-up steps, the queue, the chaos."""

    def __init__(self, stack: Stack, inputs: NightInputs, out_dir: Path, options: NightOptions,
                 console: Console) -> None:
        import tango

        self.stack, self.inputs, self.out_dir, self.options, self.console = stack, inputs, out_dir, options, console
        host = stack.tango_host

        def proxy(name: str) -> tango.DeviceProxy:
            device = tango.DeviceProxy(f"tango://{host}/{name}")
            device.set_timeout_millis(30_000)
            return device

        self.proxy = proxy
        self.mapper, self.particles = proxy("smart/coordmapper/1"), proxy("smart/particles/1")
        self.registration = proxy("smart/registration/1")
        self.visits = out_dir / "visits.csv"
        self.timings: dict[str, float] = {}
        self.chaos_log: list[dict[str, Any]] = []
        self.queue_wall_s = 0.0
        self.refused: dict[str, str] = {}
        """Regions whose registration into the overview was refused (name -> what the macro said)."""

    def queue(self) -> Any:
        return self.proxy("smart/queue/1")

    # ---------------------------------------------------------------------------- set-up
    def step(self, door: DoorClient, macro: str, title: str, outcome: Callable[[], str] | None = None,
             announce: str | None = None) -> None:
        if announce:
            self.console.say(f"{title}: {announce} ...")
        started = time.monotonic()
        door.run(macro, timeout_s=3600)
        elapsed = time.monotonic() - started
        self.timings[macro.split()[0]] = self.timings.get(macro.split()[0], 0.0) + elapsed
        said = outcome() if outcome else ""
        self.console.say(f"{title} in {duration(elapsed)}" + (f": {said}" if said else ""))

    def prepare(self) -> None:
        """ScanDir, the visit log, the beam's camera pixel, the camera calibration, every region
        registered and its particles found, the fine alignment, the queue filled and ordered."""
        options, out_dir = self.options, self.out_dir
        scans = out_dir / "scans"
        scans.mkdir(parents=True, exist_ok=True)
        for stale in (scans / SCAN_FILE, self.visits, out_dir / EVENTS_FILE):
            stale.unlink(missing_ok=True)  # a previous night's records are not this night's
        unit = str(self.mapper.read_attribute("StageUnit").value or "mm")
        setup = [f"senv ScanDir {scans}", f"senv ScanFile {SCAN_FILE}", f"senv SmartScanLog {self.visits}",
                 "senv SmartClock smart/ring/1/SimTime",
                 f"senv SmartDriftEvery {options.drift_every if options.drift_correction else 0}",
                 f"senv SmartDriftCorrection {options.drift_correction}",
                 f"senv SmartScanSizing {options.scan_sizing}"]
        self.camera_live()
        with DoorClient(f"tango://{self.stack.tango_host}/{DOOR}", echo=self.console.door) as door:
            for line in setup:
                door.run(line, timeout_s=60)
            beam = calibrated_beam_pixel(self.inputs)
            self.step(door, f"smart_beam_set {beam[0]:.3f} {beam[1]:.3f}",
                      "beam position set from the beamline's calibration",
                      lambda: "camera pixel ({:.1f}, {:.1f})".format(*self.mapper.BeamPosition))
            self.step(door, f"smart_calibrate_camera {options.calibration_step_um} 3", "camera calibrated",
                      lambda: describe_calibration(_edge(self.mapper, "camera", "stage"), unit))
            # the hierarchy: the overview to the camera, every tile into the overview (tile ->
            # overview -> camera -> stage); one SEM image alone goes to the camera directly
            top = self.inputs.overview or self.inputs.regions[0].image
            frame = OVERVIEW if self.inputs.overview else self.inputs.regions[0].name
            # an SEM image with scan errors maps affinely, not as a similarity (docs/registration.md, "Affine")
            model = "affine" if options.sem_scan_errors and self.inputs.overview else "similarity"
            self.step(door, f"smart_register {top} {model} {frame}", f"{top.name} registered to the camera",
                      lambda: describe_registration(json.loads(self.registration.LastResult or "{}")))
            regions = self.register_regions(door) if self.inputs.overview else list(self.inputs.regions)
            available = ([self.isolated_in(door, region) for region in regions] if len(regions) > 1
                         else [options.particles])  # one region: no counting pass
            for region, share in zip(regions, fair_shares(available, options.particles), strict=True):
                self.prepare_region(door, region, unit, share)
            door.run(f"senv SmartReferenceFrame {frame}", timeout_s=60)
            queue = self.queue()
            self.step(door, "smart_queue_order", "queue ordered for the shortest stage travel",
                      lambda: f"{queue.Pending} targets pending")

    def register_regions(self, door: DoorClient) -> list[Region]:
        """Every tile into the overview; returns the registered ones. A registration in doubt
        (``SMART_Unsafe``: the macro stored nothing) costs that tile, not the night: it is said,
        kept in :attr:`refused` (and the summary) and the night goes on with the other tiles.
        Only when no tile registers does the night stop."""
        registered = []
        for region in self.inputs.regions:
            try:
                self.step(door, f"smart_register_region {region.image} {region.name} {OVERVIEW}",
                          f"region {region.name}: {region.image.name} registered into the overview",
                          lambda: describe_registration(json.loads(self.registration.LastResult or "{}"))
                          .replace("camera px per reference px", "overview px per tile px"))
            except MacroFailed as exc:
                said = str(exc).strip()
                if "SMART_Unsafe" not in said:
                    raise
                self.refused[region.name] = said
                self.console.say(f"region {region.name}: its registration into the overview is in doubt and was "
                                 f"not stored; the night goes on without it ({said[:300]})")
                continue
            registered.append(region)
        if not registered:
            raise MacroFailed(f"no region registered into the overview ({', '.join(self.refused)} refused): "
                              "nothing to queue. Larger tiles (more structure at the overview's pixel size) "
                              "or a finer overview register where these do not", [])
        return registered

    def camera_live(self, tries: int = 5) -> None:
        """The camera delivers frames before anything relies on one: a simulated camera's first
        frame builds its sample's reflectance map (seconds on a loaded machine), longer than a
        Snap waits; a real one is streaming long before a night starts."""
        import tango

        camera = self.proxy("smart/camera/1")
        for attempt in range(1, tries + 1):
            try:
                camera.Snap()
                return
            except tango.DevFailed as exc:
                if attempt == tries:
                    raise MacroFailed(f"the camera smart/camera/1 gave no frame in {tries} tries: "
                                      f"{exc.args[0].desc.strip()}", []) from None
                time.sleep(1.0)

    def detect(self, door: DoorClient, region: Region) -> None:
        """The particles of one region, with the settings for its pixel size (ParticleDS keeps
        the last detection: the queue and the fine alignment take that one)."""
        options = self.options
        pixel_um = _tiff_pixel_size_um(region.image)
        for name, value in {**options.particle_settings, "IsolationRadius": options.isolation_um / pixel_um}.items():
            self.particles.write_attribute(name, value)
        door.run(f"senv SmartReferenceFrame {region.name}", timeout_s=60)
        self.step(door, f"smart_find_particles {region.image}", f"region {region.name}: particles detected",
                  lambda: f"{self.particles.Count} on {region.image.name}, {self.particles.IsolatedCount} isolated")

    def isolated_in(self, door: DoorClient, region: Region) -> int:
        """How many isolated particles a region holds (a first detection, for the shares)."""
        self.detect(door, region)
        return int(self.particles.IsolatedCount)

    def prepare_region(self, door: DoorClient, region: Region, unit: str, share: int) -> None:
        """Find one region's particles, fine-align the region to the stage with X-ray maps of a
        few of them and queue up to ``share`` of its isolated particles, spread over the region."""
        options = self.options
        self.detect(door, region)
        self.step(door, f"smart_fine_align {options.fine_particles} {options.search_um} {options.exposure_s}",
                  f"region {region.name}: fine alignment",
                  lambda: describe_fine_alignment(_edge(self.mapper, region.name, "stage"), unit),
                  f"X-ray maps of {options.fine_particles} particles, each searched ±{options.search_um:g} µm")
        isolated = [i for i, flag in enumerate(self.particles.read_attribute("Isolated").value) if flag]
        if share <= 0 or not isolated:
            return
        spread = sorted({isolated[round(j)] for j in np.linspace(0, len(isolated) - 1, min(share, len(isolated)))})
        what = "isolated" if len(spread) == len(isolated) else ",".join(str(i) for i in spread)
        self.step(door, f"smart_queue_add {what} {options.scan_half_width_um} {options.scan_step_um} "
                        f"{options.exposure_s} {region.name}",
                  f"region {region.name}: queued", lambda: f"{len(spread)} of {len(isolated)} isolated particles")

    # ---------------------------------------------------------------------------- the queue
    def run_queue(self) -> None:
        """``smart_run_queue`` until the queue is empty; with chaos, kill and restart what the plan
        says while a target is scanned, and start the loop again after its MacroServer died."""
        queue = self.queue()
        total = int(queue.Pending) + int(queue.Running)
        plan = chaos_plan(total, self.options.beam_loss_s) if self.options.chaos else []
        self.console.say(f"night: {total} targets in the queue"
                         + (f"; chaos: {', '.join(f'{s.what} after {s.after_done} done' for s in plan)}"
                            if plan else "; no chaos"))
        started = time.monotonic()
        restarts = 0
        with NightWatcher(self.visits, total, self.console.say):
            loop = QueueLoop(self.stack.tango_host, self.console.door)
            while True:
                self.strike(plan, queue)
                if loop.alive():
                    time.sleep(0.3)
                    continue
                loop.join(10)
                queue = self.queue()
                left = int(queue.Pending) + int(queue.Running)
                if loop.error is None or left == 0:
                    if left and not loop.error:
                        self.console.say(f"the loop ended with {left} targets left "
                                         f"(queue paused: {queue.read_attribute('PauseReason').value!r})")
                    break
                if bool(queue.Paused):  # the loop's own safety stop (a drift check in doubt): no restart helps
                    raise MacroFailed(f"the loop stopped and paused the queue with {left} targets left: "
                                      f"{queue.read_attribute('PauseReason').value}", [])
                restarts += 1
                if restarts > 5:
                    raise MacroFailed(f"smart_run_queue ended {restarts} times with targets left: {loop.error}", [])
                self.console.say(f"  the loop ended ({_first_line(loop.error)}); "
                                 f"{left} targets left: smart_run_queue again")
                self.wait_door_free()
                loop = QueueLoop(self.stack.tango_host, self.console.door)
        self.queue_wall_s = time.monotonic() - started
        self.timings["smart_run_queue"] = self.queue_wall_s

    def wait_door_free(self, timeout_s: float = 300.0) -> None:
        """Until the Door runs no macro (ON, or ALARM after the killed one); a restarted
        MacroServer on a loaded machine takes a while to settle."""
        import tango

        deadline, state = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            try:
                state = self.proxy(DOOR).state()
                if state not in (tango.DevState.RUNNING, tango.DevState.MOVING):
                    return
            except tango.DevFailed:
                state = "not answering"
            time.sleep(0.5)
        raise MacroFailed(f"the Door {DOOR} did not become free within {timeout_s:.0f} s (state {state})", [])

    def strike(self, plan: list[ChaosStep], queue: Any) -> None:
        """The next chaos step when its time has come: enough targets done and one being scanned."""
        import tango

        pending = [s for s in plan if not s.done]
        if not pending:
            return
        try:
            done = int(queue.Done)
            activity = json.loads(queue.Activity)
        except (tango.DevFailed, ValueError):
            return  # the queue is being restarted
        step = pending[0]
        if done < step.after_done or activity.get("activity") != "scanning":
            return
        step.done = True
        target = activity.get("target")
        if step.what == "beam_loss":
            self.proxy("smart/ring/1").BeamLoss(float(self.options.beam_loss_s))
            self.console.say(f"  chaos: beam lost for {self.options.beam_loss_s:g} s while target {target} scans")
            self.chaos_log.append({"what": "beam_loss", "at": time.time(), "seconds": self.options.beam_loss_s,
                                   "target": target})
            return
        server = MACROSERVER if step.what == "kill_macroserver" else CHAOS_SERVER
        old = self.stack.processes[server].pid
        began = time.monotonic()
        new = self.stack.restart(server, kill=True)
        self.console.say(f"  chaos: SIGKILL {server} (pid {old}) while target {target} scans; "
                         f"restarted in {duration(time.monotonic() - began)} (pid {new.pid})")
        self.chaos_log.append({"what": "sigkill", "server": server, "pid": old, "new_pid": new.pid,
                               "at": time.time(), "target": target, "restart_s": time.monotonic() - began})

    def targets(self) -> list[dict[str, Any]]:
        targets = json.loads(self.queue().Targets)
        (self.out_dir / "queue_targets.json").write_text(json.dumps(targets, indent=1))
        return targets


# ----------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    with ended_like_ctrl_c():  # a killed night takes its stack down too
        return run_night(parse_args(argv))


def run_night(args: argparse.Namespace) -> int:
    begun = time.monotonic()
    console = Console(verbose=args.verbose, quiet=args.quiet)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    options = NightOptions(particles=args.particles, hours=args.hours, seed=seed, chaos=args.chaos,
                           drift_correction=not args.no_drift_correction, scan_sizing=args.scan_sizing,
                           fine_particles=args.fine_particles,
                           regions=args.regions, tile_px=args.tile_px, acceleration=args.acceleration,
                           sem_scan_errors=args.sem_scan_errors,
                           search_um=args.search_um, scan_half_width_um=args.scan_half_um,
                           scan_step_um=args.scan_step_um, exposure_s=args.exposure, beam_loss_s=args.beam_loss_s)
    out_dir = args.run_dir.resolve()
    console.say(f"SMART night: seed {seed}, up to {options.particles} particles, {options.hours:g} simulated h, "
                f"chaos {'on' if options.chaos else 'off'}, drift correction "
                f"{'on' if options.drift_correction else 'off'}; results in {out_dir}")
    inputs = prepare_night_inputs(out_dir, options)
    console.say(f"inputs: SEM overview {inputs.overview.name if inputs.overview else '-'} and "
                f"{len(inputs.regions)} region(s): " + ", ".join(f"{r.name} ({r.image.name})" for r in inputs.regions))
    stack = Stack(out_dir / "stack", args.config, beamline=inputs.beamline, echo=args.verbose)
    forget_earlier_queue(stack)
    start_the_clock(inputs)
    started = time.monotonic()
    try:
        os.environ["TANGO_HOST"] = stack.up()
        if not args.verbose:
            console.say(describe_stack(stack, time.monotonic() - started))
        night = Night(stack, inputs, out_dir, options, console)
        night.prepare()
        with BeamMonitor(stack.tango_host) as beam:
            night.run_queue()
        targets = night.targets()
        summary = finish_night(out_dir, inputs, options, night, targets, beam.losses)
        summary["total_s"] = time.monotonic() - begun
        (out_dir / "summary.json").write_text(json.dumps(_plain(summary), indent=1))
        print("\n" + "\n".join(summary_lines(summary) + decomposition_lines(summary)), flush=True)
    except (LaunchError, MacroFailed) as exc:
        print(f"night failed: {exc}\n(logs of every server in {stack.log_dir})", file=sys.stderr)
        return 1
    finally:
        stack.down(quiet=not args.verbose)
    console.say(f"night finished in {duration(time.monotonic() - begun)} (stack up to down "
                f"{duration(time.monotonic() - started)}); report: {out_dir / 'report.html'}")
    return 0


def finish_night(out_dir: Path, inputs: NightInputs, options: NightOptions, night: Night,
                 targets: list[dict[str, Any]], losses: list[tuple[float, float]]) -> dict[str, Any]:
    """Score the night, draw its figures and write the morning report; the summary."""
    from clients import night_figures
    from clients.report import write_report
    from simulation.config import load_beamline
    from simulation.drift import Timelines

    truth = Truth.load(inputs.truth, inputs.sample)
    timelines = Timelines(load_beamline(inputs.beamline))
    truth.offset_function = lambda t_s: timelines.stage_offset_mm(float(t_s))  # exact, also past the table's end
    summary = score_night(night.visits, truth, targets, losses, night.queue_wall_s)
    decompose(summary, night.visits, truth, alignment_times(read_events(out_dir / EVENTS_FILE), truth), inputs.truth)
    summary.update(seed=options.seed, options=asdict(options), timings_s=night.timings, chaos=night.chaos_log,
                   regions_input=[{"name": r.name, "image": str(r.image)} for r in inputs.regions],
                   regions_refused=night.refused)
    drawn = night_figures.draw(out_dir, inputs, truth, summary)
    summary["figures"] = [str(p) for p in drawn]
    write_report(out_dir, title=f"SMART night, seed {options.seed}")
    return summary


def _plain(value: Any) -> Any:
    """``value`` as strict JSON can hold it: NaN and infinities as null, paths as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


if __name__ == "__main__":
    raise SystemExit(main())

