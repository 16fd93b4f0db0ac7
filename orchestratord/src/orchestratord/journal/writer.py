"""`Journal`: the orchestrator's write-ahead record of every accepted job (REL-01..03).

Writes go to one writer thread, which takes everything queued since its last commit and
commits it as one transaction (group commit), then resolves the waiters on the event
loop. What must be durable before anyone sees it is awaited; the rest is batched:

- acceptance (and the idempotency key): awaited before the 202 or the first byte;
- an attempt's start: its first event waits for it (`TaskRecord.journaled_running`),
  so a job the journal does not know as running has shown no client a token;
- the end: the terminal event is published once committed, so no client sees an end
  that a restart could contradict;
- token events: collected from the live jobs' logs every `journal_flush_ms`, off the
  token path (an append to a list per engine read is all the token path pays).

A client may thus have seen a few token events the journal lost in a crash; after the
restart the job's terminal event is numbered `EVENT_ID_GAP` past the last journaled one,
so a resume never sees an id twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from orchestratord.journal.store import (
    Accepted,
    Event,
    IdempotencyRecord,
    JournaledTask,
    JournalStore,
    StateChange,
    WriteBatch,
)
from orchestratord.tasks import TaskRecord

__all__ = ["EVENT_ID_GAP", "Journal", "JournalUnavailable", "state_change"]

log = logging.getLogger("orchestratord.journal")

# More events than a stalled writer lets through between two commits (at 1,000 tokens/s
# a job needs 1,000 s): a restarted job's next id is this far past its last journaled one.
EVENT_ID_GAP = 1_000_000


class JournalUnavailable(Exception):
    """The journal could not commit (disk full, I/O error): nothing is acknowledged."""


def state_change(record: TaskRecord) -> StateChange:
    """The journal's row for where `record` stands now."""
    return StateChange(
        task_id=record.task_id,
        state=record.state,
        attempts=record.attempts,
        pool_id=record.pool_id,
        started_ms=record.started_at_ms,
        finished_ms=record.finished_at_ms,
        error=record.error.to_json() if record.error is not None else None,
        end_json=record.end_json if record.done and record.error is None else None,
        tokens_in=record.tokens_in,
        tokens_out=record.tokens_out,
        finish_reason=record.finish_reason,
    )


@dataclass(slots=True)
class _Pending:
    batch: WriteBatch = field(default_factory=lambda: WriteBatch([], [], []))
    done: list[Callable[[BaseException | None], None]] = field(default_factory=list)


_STOP = object()


