"""Placement and admission at scale: 1,000 pools, 10,000 queued jobs (PERF-03, PERF-04).

    uv run python -m bench.placement_scale [--pools 1000] [--jobs 10000] [--models 50]
        [--seed 1] [--cycle-limit 20]

In one process, with the orchestrator's own pure packages (no HTTP, no engines):

- jobs are made the way `POST /v2/tasks` makes them: a `TaskRequest` (the generated
  wire model, validated) through `http.translate.task_from_wire` into a `TaskSpec`;
- admission: `admission.decide` on the current lane lengths, then `TaskQueue.push` and
  a `TaskRecord` with its `EventLog` into the `TaskTable`, for each of the jobs in turn
  (the queue grows to `--jobs`). Timed per job: decisions/s and p50/p99/max;
- memory per queued job: tracemalloc, around making and queueing every job (the spec,
  its request and needs, the record and its event log, the table and queue entries);
  reported with and without the prompt text itself;
- placement, one decision: `placement.place(needs, pools)` over the 1,000 pool views for
  each queued job, then `assume` when it was placed (reserve within the cycle), timed
  per job: decisions/s and p50/p99/max;
- placement, one dispatch cycle: the loop of `Orchestrator._dispatch_cycle` (every queued
  job in order; a placed job takes its slot; jobs whose needs were already found
  unplaceable in this cycle are skipped), run until the cycle ends or `--cycle-limit`
  seconds pass (then the full cycle's time is extrapolated from the jobs it covered).

The pools: `--pools` views on hosts of 8 pools, `--models` models (each served by the
same number of pools, two names each), three engines, three context sizes, feature
sets with and without grammar/json_schema/logprobs, one or two replicas of 4-16 slots of
which a random share is busy, 3 % unready, 2 % draining, 1 % with a stale lease, and
measured throughputs. The jobs: models drawn Zipf-like (a few popular), completions and
chats with 0.2-4 KB prompts, 10 % with a grammar, 5 % with a json_schema, 5 % preferring
pools, 1 % pinned, 1 % avoiding pools, 20 % batch priority. Prints a table; writes
bench/results/placement_scale.json. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestratord.admission import Admit, QueueLimits, TaskQueue, decide
from orchestratord.events import EventLog
from orchestratord.http.translate import task_from_wire
from orchestratord.placement import (
    CycleViews,
    JobNeeds,
    Placed,
    PoolView,
    ReplicaView,
    assume,
    place,
)
from orchestratord.tasks import TaskRecord, TaskSpec, TaskTable
from specs.api.models import TaskRequest

from bench._harness import BENCH_DIR, loadavg, machine_info, percentile

DEFAULT_OUT = BENCH_DIR / "results" / "placement_scale.json"
_WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "tokens",
    "stream", "and", "pools", "fill",
)  # fmt: skip
_ENGINES = ("llamacpp", "vllm", "openai")
_CTX = (4096, 8192, 32768)
_FEATURE_SETS = (
    frozenset({"completion", "chat"}),
    frozenset({"completion", "chat", "grammar", "json_schema", "logprobs"}),
    frozenset({"completion", "chat", "json_schema", "logprobs"}),
)
_REPLAY_EVENTS = 1024  # the orchestrator's default sse_replay_events


def make_pools(count: int, models: int, rng: random.Random) -> tuple[PoolView, ...]:
    pools = []
    for index in range(count):
        model = index % models
        replicas = tuple(
            ReplicaView(r, rng.random() > 0.02, slots, rng.randint(0, slots))
            for r in range(rng.choice((1, 1, 2)))
            for slots in (rng.choice((4, 8, 8, 16)),)
        )
        roll = rng.random()
        pools.append(
            PoolView(
                pool_id=f"pool-{index:05d}",
                host_id=f"host-{index // 8:04d}",
                engine=_ENGINES[index % len(_ENGINES)],
                model_id=f"model-{model:03d}",
                model_aliases=frozenset({f"family-{model:03d}"}),
                model_digest=f"sha256:{model:064x}",
                ctx=_CTX[(index // models) % len(_CTX)],
                features=_FEATURE_SETS[index % len(_FEATURE_SETS)],
                ready=roll > 0.03,
                draining=0.03 < roll <= 0.05,
                lease_fresh=rng.random() > 0.01,
                replicas=replicas,
                decode_tokens_per_s=rng.uniform(20, 200) if rng.random() > 0.1 else 0.0,
                prefill_tokens_per_s=rng.uniform(500, 5000) if rng.random() > 0.1 else 0.0,
            )
        )
    return tuple(pools)


def make_wire(index: int, pools: int, models: int, rng: random.Random) -> dict[str, Any]:
    model = min(models - 1, int(rng.paretovariate(1.2)) - 1)
    name = f"model-{model:03d}" if rng.random() < 0.7 else f"family-{model:03d}"
    words = rng.randint(40, 700)
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    wire: dict[str, Any] = {
        "task_id": f"job-{index:06d}",
        "model": name,
        "max_tokens": rng.choice((64, 128, 256, 512)),
        "priority": "batch" if rng.random() < 0.2 else "interactive",
    }
    if rng.random() < 0.5:
        wire["prompt"] = text
    else:
        wire["workload"] = "chat"
        wire["messages"] = [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": text},
        ]
    roll = rng.random()
    if roll < 0.10:
        wire["grammar"] = 'root ::= "yes" | "no"'
    elif roll < 0.15:
        wire["json_schema"] = {"type": "object"}
    roll = rng.random()
    some_pools = [f"pool-{rng.randrange(pools):05d}" for _ in range(3)]
    if roll < 0.05:
        wire["placement"] = {"prefer_pools": some_pools}
    elif roll < 0.06:
        wire["placement"] = {"pin_pool_id": some_pools[0]}
    elif roll < 0.07:
        wire["placement"] = {"avoid_pools": some_pools}
    return wire


def _spec(wire: dict[str, Any]) -> TaskSpec:
    request = TaskRequest.model_validate_json(json.dumps(wire), strict=True)
    return task_from_wire(request, correlation_id=wire["task_id"], max_prompt_bytes=1 << 20)


@dataclass(slots=True)
class Timings:
    ns: list[int]

    def summary(self) -> dict[str, float | None]:
        total_s = sum(self.ns) / 1e9
        us = [n / 1000.0 for n in self.ns]
        return {
            "count": len(self.ns),
            "per_s": len(self.ns) / total_s if total_s else None,
            "p50_us": percentile(us, 50),
            "p99_us": percentile(us, 99),
            "max_us": max(us) if us else None,
        }


def admit_all(specs: list[TaskSpec], limits: QueueLimits) -> tuple[TaskQueue, TaskTable, Timings]:
    """The pure part of `Orchestrator.submit`, for each job in turn."""
    queue = TaskQueue()
    table = TaskTable(finished_kept=1000)
    timings: list[int] = []
    clock = time.perf_counter_ns
    for spec in specs:
        started = clock()
        lengths = {
            "interactive": queue.lane_length("interactive"),
            "batch": queue.lane_length("batch"),
        }
        decision = decide(lengths, spec.priority, limits)
        if isinstance(decision, Admit):
            record = TaskRecord(spec, EventLog(_REPLAY_EVENTS), 0, 0.0)
            record.queue_position = queue.push(spec.task_id, spec.priority)
            table.add(record)
        timings.append(clock() - started)
    return queue, table, Timings(timings)


def memory_per_job(wires: list[dict[str, Any]], limits: QueueLimits) -> dict[str, float]:
    """tracemalloc bytes held by the queued jobs (spec to queue entry), per job."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    specs = [_spec(wire) for wire in wires]
    queue, table, _ = admit_all(specs, limits)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    prompt_bytes = sum(_prompt_size(spec) for spec in specs)
    count = len(queue)
    del specs, table
    return {
        "jobs": count,
        "bytes_per_job": held / count,
        "prompt_bytes_per_job": prompt_bytes / count,
        "bytes_per_job_without_prompt": (held - prompt_bytes) / count,
    }


