"""The QueueDS Tango shell: the night queue, read and steered over Tango (docs/queue.md).

Declares the public interface and delegates to :class:`~servers.QueueDS.queue.QueueCore`:
it parses each JSON argument with the models of :mod:`servers.QueueDS.args`, reads the other
devices the rules need (ParticleDS for ``AddParticles``/``AddCsv``, CoordMapperDS for frame
names and stage positions), maps errors to ``SMART_*``, and after every change pushes change
events for every queue attribute, so facility software and the GUI need no polling.

State: ``ON`` idle, ``RUNNING`` a target is claimed, ``STANDBY`` paused, ``FAULT`` the SQLite
file cannot be opened (every command refused, nothing overwritten).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tango
from tango import DevState
from tango.server import device_property

from servers.common.device_base import SmartDevice, smart_attribute, smart_command
from servers.common.errors import BadArgument, Failed, NotReady, SmartError
from servers.common.frames import STAGE
from servers.common.jsonargs import dumps, loads_object, parse_args
from servers.common.safefile import open_regular, run_with_time_limit
from servers.common.tango_client import devfailed_line, devfailed_reason
from servers.common.tango_glue import run_server, text_in
from servers.QueueDS import args as a
from servers.QueueDS.queue import Detection, QueueCore
from servers.QueueDS.results import QueueReply
from servers.QueueDS.store import QueueStore

log = logging.getLogger(__name__)

PROXY_TIMEOUT_MS = 3000
MAX_CSV_BYTES = 10_000_000
COUNT_ATTRIBUTES = {"Pending": "pending", "Running": "running", "Done": "done", "Failed": "failed",
                    "Skipped": "skipped"}
EVENT_ATTRIBUTES = ("Targets", *COUNT_ATTRIBUTES, "Counts", "CurrentTarget", "TimeLeft", "Paused", "PauseReason",
                    "Activity", "Policy", "Revision")
_NOTHING = object()


def database_path(data_dir: str, device_name: str) -> str:
    """``<DataDir>/<device name with / as _>.sqlite``: one file per device, found again after a restart."""
    return os.path.join(os.path.abspath(data_dir or "queue"), device_name.replace("/", "_") + ".sqlite")


class QueueDS(SmartDevice):
    """A persistent queue of targets for the night's scans (docs/queue.md)."""

    DataDir = device_property(dtype=str, default_value="queue",
                              doc="folder of the queue's SQLite file (relative: to the server's working directory)")
    Particles = device_property(dtype=str, default_value="", doc="ParticleDS read by AddParticles and AddCsv")
    Mapper = device_property(dtype=str, default_value="",
                             doc="CoordMapperDS: known frames, and stage positions for the automatic order")
    MaxAttempts = device_property(dtype=int, default_value=3, doc="tries of a target whose failures are retried")
    ClaimTimeout = device_property(dtype=float, default_value=120.0,
                                   doc="s without a report after which another worker may take a running target over")

    # ------------------------------------------------------------------ life
    def init_device(self) -> None:
        super().init_device()
        self._fault: str | None = None
        self._core: QueueCore | None = None
        self._pushed: dict[str, Any] = {}
        self._pushed_revision: int | None = None  # every event of this revision went out (_changed)
        path = database_path(str(self.DataDir), self.get_name())
        try:
            self._core = QueueCore(QueueStore(path), int(self.MaxAttempts), float(self.ClaimTimeout))
        except SmartError as exc:
            self._fault = f"{exc.desc}. Nothing was overwritten; fix or move the file and run Init"
            log.error("QueueDS: %s", self._fault)
        for name in EVENT_ATTRIBUTES:
            self.set_change_event(name, True, False)
        self.refresh_state()

    def delete_device(self) -> None:
        if self._core is not None:
            self._core.store.close()

    def refresh_state(self) -> None:
        """State and Status from the queue itself (another worker's claim changes them too)."""
        if self._fault:
            self.report(DevState.FAULT, f"FAULT: {self._fault}", only_changes=True)
            return
        if self._core is None:
            return
        core = self._core
        counts = core.counts()
        summary = ", ".join(f"{counts[s]} {s}" for s in a.STATES)
        if core.paused:
            self.report(DevState.STANDBY, f"paused ({core.pause_reason}); {summary}", only_changes=True)
        elif counts["running"]:
            activity = core.activity()
            self.report(DevState.RUNNING, f"running target {core.current().get('id')}: "
                        f"{activity.get('activity')} {activity.get('message', '')}; {summary}", only_changes=True)
        else:
            self.report(DevState.ON, f"idle; {summary}", only_changes=True)

    def _need(self) -> QueueCore:
        if self._core is None:
            raise Failed(self._fault or "the queue is not open")
        return self._core

    def _changed(self) -> None:
        """After a command: State/Status, and a change event for each queue attribute whose value
        changed (a loop's Report changes Activity only; facility software gets no repeats).

        Every change of the targets, the pause or the policy bumps ``Revision``; while it stands,
        only ``Activity`` can have changed. Reading the whole queue after every command instead (a
        loop sends five per target) made each command of a night slower than the one before:
        120 ms with 300 targets pending, 430 ms once they were done, on the loaded 2-core machine."""
        self.refresh_state()
        core = self._need()
        if self._pushed_revision == core.revision():
            values: dict[str, Any] = {"Activity": dumps(core.activity())}
        else:
            values = self._values()
        every_event_out = True
        for name in EVENT_ATTRIBUTES:
            if name not in values or self._pushed.get(name, _NOTHING) == values[name]:
                continue
            try:
                self.push_change_event(name, values[name])
                self._pushed[name] = values[name]
            except tango.DevFailed as exc:  # an event that cannot go out must not undo the change
                every_event_out = False
                log.warning("change event of %s not pushed: %s", name, devfailed_line(exc))
        if every_event_out and "Revision" in values:
            self._pushed_revision = values["Revision"]

    def _values(self) -> dict[str, Any]:
        core = self._need()
        counts = core.counts()
        values: dict[str, Any] = {attr: counts[key] for attr, key in COUNT_ATTRIBUTES.items()}
        values.update(Targets=core.targets_json(), Counts=dumps(counts), CurrentTarget=dumps(core.current()),
                      TimeLeft=core.time_left(), Paused=core.paused, PauseReason=core.pause_reason,
                      Activity=dumps(core.activity()), Policy=dumps(core.policy()), Revision=core.revision())
        return values

    def _detection(self) -> Detection:
        name = str(self.Particles).strip()
        if not name:
            raise NotReady("the Particles property (a ParticleDS) is not set; set it and run Init")
        try:
            device = self.proxies.get(name, PROXY_TIMEOUT_MS)
            values = [device.read_attribute(n).value for n in ("X", "Y", "Isolated")]
            source = json.loads(device.read_attribute("LastResult").value or "{}").get("source")
        except tango.DevFailed as exc:
            self.proxies.forget(name)
            reason = devfailed_reason(exc)
            if reason == "SMART_NotReady":
                raise NotReady(f"{name} has no detection: run smart_find_particles (Detect) first") from None
            raise Failed(f"{name} cannot be read ({devfailed_line(exc)})") from None
        x, y, isolated = (np.asarray(v if v is not None else [], t) for v, t in zip(values, (float, float, bool),
                                                                                     strict=True))
        return Detection(x.tolist(), y.tolist(), isolated.tolist(), source)

    def _frames(self) -> set[str] | None:
        name = str(self.Mapper).strip()
        if not name:
            return None
        try:
            return set(self.proxies.get(name, PROXY_TIMEOUT_MS).read_attribute("Frames").value or [])
        except tango.DevFailed as exc:
            self.proxies.forget(name)
            raise Failed(f"the mapper {name} cannot be read to check the frame "
                         f"({devfailed_line(exc)}); nothing was added") from None

    def _locate(self, targets: list[dict[str, Any]]) -> tuple[np.ndarray, str]:
        """Stage positions of ``targets`` through the mapper's Map, one call per frame."""
        name = str(self.Mapper).strip()
        points = np.zeros((len(targets), 2))
        unit = STAGE
        for frame in sorted({t["frame"] for t in targets}):
            rows = [i for i, t in enumerate(targets) if t["frame"] == frame]
            if frame == STAGE:
                points[rows] = [[targets[i]["x"], targets[i]["y"]] for i in rows]
                continue
            try:
                reply = json.loads(self.proxies.get(name, PROXY_TIMEOUT_MS).command_inout("Map", json.dumps(
                    {"from": frame, "to": STAGE, "points": [[targets[i]["x"], targets[i]["y"]] for i in rows]})))
            except tango.DevFailed as exc:
                raise NotReady(f"frame {frame} cannot be mapped to the stage ({devfailed_line(exc)}); "
                               "nothing was reordered") from None
            points[rows] = reply["points"]
            unit = reply.get("unit", unit)
        return points, unit

    def _locator(self) -> Any:
        return self._locate if str(self.Mapper).strip() else None

    def _read_csv(self, path: str) -> str:
        def read() -> str:
            with open_regular(path, "CSV file") as handle:
                data = handle.read(MAX_CSV_BYTES + 1)
            if len(data) > MAX_CSV_BYTES:
                raise BadArgument(f"{path} is larger than {MAX_CSV_BYTES} bytes")
            try:
                return data.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise BadArgument(f"{path} is not UTF-8 text") from None

        return run_with_time_limit(read, f"reading {path}")

    # ------------------------------------------------------------------ attributes
    @smart_attribute(dtype=str, unit="JSON", label="Targets", doc="every target in queue order (docs/queue.md)")
    def Targets(self) -> str:
        return self._need().targets_json()

    @smart_attribute(dtype=int, unit="count", label="Pending", doc="targets waiting")
    def Pending(self) -> int:
        return self._need().counts()["pending"]

    @smart_attribute(dtype=int, unit="count", label="Running", doc="targets claimed by the loop (0 or 1)")
    def Running(self) -> int:
        return self._need().counts()["running"]

    @smart_attribute(dtype=int, unit="count", label="Done", doc="targets whose scan finished")
    def Done(self) -> int:
        return self._need().counts()["done"]

    @smart_attribute(dtype=int, unit="count", label="Failed", doc="targets that failed (reason in Targets)")
    def Failed(self) -> int:
        return self._need().counts()["failed"]

    @smart_attribute(dtype=int, unit="count", label="Skipped", doc="targets skipped")
    def Skipped(self) -> int:
        return self._need().counts()["skipped"]

    @smart_attribute(dtype=str, unit="JSON", label="Counts", doc="{pending, running, done, failed, skipped, total}")
    def Counts(self) -> str:
        return dumps(self._need().counts())

    @smart_attribute(dtype=str, unit="JSON", label="Current target", doc="the running target, {} when none")
    def CurrentTarget(self) -> str:
        return dumps(self._need().current())

    @smart_attribute(dtype=float, unit="s", label="Time left", format="%.0f",
                     doc="estimated time for the pending and running targets")
    def TimeLeft(self) -> float:
        return self._need().time_left()

    @smart_attribute(dtype=bool, label="Paused", doc="true: no new target is handed out")
    def Paused(self) -> bool:
        return self._need().paused

    @smart_attribute(dtype=str, unit="text", label="Pause reason", doc="why the queue is paused; empty when not")
    def PauseReason(self) -> str:
        return self._need().pause_reason

    @smart_attribute(dtype=str, unit="JSON", label="Activity", doc="{activity, message, target, since} from the loop")
    def Activity(self) -> str:
        return dumps(self._need().activity())

    @smart_attribute(dtype=str, unit="JSON", label="Failure policy", doc="failure kind -> retry | skip | stop")
    def Policy(self) -> str:
        return dumps(self._need().policy())

    @smart_attribute(dtype=tango.DevLong64, unit="count", label="Revision", doc="+1 on every change of the queue")
    def Revision(self) -> int:
        return self._need().revision()

    # ------------------------------------------------------------------ commands
    def _run(self, work: Callable[[QueueCore], QueueReply]) -> str:
        reply = work(self._need())
        self._changed()
        return reply.to_json()

    @smart_command(dtype_in=str, dtype_out=str,
                   doc_in="JSON {particles: isolated|all|[indices], scan, frame?, region?, within?, skip_duplicates?}",
                   doc_out="JSON {added, duplicates, count}")
    def AddParticles(self, argin: str) -> str:
        parsed = parse_args(argin, a.AddParticlesArgs)
        a.parse_scan(parsed.scan)  # a bad scan is refused before the other devices are read
        return self._run(lambda core: core.add_particles(parsed, self._detection(), self._frames()))

    @smart_command(dtype_in=str, dtype_out=str, doc_in="JSON {points: [{frame, x, y, particle?, region?}], scan, "
                   "skip_duplicates?}", doc_out="JSON {added, duplicates, count}")
    def AddPoints(self, argin: str) -> str:
        parsed = parse_args(argin, a.AddPointsArgs)
        a.parse_scan(parsed.scan)
        return self._run(lambda core: core.add_points(parsed, self._frames()))

    @smart_command(dtype_in=str, dtype_out=str, doc_in="JSON {path, scan, frame?, skip_duplicates?}",
                   doc_out="JSON {added, duplicates, count}")
    def AddCsv(self, argin: str) -> str:
        parsed = parse_args(argin, a.AddCsvArgs)
        a.parse_scan(parsed.scan)
        text = self._read_csv(parsed.path)
        header = text.splitlines()[0].lower() if text.strip() else ""
        needs_detection = "particle" in header and not ("x" in header.split(",") and "y" in header.split(","))
        detection = self._detection() if needs_detection else None
        return self._run(lambda core: core.add_csv(parsed, text, detection, self._frames()))

    @smart_command(dtype_in=str, dtype_out=str, doc_in="JSON {ids}", doc_out="JSON {removed}")
    def Remove(self, argin: str) -> str:
        parsed = parse_args(argin, a.IdsArgs)
        return self._run(lambda core: core.remove(parsed))

    @smart_command(dtype_in=str, dtype_out=str, doc_in="JSON {id, scan?, region?}", doc_out="the target (JSON)")
    def Edit(self, argin: str) -> str:
        parsed = parse_args(argin, a.EditArgs)
        return self._run(lambda core: core.edit(parsed))

    @smart_command(dtype_in=str, dtype_out=str, doc_in="JSON {ids} or {auto: shortest, start?}",
                   doc_out="JSON {order, travel_before, travel_after, unit}")
    def Reorder(self, argin: str) -> str:
        parsed = parse_args(argin, a.ReorderArgs)
        return self._run(lambda core: core.reorder(parsed, self._locator()))

    @smart_command(dtype_in=str, doc_in="why (may be empty)")
    def Pause(self, argin: str) -> None:
        text = text_in(argin).strip()
        if len(text) > 500:
            raise BadArgument("the pause reason is longer than 500 characters")
        self._need().pause(text)
        self._changed()

    @smart_command
    def Resume(self) -> None:
        self._need().resume()
        self._changed()

    @smart_command(dtype_in=str, dtype_out=str, doc_in="JSON {ids, reason?}", doc_out="JSON {skipped, skip_requested}")
    def Skip(self, argin: str) -> str:
        parsed = parse_args(argin, a.SkipArgs)
        return self._run(lambda core: core.skip(parsed))

    @smart_command(dtype_in=str, dtype_out=str, doc_in="JSON {ids} or {failed: true, skipped?: true}",
                   doc_out="JSON {retried}")
    def Retry(self, argin: str) -> str:
        parsed = parse_args(argin, a.RetryArgs)
        return self._run(lambda core: core.retry(parsed))

    @smart_command(dtype_in=str, dtype_out=str, doc_in="JSON {states: [done|failed|skipped]}", doc_out="JSON {removed}")
    def Clear(self, argin: str) -> str:
        parsed = parse_args(argin, a.ClearArgs)
        return self._run(lambda core: core.clear(parsed))

    @smart_command(dtype_in=str, dtype_out=str, doc_in="JSON {failure kind: retry|skip|stop}",
                   doc_out="the whole policy")
    def SetPolicy(self, argin: str) -> str:
        parsed = loads_object(argin)
        return self._run(lambda core: core.set_policy(parsed))

    @smart_command(dtype_in=str, dtype_out=str, doc_in="JSON {worker}", doc_out="JSON {target, token, rerun, why}")
    def ClaimNext(self, argin: str) -> str:
        parsed = parse_args(argin, a.ClaimArgs)
        return self._run(lambda core: core.claim_next(parsed))

    @smart_command(dtype_in=str, dtype_out=str, doc_in="JSON {id, token, activity, message?}",
                   doc_out="JSON {skip, paused}")
    def Report(self, argin: str) -> str:
        parsed = parse_args(argin, a.ReportArgs)
        return self._run(lambda core: core.report(parsed))

    @smart_command(dtype_in=str, dtype_out=str, doc_in="JSON {id, token, outcome, kind?, reason?, data?, duration_s?}",
                   doc_out="JSON {target, stop}")
    def Finish(self, argin: str) -> str:
        parsed = parse_args(argin, a.FinishArgs)
        return self._run(lambda core: core.finish(parsed))

def main(argv: list[str] | None = None) -> int:
    return run_server([QueueDS], argv)


if __name__ == "__main__":
    raise SystemExit(main())
