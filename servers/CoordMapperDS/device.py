"""The CoordMapperDS Tango shell: declares the public interface and delegates to the core.

The core (:class:`~servers.CoordMapperDS.core.CoordMapperCore`) owns the frame graph, the
beam position and the history. This class only

* parses every JSON argument with the models of :mod:`servers.CoordMapperDS.args`,
* reads the stage motors (``MotorX``/``MotorY``: Position, its limits and unit) through
  :mod:`servers.CoordMapperDS.motors` for every Map, because limits can change at any time,
* persists the whole core state (``core.to_json()``) in the device property
  ``GraphState`` (as lines, :mod:`servers.CoordMapperDS.property_lines`) after every
  successful change, and loads it in ``init_device``,
* maps errors to ``SMART_*`` and reports State/Status.

State: ``ON`` idle; ``ALARM`` when the motors cannot be read (Map still works, but
``within_limits`` is false wherever the stage is involved, and Status says why);
``FAULT`` when the stored graph cannot be loaded -- then every command and graph
attribute is refused, so nothing overwrites what the user stored (docs/coordmapper.md).

Persistence order: the core commits in memory, the device writes the new state to the
database, and on a failed write it restores the previous state in memory and refuses the
command (``SMART_Failed``) -- memory and database always agree.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import tango
from tango import AttrQuality, AttrWriteType, DevState
from tango.server import device_property

from servers.common.device_base import SmartDevice, smart_attribute, smart_command
from servers.common.errors import BadArgument, Failed, NotReady, SmartError
from servers.common.frames import CAMERA
from servers.common.jsonargs import dumps, parse_args
from servers.common.tango_client import devfailed_line
from servers.common.tango_glue import run_server, text_in
from servers.CoordMapperDS.args import CalibrateCameraArgs, FitTransformArgs, MapArgs, SetTransformArgs
from servers.CoordMapperDS.core import CoordMapperCore
from servers.CoordMapperDS.motors import DEFAULT_UNIT, MotorProblem, MotorReading, StageMotors
from servers.CoordMapperDS.property_lines import join_chunks, split_chunks

log = logging.getLogger(__name__)

T = TypeVar("T")

STATE_PROPERTY = "GraphState"
"""Device property holding ``core.to_json()``, split into lines (see
:func:`servers.CoordMapperDS.property_lines.split_chunks`)."""
MOTOR_RETRY_S = 3.0
"""In ALARM, State looks at the motors again at most this often."""
PERSIST_TIMEOUT_MS = 2000
"""Longest wait for the database when saving the graph (then the change is undone)."""
MAX_FRAMES = 1024
MAX_BEAM_PX = 100_000.0
"""The beam sits in (or just beside) a camera frame of at most a few thousand px a side."""


# -------------------------------------------------------------------- device
class CoordMapperDS(SmartDevice):
    """Viewport <-> motor mapping: a graph of named 2-D frames (see docs/coordmapper.md)."""

    MotorX = device_property(dtype=str, default_value="",
                             doc="Tango/Sardana name of the x stage motor (its Position: value, limits, unit)")
    MotorY = device_property(dtype=str, default_value="",
                             doc="Tango/Sardana name of the y stage motor (its Position: value, limits, unit)")
    GraphState = device_property(dtype=(str,), default_value=[],
                                 doc="written by the device: the whole graph, beam position and history as "
                                     "JSON (lines to be joined). Delete it and run Init to start empty.")

    # ------------------------------------------------------------------ life
    def init_device(self) -> None:
        super().init_device()
        self._lock = threading.RLock()
        self._fault: str | None = None
        self._motor_problem: str | None = None
        self._persisted = True
        self._last_motor_try = time.monotonic()
        names = (str(self.MotorX).strip(), str(self.MotorY).strip())
        self._motors = StageMotors(names) if all(names) else None
        if any(names) and not all(names):
            self._motor_problem = "only one of MotorX/MotorY is set; set both and run Init"
        stored = self._stored_text()
        unit = self._initial_unit(stored)
        self._core = CoordMapperCore(stage_unit=unit)
        if stored.strip():
            try:
                self._core.from_json(stored)
            except SmartError as exc:
                self._fault = (f"the graph stored in the device property {STATE_PROPERTY} cannot be loaded: "
                               f"{exc.desc}. Nothing was overwritten; fix or delete that property and run "
                               "Init (commands are refused until then)")
                log.error("CoordMapperDS: %s", self._fault)
        self.refresh_state()

    def _database(self) -> Any:
        """The Tango database (or file database) of this server; None when there is none."""
        try:
            return tango.Util.instance().get_database()
        except Exception:  # noqa: BLE001 - running without any database
            return None

    def _stored_text(self) -> str:
        db = self._database()
        if db is not None:
            try:
                value = db.get_device_property(self.get_name(), STATE_PROPERTY)[STATE_PROPERTY]
                return join_chunks(list(value))
            except tango.DevFailed as exc:
                log.warning("cannot read %s from the database (%s); using the property value given at "
                            "start-up", STATE_PROPERTY, devfailed_line(exc))
        return join_chunks(self.GraphState)

    def _initial_unit(self, stored: str) -> str:
        """The motors' unit; if they cannot be read, the stored graph's (else mm) and ALARM."""
        if self._motors is not None:
            try:
                return self._motors.read(with_position=False).unit
            except MotorProblem as exc:
                self._motor_problem = str(exc)
        try:
            unit = json.loads(stored).get("stage_unit") if stored.strip() else None
        except (ValueError, AttributeError):
            unit = None
        return unit if unit in ("mm", "um", "nm") else DEFAULT_UNIT

    # ----------------------------------------------------------------- state
    def refresh_state(self) -> None:
        """State and Status from the stored graph and the motors (looked at again while in ALARM)."""
        if self._fault:
            self.report(DevState.FAULT, f"FAULT: {self._fault}.", only_changes=True)
            return
        if self._motor_problem:
            self._retry_motors()
        core = self._core
        beam = core.beam_position
        beam_text = "not set" if beam is None else f"({beam[0]:g}, {beam[1]:g}) px"
        motors = ("no motors configured (MotorX/MotorY empty): within_limits is false for every point"
                  if self._motors is None else
                  f"stage motors {self._motors.names[0]}/{self._motors.names[1]} in {core.stage_unit}")
        text = (f"{len(core.frames())} frames, {len(core.transforms())} transforms, beam position "
                f"{beam_text}; {motors}.")
        if self._motor_problem:
            state = DevState.ALARM
            text = (f"ALARM: {self._motor_problem}. Map works, but within_limits is false and Maps from/to "
                    f"camera need stage_position until the motors answer (checked on every Map). {text}")
        else:
            state = DevState.ON
            text = f"Ready: {text}"
        if not self._persisted:
            text += " Warning: there is no Tango database, changes are not persisted."
        self.report(state, text, only_changes=True)

    # ---------------------------------------------------------------- helpers
    def _ready_core(self) -> CoordMapperCore:
        if self._fault:
            raise NotReady(self._fault)
        return self._core

    def _change(self, action: Callable[[CoordMapperCore], T]) -> T:
        """Run a changing core call, persist the new state, or undo it if persisting fails."""
        with self._lock:
            core = self._ready_core()
            before = core.to_json()
            result = action(core)
            after = core.to_json()
            if after != before:
                try:
                    self._persist(after)
                except Exception as exc:  # noqa: BLE001 - any failure to store must undo the change
                    core.from_json(before)
                    raise Failed(f"the change could not be saved in the Tango database ({devfailed_line(exc)}); it "
                                 "was undone, the stored graph is unchanged. Retry when the database "
                                 "answers") from None
            return result

    def _persist(self, text: str) -> None:
        db = self._database()
        if db is None:
            self._persisted = False
            return
        lines = split_chunks(text)
        if tango.Util._FileDb:  # a file database (device tests): no network, no timeout
            db.put_device_property(self.get_name(), {STATE_PROPERTY: lines})
            return
        previous = db.get_timeout_millis()
        retry = db.get_transparency_reconnection()
        db.set_timeout_millis(PERSIST_TIMEOUT_MS)  # fail within a client's default 3 s timeout
        # and only once: cppTango's reconnect-and-retry doubled the wait on a cut-off database
        # host, past that timeout (docs/deployment.md, "Several hosts")
        db.set_transparency_reconnection(False)
        try:
            db.put_device_property(self.get_name(), {STATE_PROPERTY: lines})
        finally:
            db.set_timeout_millis(previous)
            db.set_transparency_reconnection(retry)

    def _retry_motors(self) -> None:
        """In ALARM, look at the motors again (at most every few seconds): the device recovers by itself,
        e.g. when the Pool comes up after this server."""
        now = time.monotonic()
        if self._motors is None or now - self._last_motor_try < MOTOR_RETRY_S:
            return
        self._last_motor_try = now
        with self._lock:
            self._read_motors(with_position=False)

    def _read_motors(self, with_position: bool) -> MotorReading | None:
        """Motor limits/unit (and position); None if unreadable (ALARM, Status says why)."""
        if self._motors is None:
            return None
        try:
            reading = self._motors.read(with_position)
        except MotorProblem as exc:
            self._motor_problem = str(exc)
            return None
        if reading.unit != self._core.stage_unit:
            self._motor_problem = (f"the motors now use {reading.unit} but the graph is in "
                                   f"{self._core.stage_unit}; restore the motor unit, or run Init "
                                   "(the stored graph is then refused) and recalibrate")
            return None
        self._motor_problem = None
        return reading

    # ------------------------------------------------------------- commands
    @smart_command(dtype_in=str, dtype_out=str,
                   doc_in='JSON {"from", "to", "matrix": 3x3, "stage_position"? (camera edges), "sigma"? | '
                          '"covariance"?, "from_unit"?, "to_unit"?}',
                   doc_out='JSON {"from", "to", "matrix", "stored"} (+ calibration details for camera <-> stage)')
    def SetTransform(self, argin: str) -> str:
        args = parse_args(argin, SetTransformArgs, what="SetTransform argument")
        return self._change(lambda core: core.set_transform(args)).to_json()

    @smart_command(dtype_in=str, dtype_out=str,
                   doc_in='JSON {"from", "to", "pairs": [[x, y, X, Y], ...], "model": "similarity" | "affine", '
                          '"reflection"?, "noise_sigma"?, "reject_outliers"?, "stage_position"?, "from_unit"?, '
                          '"to_unit"?}',
                   doc_out='JSON {"matrix", "residuals", "rms", "inliers", "rejected", "sigma", ...}; stored as '
                           'the edge')
    def FitTransform(self, argin: str) -> str:
        args = parse_args(argin, FitTransformArgs, what="FitTransform argument")
        return self._change(lambda core: core.fit_transform(args)).to_json()

    @smart_command(dtype_in=str, dtype_out=str,
                   doc_in='JSON {"steps": [[dX, dY, dx, dy], ...] (stage step, image shift px), "model", '
                          '"reflection"?, "noise_sigma"?, "reject_outliers"?, "stage_position"?}',
                   doc_out='JSON fit + "pixel_size", "rotation_deg", "mirrored"; stored as camera -> stage')
    def CalibrateCamera(self, argin: str) -> str:
        args = parse_args(argin, CalibrateCameraArgs, what="CalibrateCamera argument")
        return self._change(lambda core: core.calibrate_camera(args)).to_json()

    @smart_command(dtype_in=str, dtype_out=str,
                   doc_in='JSON {"from", "to", "points": [[x, y], ...], "stage_position"?}; from/to camera without '
                          'stage_position uses the current motor positions',
                   doc_out='JSON {"points", "uncertainty", "within_limits", "unit", "matrix", "path", "warnings", '
                           '"stage_position_used"?}')
    def Map(self, argin: str) -> str:
        args = parse_args(argin, MapArgs, what="Map argument")
        core = self._ready_core()
        wants_position = (CAMERA in (args.from_, args.to) and args.from_ != args.to
                          and args.stage_position is None)
        reading = self._read_motors(with_position=wants_position and self._motors is not None)
        warnings: list[str] = []
        used_position = None
        if wants_position:
            if reading is not None and reading.position is not None:
                used_position = list(reading.position)
                args = args.model_copy(update={"stage_position": used_position})
            elif self._motors is not None:
                raise NotReady(f"a Map from or to 'camera' needs the stage position of that camera frame, and "
                               f"the current one cannot be read: {self._motor_problem}. Give "
                               "\"stage_position\": [X, Y]")
        result = core.map_points(args, None if reading is None else reading.limits)
        within = result.within_limits
        if reading is None:
            why = (self._motor_problem if self._motors is not None
                   else "no motors are configured (MotorX/MotorY)")
            within = (False,) * len(result.points)
            warnings.append(f"within_limits is false: the stage limits are unknown, {why}")
        return replace(result, within_limits=within, warnings=(*warnings, *result.warnings),
                       stage_position_used=None if used_position is None
                       else (used_position[0], used_position[1])).to_json()

    @smart_command(dtype_in=str, dtype_out=str,
                   doc_in="frame name ('stage' cannot be removed; 'camera' loses its edges)",
                   doc_out='JSON {"frame", "removed_edges"}')
    def RemoveFrame(self, argin: str) -> str:
        name = text_in(argin)
        if not isinstance(name, str) or not name.strip():
            raise BadArgument("give the name of the frame to remove, e.g. 'sem'")
        return self._change(lambda core: core.remove_frame(name.strip())).to_json()

    # ----------------------------------------------------------- attributes
    @smart_attribute(dtype=(str,), max_dim_x=MAX_FRAMES, unit="name", label="Frames", format="%s",
                     doc="names of the frames: stage and camera first, then the others alphabetically")
    def Frames(self) -> list[str]:
        return self._ready_core().frames()

    @smart_attribute(dtype=str, unit="JSON", label="Transforms", format="%s",
                     doc='JSON {"frames": {name: unit}, "edges": [...], "beam_position"}: every stored edge')
    def Transforms(self) -> str:
        return self._ready_core().transforms_json()

    @smart_attribute(dtype=str, unit="JSON", label="History", format="%s",
                     doc="JSON list, oldest first: which command changed what and when (UTC), last 500 kept")
    def History(self) -> str:
        return dumps(self._ready_core().history())

    @smart_attribute(dtype=(float,), max_dim_x=2, access=AttrWriteType.READ_WRITE, unit="px", label="Beam position",
                     format="%.3f", min_value=-MAX_BEAM_PX, max_value=MAX_BEAM_PX,
                     doc="where the X-ray beam sits in the camera image [x, y] px; invalid until set. Kept in the "
                         "GraphState property with the graph (one source of truth), so it survives a restart")
    def BeamPosition(self) -> Any:
        beam = self._ready_core().beam_position
        if beam is None:
            return np.array([math.nan, math.nan]), time.time(), AttrQuality.ATTR_INVALID
        return np.array(beam)

    @BeamPosition.write
    def BeamPosition(self, value: Any) -> None:  # noqa: F811 - the pytango write-method idiom
        position = [float(v) for v in np.asarray(value, dtype=float).ravel()]
        self._change(lambda core: core.set_beam_position(position))

    @smart_attribute(dtype=str, unit="text", label="Stage unit", format="%s",
                     doc="unit of the stage frame: the motors' Position unit (mm if they declare none)")
    def StageUnit(self) -> str:
        return self._core.stage_unit


def main(argv: list[str] | None = None) -> int:
    return run_server([CoordMapperDS], argv)


if __name__ == "__main__":
    raise SystemExit(main())
