"""The replica lifecycle state machine (POOL-03, POOL-04, POOL-09), pure."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from pool_managerd import lifecycle as lc

POLICY = lc.RestartPolicy(
    initial_backoff_s=1.0,
    factor=2.0,
    max_backoff_s=8.0,
    reset_after_s=600.0,
    max_crashes=3,
    crash_window_s=100.0,
    jitter_ratio=0.0,
    probe_failures_to_restart=3,
)


def run(
    events: list[lc.Event],
    *,
    start: lc.ReplicaState | None = None,
    times: list[float] | None = None,
) -> tuple[lc.ReplicaState, list[list[lc.Action]]]:
    state = start or lc.ReplicaState()
    actions = []
    for index, event in enumerate(events):
        now = times[index] if times else float(index)
        state, done = lc.transition(state, event, now=now, policy=POLICY, jitter=0.5)
        actions.append(done)
    return state, actions


READY_PATH: list[lc.Event] = [lc.Start(), lc.Health("ready"), lc.WarmedUp(True)]


def test_a_replica_is_ready_only_after_health_and_a_successful_warm_up() -> None:
    state, actions = run([lc.Start(), lc.Health("loading"), lc.Health("ready")])
    assert state.phase == "loading"
    assert actions == [[lc.Spawn()], [], [lc.WarmUp()]]
    state, _ = run([lc.WarmedUp(True)], start=state)
    assert state.phase == "ready"


def test_warm_up_is_started_once_even_when_health_repeats() -> None:
    _, actions = run([lc.Start(), lc.Health("ready"), lc.Health("ready"), lc.Health("ready")])
    assert sum(a.count(lc.WarmUp()) for a in actions) == 1


def test_a_failed_warm_up_stops_the_engine_with_the_reason() -> None:
    state, actions = run([lc.Start(), lc.Health("ready"), lc.WarmedUp(False, "timeout")])
    assert actions[-1] == [lc.Kill("warm-up failed")]
    assert "timeout" in state.last_error and state.phase == "loading"


def test_a_crash_schedules_a_restart_with_exponential_backoff_up_to_the_cap() -> None:
    delays = []
    state = run(READY_PATH)[0]
    for crash in range(5):
        state, actions = lc.transition(
            state,
            lc.Exited(1, "boom"),
            now=10.0 * crash,
            policy=replace(POLICY, max_crashes=99),
            jitter=0.5,
        )
        (restart,) = actions
        assert isinstance(restart, lc.ScheduleRestart)
        delays.append(restart.delay_s)
        state, respawn = lc.transition(
            state, lc.RestartDue(), now=10.0 * crash + 1, policy=POLICY, jitter=0.5
        )
        assert respawn == [lc.Spawn()]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert "boom" in state.last_error and state.restarts == 5


def test_jitter_spreads_the_delay_within_its_ratio() -> None:
    policy = lc.RestartPolicy(jitter_ratio=0.2)
    state = run(READY_PATH)[0]
    low = lc.transition(state, lc.Exited(1), now=5, policy=policy, jitter=0.0)[1][0]
    high = lc.transition(state, lc.Exited(1), now=5, policy=policy, jitter=0.999)[1][0]
    assert isinstance(low, lc.ScheduleRestart) and isinstance(high, lc.ScheduleRestart)
    assert low.delay_s == 0.8 and 1.19 < high.delay_s < 1.2


def test_backoff_resets_after_a_long_healthy_run() -> None:
    state = lc.ReplicaState(phase="ready", backoff_s=8.0, ready_since=0.0)
    _, actions = lc.transition(state, lc.Exited(1), now=700.0, policy=POLICY, jitter=0.5)
    assert actions == [lc.ScheduleRestart(1.0)]


def test_too_many_crashes_in_the_window_open_the_breaker() -> None:
    state = run(READY_PATH)[0]
    for now in (10.0, 20.0, 30.0):
        state, _ = lc.transition(state, lc.Exited(1), now=now, policy=POLICY, jitter=0.5)
        state, _ = lc.transition(state, lc.RestartDue(), now=now + 1, policy=POLICY, jitter=0.5)
    state, actions = lc.transition(state, lc.Exited(1), now=40.0, policy=POLICY, jitter=0.5)
    assert state.phase == "failed" and actions == []
    assert "crash loop" in state.last_error
    assert lc.transition(state, lc.RestartDue(), now=50, policy=POLICY, jitter=0.5)[0] == state


def test_old_crashes_fall_out_of_the_window() -> None:
    state = lc.ReplicaState(phase="ready", crashes=(0.0, 1.0, 2.0), backoff_s=4.0)
    state, actions = lc.transition(state, lc.Exited(1), now=500.0, policy=POLICY, jitter=0.5)
    assert state.phase == "backoff" and state.crashes == (500.0,)
    assert actions == [lc.ScheduleRestart(8.0)]


def test_a_busy_engine_is_not_restarted_until_enough_probes_fail() -> None:
    state = run(READY_PATH)[0]
    for _ in range(POLICY.probe_failures_to_restart - 1):
        state, actions = lc.transition(
            state, lc.ProbeFailed("timeout"), now=1, policy=POLICY, jitter=0.5
        )
        assert actions == []
    state, _ = lc.transition(state, lc.Health("ready"), now=2, policy=POLICY, jitter=0.5)
    assert state.probe_failures == 0
    for _ in range(POLICY.probe_failures_to_restart):
        state, actions = lc.transition(
            state, lc.ProbeFailed("timeout"), now=3, policy=POLICY, jitter=0.5
        )
    assert len(actions) == 1 and isinstance(actions[0], lc.Kill)


def test_stop_kills_a_live_engine_and_its_exit_ends_in_stopped_without_restart() -> None:
    state, actions = run([*READY_PATH, lc.Stop(), lc.Exited(0)])
    assert actions[-2] == [lc.Kill("stop requested")]
    assert actions[-1] == [] and state.phase == "stopped"


def test_drain_keeps_the_engine_until_stop() -> None:
    state, actions = run([*READY_PATH, lc.Drain()])
    assert state.phase == "draining" and actions[-1] == []


def test_undrain_puts_a_drained_ready_replica_back_in_service_without_a_restart() -> None:
    state, actions = run([*READY_PATH, lc.Drain(), lc.Undrain()])
    assert state.phase == "ready" and actions[-1] == []


def test_a_replica_drained_while_warming_up_warms_up_again_after_undrain() -> None:
    # The warm-up's answer arrived while draining and was dropped: a new one is needed.
    events: list[lc.Event] = [lc.Start(), lc.Health("ready"), lc.Drain(), lc.WarmedUp(True)]
    events.append(lc.Undrain())
    state, _ = run(events)
    assert state.phase == "loading" and not state.warming
    state, actions = run([lc.Health("ready"), lc.WarmedUp(True)], start=state)
    assert actions[0] == [lc.WarmUp()] and state.phase == "ready"


def test_undrain_does_not_revive_a_replica_that_is_stopping() -> None:
    state, _ = run([*READY_PATH, lc.Drain(), lc.Stop(), lc.Undrain()])
    assert state.stopping and state.phase == "draining"
    state, actions = run([lc.Exited(0)], start=state)
    assert state.phase == "stopped" and actions == [[]]


def test_provisioning_failure_is_reported_and_nothing_starts() -> None:
    state, actions = run([lc.ProvisionFailed("digest mismatch")])
    assert state.phase == "failed" and state.last_error == "digest mismatch" and actions == [[]]


events_st = st.lists(
    st.sampled_from(
        [
            lc.Start(),
            lc.Health("loading"),
            lc.Health("ready"),
            lc.Health("failed", "x"),
            lc.ProbeFailed("t"),
            lc.WarmedUp(True),
            lc.WarmedUp(False, "x"),
            lc.Exited(1),
            lc.RestartDue(),
            lc.Drain(),
            lc.Undrain(),
            lc.Stop(),
        ]
    ),
    max_size=60,
)


@given(events_st)
def test_failed_and_stopped_are_final(events: list[lc.Event]) -> None:
    """Property: once failed or stopped, no event brings a replica back or spawns it."""
    state = lc.ReplicaState()
    final_seen = False
    for index, event in enumerate(events):
        state, actions = lc.transition(state, event, now=float(index), policy=POLICY, jitter=0.3)
        if final_seen:
            assert state.phase in ("failed", "stopped")
            assert lc.Spawn() not in actions and lc.WarmUp() not in actions
        final_seen = final_seen or state.phase in ("failed", "stopped")


@given(events_st)
def test_ready_is_reached_only_through_a_warm_up(events: list[lc.Event]) -> None:
    state = lc.ReplicaState()
    for index, event in enumerate(events):
        before = state
        state, _ = lc.transition(state, event, now=float(index), policy=POLICY, jitter=0.3)
        if state.phase == "ready" and before.phase != "ready":
            warmed = event == lc.WarmedUp(True) and before.warming
            back_in_service = event == lc.Undrain() and before.ready_since is not None
            assert warmed or back_in_service


def test_a_warm_up_result_nobody_asked_for_does_not_make_a_loading_replica_ready() -> None:
    # Found by the property above on a clean CI run: a stale WarmedUp (say, of the
    # previous incarnation) arrived while the new engine still loaded.
    state, actions = run([lc.Start(), lc.Health("loading"), lc.WarmedUp(True)])
    assert state.phase == "loading" and not state.warming
    assert actions[-1] == []
