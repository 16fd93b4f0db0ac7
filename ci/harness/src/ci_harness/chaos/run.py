"""One chaos run: a fleet cluster under load while the nemesis injects its schedule,
then the final read, the checker and the table.

The cluster: orchestratord in the root namespace; two hosts, each its own network
namespace with a pool manager: `h-worker` runs pool `w` (two in-process llama.cpp
workers), `h-engine` runs pool `ls` (two llama-server engines); both pools answer to
the model `default`, so either host can serve while the other is down. The models are
the tiny random-weight GGUF fixture; jobs ask for 8-64 tokens. The pool managers' crash
breaker (POOL-04) is set so that dozens of kills in a few minutes never fail a pool for
good (`CRASH_POLICY`; the daemon defaults are unchanged).

Order of a run: start the cluster; write the setup and the schedule to the history and
print the schedule; start the load; run the nemesis; once every fault has ended, make
sure every daemon runs, every host is healed and every pool is ready again; stop the
load (running jobs finish); read every accepted job's final state and replay; check;
print the table. Processes of the cluster still alive after the pool managers stopped
(engines a killed pool manager left behind) are counted as orphans, then killed with
the fleet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from catalog_core import TinyModelSpec, write_tiny_model

from ci_harness.chaos.checker import Verdict, accepted_tasks, check
from ci_harness.chaos.final import final_phase
from ci_harness.chaos.history import History, read_history
from ci_harness.chaos.load import LoadGenerator
from ci_harness.chaos.nemesis import FaultPlan, Nemesis, Topology, schedule
from ci_harness.chaos.report import FaultCounts, fault_counts, table
from ci_harness.cluster import Cluster, tiny_pool
from ci_harness.fleet import Fleet

__all__ = ["CRASH_POLICY", "ChaosResult", "ChaosSettings", "run_chaos"]

WORKER_HOST, ENGINE_HOST = "h-worker", "h-engine"
TOPOLOGY = Topology(worker_host=WORKER_HOST, engine_host=ENGINE_HOST)
# Restart quickly and never give up within a run: the chaos run kills engines every few
# seconds on purpose, which the default breaker (5 crashes in 10 min) would end.
CRASH_POLICY = {
    "initial_backoff_s": 0.2,
    "max_backoff_s": 1.0,
    "max_crashes": 100_000,
    "crash_window_s": 60,
}
START_S = 180.0  # engines of both hosts start together on shared cores
QUIESCE_S = 120.0


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    seed: int = 7
    per_kind: int = 30  # faults of every kind
    span_s: float = 150.0  # the faults start within this many seconds
    clients: int = 4


@dataclass(frozen=True, slots=True)
class ChaosResult:
    verdict: Verdict
    counts: FaultCounts
    table: str
    history: Path
    plans: list[FaultPlan]
    harness_errors: list[str] = field(default_factory=list)
    orphans: int = 0
    jobs_run: int = 0


def _pools(root: Path, llama_server: list[str]) -> dict[str, list[dict[str, Any]]]:
    (root / "models").mkdir(parents=True, exist_ok=True)
    model = write_tiny_model(root / "models" / "tiny.gguf", TinyModelSpec(context_length=8192))
    worker = tiny_pool("w", model, ctx=4096, replicas=2)
    engine = {**tiny_pool("ls", model, ctx=4096, replicas=2), "engine": "llamacpp"}
    return {WORKER_HOST: [worker], ENGINE_HOST: [engine | {"engine_command": llama_server}]}


def _plan_line(plan: FaultPlan) -> str:
    where = f"{plan.role}@{plan.host}" if plan.host else plan.role
    return (
        f"#{plan.seq:<4} +{plan.at_s:7.2f}s {plan.kind:<19} {where:<22} "
        f"pick {plan.pick:<6} {plan.duration_s:.2f}s"
    )


def _start(cluster: Cluster, root: Path, llama_server: list[str]) -> None:
    cluster.fleet = Fleet().start()
    cluster.start()  # the orchestrator alone: the engines get a longer wait below
    cluster.pools.update(_pools(root, llama_server))
    for host in cluster.pools:
        status = cluster.root / f"{host}.status.json"  # the nemesis waits on it
        cluster.hosts[host] = {"restart": CRASH_POLICY, "status_file": str(status)}
        cluster.start_manager(host)
    cluster.wait_ready(["w", "ls"], timeout_s=START_S)


def run_chaos(
    root: Path, settings: ChaosSettings, llama_server: list[str], say: Callable[[str], None] = print
) -> ChaosResult:
    """One run in `root` (history, daemon logs); the cluster is gone when it returns."""
    root.mkdir(parents=True, exist_ok=True)
    plans = schedule(settings.seed, settings.per_kind, settings.span_s, TOPOLOGY)
    say(f"chaos schedule (seed {settings.seed}, {len(plans)} faults):")
    for plan in plans:
        say(f"  {_plan_line(plan)}")
    history = History(root / "history.jsonl")
    cluster = Cluster(root / "cluster", {})
    try:
        began = time.monotonic()
        _start(cluster, root, llama_server)
        say(f"cluster ready in {time.monotonic() - began:.0f} s")
        history.record(
            "setup",
            seed=settings.seed,
            settings=asdict(settings),
            hosts={h: [p["id"] for p in pools] for h, pools in cluster.pools.items()},
            schedule=[asdict(p) for p in plans],
        )
        jobs_run, errors = _chaos(cluster, history, settings, plans, say)
    finally:
        orphans = _stop(cluster, root)
        history.close()
    records = read_history(history.path)
    verdict = check(records)
    return ChaosResult(
        verdict,
        fault_counts(records),
        table(records, verdict),
        history.path,
        plans,
        errors,
        orphans,
        jobs_run,
    )


def _chaos(
    cluster: Cluster,
    history: History,
    settings: ChaosSettings,
    plans: list[FaultPlan],
    say: Callable[[str], None],
) -> tuple[int, list[str]]:
    history.record("phase", name="load")
    pools = tuple(p["id"] for host in cluster.pools.values() for p in host)
    load = LoadGenerator(cluster.url, history, settings.clients, settings.seed, pools).start()
    nemesis = Nemesis(cluster, plans, history)
    started = time.monotonic()
    nemesis.run()
    say(f"nemesis done in {time.monotonic() - started:.0f} s; quiescing")
    history.record("phase", name="quiesce")
    _quiesce(cluster)
    finished = load.stop()
    say(f"quiet {time.monotonic() - started:.0f} s after the first fault; final reads")
    errors = list(nemesis.errors) + ([] if finished else ["a client did not finish its job"])
    accepted = sorted(accepted_tasks(read_history(history.path)))
    final_phase(cluster.url, history, accepted, progress=say)
    history.record("phase", name="done")
    return load.jobs, errors


def _quiesce(cluster: Cluster) -> None:
    """Every daemon running, every host healed, every pool ready."""
    assert cluster.fleet is not None
    for host in cluster.fleet.hosts:
        cluster.fleet.heal(host)
    if cluster.processes["orchestratord"].poll() is not None:
        cluster.restart_orchestrator()
    for host in cluster.pools:
        if cluster.processes[f"pool-managerd-{host}"].poll() is not None:
            cluster.restart_manager(host)
    cluster.wait_ready(["w", "ls"], timeout_s=QUIESCE_S)


def _stop(cluster: Cluster, root: Path) -> int:
    """Stop the daemons, count what outlived them, delete the fleet (and with it those)."""
    try:
        if cluster.processes:
            cluster.stop()
    finally:
        marker = str(root)
        orphans = [
            p.info["pid"]
            for p in psutil.process_iter(["pid", "cmdline"])
            if marker in " ".join(p.info["cmdline"] or ())
        ]
        if cluster.fleet is not None:
            cluster.fleet.close()
    return len(orphans)
