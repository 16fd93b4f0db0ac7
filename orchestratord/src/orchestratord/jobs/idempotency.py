"""Idempotent submit (REL-05): `Idempotency-Key` on `/v2/tasks` and the `/v1` endpoints.

A key is scoped to the client's API key (two clients may pick the same key). The same
key with the same request (route and body, by digest) is the same job: the caller gets
its record back, whether it is queued, running or ended, also after a restart (the
journal keeps keys `journal_retention_s`, 24 h by default). The same key with another
request is `422 IDEMPOTENCY_CONFLICT` (API-07: 409 is the code's other status, a
client-chosen `task_id` that exists). Two requests racing with one key get one job:
the second waits for the first's admission. A request that was refused (queue full,
quota) did not create a job, so its retry is admitted afresh.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from orchestratord.errors import ApiError
from orchestratord.journal.records import IdempotencyRecord
from orchestratord.journal.writer import Journal
from orchestratord.tasks import TaskRecord

__all__ = ["IdempotencyKeys", "key_scope"]

_MAX_KEY = 255


def key_scope(api_key: str | None, key: str) -> str:
    if not key or len(key) > _MAX_KEY or not key.isprintable():
        raise ApiError(
            "INVALID_PARAMS",
            f"Idempotency-Key must be 1-{_MAX_KEY} printable characters",
        )
    return f"{api_key or ''}\x00{key}"


@dataclass(slots=True)
class _Entry:
    digest: str
    task_id: str
    created_ms: int
    admitted: asyncio.Future[TaskRecord | None]


def _reused() -> ApiError:
    return ApiError(
        "IDEMPOTENCY_CONFLICT",
        "this Idempotency-Key was used for a different request; use a new key",
        status=422,
    )


class IdempotencyKeys:
    def __init__(
        self,
        journal: Journal | None,
        lookup: Callable[[str], Awaitable[TaskRecord | None]],
        *,
        retention_ms: int,
        kept: int,
    ) -> None:
        self._journal = journal
        self._lookup = lookup
        self._retention_ms = retention_ms
        self._kept = kept
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    async def existing(self, scope: str, digest: str, now_ms: int) -> TaskRecord | None:
        """The job this key already names, or None when the caller must admit one (and
        then `reserve` the key before its first await)."""
        while True:
            entry = self._entries.get(scope)
            if entry is not None and now_ms - entry.created_ms > self._retention_ms:
                del self._entries[scope]
                entry = None
            if entry is not None:
                if entry.digest != digest:
                    raise _reused()
                record = await asyncio.shield(entry.admitted)
                if record is not None:
                    return record
                if self._entries.get(scope) is entry:
                    del self._entries[scope]
                continue  # the first request was refused: this one is admitted afresh
            if self._journal is None:
                return None
            row = await self._journal.idempotency(scope, now_ms - self._retention_ms)
            if scope in self._entries:
                continue  # reserved while we read: take that one
            if row is None:
                return None
            if row.digest != digest:
                raise _reused()
            return await self._lookup(row.task_id)

    def reserve(self, scope: str, digest: str, task_id: str, now_ms: int) -> _Entry:
        loop = asyncio.get_running_loop()
        entry = _Entry(digest, task_id, now_ms, loop.create_future())
        self._entries[scope] = entry
        while len(self._entries) > self._kept:
            oldest_scope, oldest = next(iter(self._entries.items()))
            if not oldest.admitted.done():
                break
            del self._entries[oldest_scope]
        return entry

    def admitted(self, scope: str, entry: _Entry, record: TaskRecord | None) -> None:
        if not entry.admitted.done():
            entry.admitted.set_result(record)
        if record is None and self._entries.get(scope) is entry:
            del self._entries[scope]

    @staticmethod
    def journal_record(scope: str, entry: _Entry) -> IdempotencyRecord:
        return IdempotencyRecord(scope, entry.digest, entry.task_id, entry.created_ms)
