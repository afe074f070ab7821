"""What QueueCore's commands return: a frozen dataclass per command.

Why: the replies were dicts written inline at each ``return``; a dataclass names each reply's
fields once, with their types, and cannot be changed after the core made it (a ``Finish``
reply is also stored, to answer a retried ``Finish`` with the very same text).
:meth:`as_dict` is the reply's JSON object, keys in the order of docs/queue.md, and
:meth:`to_json` what the shell sends. A target itself stays a JSON object (``PUBLIC_FIELDS``
of :mod:`servers.QueueDS.queue`): it is a row of the queue's file, the same shape in
``Targets``, ``CurrentTarget`` and the replies that carry one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from servers.common.json_result import JsonResult

Target = dict[str, Any]
"""One target as clients see it (``queue.public``)."""


class QueueReply(JsonResult):
    """A QueueDS command's reply (the shell sends its :meth:`to_json`)."""


@dataclass(frozen=True)
class Added(QueueReply):
    """AddParticles, AddPoints, AddCsv: the new target ids, what was left out as already queued
    (a particle index, or ``[x, y]`` of a point), and how many were added."""

    added: tuple[int, ...]
    duplicates: tuple[int | tuple[float, float], ...]

    @property
    def count(self) -> int:
        return len(self.added)

    def as_dict(self) -> dict[str, Any]:
        return {"added": list(self.added),
                "duplicates": [list(d) if isinstance(d, tuple) else d for d in self.duplicates],
                "count": self.count}


@dataclass(frozen=True)
class Removed(QueueReply):
    """Remove: the ids removed."""

    removed: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"removed": list(self.removed)}


@dataclass(frozen=True)
class Cleared(QueueReply):
    """Clear: how many targets were removed."""

    removed: int

    def as_dict(self) -> dict[str, Any]:
        return {"removed": self.removed}


@dataclass(frozen=True)
class Edited(QueueReply):
    """Edit: the target as it is now."""

    target: Target

    def as_dict(self) -> dict[str, Any]:
        return dict(self.target)


@dataclass(frozen=True)
class Reordered(QueueReply):
    """Reorder: the pending ids in their new order; for ``auto``, the stage travel before and
    after (in ``unit``), None for an order given by ``ids``."""

    order: tuple[int, ...]
    travel_before: float | None
    travel_after: float | None
    unit: str

    def as_dict(self) -> dict[str, Any]:
        return {"order": list(self.order), "travel_before": self.travel_before, "travel_after": self.travel_after,
                "unit": self.unit}


@dataclass(frozen=True)
class Skipped(QueueReply):
    """Skip: pending targets skipped now, and running ones asked to stop at their next Report."""

    skipped: tuple[int, ...]
    skip_requested: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"skipped": list(self.skipped), "skip_requested": list(self.skip_requested)}


@dataclass(frozen=True)
class Retried(QueueReply):
    """Retry: the targets made pending again."""

    retried: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"retried": list(self.retried)}


@dataclass(frozen=True)
class PolicyTable(QueueReply):
    """SetPolicy: the whole policy now, failure kind -> retry | skip | stop."""

    policy: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.policy)


@dataclass(frozen=True)
class Claim(QueueReply):
    """ClaimNext: the target to run with its claim ``token`` (``rerun`` when an interrupted one
    is run again), or none and ``why`` (``paused``, ``empty``)."""

    target: Target | None
    token: str | None
    rerun: bool
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {"target": None if self.target is None else dict(self.target), "token": self.token,
                "rerun": self.rerun, "why": self.why}


@dataclass(frozen=True)
class ReportAnswer(QueueReply):
    """Report: whether the running target is to be skipped, and whether the queue is paused."""

    skip: bool
    paused: bool

    def as_dict(self) -> dict[str, Any]:
        return {"skip": self.skip, "paused": self.paused}


@dataclass(frozen=True)
class Finished(QueueReply):
    """Finish: the target as it ended, and whether the loop is to stop (policy ``stop``)."""

    target: Target
    stop: bool

    def as_dict(self) -> dict[str, Any]:
        return {"target": dict(self.target), "stop": self.stop}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Finished:
        """The reply stored with the target, for a retried Finish."""
        return cls(dict(stored["target"]), bool(stored["stop"]))
