"""SMART correlative workflow macros: calibrate, register, find, go to, scan every particle.

Orchestration only: every step is a call to a SMART device (CameraDS, RegistrationDS,
ParticleDS, CoordMapperDS) or a Sardana motion/scan. Device names come from the
environment (``SmartCamera``, ``SmartRegistration``, ``SmartParticles``, ``SmartMapper``,
``SmartMotors``), so the same macros drive the virtual beamline and a real one.

Lengths given to macros (steps, half widths) are in micrometres, the unit people use at
a nanoprobe; they are converted to the stage's own units with the unit the mapper
declares for its ``stage`` frame.

Safety rules kept by every macro that moves: the target comes from the mapper and must be
inside the motor limits; a registration the system doubts (``success`` false) never
leads to a move; motion goes through Sardana's ``mv`` so Stop/Abort halt it.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import tango
from sardana.macroserver.macro import Macro, Optional, Type

# The helpers are modules of the installed ``macros`` package (setup.cfg), not neighbours found
# through the MacroPath: Sardana loads this file as a top-level module, from its MacroPath.
from macros.smart_calls import (
    call_json,
    map_points,
    position_range,
    proxy,
    read_attribute,
    scan_columns,
    stage_unit_per_um,
)
from macros.smart_queue_support import BeamCondition, BeamWatch
from macros.smart_records import (
    ROLE_BEAM_CENTRE,
    ROLE_BEAM_SEARCH,
    ROLE_DRIFT_CENTRE,
    ROLE_DRIFT_SEARCH,
    ROLE_FINE_CENTRE,
    ROLE_FINE_SEARCH,
    ROLE_PARTICLE,
    EventLog,
    ScanRecord,
    annotate_scan,
    events_path,
    scan_metadata,
)
from macros.smart_region_support import replace_frame
from macros.smart_support import (
    FINE_OFFSET_SCATTER_LIMIT_UM,
    POSITION_DECIMALS,
    UNIT_PER_UM,
    SmartMacroError,
    VisitLog,
    camera_rotation_text,
    check_storable,
    drift_check_search,
    known_range,
    length_text,
    mesh_around,
    mesh_points,
    mesh_words,
    now_text,
    number_text,
    offset_scatter_um,
    offsets_agree,
    peak_centre,
    position_text,
    reachable_spread,
    sigma_text,
    stage_of_frame,
)
from macros.smart_tracking import DEFAULT_JUMP_SIGMA, PROBE_FRAME, DriftTracker, exposing_fraction, sized_half_width

REFERENCE_SLOT = "reference"
CANDIDATE_SLOT = "reference_candidate"
"""Where smart_register loads a new reference: it replaces REFERENCE_SLOT (the image the drift
checks register) only once it has registered, so a refused image leaves the night's reference."""
CAMERA_SLOT = "camera"
FINE_FRAME_SUFFIX = ""
CENTRE_SIGMA_UM = 0.03
"""Default 1-sigma error per axis of one X-ray (Ce-map) centre: stage repeatability of 10-30 nm
plus the peak fit (``SmartCentreSigmaUm``)."""
SCAN_HALF_WIDTH_MIN_UM = 0.15
"""Default smallest sized mesh half width (``SmartScanHalfWidthMinUm``): the particle (50 nm)
seen through the ~0.1 um beam plus a background ring for the peak's significance."""
SCAN_SIZING_K = 3.0
"""A sized mesh reaches this many sigma of the target's uncertainty (``SmartScanSizingK``)."""
DRIFT_SEARCH_UM = 1.0
"""Half width of the search mesh that looks again for a particle its scan did not find while
drift is tracked (``SmartDriftSearchUm``; 0: no search)."""
BEAM_TRIES = 3
"""How often a map of the fine alignment or the drift probe is taken when the beam went during it."""
DRIFT_PROBE_SEARCH_UM = 0.5
"""Half width of the search mesh around the drift probe's last centre when it is measured again
(``SmartDriftProbeSearchUm``; 0: no probe): a few tenths of a um per hour between two alignments."""


def _searched(window) -> str:
    """What a registration searched, for the macro's output."""
    if window is None:
        return "all rotations"
    return f"rotations {float(window[0]):.1f} to {float(window[1]):.1f} deg"


