"""Who may see a job (SEC-05): one rule for the job routes, `GET /v2/tasks` and the
status page.

A job belongs to the API key that submitted it (its name, `spec.api_key`, kept by the
journal across restarts; never the key itself). A client key sees only its own jobs;
an admin key, or any caller when no keys are configured (loopback), sees every job. A
job the caller may not see is answered as if it did not exist: `GET /v2/tasks/{id}` and
its events are 404 `NOT_FOUND`, and cancel is the 204 of an unknown id (API-05), which
cancels nothing, so a key cannot learn whether another key's job id exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestratord.quotas import Quotas
from orchestratord.tasks import TaskRecord

__all__ = ["Viewer", "viewer_of"]


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who reads: the key's name (None without keys) and whether every job is theirs
    to see (an admin key, or no keys configured)."""

    key_name: str | None
    sees_all: bool

    def sees(self, record: TaskRecord) -> bool:
        return self.sees_all or (self.key_name is not None and record.spec.api_key == self.key_name)


def viewer_of(quotas: Quotas, key_name: str | None) -> Viewer:
    if not quotas.enabled:
        return Viewer(None, sees_all=True)
    key = quotas.key(key_name) if key_name is not None else None
    return Viewer(key_name, sees_all=key is not None and key.role == "admin")