class Journal:
    def __init__(self, store: JournalStore, *, flush_ms: int = 50) -> None:
        self.store = store
        self._flush_s = flush_ms / 1000.0
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pending = _Pending()
        self._kick_scheduled = False
        self.failed: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._write_loop, name="journal", daemon=True)
        self._thread.start()

    async def flush_loop(self, live: Callable[[], Iterable[TaskRecord]]) -> None:
        """Every `flush_ms`: the live jobs' new events, in one batch."""
        while True:
            await asyncio.sleep(self._flush_s)
            self.collect(live())

    async def stop(self, live: Iterable[TaskRecord]) -> None:
        """Write what is left and stop the writer thread."""
        self.collect(live)
        await self._committed()
        self._queue.put(_STOP)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)
        self.store.close()

    # -- writes --------------------------------------------------------------------------

    def collect(self, records: Iterable[TaskRecord]) -> None:
        for record in records:
            events = record.events.take_unjournaled()
            if events:
                self._pending.batch.events.append((record.task_id, events))
        self._kick()

    def accept(
        self,
        record: TaskRecord,
        wire: str,
        route: str,
        idempotency: IdempotencyRecord | None,
    ) -> asyncio.Future[None]:
        """Record an accepted job: the future resolves once committed (JournalUnavailable
        if not). Whatever else happens to the job in this loop iteration (its placement)
        rides in the same transaction."""
        spec = record.spec
        self._pending.batch.accepted.append(
            Accepted(
                spec.task_id,
                wire,
                route,
                spec.api_key,
                spec.correlation_id,
                record.detached,
                record.created_at_ms,
                idempotency,
            )
        )
        return self._committed()

    def running(self, record: TaskRecord) -> None:
        """An attempt starts: `record.journaled_running` resolves once it is durable."""
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        future.add_done_callback(_retrieved)
        record.journaled_running = future
        self._change(record, lambda error: _resolve(future, error))

    def requeued(self, record: TaskRecord) -> None:
        self._change(record, None)

    def finished(self, record: TaskRecord, publish: Callable[[], None]) -> None:
        """The end of a job: `publish` (its terminal event) runs once committed. If the
        journal cannot commit it, the end is published anyway: the client must learn
        it, and a restart would end the job (running, for the journal) typed."""
        self._change(record, lambda _error: publish())

    def _change(
        self, record: TaskRecord, done: Callable[[BaseException | None], None] | None
    ) -> None:
        events = record.events.take_unjournaled()
        pending = self._pending
        if events:
            pending.batch.events.append((record.task_id, events))
        pending.batch.changes.append(state_change(record))
        if done is not None:
            pending.done.append(done)
        self._kick()

    def _kick(self) -> None:
        """Hand the pending batch to the writer at the end of this loop iteration (so
        what the same iteration adds rides in the same transaction)."""
        if self._kick_scheduled or not (self._pending.batch or self._pending.done):
            return
        assert self._loop is not None
        self._kick_scheduled = True
        self._loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        self._kick_scheduled = False
        pending, self._pending = self._pending, _Pending()
        if pending.batch or pending.done:
            self._queue.put(pending)

    def _committed(self) -> asyncio.Future[None]:
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._pending.done.append(lambda error: _resolve(future, error))
        self._kick()
        return future

    # -- the writer thread ---------------------------------------------------------------

    def _write_loop(self) -> None:
        assert self._loop is not None
        while True:
            item = self._queue.get()
            items = [item]
            with contextlib.suppress(queue.Empty):
                while True:
                    items.append(self._queue.get_nowait())
            stop = any(i is _STOP for i in items)
            work = [i for i in items if isinstance(i, _Pending)]
            if work:
                self._commit(work)
            if stop:
                return

    def _commit(self, work: list[_Pending]) -> None:
        assert self._loop is not None
        merged = WriteBatch([], [], [])
        for pending in work:
            merged.accepted += pending.batch.accepted
            merged.events += pending.batch.events
            merged.changes += pending.batch.changes
        error: BaseException | None = None
        if merged:
            try:
                self.store.write(merged)
            except Exception as exc:  # noqa: BLE001 - reported to every waiter
                error = JournalUnavailable(f"the job journal cannot write: {exc}")
                log.error("journal write failed: %s", exc)
        self.failed = error
        callbacks = [cb for pending in work for cb in pending.done]
        if callbacks:
            with contextlib.suppress(RuntimeError):  # the loop closed under a crash
                self._loop.call_soon_threadsafe(_run_all, callbacks, error)

    # -- reads (off the loop) ------------------------------------------------------------

    async def task(self, task_id: str) -> JournaledTask | None:
        return await asyncio.to_thread(self.store.task, task_id)

    async def events(self, task_id: str, after_id: int) -> list[Event]:
        return await asyncio.to_thread(self.store.events, task_id, after_id)

    async def idempotency(self, scope: str, since_ms: int) -> IdempotencyRecord | None:
        return await asyncio.to_thread(self.store.idempotency, scope, since_ms)

    async def prune(self, before_ms: int) -> int:
        return await asyncio.to_thread(self.store.prune, before_ms)


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark a failure as seen (its attempt may have ended before it awaited)."""
    if not future.cancelled():
        future.exception()


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _run_all(
    callbacks: list[Callable[[BaseException | None], None]], error: BaseException | None
) -> None:
    for callback in callbacks:
        try:
            callback(error)
        except Exception:  # a broken waiter must not stop the others
            log.exception("journal callback failed")
