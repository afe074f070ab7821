"""The rules of the night queue, free of Tango: what each command may change, and how.

Every command runs in one store transaction, so a refused command (``SmartError``) changes
nothing, and an answered one is on disk. The shell (device.py) reads the other devices (the
detection of ParticleDS, the frames and stage positions of CoordMapperDS) and hands them in
as plain values, so these rules are unit-tested without a control system.

Exactly once: a target is ``done`` only through :meth:`QueueCore.finish` with the token of
its claim, which the loop calls after its scan returned; a ``running`` target whose loop died
is handed out again by :meth:`QueueCore.claim_next` (its scan is repeated). See docs/queue.md.
Each command returns a frozen reply of :mod:`servers.QueueDS.results` (``to_json()`` is what
the shell sends); the readings (``targets``, ``counts``, ``policy``, ...) are JSON-shaped values.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from servers.common.errors import BadArgument, NotFound, NotReady
from servers.common.frames import ALWAYS_THERE, STAGE
from servers.common.jsonargs import dumps
from servers.QueueDS import args as a
from servers.QueueDS.order import path_length, shortest_order
from servers.QueueDS.results import (
    Added,
    Claim,
    Cleared,
    Edited,
    Finished,
    PolicyTable,
    Removed,
    Reordered,
    ReportAnswer,
    Retried,
    Skipped,
)
from servers.QueueDS.store import QueueStore

DUPLICATE_TOLERANCE = 0.01
"""Two targets closer than this (frame units: px or stage units) in the same frame, with the same
scan, are the same target."""
SECONDS_PER_POINT_OVERHEAD = 0.05
"""Per-point dead time assumed before any target has been measured (motion, readout)."""
ESTIMATE_FROM_LAST = 20
PUBLIC_FIELDS = ("id", "position", "frame", "x", "y", "particle", "region", "source", "scan", "state", "reason",
                 "failure_kind", "attempts", "added_at", "started_at", "finished_at", "worker", "skip_requested",
                 "data", "duration_s")


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Detection:
    """The current result of ParticleDS: positions (reference px), isolation, image."""

    x: Sequence[float]
    y: Sequence[float]
    isolated: Sequence[bool]
    source: str | None


Locator = Callable[[list[dict[str, Any]]], tuple[np.ndarray, str]]
"""Stage positions (n x 2) and unit of the given targets, for automatic ordering."""


def public(target: dict[str, Any]) -> dict[str, Any]:
    """A target as clients see it: no claim token."""
    return {key: target.get(key) for key in PUBLIC_FIELDS}


def _scan_key(scan: dict[str, Any]) -> str:
    return json.dumps(scan, sort_keys=True)


@functools.lru_cache(maxsize=256)
def _mesh(scan_key: str) -> a.MeshScan:
    """A target's scan as the model (the targets of a night share a few scans: validated once)."""
    return a.MeshScan.model_validate(json.loads(scan_key))


