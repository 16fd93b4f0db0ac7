"""orchestratord configuration: one YAML file plus environment variables for secrets.

The join token that pool managers present is read from the environment variable named
by `join_token_env` (default `LLORCH_JOIN_TOKEN`), never from the file, so config files
can be shared and committed. Several tokens, comma-separated, are all accepted: rotate
by adding the new one, moving the hosts to it, then removing the old. For the same
reason `api_keys_file` may name a YAML file holding the `api_keys` list. Durations are
in milliseconds unless the name says `_s`.

API keys (SEC-01, SEC-05): each entry is `{name, key_sha256, role, ...limits}` with
`role` `admin` (deployments, drain, reload, cordon, catalog writes, and everything a
client may do) or `client` (jobs and reads). An entry without `role` is a `client` key:
the secure default, so a key written before roles existed can no longer change the
fleet until its entry says `role: admin` (it keeps submitting jobs and reading as
before). Any other role is a ConfigError. With no keys at all (loopback only) every
route is open.

Links across hosts (FLT-02): `tls` (see `specs.tls`) gives the control link's server
certificate (`cert_file`, `key_file`), the CA that pool managers' client certificates
must come from when `client_auth: true` (mutual TLS), and the CA engines' certificates
are checked against (`ca_file`); the same certificate is this orchestrator's client
certificate toward engines that ask for one. A control link on a non-loopback address
without `tls` is refused unless `insecure: true`, which is warned about at every start.

Every key is typed in `config_schema` (unknown keys and wrong types are one-line
errors naming the file and key); the reference page `docs/configuration.md` is
generated from it by `ci/gen-config-doc`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specs.net import is_loopback
from specs.settings import Settings, SettingsError, read_yaml, validate_file
from specs.tls import TlsConfigError, TlsFiles, parse_tls

from orchestratord.admission import POLICIES, FullQueuePolicy, QueueLimits
from orchestratord.config_schema import ApiKeySettings, OrchestratorSettings
from orchestratord.quotas import ApiKey

__all__ = ["ConfigError", "OrchestratorConfig", "load_config"]


ROUTING = ("predicted", "least_loaded")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field."""


FINISHED_KEPT_JOURNALED, FINISHED_KEPT_IN_MEMORY = 1_000, 10_000