class _SmartMacro(Macro):
    """Shared access to the SMART devices and the stage for the macros below."""

    def setEnv(self, key, value):  # noqa: N802 - Sardana's name
        """Sardana's setEnv for a value the environment gives back intact (``check_storable``):
        a variable that came back broken would fail every later macro that reads it."""
        check_storable(f"the value of {key}", value)
        return super().setEnv(key, value)

    def devices(self) -> tuple:
        names = [self.getEnv(key) for key in ("SmartCamera", "SmartRegistration", "SmartParticles",
                                               "SmartMapper")]
        return tuple(proxy(name) for name in names)

    def motor_names(self) -> tuple[str, str]:
        motors = list(self.getEnv("SmartMotors"))
        if len(motors) != 2:
            raise SmartMacroError("SmartMotors must name the x and y stage motors, "
                                  "e.g. senv SmartMotors \"['samx', 'samy']\"")
        return motors[0], motors[1]

    def env_or(self, key: str, default):
        try:
            return self.getEnv(key)
        except Exception:  # noqa: BLE001 - Sardana raises UnknownEnv and relatives
            return default

    def detected_particles(self, particles) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """X, Y (reference px) and Isolated of the last detection; refuses when there is none."""
        values = [particles.read_attribute(name).value for name in ("X", "Y", "Isolated")]
        if values[0] is None or len(values[0]) == 0:
            raise SmartMacroError("no particles: run smart_find_particles first")
        return np.asarray(values[0], float), np.asarray(values[1], float), np.asarray(values[2], bool)

    def visit_log_path(self) -> str:
        """The particle loop's CSV log (SmartScanLog, default smart_visits.csv in ScanDir)."""
        return self.env_or("SmartScanLog", None) or os.path.join(self.env_or("ScanDir", os.getcwd()),
                                                                 "smart_visits.csv")

    def event_log(self) -> EventLog:
        """Where the time spent aligning, checking drift, waiting for beam is logged (next to
        the visit log): the morning report's time budget."""
        return EventLog(events_path(self.visit_log_path()))

    def record_scan(self, scan, metadata: dict) -> ScanRecord:
        """Add the SMART metadata to the scan's own entry in Sardana's HDF5 file; warn (never
        stop) when some of it could not be written."""
        record = annotate_scan(scan, metadata)
        for problem in record.problems[:3]:
            self.warning(f"scan metadata: {problem}")
        return record

    def scan_metadata(self, role: str, mapper, index, frame, reference_xy, target, **extra) -> dict:
        """``smart_records.scan_metadata`` with what the session knows (unit, motors, channel)."""
        return scan_metadata(role, particle_index=index, frame=frame, reference_xy=reference_xy, target=target,
                             stage_unit=self.stage_unit(mapper), motors=self.motor_names(),
                             channel=self.env_or("SmartXrfChannel", "xrf_ce"),
                             reference_image=self.env_or("SmartReferenceImage", None), **extra)

    def stage_position(self) -> list[float]:
        return [float(self.getMotor(name).getPosition()) for name in self.motor_names()]

    def stage_unit(self, mapper) -> str:
        """The stage frame's unit (mm on the virtual beamline), checked by stage_unit_per_um."""
        stage_unit_per_um(mapper)
        return str(mapper.read_attribute("StageUnit").value)

    def stage_text(self, position, unit: str) -> str:
        """``samx 0.338700 mm, samy 0.901700 mm``."""
        return ", ".join(f"{name} {position_text(value, unit)}"
                         for name, value in zip(self.motor_names(), position, strict=True))

    def check_target(self, target: list[float]) -> None:
        """Refuse (SMART_Unsafe) a target outside the motors' limits, or any target while a
        motor's limits are unknown: unknown limits are never "within"."""
        for name, value in zip(self.motor_names(), target, strict=True):
            low, high, unit = position_range(self.getMotor(name), name)
            limits = known_range(low, high)
            if limits is None:
                raise SmartMacroError(f"SMART_Unsafe: the limits of {name} are unknown (its Position has no "
                                      "min_value/max_value), so no target can be checked; nothing moved. Set "
                                      f"them, e.g. in Spock: set_lim {name} LOW HIGH")
            low, high = limits
            if not (math.isfinite(value) and low <= value <= high):
                raise SmartMacroError(f"SMART_Unsafe: {name} target {value:.6f} {unit} is outside its limits "
                                      f"[{low:g}, {high:g}] {unit}; nothing moved")

    def move_to(self, target: list[float]) -> None:
        """Move x, y to ``target``; refuses outside the limits, with unknown limits, or while a
        motor is busy."""
        motors = self.motor_names()
        self.check_target(target)
        for name in motors:
            state = self.getMotor(name).getState()
            if str(state).upper().endswith("MOVING"):
                raise SmartMacroError(f"SMART_Unsafe: {name} is already moving (another macro?); nothing moved")
        self.checkPoint()
        self.execMacro(["mv", motors[0], number_text(target[0], 9), motors[1], number_text(target[1], 9)])

    def grab_camera(self, registration, camera_name: str, slot: str = CAMERA_SLOT) -> dict:
        """A frame taken after the last move: Snap returns a new frame (the next one while
        streaming), then the registration device grabs it with its own metadata."""
        try:
            proxy(camera_name).Snap()
        except tango.DevFailed as exc:
            raise SmartMacroError(f"the camera {camera_name} gave no new frame: {exc.args[0].desc.strip()}") from None
        return call_json(registration, "GrabImage", {"slot": slot, "device": camera_name})

    def register_to_camera(self, registration, camera_name: str, model: str,
                           rotation_range: list[float] | None = None,
                           reference_slot: str = REFERENCE_SLOT) -> tuple[dict, list[float]]:
        """Register the loaded reference to a fresh camera frame; returns the result and the
        stage position of that frame. The caller decides what a doubtful result means.
        ``rotation_range`` [low, high] deg (similarity and affine) narrows the rotation search."""
        grabbed = self.grab_camera(registration, camera_name)
        request = {"reference": CAMERA_SLOT, "target": reference_slot, "model": model}
        if rotation_range is not None and model in ("similarity", "affine"):
            request["rotation_range_deg"] = [float(value) for value in rotation_range]
        result = call_json(registration, "Register", request)
        return result, self.frame_stage(grabbed)

    def locate_particle(self, target, half_width, per_um, exposure, metadata=None, roles=None):
        """Coarse-to-fine search: a wide mesh finds the particle, a fine one centres it.

        ``metadata`` (``scan_metadata`` without a role) goes into each map's HDF5 entry with
        ``roles`` (search, centre) and the centre that map measured."""
        mx, my = self.motor_names()
        centre = list(target)
        # 0.1 um is about the beam's FWHM: no particle can hide between two search points.
        for stage, (half, step) in enumerate(((half_width, 0.1 * per_um), (0.15 * per_um, 0.02 * per_um))):
            spec = mesh_around(centre, half, step)
            self.check_target([spec.x0, spec.y0])
            self.check_target([spec.x1, spec.y1])
            scan = self.mesh_with_beam(spec.command("mesh", mx, my, exposure))
            x, y, ce = scan_columns(scan.data.records, mx, my, self.env_or("SmartXrfChannel", "xrf_ce"))
            fx, fy, significance = peak_centre(x, y, ce)
            if metadata is not None:
                self.record_scan(scan, {**metadata, "role": (roles or ("search", "centre"))[stage],
                                        "mesh_centre_position": centre, "measured_centre_position": [fx, fy],
                                        "peak_significance": significance})
            self.debug(f"mesh +-{half / per_um:.2f} um: peak {significance:.1f} sigma at {fx:.6f}, {fy:.6f} "
                       f"(max {ce.max():.0f} counts, {len(ce)} points)")
            if not significance > 5 or not math.isfinite(fx):
                self.warning(f"no peak above 5 sigma in the {len(ce)}-point map (best {significance:.1f} sigma, "
                             f"max {ce.max():.0f} counts)")
                return None
            centre = [fx, fy]
        return centre

    def mesh_with_beam(self, command: str, tries: int = BEAM_TRIES):
        """Run a mesh with beam: with ``SmartBeamCondition`` set, wait for the beam before it and
        take it again when the beam went during it (a map without signal would lose its particle
        from the fine alignment or the drift probe). Without a beam condition, just run it."""
        beam = BeamCondition.from_env(self.env_or("SmartBeamCondition", None))
        if beam is None:
            return self.execMacro(command)
        for attempt in range(1, tries + 1):
            said = 0.0
            while True:
                ok, why = beam.check()
                if ok:
                    break
                if time.monotonic() - said >= 60.0:
                    self.warning(f"waiting for beam before the map: {why}")
                    said = time.monotonic()
                for _ in range(max(1, int(beam.poll_s / 0.2))):
                    self.checkPoint()
                    time.sleep(0.2)
            with BeamWatch(beam) as watch:
                scan = self.execMacro(command)
            lost = watch.lost  # its last read is the moment the map ended
            if not lost or attempt == tries:
                return scan
            self.warning(f"the beam went during the map ({lost}): taking it again")
        return scan

    def frame_stage(self, grabbed: dict) -> list[float]:
        """The stage position stamped on a grabbed frame, in SmartMotors order."""
        return stage_of_frame(grabbed.get("metadata", {}).get("stage", {}), self.motor_names())

    def check_scans_stored(self) -> None:
        """An overnight loop whose scans are not stored is a lost night: refuse unless ScanDir and
        ScanFile are set, or the user said so (SmartAllowUnsavedScans True)."""
        scan_dir, scan_file = self.env_or("ScanDir", None), self.env_or("ScanFile", None)
        if scan_dir and scan_file:
            names = [scan_file] if isinstance(scan_file, str) else list(scan_file)
            self.output(f"scans are stored in {', '.join(os.path.join(str(scan_dir), str(n)) for n in names)}")
            if not any(str(n).endswith((".h5", ".hdf5", ".nxs")) for n in names):
                self.warning("no ScanFile ends in .h5: each particle's index, reference position and target are "
                             "then only in the visit log, not next to its map (senv ScanFile smart_scans.h5)")
            return
        if self.env_or("SmartAllowUnsavedScans", False):
            self.warning("ScanDir/ScanFile are not set: the scans of this loop are NOT stored "
                         "(SmartAllowUnsavedScans is True); only the visit log is")
            return
        raise SmartMacroError("SMART_NotReady: ScanDir/ScanFile are not set, so the scans of this loop would not "
                              "be stored. Set them (senv ScanDir /absolute/folder; senv ScanFile scans.h5) or, "
                              "to run anyway, senv SmartAllowUnsavedScans True")

    def coarse_target(self, mapper, frame, point):
        """Where the camera registration alone would put the particle (before fine alignment)."""
        try:
            stage = self.getEnv("SmartRegistrationStage")
            # both hops in the camera frame the registration was made in
            in_camera = map_points(mapper, frame, "camera", point, stage)["points"]
            return map_points(mapper, "camera", "stage", in_camera, stage)["points"][0]
        except Exception:  # noqa: BLE001 - no camera registration: nothing to compare with
            return None

    def check_drift(self, registration, camera_name, mapper=None, frame=None, point=None):
        """Re-register the reference to the camera here; stop if it is in doubt. Drift does not
        turn the sample, so the rotation search stays within DRIFT_ROTATION_DEG of the stored one
        (fewer chances of a false match; the search spends the angles it saves on resolution),
        with the model of the stored registration (``drift_check_search``).

        With ``mapper``, ``frame`` and a reference ``point`` (px), the drift is measured: where the
        new registration puts the point on the stage minus where the stored one does. Every
        check goes to the event log (the morning report's drift plot and time budget)."""
        model, window = drift_check_search(self.env_or("SmartRegistrationRotation", None),
                                           self.env_or("SmartRegistrationModel", None))
        started = time.time()
        result, here = self.register_to_camera(registration, camera_name, model, window)
        drift = self.drift_at(mapper, frame, point, result, here) if result.get("success") and point else None
        self.event_log().write("drift_check", started, time.time() - started, success=bool(result.get("success")),
                               confidence=result.get("confidence"), rotation_deg=result.get("rotation_deg"),
                               shift_px=result.get("shift_px"), drift_position=drift, frame=frame,
                               reference_position_px=point)
        if not result.get("success"):
            raise SmartMacroError(f"SMART_Unsafe: drift check failed: the reference no longer registers to the "
                                  f"camera with confidence (confidence {result['confidence']:.3f}). The loop "
                                  "stopped before moving; check the sample and re-run smart_register. Progress "
                                  "is kept: a re-run continues.")
        shift = result["shift_px"]
        self.output(f"drift check ({_searched(window)}): confidence {result['confidence']:.3f}, rotation "
                    f"{result['rotation_deg']:.3f} deg, shift {shift[0]:.2f} {shift[1]:.2f} px")

    def drift_at(self, mapper, frame, point, result: dict, here) -> list[float] | None:
        """Stage drift (stage units) of reference point ``point`` since smart_register: the new
        registration's stage position of it minus the stored one's; None when unknown."""
        try:
            matrix = np.asarray(result["matrix"], float)
            camera_px = matrix[:2, :2] @ np.asarray(point, float) + matrix[:2, 2]
            now = map_points(mapper, "camera", "stage", [camera_px.tolist()], here)["points"][0]
            before = self.coarse_target(mapper, frame, [list(point)])
        except (KeyError, ValueError, TypeError, SmartMacroError):
            return None
        return None if before is None else [float(now[0] - before[0]), float(now[1] - before[1])]

    def stage_target(self, mapper, frame: str, point: list[float]) -> tuple[list[float], list[float], bool]:
        """Where ``point`` of ``frame`` is on the stage (``target``), where the camera registration
        alone would put it (``coarse``), and whether the mapper calls it within the limits."""
        here = self.stage_position() if frame == "camera" else None
        mapped = map_points(mapper, frame, "stage", [point], here)
        target = [float(v) for v in mapped["points"][0]]
        coarse = self.coarse_target(mapper, frame, [point]) or target
        return target, coarse, bool(mapped["within_limits"][0])

    # ------------------------------------------------ drift tracking and scan sizing (smart_tracking.py)
    def clock(self) -> float:
        """Seconds on the night's clock: the Tango attribute ``SmartClock`` names (the virtual
        beamline's simulated time), else wall time. An unreadable clock stops rather than mixes
        two time bases in the drift estimate."""
        name = self.env_or("SmartClock", None)
        if not name:
            return time.time()
        try:
            return float(read_attribute(str(name)))
        except (tango.DevFailed, TypeError, ValueError) as exc:
            why = exc.args[0].desc.strip() if isinstance(exc, tango.DevFailed) else str(exc)
            raise SmartMacroError(f"SMART_NotReady: the clock {name} (SmartClock) cannot be read: {why[:200]}; "
                                  "start its device, or usenv SmartClock to use wall time") from None

    def drift_tracker(self) -> DriftTracker:
        """The drift estimate kept in ``SmartDriftState`` (a fresh one when there is none), read
        once per macro run: this macro is the only writer while it runs (``save_drift``)."""
        cached = getattr(self, "_drift", None)
        if cached is not None:
            return cached
        try:
            self._drift = DriftTracker.from_plain(self.env_or("SmartDriftState", None),
                                                  self.env_or("SmartDriftModel", None),
                                                  float(self.env_or("SmartDriftJumpSigma", DEFAULT_JUMP_SIGMA)))
        except (TypeError, ValueError) as exc:
            raise SmartMacroError(f"SMART_BadArgument: SmartDriftModel / SmartDriftJumpSigma: {exc}") from None
        return self._drift

    def save_drift(self, tracker: DriftTracker) -> None:
        """Keep the estimate in the environment after every change: a killed MacroServer resumes it."""
        self._drift = tracker
        self.setEnv("SmartDriftState", tracker.to_plain())

    def reset_drift(self, why: str) -> None:
        """A new mapping (registration, fine alignment) starts the drift estimate again at zero."""
        tracker = self.drift_tracker()
        tracker.reset(self.clock())
        self.save_drift(tracker)
        self.event_log().write("drift_reset", time.time(), 0.0, clock_s=tracker.t, why=why)

    def anchor_drift(self, frame: str, at: float | None = None) -> None:
        """``frame`` was just fine-aligned from maps taken around ``at`` (clock s; None: now): its
        mapping holds the offset of then, so its targets are corrected for the drift since then,
        the other frames' for the drift since their own alignment (``DriftTracker.anchor``; one
        reset here would apply the drift since this alignment to every frame)."""
        tracker = self.drift_tracker()
        at = self.clock() if at is None else at
        tracker.anchor(frame, at)
        self.save_drift(tracker)
        self.event_log().write("drift_reset", time.time(), 0.0, clock_s=at, why="smart_fine_align", frame=frame)

    def start_drift_probe(self, centre, at: float, frame: str, index: int, point: list[float]) -> None:
        """The first particle a fine alignment measured becomes the night's drift probe, unless
        one is running already (the oldest gives the longest baseline): its centre and clock time
        in ``SmartDriftProbe``, the drift estimate's offset then cloned (``PROBE_FRAME``)."""
        if float(self.env_or("SmartDriftProbeSearchUm", DRIFT_PROBE_SEARCH_UM)) <= 0:
            return
        tracker = self.drift_tracker()
        if PROBE_FRAME in tracker.anchors and self.env_or("SmartDriftProbe", None):
            return
        tracker.anchor(PROBE_FRAME, at, 0.0)  # the probe's first centre error is in its measurement's noise
        self.save_drift(tracker)
        self.setEnv("SmartDriftProbe", {"centre": [float(v) for v in centre], "clock_s": float(at),
                                        "frame": frame, "particle": int(index), "point": list(point)})

    def measure_drift_probe(self, mapper, per_um: float, exposure: float, centre_sigma_um: float) -> dict | None:
        """Measure the drift probe again (a small search mesh around its last centre, then a fine
        one): how far its centre moved is the drift since it was first measured, so the drift
        rate is known before any target is scanned, and every frame aligned earlier is corrected
        for the drift since its alignment from the first target on. Returns the update."""
        search_um = float(self.env_or("SmartDriftProbeSearchUm", DRIFT_PROBE_SEARCH_UM))
        probe = self.env_or("SmartDriftProbe", None)
        tracker = self.drift_tracker()
        if search_um <= 0 or not probe or PROBE_FRAME not in tracker.anchors:
            return None
        first = [float(v) for v in probe["centre"]]
        metadata = self.scan_metadata(ROLE_DRIFT_SEARCH, mapper, probe.get("particle"), probe.get("frame"),
                                      probe.get("point"), first)
        started = time.time()
        try:
            centre = self.locate_particle(first, search_um * per_um, per_um, exposure, metadata,
                                          (ROLE_DRIFT_SEARCH, ROLE_DRIFT_CENTRE))
        except SmartMacroError as exc:  # the alignment is stored already: the probe is a bonus
            self.warning(f"the drift probe could not be measured again ({exc})")
            centre = None
        if centre is None:
            self.warning("the drift probe was not found again; the drift rate is learned from the scans")
            tracker.forget(PROBE_FRAME)
            self.save_drift(tracker)
            return None
        at = self.clock()
        measured_um = [(centre[i] - first[i]) / per_um for i in (0, 1)]
        # the difference of two centres: twice one centre's variance
        update = tracker.update(at, measured_um, centre_sigma_um * math.sqrt(2.0), PROBE_FRAME)
        self.save_drift(tracker)
        self.event_log().write("drift", started, time.time() - started, clock_s=at, why="probe",
                               probe_clock_s=probe.get("clock_s"), **update)
        self.output(f"drift probe (particle {probe.get('particle')} of {probe.get('frame')}): moved "
                    f"{measured_um[0] * 1000:+.0f}, {measured_um[1] * 1000:+.0f} nm in "
                    f"{(at - float(probe.get('clock_s', at))) / 60:.1f} min of the clock; drift rate now "
                    f"{np.hypot(*update['velocity_um_per_h']):.2f} um/h")
        return update

    def drift_correction_on(self) -> bool:
        return bool(self.env_or("SmartDriftCorrection", True))

    def plan_target(self, mapper, frame: str, point: list[float], half_width_um: float) -> dict:
        """Where to scan ``point`` and how widely: the mapped stage position, plus the drift
        predicted now (``SmartDriftCorrection``), and a mesh half width sized by the mapping's
        uncertainty there and the drift estimate's (``SmartScanSizing``), at most ``half_width_um``.
        Positions are in stage units, lengths ending in ``_um`` in micrometres."""
        here = self.stage_position() if frame == "camera" else None
        mapped = map_points(mapper, frame, "stage", [point], here)
        spot = [float(v) for v in mapped["points"][0]]
        coarse = self.coarse_target(mapper, frame, [point]) or spot
        per_um = stage_unit_per_um(mapper)
        sigma = (mapped.get("uncertainty") or [None])[0]
        map_sigma_um = None if sigma is None or not math.isfinite(float(sigma)) else float(sigma) / per_um
        at = self.clock()
        tracker = self.drift_tracker()
        drift_um, drift_cov = tracker.predict(at, frame)  # the drift since *this* frame's alignment
        drift_sigma_um = float(math.sqrt(max(float(np.trace(drift_cov)), 0.0)))
        correct = self.drift_correction_on()
        applied_um = [float(v) for v in drift_um] if correct else [0.0, 0.0]
        target = [spot[0] + applied_um[0] * per_um, spot[1] + applied_um[1] * per_um]
        half_width = float(half_width_um)
        if self.env_or("SmartScanSizing", True):
            low = min(float(self.env_or("SmartScanHalfWidthMinUm", SCAN_HALF_WIDTH_MIN_UM)), half_width)
            half_width = sized_half_width(map_sigma_um, drift_sigma_um, low, float(half_width_um),
                                          float(self.env_or("SmartScanSizingK", SCAN_SIZING_K)),
                                          0.0 if correct else float(np.hypot(*drift_um)))
        return {"mapped": spot, "target": target, "coarse": coarse, "within": bool(mapped["within_limits"][0]),
                "map_sigma_um": map_sigma_um, "drift_um": [float(v) for v in drift_um],
                "drift_sigma_um": drift_sigma_um, "drift_applied_um": applied_um, "corrected": correct,
                "half_width_um": half_width, "clock_s": at, "frame": frame}

    def log_scan(self, plan: dict, points: int, step_um: float, exposure: float, scan_s: float,
                 **ids) -> float | None:
        """The ``scan`` event: how the mesh was sized and how much of its time was exposure."""
        fraction = exposing_fraction(points, exposure, scan_s)
        self.event_log().write("scan", time.time() - scan_s, scan_s, points=points, exposure_s=exposure,
                               exposing_fraction=fraction, half_width_um=plan["half_width_um"], step_um=step_um,
                               map_sigma_um=plan["map_sigma_um"], drift_sigma_um=plan["drift_sigma_um"],
                               clock_s=plan["clock_s"], **ids)
        return fraction

    def track_drift(self, plan: dict, centre, per_um: float, **ids) -> dict | None:
        """Feed a measured Ce centre (stage units) to the drift estimate: the centre minus the
        mapped target is where sample and beam are against the mapping now. Saved in
        ``SmartDriftState`` and logged as a ``drift`` event; returns the update (``jump``...)."""
        if centre is None or not all(math.isfinite(float(v)) for v in centre):
            return None
        measured_um = [(float(centre[i]) - plan["mapped"][i]) / per_um for i in (0, 1)]
        tracker = self.drift_tracker()
        at = self.clock()
        update = tracker.update(at, measured_um, plan["map_sigma_um"] or 0.0, plan.get("frame"))
        self.save_drift(tracker)
        self.event_log().write("drift", time.time(), 0.0, clock_s=at, applied_um=plan["drift_applied_um"],
                               corrected=plan["corrected"], map_sigma_um=plan["map_sigma_um"], **update, **ids)
        if update["jump"]:
            self.warning(f"drift jumped: the particle was {update['innovation_um'][0] * 1000:+.0f}, "
                         f"{update['innovation_um'][1] * 1000:+.0f} nm from where the drift estimate put it "
                         f"({update['mahalanobis']:.1f} sigma); the estimate restarts there and the loop "
                         "re-aligns before going on")
        return update

    def realign(self, registration, camera_name, why: str, **ids) -> None:
        """After a drift jump: re-register the reference to the camera (check_drift, which stops
        the loop when the registration is in doubt) before any further target."""
        started = time.time()
        self.event_log().write("realign", started, 0.0, why=why, method="camera_drift_check", **ids)
        self.check_drift(registration, camera_name)

    def reacquire(self, plan: dict, per_um: float, exposure: float, metadata: dict) -> list[float] | None:
        """A scan that did not find its particle while drift is tracked: search around the
        target (``SmartDriftSearchUm``) for it; its centre, or None."""
        search_um = float(self.env_or("SmartDriftSearchUm", DRIFT_SEARCH_UM))
        if not self.drift_correction_on() or search_um <= plan["half_width_um"]:
            return None
        self.output(f"no particle in the +-{plan['half_width_um']:.2f} um map: searching +-{search_um:g} um for it")
        started = time.time()
        centre = self.locate_particle(plan["target"], search_um * per_um, per_um, exposure, metadata,
                                      (ROLE_DRIFT_SEARCH, ROLE_DRIFT_CENTRE))
        self.event_log().write("realign", started, time.time() - started, why="no_signal",
                               method="search_mesh", search_um=search_um, found=centre is not None,
                               target_id=metadata.get("queue_target_id"), particle=metadata.get("particle_index"))
        return centre

    def scan_around(self, target: list[float], scan_macro: str, half_width: float, step: float,
                    exposure: float) -> tuple:
        """Run ``scan_macro`` (mesh) centred on ``target`` (stage units); the scan and its duration (s)."""
        mx, my = self.motor_names()
        spec = mesh_around(target, half_width, step)
        self.check_target([spec.x0, spec.y0])
        self.check_target([spec.x1, spec.y1])
        started = time.monotonic()
        scan = self.execMacro(spec.command(scan_macro, mx, my, exposure))
        return scan, time.monotonic() - started

    def scan_peak(self, scan) -> tuple:
        """x, y, Ce counts of a finished mesh and its peak (centre x, y, significance in sigma)."""
        mx, my = self.motor_names()
        x, y, ce = scan_columns(scan.data.records, mx, my, self.env_or("SmartXrfChannel", "xrf_ce"))
        return x, y, ce, peak_centre(x, y, ce)