def _prompt_size(spec: TaskSpec) -> int:
    request = spec.request
    text = request.prompt or "".join(m.content for m in request.messages or ())
    return len(text) + 49 * (1 + len(request.messages or ()))  # str header per object


def place_each(queue: TaskQueue, table: TaskTable, pools: tuple[PoolView, ...]) -> Timings:
    """One `place` per queued job against the full set of views (each its own decision;
    a placed job's slot is assumed, as within a cycle)."""
    timings: list[int] = []
    clock = time.perf_counter_ns
    views = pools
    for task_id in list(queue):
        needs = _needs(table, task_id)
        started = clock()
        decision = place(needs, views)
        if isinstance(decision, Placed):
            views = assume(views, decision)
        timings.append(clock() - started)
    return Timings(timings)


def place_indexed(queue: TaskQueue, table: TaskTable, pools: tuple[PoolView, ...]) -> Timings:
    """What-if: `place_each` with the views pre-filtered to the pools serving the job's
    model name (an index the dispatcher could keep per snapshot; not what it does now)."""
    by_model: dict[str, list[PoolView]] = {}
    for pool in pools:
        for name in (pool.model_id, *pool.model_aliases):
            by_model.setdefault(name, []).append(pool)
    index = {name: tuple(views) for name, views in by_model.items()}
    timings: list[int] = []
    clock = time.perf_counter_ns
    for task_id in list(queue):
        needs = _needs(table, task_id)
        started = clock()
        candidates = index.get(needs.model, ())
        decision = place(needs, candidates)
        if isinstance(decision, Placed):
            index[needs.model] = assume(candidates, decision)
        timings.append(clock() - started)
    return Timings(timings)


def _needs(table: TaskTable, task_id: str) -> JobNeeds:
    record = table.get(task_id)
    assert record is not None
    return record.spec.needs


