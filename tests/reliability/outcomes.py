"""How one call is judged, and which known defect a failing call shows.

A reply is acceptable when it is a success, a ``DevFailed`` whose reason starts with
``SMART_``, or one of the Tango refusals the project documents (docs/interface.md): Tango
itself refuses some writes before the device sees them. A client-side refusal (pytango
cannot even encode the argument) never reached the device and is counted apart. A timeout is
a hang; any other reason is an answer without a ``SMART_`` reason. After every hostile call
the next valid call on the same device must succeed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import tango

DOCUMENTED_API_REFUSALS = {
    "API_WAttrOutsideLimit": "Tango refuses a write outside the attribute's limits, NaN or a wrong length "
                             "(docs/interface.md, Conventions)",
}
TIMEOUT_REASONS = ("API_DeviceTimedOut", "API_CorbaException", "API_CommunicationFailed")

OK, SMART, API, CLIENT, TIMEOUT, NOT_SMART = "ok", "smart_refusal", "api_refusal", "client_refusal", "timeout", \
    "not_smart"
ACCEPTABLE = (OK, SMART, API, CLIENT)


@dataclass
class Reply:
    outcome: str
    reason: str = ""
    desc: str = ""
    seconds: float = 0.0

    @property
    def acceptable(self) -> bool:
        return self.outcome in ACCEPTABLE


def judge(call: Callable[[], Any]) -> Reply:
    """Run one client call and classify what came back."""
    start = time.monotonic()
    try:
        call()
    except tango.DevFailed as exc:
        errors = exc.args
        reason = errors[0].reason if errors else ""
        desc = " | ".join(f"{e.reason}: {e.desc.strip()}" for e in errors[:3])[:400]
        seconds = time.monotonic() - start
        if reason.startswith("SMART_"):
            return Reply(SMART, reason, desc, seconds)
        if reason in DOCUMENTED_API_REFUSALS:
            return Reply(API, reason, desc, seconds)
        if any(r in (e.reason for e in errors) for r in TIMEOUT_REASONS) and "timeout" in desc.lower() \
                or reason == "API_DeviceTimedOut":
            return Reply(TIMEOUT, reason, desc, seconds)
        return Reply(NOT_SMART, reason, desc, seconds)
    except Exception as exc:  # noqa: BLE001 - raised in the client: the device never saw the call
        return Reply(CLIENT, type(exc).__name__, str(exc)[:300], time.monotonic() - start)
    return Reply(OK, seconds=time.monotonic() - start)


@dataclass
class CallRecord:
    """One hostile call and what followed it."""

    device: str
    target: str       # command or attribute name
    kind: str         # "command" | "write" | "corpus"
    argument: str     # repr, shortened
    reply: Reply
    next_valid: Reply
    recovered_by: str = ""   # how the device was brought back when the next valid call failed
    case: str = ""           # the hostile-corpus entry in the argument, if any
    defect: str = ""

    @property
    def failed(self) -> bool:
        return not self.reply.acceptable or self.next_valid.outcome != OK

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = self.failed
        return data


def non_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
        return False
    except UnicodeEncodeError:
        return True


KNOWN_DEFECTS = {
    1: "issue 16 item 1: a path that blocks (FIFO, /dev/zero) freezes the device",
    2: "issue 16 item 2: non-Latin-1 text poisons the device or fails without a SMART_ reason",
    3: "issue 16 item 3: an absurd setting is accepted and breaks the next call",
    4: "issue 16 item 4: concurrent calls are refused instead of waiting their turn",
}


def known_defect(record: CallRecord) -> str:
    """Which defect of issue 16 a failing record shows ('' if none of them explains it)."""
    if not record.failed:
        return ""
    arg = record.argument
    if record.case in ("fifo", "dev_zero"):
        return KNOWN_DEFECTS[1]
    if non_latin1(arg) or "\\u" in arg or "Unicode" in record.reply.desc or "Unicode" in record.next_valid.desc:
        return KNOWN_DEFECTS[2]
    if record.kind == "write" and record.reply.outcome == OK:
        return KNOWN_DEFECTS[3]
    return ""
