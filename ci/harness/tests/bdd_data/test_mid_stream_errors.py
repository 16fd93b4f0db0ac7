"""The scenarios of `specs/features/errors/mid_stream_errors.feature`, on a cluster of
their own (`faulty_cluster` in conftest: the mock engine and a short idle timeout)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ci_harness.bdd import World
from ci_harness.cluster import Cluster, wait_for
from pytest_bdd import parsers, scenarios, then, when

pytestmark = pytest.mark.integration

scenarios(
    str(Path(__file__).resolve().parents[4] / "specs/features/errors/mid_stream_errors.feature")
)


@pytest.fixture(scope="module")
def cluster(faulty_cluster: Cluster) -> Cluster:
    return faulty_cluster


FAULTS = {
    "goes silent after 3 tokens": "[[mock hang_after=3]] go",
    "fails after 3 tokens": "[[mock fail_after=3]] go",
    "ends its stream without the end marker": "[[mock malformed=no-terminal]] go",
    "works": "go",
}


@when(parsers.parse("I submit a task to an engine that {behaviour}"))
def _(world: World, behaviour: str) -> None:
    world.admitted({"model": "m", "prompt": FAULTS[behaviour], "max_tokens": 8})


@then(parsers.parse('the stream delivered {count:d} words and ended with the error "{code}"'))
def _(world: World, count: int, code: str) -> None:
    assert world.events[0].name == "started", world.events[0]
    words = "".join(e.data["t"] for e in world.events if e.name == "token").split()
    assert len(words) == count, words
    terminals = [e for e in world.events if e.name in ("end", "error")]
    assert terminals == [world.events[-1]], world.events[-3:]
    assert terminals[0].name == "error" and terminals[0].data["code"] == code, terminals
    assert terminals[0].data["message"], terminals


@then("the error says a retry may succeed")
def _(world: World) -> None:
    assert world.events[-1].data["retriable"] is True, world.events[-1]


@then("every pool's slots are free again")
def _(world: World) -> None:
    def free() -> bool:
        with world.client() as client:
            pools = client.get("/v2/pools").json()["pools"]
        return all(p["slots_free"] == p["slots_total"] for p in pools)

    wait_for(free, "every slot to be free")
