"""pool-managerd configuration: one YAML file; secrets from the environment.

host_id: gpu-host-1                 # default: the machine's hostname
orchestrator: 127.0.0.1:8090        # the orchestrator's control-link address (host:port,
                                    # [v6]:port or name:port)
advertise_host: ""                  # what the orchestrator dials for this host's engines;
                                    # default: this host's address toward the orchestrator
engine_bind_host: ""                # where engines listen; default: the advertised address
                                    # when it is this host's own, else that local address
engine_ports: "41000-41999"         # engines listen on ports of this range (one firewall
                                    # rule); default: any free port the kernel picks
insecure: false                     # allow a plaintext control link to a non-loopback
                                    # orchestrator (warned at every start)
tls:                                # FLT-02, see specs.tls: ca_file verifies the orchestrator;
  ca_file: /etc/llorch/ca.pem       # cert/key are this host's identity, presented on the
  cert_file: /etc/llorch/host.pem   # control link (mutual TLS) and served by its engines
  key_file: /etc/llorch/host.key
  client_auth: false                # engines require the orchestrator's client certificate
engine_tls: true                    # engines serve TLS when tls has a certificate
join_token_env: LLORCH_JOIN_TOKEN   # the join token is read from this variable
state_dir: /var/lib/llorch          # logs/ and run/ go under it
heartbeat_interval_ms: 2000
shutdown_grace_s: 10
restart:                            # POOL-04: crash back-off and the breaker (defaults shown)
  initial_backoff_s: 1              # first delay after a crash
  factor: 2                         # ×factor per further crash
  max_backoff_s: 60                 # cap of the delay
  jitter_ratio: 0.2                 # ±20 % of the delay, at random
  reset_after_s: 600                # ready this long: the next crash starts at the first delay
  max_crashes: 5                    # more crashes than this within crash_window_s open the
  crash_window_s: 600               # breaker: the replica is failed, the reason in last_error
  probe_failures_to_restart: 3      # failed health probes in a row that restart a ready engine
pools:
  - id: tiny
    model: /models/tiny.gguf        # a GGUF file (engine vllm: a Hugging Face folder)
    sha256: <hex>                   # optional: verified before the pool starts (a folder's
                                    # digest: catalog_core.sha256_folder)
    aliases: [default]
    engine: llamacpp-inproc         # or: mock (the fake engine, for tests)
    ctx: 2048                       # tokens per slot
    slots: 1                        # concurrent sequences per replica
    replicas: 1                     # worker processes
    threads: 1
models:                             # model files this host holds, for deployments
  - {id: tiny, path: /models/tiny.gguf, sha256: <hex>, aliases: [small]}
engines: [llamacpp-inproc, mock]    # engines this host can run
devices:                            # simulated devices, for placement tests
  - {id: gpu0, kind: gpu, name: Simulated H100, memory_total_bytes: 80000000000,
     compute_capability: "9.0", foreign_used_bytes: 0}
model_roots: [/models]              # where a reload may load a model by path; default:
                                    # the folders of the models and pools above
reload_timeout_s: 300               # a reloaded model must be ready within this
reload_drain_deadline_s: 300        # running jobs of the replaced model may finish until
status_file: ""                     # when set, this file holds {"joined": bool, "api_url":
                                    # the fleet's API, "pools": {id: state}} as JSON,
                                    # rewritten atomically whenever
                                    # it changes (how `llorch join` watches the join)

Pools listed under `pools` are static: started at boot, owned by this file. Pools of
deployments arrive as Preload commands from the orchestrator. Cordon state is kept in
`state_dir/cordon.json` and survives restarts (POOL-08).

Every key is typed in `config_schema` (unknown keys and wrong types are one-line
errors naming the file and key); the reference page `docs/configuration.md` is
generated from it by `ci/gen-config-doc`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from specs.net import AddressError, split_host_port
from specs.settings import SettingsError, read_yaml, validate_file
from specs.tls import TlsConfigError, TlsFiles, parse_tls

from pool_managerd.config_schema import (
    ENGINE_NAMES,
    ManagerSettings,
    PoolSettings,
    RestartSettings,
)
from pool_managerd.lifecycle import RestartPolicy

__all__ = [
    "CONTAINER_ENGINES",
    "CONTAINER_ONLY_ENGINES",
    "ConfigError",
    "ContainerConfig",
    "ManagerConfig",
    "ModelConfig",
    "PoolConfig",
    "SimulatedDevice",
    "load_config",
]

ENGINES = ENGINE_NAMES


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """A pool's engine in a container: the image ("" = the engine's pinned one) and the
    runtime (`docker` or `podman`)."""

    image: str = ""
    runtime: str = "docker"


# Engines that run in a container, and those that must (no host process of theirs).
CONTAINER_ENGINES = frozenset({"tgi", "vllm", "triton"})
CONTAINER_ONLY_ENGINES = frozenset({"tgi"})


@dataclass(frozen=True, slots=True)
class PoolConfig:
    id: str
    model: str = ""
    engine: str = "llamacpp-inproc"
    model_id: str = ""
    sha256: str = ""
    aliases: tuple[str, ...] = ()
    ctx: int = 2048
    slots: int = 1
    replicas: int = 1
    threads: int | None = None
    gpu_layers: int = 0
    embeddings: bool = False
    mock: str = ""
    device: str = "cpu"
    deployment: str = ""
    memory_estimated_bytes: int = 0
    engine_command: tuple[str, ...] = ()  # provisioned engine's command prefix (engines.py)
    container: ContainerConfig | None = None  # container mode (engines.container_launch)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """A model file the host holds. `sha256` is checked when given, computed otherwise."""

    id: str
    path: str
    sha256: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SimulatedDevice:
    """A device declared in config (no hardware): placement tests over several GPU hosts.
    Free memory = total - `foreign_used_bytes` - estimates of the pools placed on it."""

    id: str
    kind: str = "gpu"
    name: str = "simulated"
    memory_total_bytes: int = 0
    compute_capability: str = ""
    foreign_used_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    orchestrator: str
    host_id: str = field(default_factory=socket.gethostname)
    join_token_env: str = "LLORCH_JOIN_TOKEN"
    state_dir: Path = Path.home() / ".local" / "share" / "llorch"
    heartbeat_interval_ms: int = 2000
    probe_interval_ms: int = 1000
    probe_timeout_ms: int = 5000
    shutdown_grace_s: float = 10.0
    worker_command: tuple[str, ...] = ()
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    pools: tuple[PoolConfig, ...] = ()
    models: tuple[ModelConfig, ...] = ()
    engines: tuple[str, ...] = ("llamacpp-inproc", "mock")
    devices: tuple[SimulatedDevice, ...] = ()
    worker_threads: int | None = None  # CPU threads per slot for deployment pools
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    model_roots: tuple[str, ...] = ()
    reload_timeout_s: float = 300.0
    reload_drain_deadline_s: float = 300.0
    advertise_host: str = ""
    engine_bind_host: str = ""
    insecure: bool = False
    tls: TlsFiles | None = None
    engine_tls: bool = True
    engine_ports: str = ""

    @property
    def engine_port_range(self) -> tuple[int, int] | None:
        """(first, last) of `engine_ports`, inclusive; None: any port (checked at load)."""
        return _port_range(self.engine_ports) if self.engine_ports else None

    status_file: Path | None = None

    @property
    def join_token(self) -> str:
        return os.environ.get(self.join_token_env, "")

    def allowed_model_roots(self) -> tuple[Path, ...]:
        """Folders a reload may load a model from by path: `model_roots`, else the
        folders of the configured models and pools."""
        given = self.model_roots or tuple(
            str(Path(path).parent)
            for path in [m.path for m in self.models] + [p.model for p in self.pools if p.model]
        )
        return tuple(sorted({Path(root).expanduser().resolve() for root in given}))


def _port_range(text: str) -> tuple[int, int]:
    first, sep, last = str(text).partition("-")
    if not (sep and first.strip().isdigit() and last.strip().isdigit()):
        raise ConfigError(f"engine_ports: expected FIRST-LAST, e.g. 41000-41999, got {text!r}")
    low, high = int(first), int(last)
    if not 1024 <= low <= high <= 65535:
        raise ConfigError(f"engine_ports: {text!r} must lie within 1024-65535, first <= last")
    return low, high


def _restart_policy(settings: RestartSettings) -> RestartPolicy:
    """`restart`: types and ranges are the model's; this is the rule across keys."""
    policy = RestartPolicy(**settings.model_dump())
    if policy.max_backoff_s < policy.initial_backoff_s:
        raise ConfigError("restart.max_backoff_s must not be below initial_backoff_s")
    return policy


