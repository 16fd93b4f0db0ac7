"""Where the journal keeps jobs: the `JournalStore` interface and its SQLite store.

One row per accepted job (what it asked, in wire form, and where it stands), its SSE
events (one row per batch the journal took: `id TAB name TAB data` lines, since event
data is JSON, which has no raw tab or newline; a row per event cost ~10 µs of CPU per
token), and its idempotency key. A batch of writes is one transaction. SQLite runs in
WAL mode; `synchronous=NORMAL` keeps every committed batch across a crash of the
process (SIGKILL included) and, on power loss, all but the last batches; `FULL` (the
`journal_sync: full` setting) keeps those too, at one fsync per batch. A server database
can take this store's place behind the same interface (`JournalStore`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "Accepted",
    "Event",
    "IdempotencyRecord",
    "JournalStore",
    "JournaledTask",
    "SqliteJournal",
    "StateChange",
    "WriteBatch",
]

Event = tuple[int, str, str]  # (id, name, data) of one SSE event

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,  -- acceptance order (no AUTOINCREMENT: one page write less)
    task_id TEXT NOT NULL UNIQUE,
    wire TEXT NOT NULL,
    route TEXT NOT NULL,
    api_key TEXT,
    correlation_id TEXT NOT NULL,
    detached INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    pool_id TEXT,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    error TEXT,
    end_json TEXT,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    finish_reason TEXT
);
CREATE TABLE IF NOT EXISTS event_batches (
    task_id TEXT NOT NULL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (task_id, first_id)
);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    task_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency (created_ms);
"""


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    scope: str  # the client's key name and its Idempotency-Key
    digest: str  # of the route and the request body
    task_id: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Accepted:
    task_id: str
    wire: str  # the request as `TaskRequest` JSON
    route: str  # v2, v2-stream, chat, completion, embedding
    api_key: str | None  # the key's name, never the key
    correlation_id: str
    detached: bool
    created_ms: int
    idempotency: IdempotencyRecord | None


@dataclass(frozen=True, slots=True)
class StateChange:
    task_id: str
    state: str
    attempts: int
    pool_id: str | None
    started_ms: int | None = None
    finished_ms: int | None = None
    error: str | None = None  # TaskError JSON
    end_json: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str | None = None


@dataclass(slots=True)
class WriteBatch:
    accepted: list[Accepted]
    events: list[tuple[str, Sequence[Event]]]
    changes: list[StateChange]

    def __bool__(self) -> bool:
        return bool(self.accepted or self.events or self.changes)


@dataclass(frozen=True, slots=True)
class JournaledTask:
    seq: int
    task_id: str
    wire: str
    route: str
    api_key: str | None
    correlation_id: str
    detached: bool
    state: str
    attempts: int
    pool_id: str | None
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    error: str | None
    end_json: str | None
    tokens_in: int
    tokens_out: int
    finish_reason: str | None
    last_event_id: int  # -1 when none


class JournalStore(Protocol):
    """Blocking calls; the journal's writer thread and `asyncio.to_thread` make them."""

    def write(self, batch: WriteBatch) -> None: ...

    def unfinished(self) -> list[JournaledTask]: ...

    def task(self, task_id: str) -> JournaledTask | None: ...

    def events(self, task_id: str, after_id: int) -> list[Event]: ...

    def idempotency(self, scope: str, since_ms: int) -> IdempotencyRecord | None: ...

    def prune(self, before_ms: int, limit: int) -> int: ...

    def checkpoint(self) -> None: ...

    def close(self) -> None: ...


_TASK_COLUMNS = (
    "seq, task_id, wire, route, api_key, correlation_id, detached, state, attempts, pool_id, "
    "created_ms, started_ms, finished_ms, error, end_json, tokens_in, tokens_out, finish_reason, "
    "(SELECT COALESCE(MAX(last_id), -1) FROM event_batches e WHERE e.task_id = tasks.task_id)"
)


def _event_row(task_id: str, events: Sequence[Event]) -> tuple[str, int, int, str]:
    body = "\n".join([f"{i}\t{name}\t{data}" for i, name, data in events])
    return task_id, min(e[0] for e in events), max(e[0] for e in events), body


def _task(row: tuple[object, ...]) -> JournaledTask:
    values = list(row)
    values[6] = bool(values[6])
    return JournaledTask(*values)  # type: ignore[arg-type]


