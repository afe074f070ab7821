"""The night queue in Spock: fill and steer QueueDS, and run it (``smart_run_queue``).

QueueDS (docs/queue.md) holds the targets; every macro here is a call to it, so what Spock
does, the CLI, the GUI and facility software see at once, and they may steer the same queue
while ``smart_run_queue`` runs on a Door. The loop is split into named steps:

claim (``ClaimNext``) -> wait for beam -> map and check limits -> move -> wait for beam ->
scan -> check the beam again -> finish (``Finish``, after the scan's data is written).

Exactly once: a target is claimed before anything moves and marked done only after its scan
returned; a loop that dies leaves its target ``running`` and the next loop scans it again.
"""

from __future__ import annotations

import json
import math
import time

import tango
from sardana.macroserver.macro import Optional, Type

# modules of the installed ``macros`` package (setup.cfg); Sardana loads this file from its MacroPath
from macros.smart_calls import call_json, proxy, stage_unit_per_um
from macros.smart_macros import CENTRE_SIGMA_UM, _SmartMacro
from macros.smart_queue_support import (
    BeamCondition,
    BeamWatch,
    FinishRetry,
    queue_visit_row,
    read_clock,
    scan_files,
    scan_spec,
    targets_text,
)
from macros.smart_records import ROLE_PARTICLE
from macros.smart_support import SmartMacroError, VisitLog, mesh_points

QUEUE_POLL_S = 1.0
"""How often a paused loop asks the queue again."""
WAIT_LOG_EVERY_S = 60.0
"""A loop that waits (beam, pause) says so again this often."""


class _QueueMacro(_SmartMacro):
    """Access to QueueDS for the queue macros."""

    def queue(self) -> tango.DeviceProxy:
        name = self.env_or("SmartQueue", None)
        if not name:
            raise SmartMacroError("SMART_NotReady: no queue device: senv SmartQueue smart/queue/1 (set by smart up)")
        return proxy(name, 10_000)

    def show_counts(self, queue) -> None:
        counts = json.loads(queue.read_attribute("Counts").value)
        paused = queue.read_attribute("PauseReason").value
        left = queue.read_attribute("TimeLeft").value
        self.output(", ".join(f"{counts[s]} {s}" for s in ("pending", "running", "done", "failed", "skipped"))
                    + f"; about {left / 60:.1f} min left" + (f"; PAUSED: {paused}" if paused else ""))


class smart_queue(_QueueMacro):
    """Print the queue: id, state, particle or point, scan, attempts, reason; counts and time left."""

    def run(self):
        queue = self.queue()
        targets = json.loads(queue.read_attribute("Targets").value)
        for line in targets_text(targets):
            self.output(line)
        self.show_counts(queue)


class smart_queue_add(_QueueMacro):
    """Add targets: ``isolated`` or ``all`` particles of the last detection, particle indices
    (``3,5,9``), or a CSV file (absolute path; columns ``particle`` or ``x,y[,frame]``, optional
    ``region``). Each gets a mesh of +-half_width_um at step_um."""

    param_def = [
        ["what", Type.String, "isolated", "isolated | all | 3,5,9 | /abs/path.csv"],
        ["half_width_um", Type.Float, 0.3, "half width of each scan (um)"],
        ["step_um", Type.Float, 0.05, "scan step (um)"],
        ["exposure", Type.Float, 0.01, "integration time per point (s)"],
        ["region", Type.String, Optional, "a label for these targets"],
    ]

    def run(self, what, half_width_um, step_um, exposure, region):
        queue = self.queue()
        frame = self.env_or("SmartReferenceFrame", "sem")
        scan = scan_spec(half_width_um, step_um, exposure)
        if what.lower().endswith(".csv"):
            reply = call_json(queue, "AddCsv", {"path": what, "scan": scan, "frame": frame})
        else:
            selection: str | list[int] = what
            if what not in ("isolated", "all"):
                try:
                    selection = [int(word) for word in what.replace(" ", "").split(",") if word]
                except ValueError:
                    raise SmartMacroError(f"'{what}': give isolated, all, particle indices such as 3,5,9, or "
                                          "the absolute path of a CSV file") from None
            argument = {"particles": selection, "scan": scan, "frame": frame}
            if region:
                argument["region"] = region
            reply = call_json(queue, "AddParticles", argument)
        self.output(f"{reply['count']} target(s) added (ids {reply['added'][:10]}"
                    f"{' ...' if len(reply['added']) > 10 else ''})")
        self.show_counts(queue)


