"""Gateway overhead against the same engine, LiteLLM included, in one run (PERF-01, PERF-04).

    uv run python -m bench.gateway_overhead [--rounds 3] [--concurrency 1,16,64]
        [--systems direct,passthrough,llorch-2step,llorch-sse,llorch-openai,litellm]
        [--baseline REV]

Starts on loopback: the fake engine (`bench/fake_engine.py`); llorch (orchestratord and
pool-managerd, whose one pool `bench` runs the same fake engine as an `openai-compatible`
engine); the raw pass-through (`bench/passthrough.py`) and the LiteLLM proxy (installed
into ~/.cache/llorch/bench/litellm-venv the first time), both in front of the first
engine. Then it streams chat completions through each system:

    direct         the engine itself (the floor)
    passthrough    aiohttp byte relay (the Python floor)
    llorch-2step   POST /v2/tasks, then GET /v2/tasks/{id}/events
    llorch-sse     POST /v2/tasks with Accept: text/event-stream (one round trip)
    llorch-openai  POST /v1/chat/completions (stream) on the OpenAI facade
    litellm        POST /v1/chat/completions (stream) on LiteLLM proxy

in two scenarios: `fast` (100 tokens per stream, sent as fast as the engine can:
capacity and CPU per event) and `paced` (20 tokens per stream, one every 10 ms: added
latency at a realistic cadence, on an otherwise idle gateway), at each concurrency C
(C streams kept open; a finished one is replaced). With `--baseline REV`, a second
llorch whose orchestratord runs REV's code (extracted from git) is measured beside the
current one (`base-2step`, `base-sse`, `base-openai`): before and after, in one run.

Method: the gateways are pinned to core 0, the engines, pool-managerd and this load
client to core 1. A gateway's CPU is read from /proc before and after each measurement
and divided by the token events delivered. Systems are interleaved in rounds (the order
rotates each round) and each figure is the median of the rounds' values; every system is
warmed up first; every run is bounded in requests and time. Prints a table, writes
bench/results/gateway_overhead.json. A benchmark: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from bench._harness import (
    BENCH_DIR,
    LOAD_CORE,
    Cpu,
    Proc,
    Recorder,
    System,
    announce_load,
    baseline_tree,
    client_session,
    engine_stats,
    loadavg,
    median_rounds,
    own_cpu,
    percentile,
    pin_self,
    report_head,
    run_dir,
    set_engine,
    settle,
    start_engine,
    start_litellm,
    start_llorch,
    start_passthrough,
    stream_once,
)

SYSTEMS = ("direct", "passthrough", "llorch-2step", "llorch-sse", "llorch-openai", "litellm")
# With --baseline REV: the llorch systems again, orchestratord running REV's code.
BASELINE = {"llorch-2step": "base-2step", "llorch-sse": "base-sse", "llorch-openai": "base-openai"}
ORDER = (*SYSTEMS[:5], *BASELINE.values(), "litellm")
DEFAULT_OUT = BENCH_DIR / "results" / "gateway_overhead.json"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    interval_ms: float
    tokens: int
    duration_s: float
    exact: bool = True  # a stream with another number of token events is an error


@dataclass(frozen=True, slots=True)
class Limits:
    max_requests: int
    drain_s: float
    warmup_s: float


async def measure(
    system: System, scenario: Scenario, concurrency: int, limits: Limits, duration_s: float
) -> tuple[dict[str, Any], Recorder]:
    """One bounded run: C streams open at a time until `duration_s` or `max_requests`,
    then the open ones finish (up to `drain_s`) or are cut."""
    record = Recorder(tokens_expected=scenario.tokens if scenario.exact else 0)
    body = system.body(scenario.tokens)
    perf = time.perf_counter
    started = 0
    session = client_session(concurrency, keepalive=system.keepalive)

    async def worker() -> None:
        nonlocal started
        while started < limits.max_requests and perf() < record.window_end:
            started += 1
            try:
                await stream_once(session, system, body, record)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
                record.error(f"{type(exc).__name__}: {exc}")

    gateway_before = Cpu.read(system.gateway())
    engine_before = Cpu.read(system.engine())
    client_before = own_cpu()
    t0 = perf()
    record.window_start, record.window_end = t0, t0 + duration_s
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=duration_s + limits.drain_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    t1 = perf()
    gateway = Cpu.read(system.gateway()) - gateway_before
    engine = Cpu.read(system.engine()) - engine_before
    client = own_cpu() - client_before
    await session.close()
    wall = t1 - t0
    window = min(duration_s, wall)
    events = record.token_events
    result = {
        "system": system.name,
        "scenario": scenario.name,
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "window_s": round(window, 3),
        "requests_started": started,
        "requests_ok": record.requests_ok,
        "requests_cut": record.requests_cut,
        "errors": record.errors,
        "retried_connections": record.retries,
        "short_streams": record.short,
        "error_samples": record.error_samples,
        "token_events": events,
        "tokens_per_s": record.tokens_in_window / window if window > 0 else None,
        "requests_per_s": record.requests_in_window / window if window > 0 else None,
        "ttft_p50_ms": _ms(percentile(record.ttft, 50)),
        "ttft_p99_ms": _ms(percentile(record.ttft, 99)),
        "gap_p50_ms": _ms(percentile(record.gaps, 50)),
        "gap_p99_ms": _ms(percentile(record.gaps, 99)),
        "gateway_cpu_s": round(gateway.sched_s, 4),
        "gateway_cpu_ticks_s": round(gateway.ticks_s, 3),
        "cpu_us_per_event": (gateway.sched_s / events * 1e6)
        if events and system.gateway()
        else None,
        "gateway_core_util": round(gateway.sched_s / wall, 3) if wall > 0 else None,
        "engine_cpu_s": round(engine.sched_s, 4),
        "client_cpu_s": round(client.sched_s, 4),
        "load_core_util": round((engine.sched_s + client.sched_s) / wall, 3) if wall else None,
    }
    return result, record


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


async def run_all(
    args: argparse.Namespace, systems: list[System], engines: list[str]
) -> dict[str, Any]:
    scenarios = [
        s
        for s in (
            Scenario("fast", 0.0, args.fast_tokens, args.fast_duration),
            Scenario("paced", args.interval_ms, args.paced_tokens, args.paced_duration),
        )
        if s.name in args.scenarios
    ]
    limits = Limits(args.max_requests, args.drain, args.warmup)
    runs: list[dict[str, Any]] = []
    for scenario in scenarios:
        for engine in engines:
            set_engine(engine, interval_ms=scenario.interval_ms)
        top = max(args.concurrency)
        for system in systems:  # warm-up, not recorded
            await measure(system, scenario, top, limits, limits.warmup_s)
            await settle(system.gateway)
        for concurrency in args.concurrency:
            for round_no in range(args.rounds):
                shift = round_no % len(systems)
                for system in systems[shift:] + systems[:shift]:
                    result, _ = await measure(
                        system, scenario, concurrency, limits, scenario.duration_s
                    )
                    result["round"] = round_no
                    runs.append(result)
                    _progress(result)
                    await settle(system.gateway)
                    await settle(system.engine, quiet=0.2)
    return {"scenarios": _scenarios(scenarios), "runs": runs}


def _scenarios(scenarios: Sequence[Scenario]) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "interval_ms": s.interval_ms,
            "tokens_per_stream": s.tokens,
            "duration_s": s.duration_s,
        }
        for s in scenarios
    ]


def _progress(result: dict[str, Any]) -> None:
    cpu = result["cpu_us_per_event"]
    print(
        f"  {result['scenario']:<5} c={result['concurrency']:<3} r{result['round']} "
        f"{result['system']:<14} {result['token_events']:>7} events "
        f"{(result['tokens_per_s'] or 0):>9.0f} tok/s "
        f"cpu {'-' if cpu is None else f'{cpu:.1f}'} us/ev "
        f"ttft p50 {_fmt(result['ttft_p50_ms'], 2)} ms "
        f"errors {result['errors']} cut {result['requests_cut']}",
        flush=True,
    )


_METRICS = (
    "cpu_us_per_event",
    "tokens_per_s",
    "requests_per_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "gap_p50_ms",
    "gap_p99_ms",
    "gateway_core_util",
    "load_core_util",
)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median of the rounds' values per (scenario, concurrency, system), with ratios."""
    rows = median_rounds(
        runs,
        ("scenario", "concurrency", "system"),
        _METRICS,
        ("errors", "requests_cut", "requests_ok"),
    )
    index = {(r["scenario"], r["concurrency"], r["system"]): r for r in rows}
    for row in rows:
        direct = index.get((row["scenario"], row["concurrency"], "direct"))
        litellm = index.get((row["scenario"], row["concurrency"], "litellm"))
        row["tokens_per_s_vs_direct"] = _ratio(row["tokens_per_s"], direct, "tokens_per_s")
        row["cpu_vs_litellm"] = _ratio(row["cpu_us_per_event"], litellm, "cpu_us_per_event")
        for metric in ("ttft_p50_ms", "ttft_p99_ms", "gap_p50_ms", "gap_p99_ms"):
            base = direct[metric] if direct else None
            row[f"added_{metric}"] = (
                row[metric] - base if row[metric] is not None and base is not None else None
            )
    order = {name: i for i, name in enumerate(ORDER)}
    rows.sort(key=lambda r: (r["scenario"] != "fast", r["concurrency"], order[r["system"]]))
    return rows


