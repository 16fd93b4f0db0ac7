"""The journal's log and its SQLite index, and the restart plan (REL-01..03): one terminal
state per job, events kept in order without duplicates and read back from the log,
idempotency keys within retention, pruning (rows and log files), what a crash leaves
in the log only, and what a restart does with queued and running jobs."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from orchestratord.events import EventLog
from orchestratord.journal.log import JournalLog
from orchestratord.journal.records import (
    Accepted,
    Event,
    IdempotencyRecord,
    JournaledTask,
    StateChange,
    WriteBatch,
)
from orchestratord.journal.recovery import EndRestarted, Requeue, plan, restart_error
from orchestratord.journal.store import JournalFormatError, SqliteJournal
from orchestratord.journal.writer import EVENT_ID_GAP, Journal


def _accept(task_id: str, key: IdempotencyRecord | None = None) -> Accepted:
    return Accepted(task_id, '{"model":"m"}', "v2", "client-a", "corr", True, 1000, key)


class _Files:
    """A journal's log and store in `tmp_path`, written the way `Journal` writes them."""

    def __init__(self, root: Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.root = root
        self.log = JournalLog(root / "journal-wal", max_bytes=max_bytes)
        self.store = SqliteJournal(root / "journal.sqlite")
        self.journal = Journal(self.store, self.log)

    def write(self, *batches: WriteBatch, index: bool = True) -> None:
        located = [self.log.append(b) for b in batches]
        if index:
            self.store.apply(located, self.log.position)

    def events(self, task_id: str, after_id: int = -1) -> list[Event]:
        return self.journal._events(task_id, after_id)

    def close(self) -> None:
        self.log.close()
        self.store.close()


def _row(files: _Files, task_id: str) -> JournaledTask:
    row = files.store.task(task_id)
    assert row is not None
    return row


def test_an_accepted_job_is_unfinished_and_queued_until_it_changes(tmp_path: Path) -> None:
    files = _Files(tmp_path)
    files.write(WriteBatch([_accept("a"), _accept("b")], [], []))
    rows = files.store.unfinished()
    assert [(r.task_id, r.state, r.last_event_id) for r in rows] == [
        ("a", "queued", -1),
        ("b", "queued", -1),
    ]
    assert rows[0].detached and rows[0].api_key == "client-a"


def test_only_the_first_terminal_state_of_a_job_is_kept(tmp_path: Path) -> None:
    files = _Files(tmp_path)
    files.write(WriteBatch([_accept("a")], [], [StateChange("a", "running", 1, "p1", 5)]))
    done = StateChange("a", "completed", 1, "p1", 5, 9, None, '{"tokens_out":3}', 2, 3, "stop")
    late = StateChange("a", "failed", 1, "p1", 5, 10, '{"code":"X"}')
    files.write(WriteBatch([], [], [done]), WriteBatch([], [], [late]))
    files.write(WriteBatch([], [], [late]))
    row = _row(files, "a")
    assert row.state == "completed" and row.error is None
    assert row.end_json == '{"tokens_out":3}' and row.finished_ms == 9
    assert files.store.unfinished() == []


def test_a_job_accepted_and_ended_in_one_transaction_keeps_its_first_end(tmp_path: Path) -> None:
    files = _Files(tmp_path)
    running = StateChange("a", "running", 1, "p1", 5)
    done = StateChange("a", "completed", 1, "p1", 5, 9, None, "{}", 2, 3, "stop")
    late = StateChange("a", "failed", 1, "p1", 5, 10, '{"code":"X"}')
    files.write(WriteBatch([_accept("a")], [], [running]), WriteBatch([], [], [done, late]))
    row = _row(files, "a")
    assert (row.state, row.finished_ms, row.tokens_out, row.started_ms) == ("completed", 9, 3, 5)


def test_events_are_read_back_from_the_log_in_order_once_each(tmp_path: Path) -> None:
    files = _Files(tmp_path)
    files.write(
        WriteBatch(
            [_accept("a"), _accept("b")], [("a", [(1, "token", "x"), (0, "started", "{}")])], []
        )
    )
    files.write(
        WriteBatch(
            [],
            [("b", [(0, "started", "{}")]), ("a", [(1, "token", "x"), (2, "token", "y")])],
            [],
        )
    )
    assert files.events("a") == [(0, "started", "{}"), (1, "token", "x"), (2, "token", "y")]
    assert files.events("a", 1) == [(2, "token", "y")]
    assert files.events("b") == [(0, "started", "{}")]
    assert _row(files, "a").last_event_id == 2


def test_an_idempotency_key_is_found_within_retention_only(tmp_path: Path) -> None:
    files = _Files(tmp_path)
    key = IdempotencyRecord("client-a\x00k1", "digest", "a", 1000)
    files.write(WriteBatch([_accept("a", key)], [], []))
    assert files.store.idempotency("client-a\x00k1", 500) == key
    assert files.store.idempotency("client-a\x00k1", 1001) is None
    assert files.store.idempotency("client-b\x00k1", 0) is None


def test_pruning_forgets_ended_jobs_old_keys_and_the_log_files_no_kept_job_needs(
    tmp_path: Path,
) -> None:
    files = _Files(tmp_path, max_bytes=1)  # a file per record
    key = IdempotencyRecord("s", "d", "a", 1000)
    files.write(WriteBatch([_accept("a", key)], [("a", [(0, "end", "{}")])], []))
    files.write(WriteBatch([], [], [StateChange("a", "completed", 1, None, None, 2000)]))
    files.write(WriteBatch([_accept("b")], [("b", [(0, "started", "{}")])], []))
    files.write(WriteBatch([_accept("c")], [], []))
    logs = sorted((tmp_path / "journal-wal").iterdir())
    assert len(logs) == 4

    pruned = asyncio.run(files.journal.prune(3000))

    assert pruned == 1
    assert files.store.task("a") is None and files.events("a") == []
    assert files.store.idempotency("s", 0) is None
    assert [r.task_id for r in files.store.unfinished()] == ["b", "c"]
    assert sorted((tmp_path / "journal-wal").iterdir()) == logs[2:]  # from b's acceptance on
    assert files.events("b") == [(0, "started", "{}")]


def test_records_a_crash_left_in_the_log_only_are_indexed_at_the_next_start(
    tmp_path: Path,
) -> None:
    files = _Files(tmp_path)
    files.write(WriteBatch([_accept("a")], [("a", [(0, "started", "{}")])], []))
    files.write(
        WriteBatch(
            [_accept("b")], [("a", [(1, "token", "x")])], [StateChange("a", "running", 1, "p")]
        ),
        index=False,  # the crash came before the store took it
    )
    files.close()
    with (tmp_path / "journal-wal" / "000000000001.wal").open("ab") as torn:
        torn.write(b"\x40\x00\x00\x00\x00\x00")  # half a record: a write cut by the crash

    again = _Files(tmp_path)
    asyncio.run(again.journal.start())

    assert [(r.task_id, r.state) for r in again.store.unfinished()] == [
        ("a", "running"),
        ("b", "queued"),
    ]
    assert again.events("a") == [(0, "started", "{}"), (1, "token", "x")]
    asyncio.run(again.journal.start())  # nothing is indexed twice
    assert len(again.store.unfinished()) == 2 and len(again.events("a")) == 2


def test_a_journal_of_another_layout_is_refused_with_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE tasks (seq INTEGER PRIMARY KEY)")
    with pytest.raises(JournalFormatError, match="move it"):
        SqliteJournal(path)


def test_a_restart_requeues_queued_jobs_after_their_events(tmp_path: Path) -> None:
    files = _Files(tmp_path)
    files.write(WriteBatch([_accept("a")], [("a", [(0, "started", "{}")])], []))
    (row,) = files.store.unfinished()
    assert plan(row) == Requeue(1)


def test_a_restart_ends_running_jobs_typed_past_any_id_a_client_saw(tmp_path: Path) -> None:
    files = _Files(tmp_path)
    files.write(
        WriteBatch(
            [_accept("a")],
            [("a", [(0, "started", "{}"), (1, "token", "x")])],
            [StateChange("a", "running", 2, "pool-7")],
        )
    )
    (row,) = files.store.unfinished()
    assert plan(row) == EndRestarted(1 + EVENT_ID_GAP)
    error = restart_error(row)
    assert error.code == "ORCHESTRATOR_RESTART" and error.retriable
    assert "pool-7" in error.message and "attempt 2" in error.message


def test_a_run_of_tokens_is_read_back_as_one_event_per_token(tmp_path: Path) -> None:
    log = EventLog(16, journaled=True)
    log.append("started", "{}")
    log.append_tokens(["x", "y\nz"], 0)  # a newline in a token's text is escaped in its JSON
    log.append_tokens(["w"], 2)
    taken = log.take_unjournaled()
    assert len(taken) == 3  # the started event and one entry per engine read
    files = _Files(tmp_path)
    files.write(WriteBatch([_accept("a")], [("a", taken)], []))
    assert files.events("a") == [
        (0, "started", "{}"),
        (1, "token", '{"t":"x","i":0}'),
        (2, "token", '{"t":"y\\nz","i":1}'),
        (3, "token", '{"t":"w","i":2}'),
    ]
    assert files.events("a", 2) == [(3, "token", '{"t":"w","i":2}')]
    assert _row(files, "a").last_event_id == 3


def test_a_log_file_a_crash_left_open_reads_to_its_last_record_without_a_torn_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = _Files(tmp_path)
    files.write(WriteBatch([_accept("a")], [("a", [(0, "started", "{}")])], []), index=False)
    files.write(WriteBatch([_accept("b")], [], []), index=False)
    # No close: the process died with the file mapped, its reserved tail still zeroes.
    assert (tmp_path / "journal-wal" / "000000000001.wal").stat().st_size == 4 << 20

    again = _Files(tmp_path)
    with caplog.at_level("WARNING", logger="orchestratord.journal"):
        asyncio.run(again.journal.start())
    assert [r.task_id for r in again.store.unfinished()] == ["a", "b"]
    assert again.events("a") == [(0, "started", "{}")]
    assert not [r for r in caplog.records if "never completed" in r.getMessage()]
    files.close()  # a clean close cuts the file to its records
    assert (tmp_path / "journal-wal" / "000000000001.wal").stat().st_size == files.log.offset


def test_a_record_larger_than_a_log_file_gets_a_file_of_its_own(tmp_path: Path) -> None:
    files = _Files(tmp_path, max_bytes=64)
    big = WriteBatch([_accept("a")], [("a", [(0, "token", "x" * 500)])], [])
    files.write(WriteBatch([_accept("b")], [], []), big, WriteBatch([_accept("c")], [], []))
    assert files.events("a") == [(0, "token", "x" * 500)]
    assert [r.task_id for r in files.store.unfinished()] == ["b", "a", "c"]
    assert files.log.file == 3  # b, then a alone, then c


def test_a_log_file_grows_as_it_fills_and_rotates_at_max_bytes(tmp_path: Path) -> None:
    files = _Files(tmp_path, max_bytes=12 << 20)
    chunk = "x" * (1 << 20)
    for i in range(14):  # ~1 MiB records: the first file grows 4 -> 8 -> 12 MiB, then a second
        files.write(WriteBatch([_accept(f"t{i}")], [(f"t{i}", [(0, "token", chunk)])], []))
    assert files.log.file == 2
    assert (tmp_path / "journal-wal" / "000000000001.wal").stat().st_size <= 12 << 20
    assert all(files.events(f"t{i}") == [(0, "token", chunk)] for i in range(14))


def test_the_store_takes_what_the_log_holds_past_it_read_back_from_its_files(
    tmp_path: Path,
) -> None:
    files = _Files(tmp_path, max_bytes=64)  # each record in a file of its own: rotations
    asyncio.run(files.journal.start())
    events = EventLog(16, journaled=True)
    events.append("started", "{}")
    events.append_tokens(["x", "y"], 0)
    files.log.append(WriteBatch([_accept("a")], [], []))
    files.log.append(
        WriteBatch([], [("a", events.take_unjournaled())], [StateChange("a", "running", 1, "p")])
    )
    assert files.store.task("a") is None  # in the log only

    asyncio.run(files.journal.apply())

    row = _row(files, "a")
    assert (row.state, row.last_event_id) == ("running", 2)
    assert files.events("a") == [
        (0, "started", "{}"),
        (1, "token", '{"t":"x","i":0}'),
        (2, "token", '{"t":"y","i":1}'),
    ]
    files.log.append(WriteBatch([_accept("b")], [], []))
    asyncio.run(files.journal.apply())  # only what came since
    assert [r.task_id for r in files.store.unfinished()] == ["a", "b"]
    assert len(files.events("a")) == 3
    assert len(list((tmp_path / "journal-wal").glob("*.wal"))) == 3
