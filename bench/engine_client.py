"""CPU cost of the engine token stream's HTTP client: aiohttp against `_wire`, in one run.

    uv run --frozen python -m bench.engine_client [--tokens 1,100] [--concurrency 1,16]
        [--rounds 3] [--duration 1.5] [--interval-ms 0] [--loop uvloop|asyncio]

Starts the fake engine (`bench/fake_engine.py`, unpaced) on core 1 and streams chat
completions from it, in this process pinned to core 0, through two clients:

    aiohttp  how `worker_adapters._http.HttpStream` worked before `_wire`: the shared
             `aiohttp.ClientSession` (`TCPConnector(limit=512, keepalive_timeout=4.0)`,
             `DummyCookieJar`), `session.post(url, data=payload, headers=...,
             timeout=ClientTimeout(sock_connect=5, sock_read=300))` under the same retry
             wrapper, each read `response.content.readany()` inside
             `asyncio.timeout_at(deadline)`, `response.release()` at EOF;
    wire     `worker_adapters._http.HttpClient(address).open_stream(path, body,
             headers=...)`, then `stream.read(deadline)` until b"", then
             `await stream.finish()` (`worker_adapters._wire`).

Both send the body the `openai-compatible` adapter sends (`stream_options.include_usage`)
and an `X-Llorch-Job` header per request. Scenarios: 1 and 100 tokens per stream, at
concurrency 1 and 16 (C streams kept open; a finished one is replaced at once), the
engine unpaced (`--interval-ms` paces it: then each event is a read of its own).

Method: this process's CPU (schedstat of all its threads, `Cpu`; `time.process_time()`
and getrusage's user/system split kept as cross-checks) is read before and after each
run of `--duration` seconds (then the open streams finish) and divided by the requests
and by the token events completed. Token events are the SSE `data: ` frames read
(counted in the bytes, also across read boundaries), the `[DONE]` one excluded: role,
tokens, finish and usage frames, so tokens + 3 per stream. The load loop and the
counting are the same for both clients, so their cost is in both figures (it dilutes
the ratio a little). The clients are interleaved in rounds (the order rotates each
round), each warmed up first per scenario (connections opened), and each figure is the
median of the rounds. From the 1-token and 100-token runs at one concurrency, a line
CPU per request = fixed + per_event x events per request is fitted per client, and the
same with network reads in place of events: the engine is unpaced, so the events of one
read depend on how fast the client reads (a slower client finds more waiting per read).
Two points per line: an intercept can come out negative when the events (or reads) per
request of the two runs are not what separates their cost; read the slopes first.

Prints a table, writes bench/results/engine_client.json. A benchmark: it prints numbers
and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import resource
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import uvloop
from worker_adapters._http import (
    HttpClient,
    close_shared_session,
    error_from_body,
    shared_session,
)
from worker_adapters.errors import AdapterError, EngineTimeout, StreamBroken

from bench._harness import (
    BENCH_DIR,
    GATEWAY_CORE,
    LOAD_CORE,
    announce_load,
    engine_stats,
    loadavg,
    median_rounds,
    own_cpu,
    pin_self,
    report_head,
    set_engine,
    settle,
    start_engine,
)

CLIENTS = ("aiohttp", "wire")
DEFAULT_OUT = BENCH_DIR / "results" / "engine_client.json"
PATH = "/v1/chat/completions"
_DATA = b"data: "
_STALL_S = 300.0
_DRAIN_S = 10.0  # after a run's duration, for the streams still open


# -- the two clients ------------------------------------------------------------------


class Stream(Protocol):
    async def read(self, deadline: float) -> bytes: ...

    async def finish(self) -> None: ...


class Client(Protocol):
    async def open_stream(
        self, path: str, body: Mapping[str, Any], *, headers: Mapping[str, str]
    ) -> Stream: ...


class _AiohttpStream:
    """The previous `HttpStream` (aiohttp), as it was: reads under `timeout_at`."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def read(self, deadline: float) -> bytes:
        try:
            async with asyncio.timeout_at(deadline):
                return await self._response.content.readany()
        except TimeoutError as exc:
            raise EngineTimeout("engine produced no token in time") from exc
        except aiohttp.ClientError as exc:
            raise StreamBroken(f"{type(exc).__name__}: {exc}") from exc

    async def finish(self) -> None:
        """Called at EOF here: the connection goes back to the pool."""
        self._response.release()


