"""Plain helpers of the queue macros: the beam condition, Finish retries, the queue as text.

Kept apart from the macro classes so they are unit-tested without a MacroServer; only the
public Tango interface of other devices is used.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import tango

from macros.smart_calls import TangoThread, read_attribute

FINISH_RETRY_EVERY_S = 2.0
FINISH_RETRY_LIMIT_S = 600.0
"""How long the loop waits for a QueueDS that does not answer before it gives up (the target
then stays running and is scanned again by the next loop)."""


def scan_spec(half_width_um: float, step_um: float, exposure: float) -> dict[str, Any]:
    """The queue's scan specification of a mesh around each target."""
    return {"macro": "mesh", "half_width_um": float(half_width_um), "step_um": float(step_um),
            "exposure": float(exposure)}


def scan_files(scan_dir: Any, scan_file: Any) -> list[str]:
    """Where Sardana stored the scan: ScanDir joined with each ScanFile (a name or a list)."""
    if not scan_dir or not scan_file:
        return []
    names = [scan_file] if isinstance(scan_file, str) else list(scan_file)
    return [os.path.join(str(scan_dir), str(name)) for name in names]


class BeamCondition:
    """"Beam available": a Tango attribute read against a threshold (``SmartBeamCondition``).

    Anything but a finite number at or above ``min`` is "no beam": a ring current below
    threshold, an attribute that cannot be read, a value of the wrong type. No scan is taken
    on a doubt."""

    def __init__(self, attribute: str, minimum: float, poll_s: float = 2.0,
                 reader: Callable[[str], Any] | None = None) -> None:
        self.attribute = attribute
        self.minimum = float(minimum)
        self.poll_s = max(0.1, float(poll_s))
        self._reader = reader or read_attribute

    @classmethod
    def from_env(cls, value: Any) -> BeamCondition | None:
        """From the environment value ``{"attribute", "min", "poll_s"?}``; None when unset."""
        if value in (None, "", {}):
            return None
        if not isinstance(value, dict) or "attribute" not in value or "min" not in value:
            raise ValueError("SmartBeamCondition must be {'attribute': 'dev/name/attr', 'min': number, "
                             "'poll_s': number}")
        return cls(str(value["attribute"]), float(value["min"]), float(value.get("poll_s", 2.0)))

    def check(self) -> tuple[bool, str]:
        """(beam available, why) -- the reason names the attribute, its value and the threshold."""
        try:
            value = float(self._reader(self.attribute))
        except (tango.DevFailed, TypeError, ValueError) as exc:
            text = str(exc)
            if isinstance(exc, tango.DevFailed) and exc.args:
                text = (exc.args[0].desc.strip().splitlines() or [exc.args[0].reason or "DevFailed"])[0]
            return False, f"{self.attribute} cannot be read ({text})"
        if not math.isfinite(value):
            return False, f"{self.attribute} is {value}"
        if value < self.minimum:
            return False, f"{self.attribute} = {value:g}, below {self.minimum:g}"
        return True, f"{self.attribute} = {value:g}"


class FinishRetry:
    """Retry pacing for Finish while QueueDS does not answer: every ``every_s`` up to ``limit_s``,
    saying so every 30 s."""

    def __init__(self, every_s: float = FINISH_RETRY_EVERY_S, limit_s: float = FINISH_RETRY_LIMIT_S) -> None:
        self.every_s, self.limit_s = every_s, limit_s
        self._started = time.monotonic()
        self._said = -math.inf

    def again(self) -> bool:
        return time.monotonic() - self._started < self.limit_s

    def should_say(self) -> bool:
        now = time.monotonic()
        if now - self._said >= 30.0:
            self._said = now
            return True
        return False


def targets_text(targets: Sequence[dict[str, Any]]) -> list[str]:
    """The queue as lines for Spock and the CLI."""
    if not targets:
        return ["the queue is empty"]
    lines = [f"{'id':>5} {'state':<8} {'target':<28} {'scan':<26} {'tries':>5}  reason"]
    for t in targets:
        what = (f"particle {t['particle']}" if t.get("particle") is not None else "point") + \
            f" {t['frame']} ({t['x']:.1f}, {t['y']:.1f})"
        scan = t["scan"]
        spec = f"{scan['macro']} +-{scan['half_width_um']:g}/{scan['step_um']:g} um {scan['exposure']:g} s"
        state = t["state"] + ("*" if t.get("skip_requested") else "")
        lines.append(f"{t['id']:>5} {state:<8} {what:<28} {spec:<26} {t['attempts']:>5}  {t.get('reason') or ''}")
    return lines


