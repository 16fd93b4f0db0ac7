"""A model whose every pool is failed, stopped or draining is refused at once (pure)."""

from __future__ import annotations

from orchestratord.admission.availability import PoolState, unavailable


def test_a_model_with_no_pool_is_not_this_checks_business() -> None:
    assert unavailable([]) is None


def test_one_pool_that_will_serve_soon_is_enough() -> None:
    pools = [PoolState("a", "failed", False, "crashed 6 times"), PoolState("b", "loading", False)]
    assert unavailable(pools) is None


def test_every_pool_failed_or_draining_names_each_with_its_reason() -> None:
    pools = [PoolState("a", "failed", False, "crashed 6 times"), PoolState("b", "ready", True)]
    assert unavailable(pools) == "a: failed (crashed 6 times); b: draining"


def test_backoff_between_restarts_is_not_unavailable() -> None:
    assert unavailable([PoolState("a", "backoff", False)]) is None
