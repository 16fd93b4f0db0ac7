"""The scenarios of `specs/features/sessions/sessions.feature`,
on the shared cluster (see conftest), with the steps only they use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from ci_harness.bdd import World, completion
from ci_harness.cluster import wait_for
from pytest_bdd import given, parsers, scenarios, then, when

pytestmark = pytest.mark.integration

scenarios(str(Path(__file__).resolve().parents[4] / "specs/features/sessions/sessions.feature"))


def session_turn(world: World, session_id: str, **body: Any) -> httpx.Response:
    response = world.submit(completion(4, session_id=session_id, **body))
    if response.status_code == 202:
        events = world.cluster.events(world.task_id)
        assert events[-1].name == "end", events[-1]
        world.turn_pools.setdefault(session_id, []).append(events[0].data["pool_id"])
    return response


@given(parsers.parse('a session "{session_id}" whose first turn ran on pool "{pool_id}"'))
def _(world: World, session_id: str, pool_id: str) -> None:
    session_turn(world, session_id, placement={"pin_pool_id": pool_id})
    assert world.turn_pools[session_id] == [pool_id]


@given(parsers.parse('a session "{session_id}" with one turn'))
def _(world: World, session_id: str) -> None:
    assert session_turn(world, session_id).status_code == 202


@given(parsers.parse('a session "{session_id}" with one turn and a time to live of {ttl:d} ms'))
def _(world: World, session_id: str, ttl: int) -> None:
    assert session_turn(world, session_id, session={"ttl_ms": ttl}).status_code == 202


@given(parsers.parse('a session "{session_id}" limited to {turns:d} turns that has taken them'))
def _(world: World, session_id: str, turns: int) -> None:
    for _ in range(turns):
        assert session_turn(world, session_id, session={"max_turns": turns}).status_code == 202


@given(
    parsers.parse('a session "{session_id}" with a budget of {tokens:d} tokens that has spent them')
)
def _(world: World, session_id: str, tokens: int) -> None:
    response = session_turn(world, session_id, session={"tokens_budget": tokens})
    assert response.status_code == 202
    with world.client() as client:
        session = client.get(f"/v2/sessions/{session_id}").json()
    assert session["tokens_budget_remaining"] == 0, session


@when(parsers.parse('I send {count:d} more turns in session "{session_id}"'))
def _(world: World, count: int, session_id: str) -> None:
    for _ in range(count):
        assert session_turn(world, session_id).status_code == 202


@when(parsers.parse('I send another turn in session "{session_id}"'))
def _(world: World, session_id: str) -> None:
    session_turn(world, session_id)


@then(parsers.parse('every turn of session "{session_id}" ran on pool "{pool_id}"'))
def _(world: World, session_id: str, pool_id: str) -> None:
    assert set(world.turn_pools[session_id]) == {pool_id}, world.turn_pools


@then(
    parsers.parse(
        'session "{session_id}" shows {turns:d} turns, a warm cache on "{pool_id}" '
        "and time to live left"
    )
)
def _(world: World, session_id: str, turns: int, pool_id: str) -> None:
    with world.client() as client:
        session = client.get(f"/v2/sessions/{session_id}").json()
    assert session["turns"] == turns and session["pool_id"] == pool_id, session
    assert session["kv_warm"] is True and session["ttl_ms_remaining"] > 0, session


@when(parsers.parse('I delete session "{session_id}"'))
def _(world: World, session_id: str) -> None:
    with world.client() as client:
        world.response = client.delete(f"/v2/sessions/{session_id}")


@then(parsers.parse("the deletion is answered {status:d}"))
def _(world: World, status: int) -> None:
    assert world.response is not None and world.response.status_code == status


@then(parsers.parse('reading session "{session_id}" is answered {status:d}'))
def _(world: World, session_id: str, status: int) -> None:
    with world.client() as client:
        assert client.get(f"/v2/sessions/{session_id}").status_code == status


@then(parsers.parse('session "{session_id}" is gone within {seconds:d} seconds'))
def _(world: World, session_id: str, seconds: int) -> None:
    with world.client() as client:
        existed = client.get(f"/v2/sessions/{session_id}")  # within its TTL of seconds
        assert existed.status_code == 200 and existed.json()["turns"] == 1, existed.text
        wait_for(
            lambda: client.get(f"/v2/sessions/{session_id}").status_code == 404,
            f"session {session_id} to expire",
            seconds,
        )
