"""How each engine kind is started and spoken to (issue 3, PRV-02, SEC-02).

`launch(pool, manager, port_file, key, network)` returns the command line, the
environment, the adapter kind the orchestrator and the probes use, whether the engine
serves TLS, and how the endpoint is found: our own worker writes its port to a file;
engine servers get a free port chosen here. Every engine listens on the host's engine
bind address (`network.bind_host`, FLT-01). Per-pool API keys travel in the
environment, never on the command line.

TLS (FLT-02): when the host has a certificate (`tls.cert_file`, `engine_tls: true`)
our worker serves gRPC over TLS with it (and asks for the orchestrator's client
certificate with `client_auth`); `llama_cpp.server` serves HTTPS with it; llama-server
does when its binary is linked with OpenSSL (provisioned with `-DLLAMA_OPENSSL=ON`;
`serves_tls` reads the binary's needed libraries, cached by path and mtime). Triton and
`openai-compatible` commands are started in plaintext, and so is a llama-server built
without OpenSSL: the pool says so at every start (`Pool`).

| engine               | process                                | adapter  | key via        |
|----------------------|----------------------------------------|----------|----------------|
| `llamacpp-inproc`    | `llorch worker` (llama.cpp in-process) | native   | LLORCH_WORKER… |
| `mock`               | `llorch worker --engine mock` (a fake) | native   | LLORCH_WORKER… |
| `llamacpp`           | llama.cpp `llama-server`               | llamacpp | LLAMA_API_KEY  |
| `llamacpp-server-py` | `python -m llama_cpp.server`           | llamacpp-server-py | API_KEY |
| `triton`             | Triton through PyTriton                | triton   | (none)         |
| `vllm`               | vLLM's OpenAI server (a model folder)  | vllm     | VLLM_API_KEY   |
| `vllm-inproc`        | `worker --engine vllm` (vLLM's venv)   | native   | LLORCH_WORKER… |
| `tgi`                | TGI, in a container only (a folder)    | tgi      | API_KEY (name) |
| `openai-compatible`  | any command serving the OpenAI API     | openai   | (none)         |

(LLORCH_WORKER… is LLORCH_WORKER_API_KEY.) Container mode (`container:` in the pool;
`tgi` always, `vllm` and `triton` when set) starts the engine with `docker|podman run`
(`container_launch.py`): the key is passed by name (`-e API_KEY`), its value only in the
runtime client's environment. TGI cannot run on the project's machines (no registry to
pull its image, no GPU): the tests run a `tgi` pool with an image of the faithful fake
TGI server (`llorch/fake-tgi:test`, replaying the recorded TGI transcripts) in its place.
The adapter kinds and the features a pool reports come from the capability matrix
(`worker_adapters.capabilities`, API-16).

`engine_command` in the pool config is the engine's prefix (the llama-server binary, the
venv's python, the PyTriton script's interpreter and path, `VENV/bin/python -m
vllm.entrypoints.openai.api_server` for vLLM, or the whole command with `{host}`,
`{port}`, `{model}`, `{ctx}`, `{slots}` placeholders for `openai-compatible`).

vLLM (`vllm`) serves a Hugging Face model folder under the pool's model id, with
`--max-model-len ctx --max-num-seqs slots`, eager mode (no torch.compile: a start in
~40 s on a CPU instead of 75-115 s), float32 weights, and a KV cache sized up front
(`--kv-cache-memory-bytes`: ctx × slots tokens of the model's KV bytes per token, at
least 16 MiB; without it the CPU build asks for 90 % of the host's memory). Its
environment keeps it offline (`HF_HUB_OFFLINE`), without usage reports, and its
compile cache under `state_dir/cache/vllm`. Its process group holds the API server,
`VLLM::EngineCore` and its worker: the pool signals the group, never the leader alone.

vLLM in process (`vllm-inproc`, WRK-03) is our worker hosting vLLM's `AsyncLLM`, behind
the worker gRPC protocol: `engine_command` is the `vllm-inproc:package` venv's `python
-m worker_adapters.worker` (that venv holds vLLM and llorch's worker packages; the
project's own python has no vLLM), followed by `--engine vllm --model FOLDER` and the
worker's usual flags. The worker sizes vLLM as the `vllm` kind is sized (eager, float32,
the same KV cache rule) and gets the same environment; its process group holds the
worker, `VLLM::EngineCore` and vLLM's worker process.

Devices: a pool on a real GPU of this host (`device: gpuN`, N its NVML index, as the
inventory names it; a deployment's pool gets the device placement chose) starts with
`CUDA_DEVICE_ORDER=PCI_BUS_ID` and `CUDA_VISIBLE_DEVICES=N`, so the engine sees that card
alone and numbers it as NVML does, and — for the llama.cpp engines, unless the pool sets
`gpu_layers` — with every layer on it (`ALL_LAYERS`). Pools on the CPU and on simulated
devices (declared under `devices`) start as configured.
"""

