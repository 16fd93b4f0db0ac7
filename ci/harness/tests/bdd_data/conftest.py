"""Fixtures and shared step definitions for the client-facing features (`specs/features/`, all but
`operations/`), run with pytest-bdd against real processes (TST-03).

Every step speaks to a real orchestrator and real pools through `cluster` (a
`ci_harness.cluster.Cluster`). By default `cluster` is one cluster shared by the features
of this folder (`shared_cluster`: two single-slot pools of the tiny fixture model,
`tiny-a` and `tiny-b` answering to `default`, a mock pool answering to `m`, an admin and
a client key, a 64 KiB body limit); a test module whose feature needs other settings
overrides `cluster` with its own module-scoped one. What a scenario learns as it goes
(the last answer, the events read, the tasks it started) lives in `world`, one per
scenario; tasks a scenario left running are cancelled when it ends.

Steps that several features use are defined here; those only one feature uses live in
its test module. One step text, one definition: `test_bdd_steps.py` checks that every
step line of every feature matches exactly one definition visible to it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ci_harness import secret_scan
from ci_harness.bdd import LONG, TERMINAL, World, completion, text_of
from ci_harness.cluster import Cluster, Event, parse_events, tiny_pool, wait_for
from ci_harness.streams import BackgroundStream
from pytest_bdd import given, parsers, then, when

MAX_BODY_BYTES = 64 << 10
ADMIN_KEY = secret_scan.new_api_key("BDD admin key")
CLIENT_KEY = secret_scan.new_api_key("BDD client key")
LIMITED_KEY = secret_scan.new_api_key("BDD limited key")


def api_key(name: str, key: str, role: str, **limits: int) -> dict[str, Any]:
    """An `api_keys` entry of the orchestrator's configuration (the key stored hashed)."""
    return {
        "name": name,
        "key_sha256": hashlib.sha256(key.encode()).hexdigest(),
        "role": role,
        **limits,
    }


def start_cluster(cluster: Cluster) -> Iterator[Cluster]:
    cluster.start()
    yield cluster
    codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), (codes, cluster.logs())


@pytest.fixture(scope="package")
def shared_cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    mock = {"id": "mock-1", "engine": "mock", "ctx": 4096, "slots": 1, "aliases": ["m"]}
    keys = [api_key("operator", ADMIN_KEY, "admin"), api_key("app", CLIENT_KEY, "client")]
    yield from start_cluster(
        Cluster(
            tmp_path_factory.mktemp("bdd-shared"),
            {"host-a": [tiny_pool("tiny-a", tiny_model), tiny_pool("tiny-b", tiny_model), mock]},
            {"api_keys": keys, "max_body_bytes": MAX_BODY_BYTES},
            {},
            {"Authorization": f"Bearer {ADMIN_KEY}"},
        )
    )


