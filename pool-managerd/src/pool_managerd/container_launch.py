"""Container mode: the `docker run` / `podman run` launch of a pool's engine. Pure.

A pool with `container: {image, runtime}` (engine `tgi` always; `vllm` and `triton` when
the pool says so) runs its engine as

    RUNTIME run --rm --name NAME --label llorch.manager=MANAGER --label llorch.pool=POOL
        [--ipc=host | --shm-size=1g] [--gpus "device=N" | --device nvidia.com/gpu=N]
        -p BIND_HOST:PORT:CONTAINER_PORT -v MODEL:/model:ro -v CACHE:CACHE_PATH
        [-e KEY_ENV] IMAGE ENGINE-ARGS...

built by provisioners' `container_run` (the image default is the engine profile's pinned
one: vLLM's by digest). The API key is passed by NAME (`-e API_KEY`): its value is in the
environment of the runtime's client only, never on a command line. The container is
named after the replica (`llorch-<manager hash>-<pool>-r<i>[.g<n>]`), so a leftover of
the same replica is found and removed before a start, and labelled with this pool
manager's id (`manager_id`: host id and state_dir) and the pool, so that a pool manager
starting after a SIGKILL finds and removes every container its predecessor left
(`Manager.start`); the record of the runtime's client process is kept as for any engine.

Engine arguments, after the image:

| engine   | arguments                                                                     |
|----------|-------------------------------------------------------------------------------|
| `tgi`    | `--model-id /model --hostname 0.0.0.0 --port 80 --max-total-tokens CTX        |
|          | --max-input-tokens CTX-1 --max-concurrent-requests SLOTS`                     |
| `vllm`   | those of the package mode (`engines._vllm`) with `--model /model`,            |
|          | `--host 0.0.0.0 --port 8000`                                                  |
| `triton` | `tritonserver --model-repository=/model --http-port=8000 --grpc-port=8001     |
|          | --metrics-port=8002` (the image's own server; `model` is a model repository)  |

Engines in containers serve plaintext HTTP on the published port (no TLS: the pool says
so at every start). TGI cannot run on the project's machines (no registry to pull its
image from, no GPU): its tests run this launch with an image of the project's faithful
fake TGI server (`llorch/fake-tgi:test`, replaying recorded TGI transcripts) in its place.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path

from provisioners.plan.containers import ContainerLaunch, container_run
from provisioners.plan.engine_specs import ENGINES

from pool_managerd.config import ManagerConfig, PoolConfig

__all__ = [
    "MANAGER_LABEL",
    "MODEL_MOUNT",
    "POOL_LABEL",
    "ContainerRef",
    "ContainerRun",
    "build_container_run",
    "container_name",
    "container_runtime",
    "default_image",
    "device_ids",
    "engine_args",
    "manager_id",
]

MANAGER_LABEL = "llorch.manager"
POOL_LABEL = "llorch.pool"
MODEL_MOUNT = "/model"
_LISTEN = "0.0.0.0"  # inside the container; the runtime publishes one port of the host


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """The container of one engine start: what stop, kill and recovery remove."""

    runtime: str
    name: str


@dataclass(frozen=True, slots=True)
class ContainerRun:
    """The runtime's argv (with the engine's arguments), the environment it adds (the
    API key's value), the container and the adapter kind."""

    argv: tuple[str, ...]
    env: dict[str, str]
    container: ContainerRef
    adapter: str


def manager_id(manager: ManagerConfig) -> str:
    """This pool manager's id on its containers: the host id and a digest of its
    state_dir (one pool manager per state_dir: its lock), so two pool managers of one
    host never remove each other's containers."""
    state = str(Path(manager.state_dir).expanduser().resolve())
    return f"{manager.host_id}.{hashlib.sha256(state.encode()).hexdigest()[:12]}"


def container_name(manager: ManagerConfig, replica: str) -> str:
    """`llorch-<manager digest>-<replica>`: unique per pool manager and replica (the
    characters Docker allows in names: pool ids are letters, digits, `.`, `_`, `-`)."""
    digest = hashlib.sha256(manager_id(manager).encode()).hexdigest()[:10]
    return f"llorch-{digest}-{replica}"


def container_runtime(cmdline: tuple[str, ...]) -> str:
    """The runtime of an engine's recorded command line when it is a container's
    client (`docker run ...`, `podman run ...`); "" otherwise."""
    if len(cmdline) >= 2 and cmdline[1] == "run":
        name = Path(cmdline[0]).name
        if name in ("docker", "podman"):
            return cmdline[0]
    return ""


def default_image(engine: str) -> str:
    """The engine profile's pinned image (provisioners)."""
    profile = ENGINES[engine].container
    if profile is None:
        raise ValueError(f"engine {engine} has no container image")
    return profile.image


def device_ids(device: str) -> tuple[str, ...]:
    """The GPUs a pool's device names: () for `cpu`; `gpu<N>` (the inventory's ids) is
    index N; anything else (a UUID) is passed as is."""
    if device == "cpu":
        return ()
    match = re.fullmatch(r"gpu(\d+)", device)
    return (match[1],) if match else (device,)


def engine_args(pool: PoolConfig, container_port: int, vllm_args: tuple[str, ...]) -> list[str]:
    """The engine's own arguments, after the image (see the module's table). `vllm_args`:
    the package mode's arguments without the command prefix (built by `engines`)."""
    if pool.engine == "tgi":
        return [
            "--model-id",
            MODEL_MOUNT,
            "--hostname",
            _LISTEN,
            "--port",
            str(container_port),
            "--max-total-tokens",
            str(pool.ctx),
            "--max-input-tokens",
            str(max(1, pool.ctx - 1)),
            "--max-concurrent-requests",
            str(pool.slots),
        ]
    if pool.engine == "vllm":
        return list(vllm_args)
    if pool.engine == "triton":
        return [
            "tritonserver",
            f"--model-repository={MODEL_MOUNT}",
            "--http-port=8000",
            "--grpc-port=8001",
            "--metrics-port=8002",
        ]
    raise ValueError(f"engine {pool.engine} has no container mode")


def _publish_host(host: str) -> str:
    """The host part of `-p HOST:PORT:CPORT`: an IPv6 address in brackets (`[::1]`)."""
    bare = host.strip("[]")
    return f"[{bare}]" if ":" in bare else bare


def build_container_run(
    pool: PoolConfig,
    manager: ManagerConfig,
    *,
    replica: str,
    key: str,
    bind_host: str,
    port: int,
    vllm_args: tuple[str, ...] = (),
) -> ContainerRun:
    """The whole launch of one container engine start (see the module's docstring)."""
    settings = pool.container
    if settings is None:
        raise ValueError(f"pool {pool.id} is not in container mode")
    profile = ENGINES[pool.engine]
    image_profile = profile.container
    if image_profile is None:
        raise ValueError(f"engine {pool.engine} has no container image")
    name = container_name(manager, replica)
    launch = ContainerLaunch(
        name=name,
        host_ports={"http": port},
        bind_host=_publish_host(bind_host),
        devices=device_ids(pool.device),
        cache_dir=str(Path(manager.state_dir).expanduser() / "cache" / pool.engine)
        if image_profile.cache_path is not None
        else None,
        model_dir=str(Path(pool.model).resolve()),
        model_mount=MODEL_MOUNT,
        api_key=key if key and profile.api_key_env is not None else None,
    )
    command = container_run(
        settings.runtime, settings.image or image_profile.image, pool.engine, launch
    )
    labels = [
        "--label",
        f"{MANAGER_LABEL}={manager_id(manager)}",
        "--label",
        f"{POOL_LABEL}={pool.id}",
    ]
    *head, image = command.argv
    # `RUNTIME run --rm --name NAME` first, then the labels, then container_run's flags.
    argv = (*head[:5], *labels, *head[5:], image)
    args = engine_args(pool, image_profile.ports["http"], vllm_args)
    return ContainerRun(
        (*argv, *args), dict(command.env), ContainerRef(settings.runtime, name), profile.name
    )


def without_prefix(pool: PoolConfig) -> PoolConfig:
    """The pool as the package-mode argument builders see it in container mode: no
    command prefix (the image's entrypoint is the server)."""
    return replace(pool, engine_command=())
