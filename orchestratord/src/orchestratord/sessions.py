"""Sessions (API-10): short-lived conversation contexts with a TTL, a turn limit, optional
token and time budgets, and affinity to the pool whose KV cache is warm for them.

A session belongs to the API key that opened it: its id is looked up among that key's
sessions only (`owner`: the key's name; None without keys), so another key naming the same
id has a session of its own and can neither read, end, use up nor steer this one.

A session is created by the first task that names it and expires `ttl_ms` after its last
use; an expired session is forgotten and the next task starts a fresh one. Admission asks
`check` before queueing (turn limit and budgets give `QUOTA_EXCEEDED`); a completed turn
calls `record_turn`, which moves the affinity to the pool that served it. The cache is
warm only while that pool's replica is the incarnation that served the turn. Time is
passed in (monotonic seconds). Lives on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestratord.errors import ApiError

__all__ = ["Session", "SessionOptions", "SessionStore"]


@dataclass(frozen=True, slots=True)
class SessionOptions:
    ttl_ms: int = 600_000
    max_turns: int = 8
    tokens_budget: int | None = None
    time_budget_ms: int | None = None


@dataclass(slots=True)
class Session:
    session_id: str
    owner: str | None  # the name of the key that opened it
    options: SessionOptions
    last_used: float
    turns: int = 0
    tokens_used: int = 0
    time_used_ms: float = 0.0
    pool_id: str | None = None
    replica: int | None = None
    incarnation: int = 0

    def ttl_remaining_ms(self, now: float) -> int:
        return max(0, int(self.options.ttl_ms - (now - self.last_used) * 1000.0))

    def budgets_remaining(self) -> tuple[int | None, float | None]:
        tokens = self.options.tokens_budget
        time_ms = self.options.time_budget_ms
        return (
            None if tokens is None else max(0, tokens - self.tokens_used),
            None if time_ms is None else max(0.0, time_ms - self.time_used_ms),
        )


_Key = tuple[str | None, str]  # (owner, session id)


class SessionStore:
    def __init__(self, defaults: SessionOptions) -> None:
        self._defaults = defaults
        self._sessions: dict[_Key, Session] = {}

    def get(self, owner: str | None, session_id: str, now: float) -> Session | None:
        """`owner`'s live session of that id (None: none, or it expired)."""
        key = (owner, session_id)
        session = self._sessions.get(key)
        if session is not None and session.ttl_remaining_ms(now) == 0:
            del self._sessions[key]
            return None
        return session

    def open(
        self, owner: str | None, session_id: str, now: float, options: SessionOptions | None
    ) -> Session:
        """`owner`'s live session, or a new one with `options` (else the defaults)."""
        session = self.get(owner, session_id, now)
        if session is None:
            session = Session(session_id, owner, options or self._defaults, now)
            self._sessions[(owner, session_id)] = session
        return session

    def check(self, session: Session, now: float) -> None:
        """ApiError(QUOTA_EXCEEDED) when the session may not take another turn."""
        retry_ms = session.ttl_remaining_ms(now)
        if session.turns >= session.options.max_turns:
            raise ApiError(
                "QUOTA_EXCEEDED",
                f"session {session.session_id} reached its limit of "
                f"{session.options.max_turns} turns",
                retry_after_ms=retry_ms,
                policy_label="session-turns",
            )
        tokens_left, time_left = session.budgets_remaining()
        if tokens_left == 0 or time_left == 0:
            kind = "token" if tokens_left == 0 else "time"
            raise ApiError(
                "QUOTA_EXCEEDED",
                f"session {session.session_id} used its {kind} budget",
                retry_after_ms=retry_ms,
                policy_label=f"session-{kind}s",
            )

    def record_turn(
        self,
        owner: str | None,
        session_id: str,
        now: float,
        *,
        pool_id: str,
        replica: int,
        incarnation: int,
        tokens: int,
        time_ms: float,
    ) -> None:
        session = self._sessions.get((owner, session_id))
        if session is None:
            return
        session.turns += 1
        session.tokens_used += tokens
        session.time_used_ms += time_ms
        session.last_used = now
        session.pool_id, session.replica, session.incarnation = pool_id, replica, incarnation

    def delete(self, owner: str | None, session_id: str) -> None:
        self._sessions.pop((owner, session_id), None)

    def sweep(self, now: float) -> int:
        """Forget expired sessions; returns how many."""
        expired = [k for k, v in self._sessions.items() if v.ttl_remaining_ms(now) == 0]
        for key in expired:
            del self._sessions[key]
        return len(expired)

    def __len__(self) -> int:
        return len(self._sessions)
