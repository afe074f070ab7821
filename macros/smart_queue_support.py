"""Plain helpers of the queue macros: the beam condition, Finish retries, the queue as text.

Kept apart from the macro classes so they are unit-tested without a MacroServer; only the
public Tango interface of other devices is used.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import tango

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
        self._reader = reader or _read_attribute

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


def _read_attribute(name: str) -> Any:
    attribute = tango.AttributeProxy(name)
    attribute.get_device_proxy().set_timeout_millis(3000)
    return attribute.read().value


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