class AiohttpClient:
    """The previous `HttpClient.open_stream` (aiohttp), on today's retry wrapper (the
    same code then and now: the first attempt runs bare)."""

    def __init__(self, address: str) -> None:
        self._client = HttpClient(address)  # for `_with_retries` and its error mapping
        settings = self._client.settings
        self._timeout = aiohttp.ClientTimeout(
            sock_connect=settings.connect_timeout_s, sock_read=settings.stall_timeout_s
        )

    async def open_stream(
        self, path: str, body: Mapping[str, Any], *, headers: Mapping[str, str]
    ) -> Stream:
        timeout = self._timeout
        all_headers = dict(headers)
        payload = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
        url = self._client._url(path)

        async def attempt() -> Stream:
            response = await shared_session().post(
                url, data=payload, headers=all_headers, timeout=timeout
            )
            if 200 <= response.status < 300:
                return _AiohttpStream(response)
            try:
                raw = await response.content.read(64 << 10)
            finally:
                response.close()
            raise error_from_body(response.status, raw.decode(errors="replace"))

        return await self._client._with_retries(attempt, lambda: False, retry_503=True)


class WireClient:
    """Today's `HttpClient` (`_wire`)."""

    def __init__(self, address: str) -> None:
        self._client = HttpClient(address)

    async def open_stream(
        self, path: str, body: Mapping[str, Any], *, headers: Mapping[str, str]
    ) -> Stream:
        return await self._client.open_stream(path, body, headers=headers)


def make_client(name: str, address: str) -> Client:
    return AiohttpClient(address) if name == "aiohttp" else WireClient(address)


def chat_body(tokens: int) -> dict[str, Any]:
    return {
        "model": "bench",
        "messages": [{"role": "user", "content": "Tell me a story about a quick brown fox."}],
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


# -- one run ----------------------------------------------------------------------------


@dataclass
class Tally:
    requests: int = 0
    events: int = 0
    reads: int = 0
    bytes: int = 0
    miscounted: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])


async def stream_once(
    client: Client, body: Mapping[str, Any], headers: Mapping[str, str], expected: int, tally: Tally
) -> None:
    """One request to EOF. Counts `data: ` frames (one split over two reads too)."""
    deadline = asyncio.get_running_loop().time() + _STALL_S
    stream = await client.open_stream(PATH, body, headers=headers)
    frames = reads = size = 0
    tail = b""
    while True:
        chunk = await stream.read(deadline)
        if not chunk:
            break
        reads += 1
        size += len(chunk)
        frames += chunk.count(_DATA)
        if tail:
            frames += (tail + chunk[:5]).count(_DATA)  # only a frame split over the two
        tail = chunk[-5:]
    await stream.finish()
    events = frames - 1  # `data: [DONE]`
    tally.requests += 1
    tally.events += events
    tally.reads += reads + 1  # the read that saw EOF
    tally.bytes += size
    if events != expected:
        tally.miscounted += 1
        tally.error(f"{events} data frames instead of {expected}")


