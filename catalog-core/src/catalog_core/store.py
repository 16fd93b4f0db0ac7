"""The SQLite-backed catalog store (CAT-01..03): the only module that talks to SQLite.

`CatalogStore(path)` opens (or creates) one catalog database, refuses a schema newer
than this code knows (`SchemaTooNew`), applies the missing migrations in order, and
switches the database to WAL so that readers in other threads and processes see whole
transactions while one writer works. Every write runs in one `BEGIN IMMEDIATE`
transaction and rolls back on any error. Lookups: models by id, ref and sha256; engines
by id, by (engine, version) and by build key; both listed in id order with a cursor.

All methods block on file I/O (call them through `asyncio.to_thread` on an event loop).
One store may be shared by threads: calls are serialised by a lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from catalog_core.entries import EngineEntry, Lifecycle, ModelEntry
from catalog_core.errors import (
    DuplicateEntry,
    EntryNotFound,
    SchemaTooNew,
    StoreBusy,
    StoreCorrupt,
    StoreError,
)
from catalog_core.migrations import MIGRATIONS, SCHEMA_VERSION
from catalog_core.records import (
    ENGINE_COLUMNS,
    MODEL_COLUMNS,
    engine_from_row,
    engine_to_row,
    model_from_row,
    model_to_row,
)

__all__ = ["CatalogStore", "Page"]

T = TypeVar("T")

_MODEL_SELECT = f"SELECT {', '.join(MODEL_COLUMNS)} FROM models"
_ENGINE_SELECT = f"SELECT {', '.join(ENGINE_COLUMNS)} FROM engines"
_MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing in id order; pass `next_cursor` as `after` for the next."""

    items: tuple[T, ...]
    next_cursor: str | None