class smart_calibrate_camera(_SmartMacro):
    """Calibrate camera pixels against the stage: move on a small grid, register the frames,
    fit camera -> stage (rotation, scale, flip, shear) and return to the start.

    The fitted calibration A (stage units per pixel) is stored in the mapper; its
    residual RMS says how well a pure affine model explains the motions."""

    param_def = [
        ["step_um", Type.Float, 20.0, "grid step in micrometres"],
        ["n", Type.Integer, 3, "grid size n x n (>= 2)"],
    ]

    def run(self, step_um, n):
        if n < 2 or not step_um > 0:
            raise SmartMacroError("smart_calibrate_camera needs step_um > 0 and n >= 2")
        camera_name = self.getEnv("SmartCamera")
        _, registration, _, mapper = self.devices()
        unit = self.stage_unit(mapper)
        per_um = UNIT_PER_UM[unit]
        step = step_um * per_um
        start = self.stage_position()
        reference = self.grab_camera(registration, camera_name, "calib_ref")
        reference_stage = self.frame_stage(reference)
        offsets = [(i - (n - 1) / 2.0, j - (n - 1) / 2.0) for j in range(n) for i in range(n)]
        steps = []
        try:
            for k, (i, j) in enumerate(offsets):
                if i == 0 and j == 0:
                    continue
                self.checkPoint()
                self.move_to([start[0] + i * step, start[1] + j * step])
                grabbed = self.grab_camera(registration, camera_name, "calib_k")
                here = self.frame_stage(grabbed)
                result = call_json(registration, "Register", {"reference": "calib_ref", "target": "calib_k",
                                                              "model": "translation", "upsample": 100})
                if not result.get("success"):
                    raise SmartMacroError(f"frame {k} could not be registered to the start frame "
                                          f"(confidence {result.get('confidence', 0):.3f}); is the camera "
                                          "focused and the field textured? Nothing was stored.")
                dx, dy = result["shift_px"]
                # shift_px maps target px to reference px; the content moved by -shift.
                steps.append([here[0] - reference_stage[0], here[1] - reference_stage[1], -dx, -dy])
                self.output(f"  move {len(steps)}: stage {steps[-1][0] / per_um:+.2f} {steps[-1][1] / per_um:+.2f} um"
                            f" -> image {-dx:+.2f} {-dy:+.2f} px (confidence {result['confidence']:.3f})")
        finally:
            self.move_to(start)
        fit = call_json(mapper, "CalibrateCamera", {"steps": steps, "model": "affine",
                                                    "stage_position": reference_stage})
        self.output(f"camera -> stage calibrated from {len(steps)} moves: residual RMS "
                    f"{length_text(fit.get('rms'), unit)}")
        if "pixel_size" in fit:
            self.output(f"  pixel size {fit['pixel_size'] / per_um:.4f} um/px")
        if "rotation_deg" in fit:
            self.output(f"  {camera_rotation_text(fit['rotation_deg'], bool(fit.get('mirrored')))}")
        self.setEnv("SmartCalibration", {"time": now_text(), "rms": fit.get("rms"), "moves": len(steps)})


