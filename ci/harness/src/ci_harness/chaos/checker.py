"""The chaos checker: REL-01..05 decided from a history alone (pure functions).

Input: the records of a history file (see `history`). Output: a `Verdict` with one list
of violations per rule. Nothing here does I/O or reads a clock.

The rules, one function each:

- `lost_jobs` (REL-01/03): every accepted job (202 received, or a one-round-trip stream
  answered 200 with its job's id in `X-Llorch-Task-Id`, or its first SSE byte) has a
  terminal state in the final phase: `GET /v2/tasks/{id}`
  answers with `completed`, `failed` or `cancelled`, and its replay from the start ends
  with a terminal event.
- `double_terminals` (REL-01): every terminal observation of a job (a terminal event on
  any read, the final status) is the same state and code, and no read carries two
  terminal events or anything after one.
- `resume_mismatches` (REL-04): across one client's reads of a job (a first read and the
  resumes that follow it with `Last-Event-ID`) token indices run 0, 1, 2, ... with no gap
  or repeat and event ids increase; for every index both a client's reads and the final
  replay hold, the token text is the same. (After an orchestrator crash the replay of a
  job that was running may hold fewer tokens than a client saw: the journal keeps
  tokens in batches, and such a job ends with an error. A job that completed keeps every
  token a client read.)
- `idempotency_mismatches` (REL-05): every request with one `Idempotency-Key` and the
  same body that was answered with a job names the same job; a deliberate reuse of a key
  with another body, sent after the key's job was accepted, is answered 422.

Jobs never accepted (connection refused while the orchestrator was down, 429s, 503s)
are not lost; they are counted in `Verdict.never_accepted`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "TERMINAL_STATES",
    "Terminal",
    "Verdict",
    "Violation",
    "accepted_tasks",
    "check",
    "double_terminals",
    "idempotency_mismatches",
    "lost_jobs",
    "resume_mismatches",
    "terminal_of",
]

Record = dict[str, Any]
TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})
STREAM_OPS = frozenset({"stream_v2", "chat", "completion"})
FRESH_READ_OPS = STREAM_OPS | {"events", "replay"}
Terminal = tuple[str, str | None]  # (state, error code)


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    task_id: str
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: int
    never_accepted: int
    untracked: int = 0  # one-round-trip streams that never named their job
    lost: list[Violation] = field(default_factory=list)
    double_terminals: list[Violation] = field(default_factory=list)
    resume_mismatches: list[Violation] = field(default_factory=list)
    idempotency_mismatches: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not (self.lost or self.double_terminals or self.resume_mismatches)
            and not self.idempotency_mismatches
        )


@dataclass(slots=True)
class _Read:
    """One HTTP read of a stream: its request, answer and events, in order."""

    request: Record
    response: Record | None = None
    events: list[Record] = field(default_factory=list)

    @property
    def task_id(self) -> str | None:
        for source in (*self.events, self.response or {}, self.request):
            if source.get("task_id"):
                return str(source["task_id"])
        return None


@dataclass(slots=True)
class _Index:
    requests: dict[int, Record] = field(default_factory=dict)
    reads: dict[int, _Read] = field(default_factory=dict)
    finals: dict[str, Record] = field(default_factory=dict)
    _replays: dict[str, _Read] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Iterable[Record]) -> _Index:
        index = cls()
        for record in records:
            kind = record["type"]
            if kind == "request":
                index.requests[record["req"]] = record
                index.reads[record["req"]] = _Read(record)
            elif kind == "response" and record["req"] in index.reads:
                index.reads[record["req"]].response = record
            elif kind == "event" and record["req"] in index.reads:
                index.reads[record["req"]].events.append(record)
            elif kind == "final":
                index.finals[record["task_id"]] = record
        return index

    def replay(self, task_id: str) -> _Read | None:
        """The final phase's read of the job from the start (the last, if several)."""
        if not self._replays:
            self._replays = {
                str(r.request.get("task_id")): r
                for r in self.reads.values()
                if r.request["op"] == "replay"
            }
        return self._replays.get(task_id)


def terminal_of(event: Record) -> Terminal | None:
    """The terminal state an event announces (None for a non-terminal event)."""
    if event["name"] == "end":
        return ("completed", None)
    if event["name"] == "error":
        code = event.get("code")
        return ("cancelled" if code == "CANCELLED" else "failed", code)
    return None


