"""Request placement: feasibility with reasons, scoring, tie-break (PLC-01..03, PLC-05)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from orchestratord.placement import (
    CHECKS,
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

replica_st = st.builds(
    lambda index, ready, total, used: ReplicaView(index, ready, total, max(0, total - used)),
    st.integers(0, 3),
    st.booleans(),
    st.integers(1, 4),
    st.integers(0, 4),
)
pool_st = st.builds(
    lambda pid, ready, draining, lease, ctx, model, replicas: pool(
        f"p{pid}",
        ready=ready,
        draining=draining,
        lease_fresh=lease,
        ctx=ctx,
        model_id=model,
        replicas=tuple({r.index: r for r in replicas}.values()),
    ),
    st.integers(0, 9),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from([512, 2048, 8192]),
    st.sampled_from(["tiny", "other"]),
    st.lists(replica_st, min_size=1, max_size=3),
)
pools_st = st.lists(pool_st, max_size=8).map(lambda ps: list({p.pool_id: p for p in ps}.values()))
needs_st = st.builds(
    lambda tokens, model, pin, avoid: needs(
        tokens=tokens,
        model=model,
        overrides=Overrides(pin_pool_id=pin, avoid_pools=frozenset(avoid)),
    ),
    st.integers(1, 9000),
    st.sampled_from(["tiny", "other", "default"]),
    st.one_of(st.none(), st.sampled_from([f"p{i}" for i in range(10)])),
    st.lists(st.sampled_from([f"p{i}" for i in range(10)]), max_size=3),
)


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
        assert 0.0 <= scores["free_ratio"] <= 1.0
        assert scores["free_slots"] >= 1
