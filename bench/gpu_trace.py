"""Where llorch's added TTFT goes: one request's path, timed at every hop (issue 13, c=32).

    python -m bench.gpu_trace --llama-server BIN --model M.gguf [--concurrency 32]
        [--tokens 256] [--duration 10] [--warmup 3] [--gpu-layers 999] [--out F.json]

Starts llorch as `gpu_llamacpp run` does (one `llamacpp` pool of `--concurrency` slots,
started by pool-managerd), with orchestratord's traces on (`LLORCH_TRACE_FILE`, OBS-03)
and llama-server's log timestamped (`LLAMA_ARG_LOG_TIMESTAMPS`, verbosity 4 so that
its request-arrival line shows). Then, per system (`direct`: llama-server's own
`/v1/chat/completions`, one connection per request as the benchmark does; `llorch-sse`:
`/v2/tasks`), `--concurrency` closed-loop clients stream for `--warmup` seconds
(unrecorded) and `--duration` seconds (recorded). Every request carries its own W3C
`traceparent`, so orchestratord's spans of it (`task`, `admission`, `placement`,
`dispatch`, the adapter's `engine.generate`) are found by trace id. Per request:

    client send ─► orchestratord task start ─► admitted ─► placed ─► adapter's HTTP
    request (engine.generate) ─► llama-server arrival (its `conv_id=` line) ─► slot
    launch (`launch_slot_: ... processing task`) ─► first token at orchestratord
    (`first_token` event) ─► first token at the client

and for `direct` the client's send, llama-server's arrival and launch and the client's
first token. The arrival line (`conv_id=`) shows only at llama-server's log verbosity 4
(`--engine-log-verbosity 4`), which also logs many lines per request; at the default 3
the segments run to the slot launch. pool-managerd rotates the log past 10 MiB: the
rotated files are read too. llama-server's log times are relative to its start: five
sequential marker requests on the idle engine give the offset (the largest `send -
launch` of the five, a lower bound within one localhost round trip and the idle
engine's launch). Arrivals and launches are matched to requests in order of their send
to the engine (launches in order of task id; both FIFO).
Also per request: how long the engine's slot sat free between the previous request of
the same client and this one (`release` of the previous task to this arrival).

Prints the median of every segment per system and the difference, writes JSON. Runs
anywhere: `--gpu-layers 0` on a CPU (a small model, small `--concurrency`) checks the
tooling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench._harness import MODEL, loadavg, machine_info, pin_self, start_llorch
from bench.gpu_llamacpp import engine_key

PROMPT = [{"role": "user", "content": "Tell me a story about a quick brown fox."}]
MARKERS = 5
# llama-server's timestamped log line: "M.SS.mmm.uuu L text"
_STAMP = re.compile(r"^(\d+)\.(\d\d)\.(\d\d\d)\.(\d\d\d) \w (.*)$")
_ARRIVAL = re.compile(r"conv_id=")
_LAUNCH = re.compile(r"launch_slot_: id +(\d+) \| task (\d+) \| processing task")
_RELEASE = re.compile(r"release: id +(\d+) \| task (\d+) \| stop processing")
_PROMPT_EVAL = re.compile(r"task (\d+) \| prompt eval time = +([\d.]+) ms")


@dataclass
class Request:
    system: str
    client: int
    seq: int
    trace_id: str
    send_ns: int
    first_ns: int | None = None
    end_ns: int | None = None
    tokens: int = 0
    error: str = ""
    recorded: bool = True  # False: sent during the warm-up
    hops: dict[str, float] = field(default_factory=dict)  # absolute ns of each hop


def _traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


async def _one(
    session: aiohttp.ClientSession,
    system: str,
    url: str,
    headers: dict[str, str],
    tokens: int,
    client: int,
    seq: int,
) -> Request:
    trace_id, parent = _traceparent()
    if system == "direct":
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": PROMPT,
            "max_tokens": tokens,
            "stream": True,
        }
        token_mark, end_mark = b'"content":"', b"data: [DONE]"
    else:
        body = {"workload": "chat", "model": MODEL, "messages": PROMPT, "max_tokens": tokens}
        token_mark, end_mark = b"\nevent: token\n", b"\nevent: end\n"
    sent = {**headers, "Content-Type": "application/json", "traceparent": parent}
    if system != "direct":
        sent["Accept"] = "text/event-stream"
    request = Request(system, client, seq, trace_id, time.time_ns())
    try:
        async with session.post(url, data=json.dumps(body).encode(), headers=sent) as response:
            if response.status != 200:
                request.error = f"HTTP {response.status}: {(await response.read())[:200]!r}"
                return request
            buffer = b""
            while True:
                chunk = await response.content.readany()
                if not chunk:
                    break
                now = time.time_ns()
                buffer += chunk
                events = buffer.split(b"\n\n")
                buffer = events.pop()
                for event in events:
                    event = b"\n" + event + b"\n"
                    if token_mark in event and b'"content":""' not in event:
                        if request.first_ns is None:
                            request.first_ns = now
                        request.tokens += 1
                    elif end_mark in event:
                        request.end_ns = now
            if request.end_ns is None:
                request.error = "stream ended without its end"
    except (aiohttp.ClientError, OSError) as exc:
        request.error = f"{type(exc).__name__}: {exc}"
    return request


async def _phase(
    system: str, url: str, headers: dict[str, str], args: argparse.Namespace
) -> tuple[list[Request], float, float]:
    """`--concurrency` closed-loop clients; every request, those of the warm-up marked."""
    done: list[Request] = []
    start = time.monotonic()
    window = (start + args.warmup, start + args.warmup + args.duration)
    connector = aiohttp.TCPConnector(limit=0, force_close=system == "direct")
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(index: int) -> None:
            seq = 0
            while time.monotonic() < window[1]:
                in_window = time.monotonic() >= window[0]
                request = await _one(session, system, url, headers, args.tokens, index, seq)
                request.recorded = in_window
                seq += 1
                done.append(request)

        await asyncio.gather(*(client(i) for i in range(args.concurrency)))
    return done, window[0], window[1]


async def _markers(url: str, headers: dict[str, str]) -> list[int]:
    """Sequential one-token requests on the idle engine: their send times (wall ns)."""
    sends = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for seq in range(MARKERS):
            request = await _one(session, "direct", url, headers, 1, -1, seq)
            if request.error:
                raise RuntimeError(f"marker request failed: {request.error}")
            sends.append(request.send_ns)
    return sends


@dataclass
class EngineLog:
    arrivals: list[float]  # seconds since the log's start
    launches: list[tuple[float, int, int]]  # (time, slot, task)
    releases: dict[int, float]  # task -> time
    prompt_ms: dict[int, float]  # task -> prompt eval time


def parse_engine_log(text: str) -> EngineLog:
    log = EngineLog([], [], {}, {})
    for line in text.splitlines():
        stamp = _STAMP.match(line)
        if stamp is None:
            continue
        minutes, seconds, ms, us, rest = stamp.groups()
        at = int(minutes) * 60 + int(seconds) + int(ms) / 1e3 + int(us) / 1e6
        if _ARRIVAL.search(rest):
            log.arrivals.append(at)
        elif found := _LAUNCH.search(rest):
            log.launches.append((at, int(found.group(1)), int(found.group(2))))
        elif found := _RELEASE.search(rest):
            log.releases[int(found.group(2))] = at
        elif found := _PROMPT_EVAL.search(rest):
            log.prompt_ms[int(found.group(1))] = float(found.group(2))
    log.launches.sort(key=lambda launch: launch[2])
    return log


def read_engine_log(current: Path) -> str:
    """The engine's log with what pool-managerd rotated out of it (`.N` files, oldest
    first: it copies the log to `.1` and truncates it past 10 MiB)."""
    rotated = sorted(current.parent.glob(current.name + ".*"), key=lambda p: p.stat().st_mtime)
    return "".join(p.read_text(errors="replace") for p in [*rotated, current])


def load_spans(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """trace id -> span name -> span (the first of each name: one attempt per task)."""
    spans: dict[str, dict[str, dict[str, Any]]] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            span = json.loads(line)
            spans.setdefault(span["trace_id"], {}).setdefault(span["name"], span)
    return spans


def attach_spans(requests: list[Request], spans: dict[str, dict[str, dict[str, Any]]]) -> None:
    for request in requests:
        found = spans.get(request.trace_id)
        if not found or "task" not in found:
            continue
        task = found["task"]
        hops = request.hops
        hops["task_start"] = task["start_ns"]
        for event in task["events"]:
            if event["name"] == "first_token":
                hops["orch_first_token"] = event["time_ns"]
        if "admission" in found:
            hops["admitted"] = found["admission"]["end_ns"]
        if "placement" in found:
            hops["placed"] = found["placement"]["end_ns"]
        if "dispatch" in found:
            hops["dispatch_start"] = found["dispatch"]["start_ns"]
            hops["slot_freed"] = found["dispatch"]["end_ns"]
        if "engine.generate" in found:
            hops["engine_send"] = found["engine.generate"]["start_ns"]
            hops["engine_end_seen"] = found["engine.generate"]["end_ns"]


def attach_engine(requests: list[Request], log: EngineLog, offset_s: float) -> dict[str, int]:
    """Matches the engine's arrivals of this phase (those after its first send to the
    engine, less 1 ms) to its requests in order of their send to the engine, and each
    request to the next launch in task order that came after its arrival (or its send,
    when the log shows no arrivals: verbosity below 4); tasks are queued in order."""
    to_engine = sorted(
        (r for r in requests if "engine_send" in r.hops or r.system == "direct"),
        key=lambda r: r.hops.get("engine_send", r.send_ns),
    )
    if not to_engine:
        return {"requests": 0, "arrivals": 0, "matched": 0}
    first = to_engine[0].hops.get("engine_send", to_engine[0].send_ns) / 1e9 - offset_s - 1e-3
    arrivals = [a for a in log.arrivals if a >= first]
    launches = [x for x in log.launches if x[0] >= first]
    index = 0
    matched = 0
    for number, request in enumerate(to_engine):
        sent = request.hops.get("engine_send", request.send_ns) / 1e9 - offset_s
        after = sent - 1e-3
        if arrivals and number < len(arrivals):
            request.hops["engine_arrival"] = (arrivals[number] + offset_s) * 1e9
            after = arrivals[number]
        while index < len(launches) and launches[index][0] < after:
            index += 1
        if index == len(launches):
            break
        at, _, task = launches[index]
        index += 1
        matched += 1
        request.hops["engine_launch"] = (at + offset_s) * 1e9
        request.hops["engine_task"] = task
        if task in log.releases:
            request.hops["engine_release"] = (log.releases[task] + offset_s) * 1e9
        if task in log.prompt_ms:
            request.hops["engine_prompt_ms"] = log.prompt_ms[task]
    return {"requests": len(to_engine), "arrivals": len(arrivals), "matched": matched}


SEGMENTS_DIRECT = (
    ("client send -> slot launch", "send", "engine_launch"),
    ("client send -> engine arrival", "send", "engine_arrival"),
    ("engine arrival -> slot launch", "engine_arrival", "engine_launch"),
    ("slot launch -> first token at client", "engine_launch", "first"),
)
SEGMENTS_LLORCH = (
    ("client send -> orchestratord task start", "send", "task_start"),
    ("task start -> admitted", "task_start", "admitted"),
    ("admitted -> placed (queue wait)", "admitted", "placed"),
    ("placed -> adapter HTTP request", "placed", "engine_send"),
    ("adapter HTTP request -> slot launch", "engine_send", "engine_launch"),
    ("adapter HTTP request -> engine arrival", "engine_send", "engine_arrival"),
    ("engine arrival -> slot launch", "engine_arrival", "engine_launch"),
    ("slot launch -> first token at orchestratord", "engine_launch", "orch_first_token"),
    ("first token at orchestratord -> client", "orch_first_token", "first"),
)


def _at(request: Request, name: str) -> float | None:
    if name == "send":
        return float(request.send_ns)
    if name == "first":
        return None if request.first_ns is None else float(request.first_ns)
    if name == "end":
        return None if request.end_ns is None else float(request.end_ns)
    return request.hops.get(name)


def _median_ms(values: list[float]) -> float | None:
    return round(statistics.median(values) / 1e6, 3) if values else None


def segments(requests: list[Request], system: str) -> dict[str, Any]:
    """Median of every segment (ms) and of the whole TTFT, over complete requests."""
    table = SEGMENTS_DIRECT if system == "direct" else SEGMENTS_LLORCH
    ok = [r for r in requests if not r.error and r.first_ns is not None]
    rows: dict[str, Any] = {}
    for label, start, end in table:
        values = []
        for request in ok:
            a, b = _at(request, start), _at(request, end)
            if a is not None and b is not None:
                values.append(b - a)
        rows[label] = {"median_ms": _median_ms(values), "n": len(values)}
        if values:
            values.sort()
            rows[label]["p90_ms"] = round(values[int(0.9 * (len(values) - 1))] / 1e6, 3)
    ttft = [float(r.first_ns - r.send_ns) for r in ok if r.first_ns is not None]
    rows["TTFT at the client"] = {"median_ms": _median_ms(ttft), "n": len(ttft)}
    prompt = [r.hops["engine_prompt_ms"] * 1e6 for r in ok if "engine_prompt_ms" in r.hops]
    rows["engine's prompt eval time (its log)"] = {"median_ms": _median_ms(prompt)}
    rows.update(_turnaround(ok, system))
    return rows


def _turnaround(requests: list[Request], system: str) -> dict[str, Any]:
    """Per client, from one request's end to its next: how long the engine's slot sat
    free (previous task's release -> next arrival), and the hops in between."""
    by_client: dict[int, list[Request]] = {}
    for request in requests:
        by_client.setdefault(request.client, []).append(request)
    pairs: dict[str, list[float]] = {}

    def add(label: str, a: float | None, b: float | None) -> None:
        if a is not None and b is not None:
            pairs.setdefault(label, []).append(b - a)

    for chain in by_client.values():
        chain.sort(key=lambda r: r.seq)
        for before, after in itertools.pairwise(chain):
            if after.seq != before.seq + 1:
                continue
            add(
                "turnaround: engine release -> client end",
                before.hops.get("engine_release"),
                _at(before, "end"),
            )
            if system != "direct":
                add(
                    "turnaround: engine release -> orchestratord saw the end",
                    before.hops.get("engine_release"),
                    before.hops.get("engine_end_seen"),
                )
                add(
                    "turnaround: orchestratord slot freed -> next task start",
                    before.hops.get("slot_freed"),
                    after.hops.get("task_start"),
                )
            add("turnaround: client end -> next send", _at(before, "end"), _at(after, "send"))
            add(
                "turnaround: engine release -> next launch (same client)",
                before.hops.get("engine_release"),
                after.hops.get("engine_launch"),
            )
            add(
                "turnaround: engine slot free (release -> next arrival)",
                before.hops.get("engine_release"),
                after.hops.get("engine_arrival"),
            )
    return {
        label: {"median_ms": _median_ms(values), "n": len(values)}
        for label, values in pairs.items()
    }


BURST_GAP_NS = 50_000_000  # sends closer than this to the previous one: the same burst


def bursts(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """How a burst of requests sent together goes through orchestratord: each of its
    requests' task start and adapter HTTP request, in ms after the burst's first send,
    in order. With equal streams in one batch, the clients send again together: the
    task starts are spaced by the intake of one request (one event loop), and the
    engine requests show whether each went out after its own intake or in clumps after
    several (an attempt waiting behind later requests' intake)."""
    ordered = sorted(
        (r for r in requests if "task_start" in r["hops"] and not r["error"]),
        key=lambda r: r["send_ns"],
    )
    groups: list[list[dict[str, Any]]] = []
    for request in ordered:
        if groups and request["send_ns"] - groups[-1][-1]["send_ns"] <= BURST_GAP_NS:
            groups[-1].append(request)
        else:
            groups.append([request])
    rows = []
    for group in groups:
        if len(group) < 4:
            continue
        first = group[0]["send_ns"]
        starts = sorted((r["hops"]["task_start"] - first) / 1e6 for r in group)
        sends = sorted(
            (r["hops"]["engine_send"] - first) / 1e6 for r in group if "engine_send" in r["hops"]
        )
        waits = [
            (r["hops"]["engine_send"] - r["hops"]["placed"]) / 1e6
            for r in group
            if "engine_send" in r["hops"] and "placed" in r["hops"]
        ]
        rows.append(
            {
                "requests": len(group),
                "send_spread_ms": round((group[-1]["send_ns"] - first) / 1e6, 2),
                "task_start_spacing_ms": round(
                    statistics.median(b - a for a, b in itertools.pairwise(starts)), 3
                )
                if len(starts) > 1
                else None,
                "placed_to_engine_request_ms": round(statistics.median(waits), 2)
                if waits
                else None,
                "task_starts_ms": [round(x, 1) for x in starts],
                "engine_requests_ms": [round(x, 1) for x in sends],
            }
        )
    return {"gap_ms": BURST_GAP_NS / 1e6, "bursts": rows}


def print_bursts(report: dict[str, Any]) -> None:
    for system in report["systems"]:
        if system == "direct":
            continue
        found = bursts([r for r in report["requests"] if r["system"] == system])
        print(f"\n{system}: bursts of requests sent together (ms after each burst's first send)")
        for row in found["bursts"]:
            print(
                f"  {row['requests']} requests over {row['send_spread_ms']} ms; task starts "
                f"{row['task_start_spacing_ms']} ms apart; placed -> engine request median "
                f"{row['placed_to_engine_request_ms']} ms"
            )
            print(f"    task starts:      {' '.join(map(str, row['task_starts_ms']))}")
            print(f"    engine requests:  {' '.join(map(str, row['engine_requests_ms']))}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 2:
        pin_self(cores[1])
    engine_cores = frozenset(cores[2:]) if len(cores) > 2 else frozenset(cores)
    systems = [s for s in args.systems.split(",") if s]
    report: dict[str, Any] = {
        "benchmark": "gpu_trace",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {**machine_info(), "cpus": len(cores)},
        "load_average_before": loadavg(),
        "method": {k: str(v) for k, v in vars(args).items()},
    }
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llorch-trace-")))
        logs = root / "logs"
        logs.mkdir()
        trace_file = root / "trace.jsonl"
        os.environ.update(
            {
                "LLORCH_TRACE_FILE": str(trace_file),
                "LLAMA_ARG_LOG_TIMESTAMPS": "1",
                "LLAMA_ARG_LOG_PREFIX": "1",
                "LLAMA_ARG_LOG_VERBOSITY": str(args.engine_log_verbosity),
            }
        )
        pool = {
            "id": MODEL,
            "model_id": MODEL,
            "engine": "llamacpp",
            "model": str(args.model),
            "ctx": args.ctx,
            "slots": args.concurrency,
            "replicas": 1,
            "gpu_layers": args.gpu_layers,
            "engine_command": [str(args.llama_server)],
        }
        llorch = start_llorch(
            root / "llorch",
            logs,
            slots=args.concurrency,
            pool=pool,
            gateway_core=cores[0],
            engine_cores=engine_cores,
            ready_timeout_s=300.0,
        )
        stack.callback(llorch.stop)
        engine_logs = sorted((root / "llorch" / "pool-managerd" / "logs").glob(f"{MODEL}*.log"))
        if not engine_logs:
            raise RuntimeError("no engine log under pool-managerd/logs")
        engine_log = engine_logs[0]
        key = {"Authorization": f"Bearer {engine_key(llorch.engine_pids())}"}
        direct_url = f"{llorch.engine_url}/v1/chat/completions"
        marker_sends = asyncio.run(_markers(direct_url, key))
        time.sleep(0.2)
        # the idle engine launches a marker's task as it arrives: its launch bounds the
        # clock offset (send <= launch), the tightest of the five
        launches = parse_engine_log(read_engine_log(engine_log)).launches[-MARKERS:]
        if len(launches) < MARKERS:
            raise RuntimeError(f"the engine logged {len(launches)} of {MARKERS} marker launches")
        pairs = list(zip(marker_sends, (x[0] for x in launches), strict=True))
        offset_s = max(send / 1e9 - at for send, at in pairs)
        spread = [round((send / 1e9 - at - offset_s) * 1e3, 3) for send, at in pairs]
        report["clock"] = {"offset_s": offset_s, "marker_send_minus_launch_ms": spread}
        results: dict[str, Any] = {}
        all_requests: list[Request] = []
        for system in systems:
            url, headers = (
                (direct_url, key) if system == "direct" else (f"{llorch.url}/v2/tasks", {})
            )
            requests, _, _ = asyncio.run(_phase(system, url, headers, args))
            time.sleep(0.5)  # spans are written as they end; the last end was just seen
            log = parse_engine_log(read_engine_log(engine_log))
            if system != "direct":
                attach_spans(requests, load_spans(trace_file))
            # the phase's arrivals, warm-up included, against all of its requests
            matching = attach_engine(requests, log, offset_s)
            requests = [r for r in requests if r.recorded]
            errors = [r.error for r in requests if r.error]
            results[system] = {
                "requests": len(requests),
                "errors": len(errors),
                "error_samples": errors[:3],
                "matching": matching,
                "segments": segments(requests, system),
            }
            all_requests += requests
            print(f"{system}: {len(requests)} requests, {len(errors)} errors, {matching}")
        report["systems"] = results
        report["requests"] = [vars(r) for r in all_requests]
        report["load_average_after"] = loadavg()
        report["engine_log_head"] = read_engine_log(engine_log).splitlines()[:5]
    return report


def print_table(report: dict[str, Any]) -> None:
    systems = report["systems"]
    print(f"\nmedian per segment, ms (c={report['method']['concurrency']}):")
    for system, result in systems.items():
        print(f"  {system}:")
        for label, row in result["segments"].items():
            value = row.get("median_ms")
            shown = "-" if value is None else f"{value:9.3f}"
            print(f"    {label:<58} {shown}  (n={row.get('n', '-')})")
    direct = systems.get("direct", {}).get("segments", {})
    for system, result in systems.items():
        if system == "direct" or not direct:
            continue
        a = direct["TTFT at the client"]["median_ms"]
        b = result["segments"]["TTFT at the client"]["median_ms"]
        if a is not None and b is not None:
            print(f"  added TTFT p50 ({system} - direct): {b - a:+.3f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument(
        "--report", type=Path, help="print the tables of a saved JSON (no run); with bursts"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--gpu-layers", type=int, default=999)
    parser.add_argument("--systems", default="direct,llorch-sse")
    parser.add_argument(
        "--engine-log-verbosity",
        type=int,
        default=3,
        help="llama-server's; 4 adds its request-arrival line (and many more lines)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_trace.json"))
    args = parser.parse_args(argv)
    if args.report is not None:
        saved = json.loads(args.report.read_text())
        print_table(saved)
        print_bursts(saved)
        return 0
    if args.llama_server is None or args.model is None:
        parser.error("--llama-server and --model are required (unless --report)")
    args.model = args.model.resolve()
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print_table(report)
    print_bursts(report)
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