class smart_register(_SmartMacro):
    """Register a reference image (SEM, AFM, XRF map) to the live camera and store
    reference -> camera with the frame's stage position. Refuses to store a registration
    in doubt (low confidence)."""

    param_def = [
        ["reference_image", Type.String, None, "path of the reference image (SEM/AFM/EDX file, TIFF, PNG)"],
        ["model", Type.String, "similarity", "translation, similarity or affine (two instruments' scan errors)"],
        ["frame", Type.String, "sem", "name of the reference frame in the mapper"],
        ["channel", Type.String, Optional, "AFM channel or EDX element map (e.g. Fe_Ka) of a multi-channel file"],
    ]

    def run(self, reference_image, model, frame, channel=None):
        for what, text in (("the reference image's path", reference_image), ("the frame name", frame),
                           ("the channel", channel or "")):
            check_storable(what, text)  # before the registration, which would be lost otherwise
        camera_name = self.getEnv("SmartCamera")
        _, registration, _, mapper = self.devices()
        request = {"slot": CANDIDATE_SLOT, "path": reference_image, **({"channel": channel} if channel else {})}
        loaded = call_json(registration, "LoadImage", request)
        self.output(f"reference {reference_image}{f' ({channel})' if channel else ''}: {loaded['width']} x "
                    f"{loaded['height']} px, {float(loaded['pixel_size_um']) * 1000:.1f} nm/px "
                    f"(from {loaded.get('pixel_size_source', 'the file')})")
        for warning in loaded.get("warnings", []):
            self.warning(warning)
        window = self.env_or("SmartRotationRange", None) if model in ("similarity", "affine") else None
        result, stage = self.register_to_camera(registration, camera_name, model, window, CANDIDATE_SLOT)
        self.output(f"registration ({_searched(window)}): rotation {result['rotation_deg']:.3f} deg, "
                    f"scale {result['scale']:.5f}, shift {result['shift_px'][0]:.2f} {result['shift_px'][1]:.2f} px, "
                    f"confidence {result['confidence']:.4f} ({result['elapsed_ms']:.0f} ms)")
        sigma = result.get("uncertainty")
        if sigma:
            self.output(f"1-sigma: position {max(sigma['shift_px']):.3g} px, rotation {sigma['rotation_deg']:.3g} deg")
        if not result.get("success"):
            raise SmartMacroError(f"SMART_Unsafe: the registration of {reference_image} to the camera is in "
                                  f"doubt (confidence {result['confidence']:.3f}; "
                                  f"{'; '.join(result.get('warnings', [])[:2])}); nothing was stored. Bring "
                                  "the imaged region into the camera view, check focus and illumination, retry.")
        if frame in ("camera", "stage"):
            raise SmartMacroError(f"the reference frame cannot be named '{frame}': that name is the "
                                  "mapper's own; use e.g. sem")
        if frame in list(mapper.read_attribute("Frames").value or []):
            # a new registration of this frame replaces what was known about it: an older fine
            # alignment (frame -> stage) would otherwise win the shortest path and send the beam
            # where the previous sample (or mounting) had its particles. Regions registered into
            # it (tiles in an overview) keep their registration and lose their alignments.
            removed, regions = replace_frame(mapper, frame)
            if removed:
                self.output(f"replacing the earlier {frame} registration and alignment "
                            f"({', '.join(' -> '.join(edge) for edge in removed)}); run smart_fine_align again")
            if regions:
                self.output(f"kept the registrations of {', '.join(regions)} into {frame}")
        call_json(registration, "LoadImage", {**request, "slot": REFERENCE_SLOT})  # the drift checks' reference
        transform = {"from": frame, "to": "camera", "matrix": result["matrix"], "stage_position": stage,
                     "from_unit": "px", "to_unit": "px"}
        if result.get("covariance") is not None:  # the registration's own uncertainty, into Map's
            transform["covariance"] = result["covariance"]
        call_json(mapper, "SetTransform", transform)
        self.setEnv("SmartReferenceImage", reference_image)
        self.setEnv("SmartReferenceChannel", channel or "")
        self.setEnv("SmartReferenceFrame", frame)
        self.setEnv("SmartRegistrationStage", stage)
        self.setEnv("SmartRegistrationRotation", float(result["rotation_deg"]))
        self.setEnv("SmartRegistrationModel", model)
        self.reset_drift("smart_register")
        self.output(f"stored {frame} -> camera at stage position {self.stage_text(stage, self.stage_unit(mapper))}")