def _pool(settings: PoolSettings, index: int) -> PoolConfig:
    values = settings.model_dump()
    values["aliases"] = tuple(settings.aliases)
    values["engine_command"] = tuple(settings.engine_command)
    values["container"] = (
        None if settings.container is None else ContainerConfig(**settings.container.model_dump())
    )
    pool = PoolConfig(**values)
    if pool.engine not in ("mock", "openai-compatible") and not pool.model:
        raise ConfigError(f"pools[{index}].model is required for engine {pool.engine}")
    _check_container(pool, index)
    needs_command = pool.engine not in ("llamacpp-inproc", "mock") and pool.container is None
    if needs_command and not pool.engine_command:
        raise ConfigError(f"pools[{index}]: engine {pool.engine} needs engine_command")
    if pool.engine in ("vllm", "vllm-inproc") and (pool.gpu_layers or pool.embeddings):
        raise ConfigError(
            f"pools[{index}]: engine {pool.engine} takes no gpu_layers or embeddings (vLLM "
            "places the whole model on its device and serves generation only here)"
        )
    return pool


def _check_container(pool: PoolConfig, index: int) -> None:
    """Container mode: only for engines with an image; required for `tgi`; and then no
    `engine_command` (it would be ignored) nor `gpu_layers` (the engine places it)."""
    where = f"pools[{index}]"
    if pool.container is None:
        if pool.engine in CONTAINER_ONLY_ENGINES:
            raise ConfigError(
                f"{where}: engine {pool.engine} runs only in a container: set container"
            )
        return
    if pool.engine not in CONTAINER_ENGINES:
        raise ConfigError(
            f"{where}.container: engine {pool.engine} has no container mode "
            f"(only {', '.join(sorted(CONTAINER_ENGINES))})"
        )
    if pool.engine_command:
        raise ConfigError(
            f"{where}: engine_command and container exclude each other (the image is the engine)"
        )
    if pool.gpu_layers or pool.embeddings:
        raise ConfigError(f"{where}: a container engine takes no gpu_layers or embeddings")