class smart_queue_order(_QueueMacro):
    """Order the pending targets for the shortest stage travel (nearest neighbour + 2-opt)."""

    def run(self):
        reply = call_json(self.queue(), "Reorder", {"auto": "shortest"})
        if reply.get("travel_before"):
            self.output(f"travel {reply['travel_before']:.4f} -> {reply['travel_after']:.4f} {reply['unit']} "
                        f"for {len(reply['order'])} pending targets")
        else:
            self.output("nothing to order")


class smart_queue_pause(_QueueMacro):
    """Pause the queue after the current target (the running loop finishes it, then waits)."""

    param_def = [["reason", Type.String, Optional, "why (shown to everyone)"]]

    def run(self, reason):
        self.queue().Pause(reason or f"paused from {self.door_name()}")
        self.output("queue paused: the current target finishes, no new one starts until smart_queue_resume")

    def door_name(self) -> str:
        try:
            return str(self.getDoorName())
        except Exception:  # noqa: BLE001 - older Sardana
            return "Spock"


class smart_queue_resume(_QueueMacro):
    """Resume a paused queue."""

    def run(self):
        self.queue().Resume()
        self.output("queue resumed")


class smart_queue_skip(_QueueMacro):
    """Skip a target: a pending one at once, the running one at its next step."""

    param_def = [["target_id", Type.Integer, None, "target id (smart_queue lists them)"],
                 ["reason", Type.String, Optional, "why"]]

    def run(self, target_id, reason):
        reply = call_json(self.queue(), "Skip", {"ids": [target_id], "reason": reason or "skipped from Spock"})
        self.output(f"target {target_id} skipped" if reply["skipped"] else
                    f"target {target_id} is running: it will be skipped at its next step")


class smart_queue_retry(_QueueMacro):
    """Put a failed or skipped target back in the queue (-1: every failed target)."""

    param_def = [["target_id", Type.Integer, -1, "target id, or -1 for every failed target"]]

    def run(self, target_id):
        argument = {"failed": True} if target_id < 0 else {"ids": [target_id]}
        reply = call_json(self.queue(), "Retry", argument)
        self.output(f"{len(reply['retried'])} target(s) back in the queue")


class smart_queue_remove(_QueueMacro):
    """Remove a pending, failed or skipped target."""

    param_def = [["target_id", Type.Integer, None, "target id"]]

    def run(self, target_id):
        call_json(self.queue(), "Remove", {"ids": [target_id]})
        self.output(f"target {target_id} removed")