class QueueCore:
    """The queue's commands over a :class:`QueueStore`."""

    def __init__(self, store: QueueStore, max_attempts: int = 3, claim_timeout_s: float = 120.0) -> None:
        self.store = store
        self.max_attempts = max(1, int(max_attempts))
        self.claim_timeout_s = float(claim_timeout_s)
        self._encoded: dict[int, tuple[tuple[Any, ...], str]] = {}  # targets_json: id -> (row, JSON)

    # ------------------------------------------------------------- reading
    def targets(self) -> list[dict[str, Any]]:
        return [public(t) for t in self.store.targets()]

    def targets_json(self) -> str:
        """``targets()`` as JSON text, each target encoded again only when its row changed: a
        night's finished targets carry kilobytes of data each, and ``Targets`` goes out after every
        claim and finish (decoding and encoding them all took 140 ms with 300 done on the loaded
        2-core machine)."""
        encoded: dict[int, tuple[tuple[Any, ...], str]] = {}
        for row in self.store.rows():
            key = tuple(row)
            known = self._encoded.get(row["id"])
            text = known[1] if known is not None and known[0] == key else dumps(public(QueueStore.row_dict(row)))
            encoded[row["id"]] = (key, text)
        self._encoded = encoded
        return "[" + ", ".join(text for _, text in encoded.values()) + "]"

    def counts(self) -> dict[str, int]:
        stored = self.store.state_counts()
        counts = {state: stored.get(state, 0) for state in a.STATES}
        counts["total"] = sum(counts.values())
        return counts

    def current(self) -> dict[str, Any]:
        running = self.store.targets(("running",))
        return public(running[0]) if running else {}

    @property
    def paused(self) -> bool:
        return bool(self.store.meta("paused", False))

    @property
    def pause_reason(self) -> str:
        return str(self.store.meta("pause_reason", "")) if self.paused else ""

    def policy(self) -> dict[str, str]:
        return {**a.DEFAULT_POLICY, **(self.store.meta("policy", {}) or {})}

    def activity(self) -> dict[str, Any]:
        return self.store.meta("activity", None) or {"activity": "idle", "message": "", "target": None,
                                                      "since": None}

    def revision(self) -> int:
        return int(self.store.meta("revision", 0))

    def seconds_per_point(self, exposure: float) -> float:
        rates = [duration / _mesh(_scan_key(json.loads(scan))).points()
                 for duration, scan in self.store.last_durations(ESTIMATE_FROM_LAST)]
        return float(np.mean(rates)) if rates else exposure + SECONDS_PER_POINT_OVERHEAD

    def time_left(self) -> float:
        """Seconds for the pending and running targets (docs/queue.md, TimeLeft)."""
        total = 0.0
        measured = self.seconds_per_point(0.0) if self.store.state_counts().get("done") else None
        for target in self.store.targets(("pending", "running")):
            scan = _mesh(_scan_key(target["scan"]))
            rate = measured if measured is not None else scan.exposure + SECONDS_PER_POINT_OVERHEAD
            total += scan.points() * rate
        return total

    # ------------------------------------------------------------- helpers
    def _bump(self, db: sqlite3.Connection) -> None:
        self.store.set_meta(db, "revision", self.revision() + 1)

    def _get(self, target_id: int) -> dict[str, Any]:
        target = self.store.target(target_id)
        if target is None:
            raise NotFound(f"no target {target_id} in the queue (see the Targets attribute)")
        return target

    def _check_frame(self, frame: str, frames: set[str] | None) -> None:
        if frames is not None and frame not in frames and frame not in ALWAYS_THERE:
            raise NotFound(f"unknown frame '{frame}': the mapper knows {', '.join(sorted(frames)) or 'none'} "
                           "(plus stage and camera); register the reference first (smart_register)")

    def _add(self, rows: list[dict[str, Any]], scan: dict[str, Any], skip_duplicates: bool) -> Added:
        """Insert ``rows`` (frame, x, y, particle, region, source) with ``scan``; duplicates refused
        (or left out with ``skip_duplicates``), all in one transaction."""
        key = _scan_key(scan)
        cells: dict[tuple[str, str, int, int], list[tuple[float, float, int]]] = {}

        def cell(frame: str, x: float, y: float) -> tuple[str, str, int, int]:
            return frame, key, int(math.floor(x / DUPLICATE_TOLERANCE)), int(math.floor(y / DUPLICATE_TOLERANCE))

        def find(frame: str, x: float, y: float) -> int | None:
            f, k, cx, cy = cell(frame, x, y)
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    for ox, oy, oid in cells.get((f, k, cx + dx, cy + dy), []):
                        if abs(ox - x) <= DUPLICATE_TOLERANCE and abs(oy - y) <= DUPLICATE_TOLERANCE:
                            return oid
            return None

        for target in self.store.targets():
            if _scan_key(target["scan"]) == key:
                cells.setdefault(cell(target["frame"], target["x"], target["y"]), []).append(
                    (target["x"], target["y"], target["id"]))
        added: list[int] = []
        duplicates: list[int | tuple[float, float]] = []
        with self.store.transaction() as db:
            position = db.execute("SELECT COALESCE(MAX(position), -1) FROM targets").fetchone()[0] + 1
            for row in rows:
                same = find(row["frame"], row["x"], row["y"])
                if same is not None:
                    what = f"particle {row['particle']}" if row.get("particle") is not None else \
                        f"{row['frame']} ({row['x']:g}, {row['y']:g})"
                    if not skip_duplicates:
                        raise BadArgument(f"{what} with this scan is already in the queue "
                                          f"({'target ' + str(same) if same >= 0 else 'twice in this request'}); "
                                          "nothing was added. Leave it out, or pass skip_duplicates")
                    duplicates.append(row["particle"] if row.get("particle") is not None else (row["x"], row["y"]))
                    continue
                target_id = self.store.insert(db, {
                    "position": position, "frame": row["frame"], "x": float(row["x"]), "y": float(row["y"]),
                    "particle": row.get("particle"), "region": row.get("region") or row["frame"],
                    "source": row.get("source"), "scan": scan, "state": "pending", "reason": "", "attempts": 0,
                    "added_at": utc_now(), "data": {}})
                cells.setdefault(cell(row["frame"], row["x"], row["y"]), []).append((row["x"], row["y"], -1))
                added.append(target_id)
                position += 1
            if added:
                self._bump(db)
        return Added(tuple(added), tuple(duplicates))

    @staticmethod
    def _particle_rows(detection: Detection | None, indices: Sequence[int], frame: str,
                       region: str | None) -> list[dict[str, Any]]:
        if detection is None or len(detection.x) == 0:
            raise NotReady("ParticleDS has no detection: run smart_find_particles (Detect) first")
        count = len(detection.x)
        for index in indices:
            if not 0 <= index < count:
                raise NotFound(f"no particle {index}: the current detection has {count} (0..{count - 1}); "
                               "nothing was added")
        return [{"frame": frame, "x": float(detection.x[i]), "y": float(detection.y[i]), "particle": int(i),
                 "region": region, "source": detection.source} for i in indices]

    # ------------------------------------------------------------- adding
    def add_particles(self, args: a.AddParticlesArgs, detection: Detection | None,
                      frames: set[str] | None) -> Added:
        scan = a.parse_scan(args.scan)
        self._check_frame(args.frame, frames)
        if detection is None or len(detection.x) == 0:
            raise NotReady("ParticleDS has no detection: run smart_find_particles (Detect) first")
        count = len(detection.x)
        if args.particles == "isolated":
            indices = [i for i in range(count) if detection.isolated[i]]
        elif args.particles == "all":
            indices = list(range(count))
        else:
            indices = list(args.particles)
        if args.within is not None:
            x0, y0, x1, y1 = args.within
            lo_x, hi_x, lo_y, hi_y = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
            indices = [i for i in indices if 0 <= i < count and lo_x <= detection.x[i] <= hi_x
                       and lo_y <= detection.y[i] <= hi_y] if args.particles in ("isolated", "all") else indices
            if not isinstance(args.particles, str):
                outside = [i for i in indices if 0 <= i < count and not (
                    lo_x <= detection.x[i] <= hi_x and lo_y <= detection.y[i] <= hi_y)]
                if outside:
                    raise BadArgument(f"particles {outside} lie outside 'within'; nothing was added")
        rows = self._particle_rows(detection, indices, args.frame, args.region)
        if not rows:
            raise NotFound(f"no {args.particles} particle in the current detection"
                           + (" within the given box" if args.within else "") + "; nothing was added")
        return self._add(rows, scan, args.skip_duplicates)

    def add_points(self, args: a.AddPointsArgs, frames: set[str] | None) -> Added:
        scan = a.parse_scan(args.scan)
        for point in args.points:
            self._check_frame(point.frame, frames)
        rows = [{"frame": p.frame, "x": p.x, "y": p.y, "particle": p.particle, "region": p.region}
                for p in args.points]
        return self._add(rows, scan, args.skip_duplicates)

    def add_csv(self, args: a.AddCsvArgs, text: str, detection: Detection | None,
                frames: set[str] | None) -> Added:
        """Rows of a CSV file: a ``particle`` column (indices into the current detection) or
        ``x``, ``y`` columns (with an optional ``frame``); an optional ``region``."""
        scan = a.parse_scan(args.scan)
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        if not header:
            raise BadArgument(f"{args.path} is empty: the first line must name the columns (particle, or x,y)")
        known = {"particle", "x", "y", "frame", "region"}
        unknown = [h for h in header if h not in known]
        if unknown:
            raise BadArgument(f"{args.path}: unknown column(s) {', '.join(unknown)}; columns are particle, or x "
                              "and y (with frame); region is optional")
        by_points = "x" in header and "y" in header
        if not by_points and "particle" not in header:
            raise BadArgument(f"{args.path}: needs a 'particle' column or 'x' and 'y' columns")
        rows: list[dict[str, Any]] = []
        for line_no, raw in enumerate(reader, start=2):
            record = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not any(record.values()):
                continue
            region = record.get("region") or None
            if region is not None and not re.fullmatch(a.NAME_PATTERN, region):
                raise BadArgument(f"{args.path} line {line_no}: region '{region}' must be 1-64 characters of "
                                  "A-Z a-z 0-9 _ . -")
            try:
                if by_points:
                    frame = record.get("frame") or args.frame
                    x, y = float(record["x"]), float(record["y"])
                    if not (math.isfinite(x) and math.isfinite(y)):
                        raise ValueError("not finite")
                    self._check_frame(frame, frames)
                    particle = int(record["particle"]) if record.get("particle") else None
                    rows.append({"frame": frame, "x": x, "y": y, "particle": particle, "region": region})
                else:
                    index = int(record["particle"])
                    rows.extend(self._particle_rows(detection, [index], args.frame, region))
            except (ValueError, TypeError) as exc:
                raise BadArgument(f"{args.path} line {line_no}: {exc}; nothing was added") from None
            except (NotFound, NotReady) as exc:
                raise type(exc)(f"{args.path} line {line_no}: {exc.desc}") from None
        if not rows:
            raise BadArgument(f"{args.path} holds no target rows; nothing was added")
        return self._add(rows, scan, args.skip_duplicates)

    # ------------------------------------------------------------- editing
    def _editable(self, target: dict[str, Any], what: str) -> None:
        if target["state"] == "running":
            raise NotReady(f"target {target['id']} is running and cannot be {what}; Skip it, or wait until it "
                           "finishes. Nothing was changed")
        if target["state"] == "done":
            raise NotReady(f"target {target['id']} is done and cannot be {what}: its scan is part of the night's "
                           "record. Nothing was changed")

    def remove(self, args: a.IdsArgs) -> Removed:
        targets = [self._get(i) for i in dict.fromkeys(args.ids)]
        for target in targets:
            self._editable(target, "removed")
        with self.store.transaction() as db:
            self.store.delete(db, [t["id"] for t in targets])
            self._bump(db)
        return Removed(tuple(t["id"] for t in targets))

    def edit(self, args: a.EditArgs) -> Edited:
        target = self._get(args.id)
        self._editable(target, "edited")
        if args.scan is None and args.region is None:
            raise BadArgument("Edit needs 'scan' and/or 'region'")
        changes: dict[str, Any] = {}
        if args.scan is not None:
            changes["scan"] = a.parse_scan(args.scan)
            key = _scan_key(changes["scan"])
            for other in self.store.targets():
                if other["id"] != target["id"] and other["frame"] == target["frame"] and \
                        _scan_key(other["scan"]) == key and abs(other["x"] - target["x"]) <= DUPLICATE_TOLERANCE \
                        and abs(other["y"] - target["y"]) <= DUPLICATE_TOLERANCE:
                    raise BadArgument(f"target {other['id']} already has this point and scan; nothing was changed")
        if args.region is not None:
            changes["region"] = args.region
        with self.store.transaction() as db:
            self.store.update(db, target["id"], **changes)
            self._bump(db)
        return Edited(public(self._get(target["id"])))

    def reorder(self, args: a.ReorderArgs, locate: Locator | None) -> Reordered:
        if (args.ids is None) == (args.auto is None):
            raise BadArgument("Reorder takes either 'ids' (the new order) or 'auto': 'shortest'")
        if args.start is not None and args.auto is None:
            raise BadArgument("'start' goes with 'auto'")
        everything = self.store.targets()
        pending = [t for t in everything if t["state"] == "pending"]
        by_id = {t["id"]: t for t in everything}
        if args.ids is not None:
            if len(set(args.ids)) != len(args.ids):
                raise BadArgument("an id is listed twice in 'ids'; nothing was changed")
            for target_id in args.ids:
                if target_id not in by_id:
                    raise NotFound(f"no target {target_id} in the queue; nothing was changed")
                if by_id[target_id]["state"] != "pending":
                    raise NotReady(f"target {target_id} is {by_id[target_id]['state']}: only pending targets can be "
                                   "reordered; nothing was changed")
            listed = set(args.ids)
            new = [by_id[i] for i in args.ids] + [t for t in pending if t["id"] not in listed]
            before = after = None
            unit = ""
        else:
            if len(pending) < 2:
                return Reordered(tuple(t["id"] for t in pending), 0.0, 0.0, "")
            anchor = [t for t in everything if t["state"] == "running"] or sorted(
                (t for t in everything if t["state"] == "done"), key=lambda t: t.get("finished_at") or "")[-1:]
            points, unit = self._locate(pending + anchor[:1], locate)
            start = np.asarray(args.start, float) if args.start is not None else (
                points[-1] if anchor else None)
            points = points[:len(pending)]
            route = shortest_order(points, start)
            before = path_length(points, list(range(len(pending))), start)
            after = path_length(points, route, start)
            new = [pending[i] for i in route]
        slots = sorted(t["position"] for t in pending)
        with self.store.transaction() as db:
            for slot, target in zip(slots, new, strict=True):
                self.store.update(db, target["id"], position=slot)
            self._bump(db)
        return Reordered(tuple(t["id"] for t in new), None if before is None else float(before),
                         None if after is None else float(after), unit)

    @staticmethod
    def _locate(targets: list[dict[str, Any]], locate: Locator | None) -> tuple[np.ndarray, str]:
        if locate is not None:
            return locate(targets)
        frames = {t["frame"] for t in targets}
        if len(frames) > 1:
            raise NotReady(f"the targets lie in several frames ({', '.join(sorted(frames))}): ordering them needs "
                           "the Mapper property (a CoordMapperDS) to put them on the stage")
        return np.array([[t["x"], t["y"]] for t in targets], float), "px" if STAGE not in frames else STAGE

    def pause(self, reason: str) -> None:
        with self.store.transaction() as db:
            self.store.set_meta(db, "paused", True)
            self.store.set_meta(db, "pause_reason", reason or f"paused at {utc_now()}")
            self._bump(db)

    def resume(self) -> None:
        with self.store.transaction() as db:
            self.store.set_meta(db, "paused", False)
            self.store.set_meta(db, "pause_reason", "")
            self._bump(db)

    def skip(self, args: a.SkipArgs) -> Skipped:
        targets = [self._get(i) for i in dict.fromkeys(args.ids)]
        for target in targets:
            if target["state"] not in ("pending", "running"):
                raise NotReady(f"target {target['id']} is {target['state']}; only pending or running targets can be "
                               "skipped. Nothing was changed")
        reason = args.reason or "skipped by the user"
        skipped, requested = [], []
        with self.store.transaction() as db:
            for target in targets:
                if target["state"] == "pending":
                    self.store.update(db, target["id"], state="skipped", reason=reason, finished_at=utc_now())
                    skipped.append(target["id"])
                else:
                    self.store.update(db, target["id"], skip_requested=1, reason=reason)
                    requested.append(target["id"])
            self._bump(db)
        return Skipped(tuple(skipped), tuple(requested))

    def retry(self, args: a.RetryArgs) -> Retried:
        if args.ids is not None and (args.failed or args.skipped):
            raise BadArgument("Retry takes either 'ids' or 'failed'/'skipped': true")
        if args.ids is None and not (args.failed or args.skipped):
            raise BadArgument("Retry needs 'ids', or 'failed': true (every failed target)")
        if args.ids is not None:
            targets = [self._get(i) for i in dict.fromkeys(args.ids)]
            for target in targets:
                if target["state"] not in ("failed", "skipped"):
                    raise NotReady(f"target {target['id']} is {target['state']}; only failed or skipped targets can "
                                   "be retried. Nothing was changed")
        else:
            states = {"failed"} if args.failed else set()
            states |= {"skipped"} if args.skipped else set()
            targets = [t for t in self.store.targets() if t["state"] in states]
        with self.store.transaction() as db:
            for target in targets:
                self.store.update(db, target["id"], state="pending", reason="", failure_kind=None, attempts=0,
                                  finished_at=None, skip_requested=0, data={})
            if targets:
                self._bump(db)
        return Retried(tuple(t["id"] for t in targets))

    def clear(self, args: a.ClearArgs) -> Cleared:
        ids = [t["id"] for t in self.store.targets() if t["state"] in set(args.states)]
        with self.store.transaction() as db:
            self.store.delete(db, ids)
            if ids:
                self._bump(db)
        return Cleared(len(ids))

    def set_policy(self, text_args: dict[str, Any]) -> PolicyTable:
        for kind, action in text_args.items():
            if kind not in a.FAILURE_KINDS:
                raise BadArgument(f"unknown failure kind '{kind}'; kinds: {', '.join(a.FAILURE_KINDS)}")
            if action not in ("retry", "skip", "stop"):
                raise BadArgument(f"'{kind}': {action!r} is not retry, skip or stop")
        if not text_args:
            raise BadArgument("SetPolicy needs at least one kind, e.g. {\"no_signal\": \"retry\"}")
        policy = {**(self.store.meta("policy", {}) or {}), **text_args}
        with self.store.transaction() as db:
            self.store.set_meta(db, "policy", policy)
            self._bump(db)
        return PolicyTable(self.policy())

    # ------------------------------------------------------------- the loop's side
    def claim_next(self, args: a.ClaimArgs) -> Claim:
        """The next target for ``args.worker``: an interrupted one first (re-run), then the first
        pending; nothing while paused."""
        if self.paused:
            return Claim(None, None, False, "paused")
        everything = self.store.targets(("running", "pending"))
        running = [t for t in everything if t["state"] == "running"]
        now = time.time()
        for other in running:
            fresh = now - float(other.get("reported_at") or 0) < self.claim_timeout_s
            if other["worker"] != args.worker and fresh:
                raise NotReady(f"target {other['id']} is being run by {other['worker']} (last report "
                               f"{now - float(other['reported_at']):.0f} s ago); one loop at a time. If that loop "
                               f"is dead, its claim may be taken over after {self.claim_timeout_s:g} s")
        token = secrets.token_hex(16)
        with self.store.transaction() as db:
            if running:
                target = running[0]
                if target["attempts"] >= self.max_attempts:
                    self.store.update(db, target["id"], state="failed", failure_kind="other", token=None,
                                      reason=f"interrupted {target['attempts']} times (the loop died during its "
                                             "scan each time); retry it when the cause is fixed",
                                      finished_at=utc_now(), worker=None)
                    self._bump(db)  # and on to the first pending target
                else:
                    self.store.update(db, target["id"], token=token, worker=args.worker, reported_at=now,
                                      attempts=target["attempts"] + 1, started_at=utc_now(),
                                      reason=f"re-run: the scan claimed by {target['worker']} was not finished")
                    self._set_activity(db, "claimed", f"re-running target {target['id']}", target["id"])
                    self._bump(db)
                    return Claim(public(self._target_in(db, target["id"])), token, True, "")
            pending = [t for t in everything if t["state"] == "pending"]
            if not pending:
                self._set_activity(db, "idle", "the queue is empty", None)
                return Claim(None, None, False, "empty")
            target = pending[0]
            self.store.update(db, target["id"], state="running", token=token, worker=args.worker, reported_at=now,
                              attempts=target["attempts"] + 1, started_at=utc_now(), skip_requested=0, reason="")
            self._set_activity(db, "claimed", f"target {target['id']}", target["id"])
            self._bump(db)
            return Claim(public(self._target_in(db, target["id"])), token, False, "")

    def _target_in(self, db: sqlite3.Connection, target_id: int) -> dict[str, Any]:
        return QueueStore.row_dict(db.execute("SELECT * FROM targets WHERE id = ?", (target_id,)).fetchone())

    def _set_activity(self, db: sqlite3.Connection, activity: str, message: str, target: int | None) -> None:
        self.store.set_meta(db, "activity", {"activity": activity, "message": message, "target": target,
                                             "since": utc_now()})

    def _claimed(self, target_id: int, token: str) -> dict[str, Any]:
        target = self._get(target_id)
        if target["state"] != "running" or target["token"] != token:
            raise NotReady(f"this claim on target {target_id} is no longer valid (the target is {target['state']}"
                           + (f", claimed again by {target['worker']}" if target["state"] == "running" else "")
                           + "); nothing was changed. Claim the next target with ClaimNext")
        return target

    def report(self, args: a.ReportArgs) -> ReportAnswer:
        target = self._claimed(args.id, args.token)
        with self.store.transaction() as db:
            self.store.update(db, target["id"], reported_at=time.time())
            self._set_activity(db, args.activity, args.message, target["id"])
        return ReportAnswer(bool(target["skip_requested"]), self.paused)

    def finish(self, args: a.FinishArgs) -> Finished:
        target = self._get(args.id)
        if target["finished_token"] == args.token and target["finish_reply"] is not None:
            return Finished.from_dict(target["finish_reply"])  # a retried Finish whose first reply was lost
        target = self._claimed(args.id, args.token)
        stop = False
        changes: dict[str, Any] = {"token": None, "worker": None, "finished_token": args.token,
                                   "finished_at": utc_now(), "skip_requested": 0}
        if args.duration_s is not None:
            changes["duration_s"] = args.duration_s
        if args.outcome == "done":
            changes.update(state="done", reason=args.reason, failure_kind=None, data=args.data)
        elif args.outcome == "skipped":
            changes.update(state="skipped", reason=args.reason or target["reason"] or "skipped", data=args.data)
        else:
            kind = args.kind or "other"
            action = self.policy()[kind]
            why = args.reason or kind
            changes.update(failure_kind=kind, data=args.data)
            if action == "retry" and target["attempts"] < self.max_attempts:
                changes.update(state="pending", reason=f"{kind}: {why}; will be retried "
                               f"(attempt {target['attempts']} of {self.max_attempts})", finished_at=None)
            elif action == "retry":
                changes.update(state="failed", reason=f"{kind}: {why} (gave up after {target['attempts']} attempts)")
            else:
                changes.update(state="failed", reason=f"{kind}: {why}")
                stop = action == "stop"
        with self.store.transaction() as db:
            self.store.update(db, target["id"], **changes)
            if stop:
                self.store.set_meta(db, "paused", True)
                self.store.set_meta(db, "pause_reason", f"stopped: {args.kind or 'other'} on target {target['id']} "
                                                        "(policy stop); Resume to go on")
            self._set_activity(db, "idle", f"target {target['id']} {changes['state']}", None)
            reply = Finished(public(self._target_in(db, target["id"])), stop)
            self.store.update(db, target["id"], finish_reply=reply.as_dict())
            self._bump(db)
        return reply