def accepted_tasks(records: Iterable[Record]) -> dict[str, float]:
    """Task id -> monotonic time it was first known accepted (202; a stream's 200 that
    named its job; a stream's first event)."""
    accepted: dict[str, float] = {}
    for read in _Index.of(records).reads.values():
        op, response = read.request["op"], read.response
        when: float | None = None
        if op == "submit" and response and response.get("status") == 202:
            when = response["mono"]
        elif op in STREAM_OPS and read.events:
            when = read.events[0]["mono"]
        elif op in STREAM_OPS and response and response.get("status") == 200:
            when = response["mono"]  # the stream's answer named the job (X-Llorch-Task-Id)
        task_id = read.task_id
        if when is not None and task_id and (task_id not in accepted or when < accepted[task_id]):
            accepted[task_id] = when
    return accepted


# -- rule 1: no accepted job lost ---------------------------------------------------------


def lost_jobs(records: list[Record]) -> list[Violation]:
    index = _Index.of(records)
    lost = []
    for task_id in sorted(accepted_tasks(records)):
        final = index.finals.get(task_id)
        replay = index.replay(task_id)
        if final is None:
            lost.append(Violation("lost", task_id, "no final read of the job"))
        elif final.get("status") != 200:
            lost.append(Violation("lost", task_id, f"GET /v2/tasks answered {final['status']}"))
        elif final.get("state") not in TERMINAL_STATES:
            lost.append(Violation("lost", task_id, f"still {final.get('state')} at the end"))
        elif replay is None or not replay.events or terminal_of(replay.events[-1]) is None:
            lost.append(Violation("lost", task_id, "its replay has no terminal event"))
    return lost


# -- rule 2: one terminal state -------------------------------------------------------------


def double_terminals(records: list[Record]) -> list[Violation]:
    index = _Index.of(records)
    seen: dict[str, set[Terminal]] = defaultdict(set)
    found = []
    for read in index.reads.values():
        task_id = read.task_id
        ends = [i for i, e in enumerate(read.events) if terminal_of(e) is not None]
        if task_id is None or not ends:
            continue
        if len(ends) > 1 or ends[0] != len(read.events) - 1:
            found.append(Violation("double_terminal", task_id, "events after a terminal event"))
        for position in ends:
            terminal = terminal_of(read.events[position])
            assert terminal is not None
            seen[task_id].add(terminal)
    for task_id, final in index.finals.items():
        if final.get("status") == 200 and final.get("state") in TERMINAL_STATES:
            seen[task_id].add((final["state"], final.get("code")))
    for task_id, terminals in sorted(seen.items()):
        if len(terminals) > 1:
            found.append(
                Violation("double_terminal", task_id, f"terminals {sorted(terminals, key=str)}")
            )
    return found


# -- rule 3: resumed streams equal an uninterrupted one --------------------------------------


def _chains(index: _Index) -> list[tuple[str, list[_Read]]]:
    """One client's reads of one job: a read from the start, then its resumes."""
    chains: list[tuple[str, list[_Read]]] = []
    open_chain: dict[tuple[str, str], list[_Read]] = {}
    reads = sorted(index.reads.values(), key=lambda r: r.request["mono"])
    for read in reads:
        op, task_id = read.request["op"], read.task_id
        if op not in FRESH_READ_OPS or op == "replay" or task_id is None:
            continue
        key = (str(read.request.get("job")), task_id)
        if op == "events" and read.request.get("after_id") is not None and key in open_chain:
            open_chain[key].append(read)
            continue
        open_chain[key] = [read]
        chains.append((task_id, open_chain[key]))
    return chains


def _chain_problems(reads: list[_Read]) -> list[str]:
    problems = []
    next_index, last_id = 0, -1
    for read in reads:
        after = read.request.get("after_id")
        if after is not None and after != last_id:
            problems.append(f"resumed after id {after}, but the last id seen was {last_id}")
        for event in read.events:
            if event.get("id") is not None:
                if event["id"] <= last_id:
                    problems.append(f"event id {event['id']} after id {last_id}")
                last_id = event["id"]
            if event["name"] == "token":
                if event["i"] != next_index:
                    problems.append(f"token index {event['i']} where {next_index} was due")
                next_index = event["i"] + 1
    return problems


