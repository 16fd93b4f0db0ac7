"""Where the journal finds jobs again: the `JournalStore` interface and its SQLite index.

The journal's log (`JournalLog`) holds every batch; the store indexes them, a log file at
a time, in bulk (`apply`): one row per accepted job (what it asked, in wire form, and
where it stands), one row per batch of its SSE events pointing at the log record that
holds them (`EventSpan`: the events themselves are read from the log), and its
idempotency key. It records how far into the log it has taken (`applied_position`), in
the same transaction, so a restart hands it exactly what it lacks.

SQLite runs in WAL mode; `synchronous=NORMAL` keeps every committed transaction across a
crash of the process and, on power loss, all but the last; `FULL` (`journal_sync:
full`) keeps those too. A server database can take this store's place behind the same
interface.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from orchestratord.journal.records import (
    Event,
    EventSpan,
    IdempotencyRecord,
    JournaledTask,
    Located,
    StateChange,
    last_id,
)

__all__ = ["JournalFormatError", "JournalStore", "SqliteJournal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,  -- acceptance order, given by the store (no AUTOINCREMENT)
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
    finish_reason TEXT,
    log_file INTEGER NOT NULL  -- of its acceptance: the log is kept from the oldest job's
);
-- Keyed by the job's seq, which only grows: a new span lands on the last page.
CREATE TABLE IF NOT EXISTS events (
    task_seq INTEGER NOT NULL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    log_file INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    PRIMARY KEY (task_seq, first_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    task_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency (created_ms);
-- How far into the journal's log this store has taken: (file, end offset).
CREATE TABLE IF NOT EXISTS applied (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    log_file INTEGER NOT NULL,
    offset INTEGER NOT NULL
);
"""
_FORMAT = 3  # PRAGMA user_version of this layout


class JournalStore(Protocol):
    """Blocking calls, made off the event loop (`asyncio.to_thread`), one writer at a
    time (the journal serializes `apply` and `prune`)."""

    def apply(self, located: Sequence[Located], position: tuple[int, int]) -> None:
        """The log's batches up to `position` (log file, end offset), in one transaction
        that records `position` as taken."""
        ...

    def applied_position(self) -> tuple[int, int]:
        """How far into the log the store has taken: (0, 0) when nothing."""
        ...

    def unfinished(self) -> list[JournaledTask]: ...

    def task(self, task_id: str) -> JournaledTask | None: ...

    def event_spans(self, task_id: str, after_id: int) -> list[EventSpan]:
        """Where the job's events after `after_id` are, in order."""
        ...

    def idempotency(self, scope: str, since_ms: int) -> IdempotencyRecord | None: ...

    def prune(self, before_ms: int, limit: int) -> int: ...

    def oldest_log_file(self) -> int | None:
        """The log file of the oldest job kept (None: none): the log is kept from it."""
        ...

    def checkpoint(self) -> None: ...

    def close(self) -> None: ...


_TASK_COLUMNS = (
    "seq, task_id, wire, route, api_key, correlation_id, detached, state, attempts, pool_id, "
    "created_ms, started_ms, finished_ms, error, end_json, tokens_in, tokens_out, finish_reason, "
    "(SELECT COALESCE(MAX(last_id), -1) FROM events e WHERE e.task_seq = tasks.seq)"
)
_INSERT_TASK = (
    "INSERT OR IGNORE INTO tasks (seq, task_id, wire, route, api_key, correlation_id, detached, "
    "state, attempts, pool_id, created_ms, started_ms, finished_ms, error, end_json, tokens_in, "
    "tokens_out, finish_reason, log_file) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_TASK = (
    "UPDATE tasks SET state = ?, attempts = ?, pool_id = ?, started_ms = COALESCE(?, started_ms), "
    "finished_ms = ?, error = ?, end_json = ?, tokens_in = ?, tokens_out = ?, finish_reason = ? "
    "WHERE task_id = ? AND finished_ms IS NULL"
)


def _task(row: tuple[object, ...]) -> JournaledTask:
    values = list(row)
    values[6] = bool(values[6])
    return JournaledTask(*values)  # type: ignore[arg-type]


def _span(events: Sequence[Event]) -> tuple[int, int]:
    """The first and last ids of `events` (a run of tokens counts as its ids)."""
    return min(e[0] for e in events), max(last_id(e) for e in events)


def _effective(changes: Sequence[StateChange]) -> dict[str, StateChange]:
    """Each job's state after `changes` (whole snapshots, in order): its first end, else
    its last change."""
    latest: dict[str, StateChange] = {}
    for change in changes:
        seen = latest.get(change.task_id)
        if seen is None or seen.finished_ms is None:
            latest[change.task_id] = change
    return latest


class JournalFormatError(Exception):
    """The journal was written in another layout (an older build)."""


