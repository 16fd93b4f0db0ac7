"""The scenarios of `specs/features/security/authentication.feature`,
on the shared cluster (see conftest), with the steps only they use."""

from __future__ import annotations

from pathlib import Path

import pytest
from ci_harness.bdd import World
from pytest_bdd import parsers, scenarios, then, when

pytestmark = pytest.mark.integration

scenarios(
    str(Path(__file__).resolve().parents[4] / "specs/features/security/authentication.feature")
)


@when("I list the pools")
def _(world: World) -> None:
    with world.client() as client:
        world.response = client.get("/v2/pools")


@when(parsers.parse('I drain the pool "{pool_id}"'))
def _(world: World, pool_id: str) -> None:
    with world.client() as client:
        world.response = client.post(f"/v2/pools/{pool_id}/drain", json={"deadline_ms": 0})


@when("I ask whether the orchestrator is alive")
def _(world: World) -> None:
    with world.client() as client:
        world.response = client.get("/healthz")


@then("the answer does not contain the key")
def _(world: World) -> None:
    assert world.response is not None and world.key
    assert world.key not in world.response.text
    assert world.key not in str(world.response.headers)
