"""`podman run` / `docker run` command lines for a pool's engine container (PRV-02). Pure.

`container_run(tool, image, engine, launch)` returns the argv up to and including the
image (the engine's own flags follow it) and the environment to start it with:

- devices: docker takes `--gpus "device=0,1"` (the quotes are part of the value: docker
  reads it as CSV); podman takes one `--device nvidia.com/gpu=N` per GPU (CDI names).
  No devices: CPU only, no GPU flag at all.
- ports: `-p HOST:HOST_PORT:CONTAINER_PORT` per port the engine has, bound to loopback
  unless the launch says otherwise (SEC-02).
- mounts: the host cache folder at the engine's cache path, the model folder read-only.
- the per-pool API key (SEC-02): `-e NAME` in argv (the name only) and the value in the
  returned env, which the tool passes on. It never appears in argv, so `ps` and logs do
  not show it. An engine with no key support refuses a key instead of ignoring it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field

from provisioners.plan.engine_specs import ENGINES

__all__ = ["ContainerLaunch", "LaunchCommand", "container_run"]


@dataclass(frozen=True, slots=True)
class ContainerLaunch:
    """One pool's container: name, host ports by purpose (`http`, `grpc`, ...), GPUs."""

    name: str
    host_ports: Mapping[str, int]
    bind_host: str = "127.0.0.1"
    devices: tuple[str, ...] = ()  # GPU indices or UUIDs; () runs on the CPU
    cache_dir: str | None = None
    model_dir: str | None = None
    model_mount: str = "/models"
    api_key: str | None = None


@dataclass(frozen=True, slots=True)
class LaunchCommand:
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # added to the caller's environment


def container_run(tool: str, image: str, engine: str, launch: ContainerLaunch) -> LaunchCommand:
    """The argv (ending with the image) and env that start `launch` (see module doc)."""
    profile = ENGINES[engine]
    container = profile.container
    if container is None:
        raise ValueError(f"{engine} has no container image")
    runtime = posixpath.basename(tool)
    argv = [tool, "run", "--rm", "--name", launch.name, *_run_args(engine)]
    argv += _device_args(runtime, launch.devices)
    argv += _port_args(launch, container.ports)
    argv += _mount_args(launch, container.cache_path)
    env: dict[str, str] = {}
    if launch.api_key is not None:
        if profile.api_key_env is None:
            raise ValueError(f"{engine} has no API key support; keep it on loopback instead")
        argv += ["-e", profile.api_key_env]  # the name only: the value travels in env
        env[profile.api_key_env] = launch.api_key
    if launch.cache_dir is not None and container.cache_env is not None:
        argv += ["-e", f"{container.cache_env}={container.cache_path}"]  # the mounted cache
    return LaunchCommand((*argv, image), env)


def _run_args(engine: str) -> list[str]:
    # vLLM shares tensors between its processes through /dev/shm (its docs: --ipc=host);
    # TGI and Triton ask for a larger /dev/shm than the default 64 MB.
    return ["--ipc=host"] if engine == "vllm" else ["--shm-size=1g"]


def _device_args(runtime: str, devices: tuple[str, ...]) -> list[str]:
    if not devices:
        return []
    if runtime.startswith("podman"):
        return [arg for device in devices for arg in ("--device", f"nvidia.com/gpu={device}")]
    return ["--gpus", f'"device={",".join(devices)}"']


def _port_args(launch: ContainerLaunch, container_ports: Mapping[str, int]) -> list[str]:
    unknown = set(launch.host_ports) - set(container_ports)
    if unknown:
        raise ValueError(f"no such port on this engine: {', '.join(sorted(unknown))}")
    args: list[str] = []
    for purpose, host_port in launch.host_ports.items():
        args += ["-p", f"{launch.bind_host}:{host_port}:{container_ports[purpose]}"]
    return args


def _mount_args(launch: ContainerLaunch, cache_path: str | None) -> list[str]:
    args: list[str] = []
    if launch.cache_dir is not None:
        if cache_path is None:
            raise ValueError("this engine's image has no cache folder to mount")
        args += ["-v", f"{launch.cache_dir}:{cache_path}"]
    if launch.model_dir is not None:
        args += ["-v", f"{launch.model_dir}:{launch.model_mount}:ro"]
    return args