class smart_find_particles(_SmartMacro):
    """Detect particles on the reference image (trackpy through ParticleDS)."""

    param_def = [["reference_image", Type.String, Optional, "image path (default: the registered reference)"]]

    def run(self, reference_image):
        path = reference_image or self.env_or("SmartReferenceImage", None)
        if not path:
            raise SmartMacroError("no reference image: give one, or run smart_register first")
        check_storable("the image's path", path)
        channel = None if reference_image else self.env_or("SmartReferenceChannel", None)
        _, _, particles, _ = self.devices()
        result = call_json(particles, "Detect", {"path": path, **({"channel": channel} if channel else {})})
        self.output(f"{result['count']} particles found on {os.path.basename(path)}, {result['isolated']} "
                    f"isolated ({result['elapsed_ms']:.0f} ms)")
        self.setEnv("SmartParticleImage", path)
        return [result["count"], result["isolated"]]

    result_def = [["found", Type.Integer, None, "particles found"],
                  ["isolated", Type.Integer, None, "isolated particles"]]


class smart_goto_xy(_SmartMacro):
    """Move the stage so that point (x, y) of a frame sits in the beam; refuses outside limits."""

    param_def = [
        ["frame", Type.String, None, "frame of the point: sem, camera, xrf, ..."],
        ["x", Type.Float, None, "x (column) in that frame"],
        ["y", Type.Float, None, "y (row) in that frame"],
    ]

    def run(self, frame, x, y):
        _, _, _, mapper = self.devices()
        unit = self.stage_unit(mapper)
        here = self.stage_position()
        mapped = map_points(mapper, frame, "stage", [[x, y]], here if frame == "camera" else None)
        target = mapped["points"][0]
        # the motors' own limits first: their message names the motor and says what to do
        self.check_target(target)
        if not mapped["within_limits"][0]:
            why = "; ".join(mapped.get("warnings", [])) or "outside the stage limits"
            raise SmartMacroError(f"SMART_Unsafe: {frame} ({x:.2f}, {y:.2f}) maps to "
                                  f"{self.stage_text(target, unit)}: the mapper does not call it within the "
                                  f"stage limits ({why}); nothing moved")
        self.move_to(target)
        sigma = (mapped.get("uncertainty") or [None])[0]
        self.output(f"{frame} ({x:.2f}, {y:.2f}) is in the beam at {self.stage_text(target, unit)} "
                    f"({sigma_text(sigma, unit)})")


class smart_goto(_SmartMacro):
    """Move the stage so that detected particle ``index`` sits in the beam."""

    param_def = [["particle_index", Type.Integer, None, "row of the particle table"]]

    def run(self, particle_index):
        _, _, particles, _ = self.devices()
        xs, ys, isolated = self.detected_particles(particles)
        if not 0 <= particle_index < len(xs):
            raise SmartMacroError(f"no particle {particle_index}: the last detection found {len(xs)} "
                                  "(indices start at 0)")
        frame = self.env_or("SmartReferenceFrame", "sem")
        self.output(f"particle {particle_index} ({'isolated' if isolated[particle_index] else 'crowded'}):")
        self.execMacro(["smart_goto_xy", frame, repr(float(xs[particle_index])), repr(float(ys[particle_index]))])


class smart_gen_scan(_SmartMacro):
    """Print (and return) the scan command that covers a region given in any frame.

    The region's corners are mapped to the stage; the mesh covers their bounding box.
    ``step_um`` is in micrometres."""

    param_def = [
        ["frame", Type.String, None, "frame of the region"],
        ["x0", Type.Float, None, "first corner x"], ["y0", Type.Float, None, "first corner y"],
        ["x1", Type.Float, None, "second corner x"], ["y1", Type.Float, None, "second corner y"],
        ["step_um", Type.Float, None, "step in micrometres"],
        ["exposure", Type.Float, None, "integration time per point (s)"],
        ["macro", Type.String, "mesh", "scan macro (mesh)"],
    ]
    result_def = [["command", Type.String, None, "the scan command"]]

    def run(self, frame, x0, y0, x1, y1, step_um, exposure, macro):
        _, _, _, mapper = self.devices()
        if not (step_um > 0 and exposure > 0):
            raise SmartMacroError("step_um and exposure must be positive")
        unit = self.stage_unit(mapper)
        corners = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
        mapped = map_points(mapper, frame, "stage", corners,
                            self.stage_position() if frame == "camera" else None)
        pts = np.array(mapped["points"])
        step = step_um * UNIT_PER_UM[unit]
        nx = max(1, int(math.ceil((pts[:, 0].max() - pts[:, 0].min()) / step - 1e-9)))
        ny = max(1, int(math.ceil((pts[:, 1].max() - pts[:, 1].min()) / step - 1e-9)))
        low = [float(pts[:, 0].min()), float(pts[:, 1].min())]
        high = [low[0] + nx * step, low[1] + ny * step]
        for corner in (low, high):
            self.check_target(corner)
        if not all(mapped["within_limits"]):
            raise SmartMacroError("SMART_Unsafe: part of the region lies outside the stage limits: "
                                  + ("; ".join(mapped.get("warnings", [])) or "see the motors' limits"))
        mx, my = self.motor_names()
        # positions to 1 nm in the stage unit: plain decimals Spock and the Door parse as floats
        command = " ".join(mesh_words(macro, mx, low[0], high[0], nx, my, low[1], high[1], ny, exposure,
                                      decimals=POSITION_DECIMALS[unit]))
        self.output(command)
        self.output(f"  {nx + 1} x {ny + 1} points, {step_um:g} um steps, "
                    f"{(nx + 1) * (ny + 1) * exposure:.0f} s of exposure")
        return command


