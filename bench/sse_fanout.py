"""SSE fan-out ceiling of one orchestrator process (PERF-02, PERF-04).

    uv run python -m bench.sse_fanout [--streams 50,100,200,400,600,800,1000]
        [--interval-ms 20] [--endpoint sse|2step|openai] [--no-baseline] [--keep-going]

Starts llorch (orchestratord on core 0; pool-managerd and its fake `openai-compatible`
engine on core 1, one pool with enough slots) and, for the baseline, a second fake
engine. For each step N it opens N streams through the orchestrator, spread over a
ramp, each paced at one token per `interval_ms` (so N streams offer N*1000/interval
token events per second), and measures a steady window after the ramp: token events
delivered per second, inter-token gaps (p50/p99, against the engine's cadence), TTFT of
the ramp's requests, the orchestrator's CPU (share of its core and µs per event) and the
load core's use. The cadence slipped when fewer than 90 % of the offered events arrived
or the median gap is more than 10 % off the interval (longer: the relay falls behind;
near 0: tokens of one stream arrive bunched in one read); the ladder stops at the first slip (unless
--keep-going). The baseline row of each step (`direct`) streams the same N from an
engine directly, showing what the load side alone can deliver on its core.

Prints a table, writes bench/results/sse_fanout.json. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from bench._harness import (
    BENCH_DIR,
    LOAD_CORE,
    Cpu,
    Llorch,
    Proc,
    Recorder,
    System,
    announce_load,
    client_session,
    loadavg,
    own_cpu,
    percentile,
    pin_self,
    report_head,
    run_dir,
    set_engine,
    settle,
    start_engine,
    start_llorch,
    stream_once,
)

DEFAULT_OUT = BENCH_DIR / "results" / "sse_fanout.json"
_SETTLE_S = 0.3  # after the ramp, before the window


async def step(
    system: System, streams: int, interval_ms: float, ramp_s: float, window_s: float
) -> dict[str, Any]:
    tail_s = 0.5
    tokens = math.ceil((ramp_s + _SETTLE_S + window_s + tail_s) * 1000.0 / interval_ms)
    record = Recorder(tokens_expected=tokens, gaps_in_window_only=True)
    body = system.body(tokens)
    session = client_session(streams)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    perf0 = time.perf_counter()
    record.window_start = perf0 + ramp_s + _SETTLE_S
    record.window_end = record.window_start + window_s

    async def one(index: int) -> None:
        await asyncio.sleep(ramp_s * index / streams)
        try:
            await stream_once(session, system, body, record)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
            record.error(f"{type(exc).__name__}: {exc}")

    tasks = [asyncio.create_task(one(i)) for i in range(streams)]
    await asyncio.sleep(max(0.0, t0 + ramp_s + _SETTLE_S - loop.time()))
    gateway_before = Cpu.read(system.gateway())
    engine_before = Cpu.read(system.engine())
    client_before = own_cpu()
    w0 = time.perf_counter()
    await asyncio.sleep(max(0.0, t0 + ramp_s + _SETTLE_S + window_s - loop.time()))
    w1 = time.perf_counter()
    gateway = Cpu.read(system.gateway()) - gateway_before
    engine = Cpu.read(system.engine()) - engine_before
    client = own_cpu() - client_before
    limit = ramp_s + _SETTLE_S + window_s + tail_s + 30.0
    _, pending = await asyncio.wait(tasks, timeout=max(1.0, t0 + limit - loop.time()))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await session.close()
    window = w1 - w0
    offered = streams * 1000.0 / interval_ms
    delivered = record.tokens_in_window / window
    gap_p50 = percentile(record.gaps, 50)
    gaps_ms = sorted(g * 1000.0 for g in record.gaps)
    slipped = delivered < 0.9 * offered or (
        gap_p50 is not None and abs(gap_p50 * 1000.0 - interval_ms) > 0.1 * interval_ms
    )
    return {
        "system": system.name,
        "streams": streams,
        "interval_ms": interval_ms,
        "tokens_per_stream": tokens,
        "window_s": round(window, 3),
        "offered_events_per_s": offered,
        "delivered_events_per_s": delivered,
        "delivered_ratio": delivered / offered,
        "gap_p50_ms": _at(gaps_ms, 50),
        "gap_p99_ms": _at(gaps_ms, 99),
        "gap_p999_ms": _at(gaps_ms, 99.9),
        "ttft_p50_ms": _ms(percentile(record.ttft, 50)),
        "ttft_p99_ms": _ms(percentile(record.ttft, 99)),
        "gateway_core_util": gateway.sched_s / window if system.gateway() else None,
        "cpu_us_per_event": gateway.sched_s / record.tokens_in_window * 1e6
        if record.tokens_in_window and system.gateway()
        else None,
        "load_core_util": (engine.sched_s + client.sched_s) / window,
        "requests_ok": record.requests_ok,
        "requests_cut": record.requests_cut,
        "errors": record.errors,
        "error_samples": record.error_samples,
        "slipped": slipped,
    }


def _at(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'system':<14}{'streams':>8}{'offered/s':>11}{'delivered/s':>13}{'ratio':>7}"
        f"{'gap p50':>9}{'p99':>8}{'p99.9':>8}{'TTFT p50':>10}{'p99':>9}"
        f"{'gw core':>9}{'us/ev':>7}{'load core':>10}{'err':>5}  slip"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        util = row["gateway_core_util"]
        lines.append(
            f"{row['system']:<14}{row['streams']:>8}{row['offered_events_per_s']:>11.0f}"
            f"{row['delivered_events_per_s']:>13.0f}{row['delivered_ratio']:>7.2f}"
            f"{_fmt(row['gap_p50_ms'], 2):>9}{_fmt(row['gap_p99_ms'], 1):>8}"
            f"{_fmt(row['gap_p999_ms'], 1):>8}{_fmt(row['ttft_p50_ms'], 1):>10}"
            f"{_fmt(row['ttft_p99_ms'], 1):>9}"
            f"{'-' if util is None else f'{util * 100:.0f}%':>9}"
            f"{_fmt(row['cpu_us_per_event']):>7}{row['load_core_util'] * 100:>9.0f}%"
            f"{row['errors']:>5}  {'yes' if row['slipped'] else ''}"
        )
    return "\n".join(lines)


async def ladder(
    args: argparse.Namespace, llorch_system: System, direct: System | None, engines: list[str]
) -> list[dict[str, Any]]:
    for url in engines:
        set_engine(url, interval_ms=args.interval_ms)
    rows: list[dict[str, Any]] = []
    # warm-up: a few short streams through each system
    for system in (llorch_system, direct):
        if system is not None:
            await step(system, 16, args.interval_ms, 0.2, 0.3)
            await settle(system.gateway)
    for streams in args.streams:
        for system in (direct, llorch_system):
            if system is None:
                continue
            row = await step(system, streams, args.interval_ms, args.ramp, args.window)
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
            await settle(system.gateway)
            await settle(system.engine, quiet=0.2)
        if rows[-1]["slipped"] and not args.keep_going:
            break
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="50,100,200,300,400,600,800,1000")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="engine token cadence")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds to open the streams")
    parser.add_argument("--window", type=float, default=3.0, help="seconds measured")
    parser.add_argument("--endpoint", choices=("sse", "2step", "openai"), default="sse")
    parser.add_argument("--no-baseline", action="store_true", help="skip the direct rows")
    parser.add_argument("--keep-going", action="store_true", help="do not stop at a slip")
    parser.add_argument("--llorch-log-level", default="INFO")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--workdir", type=Path, help="keep configs and logs here")
    args = parser.parse_args(argv)
    args.streams = [int(s) for s in args.streams.split(",") if s]

    pin_self(LOAD_CORE)
    load_before = announce_load()
    started = time.time()
    with contextlib.ExitStack() as stack:
        root, logs = run_dir(stack, args.workdir, "llorch-fanout-")
        procs: list[Proc | Llorch] = []
        stack.callback(lambda: [p.stop() for p in reversed(procs)])
        slots = max(args.streams) + 16
        llorch = start_llorch(root / "llorch", logs, slots=slots, log_level=args.llorch_log_level)
        procs.append(llorch)
        engines = [llorch.engine_url]
        direct = None
        if not args.no_baseline:
            engine, engine_url = start_engine(logs)
            procs.append(engine)
            engines.append(engine_url)
            direct = System(
                "direct", engine_url, "/v1/chat/completions", "openai", list, engine.pids
            )
        gateway, side = llorch.gateway_pids, llorch.engine_pids
        if args.endpoint == "openai":
            system = System(
                "llorch-openai", llorch.url, "/v1/chat/completions", "openai", gateway, side
            )
        else:
            name = "llorch-2step" if args.endpoint == "2step" else "llorch-sse"
            system = System(
                name,
                llorch.url,
                "/v2/tasks",
                "llorch",
                gateway,
                side,
                two_step=name.endswith("2step"),
            )
        rows = uvloop.run(ladder(args, system, direct, engines))
    load_after = loadavg()
    ok = [r for r in rows if r["system"] == system.name and not r["slipped"]]
    ceiling = max((r["delivered_events_per_s"] for r in ok), default=None)
    report = {
        **report_head("sse_fanout", started, load_before, load_after),
        "method": {
            "endpoint": system.name,
            "interval_ms": args.interval_ms,
            "ramp_s": args.ramp,
            "window_s": args.window,
            "slip": "delivered < 90% of offered, or gap p50 more than 10% off the interval",
            "llorch_log_level": args.llorch_log_level,
        },
        "ceiling_events_per_s_without_slip": ceiling,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print()
    print(table(rows))
    print(
        f"\n{system.name}: highest delivered rate without a slip: "
        f"{_fmt(ceiling, 0)} token events/s at one token per {args.interval_ms:g} ms per stream"
    )
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"{report['elapsed_s']:.0f} s; JSON: {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