def _ratio(value: float | None, other: dict[str, Any] | None, metric: str) -> float | None:
    base = other[metric] if other else None
    if value is None or not base:
        return None
    return float(value) / float(base)


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def table(rows: list[dict[str, Any]], scenarios: list[dict[str, Any]]) -> str:
    header = (
        f"{'system':<14}{'c':>4}{'CPU us/ev':>11}{'xLiteLLM':>10}{'TTFT p50':>10}"
        f"{'p99':>9}{'+p50':>8}{'gap p50':>9}{'p99':>8}{'+p99':>8}"
        f"{'tok/s':>9}{'xdirect':>9}{'req/s':>8}{'err':>5}"
    )
    lines: list[str] = []
    for scenario in scenarios:
        name = scenario["name"]
        pacing = (
            "no pacing" if not scenario["interval_ms"] else f"{scenario['interval_ms']:g} ms/token"
        )
        lines.append("")
        lines.append(
            f"scenario {name}: {scenario['tokens_per_stream']} tokens per stream, {pacing}; "
            "times in ms, + = added over direct"
        )
        lines.append(header)
        lines.append("-" * len(header))
        last_c = None
        for row in rows:
            if row["scenario"] != name:
                continue
            if last_c is not None and row["concurrency"] != last_c:
                lines.append("")
            last_c = row["concurrency"]
            lines.append(
                f"{row['system']:<14}{row['concurrency']:>4}"
                f"{_fmt(row['cpu_us_per_event']):>11}{_fmt(row['cpu_vs_litellm'], 3, 'x'):>10}"
                f"{_fmt(row['ttft_p50_ms'], 2):>10}{_fmt(row['ttft_p99_ms'], 2):>9}"
                f"{_fmt(row['added_ttft_p50_ms'], 2):>8}"
                f"{_fmt(row['gap_p50_ms'], 2):>9}{_fmt(row['gap_p99_ms'], 2):>8}"
                f"{_fmt(row['added_gap_p99_ms'], 2):>8}"
                f"{_fmt(row['tokens_per_s'], 0):>9}{_fmt(row['tokens_per_s_vs_direct'], 2, 'x'):>9}"
                f"{_fmt(row['requests_per_s'], 0):>8}{row['errors']:>5}"
            )
    return "\n".join(lines)


