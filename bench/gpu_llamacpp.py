"""llama.cpp with CUDA on one GPU, hit directly and through llorch (PERF-01 on a GPU).

    python -m bench.gpu_llamacpp build   # llama-server with CUDA, from the vendored source
    python -m bench.gpu_llamacpp model   # a random-weight ~1B llama in f16 (GGUF)
    python -m bench.gpu_llamacpp run [--concurrency 1,8,32] [--tokens 256] [--rounds 3]
    python -m bench.gpu_llamacpp all     # the three, in order (what the GPU machine runs)

Meant for a machine with an NVIDIA GPU, CUDA's compiler, CMake and ninja, and this
repository's Python packages importable (the workspace venv, or the sources on
PYTHONPATH with their wheels). Nothing is downloaded:

- `build`: configures llama.cpp (the copy vendored in llama-cpp-python's sdist, put at
  `--src`; see bench/README.md) with `GGML_CUDA=ON` for `--cuda-arch` (90: Hopper) and
  the flags of the provisioner's source build (static, no curl, no UI), and builds the
  `llama-server` target only;
- `model`: writes a llama-architecture GGUF with random f16 weights (2048 wide, 16
  layers, GQA 16/8 heads, FFN 8192: ~1.0B parameters; the fixture tokenizer of
  catalog_core, whose end-of-generation row of the output matrix is zero so streams run
  to `max_tokens`);
- `run`: starts llorch (orchestratord on core 0, pool-managerd on the other cores) with
  one `llamacpp` pool of `--concurrency` slots on that binary with every layer on the
  GPU, and streams chat completions with `--concurrency` open streams for `--duration`
  seconds per run: to the llama-server llorch started (`direct`, its own
  `/v1/chat/completions`), through llorch's one-round-trip SSE (`llorch-sse`) and
  through its OpenAI facade (`llorch-openai`); at each level of `--concurrency` (one
  pool of the largest level's slots) every system first runs `--warmup` seconds
  unrecorded, then the systems interleave over `--rounds` rounds (order rotated);
  medians of the rounds, and per round paired ratios to `direct` (`paired`). Warns,
  in the output and the JSON, when the 1-minute load average is high or a GPU process
  that is not llorch's runs. Prints the table of `gateway_overhead` and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._harness import BENCH_DIR, System, loadavg, machine_info, pin_self, start_llorch
from bench.gateway_overhead import Limits, Scenario, measure, summarize, table

ROOT = BENCH_DIR.parent
DEFAULT_SRC = ROOT / "build" / "gpu" / "llama.cpp"
# Outside build/gpu (the folder sent to a GPU machine, which replaces it there), so a
# second call on the same machine finds the build and the model.
DEFAULT_BUILD = ROOT / "build" / "gpu-out" / "cmake"
DEFAULT_MODEL = ROOT / "build" / "gpu-out" / "model" / "random-1b-f16.gguf"
DEFAULT_OUT = BENCH_DIR / "results" / "gpu_llamacpp.json"
_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_CUDA=ON",
    "-DGGML_CUDA_NCCL=OFF",
    # No FlashAttention kernels: a third of the CUDA build time; the engine is the same
    # for the direct and the llorch runs, which is all this benchmark compares.
    "-DGGML_CUDA_FA=OFF",
)


def build(src: Path, out: Path, cuda_arch: str, jobs: int) -> Path:
    binary = out / "bin" / "llama-server"
    if binary.exists():
        print(f"llama-server already built: {binary}")
        return binary
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    started = time.monotonic()
    configure = ["cmake", "-S", str(src), "-B", str(out), *generator, *_FLAGS]
    subprocess.run([*configure, f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch}"], check=True)
    command = ["cmake", "--build", str(out), "--target", "llama-server", "-j", str(jobs)]
    subprocess.run(command, check=True)
    print(f"built {binary} in {time.monotonic() - started:.0f} s")
    return binary


def write_model(path: Path, seed: int = 1) -> Path:
    """A random-weight llama GGUF in f16, with catalog_core's fixture tokenizer."""
    if path.exists():
        print(f"model already written: {path}")
        return path
    import gguf
    from catalog_core.fixtures import CHAT_TEMPLATE, TinyModelSpec, _vocabulary

    dims, layers, heads, kv_heads, ffn = 2048, 16, 16, 8, 8192
    spec = TinyModelSpec(layers=layers, dims=dims, heads=heads, kv_heads=kv_heads, ffn=ffn)
    tokens, types, merges = _vocabulary(spec)
    vocab = len(tokens)
    bos_id, eos_id = vocab - 2, vocab - 1
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    writer = gguf.GGUFWriter(scratch, "llama")
    writer.add_name("llorch-random-1b")
    writer.add_context_length(8192)
    writer.add_embedding_length(dims)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(dims // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(bos_id)
    writer.add_eos_token_id(eos_id)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)
    rng = np.random.default_rng(seed)
    kv_dims = dims // heads * kv_heads

    def matrix(rows: int, cols: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * scale).astype(np.float16)

    def norm() -> np.ndarray:
        return np.ones(dims, dtype=np.float32)  # norms stay f32, as converters write them

    output = matrix(vocab, dims, 0.5)
    output[eos_id, :] = 0
    writer.add_tensor("token_embd.weight", matrix(vocab, dims, 1.0))
    writer.add_tensor("output_norm.weight", norm())
    writer.add_tensor("output.weight", output)
    scale = 1.0 / np.sqrt(dims)
    for layer in range(layers):
        prefix = f"blk.{layer}."
        writer.add_tensor(prefix + "attn_norm.weight", norm())
        writer.add_tensor(prefix + "attn_q.weight", matrix(dims, dims, scale))
        writer.add_tensor(prefix + "attn_k.weight", matrix(kv_dims, dims, scale))
        writer.add_tensor(prefix + "attn_v.weight", matrix(kv_dims, dims, scale))
        writer.add_tensor(prefix + "attn_output.weight", matrix(dims, dims, scale))
        writer.add_tensor(prefix + "ffn_norm.weight", norm())
        writer.add_tensor(prefix + "ffn_gate.weight", matrix(ffn, dims, scale))
        writer.add_tensor(prefix + "ffn_up.weight", matrix(ffn, dims, scale))
        writer.add_tensor(prefix + "ffn_down.weight", matrix(dims, ffn, 1.0 / np.sqrt(ffn)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    scratch.replace(path)
    print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB, vocab {vocab})")
    return path


def _gpu() -> dict[str, str]:
    query = "name,driver_version,memory.total"
    try:
        text = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {}
    name, driver, memory = (part.strip() for part in text.splitlines()[0].split(","))
    return {"name": name, "driver": driver, "memory": memory}


async def _rounds(
    systems: list[System], scenario: Scenario, concurrency: int, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Warm-up runs of every system (not recorded: the first streams of an engine pay for
    CUDA graph and cuBLAS set-up), then `--rounds` rounds, the order rotated each round."""
    limits = Limits(max_requests=100_000, drain_s=60.0, warmup_s=args.warmup)
    for system in systems:
        await measure(system, scenario, concurrency, limits, limits.warmup_s)
    runs = []
    for round_no in range(args.rounds):
        shift = round_no % len(systems)
        for system in systems[shift:] + systems[:shift]:
            result, _ = await measure(system, scenario, concurrency, limits, scenario.duration_s)
            result["round"] = round_no
            runs.append(result)
            print(
                f"  c={concurrency} r{round_no} {system.name:<14} "
                f"{result['tokens_per_s'] or 0:>8.0f} tok/s "
                f"TTFT p50 {result['ttft_p50_ms'] or 0:.1f} ms "
                f"gap p50 {result['gap_p50_ms'] or 0:.2f} ms errors {result['errors']}",
                flush=True,
            )
    return runs


def paired(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per concurrency and system, the median over rounds of the round's own ratio of
    throughput to `direct` and its own added TTFT p50 / p99 (the systems of one round run
    back to back, so slow drifts of the machine cancel)."""
    by_round: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
    for run in runs:
        by_round.setdefault((run["concurrency"], run["round"]), {})[run["system"]] = run
    values: dict[tuple[int, str], dict[str, list[float]]] = {}
    for (concurrency, _), systems in by_round.items():
        direct = systems.get("direct")
        if direct is None:
            continue
        for name, run in systems.items():
            if name == "direct":
                continue
            into = values.setdefault((concurrency, name), {})
            if run["tokens_per_s"] and direct["tokens_per_s"]:
                into.setdefault("x_direct", []).append(run["tokens_per_s"] / direct["tokens_per_s"])
            for metric in ("ttft_p50_ms", "ttft_p99_ms"):
                if run[metric] is not None and direct[metric] is not None:
                    into.setdefault(f"added_{metric}", []).append(run[metric] - direct[metric])
    rows = []
    for (concurrency, name), metrics in sorted(values.items()):
        row: dict[str, Any] = {"concurrency": concurrency, "system": name}
        for metric, found in metrics.items():
            row[metric] = round(float(np.median(found)), 4)
            row[f"{metric}_rounds"] = [round(v, 4) for v in found]
        rows.append(row)
    return rows


def busy_warnings(ours: set[int] | None = None) -> list[str]:
    """Why the numbers may be noisy: a loaded machine, GPU processes that are not ours."""
    warnings = []
    load = loadavg()[0]
    cpus = os.cpu_count() or 1
    if load > max(1.0, 0.1 * cpus):
        warnings.append(f"1-minute load average {load:.2f} on {cpus} CPUs: the machine is busy")
    for pid, used in _gpu_processes().items():
        if ours is None or pid not in ours:
            warnings.append(f"GPU process {pid} (not ours) holds {used / 2**20:.0f} MiB")
    for warning in warnings:
        print(f"warning: {warning}", flush=True)
    return warnings


def _gpu_processes() -> dict[int, int]:
    try:
        text = subprocess.run(
            [
                "nvidia-smi",
                "--query-compute-apps=pid,used_memory",
                "--format=csv,noheader,nounits",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    found = {}
    for line in text.strip().splitlines():
        pid, used = (part.strip() for part in line.split(","))
        found[int(pid)] = int(used) << 20
    return found


def run(binary: Path, model: Path, args: argparse.Namespace) -> int:
    cores = sorted(os.sched_getaffinity(0))
    pin_self(cores[1])
    engine_cores = frozenset(cores[2:]) or frozenset(cores)
    started = time.time()
    load_before = loadavg()
    warnings = busy_warnings()
    levels = sorted({int(c) for c in str(args.concurrency).split(",")})
    pool = {
        "id": "bench",
        "model_id": "bench",
        "engine": "llamacpp",
        "model": str(model),
        "ctx": args.ctx,
        "slots": max(levels),
        "replicas": 1,
        "gpu_layers": args.gpu_layers,
        "engine_command": [str(binary)],
    }
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llorch-gpu-")))
        logs = root / "logs"
        logs.mkdir()
        llorch = start_llorch(
            root / "llorch",
            logs,
            slots=max(levels),
            pool=pool,
            gateway_core=cores[0],
            engine_cores=engine_cores,
            ready_timeout_s=600.0,
        )
        stack.callback(llorch.stop)
        gateway, side = llorch.gateway_pids, llorch.engine_pids
        path = "/v1/chat/completions"
        key = {"Authorization": f"Bearer {engine_key(side())}"}
        systems = [
            System("direct", llorch.engine_url, path, "openai", list, side, key, keepalive=False),
            System("llorch-sse", llorch.url, "/v2/tasks", "llorch", gateway, side),
            System("llorch-openai", llorch.url, path, "openai", gateway, side),
        ]
        # not `exact`: a byte-level tokenizer's partial UTF-8 makes fewer events than tokens
        scenario = Scenario("gpu", 0.0, args.tokens, args.duration, exact=False)
        runs = []
        for concurrency in levels:
            runs += asyncio.run(_rounds(systems, scenario, concurrency, args))
        ours = set(llorch.engine_pids()) | set(llorch.gateway_pids())
        warnings += [w for w in busy_warnings(ours) if w not in warnings]
        with contextlib.suppress(OSError):
            shutil.copy(logs / "pool-managerd.log", Path(args.out).with_suffix(".manager.log"))
    rows = summarize(runs)
    pairs = paired(runs)
    scenarios = [
        {
            "name": "gpu",
            "interval_ms": 0.0,
            "tokens_per_stream": args.tokens,
            "duration_s": args.duration,
        }
    ]
    report = {
        "benchmark": "gpu_llamacpp",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "machine": {**machine_info(), "gpu": _gpu(), "cpus": len(cores)},
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "method": {
            "concurrency": levels,
            "warmup_s_per_system_and_level": args.warmup,
            "tokens_per_stream": args.tokens,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "ctx_per_slot": args.ctx,
            "model": "random-weight llama, f16, ~1.0B parameters, every layer on the GPU",
            "cores": f"orchestratord on core {cores[0]}, client on {cores[1]}, "
            f"pool-managerd and llama-server on {len(engine_cores)} others",
        },
        "scenarios": scenarios,
        "warnings": warnings,
        "summary": rows,
        "paired": pairs,
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(table(rows, scenarios))
    print("\npaired per round (median over rounds): system, c, x direct, +TTFT p50 ms, p99 ms")
    for row in pairs:
        print(
            f"  {row['system']:<14} c={row['concurrency']:<3} {row.get('x_direct', 0):.3f}x "
            f"{row.get('added_ttft_p50_ms', 0):+.2f} {row.get('added_ttft_p99_ms', 0):+.2f}"
        )
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"\n{report['elapsed_s']:.0f} s; JSON: {out}")
    return 0


def engine_key(pids: list[int]) -> str:
    """The API key pool-managerd gave its llama-server (read from the process's
    environment: the benchmark hits the engine directly, as llorch's adapter does)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                if entry.startswith(b"LLAMA_API_KEY="):
                    return entry.split(b"=", 1)[1].decode()
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("build", "model", "run", "all"))
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC)
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD)
    parser.add_argument("--cuda-arch", default="90")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 4)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument(
        "--concurrency", default="1,8,32", help="open streams; a comma list runs each level"
    )
    parser.add_argument("--tokens", type=int, default=256, help="max_tokens per stream")
    parser.add_argument("--ctx", type=int, default=1024, help="context per slot")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds per system and level, not recorded"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gpu-layers", type=int, default=999, help="0: a CPU smoke test")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    binary = args.build_dir / "bin" / "llama-server"
    if args.step in ("build", "all"):
        binary = build(args.src, args.build_dir, args.cuda_arch, args.jobs)
    if args.step in ("model", "all"):
        write_model(args.model)
    if args.step in ("run", "all"):
        return run(binary, args.model, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
