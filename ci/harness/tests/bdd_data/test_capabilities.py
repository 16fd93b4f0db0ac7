"""The scenarios of `specs/features/capabilities/capabilities.feature`,
on the shared cluster (see conftest), with the steps only they use."""

from __future__ import annotations

from pathlib import Path

import pytest
from ci_harness.bdd import World
from pytest_bdd import parsers, scenarios, then, when
from worker_adapters.capabilities import honoured

pytestmark = pytest.mark.integration

scenarios(
    str(Path(__file__).resolve().parents[4] / "specs/features/capabilities/capabilities.feature")
)


@when("I read the capabilities")
def _(world: World) -> None:
    with world.client() as client:
        world.response = client.get("/v2/meta/capabilities")
    assert world.response.status_code == 200, world.response.text


@when(parsers.parse('I read the capabilities pinned to API version "{version}"'))
def _(world: World, version: str) -> None:
    with world.client() as client:
        world.response = client.get("/v2/meta/capabilities", params={"api_version": version})


@then(parsers.parse('the API version is "{version}"'))
def _(world: World, version: str) -> None:
    assert world.envelope()["api_version"] == version


@then(
    parsers.parse(
        'pool "{pool_id}" is listed with engine "{engine}", model "{model}", '
        "a context of {ctx:d} and {slots:d} slot"
    )
)
def _(world: World, pool_id: str, engine: str, model: str, ctx: int, slots: int) -> None:
    pools = {p["pool_id"]: p for p in world.envelope()["pools"]}
    pool = pools[pool_id]
    assert pool["engine"] == engine and pool["models"][0]["id"] == model, pool
    assert pool["ctx_max"] == ctx and pool["slots_total"] == slots, pool


@then(parsers.parse('pool "{pool_id}" lists exactly the parameters its engine honours'))
def _(world: World, pool_id: str) -> None:
    pool = {p["pool_id"]: p for p in world.envelope()["pools"]}[pool_id]
    for workload in ("completion", "chat"):
        assert pool["params"][workload] == sorted(honoured(pool["engine"], workload)), pool
    assert pool["params"]["completion"] != sorted(honoured("llamacpp-inproc", "completion"))


@when(parsers.parse('I tokenize "{text}" with offsets'))
def _(world: World, text: str) -> None:
    with world.client() as client:
        world.response = client.post(
            "/v2/tokenize", json={"model": "default", "text": text, "with_offsets": True}
        )
    assert world.response.status_code == 200, world.response.text


@when(parsers.parse('I tokenize "{text}" for model "{model}"'))
def _(world: World, text: str, model: str) -> None:
    with world.client() as client:
        world.response = client.post("/v2/tokenize", json={"model": model, "text": text})


@then("I get one byte offset per token, starting at 0 and never decreasing")
def _(world: World) -> None:
    tokens = world.envelope()
    world.values["tokens"] = tokens["tokens"]
    assert len(tokens["tokens"]) == len(tokens["offsets"]) >= 3, tokens
    assert tokens["offsets"][0] == 0 and tokens["offsets"] == sorted(tokens["offsets"])


@when("I detokenize those tokens")
def _(world: World) -> None:
    with world.client() as client:
        world.response = client.post(
            "/v2/detokenize", json={"model": "default", "tokens": world.values["tokens"]}
        )


@then(parsers.parse('I get "{text}" back'))
def _(world: World, text: str) -> None:
    assert world.envelope()["text"] == text
