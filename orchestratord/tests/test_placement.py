"""Request placement: feasibility with reasons, scoring, tie-break (PLC-01..03, PLC-05)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import find, given
from hypothesis import strategies as st
from orchestratord.placement import (
    CHECKS,
    CycleViews,
    JobNeeds,
    Overrides,
    Placed,
    PoolView,
    ReplicaView,
    Unplaceable,
    assume,
    feasible_ever,
    place,
)


def pool(pool_id: str = "a", **changes: Any) -> PoolView:
    base = PoolView(
        pool_id=pool_id,
        host_id="h1",
        engine="llamacpp-inproc",
        model_id="tiny",
        model_aliases=frozenset({"default"}),
        model_digest="d1",
        ctx=2048,
        features=frozenset({"completion", "chat"}),
        ready=True,
        draining=False,
        lease_fresh=True,
        replicas=(ReplicaView(0, True, 1, 1),),
    )
    return replace(base, **changes)


def needs(**changes: Any) -> JobNeeds:
    return replace(
        JobNeeds(model="tiny", tokens=100, features=frozenset({"completion"})), **changes
    )


BUSY = (ReplicaView(0, True, 1, 0),)


@pytest.mark.parametrize(
    ("job", "candidate", "check"),
    [
        (needs(overrides=Overrides(avoid_pools=frozenset({"a"}))), pool(), "avoid"),
        (needs(overrides=Overrides(pin_pool_id="b")), pool(), "pin"),
        (
            needs(overrides=Overrides(prefer_pools=frozenset({"b"}), allow_fallback=False)),
            pool(),
            "prefer_only",
        ),
        (needs(model="other"), pool(), "model"),
        (needs(digest="d2"), pool(), "digest"),
        (needs(engine="vllm"), pool(), "engine"),
        (needs(tokens=4096), pool(), "context"),
        (needs(features=frozenset({"grammar"})), pool(), "features"),
        (needs(), pool(lease_fresh=False), "lease"),
        (needs(), pool(ready=False), "ready"),
        (needs(), pool(draining=True), "draining"),
        (needs(), pool(replicas=BUSY), "slots"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_each_infeasible_pool_is_rejected_with_the_check_that_failed(
    job: JobNeeds, candidate: PoolView, check: str
) -> None:
    decision = place(job, [candidate])
    assert isinstance(decision, Unplaceable)
    (rejection,) = decision.rejections
    assert rejection.check == check
    assert rejection.pool_id == candidate.pool_id
    assert rejection.wanted and rejection.available


def test_a_model_alias_is_served_like_the_catalog_id() -> None:
    assert isinstance(place(needs(model="default"), [pool()]), Placed)


def test_only_dynamic_failures_make_a_job_wait_rather_than_fail() -> None:
    waiting = place(needs(), [pool(replicas=BUSY)])
    hopeless = place(needs(model="other"), [pool()])
    assert isinstance(waiting, Unplaceable) and waiting.transient
    assert isinstance(hopeless, Unplaceable) and not hopeless.transient


def test_the_pool_with_most_free_slots_wins_and_ties_go_to_the_lowest_id() -> None:
    two_free = (ReplicaView(0, True, 2, 2),)
    assert place(needs(), [pool("b"), pool("a")]) == place(needs(), [pool("a"), pool("b")])
    assert place(needs(), [pool("b"), pool("a")]).pool_id == "a"  # type: ignore[union-attr]
    assert place(needs(), [pool("a"), pool("b", replicas=two_free)]).pool_id == "b"  # type: ignore[union-attr]


def test_preferred_pools_win_over_free_slots() -> None:
    two_free = (ReplicaView(0, True, 2, 2),)
    job = needs(overrides=Overrides(prefer_pools=frozenset({"a"})))
    decision = place(job, [pool("a"), pool("b", replicas=two_free)])
    assert isinstance(decision, Placed) and decision.pool_id == "a"


def test_placements_in_one_cycle_spread_over_pools_by_free_slots() -> None:
    pools: tuple[PoolView, ...] = (pool("a"), pool("b"))
    first = place(needs(), pools)
    assert isinstance(first, Placed)
    pools = assume(pools, first)
    second = place(needs(), pools)
    assert isinstance(second, Placed)
    assert {first.pool_id, second.pool_id} == {"a", "b"}
    assert isinstance(place(needs(), assume(pools, second)), Unplaceable)


def test_the_sessions_warm_pool_wins_over_free_slots() -> None:
    two_free = (ReplicaView(0, True, 2, 2),)
    decision = place(needs(session_pool="a"), [pool("a"), pool("b", replicas=two_free)])
    assert isinstance(decision, Placed) and decision.pool_id == "a"


def test_a_pool_holding_the_prompt_prefix_is_predicted_to_finish_first() -> None:
    job = needs(tokens=1100, max_tokens=100, prefix_keys=(11, 12, 13, 14))
    warm = pool(
        "b",
        prefix_keys=frozenset({11, 12, 13}),
        prefill_tokens_per_s=1000.0,
        decode_tokens_per_s=50.0,
    )
    cold = pool("a", prefill_tokens_per_s=1000.0, decode_tokens_per_s=50.0)
    decision = place(job, [cold, warm])
    assert isinstance(decision, Placed) and decision.pool_id == "b"
    scores = dict(decision.scores)
    assert scores["predicted_ms"] == -(250.0 + 2000.0)  # a quarter of 1000 prompt tokens


def test_a_long_uncached_prompt_avoids_the_pool_busy_with_other_sequences() -> None:
    job = needs(tokens=1100, max_tokens=10, prefix_keys=(21, 22, 23, 24))
    rates = {"prefill_tokens_per_s": 1000.0, "decode_tokens_per_s": 50.0}
    busy = pool("a", replicas=(ReplicaView(0, True, 2, 1),), **rates)
    idle = pool("b", replicas=(ReplicaView(0, True, 2, 2),), **rates)
    decision = place(job, [busy, idle])
    assert isinstance(decision, Placed) and decision.pool_id == "b"
    # The busy pool's prefill is shared with its running sequence: predicted twice as long.
    busy_alone = place(job, [busy])
    assert isinstance(busy_alone, Placed)
    assert dict(busy_alone.scores)["predicted_ms"] == -(2 * 1090.0 + 200.0)


def test_a_busy_pool_holding_the_prefix_still_beats_an_idle_cold_one() -> None:
    job = needs(tokens=1100, max_tokens=10, prefix_keys=(31, 32, 33, 34))
    rates = {"prefill_tokens_per_s": 1000.0, "decode_tokens_per_s": 50.0}
    warm_busy = pool(
        "a", replicas=(ReplicaView(0, True, 2, 1),), prefix_keys=frozenset({31, 32, 33}), **rates
    )
    cold_idle = pool("b", replicas=(ReplicaView(0, True, 2, 2),), **rates)
    decision = place(job, [warm_busy, cold_idle])
    assert isinstance(decision, Placed) and decision.pool_id == "a"


def test_the_measured_faster_pool_wins_and_an_unmeasured_one_is_not_starved() -> None:
    fast = pool("b", decode_tokens_per_s=100.0, prefill_tokens_per_s=1000.0)
    slow = pool("a", decode_tokens_per_s=25.0, prefill_tokens_per_s=1000.0)
    assert place(needs(max_tokens=100), [slow, fast]).pool_id == "b"  # type: ignore[union-attr]
    busy_fast = replace(fast, replicas=BUSY)
    new = pool("c")  # predicted at the average rate of the measured pools (62.5 tokens/s)
    decision = place(needs(max_tokens=100), [slow, busy_fast, new])
    assert isinstance(decision, Placed) and decision.pool_id == "c"


def test_the_replica_with_most_free_slots_is_chosen() -> None:
    replicas = (ReplicaView(0, True, 2, 1), ReplicaView(1, True, 2, 2), ReplicaView(2, False, 2, 2))
    decision = place(needs(), [pool(replicas=replicas)])
    assert isinstance(decision, Placed) and decision.replica == 1


def test_feasible_ever_ignores_readiness_and_capacity() -> None:
    assert feasible_ever(needs(), [pool(ready=False, replicas=BUSY)]) is None
    blocked = feasible_ever(needs(tokens=10_000), [pool()])
    assert blocked is not None and blocked.rejections[0].check == "context"


def test_the_pipeline_lists_every_check_once_with_capacity_last() -> None:
    names = [name for name, _ in CHECKS]
    assert len(names) == len(set(names))
    assert names[-1] == "slots"


# -- properties (PLC-05) -------------------------------------------------------------------


def mostly(value: object, other: object) -> st.SearchStrategy[Any]:
    """Three times `value` for every `other`: keeps most generated pools feasible."""
    return st.sampled_from([value, value, value, other])


replica_st = st.builds(
    lambda index, ready, total, used: ReplicaView(index, ready, total, max(0, total - used)),
    st.integers(0, 3),
    mostly(True, False),
    st.integers(1, 4),
    st.integers(0, 4),
)
pool_st = st.builds(
    lambda pid, ready, draining, lease, ctx, model, replicas, decode, prefill, keys: pool(
        f"p{pid}",
        ready=ready,
        draining=draining,
        lease_fresh=lease,
        ctx=ctx,
        model_id=model,
        replicas=tuple({r.index: r for r in replicas}.values()),
        decode_tokens_per_s=decode,
        prefill_tokens_per_s=prefill,
        prefix_keys=frozenset(keys),
    ),
    st.integers(0, 9),
    mostly(True, False),
    mostly(False, True),
    mostly(True, False),
    st.sampled_from([512, 2048, 8192, 16384]),
    mostly("tiny", "other"),
    st.lists(replica_st, min_size=1, max_size=3),
    st.sampled_from([0.0, 20.0, 80.0]),
    st.sampled_from([0.0, 500.0, 2000.0]),
    st.sets(st.integers(0, 5), max_size=4),
)
pools_st = st.lists(pool_st, max_size=8).map(lambda ps: list({p.pool_id: p for p in ps}.values()))
needs_st = st.builds(
    lambda tokens, model, pin, avoid, session, keys: needs(
        tokens=tokens,
        model=model,
        max_tokens=min(tokens, 64),
        session_pool=session,
        prefix_keys=tuple(keys),
        overrides=Overrides(pin_pool_id=pin, avoid_pools=frozenset(avoid)),
    ),
    st.one_of(st.integers(1, 1500), st.integers(1, 9000)),
    st.sampled_from(["tiny", "tiny", "default", "other"]),
    st.sampled_from([None, None, None, None, "p0", "p3"]),
    st.lists(st.sampled_from([f"p{i}" for i in range(10)]), max_size=2),
    st.sampled_from([None, "p1", "p2"]),
    st.lists(st.integers(0, 5), max_size=4),
)


def test_the_generated_cases_place_jobs_often_enough_to_mean_something() -> None:
    placed = find(st.tuples(needs_st, pools_st), lambda case: isinstance(place(*case), Placed))
    assert isinstance(place(*placed), Placed)


@given(needs_st, pools_st)
def test_never_chooses_an_infeasible_pool(job: JobNeeds, pools: list[PoolView]) -> None:
    decision = place(job, pools)
    if isinstance(decision, Placed):
        chosen = next(p for p in pools if p.pool_id == decision.pool_id)
        assert all(check(job, chosen) is None for _, check in CHECKS)
        replica = next(r for r in chosen.replicas if r.index == decision.replica)
        assert replica.ready and replica.slots_free > 0
    else:
        assert {r.pool_id for r in decision.rejections} == {p.pool_id for p in pools}


@given(needs_st, pools_st, st.randoms())
def test_decisions_do_not_depend_on_pool_order(
    job: JobNeeds, pools: list[PoolView], rng: object
) -> None:
    shuffled = list(pools)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    first, second = place(job, pools), place(job, shuffled)
    if isinstance(first, Placed):
        assert first == second
    else:
        assert isinstance(second, Unplaceable) and first.transient == second.transient


@given(needs_st, pools_st)
def test_capacity_is_never_over_committed_in_one_cycle(
    job: JobNeeds, pools: list[PoolView]
) -> None:
    free_before = sum(p.slots_free for p in pools)
    placed = 0
    current = tuple(pools)
    while isinstance(decision := place(job, current), Placed):
        current = assume(current, decision)
        placed += 1
        assert placed <= free_before
    assert all(r.slots_free >= 0 for p in current for r in p.replicas)


@given(needs_st, pools_st)
def test_scores_are_within_range(job: JobNeeds, pools: list[PoolView]) -> None:
    decision = place(job, pools)
    if isinstance(decision, Placed):
        scores = dict(decision.scores)
        assert scores["preferred"] in (0.0, 1.0)
        assert scores["session"] in (0.0, 1.0)
        assert scores["predicted_ms"] <= 0.0
        assert scores["free_slots"] >= 1


@given(
    models=st.lists(st.sampled_from(["tiny", "big", "other"]), min_size=1, max_size=8),
    free=st.lists(st.integers(min_value=0, max_value=2), min_size=8, max_size=8),
    model=st.sampled_from(["tiny", "big", "default", "missing"]),
)
def test_cycle_candidates_decide_exactly_as_placing_over_every_pool(
    models: list[str], free: list[int], model: str
) -> None:
    everywhere: tuple[PoolView, ...] = tuple(
        pool(f"p{i}", model_id=m, replicas=(ReplicaView(0, True, 2, free[i]),))
        for i, m in enumerate(models)
    )
    cycle = CycleViews(everywhere)
    job = needs(model=model)
    for _ in range(4):
        full = place(job, everywhere)
        narrowed = place(job, cycle.candidates(model))
        assert isinstance(full, Placed) == isinstance(narrowed, Placed)
        if not isinstance(full, Placed) or not isinstance(narrowed, Placed):
            break
        assert (full.pool_id, full.replica) == (narrowed.pool_id, narrowed.replica)
        assert cycle.free_slots == sum(p.slots_free for p in everywhere)
        everywhere = assume(everywhere, full)
        cycle.take(narrowed)
    assert cycle.free_slots == sum(p.slots_free for p in everywhere)