def read_clock(attribute: str | None, reader: Callable[[str], Any] | None = None) -> float | None:
    """The ``SmartClock`` reading (s): a Tango attribute counting the night's seconds, e.g. the
    virtual beamline's simulated clock; None when unset or unreadable (the visit then has no
    ``started_sim_s``; nothing stops for it)."""
    if not attribute:
        return None
    try:
        value = float((reader or read_attribute)(str(attribute)))
    except (tango.DevFailed, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def queue_visit_row(target: dict[str, Any], data: dict[str, Any] | None, overhead_s: float | None) -> dict[str, Any]:
    """The visit log's row (``VISIT_COLUMNS``) of a finished queue target, from what the queue
    stored with ``Finish``: one row per finished target, like ``smart_scan_particles``' rows, plus
    its region, frame, target id and when its scan started (wall and ``SmartClock`` time)."""
    data = data or {}
    spot = data.get("stage_target") or [None, None]
    coarse = data.get("coarse_target") or spot
    centre = data.get("ce_centre") or [None, None]
    times = data.get("times") or {}
    state = target.get("state")
    message = target.get("reason") or ""
    if state == "done":
        outcome = data.get("outcome") or "scanned"
    elif state == "skipped":
        outcome = "skipped"
    else:  # failed, or back to pending to be tried again (policy retry)
        outcome = data.get("outcome") or target.get("failure_kind") or state or "unknown"
        if state == "pending":
            message = f"to be tried again: {message}" if message else "to be tried again"

    def number(value: Any) -> Any:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else ""

    return {"index": "" if target.get("particle") is None else int(target["particle"]),
            "sem_x_px": number(target.get("x")), "sem_y_px": number(target.get("y")),
            "coarse_x": number(coarse[0]), "coarse_y": number(coarse[1]),
            "target_x": number(spot[0]), "target_y": number(spot[1]),
            "ce_center_x": number(centre[0]), "ce_center_y": number(centre[1]),
            "outcome": outcome, "scan_s": number(times.get("scan_s")),
            "overhead_s": number(overhead_s), "finished_at": target.get("finished_at") or "",
            "message": message, "scan_file": data.get("scan_file") or "",
            "scan_entry": data.get("scan_entry") or "", "region": target.get("region") or "",
            "frame": target.get("frame") or "", "target_id": target.get("id", ""),
            "mapped_x": number((data.get("mapped_target") or [None, None])[0]),
            "mapped_y": number((data.get("mapped_target") or [None, None])[1]),
            "half_width_um": number(data.get("half_width_um")),
            "exposing_fraction": number(data.get("exposing_fraction")),
            "started_at": _epoch_text(data.get("started_at")), "started_sim_s": number(data.get("started_sim_s"))}


def _epoch_text(value: Any) -> str:
    """Epoch seconds to the millisecond (the log's 9 significant digits would round them to 10 s)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{float(value):.3f}"
    return ""


class BeamWatch:
    """Watches the beam condition while a scan runs (a thread reading it every ``period_s``):
    a loss that begins and ends within one scan is not seen by the checks before and after it,
    yet the scan's points taken meanwhile have no signal. ``lost`` says why, or is empty.

    Leaving the block reads the beam once more, at the moment the scan ends: the caller's own
    check comes only after the scan is recorded, and a loss in the scan's last ``period_s`` that
    is over by then would otherwise go unseen."""

    def __init__(self, beam: BeamCondition | None, period_s: float = 0.1) -> None:
        self.beam, self.period_s = beam, period_s
        self.lost = ""
        self._stop = threading.Event()
        self._thread = TangoThread(target=self._watch, daemon=True, name="smart-beam-watch")

    def __enter__(self) -> BeamWatch:
        if self.beam is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.beam is not None and not self.lost:
            ok, why = self.beam.check()
            if not ok:
                self.lost = f"as the scan ended: {why}"

    def _watch(self) -> None:
        while not self.lost and not self._stop.wait(self.period_s):
            ok, why = self.beam.check()
            if not ok:
                self.lost = why