def load_config(path: Path) -> ManagerConfig:
    """Read the YAML file, check types against `ManagerSettings`, then the semantic
    rules. ConfigError: one line naming the file, the key and what was expected."""
    try:
        settings = validate_file(ManagerSettings, read_yaml(path), str(path))
        config = _config(settings)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not config.join_token:
        raise ConfigError(f"no join token: set the environment variable {config.join_token_env}")
    return config


def _config(settings: ManagerSettings) -> ManagerConfig:
    pools = tuple(_pool(p, i) for i, p in enumerate(settings.pools))
    ids = [p.id for p in pools]
    if len(ids) != len(set(ids)):
        raise ConfigError("pool ids must be unique")
    try:
        tls = parse_tls(settings.tls.model_dump() if settings.tls else None)
        split_host_port(settings.orchestrator)
    except (TlsConfigError, AddressError) as exc:
        raise ConfigError(str(exc)) from exc
    if settings.engine_ports:
        _port_range(settings.engine_ports)
    return ManagerConfig(
        orchestrator=settings.orchestrator,
        host_id=settings.host_id or socket.gethostname(),
        join_token_env=settings.join_token_env,
        state_dir=Path(settings.state_dir).expanduser(),
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        probe_interval_ms=settings.probe_interval_ms,
        probe_timeout_ms=settings.probe_timeout_ms,
        shutdown_grace_s=settings.shutdown_grace_s,
        worker_command=tuple(settings.worker_command),
        restart=_restart_policy(settings.restart),
        pools=pools,
        models=tuple(
            ModelConfig(**{**m.model_dump(), "aliases": tuple(m.aliases)}) for m in settings.models
        ),
        engines=tuple(settings.engines),
        devices=tuple(SimulatedDevice(**d.model_dump()) for d in settings.devices),
        worker_threads=settings.worker_threads,
        metrics_host=settings.metrics_host,
        metrics_port=settings.metrics_port,
        model_roots=tuple(settings.model_roots),
        reload_timeout_s=settings.reload_timeout_s,
        reload_drain_deadline_s=settings.reload_drain_deadline_s,
        advertise_host=settings.advertise_host,
        engine_bind_host=settings.engine_bind_host,
        insecure=settings.insecure,
        tls=tls,
        engine_tls=settings.engine_tls,
        engine_ports=settings.engine_ports,
        status_file=Path(settings.status_file).expanduser() if settings.status_file else None,
    )