class smart_fine_align(_SmartMacro):
    """Second iteration: XRF maps of a few isolated particles spread over the reference refine
    ``sem -> stage``. Each particle is found with a coarse mesh around its coarse target,
    then measured with a fine mesh. The Ce-map centres and the coarse mapping are weighed by
    their uncertainties (CoordMapperDS ``FitTransform`` with ``prior``): the model is no richer
    than the particles support (translation, similarity or affine, by evidence), and when their
    offsets disagree more than the centres' noise explains, more particles are measured.

    The drift estimate anchors the frame at the mean time of its maps (the mapping holds the
    offset of then), and the night's drift probe (the first particle of the first alignment) is
    measured again at the end: the drift rate is known before any target is scanned."""

    param_def = [
        ["n_particles", Type.Integer, 4, "particles to measure (>= 2)"],
        ["search_um", Type.Float, 1.0, "half width of the search mesh (um), searched in 0.1 um steps"],
        ["exposure", Type.Float, 0.01, "integration time per point (s)"],
    ]

    def run(self, n_particles, search_um, exposure):
        _, _, particles, mapper = self.devices()
        frame = self.env_or("SmartReferenceFrame", "sem")
        xs, ys, isolated = self.detected_particles(particles)
        candidates = np.flatnonzero(isolated)
        if len(candidates) < 2:
            raise SmartMacroError("fine alignment needs at least 2 isolated particles")
        ref_points = np.column_stack([xs[candidates], ys[candidates]])
        most = max(int(self.env_or("SmartFineMaxParticles", 2 * n_particles)), n_particles)
        chosen = self.reachable_particles(mapper, frame, candidates, ref_points, most)
        unit = self.stage_unit(mapper)
        per_um = UNIT_PER_UM[unit]
        centre_sigma_um = float(self.env_or("SmartCentreSigmaUm", CENTRE_SIGMA_UM))
        started = time.time()
        pairs, targets, measured_at = self.measure_centres(mapper, frame, xs, ys, chosen, n_particles, most,
                                                           search_um, exposure, centre_sigma_um, unit)
        self.check_common_offset(pairs, targets, len(chosen), per_um)
        fit, sigmas = self.refine(mapper, frame, pairs, ref_points, centre_sigma_um * per_um, unit)
        # the fitted mapping is the mean of the maps' offsets: it holds the offset of their mean time
        self.anchor_drift(frame, float(np.mean(measured_at)))
        self.measure_drift_probe(mapper, per_um, exposure, centre_sigma_um)
        self.event_log().write("align", started, time.time() - started, step="smart_fine_align", frame=frame,
                               particles=len(pairs), rms=fit["rms"], model=fit["model"], prior_rms=fit["prior_rms"],
                               consistent=fit["consistent"], log_evidence=fit.get("log_evidence"),
                               median_sigma=float(np.median(sigmas)) if sigmas else None, stage_unit=unit)

    def reachable_particles(self, mapper, frame: str, candidates: np.ndarray, ref_points: np.ndarray,
                            most: int) -> list[int]:
        """Up to ``most`` isolated particles within the stage limits, spread over the reference."""
        coarse = map_points(mapper, frame, "stage", ref_points.tolist())
        inside = np.asarray(coarse["within_limits"], bool)
        if not inside.any():
            why = "; ".join(coarse.get("warnings", [])) or "every target is outside the stage limits"
            raise SmartMacroError(f"SMART_Unsafe: no isolated particle can be reached within the stage limits "
                                  f"({why}); nothing moved")
        return reachable_spread(candidates, ref_points, inside, most)

    def measure_centres(self, mapper, frame: str, xs: np.ndarray, ys: np.ndarray, chosen: list[int],
                        n_particles: int, most: int, search_um: float, exposure: float,
                        centre_sigma_um: float, unit: str
                        ) -> tuple[list[list[float]], list[list[float]], list[float]]:
        """The Ce-map centres of ``n_particles`` of ``chosen`` (more, up to ``most``, while their
        offsets from the coarse targets disagree beyond the centres' noise): the pairs
        (reference x, y, stage x, y), the coarse targets, and when each was measured. The first
        centre starts the night's drift probe."""
        per_um = UNIT_PER_UM[unit]
        pairs, targets, measured_at = [], [], []
        queue = list(chosen)
        wanted = n_particles
        while queue and len(pairs) < wanted:
            index = queue.pop(0)
            self.checkPoint()
            target = map_points(mapper, frame, "stage", [[xs[index], ys[index]]])["points"][0]
            metadata = self.scan_metadata(ROLE_FINE_SEARCH, mapper, index, frame, [xs[index], ys[index]], target)
            centre = self.locate_particle(target, search_um * per_um, per_um, exposure, metadata,
                                          (ROLE_FINE_SEARCH, ROLE_FINE_CENTRE))
            if centre is None:
                self.warning(f"particle {index}: no clear Ce signal near its coarse target; not used")
                continue
            shift_nm = (np.subtract(centre, target) / per_um * 1000)
            self.output(f"particle {index}: Ce centre at {self.stage_text(centre, unit)} "
                        f"({shift_nm[0]:+.0f}, {shift_nm[1]:+.0f} nm from the coarse target)")
            pairs.append([float(xs[index]), float(ys[index]), centre[0], centre[1]])
            measured_at.append(self.clock())
            if len(pairs) == 1:
                self.start_drift_probe(centre, measured_at[0], frame, index, pairs[0][:2])
            targets.append(target)
            if len(pairs) == wanted and queue and wanted < most and not offsets_agree(
                    np.array(targets), np.array(pairs)[:, 2:], centre_sigma_um * per_um):
                wanted = min(most, wanted + 2)
                self.output(f"the {len(pairs)} offsets from the coarse targets disagree more than "
                            f"{centre_sigma_um * 1000:.0f} nm centres explain: measuring up to {wanted} particles")
        return pairs, targets, measured_at

    def check_common_offset(self, pairs: list[list[float]], targets: list[list[float]], tried: int,
                            per_um: float) -> None:
        """Refuse (the coarse alignment is kept) with fewer than 2 centres, or centres whose offsets
        from their coarse targets disagree: a right registration gives one common offset."""
        if len(pairs) < 2:
            raise SmartMacroError(
                f"SMART_Unsafe: fine alignment found fewer than 2 particles in the X-ray maps ({len(pairs)} of "
                f"{tried}); the coarse alignment is kept. Particles seen in the reference image but absent "
                "here mean the reference may show another sample with the same markers, or SmartXrfChannel does "
                "not see them: check before scanning.")
        scatter = offset_scatter_um(np.array(targets), np.array(pairs)[:, 2:], per_um)
        if scatter > FINE_OFFSET_SCATTER_LIMIT_UM:
            raise SmartMacroError(
                f"SMART_Unsafe: the X-ray maps put the {len(pairs)} particles at offsets from their coarse targets "
                f"that disagree by {scatter:.2f} um RMS (a right registration gives one common offset): the "
                "reference image may show another sample with the same markers, or the XRF channel sees other "
                "particles. Nothing was stored; check the reference image before scanning.")

    def refine(self, mapper, frame: str, pairs: list[list[float]], ref_points: np.ndarray, noise_sigma: float,
               unit: str) -> tuple[dict, list[float]]:
        """``frame -> stage`` refitted from the centres with the coarse mapping as prior
        (CoordMapperDS ``FitTransform``), reported and kept in ``SmartFineAlignment``; returns the
        fit and the new 1-sigma at every isolated particle."""
        request = {"from": frame, "to": "stage", "pairs": pairs, "from_unit": "px", "prior": True,
                   "model": str(self.env_or("SmartFineModel", "auto")), "noise_sigma": noise_sigma,
                   "linear_sigma": float(self.env_or("SmartFineLinearSigma", 0.01))}
        fit = call_json(mapper, "FitTransform", request)
        field = map_points(mapper, frame, "stage", ref_points.tolist())
        sigmas = [v for v in (field.get("uncertainty") or []) if v is not None and math.isfinite(float(v))]
        spread_text = (f"; 1-sigma at the {len(sigmas)} isolated particles: median "
                       f"{length_text(np.median(sigmas), unit)}, max {length_text(max(sigmas), unit)}"
                       if sigmas else "")
        self.output(f"{frame} -> stage refined from {len(pairs)} X-ray maps and the coarse mapping "
                    f"({fit['model']} correction, by evidence): residual RMS {length_text(fit['rms'], unit)} "
                    f"(coarse {length_text(fit['prior_rms'], unit)}){spread_text}")
        for warning in fit.get("warnings", []):
            self.warning(warning)
        self.setEnv("SmartFineAlignment", {"time": now_text(), "pairs": pairs, "rms": fit["rms"],
                                           "model": fit["model"], "prior_rms": fit["prior_rms"],
                                           "sigma": fit["sigma"], "consistent": fit["consistent"]})
        return fit, sigmas