def dispatch_cycle(
    queue: TaskQueue, table: TaskTable, pools: tuple[PoolView, ...], limit_s: float
) -> dict[str, Any]:
    """The loop of `Orchestrator._dispatch_cycle` over the queue, bounded in time: pools
    indexed by model (`CycleViews`), needs blocked without their prefix keys, and no
    placement tried once the cycle has no free slot left."""
    views = CycleViews(pools)
    blocked: set[JobNeeds] = set()
    placed = unplaceable = skipped = examined = 0
    waiting = list(queue)
    clock = time.perf_counter
    started = clock()
    deadline = started + limit_s
    for task_id in waiting:
        if clock() > deadline:
            break
        examined += 1
        if views.free_slots <= 0:
            skipped += 1
            continue
        needs = _needs(table, task_id)
        feasibility = replace(needs, prefix_keys=())
        if feasibility in blocked:
            skipped += 1
            continue
        decision = place(needs, views.candidates(needs.model))
        if isinstance(decision, Placed):
            views.take(decision)
            queue.remove(task_id)
            placed += 1
        else:
            blocked.add(feasibility)
            unplaceable += 1
    elapsed = clock() - started
    complete = examined == len(waiting)
    return {
        "jobs_queued": len(waiting),
        "jobs_examined": examined,
        "placed": placed,
        "unplaceable_or_waiting": unplaceable,
        "skipped_as_blocked": skipped,
        "elapsed_s": elapsed,
        "complete": complete,
        "jobs_per_s": examined / elapsed if elapsed else None,
        "full_cycle_s_estimate": elapsed if complete else elapsed / examined * len(waiting),
    }


def _timed(what: str, step: Callable[[], Any]) -> Any:
    print(f"  {what}...", flush=True)
    return step()


def table_text(report: dict[str, Any]) -> str:
    adm, one, mem, cycle = (
        report["admission"],
        report["placement_decision"],
        report["memory"],
        report["dispatch_cycle"],
    )
    idx = report["placement_decision_model_index_what_if"]
    lines = [
        f"{report['pools']} pools, {report['jobs']} queued jobs, {report['models']} models",
        "",
        f"{'step':<34}{'per s':>12}{'p50 us':>10}{'p99 us':>10}{'max us':>10}",
        f"{'admission (decide + queue + record)':<34}{adm['per_s']:>12.0f}"
        f"{adm['p50_us']:>10.1f}{adm['p99_us']:>10.1f}{adm['max_us']:>10.1f}",
        f"{'placement (place + assume), 1 job':<34}{one['per_s']:>12.0f}"
        f"{one['p50_us']:>10.1f}{one['p99_us']:>10.1f}{one['max_us']:>10.1f}",
        f"{'  what-if: views indexed by model':<34}{idx['per_s']:>12.0f}"
        f"{idx['p50_us']:>10.1f}{idx['p99_us']:>10.1f}{idx['max_us']:>10.1f}",
        "",
        f"dispatch cycle over the queue: {cycle['jobs_examined']} jobs examined in "
        f"{cycle['elapsed_s']:.2f} s ({cycle['jobs_per_s']:.0f}/s), {cycle['placed']} placed, "
        f"{cycle['unplaceable_or_waiting']} waiting, {cycle['skipped_as_blocked']} skipped; "
        f"full cycle {'took' if cycle['complete'] else 'would take'} "
        f"{cycle['full_cycle_s_estimate']:.2f} s",
        f"memory per queued job: {mem['bytes_per_job']:.0f} B "
        f"({mem['prompt_bytes_per_job']:.0f} B of it the prompt text, "
        f"{mem['bytes_per_job_without_prompt']:.0f} B the rest)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cycle-limit", type=float, default=20.0, help="seconds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    load_before = loadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    rng = random.Random(args.seed)
    limits = QueueLimits(args.jobs, {"interactive": args.jobs, "batch": args.jobs})
    pools = make_pools(args.pools, args.models, rng)
    wires = [make_wire(i, args.pools, args.models, rng) for i in range(args.jobs)]
    memory = _timed("memory per queued job", lambda: memory_per_job(wires, limits))
    specs = _timed("translating the jobs", lambda: [_spec(wire) for wire in wires])
    queue, table, admission = _timed("admission", lambda: admit_all(specs, limits))
    decisions = _timed("placement, one decision per job", lambda: place_each(queue, table, pools))
    indexed = _timed(
        "placement with a model index (what-if)", lambda: place_indexed(queue, table, pools)
    )
    cycle = _timed(
        "one dispatch cycle", lambda: dispatch_cycle(queue, table, pools, args.cycle_limit)
    )
    report = {
        "benchmark": "placement_scale",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "pools": args.pools,
        "jobs": args.jobs,
        "models": args.models,
        "seed": args.seed,
        "slots_total": sum(p.slots_total for p in pools),
        "slots_free": sum(p.slots_free for p in pools),
        "admission": admission.summary(),
        "placement_decision": decisions.summary(),
        "placement_decision_model_index_what_if": indexed.summary(),
        "dispatch_cycle": cycle,
        "memory": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print()
    print(table_text(report))
    print(f"\nload average after {report['load_average_after'][0]:.2f}; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
