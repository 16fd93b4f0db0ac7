"""specs/features/operations/drain_and_reload.feature over real processes (POOL-05,
API-11): one orchestrator and one pool manager with three pools of the in-process
engine on the tiny model; the second model is the same shape with another seed, so its
digest differs. After each scenario every pool is put back in service."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from catalog_core import TinyModelSpec, write_tiny_model
from ci_harness.bad_models import write_not_a_model
from ci_harness.cluster import Cluster, Event, tiny_pool
from ci_harness.scenes import REPO, Scene, engine_pid, hold_up, run_job, running, says
from pytest_bdd import given, scenarios, then, when

pytestmark = pytest.mark.integration
POOLS = ("d1", "d2", "rl")

scenarios(str(REPO / "specs/features/operations/drain_and_reload.feature"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    spec = TinyModelSpec(context_length=32768)
    return {
        "first": write_tiny_model(root / "tiny.gguf", spec),
        "second": write_tiny_model(
            root / "tiny-b.gguf", TinyModelSpec(context_length=32768, seed=4321, name="tiny-b")
        ),
        "not a model": write_not_a_model(root / "notes.gguf"),
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[Cluster]:
    first = models["first"]
    pools = {
        "host-a": [
            tiny_pool("d1", first),
            tiny_pool("d2", first, aliases=["other"]),
            tiny_pool("rl", first, aliases=["reloadable"]),
        ]
    }
    settings = {"host-a": {"reload_timeout_s": 60}}
    with running(Cluster(tmp_path_factory.mktemp("drain"), pools, {}, settings), list(POOLS)) as c:
        yield c


@pytest.fixture(autouse=True)
def back_in_service(cluster: Cluster) -> Iterator[None]:
    """After a scenario: undo any drain and wait until every pool is ready again."""
    yield
    with cluster.client() as client:
        for pool_id in POOLS:
            if not cluster.pool(pool_id).get("ready"):
                client.post(f"/v2/pools/{pool_id}/undrain")
    cluster.wait_ready(list(POOLS))


def started(events: list[Event]) -> dict[str, Any]:
    return next(e.data for e in events if e.name == "started")


def served_digest(cluster: Cluster, model: str) -> str:
    events = run_job(cluster, {"model": model, "prompt": "hello", "max_tokens": 4})
    assert events[-1].name == "end", events[-1]
    return str(started(events)["model_digest"])


def reload(cluster: Cluster, pool_id: str, model: Path) -> tuple[int, dict[str, Any]]:
    with cluster.client() as client:
        response = client.post(
            f"/v2/pools/{pool_id}/reload", json={"model": str(model)}, timeout=180
        )
    return response.status_code, response.json()


@given(says('a pool manager running the pools "{a}", "{b}" and "{c}"'))
def _(cluster: Cluster, a: str, b: str, c: str) -> None:
    assert (a, b, c) == POOLS
    assert all(cluster.pool(p)["ready"] for p in POOLS)


@given(says('the engine of pool "{pool_id}" is held up mid-stream'))
def _(cluster: Cluster, scene: Scene, pool_id: str) -> None:
    hold_up(scene, engine_pid(cluster, pool_id))


@when(says('the operator reloads pool "{pool_id}" with the second model'))
def _(cluster: Cluster, scene: Scene, models: dict[str, Path], pool_id: str) -> None:
    scene.values["reload"] = reload(cluster, pool_id, models["second"])
    long = scene.streams.get("long")
    scene.values["long done at reload"] = long is not None and long.done


@when(says('the operator reloads pool "{pool_id}" with a file that is not a model'))
def _(cluster: Cluster, scene: Scene, models: dict[str, Path], pool_id: str) -> None:
    scene.values["digest before"] = cluster.pool(pool_id)["model_digest"]
    scene.values["reload"] = reload(cluster, pool_id, models["not a model"])


@then(says('the reload answers that pool "{pool_id}" serves the second model'))
def _(scene: Scene, models: dict[str, Path], pool_id: str) -> None:
    status, body = scene.values["reload"]
    assert status == 200, body
    assert (body["pool_id"], body["model_digest"]) == (pool_id, digest(models["second"]))


@then("the long job had not ended when the reload answered")
def _(scene: Scene) -> None:
    assert scene.values["long done at reload"] is False


@then("the long job was served by the first model")
def _(scene: Scene, models: dict[str, Path]) -> None:
    events = scene.streams["long"].result()
    assert started(events)["model_digest"] == digest(models["first"])


@then(says('a job for "{model}" is served by the second model'))
def _(cluster: Cluster, models: dict[str, Path], model: str) -> None:
    assert served_digest(cluster, model) == digest(models["second"])


@then(says('the reload is refused with {status:d} "{code}" saying "{text}"'))
def _(scene: Scene, status: int, code: str, text: str) -> None:
    answered, body = scene.values["reload"]
    assert (answered, body["code"]) == (status, code), body
    assert text in body["message"], body


@then(says('a job for "{model}" is served by the model it served before the reload'))
def _(cluster: Cluster, scene: Scene, model: str) -> None:
    assert served_digest(cluster, model) == scene.values["digest before"]