class smart_run_queue(_QueueMacro):
    """Run the queue: claim, wait for beam, move, scan, finish, until it is empty.

    A paused queue makes the loop wait (Resume goes on; Stop/Abort end it). No scan without
    beam (``SmartBeamCondition``). Safe to stop or kill at any point: a finished target is
    never scanned again, an interrupted one is (docs/queue.md, "Done exactly once")."""

    param_def = [["max_targets", Type.Integer, 0, "stop after this many targets (0: until the queue is empty)"]]

    def run(self, max_targets):
        self.check_scans_stored()
        queue = self.queue()
        self.prepare_devices()
        handled, waiting_since = 0, None
        while max_targets <= 0 or handled < max_targets:
            self.checkPoint()
            self.drift_check_due(queue, handled)
            self.realign_due(queue)
            claim = self.queue_call(queue, "ClaimNext", {"worker": self.worker()}, "the next target")
            if claim["target"] is None:
                if claim["why"] != "paused":
                    break
                waiting_since = self.wait_while_paused(queue, waiting_since)
                continue
            waiting_since = None
            handled += 1
            began = time.monotonic()
            reply = self.run_target(queue, claim)
            self.log_visit(reply.get("target") or claim["target"], time.monotonic() - began)
            if reply.get("stop"):
                self.warning(f"the queue stopped: {reply['target']['reason']} (policy stop); fix the cause, "
                             "then smart_queue_resume and smart_run_queue")
                break
        self.show_counts(queue)

    # ---------------------------------------------------------------- steps
    def prepare_devices(self) -> None:
        _, self._registration, _, self._mapper = self.devices()
        self._camera_name = self.getEnv("SmartCamera")
        self._per_um = stage_unit_per_um(self._mapper)
        self._unit = self.stage_unit(self._mapper)
        self._beam = BeamCondition.from_env(self.env_or("SmartBeamCondition", None))
        if self._beam is None:
            self.warning("SmartBeamCondition is not set: the loop cannot check the beam and scans regardless")
        self._drift_every = int(self.env_or("SmartDriftEvery", 10))
        self._clock = self.env_or("SmartClock", None)
        self._visits = VisitLog(self.visit_log_path())

    def log_visit(self, target: dict, spent_s: float) -> None:
        """One visit-log row per finished target (after Finish: the queue has it), with the
        move + bookkeeping time: what the target took besides its scan and its beam waits."""
        data = target.get("data") or {}
        times = data.get("times") or {}
        overhead = (spent_s - float(times.get("scan_s") or 0.0) - float(times.get("beam_wait_s") or 0.0)
                    - float(times.get("probe_s") or 0.0))
        try:
            self._visits.write(queue_visit_row(target, data, max(overhead, 0.0)))
        except OSError as exc:
            self.warning(f"the visit log {self._visits.path} could not be written: {exc}")

    def worker(self) -> str:
        try:
            return str(self.getDoorName())
        except Exception:  # noqa: BLE001 - older Sardana: one name per MacroServer is enough
            return "smart_run_queue"

    def drift_check_due(self, queue, handled: int) -> None:
        """Every SmartDriftEvery targets, before claiming the next: a registration in doubt pauses
        the queue (nothing is claimed or moved) and ends the loop."""
        if self._drift_every <= 0 or handled == 0 or handled % self._drift_every:
            return
        try:
            self.check_drift(self._registration, self._camera_name)
        except SmartMacroError as exc:
            queue.Pause(f"drift check failed: {exc}"[:480])
            raise

    def wait_while_paused(self, queue, since):
        now = time.monotonic()
        if since is None or now - since >= WAIT_LOG_EVERY_S:
            self.output(f"queue paused ({queue.read_attribute('PauseReason').value}); waiting for "
                        "smart_queue_resume (Stop/Abort ends the loop)")
            since = now
        self.pause_for(QUEUE_POLL_S)
        return since

    def pause_for(self, seconds: float) -> None:
        """Sleep in short steps, so Stop/Abort take effect at once."""
        deadline = time.monotonic() + seconds
        while True:
            self.checkPoint()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.2, left))

    def report(self, queue, target: dict, token: str, activity: str, message: str = "") -> dict:
        """Tell the queue what the loop does; returns {skip, paused}. A queue that does not answer
        does not stop the scan (Finish waits for it)."""
        try:
            return call_json(queue, "Report", {"id": target["id"], "token": token, "activity": activity,
                                               "message": message[:900]})
        except SmartMacroError as exc:
            self.debug(f"report to the queue failed: {exc}")
            return {"skip": False, "paused": False}

    def log_beam_wait(self, target: dict, waited: float) -> None:
        """A wait for beam longer than a poll goes to the event log (the report's time budget)."""
        if waited >= 0.5:
            self.event_log().write("wait_beam", time.time() - waited, waited, target_id=target["id"],
                                   particle=target.get("particle"))

    def wait_for_beam(self, queue, target: dict, token: str) -> tuple[bool, float]:
        """Wait until the beam condition holds; (False, waited) when the target was skipped meanwhile."""
        if self._beam is None:
            return True, 0.0
        started, said = time.monotonic(), None
        while True:
            ok, why = self._beam.check()
            if not ok:
                self._beam_outage = True
            if ok:
                if said is not None:
                    self.output(f"beam is back ({why}) after {time.monotonic() - started:.0f} s; going on")
                return True, time.monotonic() - started
            state = self.report(queue, target, token, "waiting_for_beam", why)
            if state.get("skip"):
                return False, time.monotonic() - started
            if said is None or time.monotonic() - said >= WAIT_LOG_EVERY_S:
                self.warning(f"target {target['id']}: waiting for beam: {why}")
                said = time.monotonic()
            self.pause_for(self._beam.poll_s)

    def run_target(self, queue, claim: dict) -> dict:
        """One target from claim to Finish; returns Finish's reply."""
        target, token = claim["target"], claim["token"]
        label = f"target {target['id']}" + (f" (particle {target['particle']})" if target["particle"] is not None
                                             else "")
        if claim["rerun"]:
            self.output(f"{label}: its earlier scan was interrupted; scanning it again")
        times = {"beam_wait_s": 0.0}
        try:
            ok, waited = self.wait_for_beam(queue, target, token)
            times["beam_wait_s"] += waited
            self.log_beam_wait(target, waited)
            if not ok:
                return self.finish(queue, target, token, "skipped", None, "", {"times": times}, None, label)
            self.after_beam_outage(target, times)
            plan = self.plan_target(self._mapper, target["frame"], [target["x"], target["y"]],
                                    target["scan"]["half_width_um"])
            spot = plan["target"]
            data = {"stage_target": spot, "coarse_target": plan["coarse"], "unit": self._unit, "times": times,
                    **self.plan_data(plan)}
            if not plan["within"]:
                return self.finish(queue, target, token, "failed", "outside_limits",
                                   "the target maps outside the stage limits", data, None, label)
            if self.report(queue, target, token, "moving").get("skip"):
                return self.finish(queue, target, token, "skipped", None, "", data, None, label)
            moved = time.monotonic()
            try:
                self.move_to(spot)
            except SmartMacroError as exc:
                return self.finish(queue, target, token, "failed", "move_error", str(exc), data, None, label)
            times["move_s"] = time.monotonic() - moved
            self.event_log().write("move", time.time() - times["move_s"], times["move_s"], target_id=target["id"],
                                   particle=target.get("particle"))
            ok, waited = self.wait_for_beam(queue, target, token)
            times["beam_wait_s"] += waited
            self.log_beam_wait(target, waited)
            if not ok:
                return self.finish(queue, target, token, "skipped", None, "", data, None, label)
            if self.after_beam_outage(target, times):  # the beam went after the move: plan and move again
                plan = self.plan_target(self._mapper, target["frame"], [target["x"], target["y"]],
                                        target["scan"]["half_width_um"])
                data.update(stage_target=plan["target"], **self.plan_data(plan))
                self.move_to(plan["target"])
            return self.scan_target(queue, target, token, plan, data, label)
        except SmartMacroError as exc:
            return self.finish(queue, target, token, "failed", "other", str(exc), {"times": times}, None, label)

    def after_beam_outage(self, target: dict, times: dict) -> bool:
        """The beam was off since the last target (a refill, a loss): the heat load changed and the
        sample may have stepped. The drift estimate is told (``DriftTracker.step_possible``) and,
        with drift correction on, the drift probe is measured again before the next target, so
        that target is corrected for the step (its time goes to ``times["probe_s"]`` and a ``realign``
        event, not to the target's move + bookkeeping). True when an outage was handled."""
        if not getattr(self, "_beam_outage", False):
            return False
        self._beam_outage = False
        tracker = self.drift_tracker()
        tracker.step_possible(self.clock())
        self.save_drift(tracker)
        if self.drift_correction_on() and self.env_or("SmartDriftProbe", None):
            self.output(f"target {target['id']}: the beam was off; measuring the drift probe for a step first")
            started = time.time()
            update = self.measure_drift_probe(self._mapper, self._per_um, float(target["scan"]["exposure"]),
                                              float(self.env_or("SmartCentreSigmaUm", CENTRE_SIGMA_UM)))
            spent = time.time() - started
            times["probe_s"] = times.get("probe_s", 0.0) + spent
            self.event_log().write("realign", started, spent, why="beam_outage", method="drift_probe",
                                   found=update is not None, target_id=target["id"], particle=target.get("particle"))
        return True

    @staticmethod
    def plan_data(plan: dict) -> dict:
        """What the queue keeps of a target's plan (docs/queue.md, ``data``)."""
        return {"mapped_target": plan["mapped"], "drift_applied_um": plan["drift_applied_um"],
                "map_sigma_um": plan["map_sigma_um"], "drift_sigma_um": plan["drift_sigma_um"],
                "half_width_um": plan["half_width_um"]}

    def scan_target(self, queue, target: dict, token: str, plan: dict, data: dict, label: str,
                    searched: bool = False) -> dict:
        """Scan the planned mesh, check the beam, locate the peak, update the drift estimate and
        finish. A particle the mesh missed is searched for once (``reacquire``) and, when found,
        scanned again where the updated drift estimate puts it."""
        scan, spot = target["scan"], plan["target"]
        self.report(queue, target, token, "scanning", f"{scan['macro']} +-{plan['half_width_um']:.2f} um at {spot}")
        data["started_at"], data["started_sim_s"] = time.time(), read_clock(self._clock)
        try:
            with BeamWatch(self._beam) as watch:  # a loss shorter than the scan, within it, counts too
                record, scan_s = self.scan_around(spot, scan["macro"], plan["half_width_um"] * self._per_um,
                                                  scan["step_um"] * self._per_um, scan["exposure"])
        except SmartMacroError as exc:
            return self.finish(queue, target, token, "failed", "scan_error", str(exc), data, None, label)
        ids = {"target_id": target["id"], "particle": target.get("particle"), "region": target.get("region")}
        points = mesh_points(plan["half_width_um"] * self._per_um, scan["step_um"] * self._per_um)
        data["times"]["scan_s"] = data["times"].get("scan_s", 0.0) + scan_s
        data.update(points=points, exposing_fraction=self.log_scan(plan, points, scan["step_um"], scan["exposure"],
                                                                   scan_s, **ids))
        metadata = self.scan_metadata(
            ROLE_PARTICLE, self._mapper, target.get("particle"), target["frame"], [target["x"], target["y"]], spot,
            coarse_target=data.get("coarse_target"), region=target.get("region"), queue_target_id=target["id"])
        stored = self.record_scan(record, {**metadata, "scan_s": scan_s, "mapped_position": plan["mapped"],
                                           "drift_applied_um": plan["drift_applied_um"],
                                           "half_width_um": plan["half_width_um"],
                                           "started_sim_s": data["started_sim_s"]})
        data["scan_file"], data["scan_entry"] = stored.file, stored.entry
        data["scan_id"] = self.env_or("ScanID", None)
        data["scan_files"] = scan_files(self.env_or("ScanDir", None), self.env_or("ScanFile", None))
        if self._beam is not None:
            ok, why = self._beam.check()
            if ok and watch.lost:
                ok, why = False, watch.lost  # the message says "during the scan" already
            if not ok:
                self._beam_outage = True
                self.record_scan(record, {"outcome": "beam_lost"})
                return self.finish(queue, target, token, "failed", "beam_lost",
                                   f"the beam was lost during the scan ({why})", data, scan_s, label)
        try:
            _, _, ce, (cx, cy, significance) = self.scan_peak(record)
        except SmartMacroError as exc:
            self.record_scan(record, {"outcome": "scanned_no_data"})
            return self.finish(queue, target, token, "failed", "scan_error", str(exc), data, scan_s, label)
        self.record_scan(record, {"measured_centre_position": [cx, cy], "peak_significance": significance,
                                  "outcome": "scanned" if significance > 5 else "scanned_no_signal"})
        data.update(ce_centre=[cx, cy] if math.isfinite(cx) else None, significance=significance,
                    max_counts=float(ce.max()))
        if not significance > 5:
            found = None if searched else self.reacquire(plan, self._per_um, scan["exposure"], metadata)
            if found is not None:
                self.note_jump(self.track_drift(plan, found, self._per_um, **ids))
                again = self.plan_target(self._mapper, target["frame"], [target["x"], target["y"]],
                                         scan["half_width_um"])
                data.update(stage_target=again["target"], reacquired=True, **self.plan_data(again))
                self.move_to(again["target"])
                return self.scan_target(queue, target, token, again, data, label, searched=True)
            data["outcome"] = "scanned_no_signal"
            return self.finish(queue, target, token, "failed", "no_signal",
                               f"no Ce peak above 5 sigma (best {significance:.1f})", data, scan_s, label)
        self.note_jump(self.track_drift(plan, [cx, cy], self._per_um, **ids))
        data["outcome"] = "scanned"
        return self.finish(queue, target, token, "done", None, "", data, scan_s, label)

    def note_jump(self, update: dict | None) -> None:
        """A drift jump: re-align before the next target (``realign_due``)."""
        if update and update.get("jump"):
            self._realign_due = True

    def realign_due(self, queue) -> None:
        """After a drift jump, before claiming the next target: re-register to the camera; a
        registration in doubt pauses the queue and ends the loop, as the periodic check does."""
        if not getattr(self, "_realign_due", False):
            return
        self._realign_due = False
        try:
            self.realign(self._registration, self._camera_name, "drift_jump")
        except SmartMacroError as exc:
            queue.Pause(f"re-alignment after a drift jump failed: {exc}"[:480])
            raise

    def queue_call(self, queue, command: str, argument: dict, what: str) -> dict:
        """A QueueDS command that waits for a QueueDS that does not answer (being restarted)
        instead of giving up: a finished scan is never lost because the queue was away.
        A SMART_* refusal is raised at once (SmartMacroError)."""
        retry = FinishRetry()
        while True:
            try:
                return json.loads(queue.command_inout(command, json.dumps(argument)))
            except tango.DevFailed as exc:
                error = exc.args[0]
                if error.reason.startswith("SMART_"):
                    raise SmartMacroError(f"{error.reason}: {error.desc.strip()}") from None
                if not retry.again():
                    raise SmartMacroError(f"SMART_Failed: the queue {queue.dev_name()} has not answered {command} "
                                          f"for {retry.limit_s:.0f} s; a running target stays running and is "
                                          "scanned again by the next smart_run_queue") from None
                if retry.should_say():
                    self.warning(f"{what}: the queue does not answer {command} ({error.desc.strip()[:120]}); "
                                 "retrying")
                self.pause_for(retry.every_s)

    def finish(self, queue, target, token, outcome, kind, reason, data, duration_s, label) -> dict:
        """Finish the target; waits for a QueueDS that does not answer (restarting) instead of
        losing a finished scan. A claim taken over by someone else is reported and left alone."""
        self.report(queue, target, token, "finishing")
        if outcome != "done":
            self.event_log().write("failure", time.time(), 0.0, target_id=target["id"],
                                   particle=target.get("particle"), region=target.get("region"),
                                   outcome=outcome, failure_kind=kind,
                                   reason=reason,
                                   scan_file=data.get("scan_file") if data else None,
                                   scan_entry=data.get("scan_entry") if data else None)
        argument = {"id": target["id"], "token": token, "outcome": outcome, "reason": reason, "data": data}
        if kind:
            argument["kind"] = kind
        if duration_s is not None:
            argument["duration_s"] = duration_s
        try:
            reply = self.queue_call(queue, "Finish", argument, label)
        except SmartMacroError as exc:
            if "SMART_Failed" in str(exc):
                raise
            self.warning(f"{label}: the queue refused Finish: {exc}")
            return {"target": target, "stop": False}
        state = reply["target"]["state"]
        why = f": {reply['target']['reason']}" if reply["target"]["reason"] else ""
        self.output(f"{label}: {state}{why}")
        return reply