class smart_scan_particles(_SmartMacro):
    """The unattended loop: for each particle go there, check drift every N particles, scan.

    Progress lives in the environment (``SmartScanProgress``): a re-run with the same
    particle list and parameters continues after the last finished particle. Each finished
    particle adds one line to the CSV log (``SmartScanLog``, default ``smart_visits.csv`` in
    ``ScanDir``). A registration in doubt stops the loop; targets outside the limits are
    skipped and logged. ``smart_run_queue`` is the same visit driven by the persistent queue
    (QueueDS, docs/queue.md), steerable from other clients."""

    param_def = [
        ["scan_macro", Type.String, "mesh", "scan per particle: mesh"],
        ["half_width_um", Type.Float, 0.3, "half width of the scan (um)"],
        ["step_um", Type.Float, 0.05, "scan step (um)"],
        ["exposure", Type.Float, 0.01, "integration time per point (s)"],
        ["isolated_only", Type.Boolean, True, "only isolated particles"],
        ["max_particles", Type.Integer, 0, "at most this many (0 = all)"],
    ]

    def run(self, scan_macro, half_width_um, step_um, exposure, isolated_only, max_particles):
        if scan_macro != "mesh":
            raise SmartMacroError(f"scan macro '{scan_macro}' is not supported; use mesh")
        self.check_scans_stored()
        camera_name = self.getEnv("SmartCamera")
        _, registration, particles, mapper = self.devices()
        frame = self.env_or("SmartReferenceFrame", "sem")
        xs, ys, isolated = self.detected_particles(particles)
        order = [i for i in range(len(xs)) if isolated[i] or not isolated_only]
        if max_particles > 0:
            order = order[:max_particles]
        progress = self.progress_for([self.env_or("SmartParticleImage", ""), len(xs),
                                      [round(float(xs[i]), 3) for i in order], scan_macro,
                                      half_width_um, step_um, exposure])
        log_path = self.visit_log_path()
        log = VisitLog(log_path)
        per_um = stage_unit_per_um(mapper)
        drift_every = int(self.env_or("SmartDriftEvery", 10))
        remaining = [i for i in order if i not in set(progress["done"])]
        self.output(f"{len(order)} particles, {len(order) - len(remaining)} already done, {len(remaining)} to "
                    f"scan; log {log_path}")
        loop_started = time.monotonic()
        for count, index in enumerate(remaining):
            self.checkPoint()
            if drift_every > 0 and count > 0 and count % drift_every == 0:
                self.check_drift(registration, camera_name, mapper, frame, [float(xs[index]), float(ys[index])])
            row = self.visit(mapper, frame, [float(xs[index]), float(ys[index])], index,
                             (scan_macro, half_width_um * per_um, step_um * per_um, exposure), log_path)
            log.write(row)
            self.mark_done(progress, index)
            if row.get("drift_jump"):
                self.realign(registration, camera_name, "drift_jump", particle=index)
            left_s = (time.monotonic() - loop_started) / (count + 1) * (len(remaining) - count - 1)
            self.output(f"particle {index} ({count + 1}/{len(remaining)}): {row['outcome']}, "
                        f"overhead {row['overhead_s']:.2f} s, scan {row.get('scan_s', 0.0):.1f} s, "
                        f"about {left_s / 60:.1f} min left")
        self.output(f"all {len(order)} particles done; log {log_path}")

    def progress_for(self, key: list) -> dict:
        """``SmartScanProgress`` for this particle list and these parameters (a new one otherwise)."""
        progress = self.env_or("SmartScanProgress", None)
        if not isinstance(progress, dict) or progress.get("key") != key:
            progress = {"key": key, "done": [], "started": now_text()}
            self.setEnv("SmartScanProgress", progress)
        return progress

    def mark_done(self, progress: dict, index: int) -> None:
        """Record a finished particle (after its log line is on disk)."""
        progress["done"] = sorted(set(progress["done"]) | {index})
        self.setEnv("SmartScanProgress", progress)

    def visit(self, mapper, frame, point, index, scan, log_path) -> dict:
        """One particle: map (plus the drift estimate), refuse outside the limits, move, scan a
        mesh sized by what is known, locate the peak, update the drift estimate; the log row.
        A particle the mesh missed is searched for once and, found, scanned again where the
        updated estimate puts it. ``row["drift_jump"]``: re-align before the next particle."""
        scan_macro, half_width, step, exposure = scan
        started = time.monotonic()
        per_um = stage_unit_per_um(mapper)
        plan = self.plan_target(mapper, frame, point, half_width / per_um)
        row = {"index": index, "sem_x_px": point[0], "sem_y_px": point[1], "coarse_x": plan["coarse"][0],
               "coarse_y": plan["coarse"][1], "drift_jump": False, "scan_s": 0.0}
        if not plan["within"]:
            self.warning(f"particle {index}: target outside the limits; skipped")
            row.update(target_x=plan["target"][0], target_y=plan["target"][1], outcome="outside_limits",
                       message="target outside the stage limits; skipped", finished_at=now_text(),
                       overhead_s=time.monotonic() - started)
            return row
        for attempt in range(2):
            target = plan["target"]
            row.update(target_x=target[0], target_y=target[1], mapped_x=plan["mapped"][0],
                       mapped_y=plan["mapped"][1], half_width_um=plan["half_width_um"])
            self.move_to(target)
            scan_record, scan_s = self.scan_around(target, scan_macro, plan["half_width_um"] * per_um, step,
                                                   exposure)
            row["scan_s"] += scan_s
            metadata = self.scan_metadata(ROLE_PARTICLE, mapper, index, frame, point, target,
                                          coarse_target=plan["coarse"])
            try:
                _, _, _, (cx, cy, significance) = self.scan_peak(scan_record)
                outcome = "scanned" if significance > 5 else "scanned_no_signal"
            except SmartMacroError as exc:
                cx = cy = significance = float("nan")
                outcome, row["message"] = "scanned_no_data", str(exc)
            row["exposing_fraction"] = self.log_scan(plan, mesh_points(plan["half_width_um"] * per_um, step),
                                                     step / per_um, exposure, scan_s, particle=index)
            stored = self.record_scan(scan_record, {**metadata, "measured_centre_position": [cx, cy],
                                                    "peak_significance": significance, "outcome": outcome,
                                                    "scan_s": scan_s, "mapped_position": plan["mapped"],
                                                    "drift_applied_um": plan["drift_applied_um"],
                                                    "half_width_um": plan["half_width_um"]})
            row.update(scan_file=stored.file or "", scan_entry=stored.entry or "", ce_center_x=cx, ce_center_y=cy,
                       outcome=outcome)
            centre = [cx, cy] if outcome == "scanned" else None
            found = None
            if centre is None and outcome == "scanned_no_signal" and attempt == 0:
                found = self.reacquire(plan, per_um, exposure, {**metadata, "particle_index": index})
            update = self.track_drift(plan, centre or found, per_um, particle=index)
            row["drift_jump"] = row["drift_jump"] or bool(update and update["jump"])
            if found is None:
                break
            row["message"] = "its first mesh missed it; found by a search mesh and scanned again"
            plan = self.plan_target(mapper, frame, point, half_width / per_um)
        row.update(overhead_s=time.monotonic() - started - row["scan_s"], finished_at=now_text())
        return row