async def measure(
    client_name: str,
    client: Client,
    tokens: int,
    concurrency: int,
    duration_s: float,
    max_requests: int,
) -> dict[str, Any]:
    """C streams open at a time until `duration_s` (or `max_requests`), then the open
    ones finish. CPU of this process over all of it."""
    tally = Tally()
    body = chat_body(tokens)
    expected = tokens + 3  # role, tokens, finish, usage
    started = 0
    perf = time.perf_counter

    async def worker(index: int) -> None:
        nonlocal started
        while started < max_requests and perf() < end:
            started += 1
            headers = {"X-Llorch-Job": f"bench-{index}-{started}"}
            try:
                await stream_once(client, body, headers, expected, tally)
            except (AdapterError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                tally.error(f"{type(exc).__name__}: {exc}")

    gc.collect()
    cpu_before = own_cpu()
    process_before = time.process_time()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = perf()
    end = t0 + duration_s
    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=duration_s + _DRAIN_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = perf() - t0
    cpu = own_cpu() - cpu_before
    process_s = time.process_time() - process_before
    usage = resource.getrusage(resource.RUSAGE_SELF)
    user_s = usage.ru_utime - usage_before.ru_utime
    sys_s = usage.ru_stime - usage_before.ru_stime
    done = tally.requests
    return {
        "client": client_name,
        "tokens": tokens,
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "requests": done,
        "requests_per_s": done / wall if wall > 0 else None,
        "events": tally.events,
        "events_per_request": tally.events / done if done else None,
        "reads_per_request": tally.reads / done if done else None,
        "bytes_per_request": tally.bytes / done if done else None,
        "cpu_s": round(cpu.sched_s, 5),
        "cpu_ticks_s": round(cpu.ticks_s, 3),
        "process_time_s": round(process_s, 5),
        "core_util": round(cpu.sched_s / wall, 3) if wall > 0 else None,
        "cpu_us_per_request": cpu.sched_s / done * 1e6 if done else None,
        "cpu_us_per_event": cpu.sched_s / tally.events * 1e6 if tally.events else None,
        "cpu_us_per_read": cpu.sched_s / tally.reads * 1e6 if tally.reads else None,
        "user_us_per_request": user_s / done * 1e6 if done else None,
        "sys_us_per_request": sys_s / done * 1e6 if done else None,
        "miscounted": tally.miscounted,
        "errors": tally.errors,
        "requests_cut": len(pending),
        "error_samples": tally.error_samples,
    }


# -- all runs -----------------------------------------------------------------------------


async def run_all(
    args: argparse.Namespace, engine_url: str, engine_pids: Callable[[], list[int]]
) -> dict[str, Any]:
    clients = {name: make_client(name, engine_url) for name in CLIENTS}
    names = list(CLIENTS)
    runs: list[dict[str, Any]] = []
    try:
        for tokens in args.tokens:
            for concurrency in args.concurrency:
                for name in names:  # warm-up: connections opened, code paths hot
                    await measure(
                        name, clients[name], tokens, concurrency, args.warmup, args.max_requests
                    )
                for round_no in range(args.rounds):
                    shift = round_no % len(names)
                    for name in names[shift:] + names[:shift]:
                        await settle(engine_pids, quiet=0.2, limit_s=2.0)
                        result = await measure(
                            name,
                            clients[name],
                            tokens,
                            concurrency,
                            args.duration,
                            args.max_requests,
                        )
                        result["round"] = round_no
                        runs.append(result)
                        _progress(result)
    finally:
        await close_shared_session()  # aiohttp's session and `_wire`'s pool
    return {"runs": runs}


def _progress(result: dict[str, Any]) -> None:
    print(
        f"  t={result['tokens']:<4} c={result['concurrency']:<3} r{result['round']} "
        f"{result['client']:<8} {result['requests']:>6} req {_fmt(result['requests_per_s'], 0):>6}"
        f" req/s  cpu {_fmt(result['cpu_us_per_request'])} us/req "
        f"{_fmt(result['cpu_us_per_event'], 2)} us/ev "
        f"(user {_fmt(result['user_us_per_request'])} sys {_fmt(result['sys_us_per_request'])})"
        f"  core {result['core_util']:.2f}  "
        f"errors {result['errors']}",
        flush=True,
    )


_METRICS = (
    "requests_per_s",
    "events_per_request",
    "reads_per_request",
    "cpu_us_per_request",
    "cpu_us_per_event",
    "cpu_us_per_read",
    "user_us_per_request",
    "sys_us_per_request",
    "core_util",
)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median of the rounds per (tokens, concurrency, client)."""
    keys = ("tokens", "concurrency", "client")
    rows = median_rounds(runs, keys, _METRICS, ("requests", "errors"))
    return sorted(rows, key=lambda row: tuple(row[k] for k in keys))


def _row(rows: list[dict[str, Any]], tokens: int, concurrency: int, client: str) -> Any:
    for row in rows:
        if (row["tokens"], row["concurrency"], row["client"]) == (tokens, concurrency, client):
            return row
    return None


def fits(rows: list[dict[str, Any]], tokens: list[int]) -> list[dict[str, Any]]:
    """cpu per request = fixed + slope x (events or reads) per request, through the
    fewest-token and most-token rows of each (concurrency, client)."""
    low, high = min(tokens), max(tokens)
    found: list[dict[str, Any]] = []
    if low == high:
        return found
    for concurrency in sorted({r["concurrency"] for r in rows}):
        for client in CLIENTS:
            a, b = _row(rows, low, concurrency, client), _row(rows, high, concurrency, client)
            if a is None or b is None or a["cpu_us_per_request"] is None:
                continue
            fit: dict[str, Any] = {"concurrency": concurrency, "client": client}
            for unit in ("events", "reads"):
                x0, x1 = a[f"{unit}_per_request"], b[f"{unit}_per_request"]
                y0, y1 = a["cpu_us_per_request"], b["cpu_us_per_request"]
                slope = (y1 - y0) / (x1 - x0) if x1 != x0 else None
                fit[f"us_per_{unit[:-1]}"] = slope
                fit[f"fixed_us_by_{unit}"] = None if slope is None else y0 - slope * x0
            found.append(fit)
    return found


def _ratio(a: float | None, b: float | None) -> float | None:
    """a / b; None unless both are positive (a fitted intercept can come out negative)."""
    return None if a is None or b is None or a <= 0 or b <= 0 else a / b


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def table(rows: list[dict[str, Any]], fitted: list[dict[str, Any]], interval_ms: float) -> str:
    pacing = f"paced at {interval_ms:g} ms/token" if interval_ms else "unpaced"
    header = (
        f"| {'tokens':>6} | {'c':>3} | {'ev/req':>6} | {'reads/req':>9} "
        f"| {'req/s aio':>9} | {'req/s wire':>10} "
        f"| {'us/req aio':>10} | {'us/req wire':>11} | {'us/ev aio':>9} | {'us/ev wire':>10} "
        f"| {'aio/wire':>8} | {'err':>3} |"
    )
    lines = [
        f"engine {pacing}; CPU of the client process (core {GATEWAY_CORE}), median of rounds; "
        "reads/req: aiohttp/wire; aio/wire: ratio of CPU per request",
        header,
        "|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|",
    ]
    keys = sorted({(r["tokens"], r["concurrency"]) for r in rows})
    for tokens, concurrency in keys:
        aio, wire = (
            _row(rows, tokens, concurrency, "aiohttp"),
            _row(rows, tokens, concurrency, "wire"),
        )
        if aio is None or wire is None:
            continue
        lines.append(
            f"| {tokens:>6} | {concurrency:>3} | {_fmt(wire['events_per_request'], 0):>6} "
            f"| {_fmt(aio['reads_per_request'], 1) + '/' + _fmt(wire['reads_per_request'], 1):>9} "
            f"| {_fmt(aio['requests_per_s'], 0):>9} | {_fmt(wire['requests_per_s'], 0):>10} "
            f"| {_fmt(aio['cpu_us_per_request']):>10} | {_fmt(wire['cpu_us_per_request']):>11} "
            f"| {_fmt(aio['cpu_us_per_event'], 2):>9} | {_fmt(wire['cpu_us_per_event'], 2):>10} "
            f"| {_fmt(_ratio(aio['cpu_us_per_request'], wire['cpu_us_per_request']), 2, 'x'):>8}"
            f" | {aio['errors'] + wire['errors']:>3} |"
        )
    if fitted:
        lines += [
            "",
            "Fit per client: CPU us per request = fixed + per_event x events (or per_read x reads)",
            f"| {'c':>3} | {'client':<7} | {'fixed us':>8} | {'us/event':>8} "
            f"| {'fixed us (reads)':>16} | {'us/read':>7} |",
            "|-----|---------|----------|----------|------------------|---------|",
        ]
        for fit in fitted:
            lines.append(
                f"| {fit['concurrency']:>3} | {fit['client']:<7} "
                f"| {_fmt(fit['fixed_us_by_events']):>8} | {_fmt(fit['us_per_event'], 2):>8} "
                f"| {_fmt(fit['fixed_us_by_reads']):>16} | {_fmt(fit['us_per_read'], 2):>7} |"
            )
        by_key = {(f["concurrency"], f["client"]): f for f in fitted}
        for concurrency in sorted({f["concurrency"] for f in fitted}):
            aio, wire = by_key.get((concurrency, "aiohttp")), by_key.get((concurrency, "wire"))
            if aio is None or wire is None:
                continue
            lines.append(
                f"c={concurrency}: aiohttp/wire fixed "
                f"{_fmt(_ratio(aio['fixed_us_by_events'], wire['fixed_us_by_events']), 2, 'x')}, "
                f"per event {_fmt(_ratio(aio['us_per_event'], wire['us_per_event']), 2, 'x')}, "
                f"per read {_fmt(_ratio(aio['us_per_read'], wire['us_per_read']), 2, 'x')}"
            )
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=_ints, default=[1, 100], help="tokens per stream")
    parser.add_argument("--concurrency", type=_ints, default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=1.5, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds per client")
    parser.add_argument("--max-requests", type=int, default=50_000, help="per run")
    parser.add_argument("--interval-ms", type=float, default=0.0, help="engine pacing; 0: none")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    pin_self(GATEWAY_CORE)  # the engine is pinned to LOAD_CORE by `start_engine`
    load_before = announce_load()
    started = time.time()
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llorch-client-")))
        engine, engine_url = start_engine(root, core=LOAD_CORE)
        stack.callback(engine.stop)
        set_engine(engine_url, interval_ms=args.interval_ms)
        print(f"fake engine at {engine_url} (core {LOAD_CORE}); clients on core {GATEWAY_CORE}")
        work = run_all(args, engine_url, engine.pids)
        result = uvloop.run(work) if args.loop == "uvloop" else asyncio.run(work)
        stats = engine_stats(engine_url)
    load_after = loadavg()
    rows = summarize(result["runs"])
    fitted = fits(rows, args.tokens)
    for row in rows:
        wire = _row(rows, row["tokens"], row["concurrency"], "wire")
        row["cpu_vs_wire"] = _ratio(row["cpu_us_per_request"], wire and wire["cpu_us_per_request"])
    report = {
        **report_head("engine_client", started, load_before, load_after),
        "method": {
            "client_core": GATEWAY_CORE,
            "engine_core": LOAD_CORE,
            "loop": args.loop,
            "interval_ms": args.interval_ms,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "tokens": args.tokens,
            "concurrency": args.concurrency,
            "cpu": "schedstat ns of this process (all threads) over a run",
            "events": "SSE data: frames read, [DONE] excluded (tokens + 3 per stream)",
        },
        "summary": rows,
        "fits": fitted,
        "runs": result["runs"],
        "engine_stats": stats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print()
    print(table(rows, fitted, args.interval_ms))
    print(
        f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"{report['elapsed_s']:.0f} s; JSON: {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