@dataclass(frozen=True, slots=True)
class OrchestratorConfig:
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    control_host: str = "127.0.0.1"
    control_port: int = 8090
    join_token_env: str = "LLORCH_JOIN_TOKEN"
    queue_capacity: int = 1024
    interactive_capacity: int = 1024
    batch_capacity: int = 1024
    full_queue_policy: FullQueuePolicy = "reject"
    reject_retry_after_ms: int = 1000
    max_body_bytes: int = 4 << 20
    max_prompt_bytes: int = 1 << 20  # also the limit on text to tokenize
    max_token_ids: int = 131_072  # token ids in one detokenize request (SEC-03)
    # Slow and idle HTTP connections (slowloris): a connection that has not sent a whole
    # request (headers and body) this long after its first byte is answered 408 and
    # closed; an idle keep-alive connection (no request in progress) is closed after
    # `http_keep_alive_s`, counted from its opening or its last response. Responses,
    # SSE streams included, are never cut by either.
    http_request_read_timeout_s: float = 30.0
    http_keep_alive_s: float = 5.0
    max_attempts: int = 3
    requeue_backoff_ms: int = 200
    max_queue_wait_ms: int = 300_000
    state_dir: str = str(Path.home() / ".local" / "share" / "llorch" / "orchestratord")
    idle_timeout_ms: int = 60_000  # a running task with no token for this long: DECODE_TIMEOUT
    api_keys: tuple[ApiKey, ...] = ()
    heartbeat_interval_ms: int = 2000
    lease_ms: int = 6000
    suspect_ttl_ms: int = 4000
    disconnect_grace_ms: int = 5000
    sse_heartbeat_ms: int = 15_000
    sse_replay_events: int = 8192
    finished_tasks_kept: int | None = None  # None: `finished_kept` decides
    # Request placement: `predicted` scores predicted finish time from measured rates
    # and each pool's prompt-prefix index (prefix affinity, PLC-03); `least_loaded`
    # ignores both (free slots, then pool id), the baseline bench/prefix_affinity.py
    # compares against.
    routing: str = "predicted"
    tls: TlsFiles | None = None
    insecure: bool = False  # allow a plaintext control link on a non-loopback address
    # Where clients reach this API, told to pool managers (`llorch join` prints it);
    # default: http://HTTP_HOST:PORT, with the control host for a wildcard HTTP host.
    public_url: str = ""
    # The job journal (REL-01..05): SQLite under state_dir. Accepted jobs, their state
    # changes and events, and idempotency keys, kept `journal_retention_s` after they end
    # (24 h: as long as an Idempotency-Key is honoured). `journal_sync: full` adds an
    # fsync per commit (power loss); `normal` survives any crash of the process.
    journal: bool = True
    journal_flush_ms: int = 1000  # running jobs' token events (an end carries its own)
    journal_sync: str = "normal"
    journal_retention_s: int = 86_400
    # SIGTERM (REL-06): stop admitting (503 SHUTTING_DOWN + Retry-After), give running
    # jobs this long to finish; queued ones stay in the journal for the next start.
    shutdown_grace_s: float = 30.0

    @property
    def finished_kept(self) -> int:
        """How many finished jobs the task table keeps in memory. With the journal, 1,000
        (`GET /v2/tasks`' largest page): the journal answers for older ones, and each
        kept job is ~15 objects the collector walks on every full pass (10,000 of them
        cost the gateway ~10 % CPU per token event at c=16, bench/README.md); without
        it, memory is all there is: 10,000."""
        if self.finished_tasks_kept is not None:
            return self.finished_tasks_kept
        return FINISHED_KEPT_JOURNALED if self.journal else FINISHED_KEPT_IN_MEMORY

    @property
    def join_token(self) -> str:
        return os.environ.get(self.join_token_env, "")

    def queue_limits(self) -> QueueLimits:
        return QueueLimits(
            capacity=self.queue_capacity,
            lane_capacity={"interactive": self.interactive_capacity, "batch": self.batch_capacity},
            policy=self.full_queue_policy,
            retry_after_ms=self.reject_retry_after_ms,
        )

    def validate(self) -> OrchestratorConfig:
        if self.full_queue_policy not in POLICIES:
            raise ConfigError(f"full_queue_policy must be one of {POLICIES}")
        if self.routing not in ROUTING:
            raise ConfigError(f"routing must be one of {ROUTING}")
        for name in (
            "queue_capacity",
            "interactive_capacity",
            "batch_capacity",
            "max_attempts",
            "heartbeat_interval_ms",
            "lease_ms",
            "max_body_bytes",
            "max_prompt_bytes",
            "max_token_ids",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("http_request_read_timeout_s", "http_keep_alive_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.finished_tasks_kept is not None and self.finished_tasks_kept < 0:
            raise ConfigError("finished_tasks_kept must not be negative")
        if self.journal_sync not in ("normal", "full"):
            raise ConfigError("journal_sync must be normal or full")
        if self.journal_flush_ms < 1 or self.journal_retention_s < 1:
            raise ConfigError("journal_flush_ms and journal_retention_s must be at least 1")
        if self.shutdown_grace_s < 0:
            raise ConfigError("shutdown_grace_s must not be negative")
        if self.lease_ms <= self.heartbeat_interval_ms:
            raise ConfigError("lease_ms must be longer than heartbeat_interval_ms")
        if not self.api_keys and not _loopback(self.http_host):
            raise ConfigError(
                f"refusing to serve {self.http_host} without api_keys: a "
                "non-loopback address needs client authentication (SEC-01)"
            )
        if not self.join_token:
            raise ConfigError(f"no join token: set the environment variable {self.join_token_env}")
        if self.tls is None and not _loopback(self.control_host) and not self.insecure:
            raise ConfigError(
                f"refusing a plaintext control link on {self.control_host}: configure tls "
                "(cert_file, key_file; ca_file and client_auth for mutual TLS) or set "
                "insecure: true (FLT-02)"
            )
        if self.tls is not None and self.tls.cert_file is None:
            raise ConfigError("tls: the control link needs cert_file and key_file")
        return self

    @property
    def plaintext_off_host(self) -> bool:
        """The control link leaves this machine without TLS (warned at every start)."""
        return self.tls is None and not _loopback(self.control_host)


def _loopback(host: str) -> bool:
    return is_loopback(host)


def _api_keys(entries: list[ApiKeySettings]) -> tuple[ApiKey, ...]:
    return tuple(
        ApiKey(**{**entry.model_dump(), "key_sha256": entry.key_sha256.lower()})
        for entry in entries
    )


def load_config(path: Path | None, **overrides: Any) -> OrchestratorConfig:
    """Read YAML (if given), apply keyword overrides, check types against
    `OrchestratorSettings` and then the semantic rules. ConfigError: one line naming the
    file, the key and what was expected."""
    source = str(path) if path is not None else ""
    raw: dict[str, Any] = {}
    try:
        if path is not None:
            loaded = read_yaml(path)
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"{path}: expected a mapping at the top level")
            raw.update(loaded or {})
        raw.update({k: v for k, v in overrides.items() if v is not None})
        settings = validate_file(OrchestratorSettings, raw, source)
        keys = list(settings.api_keys)
        if settings.api_keys_file is not None:
            keys += _keys_file(settings.api_keys_file, source)
        values = settings.model_dump(exclude={"api_keys", "api_keys_file", "tls"})
        values["state_dir"] = str(Path(settings.state_dir).expanduser())
        tls = parse_tls(settings.tls.model_dump() if settings.tls else None)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    except TlsConfigError as exc:
        raise ConfigError(_where(source, str(exc))) from None
    config = OrchestratorConfig(**values, api_keys=_api_keys(keys), tls=tls)
    try:
        return config.validate()
    except ConfigError as exc:
        raise ConfigError(_where(source, str(exc))) from None


def _where(source: str, message: str) -> str:
    return f"{source}: {message}" if source else message


def _keys_file(name: str, source: str) -> list[ApiKeySettings]:
    """`api_keys_file`: a YAML list of {name, key_sha256, ...}, or {api_keys: [...]}."""
    path = Path(name).expanduser()
    where = _where(source, "api_keys_file")
    try:
        loaded = read_yaml(path)
    except SettingsError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    if isinstance(loaded, dict) and set(loaded) == {"api_keys"}:
        loaded = loaded["api_keys"]
    if not isinstance(loaded, list):
        raise SettingsError(f"{where}: {path}: expected a list of api keys")
    return validate_file(_KeysFile, {"api_keys": loaded}, f"{where}: {path}").api_keys


class _KeysFile(Settings):
    api_keys: list[ApiKeySettings]
