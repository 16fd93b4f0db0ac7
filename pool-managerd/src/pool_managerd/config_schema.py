"""The typed model of pool-managerd's YAML file: every key, its type, default and
meaning. `config.load_config` validates a file against it (one-line errors naming the
file and key), then builds `ManagerConfig` and runs its semantic checks.
`docs/configuration.md` is generated from these docstrings (`ci/gen-config-doc`)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field
from specs.settings import Settings
from specs.tls import TlsSettings

__all__ = [
    "ENGINE_NAMES",
    "ContainerSettings",
    "DeviceSettings",
    "EngineName",
    "ManagerSettings",
    "ModelSettings",
    "PoolSettings",
    "RestartSettings",
]

EngineName = Literal[
    "llamacpp-inproc",
    "mock",
    "llamacpp",
    "llamacpp-server-py",
    "triton",
    "vllm",
    "vllm-inproc",
    "tgi",
    "openai-compatible",
]
ENGINE_NAMES: frozenset[str] = frozenset(get_args(EngineName))


class RestartSettings(Settings):
    """Crash back-off and the breaker (POOL-04)."""

    initial_backoff_s: float = Field(default=1.0, gt=0)
    """First delay after a crash."""
    factor: float = Field(default=2.0, gt=0)
    """The delay is multiplied by this per further crash."""
    max_backoff_s: float = Field(default=60.0, gt=0)
    """Cap of the delay; not below `initial_backoff_s`."""
    reset_after_s: float = Field(default=600.0, gt=0)
    """Ready this long: the next crash starts again at the first delay."""
    max_crashes: int = Field(default=5, gt=0)
    """More crashes than this within `crash_window_s` open the breaker: the replica is
    failed, the reason in last_error."""
    crash_window_s: float = Field(default=600.0, gt=0)
    """The window of `max_crashes`."""
    jitter_ratio: float = Field(default=0.2, ge=0, lt=1)
    """Each delay varies by ± this share, at random."""
    probe_failures_to_restart: int = Field(default=3, gt=0)
    """Failed health probes in a row that restart a ready engine."""


class ContainerSettings(Settings):
    """Container mode of a pool's engine (`tgi` always; `vllm` and `triton` when set):
    the engine runs in this image under docker or podman (`engines.py`)."""

    image: str = Field(default="", pattern=r"^([^\s-]\S*)?$")
    """The image; empty: the engine's pinned image (provisioners' profile; vLLM's by
    digest)."""
    runtime: Literal["docker", "podman"] = "docker"
    """The container runtime, found on PATH."""


class PoolSettings(Settings):
    """A static pool: started at boot, owned by this file."""

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    """The pool's id, unique: 1-64 characters of letters, digits, `.`, `_`, `-`."""
    model: str = ""
    """The model: a GGUF file, or for `vllm`, `vllm-inproc` and `tgi` a Hugging Face model
    folder (config.json, safetensors, tokenizer; a Triton model repository for `triton` in
    a container); required except for `mock` and `openai-compatible`."""
    engine: EngineName = "llamacpp-inproc"
    """The engine; all but `llamacpp-inproc` and `mock` need `engine_command` or, for
    `tgi` (container only), `vllm` and `triton`, `container`."""
    model_id: str = ""
    """The model's id in the API; default: from the file name."""
    sha256: str = ""
    """When given, the file is verified against it before the pool starts."""
    aliases: list[str] = Field(default_factory=list)
    """More names clients may ask for this model by."""
    ctx: int = Field(default=2048, ge=1)
    """Context tokens per slot."""
    slots: int = Field(default=1, ge=1)
    """Sequences decoded at once per replica."""
    replicas: int = Field(default=1, ge=1)
    """Engine processes of this pool."""
    threads: int | None = None
    """CPU threads of the engine; null: the engine's default."""
    gpu_layers: int = 0
    """Layers offloaded to the GPU."""
    embeddings: bool = False
    """Serve embeddings instead of completions."""
    mock: str = ""
    """The fake engine's script (engine `mock`, tests only)."""
    device: str = "cpu"
    """The device the pool runs on (an id under `devices`, or `cpu`)."""
    deployment: str = ""
    """The deployment this pool belongs to (set for deployment pools, not by hand)."""
    memory_estimated_bytes: int = 0
    """Memory the pool is expected to take on its device, for placement."""
    engine_command: list[str] = Field(default_factory=list)
    """The engine's command prefix, for engines run as a separate server (for
    `vllm-inproc`: the vLLM venv's `python -m worker_adapters.worker`)."""
    container: ContainerSettings | None = None
    """Run the engine in a container (`tgi`: required; `vllm`, `triton`: optional);
    null: a host process from `engine_command`."""