class CatalogStore:
    """One catalog database. Blocking; thread-safe; use as a context manager or close()."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = _connect(path, busy_timeout_s)
        try:
            self.schema_version = _migrate(self._conn, str(path))
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            self._conn.close()
            raise _mapped(exc, str(path)) from exc
        except StoreError:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> CatalogStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- models ----------------------------------------------------------------------

    def put_model(self, entry: ModelEntry) -> None:
        """Make `entry` the catalog's entry for its ref (insert, or replace by id or ref).

        DuplicateEntry when its id already names an entry for another ref.
        """
        self.put_models((entry,))

    def put_models(self, entries: Iterable[ModelEntry]) -> None:
        """`put_model` for several entries in one transaction: all are stored or none."""
        with self._write() as conn:
            for entry in entries:
                _put_model(conn, entry)

    def find_model(self, model_id: str) -> ModelEntry | None:
        return self._one_model("WHERE id = ?", (model_id,))

    def get_model(self, model_id: str) -> ModelEntry:
        """The model with this id; EntryNotFound if there is none."""
        entry = self.find_model(model_id)
        if entry is None:
            raise EntryNotFound("model", model_id)
        return entry

    def model_by_ref(self, ref: str) -> ModelEntry | None:
        return self._one_model("WHERE ref = ?", (ref,))

    def models_by_sha256(self, sha256: str) -> tuple[ModelEntry, ...]:
        """All entries whose file has this digest (several refs may fetch one file)."""
        rows = self._read(f"{_MODEL_SELECT} WHERE sha256 = ? ORDER BY id", (sha256.lower(),))
        return tuple(model_from_row(row) for row in rows)

    def list_models(
        self, *, after: str | None = None, limit: int = 100, lifecycle: Lifecycle | None = None
    ) -> Page[ModelEntry]:
        """Models with ids after the cursor `after`, in id order, at most `limit`."""
        where, params = _page_filter(after, lifecycle, limit)
        rows = self._read(f"{_MODEL_SELECT} {where} ORDER BY id LIMIT ?", (*params, limit + 1))
        return _page([model_from_row(row) for row in rows], limit, lambda entry: entry.id)

    def set_lifecycle(self, model_id: str, lifecycle: Lifecycle) -> ModelEntry:
        """Mark a model Active or Retired; returns the updated entry."""
        self._update_model(model_id, "lifecycle = ?", (lifecycle,))
        return self.get_model(model_id)

    def mark_verified(self, model_id: str, verified_at_ms: int) -> ModelEntry:
        """Record that the model's file was found to match its digest at this time."""
        self._update_model(model_id, "verified_at_ms = ?", (verified_at_ms,))
        return self.get_model(model_id)

    def remove_model(self, model_id: str) -> ModelEntry:
        """Delete the entry (not its file) and return what it was."""
        with self._write() as conn:
            row = conn.execute(f"{_MODEL_SELECT} WHERE id = ?", (model_id,)).fetchone()
            if row is None:
                raise EntryNotFound("model", model_id)
            conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
        return model_from_row(row)

    # -- engines ---------------------------------------------------------------------

    def put_engine(self, entry: EngineEntry) -> None:
        """Insert or replace (by id) an engine; DuplicateEntry if its build key is taken."""
        with self._write() as conn:
            conn.execute(_upsert("engines", ENGINE_COLUMNS), engine_to_row(entry))

    def find_engine(self, engine_id: str) -> EngineEntry | None:
        rows = self._read(f"{_ENGINE_SELECT} WHERE id = ?", (engine_id,))
        return engine_from_row(rows[0]) if rows else None

    def get_engine(self, engine_id: str) -> EngineEntry:
        """The engine with this id; EntryNotFound if there is none."""
        entry = self.find_engine(engine_id)
        if entry is None:
            raise EntryNotFound("engine", engine_id)
        return entry

    def engines_by_version(self, engine: str, version: str) -> tuple[EngineEntry, ...]:
        rows = self._read(
            f"{_ENGINE_SELECT} WHERE engine = ? AND version = ? ORDER BY id", (engine, version)
        )
        return tuple(engine_from_row(row) for row in rows)

    def engine_by_build_key(self, build_key: str) -> EngineEntry | None:
        """The engine built from these inputs (see `engine_build_key`), if one was."""
        if not build_key:
            return None
        rows = self._read(f"{_ENGINE_SELECT} WHERE build_key = ?", (build_key,))
        return engine_from_row(rows[0]) if rows else None

    def list_engines(self, *, after: str | None = None, limit: int = 100) -> Page[EngineEntry]:
        where, params = _page_filter(after, None, limit)
        rows = self._read(f"{_ENGINE_SELECT} {where} ORDER BY id LIMIT ?", (*params, limit + 1))
        return _page([engine_from_row(row) for row in rows], limit, lambda entry: entry.id)

    def remove_engine(self, engine_id: str) -> EngineEntry:
        with self._write() as conn:
            row = conn.execute(f"{_ENGINE_SELECT} WHERE id = ?", (engine_id,)).fetchone()
            if row is None:
                raise EntryNotFound("engine", engine_id)
            conn.execute("DELETE FROM engines WHERE id = ?", (engine_id,))
        return engine_from_row(row)

    # -- plumbing --------------------------------------------------------------------

    def _one_model(self, where: str, params: tuple[object, ...]) -> ModelEntry | None:
        rows = self._read(f"{_MODEL_SELECT} {where}", params)
        return model_from_row(rows[0]) if rows else None

    def _update_model(self, model_id: str, assignment: str, params: tuple[object, ...]) -> None:
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE models SET {assignment} WHERE id = ?", (*params, model_id)
            )
            if cursor.rowcount == 0:
                raise EntryNotFound("model", model_id)

    def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        """One SELECT: in autocommit mode it reads one consistent snapshot."""
        with self._lock:
            try:
                return list(self._conn.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise _mapped(exc, str(self.path)) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _transaction(self._conn, str(self.path)):
            yield self._conn


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    try:
        return sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open catalog {path}: {exc}") from exc


@contextmanager
def _transaction(conn: sqlite3.Connection, where: str) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT; ROLLBACK on any exception, mapped to StoreError."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise _mapped(exc, where) from exc
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise _mapped(exc, where) from exc
        raise


def _migrate(conn: sqlite3.Connection, where: str) -> int:
    """Bring the schema up to SCHEMA_VERSION; refuse a newer one. Returns the version."""
    found = _user_version(conn)
    _check_version(found, where)
    if found == SCHEMA_VERSION:
        return found  # the common case takes no write lock
    for migration in MIGRATIONS:
        with _transaction(conn, where):
            # Re-read under the write lock: another process may have migrated meanwhile.
            current = _user_version(conn)
            _check_version(current, where)
            if current >= migration.version:
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {migration.version:d}")
    return _user_version(conn)


def _user_version(conn: sqlite3.Connection) -> int:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    return int(version)


def _check_version(found: int, where: str) -> None:
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(where, found, SCHEMA_VERSION)


def _put_model(conn: sqlite3.Connection, entry: ModelEntry) -> None:
    owner = conn.execute("SELECT ref FROM models WHERE id = ?", (entry.id,)).fetchone()
    if owner is not None and owner[0] != entry.ref:
        raise DuplicateEntry(f"model id {entry.id!r} is taken by {owner[0]!r}")
    conn.execute("DELETE FROM models WHERE ref = ? AND id != ?", (entry.ref, entry.id))
    conn.execute(_upsert("models", MODEL_COLUMNS), model_to_row(entry))


def _upsert(table: str, columns: tuple[str, ...]) -> str:
    """INSERT that updates the row with the same id; other unique keys still conflict."""
    updates = ", ".join(f"{name} = excluded.{name}" for name in columns if name != "id")
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
        f" ON CONFLICT (id) DO UPDATE SET {updates}"
    )


def _page_filter(
    after: str | None, lifecycle: Lifecycle | None, limit: int
) -> tuple[str, tuple[object, ...]]:
    if not 1 <= limit <= _MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {_MAX_PAGE}, got {limit}")
    clauses: list[str] = []
    params: list[object] = []
    if after is not None:
        clauses.append("id > ?")
        params.append(after)
    if lifecycle is not None:
        clauses.append("lifecycle = ?")
        params.append(lifecycle)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _page(items: list[T], limit: int, key: Callable[[T], str]) -> Page[T]:
    if len(items) <= limit:
        return Page(tuple(items), None)
    kept = items[:limit]
    return Page(tuple(kept), key(kept[-1]))


def _mapped(exc: sqlite3.Error, where: str) -> StoreError:
    """Map a sqlite3 error to the catalog's tree (the caller chains it)."""
    message = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        return DuplicateEntry(f"catalog {where}: {message}")
    if isinstance(exc, sqlite3.OperationalError) and "locked" in message:
        return StoreBusy(f"catalog {where} is locked by another writer: {message}")
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return StoreCorrupt(f"catalog {where} is not a readable catalog database: {message}")
    return StoreError(f"catalog {where}: {message}")
