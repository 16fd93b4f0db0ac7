"""API keys, their roles and per-key limits (SEC-01, SEC-05, ADM-05).

Keys are configured by the sha256 of the bearer token, never the token itself; a
presented token is hashed and compared with every configured digest in constant time.
Each key has a role (`http.auth` says which routes need which): `admin` may do
everything, `client` jobs and reads; a key configured without a role is `client`, the
least privilege (`config` documents it).
Per key: concurrent tasks, requests per minute and tokens per minute (prompt + output
tokens of finished tasks), each optional. `Quotas.admit` refuses with `QUOTA_EXCEEDED`
and a `retry_after_ms` that says when the limit will allow the request: when the oldest
request or token leaves the one-minute window, or after one second for concurrency.
Time is passed in (monotonic seconds).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from orchestratord.errors import ApiError

__all__ = ["DEFAULT_ROLE", "ROLES", "ApiKey", "KeyUsage", "Quotas", "Role", "permits"]

Role = Literal["admin", "client"]
ROLES: tuple[Role, ...] = ("admin", "client")
DEFAULT_ROLE: Role = "client"


def permits(role: Role, needed: Role) -> bool:
    """Whether a key of `role` may use a route that needs `needed` (admin is a superset)."""
    return role == "admin" or needed == "client"


_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    key_sha256: str
    max_concurrent: int | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    role: Role = DEFAULT_ROLE

    def __repr__(self) -> str:  # the digest is not secret, but keep logs short
        return f"ApiKey(name={self.name!r}, role={self.role!r})"


@dataclass(slots=True)
class KeyUsage:
    running: int = 0
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_sum: int = 0

    def trim(self, now: float) -> None:
        while self.requests and now - self.requests[0] >= _WINDOW_S:
            self.requests.popleft()
        while self.tokens and now - self.tokens[0][0] >= _WINDOW_S:
            self.token_sum -= self.tokens.popleft()[1]


class Quotas:
    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        self._keys = keys
        self._usage: dict[str, KeyUsage] = {k.name: KeyUsage() for k in keys}

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, token: str) -> ApiKey | None:
        """The key a bearer token belongs to; every digest is compared (constant time)."""
        digest = hashlib.sha256(token.encode()).hexdigest().encode()
        found = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.key_sha256.lower().encode()):
                found = key
        return found

    def key(self, name: str) -> ApiKey | None:
        return next((k for k in self._keys if k.name == name), None)

    def admit(self, key: ApiKey, now: float) -> None:
        """Count one new request, or raise QUOTA_EXCEEDED with when to retry."""
        usage = self._usage[key.name]
        usage.trim(now)
        if key.max_concurrent is not None and usage.running >= key.max_concurrent:
            _refuse(key, f"{usage.running} tasks running, limit {key.max_concurrent}", 1000)
        if key.requests_per_minute is not None and len(usage.requests) >= key.requests_per_minute:
            wait = _WINDOW_S - (now - usage.requests[0])
            _refuse(key, f"{key.requests_per_minute} requests per minute", wait * 1000)
        if key.tokens_per_minute is not None and usage.token_sum >= key.tokens_per_minute:
            wait = _WINDOW_S - (now - usage.tokens[0][0])
            _refuse(key, f"{key.tokens_per_minute} tokens per minute", wait * 1000)
        usage.requests.append(now)
        usage.running += 1

    def finished(self, key_name: str, now: float, tokens: int) -> None:
        usage = self._usage.get(key_name)
        if usage is None:
            return
        usage.running = max(0, usage.running - 1)
        if tokens:
            usage.tokens.append((now, tokens))
            usage.token_sum += tokens


def _refuse(key: ApiKey, what: str, retry_ms: float) -> None:
    raise ApiError(
        "QUOTA_EXCEEDED",
        f"API key {key.name} is over its limit ({what})",
        retriable=True,
        retry_after_ms=max(1, int(retry_ms)),
        policy_label="quota",
    )
