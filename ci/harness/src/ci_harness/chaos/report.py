"""The chaos run's table: per fault kind, faults injected, jobs affected and their
outcomes, then totals and the checker's verdicts (pure: from the history and a verdict).

A job is affected by a fault when it was live (accepted, not yet seen terminal) at some
moment of the fault, on the process or host the fault hit: every job for the
orchestrator, the jobs on the host's pools for a pool manager, a partition, a worker or
an engine (the pool a job ran on comes from its final status or its `started` event).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from ci_harness.chaos.checker import Verdict, Violation, accepted_tasks, terminal_of
from ci_harness.chaos.nemesis import FAULT_KINDS

__all__ = ["FaultCounts", "fault_counts", "table"]

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Job:
    task_id: str
    live_from: float
    live_to: float
    host: str | None
    outcome: str  # completed, cancelled, failed:<code>, lost


@dataclass(frozen=True, slots=True)
class FaultCounts:
    injected: Counter[str]
    skipped: Counter[str]


def fault_counts(records: list[Record]) -> FaultCounts:
    injected: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for record in records:
        if record["type"] == "fault":
            kind = record["plan"]["kind"]
            (skipped if record.get("skipped") else injected)[kind] += 1
    return FaultCounts(injected, skipped)


def _jobs(records: list[Record], verdict: Verdict) -> list[_Job]:
    setup = next((r for r in records if r["type"] == "setup"), {})
    host_of = {pool: host for host, pools in setup.get("hosts", {}).items() for pool in pools}
    lost = {v.task_id for v in verdict.lost}
    ends: dict[str, float] = {}
    pools: dict[str, str] = {}
    finals: dict[str, Record] = {}
    for record in records:
        task_id = record.get("task_id")
        if record["type"] == "event" and task_id:
            if terminal_of(record) is not None and task_id not in ends:
                ends[task_id] = record["mono"]
            if record.get("pool"):
                pools[task_id] = record["pool"]
        elif record["type"] == "final":
            finals[record["task_id"]] = record
            if record.get("pool"):
                pools[record["task_id"]] = record["pool"]
    jobs = []
    for task_id, accepted_at in accepted_tasks(records).items():
        final = finals.get(task_id, {})
        end = ends[task_id] if task_id in ends else float(final.get("mono", float("inf")))
        host = host_of.get(pools.get(task_id, ""))
        jobs.append(_Job(task_id, accepted_at, end, host, _outcome(final, task_id in lost)))
    return jobs


def _outcome(final: Record, lost: bool) -> str:
    if lost or not final:
        return "lost"
    if final.get("state") == "failed":
        return f"failed:{final.get('code')}"
    return str(final.get("state"))


def _affected(job: _Job, fault: Record) -> bool:
    if job.live_to < fault["start"] or job.live_from > fault["end"]:
        return False
    plan = fault["plan"]
    return plan["host"] is None or job.host == plan["host"]


def _outcomes(jobs: list[_Job]) -> tuple[int, str, int, int]:
    counts = Counter(j.outcome for j in jobs)
    failed = ", ".join(
        f"{k.removeprefix('failed:')} {n}"
        for k, n in sorted(counts.items())
        if k.startswith("failed:")
    )
    return counts["completed"], failed or "-", counts["cancelled"], counts["lost"]


def table(records: list[Record], verdict: Verdict) -> str:
    jobs = _jobs(records, verdict)
    counts = fault_counts(records)
    affected: dict[str, set[str]] = defaultdict(set)
    for fault in records:
        if fault["type"] == "fault" and not fault.get("skipped"):
            kind = fault["plan"]["kind"]
            affected[kind] |= {j.task_id for j in jobs if _affected(j, fault)}
    by_id = {j.task_id: j for j in jobs}
    header = (
        "fault kind",
        "injected",
        "skipped",
        "jobs affected",
        "completed",
        "failed (by code)",
        "cancelled",
        "lost",
    )
    rows = []
    for kind in FAULT_KINDS:
        hit = [by_id[t] for t in sorted(affected[kind])]
        rows.append((kind, counts.injected[kind], counts.skipped[kind], len(hit), *_outcomes(hit)))
    total = sum(counts.injected.values()), sum(counts.skipped.values())
    rows.append(("total (all jobs)", *total, len(jobs), *_outcomes(jobs)))
    text = _render(header, rows)
    verdicts = [
        f"accepted jobs: {verdict.accepted}; jobs never accepted: {verdict.never_accepted}; "
        f"streams that never named their job (not checked): {verdict.untracked}",
        f"lost jobs: {len(verdict.lost)}{_reasons(verdict.lost)}",
        f"double terminals: {len(verdict.double_terminals)}{_reasons(verdict.double_terminals)}",
        f"resume mismatches: {len(verdict.resume_mismatches)}{_reasons(verdict.resume_mismatches)}",
        f"idempotency mismatches: {len(verdict.idempotency_mismatches)}"
        f"{_reasons(verdict.idempotency_mismatches)}",
    ]
    return text + "\n" + "\n".join(verdicts)


def _reasons(violations: list[Violation]) -> str:
    """The commonest reasons, with counts (numbers in a reason are folded into `N`)."""
    if not violations:
        return ""
    kinds = Counter(re.sub(r"\d+", "N", v.detail) for v in violations)
    return " (" + "; ".join(f"{n}x {why}" for why, n in kinds.most_common(3)) + ")"


def _render(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    cells = [tuple(str(c) for c in header), *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
