"""The typed model of orchestratord's YAML file: every key, its type, default and
meaning. `config.load_config` validates a file against it (one-line errors naming the
file and key), then builds `OrchestratorConfig` and runs its semantic checks.
`docs/configuration.md` is generated from these docstrings (`ci/gen-config-doc`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from specs.settings import Settings
from specs.tls import TlsSettings

from orchestratord.admission import FullQueuePolicy
from orchestratord.quotas import Role

__all__ = ["ApiKeySettings", "OrchestratorSettings", "Routing"]

Routing = Literal["predicted", "least_loaded"]


class ApiKeySettings(Settings):
    """One API key (SEC-01, SEC-05): only its sha256 is stored. `admin` keys may also
    change the fleet (deployments, drain, reload, cordon, catalog writes)."""

    name: str
    """The key's name, in logs and metrics (never the key)."""
    key_sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    """sha256 of the key, 64 hex characters."""
    role: Role = "client"
    """`admin` or `client` (jobs and reads); an entry without a role is a client key."""
    max_concurrent: int | None = None
    """Jobs of this key running at once; null: no limit."""
    requests_per_minute: int | None = None
    """Requests of this key per rolling minute; null: no limit."""
    tokens_per_minute: int | None = None
    """Tokens generated for this key per rolling minute; null: no limit."""


class OrchestratorSettings(Settings):
    """orchestratord's file. Durations are in milliseconds unless the name ends `_s`."""

    http_host: str = "127.0.0.1"
    """Address of the HTTP API; a non-loopback one needs `api_keys` (SEC-01)."""
    http_port: int = 8080
    """Port of the HTTP API (0: any free port)."""
    control_host: str = "127.0.0.1"
    """Address of the control link pool managers dial (gRPC); a non-loopback one needs
    `tls` or `insecure: true` (FLT-02)."""
    control_port: int = 8090
    """Port of the control link (0: any free port)."""
    join_token_env: str = "LLORCH_JOIN_TOKEN"
    """Environment variable holding the join token(s) pool managers present,
    comma-separated to rotate; never in the file."""
    queue_capacity: int = 1024
    """Queued jobs at most, all lanes together."""
    interactive_capacity: int = 1024
    """Queued jobs at most in the interactive lane."""
    batch_capacity: int = 1024
    """Queued jobs at most in the batch lane."""
    full_queue_policy: FullQueuePolicy = "reject"
    """When a new job does not fit (ADM-02): `reject` it (ADMISSION_REJECT with
    Retry-After); `drop-lru`: evict the oldest batch job (else the oldest) and admit it;
    `shed-low-priority`: refuse batch jobs whenever interactive ones wait."""
    reject_retry_after_ms: int = 1000
    """Retry-After given with a refusal for a full queue."""
    max_body_bytes: int = 4 << 20
    """Largest request body accepted."""
    max_prompt_bytes: int = 1 << 20
    """Largest prompt, and largest text to tokenize."""
    max_token_ids: int = 131_072
    """Token ids in one detokenize request at most (SEC-03)."""
    http_request_read_timeout_s: float = 30.0
    """A connection that has not sent a whole request this long after its first byte is
    answered 408 and closed (slowloris)."""
    http_keep_alive_s: float = 5.0
    """An idle keep-alive connection is closed after this long."""
    max_attempts: int = 3
    """Placements of one job at most (a retriable failure requeues it)."""
    requeue_backoff_ms: int = 200
    """Wait before a failed job is placed again, doubled per further attempt."""
    max_queue_wait_ms: int = 300_000
    """A job queued this long (or past its own deadline) ends with a timeout."""
    state_dir: str = "~/.local/share/llorch/orchestratord"
    """Folder of the job journal and other state."""
    idle_timeout_ms: int = 60_000
    """A running job with no token for this long ends DECODE_TIMEOUT."""
    api_keys: list[ApiKeySettings] = Field(default_factory=list)
    """Client and admin keys; none: loopback only, every route open."""
    api_keys_file: str | None = None
    """A YAML file with more keys: a list of entries as in `api_keys`, or a mapping with
    `api_keys:`."""
    heartbeat_interval_ms: int = 2000
    """How often pool managers report on the control link."""
    lease_ms: int = 6000
    """A host silent this long is lost; must exceed `heartbeat_interval_ms`."""
    suspect_ttl_ms: int = 4000
    """A replica whose engine failed a job is avoided by placement this long."""
    disconnect_grace_ms: int = 5000
    """A job whose stream readers all left is cancelled after this long, unless one comes
    back (or the job was detached)."""
    sse_heartbeat_ms: int = 15_000
    """Interval of SSE keep-alive comments."""
    sse_replay_events: int = 8192
    """Events kept per job to resume a stream (Last-Event-ID)."""
    finished_tasks_kept: int | None = None
    """Finished jobs kept in memory for status queries, stream resumes and the task list;
    by default 1,000 with the journal (which answers for older ones within
    `journal_retention_s`), 10,000 without it."""
    routing: Routing = "predicted"
    """Placement: `predicted` finish time with prompt-prefix affinity (PLC-03), or
    `least_loaded` (free slots, then pool id)."""
    tls: TlsSettings | None = None
    """The control link's TLS: server certificate, and the CA of pool managers' client
    certificates with `client_auth` (mutual TLS); `ca_file` also checks engines."""
    insecure: bool = False
    """Allow a plaintext control link on a non-loopback address (warned at every start)."""
    public_url: str = ""
    """Where clients reach this API, told to pool managers; default
    http://HTTP_HOST:PORT (the control host for a wildcard HTTP host)."""
    journal: bool = True
    """Keep the job journal (REL-01..05): SQLite under `state_dir`."""
    journal_flush_ms: int = 1000
    """Running jobs' token events are written at least this often."""
    journal_sync: Literal["normal", "full"] = "normal"
    """`full` adds an fsync per commit (power loss); `normal` survives any crash of the
    process."""
    journal_retention_s: int = 86_400
    """Ended jobs and idempotency keys are kept this long."""
    shutdown_grace_s: float = 30.0
    """On SIGTERM, running jobs get this long to finish (REL-06)."""