def _systems(
    names: Sequence[str],
    engine: Proc,
    engine_url: str,
    passthrough: tuple[Proc, str] | None,
    llorch: Any,
    litellm: tuple[Proc, str, str] | None,
    baseline: Any = None,
) -> list[System]:
    path = "/v1/chat/completions"
    systems: list[System] = []
    for name in names:
        if name == "direct":
            systems.append(System(name, engine_url, path, "openai", list, engine.pids))
        elif name == "passthrough" and passthrough is not None:
            proc, url = passthrough
            systems.append(System(name, url, path, "openai", proc.pids, engine.pids))
        elif name.startswith("llorch") and llorch is not None:
            gateway, side = llorch.gateway_pids, llorch.engine_pids
            if name == "llorch-2step":
                systems.append(
                    System(name, llorch.url, "/v2/tasks", "llorch", gateway, side, two_step=True)
                )
            elif name == "llorch-sse":
                systems.append(System(name, llorch.url, "/v2/tasks", "llorch", gateway, side))
            else:
                systems.append(System(name, llorch.url, path, "openai", gateway, side))
        elif name == "litellm" and litellm is not None:
            proc, url, key = litellm
            headers = {"Authorization": f"Bearer {key}"}
            systems.append(System(name, url, path, "openai", proc.pids, engine.pids, headers))
        if name in BASELINE and baseline is not None:
            twin = _systems([name], engine, engine_url, None, baseline, None)[0]
            systems.append(replace(twin, name=BASELINE[name]))
    return systems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--scenarios", default="fast,paced")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fast-tokens", type=int, default=100, help="tokens per stream (fast)")
    parser.add_argument("--fast-duration", type=float, default=1.5, help="seconds per run")
    parser.add_argument("--paced-tokens", type=int, default=20, help="tokens per stream (paced)")
    parser.add_argument("--paced-duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--interval-ms", type=float, default=10.0, help="paced token interval")
    parser.add_argument("--max-requests", type=int, default=5000, help="per run")
    parser.add_argument("--drain", type=float, default=8.0, help="seconds for open streams")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds per system")
    parser.add_argument("--slots", type=int, default=128, help="slots of the llorch pool")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the llorch systems with orchestratord at git revision REV (before/after)",
    )
    parser.add_argument("--llorch-log-level", default="INFO")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--workdir", type=Path, help="keep configs and logs here")
    args = parser.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")

    pin_self(LOAD_CORE)
    load_before = announce_load()
    started = time.time()
    with contextlib.ExitStack() as stack:
        root, logs = run_dir(stack, args.workdir, "llorch-bench-")
        procs: list[Any] = []
        stack.callback(lambda: [p.stop() for p in reversed(procs)])
        engine, engine_url = start_engine(logs)
        procs.append(engine)
        engines = [engine_url]
        passthrough = litellm = llorch = None
        if "passthrough" in args.systems:
            passthrough = start_passthrough(logs, engine_url)
            procs.append(passthrough[0])
        if any(s.startswith("llorch") for s in args.systems):
            llorch = start_llorch(
                root / "llorch", logs, slots=args.slots, log_level=args.llorch_log_level
            )
            procs.append(llorch)
            engines.append(llorch.engine_url)
        baseline = None
        if args.baseline and llorch is not None:
            baseline = start_llorch(
                root / "llorch-base",
                logs,
                slots=args.slots,
                log_level=args.llorch_log_level,
                source=baseline_tree(args.baseline),
                name="-base",
            )
            procs.append(baseline)
            engines.append(baseline.engine_url)
        if "litellm" in args.systems:
            print("starting LiteLLM proxy (about 20-40 s)...", flush=True)
            litellm = start_litellm(root, logs, engine_url)
            procs.append(litellm[0])
        systems = _systems(args.systems, engine, engine_url, passthrough, llorch, litellm, baseline)
        print(f"systems: {', '.join(s.name for s in systems)}; engines at {', '.join(engines)}")
        result = uvloop.run(run_all(args, systems, engines))
        stats = {url: engine_stats(url) for url in engines}
    load_after = loadavg()
    rows = summarize(result["runs"])
    report = {
        **report_head("gateway_overhead", started, load_before, load_after),
        "method": {
            "gateway_core": 0,
            "load_core": LOAD_CORE,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "max_requests_per_run": args.max_requests,
            "drain_s": args.drain,
            "llorch_slots": args.slots,
            "llorch_log_level": args.llorch_log_level,
            "cpu": "schedstat ns of the gateway's process tree / token events delivered",
        },
        "scenarios": result["scenarios"],
        "summary": rows,
        "runs": result["runs"],
        "engine_stats": stats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(table(rows, result["scenarios"]))
    print(
        f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"{report['elapsed_s']:.0f} s; JSON: {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
