"""How each engine kind is started and spoken to (issue 3, PRV-02, SEC-02).

`launch(pool, manager, port_file, port)` returns the command line, the environment, the
adapter kind the orchestrator and the probes use, and how the endpoint is found: our own
worker writes its port to a file; engine servers get a free port chosen here. Per-pool
API keys travel in the environment, never on the command line.

| engine               | process                                | adapter  | key via        |
|----------------------|----------------------------------------|----------|----------------|
| `llamacpp-inproc`    | `llorch worker` (llama.cpp in-process) | native   | LLORCH_WORKER… |
| `mock`               | `llorch worker --engine mock` (a fake) | native   | LLORCH_WORKER… |
| `llamacpp`           | llama.cpp `llama-server`               | llamacpp | LLAMA_API_KEY  |
| `llamacpp-server-py` | `python -m llama_cpp.server`           | openai   | API_KEY        |
| `triton`             | Triton through PyTriton                | triton   | (none)         |
| `openai-compatible`  | any command serving the OpenAI API     | openai   | (none)         |

(LLORCH_WORKER… is LLORCH_WORKER_API_KEY.)

`engine_command` in the pool config is the engine's prefix (the llama-server binary, the
venv's python, the PyTriton script's interpreter and path, or the whole command with
`{port}`, `{model}`, `{ctx}`, `{slots}` placeholders for `openai-compatible`).
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pool_managerd.config import ManagerConfig, PoolConfig

__all__ = ["ENGINE_ADAPTERS", "ENGINE_FEATURES", "Launch", "free_port", "launch"]

ENGINE_ADAPTERS = {
    "llamacpp-inproc": "native",
    "mock": "native",
    "llamacpp": "llamacpp",
    "llamacpp-server-py": "openai",
    "triton": "triton",
    "openai-compatible": "openai",
}
ENGINE_FEATURES = {
    "llamacpp-inproc": ("completion", "chat", "grammar", "json_schema", "logprobs"),
    "mock": ("completion", "chat", "embedding"),
    "llamacpp": ("completion", "chat", "grammar", "json_schema", "logprobs"),
    "llamacpp-server-py": ("completion", "chat"),
    "triton": ("completion",),
    "openai-compatible": ("completion", "chat"),
}


@dataclass(frozen=True, slots=True)
class Launch:
    command: tuple[str, ...]
    adapter: str
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None  # chosen here; None: the process reports it in the port file


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (the engine binds it a moment later; a clash fails its start,
    which the lifecycle treats as a crash and retries with a new port)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _worker(pool: PoolConfig, manager: ManagerConfig, port_file: Path, key: str) -> Launch:
    base = list(manager.worker_command) or [sys.executable, "-m", "worker_adapters.worker"]
    args = [
        *base,
        "--port-file",
        str(port_file),
        "--ctx",
        str(pool.ctx),
        "--slots",
        str(pool.slots),
    ]
    if pool.engine == "mock":
        args += ["--engine", "mock", "--mock", pool.mock]
    else:
        args += ["--engine", "llamacpp", "--model", str(Path(pool.model).resolve())]
        if pool.threads:
            args += ["--threads", str(pool.threads)]
        if pool.gpu_layers:
            args += ["--gpu-layers", str(pool.gpu_layers)]
        if pool.embeddings:
            args.append("--embeddings")
    return Launch(tuple(args), "native", {"LLORCH_WORKER_API_KEY": key} if key else {})


def _llama_server(pool: PoolConfig, key: str, port: int) -> Launch:
    args = [
        *pool.engine_command,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-m",
        str(Path(pool.model).resolve()),
        "-c",
        str(pool.ctx * pool.slots),
        "-np",
        str(pool.slots),
        "--metrics",
        "--no-webui",
    ]
    if pool.threads:
        args += ["-t", str(pool.threads)]
    if pool.gpu_layers:
        args += ["-ngl", str(pool.gpu_layers)]
    if pool.embeddings:
        args.append("--embeddings")
    return Launch(tuple(args), "llamacpp", {"LLAMA_API_KEY": key} if key else {}, port)


def _llama_cpp_server(pool: PoolConfig, key: str, port: int) -> Launch:
    args = [
        *pool.engine_command,
        "--model",
        str(Path(pool.model).resolve()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(pool.ctx),
        "--interrupt_requests",
        "False",
        "--disable_ping_events",
        "True",
        "--model_alias",
        pool.model_id or pool.id,
    ]
    if pool.threads:
        args += ["--n_threads", str(pool.threads)]
    return Launch(tuple(args), "openai", {"API_KEY": key} if key else {}, port)


def _triton(pool: PoolConfig, port: int) -> Launch:
    grpc_port, metrics_port = free_port(), free_port()
    args = [
        *pool.engine_command,
        "--model",
        str(Path(pool.model).resolve()),
        "--http-port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
        "--ctx",
        str(pool.ctx),
    ]
    if pool.threads:
        args += ["--threads", str(pool.threads)]
    return Launch(tuple(args), "triton", {}, port)


def _openai_compatible(pool: PoolConfig, port: int) -> Launch:
    values = {
        "port": str(port),
        "model": pool.model,
        "ctx": str(pool.ctx),
        "slots": str(pool.slots),
    }
    return Launch(tuple(part.format(**values) for part in pool.engine_command), "openai", {}, port)


def launch(pool: PoolConfig, manager: ManagerConfig, port_file: Path, key: str) -> Launch:
    """The launch of one replica (called at every start: a restart gets a fresh port)."""
    if pool.engine in ("llamacpp-inproc", "mock"):
        return _worker(pool, manager, port_file, key)
    if not pool.engine_command:
        raise ValueError(f"engine {pool.engine} needs engine_command (the provisioned engine)")
    port = free_port()
    if pool.engine == "llamacpp":
        return _llama_server(pool, key, port)
    if pool.engine == "llamacpp-server-py":
        return _llama_cpp_server(pool, key, port)
    if pool.engine == "triton":
        return _triton(pool, port)
    if pool.engine == "openai-compatible":
        return _openai_compatible(pool, port)
    raise ValueError(f"unknown engine {pool.engine}")
