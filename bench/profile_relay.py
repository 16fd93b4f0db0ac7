"""Where orchestratord spends its CPU on the token relay path, per token event.

    uv run python -m bench.profile_relay [--profiler py-spy|cprofile]
        [--endpoint sse|2step|openai] [--concurrency 16] [--duration 8] [--interval-ms 0]

Starts llorch as `gateway_overhead` does (orchestratord pinned to core 0, pool-managerd,
the fake engine and this client on core 1), streams chat tasks through one endpoint at
a fixed concurrency for `duration` seconds, and profiles orchestratord meanwhile:

- `py-spy` (sampling, low overhead; installed into ~/.cache/llorch/bench/tools-venv the
  first time): attaches to the running process; prints the functions with the most
  samples, self and inclusive, as a share of the samples and as µs of CPU per token event;
- `cprofile`: runs orchestratord under `python -m cProfile` (deterministic, slows small
  functions down by a roughly constant factor); prints the top functions by own time
  with their calls per token event, which shows per-event work exactly.

The µs figures divide the profile's time by the token events delivered in the profiled
window; `--interval-ms 10` profiles the paced scenario instead. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pstats
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import uvloop
import yaml

from bench._harness import (
    LOAD_CORE,
    Cpu,
    Recorder,
    System,
    client_session,
    loadavg,
    pin_self,
    run_dir,
    set_engine,
    start_llorch,
    stream_once,
)

TOOLS_VENV = Path.home() / ".cache" / "llorch" / "bench" / "tools-venv"


def ensure_py_spy() -> Path:
    binary = TOOLS_VENV / "bin" / "py-spy"
    if binary.exists():
        return binary
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is needed to install py-spy")
    subprocess.run([uv, "venv", "--python", sys.executable, str(TOOLS_VENV)], check=True)
    python = str(TOOLS_VENV / "bin" / "python")
    subprocess.run([uv, "pip", "install", "--python", python, "py-spy"], check=True)
    return binary


async def load(
    system: System, concurrency: int, duration_s: float, tokens: int
) -> tuple[Recorder, float, Cpu]:
    """C streams for `duration_s`; returns what the client saw, wall seconds, gateway CPU."""
    record = Recorder(tokens_expected=tokens)
    body = system.body(tokens)
    session = client_session(concurrency)
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        while time.perf_counter() < deadline:
            try:
                await stream_once(session, system, body, record)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
                record.error(f"{type(exc).__name__}: {exc}")

    before = Cpu.read(system.gateway())
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    cpu = Cpu.read(system.gateway()) - before
    await session.close()
    if record.errors:
        print(f"errors: {record.errors} {record.error_samples[:2]}")
    return record, wall, cpu


_LOOP = "event loop: uvloop C code (I/O, callbacks, task switches)"
_OUTER = frozenset({"_run_module_as_main", "_run_code", "<module>", "main", "run", "Runner.run"})


def _frame_name(frame: str) -> str:
    """py-spy raw frame `function (path/to/file.py:LINE)` -> `function (file.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({short})"


def report_py_spy(raw: Path, events: int, rate: int, top: int) -> None:
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        # uvloop runs callbacks and I/O in C under `Runner.run`: its own time is the loop's
        self_samples[_LOOP if leaf.startswith("Runner.run ") else leaf] += count
        for name in set(frames):
            if name.split(" ", 1)[0] not in _OUTER:
                inclusive[name] += count
    if not total:
        print("py-spy recorded no samples")
        return
    per_event = 1e6 / rate / max(1, events)
    print(f"\npy-spy: {total} samples at {rate} Hz (active threads only)")
    print("(stacks of resumed coroutines start at the coroutine: inclusive shares are lower")
    print(" bounds for the functions that await; self shares are exact)")
    print(f"{'self %':>7} {'us/ev':>7}  function")
    for name, count in self_samples.most_common(top):
        print(f"{100 * count / total:>6.1f}% {count * per_event:>7.2f}  {name}")
    print(f"\n{'incl %':>7} {'us/ev':>7}  function (inclusive)")
    for name, count in inclusive.most_common(top):
        print(f"{100 * count / total:>6.1f}% {count * per_event:>7.2f}  {name}")


def report_cprofile(path: Path, events: int, top: int) -> None:
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in entries.items():
        short = "/".join(Path(filename).parts[-2:]) if filename != "~" else ""
        rows.append((tottime, cumtime, calls, f"{name} ({short}:{line})" if short else name))
    print(f"\ncProfile (whole process life, start-up included; {events} token events)")
    print(f"{'own s':>7} {'own us/ev':>10} {'cum us/ev':>10} {'calls/ev':>9}  function")
    for tottime, cumtime, calls, name in sorted(rows, reverse=True)[:top]:
        print(
            f"{tottime:>7.2f} {tottime / events * 1e6:>10.2f} {cumtime / events * 1e6:>10.2f} "
            f"{calls / events:>9.2f}  {name}"
        )


def sweep(system: System, args: argparse.Namespace) -> None:
    """CPU per request at several stream lengths, and the least-squares line through them:
    the fixed cost of a request and the marginal cost of a token event."""
    points: list[tuple[int, float]] = []
    for tokens in [int(t) for t in args.sweep.split(",") if t]:
        record, wall, cpu = uvloop.run(load(system, args.concurrency, args.duration, tokens))
        requests = max(1, record.requests_ok)
        per_request = cpu.sched_s / requests * 1e6
        points.append((tokens, per_request))
        print(
            f"{system.name} c={args.concurrency} {tokens:>5} tokens/stream: {requests} requests "
            f"in {wall:.1f} s, {record.token_events / wall:.0f} tokens/s, "
            f"{per_request:.0f} us CPU per request, "
            f"{cpu.sched_s / max(1, record.token_events) * 1e6:.1f} us per token event"
        )
    if len(points) >= 2:
        n = len(points)
        mean_x = sum(x for x, _ in points) / n
        mean_y = sum(y for _, y in points) / n
        slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum(
            (x - mean_x) ** 2 for x, _ in points
        )
        fixed = mean_y - slope * mean_x
        print(f"fit: {fixed:.0f} us per request + {slope:.1f} us per token event")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiler", choices=("py-spy", "cprofile"), default="py-spy")
    parser.add_argument("--endpoint", choices=("sse", "2step", "openai"), default="sse")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--tokens", type=int, default=100, help="tokens per stream")
    parser.add_argument("--interval-ms", type=float, default=0.0, help="engine pacing")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--sweep",
        help="no profiler: token counts per stream, e.g. 10,200; fits CPU per request = "
        "fixed + per-token x tokens",
    )
    parser.add_argument("--llorch-log-level", default="INFO")
    parser.add_argument(
        "--config",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="orchestratord setting (YAML value), e.g. journal=false",
    )
    parser.add_argument("--workdir", type=Path, help="keep configs, logs and profiles here")
    args = parser.parse_args(argv)

    pin_self(LOAD_CORE)
    print(f"load average: {' '.join(f'{x:.2f}' for x in loadavg())}")
    with contextlib.ExitStack() as stack:
        root, logs = run_dir(stack, args.workdir, "llorch-prof-")
        profile = root / "orchestratord.prof"
        launcher: tuple[str, ...] = ()
        if args.profiler == "cprofile":
            launcher = (sys.executable, "-m", "cProfile", "-o", str(profile))
        llorch = start_llorch(
            root / "llorch",
            logs,
            slots=max(64, args.concurrency + 8),
            log_level=args.llorch_log_level,
            launcher=launcher,
            orchestrator={
                key: yaml.safe_load(value)
                for key, _, value in (item.partition("=") for item in args.config)
            },
        )
        stack.callback(llorch.stop)
        set_engine(llorch.engine_url, interval_ms=args.interval_ms)
        gateway, side = llorch.gateway_pids, llorch.engine_pids
        if args.endpoint == "openai":
            system = System(
                "llorch-openai", llorch.url, "/v1/chat/completions", "openai", gateway, side
            )
        else:
            two_step = args.endpoint == "2step"
            name = "llorch-2step" if two_step else "llorch-sse"
            system = System(
                name, llorch.url, "/v2/tasks", "llorch", gateway, side, two_step=two_step
            )
        warm, _, _ = uvloop.run(load(system, args.concurrency, 1.0, args.tokens))
        if args.sweep:
            sweep(system, args)
            return 0
        spy = None
        raw = root / "py-spy.txt"
        if args.profiler == "py-spy":
            spy = subprocess.Popen(
                [
                    str(ensure_py_spy()),
                    "record",
                    "--pid",
                    str(llorch.orchestratord.pid),
                    "--rate",
                    str(args.rate),
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                    "--duration",
                    str(int(args.duration + 1)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
        record, wall, cpu = uvloop.run(load(system, args.concurrency, args.duration, args.tokens))
        events = record.token_events
        print(
            f"{system.name} c={args.concurrency}: {events} token events in {wall:.1f} s "
            f"({events / wall:.0f}/s); orchestratord CPU {cpu.sched_s:.2f} s = "
            f"{cpu.sched_s / max(1, events) * 1e6:.1f} us per token event"
        )
        if spy is not None:
            spy.wait(timeout=args.duration + 30)
            report_py_spy(raw, events, args.rate, args.top)
        llorch.stop()
        if args.profiler == "cprofile":  # the profile covers the warm-up too
            report_cprofile(profile, events + warm.token_events, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
