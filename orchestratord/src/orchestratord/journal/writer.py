"""`Journal`: the orchestrator's write-ahead record of every accepted job (REL-01..03).

A write is one framed record appended to the journal's log (`JournalLog`: a copy into a
mapped file, on the loop). What one loop turn queues is one record, written at the end of
that turn (a group commit), before its waiters are resolved; with `journal_sync: full`
the record is also synced to the disk. An admission does not wait for the turn's end:
it writes at once (`write_now`) what is pending, its acceptance and, when the job was
placed at once, its attempt's start, so the 202 or the first byte waits for no other
turn and the start is durable before the engine's first token can come. (In `full` mode
the admission waits for the group commit: a sync costs more than a turn.) The store
(SQLite: an index of jobs, keys and where their events are in the log) takes the log's
records in bulk, one transaction per `flush_ms`, in a worker thread. (Committing each
turn to SQLite on the loop cost the gateway ~15 % more CPU per token event at 100 events
a job, in `bench/gateway_overhead`; this way, 4-11 % at c=16 with memory keeping as
many finished jobs, within 5 % at the defaults, which keep fewer: bench/README.md.) Reads
first hand the store what it lacks, so they see every acknowledged write. What must be
durable before anyone sees it is written before; the rest is batched:

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
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from orchestratord.journal.log import JournalLog
from orchestratord.journal.records import (
    Accepted,
    Event,
    IdempotencyRecord,
    JournaledTask,
    StateChange,
    WriteBatch,
)
from orchestratord.journal.store import JournalStore
from orchestratord.tasks import TaskRecord

__all__ = ["EVENT_ID_GAP", "Journal", "JournalUnavailable", "state_change"]

log = logging.getLogger("orchestratord.journal")

# More events than a stalled writer lets through between two commits (at 1,000 tokens/s
# a job needs 1,000 s): a restarted job's next id is this far past its last journaled one.
EVENT_ID_GAP = 1_000_000
_CHECKPOINT_S = 5.0
_PRUNE_BATCH = 256


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


class Journal:
    def __init__(self, store: JournalStore, log_: JournalLog, *, flush_ms: int = 50) -> None:
        self.store = store
        self._log = log_
        self._flush_s = flush_ms / 1000.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = _Pending()
        self._kick_scheduled = False
        self.failed: BaseException | None = None
        # How far into the log the store has taken. The records after it are read back
        # from the log for the store: the loop keeps no object of a written record (a
        # second's worth of them, kept, went through the collector's generations).
        self._applied = (0, 0)
        self._store_lock = asyncio.Lock()  # one writer of the store at a time

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Hand the store what an earlier run left in the log only (a crash)."""
        self._loop = asyncio.get_running_loop()
        async with self._store_lock:
            position = await asyncio.to_thread(self.store.applied_position)
            pending = await asyncio.to_thread(lambda: list(self._log.after(position)))
            if pending:  # every earlier file, whole: the store has taken up to this one
                await asyncio.to_thread(self.store.apply, pending, (self._log.file, 0))
                log.info("journal: indexed %d batches the store lacked", len(pending))
            self._applied = self._log.position

    async def unfinished(self) -> list[JournaledTask]:
        await self.apply()
        return await asyncio.to_thread(self.store.unfinished)

    async def flush_loop(self, live: Callable[[], Iterable[TaskRecord]]) -> None:
        """Every `flush_ms`: the live jobs' new events, in one batch; the log's batches
        to the store; a checkpoint of the store's write-ahead log every `_CHECKPOINT_S`
        (all off the loop)."""
        since_checkpoint = 0.0
        while True:
            await asyncio.sleep(self._flush_s)
            self.collect(live())
            await asyncio.sleep(0)  # the collected batch is written at the end of a turn
            await self.apply()
            since_checkpoint += self._flush_s
            if since_checkpoint >= _CHECKPOINT_S:
                since_checkpoint = 0.0
                try:
                    await asyncio.to_thread(self.store.checkpoint)
                except Exception as exc:  # noqa: BLE001 - the next one tries again
                    log.warning("journal checkpoint failed: %s", exc)

    async def stop(self, live: Iterable[TaskRecord]) -> None:
        """Write what is left, hand it to the store, close both."""
        self.collect(live)
        if self._pending.batch or self._pending.done:
            self._hand_over()
        await self.apply()
        self._log.close()
        self.store.close()

    async def apply(self) -> None:
        """Hand the store the records only the log holds, read back from the log (one
        transaction, off the loop). If the store cannot take them, they are tried
        again."""
        async with self._store_lock:
            start, end = self._applied, self._log.position
            if end == start:
                return
            try:
                await asyncio.to_thread(self._apply, start, end)
            except Exception as exc:  # noqa: BLE001 - kept in the log, tried again
                log.error("the journal's store cannot take the log's records: %s", exc)
                return
            self._applied = end

    def _apply(self, start: tuple[int, int], end: tuple[int, int]) -> None:
        self.store.apply(list(self._log.between(start, end)), end)

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
        """The end of a job, its terminal event included (published by `publish` once
        committed, with the id journaled: nothing else can be appended meanwhile). If the
        journal cannot commit it, the end is published anyway: the client must learn
        it, and a restart would end the job (running, for the journal) typed."""
        terminal = (record.events.next_id, *record.terminal_event())
        self._change(record, lambda _error: publish(), terminal)

    def _change(
        self,
        record: TaskRecord,
        done: Callable[[BaseException | None], None] | None,
        terminal: Event | None = None,
    ) -> None:
        events = record.events.take_unjournaled()
        if terminal is not None:  # held: it gets this id when published after the commit
            events.append(terminal)
        pending = self._pending
        if events:
            pending.batch.events.append((record.task_id, events))
        pending.batch.changes.append(state_change(record))
        if done is not None:
            pending.done.append(done)
        self._kick()

    def write_now(self) -> None:
        """Write what is pending at once, unless every record is synced to the disk
        (then the end of the turn's group commit is cheaper than a sync each)."""
        if not self._log.syncs and (self._pending.batch or self._pending.done):
            self._hand_over()

    def _kick(self) -> None:
        """Write the pending batch at the end of this loop iteration: what the same
        iteration adds rides in the same record (a group commit)."""
        if self._kick_scheduled or not (self._pending.batch or self._pending.done):
            return
        assert self._loop is not None
        self._kick_scheduled = True
        self._loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        self._kick_scheduled = False
        pending, self._pending = self._pending, _Pending()
        if pending.batch or pending.done:
            self._commit(pending)

    def _committed(self) -> asyncio.Future[None]:
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._pending.done.append(lambda error: _resolve(future, error))
        self._kick()
        return future

    # -- the commit ----------------------------------------------------------------------

    def _commit(self, pending: _Pending) -> None:
        error: BaseException | None = None
        if pending.batch:
            try:
                self._log.append(pending.batch)
            except Exception as exc:  # noqa: BLE001 - reported to every waiter
                error = JournalUnavailable(f"the job journal cannot write: {exc}")
                log.error("journal write failed: %s", exc)
        self.failed = error
        _run_all(pending.done, error)

    # -- reads (off the loop) ------------------------------------------------------------

    async def task(self, task_id: str) -> JournaledTask | None:
        await self.apply()
        return await asyncio.to_thread(self.store.task, task_id)

    async def events(self, task_id: str, after_id: int) -> list[Event]:
        """The job's events after `after_id`, in order, once each."""
        await self.apply()
        async with self._store_lock:  # prune removes log files meanwhile otherwise
            return await asyncio.to_thread(self._events, task_id, after_id)

    def _events(self, task_id: str, after_id: int) -> list[Event]:
        seen: dict[int, Event] = {}
        read: set[tuple[int, int]] = set()
        for span in self.store.event_spans(task_id, after_id):
            where = (span.log_file, span.offset)
            if where in read:  # two spans of the job in one record
                continue
            read.add(where)
            for owner, events in self._log.read(*where).events:
                if owner != task_id:
                    continue
                for event in events:
                    if event[0] > after_id:
                        seen.setdefault(event[0], event)
        return [seen[i] for i in sorted(seen)]

    async def idempotency(self, scope: str, since_ms: int) -> IdempotencyRecord | None:
        await self.apply()
        return await asyncio.to_thread(self.store.idempotency, scope, since_ms)

    async def prune(self, before_ms: int) -> int:
        """Forget what ended before `before_ms`, in small transactions off the loop,
        then the log files no kept job needs."""
        total = 0
        while True:
            async with self._store_lock:
                pruned = await asyncio.to_thread(self.store.prune, before_ms, _PRUNE_BATCH)
            if not pruned:
                break
            total += pruned
        async with self._store_lock:
            oldest = await asyncio.to_thread(self.store.oldest_log_file)
            applied, _ = await asyncio.to_thread(self.store.applied_position)
            self._log.remove_before(applied if oldest is None else min(oldest, applied))
        return total


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