class SqliteJournal:
    """The SQLite index. One connection per thread (the writer's, and readers')."""

    def __init__(self, path: Path, *, sync: str = "normal") -> None:
        self._path = path
        self._sync = "FULL" if sync == "full" else "NORMAL"
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connection()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if version != _FORMAT and tables:
            raise JournalFormatError(
                f"{path} is a job journal of layout {version}, this build keeps layout "
                f"{_FORMAT}: move it (and journal-wal/ beside it) away to start afresh"
            )
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {_FORMAT}")
        self._next_seq = self._max_seq(conn) + 1
        self._seqs: dict[str, int] = {}  # seq of the jobs indexed and not ended

    @staticmethod
    def _max_seq(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks").fetchone()[0])

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._sync}")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # `checkpoint`, every few seconds
            self._local.conn = conn
        return conn

    def _seq(self, conn: sqlite3.Connection, task_id: str) -> int | None:
        seq = self._seqs.get(task_id)
        if seq is None:  # a job indexed before a restart
            row = conn.execute("SELECT seq FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None:
                return None
            seq = self._seqs[task_id] = int(row[0])
        return seq

    # -- writes ------------------------------------------------------------------------

    def apply(self, located: Sequence[Located], position: tuple[int, int]) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            ended = self._write(conn, located)
            conn.execute(
                "INSERT OR REPLACE INTO applied (one, log_file, offset) VALUES (1, ?, ?)",
                position,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            self._seqs.clear()  # some were given in the transaction rolled back
            self._next_seq = self._max_seq(conn) + 1
            raise
        for task_id in ended:
            self._seqs.pop(task_id, None)

    def _write(self, conn: sqlite3.Connection, located: Sequence[Located]) -> list[str]:
        """Index the batches; the jobs that ended in them."""
        seqs = self._seqs
        changes = _effective([c for item in located for c in item.batch.changes])
        tasks = []
        keys = []
        for item in located:
            for a in item.batch.accepted:
                seq = self._next_seq
                self._next_seq += 1
                seqs[a.task_id] = seq
                c = changes.pop(a.task_id, None)  # its state so far rides with its row
                tasks.append(
                    (seq, a.task_id, a.wire, a.route, a.api_key, a.correlation_id, a.detached)
                    + (
                        ("queued", 0, None, a.created_ms, None, None, None, None, 0, 0, None)
                        if c is None
                        else (c.state, c.attempts, c.pool_id, a.created_ms, c.started_ms,
                              c.finished_ms, c.error, c.end_json, c.tokens_in, c.tokens_out,
                              c.finish_reason)
                    )
                    + (item.log_file,)
                )  # fmt: skip
                if (i := a.idempotency) is not None:
                    keys.append((i.scope, i.digest, i.task_id, i.created_ms))
        if tasks:
            conn.executemany(_INSERT_TASK, tasks)
        if keys:
            conn.executemany(
                "INSERT OR REPLACE INTO idempotency (scope, digest, task_id, created_ms) "
                "VALUES (?, ?, ?, ?)",
                keys,
            )
        spans = []
        for item in located:
            for task_id, events in item.batch.events:
                task_seq = self._seq(conn, task_id) if events else None
                if task_seq is not None:
                    spans.append((task_seq, *_span(events), item.log_file, item.offset))
        if spans:
            conn.executemany(
                "INSERT OR IGNORE INTO events (task_seq, first_id, last_id, log_file, offset) "
                "VALUES (?, ?, ?, ?, ?)",
                spans,
            )
        if changes:
            conn.executemany(
                _UPDATE_TASK,
                [
                    (c.state, c.attempts, c.pool_id, c.started_ms, c.finished_ms, c.error,
                     c.end_json, c.tokens_in, c.tokens_out, c.finish_reason, c.task_id)
                    for c in changes.values()
                ],
            )  # fmt: skip
        return [
            c.task_id for item in located for c in item.batch.changes if c.finished_ms is not None
        ]

    def applied_position(self) -> tuple[int, int]:
        row = self._connection().execute("SELECT log_file, offset FROM applied").fetchone()
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    def prune(self, before_ms: int, limit: int) -> int:
        """Forget up to `limit` jobs that ended before `before_ms`, their events, and
        keys older than that; how many jobs were forgotten."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            old = [
                (r[0],)
                for r in conn.execute(
                    "SELECT seq FROM tasks WHERE finished_ms IS NOT NULL AND finished_ms < ? "
                    "LIMIT ?",
                    (before_ms, limit),
                )
            ]
            conn.executemany("DELETE FROM events WHERE task_seq = ?", old)
            conn.executemany("DELETE FROM tasks WHERE seq = ?", old)
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

    # -- reads -------------------------------------------------------------------------

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

    def event_spans(self, task_id: str, after_id: int) -> list[EventSpan]:
        rows = self._connection().execute(
            "SELECT e.first_id, e.last_id, e.log_file, e.offset FROM tasks t "
            "JOIN events e ON e.task_seq = t.seq "
            "WHERE t.task_id = ? AND e.last_id > ? ORDER BY e.first_id",
            (task_id, after_id),
        )
        return [EventSpan(*row) for row in rows]

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

    def oldest_log_file(self) -> int | None:
        row = (
            self._connection().execute("SELECT log_file FROM tasks ORDER BY seq LIMIT 1").fetchone()
        )
        return int(row[0]) if row is not None else None