def _tokens(reads: Iterable[_Read]) -> dict[int, str]:
    return {e["i"]: e["t"] for r in reads for e in r.events if e["name"] == "token"}


def resume_mismatches(records: list[Record]) -> list[Violation]:
    index = _Index.of(records)
    found = []
    for task_id, reads in _chains(index):
        found += [Violation("resume", task_id, p) for p in _chain_problems(reads)]
        replay = index.replay(task_id)
        if replay is None:
            continue
        replayed, seen = _tokens([replay]), _tokens(reads)
        for i in sorted(set(replayed) & set(seen)):
            if replayed[i] != seen[i]:
                detail = f"token {i}: the client read {seen[i]!r}, the replay has {replayed[i]!r}"
                found.append(Violation("resume", task_id, detail))
        missing = sorted(set(seen) - set(replayed))
        if missing and index.finals.get(task_id, {}).get("state") == "completed":
            detail = (
                f"completed, but its replay lacks tokens {missing[0]}..{missing[-1]} a client read"
            )
            found.append(Violation("resume", task_id, detail))
    for task_id in sorted(
        {r.request["task_id"] for r in index.reads.values() if r.request["op"] == "replay"}
    ):
        replay = index.replay(task_id)
        assert replay is not None
        found += [Violation("resume", task_id, f"replay: {p}") for p in _chain_problems([replay])]
    return found


# -- rule 4: idempotent retries answer with the same job -------------------------------------


def idempotency_mismatches(records: list[Record]) -> list[Violation]:
    index = _Index.of(records)
    by_key: dict[str, list[_Read]] = defaultdict(list)
    for read in sorted(index.reads.values(), key=lambda r: r.request["mono"]):
        if read.request.get("idem"):
            by_key[read.request["idem"]].append(read)
    found = []
    for key, reads in sorted(by_key.items()):
        body = next((r.request["digest"] for r in reads if not r.request.get("probe")), None)
        tasks: set[str] = set()
        accepted_at: float | None = None
        for read in reads:
            status = (read.response or {}).get("status")
            answered = read.task_id if _answered_with_job(read) else None
            if read.request["digest"] == body:
                if answered:
                    tasks.add(answered)
                    accepted_at = accepted_at or (read.response or read.events[0])["mono"]
                if status == 422:
                    found.append(
                        Violation("idempotency", key, "422 for a retry with the same body")
                    )
            elif _after(read, accepted_at) and _served_despite_reuse(status):
                detail = f"another body with the key got {status}"
                found.append(Violation("idempotency", key, detail))
        if len(tasks) > 1:
            found.append(Violation("idempotency", key, f"one key, jobs {sorted(tasks)}"))
    return found


def _after(read: _Read, accepted_at: float | None) -> bool:
    return accepted_at is not None and read.request["mono"] > accepted_at


def _served_despite_reuse(status: int | None) -> bool:
    """A reused key with another body must get 422; no answer (the orchestrator was
    down), 429 and 5xx say nothing about the key."""
    if status is None:
        return False
    return 200 <= status < 300 or (400 <= status < 500 and status not in (422, 429))


def _answered_with_job(read: _Read) -> bool:
    status = (read.response or {}).get("status")
    if read.request["op"] == "submit":
        return status == 202
    return read.request["op"] in STREAM_OPS and status == 200 and bool(read.events)


# -- all rules -------------------------------------------------------------------------------


def check(records: list[Record]) -> Verdict:
    accepted = accepted_tasks(records)
    jobs: dict[str, bool] = {}
    index = _Index.of(records)
    for read in index.reads.values():
        job = read.request.get("job")
        if job is None or read.request["op"] == "replay":
            continue
        jobs[job] = jobs.get(job, False) or (read.task_id in accepted)
    untracked = sum(
        1
        for read in index.reads.values()
        if read.request["op"] in STREAM_OPS and read.events and read.task_id is None
    )
    return Verdict(
        accepted=len(accepted),
        never_accepted=sum(1 for ok in jobs.values() if not ok),
        untracked=untracked,
        lost=lost_jobs(records),
        double_terminals=double_terminals(records),
        resume_mismatches=resume_mismatches(records),
        idempotency_mismatches=idempotency_mismatches(records),
    )
