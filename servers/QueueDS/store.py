"""The queue's persistence: one SQLite file, WAL journal, ``synchronous=FULL``.

Why SQLite: one writer (this server), atomic multi-row transactions (a reorder or a bulk add
is all or nothing), and a commit that is on disk before the command answers, so a SIGKILL of
the server (or a power cut) loses no answered change. WAL keeps readers (a backup, a
debugging ``sqlite3`` shell) from blocking the server. The file is private to the server: the
queue is read and steered through Tango only.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from servers.common.errors import Failed

SCHEMA_VERSION = "1"
TARGET_COLUMNS = ("id", "position", "frame", "x", "y", "particle", "region", "source", "scan", "state", "reason",
                  "failure_kind", "attempts", "added_at", "started_at", "finished_at", "worker", "token",
                  "finished_token", "finish_reply", "skip_requested", "data", "duration_s", "reported_at")
_JSON_COLUMNS = ("scan", "data", "finish_reply")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS targets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    position INTEGER NOT NULL,
    frame TEXT NOT NULL, x REAL NOT NULL, y REAL NOT NULL,
    particle INTEGER, region TEXT NOT NULL, source TEXT,
    scan TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'skipped')),
    reason TEXT NOT NULL DEFAULT '', failure_kind TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    added_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
    worker TEXT, token TEXT, finished_token TEXT, finish_reply TEXT,
    skip_requested INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL DEFAULT '{}', duration_s REAL, reported_at REAL
);
CREATE INDEX IF NOT EXISTS targets_state ON targets (state, position);
"""


class QueueStore:
    """Rows in, rows out; every change inside :meth:`transaction` (BEGIN IMMEDIATE .. COMMIT)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._lock = threading.RLock()
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
            self._db.row_factory = sqlite3.Row
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise Failed(f"the queue file {self.path} cannot use a WAL journal (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise Failed(f"the queue file {self.path} is damaged ({check})")
            self._db.executescript(_SCHEMA)
            version = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if version is None:
                self._db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif version[0] != SCHEMA_VERSION:
                raise Failed(f"the queue file {self.path} has schema {version[0]}, this server reads "
                             f"{SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise Failed(f"the queue file {self.path} cannot be opened: {exc}") from None

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: an exception rolls back every change made inside."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------ rows
    @staticmethod
    def row_dict(row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        for column in _JSON_COLUMNS:
            if out.get(column) is not None:
                out[column] = json.loads(out[column])
        out["skip_requested"] = bool(out["skip_requested"])
        return out

    def targets(self, states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Every target in queue order, or those in ``states`` only: the loop's commands need the
        running and pending few, and decoding every finished target's data on each of them made
        every command of a night slower than the one before."""
        return [self.row_dict(r) for r in self.rows(states)]

    def rows(self, states: tuple[str, ...] | None = None) -> list[sqlite3.Row]:
        """The target rows as stored (JSON columns still text), in queue order; only those in
        ``states`` when given."""
        query, params = "SELECT * FROM targets", ()
        if states is not None:
            query, params = f"{query} WHERE state IN ({', '.join('?' for _ in states)})", tuple(states)
        with self._lock:
            return self._db.execute(f"{query} ORDER BY position, id", params).fetchall()

    def state_counts(self) -> dict[str, int]:
        """How many targets are in each state (states without targets are absent)."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM targets GROUP BY state").fetchall()
        return {str(state): int(count) for state, count in rows}

    def last_durations(self, limit: int) -> list[tuple[float, str]]:
        """(duration_s, scan JSON) of the ``limit`` done targets that finished last (with a duration), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT duration_s, scan FROM targets WHERE state = 'done' AND duration_s > 0 "
                                    "ORDER BY finished_at DESC, position DESC, id DESC LIMIT ?", (limit,)).fetchall()
        return [(float(duration), str(scan)) for duration, scan in reversed(rows)]

    def target(self, target_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM targets WHERE id = ?", (target_id,)).fetchone()
        return None if row is None else self.row_dict(row)

    def insert(self, db: sqlite3.Connection, values: dict[str, Any]) -> int:
        values = {k: (json.dumps(v) if k in _JSON_COLUMNS and v is not None else v) for k, v in values.items()}
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        cursor = db.execute(f"INSERT INTO targets ({columns}) VALUES ({marks})", tuple(values.values()))
        return int(cursor.lastrowid)  # type: ignore[arg-type]  # set by every INSERT

    def update(self, db: sqlite3.Connection, target_id: int, **values: Any) -> None:
        unknown = set(values) - set(TARGET_COLUMNS)
        if unknown:
            raise ValueError(f"unknown columns {unknown}")
        values = {k: (json.dumps(v) if k in _JSON_COLUMNS and v is not None else v) for k, v in values.items()}
        assignments = ", ".join(f"{k} = ?" for k in values)
        db.execute(f"UPDATE targets SET {assignments} WHERE id = ?", (*values.values(), target_id))

    def delete(self, db: sqlite3.Connection, ids: list[int]) -> None:
        db.executemany("DELETE FROM targets WHERE id = ?", [(i,) for i in ids])

    # ------------------------------------------------------------------ meta
    def meta(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, db: sqlite3.Connection, key: str, value: Any) -> None:
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                   "excluded.value", (key, json.dumps(value)))
