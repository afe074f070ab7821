"""A small real Tango device with QueueDS's documented read interface (docs/queue.md), in memory:
what smart-gui's Queue tab reads (``Targets``, ``Counts``, ``CurrentTarget``, ``TimeLeft``,
``Paused``, ``PauseReason``, ``Activity``, ``Revision``) and the steering commands the queue
macros call (``Pause``, ``Resume``, ``Skip``). ``Load`` (test only) replaces the targets.

Tests of the tab's display that need no Sardana and no persistence use it; the real QueueDS,
its SQLite store and its macros are tested with the stack (tests/system/test_gui_queue.py)."""

from __future__ import annotations

import json

from tango import DevState
from tango.server import Device, attribute, command

STATES = ("pending", "running", "done", "failed", "skipped")


class QueueDouble(Device):
    """QueueDS's attributes and Pause / Resume / Skip over an in-memory list of targets."""

    def init_device(self) -> None:
        super().init_device()
        self._targets: list[dict] = []
        self._revision = 0
        self._paused = ""
        self._is_paused = False
        self._activity = {"activity": "idle", "message": "", "target": None, "since": ""}
        self.set_state(DevState.ON)

    def _changed(self) -> None:
        self._revision += 1
        running = any(t["state"] == "running" for t in self._targets)
        self.set_state(DevState.STANDBY if self._is_paused else DevState.RUNNING if running else DevState.ON)

    @attribute(dtype=str)
    def Targets(self) -> str:
        return json.dumps(self._targets)

    @attribute(dtype=str)
    def Counts(self) -> str:
        counts = {state: sum(t["state"] == state for t in self._targets) for state in STATES}
        return json.dumps({**counts, "total": len(self._targets)})

    @attribute(dtype=str)
    def CurrentTarget(self) -> str:
        return json.dumps(next((t for t in self._targets if t["state"] == "running"), {}))

    @attribute(dtype=float, unit="s")
    def TimeLeft(self) -> float:
        left = [t for t in self._targets if t["state"] in ("pending", "running")]
        return 12.5 * len(left)

    @attribute(dtype=bool)
    def Paused(self) -> bool:
        return self._is_paused

    @attribute(dtype=str)
    def PauseReason(self) -> str:
        return self._paused

    @attribute(dtype=str)
    def Activity(self) -> str:
        return json.dumps(self._activity)

    @attribute(dtype="DevLong64")
    def Revision(self) -> int:
        return self._revision

    @command(dtype_in=str)
    def Load(self, text: str) -> None:
        """Test only: the targets (QueueDS's Target objects) and the loop's activity."""
        data = json.loads(text)
        self._targets = data["targets"]
        self._activity = data.get("activity", self._activity)
        self._changed()

    @command(dtype_in=str)
    def Pause(self, reason: str) -> None:
        self._is_paused, self._paused = True, reason or "paused"
        self._changed()

    @command
    def Resume(self) -> None:
        self._is_paused, self._paused = False, ""
        self._changed()

    @command(dtype_in=str, dtype_out=str)
    def Skip(self, text: str) -> str:
        request = json.loads(text)
        skipped = []
        for target in self._targets:
            if target["id"] in request["ids"] and target["state"] == "pending":
                target.update(state="skipped", reason=request.get("reason", ""))
                skipped.append(target["id"])
        self._changed()
        return json.dumps({"skipped": skipped, "skip_requested": []})
