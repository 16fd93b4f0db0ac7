"""GPUs for real (issue 13 item 5): NVML inventory, a GPU deployment placed by measured
free memory, its measured memory against the estimate, in-process and llama-server GPU
pools serving jobs through orchestratord.

    python -m bench.gpu_suite --model M.gguf --llama-server BIN [--out DIR]

Meant for a GPU machine (bench/README.md, GPU; `bench/gpu_device.sh` runs it there):

1. a process outside llorch takes `--foreign-gib` of GPU memory (PyTorch, when the
   machine has it), so the inventory has a process that is not ours to show;
2. orchestratord and pool-managerd start; the host holds the GGUF (`models:`), runs
   `llamacpp-inproc` and `llamacpp`, and has one static `llamacpp` pool on `gpu0`
   (llama-server, `-ngl` and `CUDA_VISIBLE_DEVICES` from the device);
3. `GET /v2/hosts` is saved once the GPU and the foreign process show;
4. a deployment of engine `llamacpp-inproc` constrained to a GPU is declared; placement
   picks the device from the measured free memory, pool-managerd starts the in-process
   worker with every layer on that card;
5. jobs go through `/v2/tasks` (SSE) and the OpenAI facade to both pools;
6. nvidia-smi's per-process GPU memory of each engine is compared with catalog_core's
   estimate (the deployment's, and the same function for the llama-server pool), with
   llama.cpp's own buffer sizes from the llama-server log.

Writes `gpu_suite.json` (everything) under `--out` and prints a short summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench._harness import Proc, spawn

MODEL_ID = "random-1b"
SERVER_POOL = "server-gpu"
DEPLOYMENT = "gpu-inproc"
_GIB = 1 << 30
_MIB = 1 << 20


def _request(method: str, url: str, body: Any = None, timeout: float = 30.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def _wait(what: str, probe: Any, procs: list[Proc], limit_s: float) -> Any:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for proc in procs:
            proc.check()
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            found = probe()
            if found:
                return found
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {limit_s:.0f} s waiting for {what}")


def _smi(*query: str) -> str:
    """nvidia-smi's CSV answer ('' on a machine without it)."""
    try:
        return subprocess.run(
            ["nvidia-smi", *query, "--format=csv,noheader,nounits"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def gpu_processes() -> dict[int, int]:
    """pid -> GPU memory in bytes, as nvidia-smi reports compute processes."""
    text = _smi("--query-compute-apps=pid,used_memory")
    found = {}
    for line in text.strip().splitlines():
        pid, used = (part.strip() for part in line.split(","))
        found[int(pid)] = int(used) * _MIB
    return found


def _gpu_state() -> dict[str, Any]:
    query = "name,driver_version,memory.total,memory.used,memory.free,compute_cap"
    text = _smi(f"--query-gpu={query}")
    if not text:
        return {}
    keys = (
        "name",
        "driver",
        "memory_total_mib",
        "memory_used_mib",
        "memory_free_mib",
        "compute_cap",
    )
    return dict(zip(keys, (p.strip() for p in text.splitlines()[0].split(",")), strict=True))


def _descendants(pid: int) -> list[int]:
    import psutil

    with contextlib.suppress(psutil.Error):
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    return []


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def start_foreign(gib: float, logs: Path) -> subprocess.Popen[bytes] | None:
    """A process outside llorch holding `gib` of GPU memory (None: no PyTorch/CUDA)."""
    code = (
        "import sys, torch\n"
        f"x = torch.empty({int(gib * _GIB)}, dtype=torch.uint8, device='cuda')\n"
        "x.fill_(1); torch.cuda.synchronize(); print('ready', flush=True); sys.stdin.read()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the image's torch
    log = (logs / "foreign.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=log, stderr=log, env=env
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print(f"foreign process exited ({process.returncode}): {logs / 'foreign.log'}")
            return None
        if b"ready" in (logs / "foreign.log").read_bytes():
            return process
        time.sleep(0.2)
    process.kill()
    return None


def _buffer_lines(log: Path) -> list[str]:
    """llama.cpp's buffer-size and device lines from an engine log."""
    pattern = re.compile(r"buffer size|CUDA|offload|ggml_cuda|KV self size|using device")
    with contextlib.suppress(OSError):
        lines = log.read_text(errors="replace").splitlines()
        return [line.strip() for line in lines if pattern.search(line)][:160]
    return []


_DEVICE_BUFFER = re.compile(r"\bCUDA\d+ (\w+) buffer size = +([\d.]+) MiB")


def device_buffers(lines: list[str]) -> dict[str, float]:
    """MiB of llama.cpp's buffers in GPU memory (`CUDA0 model/KV/compute buffer size`),
    summed by kind over every load the log shows (the in-process worker loads one model
    per slot); `CUDA_Host` buffers are pinned host memory and not counted."""
    sums: dict[str, float] = {}
    for line in lines:
        for kind, mib in _DEVICE_BUFFER.findall(line):
            sums[kind] = round(sums.get(kind, 0.0) + float(mib), 2)
    return sums


def _estimate(
    model: Path, ctx: int, slots: int, layout: str, offload: bool = True, overhead: int = 0
) -> dict[str, int]:
    from catalog_core import ContextLayout, LoadConfig, estimate_memory, inspect_gguf

    config = LoadConfig(
        ctx=ctx,
        slots=slots,
        swa_full=layout == "per-slot",  # llama-server uses swa_full=False
        layout=ContextLayout(layout),
        offload=offload,
        runtime_overhead_bytes=overhead,
    )
    estimate = estimate_memory(inspect_gguf(model), config)
    return {
        "weights": estimate.weights,
        "kv_cache": estimate.kv_cache,
        "compute_buffer": estimate.compute_buffer,
        "overhead": estimate.overhead,
        "total": estimate.total,
    }


def _jobs(url: str, model: str, tokens: int) -> dict[str, Any]:
    """One non-streamed OpenAI chat completion and one /v2/tasks SSE job through llorch."""
    messages = [{"role": "user", "content": "Tell me a story about a quick brown fox."}]
    started = time.monotonic()
    chat = _request(
        "POST",
        f"{url}/v1/chat/completions",
        {"model": model, "messages": messages, "max_tokens": tokens, "temperature": 0},
        timeout=120,
    )
    openai_s = time.monotonic() - started
    body = json.dumps(
        {"workload": "chat", "model": model, "messages": messages, "max_tokens": tokens}
    ).encode()
    request = urllib.request.Request(
        f"{url}/v2/tasks",
        data=body,
        headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
    )
    events: dict[str, int] = {}
    first_token_s = None
    started = time.monotonic()
    last = ""
    with urllib.request.urlopen(request, timeout=120) as response:
        for raw in response:
            line = raw.decode(errors="replace").strip()
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
                events[name] = events.get(name, 0) + 1
                if name == "token" and first_token_s is None:
                    first_token_s = time.monotonic() - started
            elif line.startswith("data:"):
                last = line[5:].strip()
    sse_s = time.monotonic() - started
    return {
        "openai": {
            "seconds": round(openai_s, 3),
            "usage": chat.get("usage"),
            "finish_reason": chat["choices"][0].get("finish_reason"),
            "text_head": (chat["choices"][0]["message"].get("content") or "")[:80],
        },
        "sse": {
            "seconds": round(sse_s, 3),
            "ttft_s": None if first_token_s is None else round(first_token_s, 4),
            "events": events,
            "last_event": last[:300],
        },
    }


def _log_tails(root: Path, lines: int = 40) -> dict[str, list[str]]:
    tails = {}
    for log in sorted(root.rglob("*.log")):
        with contextlib.suppress(OSError):
            tails[str(log.relative_to(root))] = log.read_text(errors="replace").splitlines()[
                -lines:
            ]
    return tails


def suite(args: argparse.Namespace) -> dict[str, Any]:
    """The steps of the module's docstring; on a failure the report so far, the error and
    the tails of every log (the run's folder is temporary)."""
    report: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="llorch-gpu-suite-") as folder:
        root = Path(folder)
        try:
            _suite(args, report, root)
        except Exception as exc:  # noqa: BLE001 - reported with the logs, then the exit code
            report["error"] = f"{type(exc).__name__}: {exc}"
        report["log_tails"] = _log_tails(root, 400 if "error" in report else 40)
    return report


def _suite(args: argparse.Namespace, report: dict[str, Any], root: Path) -> None:
    report["gpu_before"] = _gpu_state()
    report["gpu_processes_before"] = gpu_processes()
    with contextlib.ExitStack() as stack:
        logs = root / "logs"
        logs.mkdir()
        foreign = start_foreign(args.foreign_gib, logs) if args.foreign_gib > 0 else None
        if foreign is not None:
            stack.callback(foreign.kill)
        report["foreign_pid"] = None if foreign is None else foreign.pid
        token = secrets.token_urlsafe(16)
        env = {"LLORCH_JOIN_TOKEN": token}
        (root / "orchestratord.yaml").write_text(
            yaml.safe_dump(
                {
                    "http_port": 0,
                    "control_port": 0,
                    "state_dir": str(root / "orchestratord"),
                }
            )
        )
        ready = root / "orchestratord.ready"
        orchestratord = spawn(
            "orchestratord",
            [
                sys.executable,
                "-m",
                "orchestratord",
                "--config",
                str(root / "orchestratord.yaml"),
                "--ready-file",
                str(ready),
            ],
            logs,
            core=frozenset(os.sched_getaffinity(0)),
            env=env,
        )
        stack.callback(orchestratord.stop, 15)
        ports = _wait("orchestratord", lambda: json.loads(ready.read_text()), [orchestratord], 60)
        url = f"http://127.0.0.1:{ports['http_port']}"
        manager_config = {
            "host_id": "gpu-host",
            "orchestrator": f"127.0.0.1:{ports['control_port']}",
            "state_dir": str(root / "pool-managerd"),
            "models": [{"id": MODEL_ID, "path": str(args.model)}],
            "engines": ["llamacpp-inproc", "llamacpp"],
            "pools": [
                {
                    "id": SERVER_POOL,
                    "model": str(args.model),
                    "model_id": SERVER_POOL,
                    "engine": "llamacpp",
                    "engine_command": [str(args.llama_server)],
                    "ctx": args.ctx,
                    "slots": args.server_slots,
                    "device": "gpu0" if args.device_kind == "gpu" else "cpu",
                }
            ],
        }
        (root / "pool-managerd.yaml").write_text(yaml.safe_dump(manager_config))
        manager = spawn(
            "pool-managerd",
            [sys.executable, "-m", "pool_managerd", "--config", str(root / "pool-managerd.yaml")],
            logs,
            core=frozenset(os.sched_getaffinity(0)),
            # the in-process worker's llama.cpp load log (devices, buffers) to its log
            env={**env, "LLORCH_LLAMA_VERBOSE": "1"},
        )
        stack.callback(manager.stop, 20)
        procs = [orchestratord, manager]

        def gpu_listed() -> Any:
            hosts = _request("GET", f"{url}/v2/hosts")
            for host in hosts["hosts"]:
                for device in host["devices"]:
                    if device["kind"] != args.device_kind:
                        continue
                    pids = {p["pid"] for p in device["foreign_processes"]}
                    if foreign is None or foreign.pid in pids:
                        return hosts
            return None

        report["hosts_at_start"] = _wait("the GPU in GET /v2/hosts", gpu_listed, procs, 90)
        _wait(
            f"pool {SERVER_POOL}",
            lambda: _request("GET", f"{url}/v2/pools/{SERVER_POOL}")["ready"],
            procs,
            300,
        )
        deployment = {
            "model": MODEL_ID,
            "engine": "llamacpp-inproc",
            "ctx": args.ctx,
            "slots": args.inproc_slots,
            "constraints": {"device_kind": args.device_kind},
        }
        report["deployment_request"] = deployment
        _request("PUT", f"{url}/v2/deployments/{DEPLOYMENT}", deployment)

        def deployed() -> Any:
            state = _request("GET", f"{url}/v2/deployments/{DEPLOYMENT}")
            return state if state["pools"] and state["pools"][0]["ready"] else None

        placed_at = time.monotonic()
        report["deployment_ready"] = _wait(f"deployment {DEPLOYMENT}", deployed, procs, 300)
        report["deployment_load_s"] = round(time.monotonic() - placed_at, 1)
        report["jobs"] = {}
        for model in (SERVER_POOL, DEPLOYMENT):
            report["jobs"][model] = _jobs(url, model, args.tokens)
        # after jobs: ggml's CUDA pool grows on first use; measure what a serving engine holds
        report["gpu_after"] = _gpu_state()
        measured = gpu_processes()
        report["gpu_processes_after"] = measured
        engines: dict[str, Any] = {}
        for pid in _descendants(manager.pid):
            if pid not in measured:
                continue
            line = _cmdline(pid)
            kind = "llama-server" if "llama-server" in line else "inproc-worker"
            engines[kind] = {"pid": pid, "gpu_bytes": measured[pid], "cmdline": line[:400]}
        report["engines"] = engines
        report["hosts_loaded"] = _request("GET", f"{url}/v2/hosts")
        report["deployment"] = _request("GET", f"{url}/v2/deployments/{DEPLOYMENT}")
        from orchestratord.deployments.manager import GPU_RUNTIME_OVERHEAD

        report["gpu_runtime_overhead_bytes"] = GPU_RUNTIME_OVERHEAD
        report["server_estimate"] = _estimate(
            args.model, args.ctx, args.server_slots, "shared", overhead=GPU_RUNTIME_OVERHEAD
        )
        report["inproc_estimate_local"] = _estimate(
            args.model, args.ctx, args.inproc_slots, "per-slot", overhead=GPU_RUNTIME_OVERHEAD
        )
        pool_logs = root / "pool-managerd" / "logs"
        server_logs = sorted(pool_logs.glob(f"{SERVER_POOL}*.log"))
        inproc_logs = sorted(pool_logs.glob(f"{DEPLOYMENT}*.log"))
        report["server_log_buffers"] = _buffer_lines(server_logs[0]) if server_logs else []
        report["inproc_log_buffers"] = _buffer_lines(inproc_logs[0]) if inproc_logs else []
        report["device_buffers_mib"] = {
            "llama-server": device_buffers(report["server_log_buffers"]),
            "inproc-worker": device_buffers(report["inproc_log_buffers"]),
        }
        names = (
            "CUDA_VISIBLE_DEVICES",
            "CUDA_DEVICE_ORDER",
            "LLORCH_PRELOAD_LLAMA_CPP",
            "LLORCH_LLAMA_VERBOSE",
        )
        report["engine_env"] = {
            kind: {**_environ(info["pid"], names), "cmdline": _cmdline(info["pid"])}
            for kind, info in engines.items()
        }
        report["comparison"] = _compare(report)


def _environ(pid: int, names: tuple[str, ...]) -> dict[str, str]:
    found = {}
    with contextlib.suppress(OSError):
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            name, _, value = entry.decode(errors="replace").partition("=")
            if name in names:
                found[name] = value
    return found


def _compare(report: dict[str, Any]) -> dict[str, Any]:
    """nvidia-smi's bytes of each engine process against the estimate: for the in-process
    worker orchestratord's own (the deployment's pool), for llama-server catalog_core's
    with the same GPU runtime overhead; and what the process holds beyond llama.cpp's
    device buffers (the CUDA context, cuBLAS, ggml's pool)."""
    engines = report.get("engines", {})
    pools = (report.get("deployment") or {}).get("pools") or [{}]
    inproc_total = pools[0].get("memory_estimated_bytes") or (
        report.get("inproc_estimate_local") or {}
    ).get("total")
    rows = {}
    for kind, total in (
        ("llama-server", (report.get("server_estimate") or {}).get("total")),
        ("inproc-worker", inproc_total),
    ):
        measured = engines.get(kind, {}).get("gpu_bytes")
        if measured and total:
            buffers_mib = sum((report.get("device_buffers_mib") or {}).get(kind, {}).values())
            rows[kind] = {
                "measured_bytes": measured,
                "estimate_bytes": total,
                "estimate_over_measured": round(total / measured, 4),
                "within_15_percent": abs(total - measured) <= 0.15 * measured,
                "device_buffers_mib": buffers_mib,
                "measured_minus_device_buffers_mib": round(measured / _MIB - buffers_mib, 2),
            }
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--llama-server", type=Path, required=True)
    parser.add_argument("--ctx", type=int, default=2048, help="tokens per slot")
    parser.add_argument("--server-slots", type=int, default=4)
    parser.add_argument("--inproc-slots", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--foreign-gib", type=float, default=2.0, help="0: no foreign process")
    parser.add_argument(
        "--device-kind", choices=("gpu", "cpu"), default="gpu", help="cpu: a smoke test here"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    args.model = args.model.resolve()
    report = suite(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_suite.json").write_text(json.dumps(report, indent=1))
    if "error" in report:
        for name, tail in report["log_tails"].items():
            print(f"--- {name}\n" + "\n".join(tail[-25:]))
        print(f"error: {report['error']}")
        return 1
    for kind, row in report["comparison"].items():
        print(
            f"{kind}: measured {row['measured_bytes'] / _MIB:.0f} MiB, estimate "
            f"{row['estimate_bytes'] / _MIB:.0f} MiB ({row['estimate_over_measured']:.3f}x), "
            f"llama.cpp device buffers {row['device_buffers_mib']:.0f} MiB, beyond them "
            f"{row['measured_minus_device_buffers_mib']:.0f} MiB"
        )
    print(f"engine environment: {json.dumps(report['engine_env'])[:800]}")
    print("in-process worker's llama.cpp lines:")
    for line in report["inproc_log_buffers"][:40]:
        print(f"  {line[:160]}")
    for model, jobs in report["jobs"].items():
        print(f"{model}: openai {jobs['openai']}, sse {jobs['sse']['events']}")
    print(f"engines: {json.dumps(report['engines'])[:600]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