class ModelSettings(Settings):
    """A model file this host holds, for deployments."""

    id: str
    """The model's catalog id."""
    path: str
    """The file."""
    sha256: str = ""
    """Checked when given, computed otherwise."""
    aliases: list[str] = Field(default_factory=list)
    """More names for it."""


class DeviceSettings(Settings):
    """A simulated device (no hardware), for placement tests over several GPU hosts. Free
    memory = total - `foreign_used_bytes` - estimates of the pools placed on it."""

    id: str
    """The device's id."""
    kind: str = "gpu"
    """`gpu` or `cpu`."""
    name: str = "simulated"
    """A display name."""
    memory_total_bytes: int = 0
    """Its memory."""
    compute_capability: str = ""
    """e.g. "9.0" (quoted: a string)."""
    foreign_used_bytes: int = 0
    """Memory taken by processes other than llorch's."""


class ManagerSettings(Settings):
    """pool-managerd's file. Durations are in milliseconds unless the name ends `_s`."""

    orchestrator: str
    """The orchestrator's control-link address: host:port, [v6]:port or name:port."""
    host_id: str | None = None
    """This host's id in the fleet; null: the machine's hostname."""
    join_token_env: str = "LLORCH_JOIN_TOKEN"
    """Environment variable holding the join token; never in the file."""
    state_dir: str = "~/.local/share/llorch"
    """Folder of logs/, run/ and cordon.json."""
    heartbeat_interval_ms: int = 2000
    """How often the host reports to the orchestrator."""
    probe_interval_ms: int = 1000
    """How often each engine's health is probed."""
    probe_timeout_ms: int = 5000
    """A health probe not answered within this fails."""
    shutdown_grace_s: float = 10.0
    """On SIGTERM, pools drain this long before engines are stopped."""
    worker_command: list[str] = Field(default_factory=list)
    """The in-process engine worker's command prefix; empty: this Python's
    `-m worker_adapters.worker`."""
    restart: RestartSettings = Field(default_factory=RestartSettings)
    """Crash back-off and the breaker (POOL-04)."""
    pools: list[PoolSettings] = Field(default_factory=list)
    """Static pools, started at boot."""
    models: list[ModelSettings] = Field(default_factory=list)
    """Model files this host holds, for deployments."""
    engines: list[str] = Field(default_factory=lambda: ["llamacpp-inproc", "mock"])
    """Engines this host can run (told to placement)."""
    devices: list[DeviceSettings] = Field(default_factory=list)
    """Simulated devices, for placement tests."""
    worker_threads: int | None = None
    """CPU threads per engine of deployment pools; null: the engine's default."""
    metrics_host: str = "127.0.0.1"
    """Address of the Prometheus endpoint."""
    metrics_port: int | None = None
    """Port of the Prometheus endpoint; null: none, 0: any free port."""
    model_roots: list[str] = Field(default_factory=list)
    """Folders a reload may load a model from by path; empty: the folders of the models
    and pools above."""
    reload_timeout_s: float = 300.0
    """A reloaded model must be ready within this."""
    reload_drain_deadline_s: float = 300.0
    """Running jobs of the replaced model may finish until this."""
    advertise_host: str = ""
    """What the orchestrator dials for this host's engines; empty: this host's address
    toward the orchestrator."""
    engine_bind_host: str = ""
    """Where engines listen; empty: the advertised address when it is this host's own,
    else that local address."""
    insecure: bool = False
    """Allow a plaintext control link to a non-loopback orchestrator (warned at every
    start)."""
    tls: TlsSettings | None = None
    """`ca_file` verifies the orchestrator; cert and key are this host's identity on the
    control link (mutual TLS) and served by its engines; `client_auth`: engines require
    the orchestrator's client certificate."""
    engine_tls: bool = True
    """Engines serve TLS when `tls` has a certificate."""
    engine_ports: str = ""
    """Engines listen on ports of this range, FIRST-LAST within 1024-65535 (one firewall
    rule); empty: any free port."""
    status_file: str | None = None
    """When set, this file holds {"joined", "api_url", "pools"} as JSON, rewritten
    atomically whenever it changes (how `llorch join` watches the join)."""
