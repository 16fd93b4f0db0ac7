"""The replica lifecycle as a pure state machine (POOL-03, POOL-04, POOL-09).

`transition(state, event, now, policy, jitter)` returns the next state and the actions
the supervisor must carry out; it does no I/O and reads no clock (`now` and `jitter`, a
number in [0, 1), are passed in).

    provisioning ─Start─► starting ─Health(loading)─► loading ─Health(ready)─► (warm-up)
         │                   │                           │            WarmedUp │
         ▼ Failed            └───────── Exited ──────────┴──► backoff ◄────────┤ ready
       failed ◄── breaker: more than `max_crashes` crashes within `crash_window_s`  │
                                        backoff ─RestartDue─► starting             │
    ready ─Drain─► draining ─Stop─► (kill) ─Exited─► stopped ◄──────── Stop ──────┘
                   draining ─Undrain─► ready (was ready) | loading (warms up again)

Back-off after a crash: `initial_backoff_s`, ×`factor` per crash, capped at
`max_backoff_s`, ±`jitter_ratio`; reset to the initial value once a replica has been
ready for `reset_after_s`. Busy is not dead: only `probe_failures_to_restart`
consecutive failed health probes (each with its own timeout) restart a ready engine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

__all__ = [
    "Action",
    "Drain",
    "Exited",
    "Health",
    "Kill",
    "Phase",
    "ProbeFailed",
    "ProvisionFailed",
    "ReplicaState",
    "RestartDue",
    "RestartPolicy",
    "ScheduleRestart",
    "Spawn",
    "Start",
    "Stop",
    "Undrain",
    "WarmUp",
    "WarmedUp",
    "transition",
]

Phase = Literal[
    "provisioning", "starting", "loading", "ready", "draining", "backoff", "stopped", "failed"
]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    initial_backoff_s: float = 1.0
    factor: float = 2.0
    max_backoff_s: float = 60.0
    reset_after_s: float = 600.0
    max_crashes: int = 5
    crash_window_s: float = 600.0
    jitter_ratio: float = 0.2
    probe_failures_to_restart: int = 3


@dataclass(frozen=True, slots=True)
class ReplicaState:
    phase: Phase = "provisioning"
    crashes: tuple[float, ...] = ()
    restarts: int = 0
    backoff_s: float = 0.0
    ready_since: float | None = None
    probe_failures: int = 0
    warming: bool = False
    stopping: bool = False
    last_error: str = ""


# -- events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    pass


@dataclass(frozen=True, slots=True)
class ProvisionFailed:
    error: str


@dataclass(frozen=True, slots=True)
class Health:
    state: str  # loading | ready | failed
    message: str = ""


@dataclass(frozen=True, slots=True)
class ProbeFailed:
    error: str


@dataclass(frozen=True, slots=True)
class WarmedUp:
    ok: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class Exited:
    code: int | None
    log_tail: str = ""


@dataclass(frozen=True, slots=True)
class RestartDue:
    pass


@dataclass(frozen=True, slots=True)
class Drain:
    pass


@dataclass(frozen=True, slots=True)
class Undrain:
    pass


@dataclass(frozen=True, slots=True)
class Stop:
    pass


Event = (
    Start
    | ProvisionFailed
    | Health
    | ProbeFailed
    | WarmedUp
    | Exited
    | RestartDue
    | Drain
    | Undrain
    | Stop
)

# -- actions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spawn:
    pass


@dataclass(frozen=True, slots=True)
class WarmUp:
    pass


@dataclass(frozen=True, slots=True)
class Kill:
    reason: str


@dataclass(frozen=True, slots=True)
class ScheduleRestart:
    delay_s: float


Action = Spawn | WarmUp | Kill | ScheduleRestart
_LIVE: frozenset[Phase] = frozenset({"starting", "loading", "ready", "draining"})


def transition(
    state: ReplicaState, event: Event, *, now: float, policy: RestartPolicy, jitter: float
) -> tuple[ReplicaState, list[Action]]:
    """The next state and the actions to carry out for one event."""
    match event:
        case Start() if state.phase == "provisioning":
            return replace(state, phase="starting"), [Spawn()]
        case ProvisionFailed(error):
            return replace(state, phase="failed", last_error=error), []
        case Health() if state.phase in ("starting", "loading") and not state.stopping:
            return _health_while_starting(state, event)
        case Health("ready") if state.phase in ("ready", "draining"):
            return replace(state, probe_failures=0), []
        case Health("failed", message) if state.phase in ("ready", "draining"):
            return replace(state, last_error=message), [Kill(f"engine reports failed: {message}")]
        case ProbeFailed(error) if state.phase in _LIVE:
            return _probe_failed(state, error, policy)
        case WarmedUp(ok, error) if (
            state.phase == "loading" and state.warming and not state.stopping
        ):
            if ok:
                return replace(
                    state, phase="ready", warming=False, ready_since=now, last_error=""
                ), []
            failed = replace(state, warming=False, last_error=f"warm-up failed: {error}")
            return failed, [Kill("warm-up failed")]
        case Exited(code, tail):
            return _exited(state, code, tail, now, policy, jitter)
        case RestartDue() if state.phase == "backoff" and not state.stopping:
            return replace(state, phase="starting", restarts=state.restarts + 1), [Spawn()]
        case Drain() if state.phase in _LIVE:
            return replace(state, phase="draining"), []
        case Undrain() if state.phase == "draining" and not state.stopping:
            return _undrain(state), []
        case Stop():
            return _stop(state)
    return state, []


def _health_while_starting(state: ReplicaState, event: Health) -> tuple[ReplicaState, list[Action]]:
    if event.state == "failed":
        return replace(state, last_error=event.message), [Kill(f"engine failed: {event.message}")]
    loading = replace(state, phase="loading", probe_failures=0)
    if event.state == "ready" and not state.warming:
        return replace(loading, warming=True), [WarmUp()]
    return loading, []


def _probe_failed(
    state: ReplicaState, error: str, policy: RestartPolicy
) -> tuple[ReplicaState, list[Action]]:
    failures = state.probe_failures + 1
    next_state = replace(state, probe_failures=failures)
    if failures >= policy.probe_failures_to_restart and state.phase in ("ready", "draining"):
        reason = f"{failures} health probes failed: {error}"
        return replace(next_state, last_error=reason), [Kill(reason)]
    return next_state, []


def _exited(
    state: ReplicaState,
    code: int | None,
    tail: str,
    now: float,
    policy: RestartPolicy,
    jitter: float,
) -> tuple[ReplicaState, list[Action]]:
    if state.stopping or state.phase in ("stopped", "failed"):
        return replace(state, phase="stopped" if state.stopping else state.phase), []
    error = f"engine exited with code {code}" + (f": {tail}" if tail else "")
    crashes = (*(t for t in state.crashes if now - t <= policy.crash_window_s), now)
    if len(crashes) > policy.max_crashes:
        error = (
            f"crash loop: {len(crashes)} crashes within {policy.crash_window_s:.0f} s; "
            f"last: {error}"
        )
        return replace(state, phase="failed", crashes=crashes, last_error=error), []
    healthy_long = state.ready_since is not None and now - state.ready_since >= policy.reset_after_s
    base = (
        policy.initial_backoff_s
        if healthy_long or not state.backoff_s
        else min(state.backoff_s * policy.factor, policy.max_backoff_s)
    )
    delay = base * (1.0 + policy.jitter_ratio * (2.0 * jitter - 1.0))
    next_state = replace(
        state,
        phase="backoff",
        crashes=crashes,
        backoff_s=base,
        ready_since=None,
        probe_failures=0,
        warming=False,
        last_error=error,
    )
    return next_state, [ScheduleRestart(delay)]


def _undrain(state: ReplicaState) -> ReplicaState:
    """Back in service: a replica that was ready is ready again; one drained while it
    started goes on loading and is warmed up at its next `ready` probe (a warm-up that
    ended while it drained was ignored)."""
    if state.ready_since is not None:
        return replace(state, phase="ready")
    return replace(state, phase="loading", warming=False)


def _stop(state: ReplicaState) -> tuple[ReplicaState, list[Action]]:
    if state.phase in _LIVE:
        return replace(state, stopping=True), [Kill("stop requested")]
    if state.phase in ("stopped", "failed"):
        return replace(state, stopping=True), []
    return replace(state, phase="stopped", stopping=True), []