@pytest.fixture(scope="module")
def backpressure_cluster(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """For back-pressure: a single-slot pool `solo` (alias `default`), a queue of one task
    refused with a 2.5 s retry hint, a pool `spare` of its own alias to drain, and a key
    allowed one request a minute beside the admin key."""
    keys = [
        api_key("operator", ADMIN_KEY, "admin"),
        api_key("limited", LIMITED_KEY, "client", requests_per_minute=1),
    ]
    pools = [tiny_pool("solo", tiny_model), tiny_pool("spare", tiny_model, aliases=["spare"])]
    yield from start_cluster(
        Cluster(
            tmp_path_factory.mktemp("bdd-backpressure"),
            {"host-a": pools},
            {"api_keys": keys, "queue_capacity": 1, "reject_retry_after_ms": 2500},
            {},
            {"Authorization": f"Bearer {ADMIN_KEY}"},
        )
    )


@pytest.fixture(scope="module")
def faulty_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """For errors mid-stream: the mock engine (alias `m`), whose faults a prompt asks for
    (`[[mock hang_after=3]]`), and a watchdog that ends a stream silent for 600 ms."""
    mock = {"id": "mock-1", "engine": "mock", "ctx": 4096, "slots": 1, "aliases": ["m"]}
    yield from start_cluster(
        Cluster(tmp_path_factory.mktemp("bdd-faulty"), {"host-a": [mock]}, {"idle_timeout_ms": 600})
    )


@pytest.fixture(scope="module")
def solo_cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """For processes killed under a task: one single-slot pool `solo` of the tiny model."""
    yield from start_cluster(
        Cluster(tmp_path_factory.mktemp("bdd-solo"), {"host-a": [tiny_pool("solo", tiny_model)]})
    )


@pytest.fixture
def client_key() -> str:
    """The shared cluster's key of role `client`."""
    return CLIENT_KEY


@pytest.fixture(scope="module")
def cluster(shared_cluster: Cluster) -> Cluster:
    """The cluster a feature's steps talk to; a test module may override it."""
    return shared_cluster


@pytest.fixture
def world(cluster: Cluster) -> Iterator[World]:
    state = World(cluster)
    yield state
    if state.stream is not None:
        cluster.cancel(state.stream.task_id)
        state.stream.result()
    for task_id in state.started:
        cluster.cancel(task_id)
    wait_for(
        lambda: all(cluster.task(t)["state"] in TERMINAL for t in state.started),
        "the scenario's tasks to end",
    )


# --- the system -------------------------------------------------------------------------


@given(parsers.re(r"a running llorch with (?P<what>.+)"))
def _(cluster: Cluster, what: str) -> None:
    """Whatever the feature's cluster is, every one of its pools is ready."""
    cluster.wait_ready([p["id"] for pools in cluster.pools.values() for p in pools])


# --- credentials ------------------------------------------------------------------------


@given("I use no key")
def _(world: World) -> None:
    world.headers = {}


@given("I use an unknown key")
def _(world: World) -> None:
    world.key = "sk-not-a-key-of-this-llorch"
    world.headers = {"Authorization": f"Bearer {world.key}"}


@given("I use the client key")
def _(world: World) -> None:
    world.key = CLIENT_KEY
    world.headers = {"Authorization": f"Bearer {CLIENT_KEY}"}


@given(parsers.parse("I use a key allowed {count:d} request per minute"))
def _(world: World, count: int) -> None:
    assert count == 1, "the feature's cluster configures one such key: 1 request per minute"
    world.key = LIMITED_KEY
    world.headers = {"Authorization": f"Bearer {LIMITED_KEY}"}


# --- submitting -------------------------------------------------------------------------


@when(parsers.parse("I submit a completion of {count:d} tokens"))
def _(world: World, count: int) -> None:
    world.submit(completion(count))


@when(parsers.parse('I submit a completion of {count:d} tokens of model "{model}"'))
def _(world: World, count: int, model: str) -> None:
    world.submit(completion(count, model=model))


@when(parsers.parse('I submit a completion of {count:d} tokens with correlation id "{cid}"'))
def _(world: World, count: int, cid: str) -> None:
    world.submit(completion(count), **{"X-Correlation-Id": cid})


@when(
    parsers.parse(
        "I submit a completion of {count:d} tokens asking for an event stream "
        'with correlation id "{cid}"'
    )
)
def _(world: World, count: int, cid: str) -> None:
    headers = {"Accept": "text/event-stream", "X-Correlation-Id": cid}
    with (
        world.client() as client,
        client.stream("POST", "/v2/tasks", json=completion(count), headers=headers) as response,
    ):
        world.response = response
        assert response.status_code == 200, response.read()
        world.events = list(parse_events(response.iter_lines()))


@when(parsers.parse('I submit a completion of {count:d} tokens with Idempotency-Key "{key}"'))
def _(world: World, count: int, key: str) -> None:
    assert (
        world.submit(completion(count, prompt=key), **{"Idempotency-Key": key}).status_code == 202
    )


@when(parsers.parse('I submit the same completion again with Idempotency-Key "{key}"'))
def _(world: World, key: str) -> None:
    assert world.submit(world.body, **{"Idempotency-Key": key}).status_code == 202


@when(parsers.parse('I submit a different completion with Idempotency-Key "{key}"'))
def _(world: World, key: str) -> None:
    world.submit({**world.body, "prompt": "something else entirely"}, **{"Idempotency-Key": key})


@when(parsers.parse("I submit a chat of {count:d} tokens with a system and a user message"))
def _(world: World, count: int) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    body = {"model": "default", "workload": "chat", "max_tokens": count, "seed": 3}
    world.admitted({**body, "messages": messages})


@when("I submit the same chat stopping at a string that its answer contained")
def _(world: World) -> None:
    text = text_of(world.events)
    assert len(text) > 22, f"the first answer is too short to cut: {text!r}"
    stop = text[20:22]
    world.values["first answer"], world.values["stop"] = text, stop
    world.admitted({**world.body, "stop": [stop]})


# --- reading streams and states ---------------------------------------------------------


@when("I read the task's events")
def _(world: World) -> None:
    world.events = world.cluster.events(world.task_id)


@then("the answer is 202 with a task id, a queue position and an events URL")
def _(world: World) -> None:
    assert world.response is not None and world.response.status_code == 202, world.response
    admitted = world.response.json()
    assert admitted["events_url"] == f"/v2/tasks/{admitted['task_id']}/events"
    assert admitted["queue_position"] >= 0 and admitted["predicted_start_ms"] >= 0


@then('the stream starts with "started" naming the pool, the engine and the model digest')
def _(world: World) -> None:
    started = world.events[0]
    assert started.name == "started", started
    assert started.data["pool_id"] in ("tiny-a", "tiny-b")
    assert started.data["engine"] == "llamacpp-inproc" and started.data["engine_version"]
    assert len(started.data["model_digest"]) == 64 and started.data["tokens_in"] >= 2


@then("token events follow, indexed from 0, every event with a higher id than the last")
def _(world: World) -> None:
    ids = [e.id for e in world.events]
    assert ids == sorted(set(ids)), ids
    assert world.events[0].name == "started"
    indexes = [e.data["i"] for e in world.events if e.name == "token"]
    assert indexes and indexes == list(range(len(indexes))), world.events[-2:]


def the_end(world: World) -> Event:
    terminals = [e for e in world.events if e.name in ("end", "error")]
    assert len(terminals) == 1 and terminals[0] is world.events[-1], world.events[-3:]
    assert terminals[0].name == "end", terminals[0]
    return terminals[0]


@then(parsers.parse('the stream ends with exactly one "end" event with finish reason "{reason}"'))
def _(world: World, reason: str) -> None:
    assert the_end(world).data["finish_reason"] == reason


@then(
    parsers.parse(
        'the stream ends with exactly one "end" event counting {count:d} tokens '
        'with finish reason "{reason}"'
    )
)
def _(world: World, count: int, reason: str) -> None:
    end = the_end(world)
    assert end.data["tokens_out"] == count and end.data["finish_reason"] == reason, end


@then(parsers.parse('the task\'s state is "{state}" with {count:d} tokens out'))
def _(world: World, state: str, count: int) -> None:
    status = world.cluster.task(world.task_id)
    assert status["state"] == state and status["tokens_out"] == count, status
    assert status["pool_id"] == world.events[0].data["pool_id"]


@then(parsers.parse('the task\'s state is "{state}"'))
def _(world: World, state: str) -> None:
    assert world.cluster.task(world.task_id)["state"] == state


@then(parsers.parse('the answer is an event stream carrying correlation id "{cid}"'))
def _(world: World, cid: str) -> None:
    assert world.response is not None
    assert world.response.headers["content-type"].startswith("text/event-stream")
    assert world.response.headers["x-correlation-id"] == cid


@then("the prompt counted more tokens than the messages' words")
def _(world: World) -> None:
    words = sum(len(m["content"].split()) for m in world.body["messages"])
    assert world.events[0].data["tokens_in"] > words + 5, world.events[0]  # template markers
    assert world.events[-1].name == "end", world.events[-1]


@then("the text is the first answer up to the stop string")
def _(world: World) -> None:
    first, stop = world.values["first answer"], world.values["stop"]
    assert text_of(world.events) == first[: first.index(stop)]


@given(parsers.parse("a task of {count:d} tokens that has ended"))
def _(world: World, count: int) -> None:
    world.admitted(completion(count))
    world.first_events = world.cluster.events(world.task_id)
    assert world.first_events[-1].name == "end", world.first_events[-1]


@when("I read its events again with Last-Event-ID of its second event")
def _(world: World) -> None:
    world.events = world.cluster.events(world.task_id, last_event_id=world.first_events[1].id)


@then("I get exactly the events after the second one, with no gap and no duplicate")
def _(world: World) -> None:
    assert world.events == world.first_events[2:]


@then("both answers name the same task")
def _(world: World) -> None:
    first, second = (r.json()["task_id"] for r in world.responses[-2:])
    assert first == second


# --- cancel -----------------------------------------------------------------------------


@given("a long task that is streaming tokens")
def _(world: World) -> None:
    world.admitted(completion(LONG))
    world.stream = BackgroundStream(world.cluster, world.task_id).__enter__()
    world.stream.wait_tokens(1)


@given("every pool is busy with a long task")
def _(world: World) -> None:
    busy = []
    for pools in world.cluster.pools.values():
        for pool in pools:
            if "default" in pool.get("aliases", ()):
                pin = {"pin_pool_id": pool["id"]}
                busy.append(world.admitted(completion(LONG, placement=pin)))
    world.values["busy"] = busy
    wait_for(lambda: all(world.cluster.task(t)["state"] == "running" for t in busy), "busy pools")


@given("a task waiting in the queue")
def _(world: World) -> None:
    world.admitted(completion(4))
    assert world.response is not None and world.response.json()["queue_position"] == 0
    assert world.cluster.task(world.task_id)["state"] == "queued"


@when("I cancel the task")
def _(world: World) -> None:
    world.values["cancel"] = world.cluster.cancel(world.task_id)


@when(parsers.parse('I cancel the task "{task_id}"'))
def _(world: World, task_id: str) -> None:
    world.values["cancel"] = world.cluster.cancel(task_id)


@then("the cancel is answered 204")
def _(world: World) -> None:
    assert world.values["cancel"] == 204


@then('its stream ends with the error "CANCELLED" and no token follows it')
def _(world: World) -> None:
    assert world.stream is not None
    seen = world.stream.result()
    world.stream = None
    assert seen[-1].name == "error" and seen[-1].data["code"] == "CANCELLED", seen[-1]
    assert [e.name for e in seen].count("error") == 1
    replay = world.cluster.events(world.task_id)
    assert [e.id for e in replay] == [e.id for e in seen]  # nothing was added after the cancel


@then("cancelling the task again is answered 204 too")
def _(world: World) -> None:
    assert world.cluster.cancel(world.task_id) == 204


@when("the pools are free again")
def _(world: World) -> None:
    for task_id in world.values["busy"]:
        assert world.cluster.cancel(task_id) == 204
    ids = [p["id"] for pools in world.cluster.pools.values() for p in pools]
    world.cluster.wait_ready(ids)


@then('the task\'s stream holds only the error "CANCELLED"')
def _(world: World) -> None:
    events = world.cluster.events(world.task_id)
    assert [e.name for e in events] == ["error"] and events[0].data["code"] == "CANCELLED"


@then("the task never ran on a pool")
def _(world: World) -> None:
    status = world.cluster.task(world.task_id)
    assert status["state"] == "cancelled" and status["attempts"] == 0, status
    assert status["pool_id"] is None and status["started_at_ms"] is None


# --- errors and back-pressure -----------------------------------------------------------

BAD_SUBMISSIONS: dict[str, dict[str, Any]] = {
    "model is not in the catalog": completion(4, model="no-such-model"),
    "temperature is negative": completion(4, temperature=-1),
    "body has a field the API does not know": completion(4, temprature=0.5),
    "pin names a pool that does not exist": completion(
        4, placement={"pin_pool_id": "no-such-pool"}
    ),
    "prompt and max_tokens overflow every context": completion(16000, prompt="word " * 4000),
    "body is larger than the configured limit": completion(4, prompt="x" * MAX_BODY_BYTES),
}


@when(parsers.parse("I submit a task whose {fault}"))
def _(world: World, fault: str) -> None:
    world.submit(BAD_SUBMISSIONS[fault])


@then(parsers.parse('the answer is {status:d} with error code "{code}"'))
def _(world: World, status: int, code: str) -> None:
    assert world.response is not None
    assert world.response.status_code == status, world.response.text
    assert world.envelope()["code"] == code, world.envelope()


@then(parsers.parse("the answer is {status:d}"))
def _(world: World, status: int) -> None:
    assert world.response is not None
    assert world.response.status_code == status, world.response.text


@then("the error envelope carries the answer's correlation id")
def _(world: World) -> None:
    assert world.response is not None
    envelope = world.envelope()
    assert set(envelope) >= {"code", "message", "retriable", "correlation_id"}, envelope
    assert envelope["correlation_id"] == world.response.headers["x-correlation-id"]


@then(parsers.parse('the error message says "{words}"'))
def _(world: World, words: str) -> None:
    assert words in world.envelope()["message"], world.envelope()


@then("the answer carries a freshly generated correlation id")
def _(world: World) -> None:
    assert world.response is not None
    assert re.fullmatch(r"[0-9a-f]{32}", world.response.headers["x-correlation-id"])


@then(parsers.parse("the error is retriable and asks to retry after {ms:d} ms"))
def _(world: World, ms: int) -> None:
    envelope = world.envelope()
    assert envelope["retriable"] is True and envelope["retry_after_ms"] == ms, envelope


@then(parsers.parse('the answer carries the header Retry-After "{value}"'))
def _(world: World, value: str) -> None:
    assert world.response is not None and world.response.headers["retry-after"] == value


@then(parsers.parse("the answer carries a Retry-After between {low:d} and {high:d} seconds"))
def _(world: World, low: int, high: int) -> None:
    assert world.response is not None
    assert low <= int(world.response.headers["retry-after"]) <= high, world.response.headers


@given(parsers.parse('the pool "{pool_id}" has been drained'))
def _(world: World, pool_id: str) -> None:
    with world.cluster.client() as client:
        drained = client.post(f"/v2/pools/{pool_id}/drain", json={"deadline_ms": 0})
    assert drained.status_code == 202, drained.text
    wait_for(lambda: not world.cluster.pool(pool_id).get("ready"), f"{pool_id} to drain")