from __future__ import annotations

import random
import re
import socket
import sys
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from catalog_core import CatalogError, ModelFileError, inspect_gguf, inspect_hf_folder
from worker_adapters.capabilities import ENGINES, features
from worker_adapters.chat_templates import builtin_template
from worker_adapters.preload import PRELOAD_ENV

from pool_managerd.config import ManagerConfig, PoolConfig
from pool_managerd.config_schema import ENGINE_NAMES
from pool_managerd.container_launch import (
    MODEL_MOUNT,
    ContainerRef,
    build_container_run,
    without_prefix,
)
from pool_managerd.network import HostNetwork

__all__ = [
    "ALL_LAYERS",
    "ENGINE_ADAPTERS",
    "ENGINE_FEATURES",
    "FOLDER_ENGINES",
    "Launch",
    "device_env",
    "free_port",
    "gpu_index",
    "gpu_layers",
    "launch",
    "serves_tls",
    "tls_capable",
]

ENGINE_ADAPTERS = {engine: ENGINES[engine].adapter for engine in sorted(ENGINE_NAMES)}
ENGINE_FEATURES = {engine: features(engine) for engine in sorted(ENGINE_NAMES)}
# Engines that load a Hugging Face model folder; the others load a GGUF file.
FOLDER_ENGINES = frozenset({"vllm", "vllm-inproc", "tgi"})
_MIB = 1 << 20
_VLLM_MIN_KV_BYTES = 16 * _MIB
ALL_LAYERS = 999  # more than any model has: llama.cpp offloads every layer and the output
_LAYERED_ENGINES = frozenset({"llamacpp", "llamacpp-inproc", "llamacpp-server-py"})
_GPU_ID = re.compile(r"gpu(\d+)")


@dataclass(frozen=True, slots=True)
class Launch:
    command: tuple[str, ...]
    adapter: str
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None  # chosen here; None: the process reports it in the port file
    tls: bool = False  # the engine serves TLS with the host's certificate
    container: ContainerRef | None = None  # container mode: removed at stop, kill, start


