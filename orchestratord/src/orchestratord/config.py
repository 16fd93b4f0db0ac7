"""orchestratord configuration: one YAML file plus environment variables for secrets.

The join token that pool managers present is read from the environment variable named
by `join_token_env` (default `LLORCH_JOIN_TOKEN`), never from the file, so config files
can be shared and committed. Durations are in milliseconds unless the name says `_s`.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from orchestratord.admission import POLICIES, FullQueuePolicy, QueueLimits
from orchestratord.quotas import ApiKey

__all__ = ["ConfigError", "OrchestratorConfig", "load_config"]


ROUTING = ("predicted", "least_loaded")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field."""


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
    max_prompt_bytes: int = 1 << 20
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
    finished_tasks_kept: int = 10_000
    # Request placement: `predicted` scores predicted finish time from measured rates
    # and each pool's prompt-prefix index (prefix affinity, PLC-03); `least_loaded`
    # ignores both (free slots, then pool id), the baseline bench/prefix_affinity.py
    # compares against.
    routing: str = "predicted"

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
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.lease_ms <= self.heartbeat_interval_ms:
            raise ConfigError("lease_ms must be longer than heartbeat_interval_ms")
        if not self.api_keys and not _loopback(self.http_host):
            raise ConfigError(
                f"refusing to serve {self.http_host} without api_keys: a "
                "non-loopback address needs client authentication (SEC-01)"
            )
        if not self.join_token:
            raise ConfigError(f"no join token: set the environment variable {self.join_token_env}")
        return self


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _api_keys(raw: Any) -> tuple[ApiKey, ...]:
    if not isinstance(raw, list):
        raise ConfigError("api_keys must be a list")
    keys = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not {"name", "key_sha256"} <= set(item):
            raise ConfigError(f"api_keys[{index}] needs name and key_sha256")
        digest = str(item["key_sha256"]).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"api_keys[{index}].key_sha256 must be 64 hex characters")
        try:
            keys.append(ApiKey(**{**item, "key_sha256": digest}))
        except TypeError as exc:
            raise ConfigError(f"api_keys[{index}]: {exc}") from exc
    return tuple(keys)


def load_config(path: Path | None, **overrides: Any) -> OrchestratorConfig:
    """Read YAML (if given), apply keyword overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        raw.update(loaded)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(OrchestratorConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(unknown)}")
    try:
        if "api_keys" in raw:
            raw["api_keys"] = _api_keys(raw["api_keys"])
        return OrchestratorConfig(**raw).validate()
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
