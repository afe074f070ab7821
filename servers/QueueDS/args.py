"""Argument models of the QueueDS commands (docs/queue.md, "Device interface").

Everything a caller can get wrong in the *shape* of an argument is declared here and refused
with the key named before the queue is touched; what depends on the stored queue (unknown
ids, duplicates, running targets) or on other devices (unknown particles, frames) is checked
by :mod:`servers.QueueDS.queue`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from servers.common.errors import BadArgument
from servers.common.jsonargs import StrictArgs, _describe

NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Ids = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=100_000)]
Box = Annotated[list[float], Field(min_length=4, max_length=4)]
Point = Annotated[list[float], Field(min_length=2, max_length=2)]
Coordinate = Annotated[float, Field(ge=-1e9, le=1e9)]

STATES = ("pending", "running", "done", "failed", "skipped")
FINAL_STATES = ("done", "failed", "skipped")
FAILURE_KINDS = ("outside_limits", "no_signal", "scan_error", "beam_lost", "move_error", "drift", "other")
Action = Literal["retry", "skip", "stop"]
DEFAULT_POLICY: dict[str, str] = {"outside_limits": "skip", "no_signal": "skip", "scan_error": "retry",
                                  "beam_lost": "retry", "move_error": "stop", "drift": "stop", "other": "stop"}
MAX_MESH_POINTS = 201 * 201
ACTIVITIES = ("idle", "claimed", "waiting_for_beam", "moving", "scanning", "finishing")


class MeshScan(StrictArgs):
    """Sardana ``mesh`` centred on the target: (2 half_width / step + 1)^2 points."""

    macro: Literal["mesh"]
    half_width_um: float = Field(gt=0, le=50)
    step_um: float = Field(gt=0)
    exposure: float = Field(gt=0, le=60)

    def points(self) -> int:
        intervals = max(1, int(math.ceil(2 * self.half_width_um / self.step_um - 1e-9)))
        return (intervals + 1) ** 2


SCAN_MACROS: dict[str, type[MeshScan]] = {"mesh": MeshScan}
"""The scan macros the queue loop knows how to build around a target."""


def parse_scan(value: Any) -> dict[str, Any]:
    """A validated scan specification (a plain dict), or :class:`BadArgument` saying what is wrong."""
    if not isinstance(value, dict):
        raise BadArgument("'scan' must be an object such as {\"macro\": \"mesh\", \"half_width_um\": 0.3, "
                          "\"step_um\": 0.05, \"exposure\": 0.01}")
    macro = value.get("macro")
    model = SCAN_MACROS.get(macro) if isinstance(macro, str) else None
    if model is None:
        raise BadArgument(f"unknown scan macro {macro!r}; the queue loop knows: {', '.join(SCAN_MACROS)}")
    try:
        scan = model.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors()[:5])
        raise BadArgument(f"bad scan for {macro}: {problems} (parameters: "
                          f"{', '.join(k for k in model.model_fields if k != 'macro')})") from None
    if scan.step_um > 2 * scan.half_width_um:
        raise BadArgument(f"scan step {scan.step_um:g} um is larger than the scan width "
                          f"{2 * scan.half_width_um:g} um")
    if scan.points() > MAX_MESH_POINTS:
        raise BadArgument(f"the scan has {scan.points()} points, more than {MAX_MESH_POINTS}; "
                          "use a larger step or a smaller half width")
    return scan.model_dump()


class _AddCommon(StrictArgs):
    scan: dict[str, Any]
    skip_duplicates: bool = False


class AddParticlesArgs(_AddCommon):
    particles: Literal["isolated", "all"] | Annotated[list[Annotated[int, Field(ge=0)]],
                                                       Field(min_length=1, max_length=100_000)]
    frame: Name = "sem"
    region: Name | None = None
    within: Box | None = None


class PointArg(StrictArgs):
    frame: Name
    x: Coordinate
    y: Coordinate
    particle: Annotated[int, Field(ge=0)] | None = None
    region: Name | None = None


class AddPointsArgs(_AddCommon):
    points: Annotated[list[PointArg], Field(min_length=1, max_length=100_000)]


class AddCsvArgs(_AddCommon):
    path: Annotated[str, Field(min_length=1, max_length=4096)]
    frame: Name = "sem"


class IdsArgs(StrictArgs):
    ids: Ids


class EditArgs(StrictArgs):
    id: Annotated[int, Field(ge=0)]
    scan: dict[str, Any] | None = None
    region: Name | None = None


class ReorderArgs(StrictArgs):
    ids: Ids | None = None
    auto: Literal["shortest"] | None = None
    start: Point | None = None


class SkipArgs(StrictArgs):
    ids: Ids
    reason: Annotated[str, Field(max_length=500)] = ""


class RetryArgs(StrictArgs):
    ids: Ids | None = None
    failed: bool = False
    skipped: bool = False


class ClearArgs(StrictArgs):
    states: Annotated[list[Literal["done", "failed", "skipped"]], Field(min_length=1, max_length=3)]


class ClaimArgs(StrictArgs):
    worker: Annotated[str, Field(min_length=1, max_length=200)]


class ReportArgs(StrictArgs):
    id: Annotated[int, Field(ge=0)]
    token: Annotated[str, Field(min_length=1, max_length=64)]
    activity: Literal["claimed", "waiting_for_beam", "moving", "scanning", "finishing"]
    message: Annotated[str, Field(max_length=1000)] = ""


class FinishArgs(StrictArgs):
    id: Annotated[int, Field(ge=0)]
    token: Annotated[str, Field(min_length=1, max_length=64)]
    outcome: Literal["done", "failed", "skipped"]
    kind: Literal["outside_limits", "no_signal", "scan_error", "beam_lost", "move_error", "drift",
                  "other"] | None = None
    reason: Annotated[str, Field(max_length=2000)] = ""
    data: dict[str, Any] = Field(default_factory=dict)
    duration_s: Annotated[float, Field(ge=0, le=1e7)] | None = None
