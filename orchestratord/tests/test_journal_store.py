"""The journal's SQLite store and the restart plan (REL-01..03): one terminal state per
job, events kept in order without duplicates, idempotency keys within retention, pruning,
and what a restart does with queued and running jobs."""

from __future__ import annotations

from pathlib import Path

from orchestratord.journal.recovery import EndRestarted, Requeue, plan, restart_error
from orchestratord.journal.store import (
    Accepted,
    IdempotencyRecord,
    SqliteJournal,
    StateChange,
    WriteBatch,
)
from orchestratord.journal.writer import EVENT_ID_GAP


def _accept(task_id: str, key: IdempotencyRecord | None = None) -> Accepted:
    return Accepted(task_id, '{"model":"m"}', "v2", "client-a", "corr", True, 1000, key)


def _store(tmp_path: Path) -> SqliteJournal:
    return SqliteJournal(tmp_path / "journal.sqlite")


def test_an_accepted_job_is_unfinished_and_queued_until_it_changes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write(WriteBatch([_accept("a"), _accept("b")], [], []))
    rows = store.unfinished()
    assert [(r.task_id, r.state, r.last_event_id) for r in rows] == [
        ("a", "queued", -1),
        ("b", "queued", -1),
    ]
    assert rows[0].detached and rows[0].api_key == "client-a"


def test_only_the_first_terminal_state_of_a_job_is_kept(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write(WriteBatch([_accept("a")], [], [StateChange("a", "running", 1, "p1", 5)]))
    done = StateChange("a", "completed", 1, "p1", 5, 9, None, '{"tokens_out":3}', 2, 3, "stop")
    late = StateChange("a", "failed", 1, "p1", 5, 10, '{"code":"X"}')
    store.write(WriteBatch([], [], [done, late]))
    row = store.task("a")
    assert row is not None and row.state == "completed" and row.error is None
    assert row.end_json == '{"tokens_out":3}' and row.finished_ms == 9
    assert store.unfinished() == []


def test_events_are_kept_in_order_once_each(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write(WriteBatch([_accept("a")], [("a", [(1, "token", "x"), (0, "started", "{}")])], []))
    store.write(WriteBatch([], [("a", [(1, "token", "x"), (2, "token", "y")])], []))
    assert store.events("a", -1) == [(0, "started", "{}"), (1, "token", "x"), (2, "token", "y")]
    assert store.events("a", 1) == [(2, "token", "y")]
    row = store.task("a")
    assert row is not None and row.last_event_id == 2


def test_an_idempotency_key_is_found_within_retention_only(tmp_path: Path) -> None:
    store = _store(tmp_path)
    key = IdempotencyRecord("client-a\x00k1", "digest", "a", 1000)
    store.write(WriteBatch([_accept("a", key)], [], []))
    assert store.idempotency("client-a\x00k1", 500) == key
    assert store.idempotency("client-a\x00k1", 1001) is None
    assert store.idempotency("client-b\x00k1", 0) is None


def test_pruning_forgets_ended_jobs_and_old_keys_but_not_unfinished_ones(tmp_path: Path) -> None:
    store = _store(tmp_path)
    key = IdempotencyRecord("s", "d", "a", 1000)
    store.write(WriteBatch([_accept("a", key), _accept("b")], [("a", [(0, "end", "{}")])], []))
    store.write(WriteBatch([], [], [StateChange("a", "completed", 1, None, None, 2000)]))
    assert store.prune(3000, limit=10) == 1
    assert store.prune(3000, limit=10) == 0
    assert store.task("a") is None and store.events("a", -1) == []
    assert store.idempotency("s", 0) is None
    assert [r.task_id for r in store.unfinished()] == ["b"]


def test_the_journal_survives_reopening(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write(WriteBatch([_accept("a")], [("a", [(0, "started", "{}")])], []))
    store.close()
    again = _store(tmp_path)
    row = again.task("a")
    assert row is not None and row.last_event_id == 0


def test_a_restart_requeues_queued_jobs_after_their_events(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write(WriteBatch([_accept("a")], [("a", [(0, "started", "{}")])], []))
    (row,) = store.unfinished()
    assert plan(row) == Requeue(1)


def test_a_restart_ends_running_jobs_typed_past_any_id_a_client_saw(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write(
        WriteBatch(
            [_accept("a")],
            [("a", [(0, "started", "{}"), (1, "token", "x")])],
            [StateChange("a", "running", 2, "pool-7")],
        )
    )
    (row,) = store.unfinished()
    assert plan(row) == EndRestarted(1 + EVENT_ID_GAP)
    error = restart_error(row)
    assert error.code == "ORCHESTRATOR_RESTART" and error.retriable
    assert "pool-7" in error.message and "attempt 2" in error.message