class SqliteJournal:
    """The SQLite store. One connection per thread (the writer's, and readers')."""

    def __init__(self, path: Path, *, sync: str = "normal") -> None:
        self._path = path
        self._sync = "FULL" if sync == "full" else "NORMAL"
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as conn:
            conn.executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._sync}")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # `checkpoint`, off the event loop
            self._local.conn = conn
        return conn

    def write(self, batch: WriteBatch) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if batch.accepted:
                conn.executemany(
                    "INSERT OR IGNORE INTO tasks (task_id, wire, route, api_key, correlation_id, "
                    "detached, state, created_ms) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?)",
                    [
                        (a.task_id, a.wire, a.route, a.api_key, a.correlation_id, a.detached,
                         a.created_ms)
                        for a in batch.accepted
                    ],
                )  # fmt: skip
                keys = [
                    (i.scope, i.digest, i.task_id, i.created_ms)
                    for a in batch.accepted
                    if (i := a.idempotency) is not None
                ]
                if keys:
                    conn.executemany(
                        "INSERT OR REPLACE INTO idempotency (scope, digest, task_id, created_ms) "
                        "VALUES (?, ?, ?, ?)",
                        keys,
                    )
            if batch.events:
                conn.executemany(
                    "INSERT OR IGNORE INTO event_batches (task_id, first_id, last_id, body) "
                    "VALUES (?, ?, ?, ?)",
                    [_event_row(task_id, events) for task_id, events in batch.events if events],
                )
            if batch.changes:
                conn.executemany(
                    "UPDATE tasks SET state = ?, attempts = ?, pool_id = ?, "
                    "started_ms = COALESCE(?, started_ms), finished_ms = ?, error = ?, "
                    "end_json = ?, tokens_in = ?, tokens_out = ?, finish_reason = ? "
                    "WHERE task_id = ? AND finished_ms IS NULL",
                    [
                        (c.state, c.attempts, c.pool_id, c.started_ms, c.finished_ms, c.error,
                         c.end_json, c.tokens_in, c.tokens_out, c.finish_reason, c.task_id)
                        for c in batch.changes
                    ],
                )  # fmt: skip
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def unfinished(self) -> list[JournaledTask]:
        rows = self._connection().execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE finished_ms IS NULL ORDER BY seq"
        )
        return [_task(row) for row in rows]

    def task(self, task_id: str) -> JournaledTask | None:
        row = (
            self._connection()
            .execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,))
            .fetchone()
        )
        return _task(row) if row is not None else None

    def events(self, task_id: str, after_id: int) -> list[Event]:
        rows = self._connection().execute(
            "SELECT body FROM event_batches WHERE task_id = ? AND last_id > ? ORDER BY first_id",
            (task_id, after_id),
        )
        seen: dict[int, Event] = {}
        for (body,) in rows:
            for line in str(body).split("\n"):
                event_id, name, data = line.split("\t", 2)
                number = int(event_id)
                if number > after_id and number not in seen:
                    seen[number] = (number, name, data)
        return [seen[i] for i in sorted(seen)]

    def idempotency(self, scope: str, since_ms: int) -> IdempotencyRecord | None:
        row = (
            self._connection()
            .execute(
                "SELECT scope, digest, task_id, created_ms FROM idempotency "
                "WHERE scope = ? AND created_ms >= ?",
                (scope, since_ms),
            )
            .fetchone()
        )
        return IdempotencyRecord(*row) if row is not None else None

    def prune(self, before_ms: int, limit: int) -> int:
        """Forget up to `limit` jobs that ended before `before_ms`, their events, and
        keys older than that; how many jobs were forgotten."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            old = [
                r[0]
                for r in conn.execute(
                    "SELECT task_id FROM tasks WHERE finished_ms IS NOT NULL AND finished_ms < ? "
                    "LIMIT ?",
                    (before_ms, limit),
                )
            ]
            conn.executemany("DELETE FROM event_batches WHERE task_id = ?", [(t,) for t in old])
            conn.executemany("DELETE FROM tasks WHERE task_id = ?", [(t,) for t in old])
            conn.execute("DELETE FROM idempotency WHERE created_ms < ?", (before_ms,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(old)

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database (PASSIVE: writers go on meanwhile)."""
        self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