class smart_particle_profile(_SmartMacro):
    """Apply a named set of ParticleDS settings (``SmartParticleProfiles``), list them, or save
    the current settings under a name.

    Detection settings depend on the sample and the image's pixel size, so they are kept by
    name with the session: ``smart up`` defines ``ceo2_50nm`` for the virtual beamline's sample.
    Settings a profile does not name keep their current value."""

    param_def = [
        ["name", Type.String, Optional, "profile to apply (none: list the profiles)"],
        ["action", Type.String, "apply", "apply, or save (store the current settings as NAME)"],
    ]

    SETTINGS = ("Diameter", "MinMass", "MaxSize", "Separation", "NoiseSize", "Threshold", "Percentile",
                "Invert", "Method", "IsolationRadius")

    def run(self, name, action):
        profiles = dict(self.env_or("SmartParticleProfiles", {}) or {})
        _, _, particles, _ = self.devices()
        if not name:
            if not profiles:
                self.output("no particle profiles: save one with smart_particle_profile NAME save")
            for key, values in sorted(profiles.items()):
                self.output(f"{key}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
            return
        if action == "save":
            values = {}
            for setting in self.SETTINGS:
                try:
                    value = particles.read_attribute(setting).value
                except tango.DevFailed:
                    continue  # a ParticleDS without this setting
                values[setting] = value.item() if hasattr(value, "item") else value
            profiles[name] = values
            self.setEnv("SmartParticleProfiles", profiles)
            self.output(f"saved the current ParticleDS settings as '{name}'")
            return
        if action != "apply":
            raise SmartMacroError(f"action '{action}': use apply or save")
        if name not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise SmartMacroError(f"SMART_NotFound: no particle profile '{name}' (known: {known}); "
                                  "smart_particle_profile lists them")
        for setting, value in profiles[name].items():
            try:
                particles.write_attribute(setting, value)
            except tango.DevFailed as exc:
                raise SmartMacroError(f"SMART_BadArgument: profile '{name}': {setting} = {value!r} was refused: "
                                      f"{exc.args[0].desc.strip()}") from None
        self.setEnv("SmartParticleProfile", name)
        self.output(f"particle profile '{name}' applied: "
                    + ", ".join(f"{k} {v}" for k, v in profiles[name].items()))


class smart_beam_set(_SmartMacro):
    """Set where the X-ray beam sits in the camera image (CoordMapperDS ``BeamPosition``, px)
    from a known value, e.g. measured on a scintillator; ``center`` for the image centre."""

    param_def = [
        ["x", Type.String, None, "beam column (px), or center"],
        ["y", Type.Float, Optional, "beam row (px)"],
    ]

    def run(self, x, y):
        camera, _, _, mapper = self.devices()
        if x.lower() in ("center", "centre"):
            camera.Snap()  # Width/Height are those of the last frame
            width, height = (int(camera.read_attribute(a).value) for a in ("Width", "Height"))
            position = [(width - 1) / 2.0, (height - 1) / 2.0]
        else:
            try:
                position = [float(x), float(y)]
            except (TypeError, ValueError):
                raise SmartMacroError("give the beam's camera pixel as two numbers (smart_beam_set 1023.5 "
                                      "1023.5) or smart_beam_set center") from None
        try:
            mapper.write_attribute("BeamPosition", position)
        except tango.DevFailed as exc:
            raise SmartMacroError(f"{exc.args[0].reason}: {exc.args[0].desc.strip()}") from None
        self.setEnv("SmartBeamCalibration", {"time": now_text(), "method": "set", "position": position})
        self.output(f"beam position set to camera pixel ({position[0]:.2f}, {position[1]:.2f})")


class smart_beam_calibrate(_SmartMacro):
    """Measure where the beam sits in the camera: an X-ray map finds a particle whose camera
    pixel the registration knows; the difference moves ``BeamPosition``.

    Needs smart_calibrate_camera, smart_register and smart_find_particles first. The search
    starts from the current BeamPosition (or the image centre, the usual first guess, when it
    is not set) and must contain the particle: ``search_um`` is how far the guess may be off.
    The camera chain (reference -> camera -> stage) is used on purpose, never a fine alignment:
    the beam pixel is what links camera pixels to the stage."""

    param_def = [
        ["particle_index", Type.Integer, -1, "isolated particle to map (-1: the one nearest the image centre)"],
        ["search_um", Type.Float, 1.0, "half width of the search map (um)"],
        ["exposure", Type.Float, 0.01, "integration time per point (s)"],
    ]

    def run(self, particle_index, search_um, exposure):
        camera, _, particles, mapper = self.devices()
        if not (search_um > 0 and exposure > 0):
            raise SmartMacroError("search_um and exposure must be positive")
        frame = self.env_or("SmartReferenceFrame", None)
        stage = self.env_or("SmartRegistrationStage", None)
        if frame is None or stage is None:
            raise SmartMacroError("SMART_NotReady: no registration to the camera yet: run smart_register first")
        xs, ys, isolated = self.detected_particles(particles)
        index = self.pick(particle_index, xs, ys, isolated)
        unit = self.stage_unit(mapper)
        per_um = UNIT_PER_UM[unit]
        beam = mapper.read_attribute("BeamPosition")
        if beam.quality == tango.AttrQuality.ATTR_INVALID or beam.value is None \
                or not np.isfinite(beam.value).all():
            camera.Snap()
            width, height = (int(camera.read_attribute(a).value) for a in ("Width", "Height"))
            guess = [(width - 1) / 2.0, (height - 1) / 2.0]
            self.output(f"no beam position yet: starting from the image centre ({guess[0]:.1f}, {guess[1]:.1f})")
            mapper.write_attribute("BeamPosition", guess)
        else:
            guess = [float(v) for v in beam.value]
        point = [[float(xs[index]), float(ys[index])]]
        pixel = map_points(mapper, frame, "camera", point, stage)["points"][0]
        # X = S + A (p - b): the target for the guess, and A from two unit pixel steps
        probes = [pixel, [pixel[0] + 1.0, pixel[1]], [pixel[0], pixel[1] + 1.0]]
        mapped = np.array(map_points(mapper, "camera", "stage", probes, stage)["points"])
        target = mapped[0]
        matrix = np.column_stack([mapped[1] - target, mapped[2] - target])
        self.output(f"particle {index}: camera pixel ({pixel[0]:.1f}, {pixel[1]:.1f}); searching +-{search_um:g} um "
                    f"around {self.stage_text(target, unit)}")
        metadata = self.scan_metadata(ROLE_BEAM_SEARCH, mapper, index, frame, point[0], list(target))
        started = time.time()
        centre = self.locate_particle(list(target), search_um * per_um, per_um, exposure, metadata,
                                      (ROLE_BEAM_SEARCH, ROLE_BEAM_CENTRE))
        self.event_log().write("align", started, time.time() - started, step="smart_beam_calibrate",
                               found=centre is not None)
        if centre is None:
            raise SmartMacroError(f"SMART_NotFound: particle {index} gave no clear X-ray signal within +-{search_um:g} "
                                  "um of where the current beam position puts it; BeamPosition is unchanged "
                                  f"({guess[0]:.2f}, {guess[1]:.2f}). Retry with a larger search_um or another "
                                  "particle.")
        offset = np.linalg.solve(matrix, np.subtract(centre, target))
        position = [guess[0] - float(offset[0]), guess[1] - float(offset[1])]
        mapper.write_attribute("BeamPosition", position)
        moved_um = np.subtract(centre, target) / per_um
        self.setEnv("SmartBeamCalibration", {"time": now_text(), "method": "xray_map", "particle": index,
                                             "position": position})
        self.output(f"beam position ({position[0]:.2f}, {position[1]:.2f}) px, moved "
                    f"({-offset[0]:+.2f}, {-offset[1]:+.2f}) px from ({guess[0]:.2f}, {guess[1]:.2f}); the particle "
                    f"was {moved_um[0] * 1000:+.0f}, {moved_um[1] * 1000:+.0f} nm from where the old value put it")

    def pick(self, particle_index, xs, ys, isolated) -> int:
        if particle_index >= 0:
            if particle_index >= len(xs):
                raise SmartMacroError(f"no particle {particle_index}: the last detection found {len(xs)}")
            if not isolated[particle_index]:
                self.warning(f"particle {particle_index} is not isolated: its map may show a neighbour")
            return int(particle_index)
        candidates = np.flatnonzero(isolated)
        if len(candidates) == 0:
            raise SmartMacroError("no isolated particle to calibrate on: give a particle_index")
        centre = np.array([np.mean(xs), np.mean(ys)])
        distances = np.hypot(xs[candidates] - centre[0], ys[candidates] - centre[1])
        return int(candidates[int(np.argmin(distances))])


class smart(_SmartMacro):
    """The SMART workflow at a glance: the macros in order, and what this session has done.

    ``lsmac`` matches whole names, so ``lsmac smart`` finds this macro; ``lsmac smart_.*``
    lists them all."""

    STEPS = (
        ("smart_calibrate_camera [step_um] [n]", "camera pixels -> stage (moves on an n x n grid)",
         "SmartCalibration"),
        ("smart_register IMAGE [model] [frame] [channel]", "the reference image (absolute path) -> live camera",
         "SmartReferenceImage"),
        ("smart_particle_profile [NAME]", "apply named ParticleDS settings (none: list them)", "SmartParticleProfile"),
        ("smart_find_particles [IMAGE]", "detect particles on the reference", "SmartParticleImage"),
        ("smart_beam_set X Y | center", "the beam's camera pixel from a known value", "SmartBeamCalibration"),
        ("smart_beam_calibrate [index] [search_um]", "... or measured with an X-ray map of a particle", None),
        ("smart_fine_align [n] [search_um] [exposure]", "X-ray maps of n particles refine reference -> stage",
         "SmartFineAlignment"),
        ("smart_goto INDEX | smart_goto_xy FRAME X Y", "put a particle or a point in the beam", None),
        ("smart_gen_scan FRAME X0 Y0 X1 Y1 STEP_UM EXPOSURE", "the mesh command covering a region", None),
        ("smart_scan_particles [mesh] [half_um] [step_um] [exp] [isolated] [max]", "scan every particle",
         "SmartScanProgress"),
        ("smart_queue_add isolated | smart_queue | smart_run_queue", "... or a night from the queue (QueueDS)",
         None),
    )

    def run(self):
        for usage, what, key in self.STEPS:
            done = self.env_or(key, None) if key else None
            self.output(f"{usage:<62} {what}" + ("  [done]" if done else ""))
        scan_dir, scan_file = self.env_or("ScanDir", None), self.env_or("ScanFile", None)
        self.output(f"scans stored in: {os.path.join(str(scan_dir), str(scan_file))}" if scan_dir and scan_file
                    else "scans are NOT stored: senv ScanDir /folder; senv ScanFile scans.h5")