def free_port(host: str = "127.0.0.1", ports: tuple[int, int] | None = None) -> int:
    """A port free right now on `host`: any (the kernel's pick), or one of `ports` (first
    and last, inclusive; tried from a random start so restarts spread over the range).
    The engine binds it a moment later; a clash fails its start, which the lifecycle
    treats as a crash and retries with a new port. OSError when the range is full."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    candidates = [0]
    if ports is not None:
        first, last = ports
        start = random.randint(first, last)
        candidates = [*range(start, last + 1), *range(first, start)]
    for candidate in candidates:
        with socket.socket(family) as probe:
            try:
                probe.bind((host.strip("[]"), candidate))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError(f"no free port in engine_ports {ports} on {host}")


def serves_tls(pool: PoolConfig) -> bool:
    """Whether this pool's engine can serve TLS with the host's certificate. Blocking the
    first time for a llama-server binary (reads it): call from a thread once first."""
    if pool.container is not None:
        return False  # container engines serve plaintext on their published port
    if pool.engine in ("llamacpp-inproc", "mock", "llamacpp-server-py", "vllm", "vllm-inproc"):
        return True
    if pool.engine == "llamacpp" and pool.engine_command:
        binary = Path(pool.engine_command[0])
        try:
            return tls_capable(str(binary), binary.stat().st_mtime_ns)
        except OSError:
            return False
    return False


@lru_cache(maxsize=64)
def tls_capable(binary: str, mtime_ns: int) -> bool:
    """A llama-server binary linked with OpenSSL (its needed libraries name libssl)."""
    with open(binary, "rb") as handle:
        return b"libssl.so" in handle.read()


def _host_tls(pool: PoolConfig, manager: ManagerConfig, network: HostNetwork) -> bool:
    return network.engine_tls is not None and manager.tls is not None and serves_tls(pool)


def _worker(
    pool: PoolConfig, manager: ManagerConfig, port_file: Path, key: str, network: HostNetwork
) -> Launch:
    base = list(manager.worker_command) or [sys.executable, "-m", "worker_adapters.worker"]
    if pool.engine == "vllm-inproc":
        base = list(pool.engine_command)
    args = [
        *base,
        "--host",
        network.bind_host,
        "--port-file",
        str(port_file),
        "--ctx",
        str(pool.ctx),
        "--slots",
        str(pool.slots),
    ]
    env: dict[str, str] = {}
    if pool.engine == "mock":
        args += ["--engine", "mock", "--mock", pool.mock]
    elif pool.engine == "vllm-inproc":
        args += ["--engine", "vllm", "--model", str(Path(pool.model).resolve())]
        env.update(_vllm_env(manager))
    else:
        args += ["--engine", "llamacpp", "--model", str(Path(pool.model).resolve())]
        if pool.threads:
            args += ["--threads", str(pool.threads)]
        if pool.gpu_layers:
            args += ["--gpu-layers", str(pool.gpu_layers)]
        if pool.embeddings:
            args.append("--embeddings")
    if manager.engine_port_range is not None:  # else the worker binds port 0 and says
        args += ["--port", str(free_port(network.bind_host, manager.engine_port_range))]
    tls = _host_tls(pool, manager, network)
    if tls and manager.tls is not None:
        args += ["--tls-cert", str(manager.tls.cert_file), "--tls-key", str(manager.tls.key_file)]
        if manager.tls.client_auth and manager.tls.ca_file is not None:
            args += ["--tls-client-ca", str(manager.tls.ca_file)]
    if key:
        env["LLORCH_WORKER_API_KEY"] = key
    if pool.engine == "llamacpp-inproc":  # llama.cpp's libraries before numpy's and grpc's
        env[PRELOAD_ENV] = "1"
    return Launch(tuple(args), "native", env, tls=tls)


def _tls_files(
    pool: PoolConfig, manager: ManagerConfig, network: HostNetwork
) -> tuple[str, str] | None:
    """(certificate, key) files an HTTP engine serves TLS with; None: plaintext."""
    files = manager.tls
    if not _host_tls(pool, manager, network) or files is None:
        return None
    if files.cert_file is None or files.key_file is None:
        return None
    return str(files.cert_file), str(files.key_file)


def _llama_server(
    pool: PoolConfig, key: str, host: str, port: int, certs: tuple[str, str] | None
) -> Launch:
    args = [
        *pool.engine_command,
        "--host",
        host,
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
    if certs is not None:
        args += ["--ssl-cert-file", certs[0], "--ssl-key-file", certs[1]]
    # Jinja: the model's template rendered as written (as the in-process engine and
    # Hugging Face render it), not matched to a built-in by name; on before a template
    # of ours, or only known template names pass.
    args.append("--jinja")
    template = missing_chat_template(Path(pool.model))
    if template is not None:
        args += ["--chat-template", template]
    env = {"LLAMA_API_KEY": key} if key else {}
    return Launch(tuple(args), "llamacpp", env, port, tls=certs is not None)


def missing_chat_template(model: Path) -> str | None:
    """The published chat template of `model`'s family when its GGUF carries none
    (`worker_adapters.chat_templates`): llama-server would fall back to ChatML, which
    the in-process engine does not. None when the file has one, or none is known."""
    try:
        info = inspect_gguf(model)
    except ModelFileError:
        return None  # the engine itself reports an unreadable model
    return None if info.has_chat_template else builtin_template(info.architecture)


def _llama_cpp_server(
    pool: PoolConfig, key: str, host: str, port: int, certs: tuple[str, str] | None
) -> Launch:
    args = [
        *pool.engine_command,
        "--model",
        str(Path(pool.model).resolve()),
        "--host",
        host,
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
    if certs is not None:
        args += ["--ssl_certfile", certs[0], "--ssl_keyfile", certs[1]]
    env = {"API_KEY": key} if key else {}
    return Launch(tuple(args), "llamacpp-server-py", env, port, tls=certs is not None)


def _triton(pool: PoolConfig, host: str, port: int, ports: tuple[int, int] | None) -> Launch:
    grpc_port, metrics_port = free_port(host, ports), free_port(host, ports)
    args = [
        *pool.engine_command,
        "--model",
        str(Path(pool.model).resolve()),
        "--host",
        host,
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


def vllm_kv_cache_bytes(pool: PoolConfig) -> int:
    """The KV cache a vLLM pool asks for: ctx × slots tokens of the folder's KV bytes per
    token in float32, rounded up to whole MiB, at least 16 MiB. Reads the folder's
    config and safetensors headers (blocking, milliseconds)."""
    try:
        info = inspect_hf_folder(Path(pool.model))
    except CatalogError as exc:
        raise ValueError(f"vllm pool {pool.id}: {exc}") from exc
    per_token = info.block_count * info.head_count_kv * (info.key_length + info.value_length) * 4
    needed = per_token * pool.ctx * pool.slots
    return max(_VLLM_MIN_KV_BYTES, -(-needed // _MIB) * _MIB)


def _vllm(
    pool: PoolConfig,
    manager: ManagerConfig,
    key: str,
    host: str,
    port: int,
    certs: tuple[str, str] | None,
) -> Launch:
    args = [
        *pool.engine_command,
        "--model",
        str(Path(pool.model).resolve()),
        "--served-model-name",
        pool.model_id or pool.id,
        "--host",
        host,
        "--port",
        str(port),
        "--max-model-len",
        str(pool.ctx),
        "--max-num-seqs",
        str(pool.slots),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        str(vllm_kv_cache_bytes(pool)),
        "--disable-uvicorn-access-log",
    ]
    if certs is not None:
        args += ["--ssl-certfile", certs[0], "--ssl-keyfile", certs[1]]
    env = _vllm_env(manager)
    if key:
        env["VLLM_API_KEY"] = key
    return Launch(tuple(args), "vllm", env, port, tls=certs is not None)


def _vllm_env(manager: ManagerConfig) -> dict[str, str]:
    """vLLM offline, without usage reports, its compile cache under the state dir."""
    return {
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CACHE_ROOT": str(manager.state_dir / "cache" / "vllm"),
    }


def _openai_compatible(pool: PoolConfig, host: str, port: int) -> Launch:
    values = {
        "host": host,
        "port": str(port),
        "model": pool.model,
        "ctx": str(pool.ctx),
        "slots": str(pool.slots),
    }
    return Launch(tuple(part.format(**values) for part in pool.engine_command), "openai", {}, port)


def gpu_index(pool: PoolConfig, manager: ManagerConfig) -> int | None:
    """The NVML index of the real GPU `pool` is placed on; None: the CPU or a simulated
    device."""
    found = _GPU_ID.fullmatch(pool.device)
    if found is None or pool.device in {d.id for d in manager.devices}:
        return None
    return int(found.group(1))


def device_env(pool: PoolConfig, manager: ManagerConfig) -> dict[str, str]:
    """The environment that puts the engine on its device (empty: as configured)."""
    index = gpu_index(pool, manager)
    if index is None:
        return {}
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(index)}


def gpu_layers(pool: PoolConfig, manager: ManagerConfig) -> int:
    """Layers a llama.cpp engine offloads: the pool's `gpu_layers` when set, every layer
    on a real GPU, none elsewhere."""
    if pool.gpu_layers or pool.engine not in _LAYERED_ENGINES:
        return pool.gpu_layers
    return ALL_LAYERS if gpu_index(pool, manager) is not None else 0


def launch(
    pool: PoolConfig, manager: ManagerConfig, port_file: Path, key: str, network: HostNetwork
) -> Launch:
    """The launch of one replica (called at every start: a restart gets a fresh port)."""
    if pool.container is not None:  # the runtime gives it the device (--gpus, --device)
        return _container(pool, manager, port_file, key, network)
    placed = replace(pool, gpu_layers=gpu_layers(pool, manager))
    spec = _launch(placed, manager, port_file, key, network)
    env = device_env(pool, manager)
    return replace(spec, env={**spec.env, **env}) if env else spec


def _launch(
    pool: PoolConfig, manager: ManagerConfig, port_file: Path, key: str, network: HostNetwork
) -> Launch:
    if pool.engine in ("llamacpp-inproc", "mock"):
        return _worker(pool, manager, port_file, key, network)
    if pool.engine == "vllm-inproc":
        if not pool.engine_command:
            raise ValueError("engine vllm-inproc needs engine_command (the vLLM venv's worker)")
        return _worker(pool, manager, port_file, key, network)
    if not pool.engine_command:
        raise ValueError(f"engine {pool.engine} needs engine_command (the provisioned engine)")
    host = network.bind_host
    port = free_port(host, manager.engine_port_range)
    if pool.engine == "llamacpp":
        return _llama_server(pool, key, host, port, _tls_files(pool, manager, network))
    if pool.engine == "llamacpp-server-py":
        return _llama_cpp_server(pool, key, host, port, _tls_files(pool, manager, network))
    if pool.engine == "triton":
        return _triton(pool, host, port, manager.engine_port_range)
    if pool.engine == "vllm":
        return _vllm(pool, manager, key, host, port, _tls_files(pool, manager, network))
    if pool.engine == "openai-compatible":
        return _openai_compatible(pool, host, port)
    raise ValueError(f"unknown engine {pool.engine}")


# -- container mode (container_launch.py) ------------------------------------------------


def _container(
    pool: PoolConfig, manager: ManagerConfig, port_file: Path, key: str, network: HostNetwork
) -> Launch:
    """A container engine: `docker|podman run` publishing one host port chosen here. The
    replica's name is its port file's (`<pool>-r<i>[.g<n>].port`)."""
    port = free_port(network.bind_host, manager.engine_port_range)
    vllm_args: tuple[str, ...] = ()
    if pool.engine == "vllm":
        package = _vllm(without_prefix(pool), manager, "", "0.0.0.0", 8000, None).command
        vllm_args = tuple(
            MODEL_MOUNT if index and package[index - 1] == "--model" else part
            for index, part in enumerate(package)
        )
    run = build_container_run(
        pool,
        manager,
        replica=port_file.name.removesuffix(".port"),
        key=key,
        bind_host=network.bind_host,
        port=port,
        vllm_args=vllm_args,
    )
    return Launch(run.argv, ENGINE_ADAPTERS[pool.engine], run.env, port, container=run.container)
