"""`llorch up`'s default model through llorch vs llama-cpp-python called directly (issue 14).

    uv run --frozen python -m bench.up_vs_direct [--rounds 5] [--max-tokens 128]
        [--systems direct,llorch-sse,llorch-openai]

Starts `llorch up` (a subprocess: its own temporary state directory, a free HTTP port,
the default model Gemma 3 270M Q4_K_M, llama.cpp threads picked by `up` itself: one per
physical core) and, in this process, `llama_cpp.Llama` on the same GGUF file with the
same settings `up`'s in-process pool loads it with: `n_threads` = the threads `up`
picked (`llorch.up_checks.llama_threads`, the function `up` calls), `n_ctx` = `up`'s
context (4096), llama-cpp-python's defaults for the rest (`n_batch`, `n_threads_batch`),
as the in-process backend leaves them. Then the same prompt, greedy (temperature 0),
`--max-tokens` tokens, one request at a time (c=1; `up` serves one slot), through:

    direct         Llama.create_completion (the library called directly, no streaming)
    llorch-sse     POST /v2/tasks, Accept: text/event-stream (one round trip)
    llorch-openai  POST /v1/completions, stream, include_usage (the OpenAI facade)

Tokens/s of one request = output tokens / (request sent .. last byte): the engine's
count (`usage.completion_tokens` directly, the `end` event's `tokens_out` or the final
usage chunk through llorch), so coalesced token events count right. Each round runs
`--per-round` requests on every system, the order rotated each round so drift hits all
systems alike; a round's value is the median of its requests; the table shows the
median of the round values and the ratio to `direct` paired per round (median of the
per-round ratios). Both sides are warmed up first (each runs the prompt twice, so both
hold it in their prompt cache: every measured request re-evaluates only its last token).

A benchmark: it prints numbers and asserts nothing; writes
bench/results/up_vs_direct.json. The load average before and after is printed, with a
warning when the machine is busy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench._harness import BENCH_DIR, announce_load, loadavg, median, report_head, run_dir

# A prompt Gemma 3 270M continues well past 128 tokens without an end-of-generation token.
PROMPT = "Count from one to one thousand in words, separated by commas: one, two, three, four,"
UP_CTX = 4096  # `llorch up --ctx`'s default
SYSTEMS = ("direct", "llorch-sse", "llorch-openai")

Measure = Callable[[], tuple[int, float]]  # one request: (output tokens, seconds)


# -- direct ---------------------------------------------------------------------------------


def direct_system(model: Path, threads: int, max_tokens: int) -> tuple[Measure, Any]:
    from llama_cpp import Llama

    llama = Llama(str(model), n_ctx=UP_CTX, n_threads=threads, verbose=False)

    def once() -> tuple[int, float]:
        started = time.perf_counter()
        out: Any = llama.create_completion(
            PROMPT, max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0, seed=1
        )
        elapsed = time.perf_counter() - started
        return int(out["usage"]["completion_tokens"]), elapsed

    return once, llama


# -- llorch up --------------------------------------------------------------------------------


@contextlib.contextmanager
def llorch_up(state_dir: Path, logs: Path) -> Iterator[tuple[str, str]]:
    """`llorch up` as a subprocess: yields (URL, the threads line it printed)."""
    log = (logs / "up.out").open("wb")
    argv = [sys.executable, "-m", "llorch", "up", "--port", "0", "--state-dir", str(state_dir)]
    up = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    try:
        assert up.stdout is not None
        url = ""
        deadline = time.monotonic() + 600
        while not url and time.monotonic() < deadline:
            line = up.stdout.readline().decode()
            if not line and up.poll() is not None:
                raise RuntimeError(f"llorch up exited ({up.returncode}); see {logs / 'up.out'}")
            found = re.search(r"llorch is up: (\S+)", line)
            url = found.group(1) if found else ""
        if not url:
            raise RuntimeError("llorch up was not ready within 600 s")
        log.flush()
        started = re.search(r"\((model .*?per slot)\)", (logs / "up.out").read_text())
        yield url, started.group(1) if started else ""
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()
        log.close()


def _sse_events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    event, data = "", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and (event or data):
            yield event, data
            event, data = "", ""


def sse_system(client: httpx.Client, url: str, max_tokens: int) -> Measure:
    body = {"model": "default", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    body |= {"seed": 1, "repeat_penalty": 1.0}
    headers = {"Accept": "text/event-stream"}

    def once() -> tuple[int, float]:
        started = time.perf_counter()
        with client.stream("POST", f"{url}/v2/tasks", json=body, headers=headers) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:300]!r}")
            for event, data in _sse_events(response):
                if event == "end":
                    return int(json.loads(data)["tokens_out"]), time.perf_counter() - started
                if event == "error":
                    raise RuntimeError(f"job failed: {data}")
        raise RuntimeError("the stream ended without an end event")

    return once


def openai_system(client: httpx.Client, url: str, max_tokens: int) -> Measure:
    body = {"model": "default", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    body |= {"seed": 1, "stream": True, "stream_options": {"include_usage": True}}

    def once() -> tuple[int, float]:
        started = time.perf_counter()
        tokens = None
        with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:300]!r}")
            for _, data in _sse_events(response):
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise RuntimeError(f"job failed: {data}")
                if chunk.get("usage"):
                    tokens = int(chunk["usage"]["completion_tokens"])
        if tokens is None:
            raise RuntimeError("no usage chunk in the stream")
        return tokens, time.perf_counter() - started

    return once


# -- rounds and the table -----------------------------------------------------------------


def run_rounds(
    systems: dict[str, Measure], rounds: int, per_round: int, expected: int
) -> list[dict[str, Any]]:
    names = list(systems)
    runs: list[dict[str, Any]] = []
    for number in range(rounds):
        order = names[number % len(names) :] + names[: number % len(names)]
        for name in order:
            rates, short = [], 0
            for _ in range(per_round):
                tokens, seconds = systems[name]()
                short += tokens != expected
                rates.append(tokens / seconds)
            runs.append({"round": number, "system": name, "tok_s": median(rates), "short": short})
            print(f"round {number + 1}/{rounds} {name:<14} {median(rates):7.2f} tok/s", flush=True)
    return runs


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    direct = {r["round"]: r["tok_s"] for r in runs if r["system"] == "direct"}
    rows = []
    for name in dict.fromkeys(r["system"] for r in runs):
        mine = [r for r in runs if r["system"] == name]
        ratios = [r["tok_s"] / direct[r["round"]] for r in mine if r["round"] in direct]
        rows.append(
            {
                "system": name,
                "rounds": len(mine),
                "tok_s_median": median([r["tok_s"] for r in mine]),
                "tok_s_min": min(r["tok_s"] for r in mine),
                "tok_s_max": max(r["tok_s"] for r in mine),
                "ratio_vs_direct": median(ratios) if ratios else None,
                "short_requests": sum(r["short"] for r in mine),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| system | tok/s median (min-max over rounds) | × direct (paired per round) |",
        "|---|---|---|",
    ]
    for row in rows:
        ratio = row["ratio_vs_direct"]
        lines.append(
            f"| {row['system']} | {row['tok_s_median']:.2f} ({row['tok_s_min']:.2f}-"
            f"{row['tok_s_max']:.2f}) | {'-' if ratio is None else f'{ratio:.3f}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=3, help="requests per system per round")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (logs)")
    args = parser.parse_args(argv)
    chosen = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(chosen) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems: {', '.join(unknown)} (known: {', '.join(SYSTEMS)})")
    from llorch.up_checks import llama_threads

    threads = llama_threads(1)
    # SIGTERM (timeout, kill) unwinds like Ctrl-C: `llorch up` is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    load_before = announce_load()
    started = time.time()
    with contextlib.ExitStack() as stack:
        root, logs = run_dir(stack, args.keep, "up-vs-direct-")
        url, up_line = stack.enter_context(llorch_up(root / "state", logs))
        print(f"llorch up: {url} ({up_line})")
        model = root / "state" / "models" / "gemma-3-270m-q4_k_m.gguf"
        client = stack.enter_context(httpx.Client(timeout=httpx.Timeout(120.0)))
        systems: dict[str, Measure] = {}
        for name in chosen:
            if name == "direct":
                systems[name], llama = direct_system(model, threads, args.max_tokens)
                stack.callback(llama.close)
            elif name == "llorch-sse":
                systems[name] = sse_system(client, url, args.max_tokens)
            else:
                systems[name] = openai_system(client, url, args.max_tokens)
        print(f"direct: Llama(n_threads={threads}, n_ctx={UP_CTX}); warming up")
        for measure in systems.values():
            for _ in range(2):
                measure()
        runs = run_rounds(systems, args.rounds, args.per_round, args.max_tokens)
    load_after = loadavg()
    rows = summarize(runs)
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(table(rows))
    report = report_head("up_vs_direct", started, load_before, load_after)
    report |= {
        "settings": {**vars(args), "threads": threads, "n_ctx": UP_CTX, "prompt": PROMPT},
        "up": up_line,
        "rows": rows,
        "runs": runs,
    }
    out = BENCH_DIR / "results" / "up_vs_direct.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
