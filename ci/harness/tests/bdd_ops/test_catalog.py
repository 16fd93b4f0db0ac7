"""specs/features/operations/catalog.feature over real processes (API-12, CAT-02,
PRV-01, PRV-03, CLI-02): an orchestrator and two pool managers, each in its own network
namespace of a fleet, both holding the tiny model from their configuration. A model is
provisioned onto one host with the real CLI (`llorch provision model`, into the host's
state directory, where its pool manager picks it up). After each scenario every
deployment is deleted, every pool gone and "tiny" Active again."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from catalog_core import TinyModelSpec, write_tiny_model
from ci_harness.cluster import Cluster, wait_for
from ci_harness.deployments import reset
from ci_harness.scenes import REPO, TWO_HOSTS, Scene, fleet_scene, says
from pytest_bdd import scenarios, then, when

pytestmark = pytest.mark.integration

scenarios(str(REPO / "specs/features/operations/catalog.feature"))


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with fleet_scene(tmp_path_factory.mktemp("bdd-catalog"), tiny_model, TWO_HOSTS) as fleet:
        yield fleet


@pytest.fixture(autouse=True)
def emptied(cluster: Cluster) -> Iterator[None]:
    yield
    with cluster.client() as client:
        client.post("/v2/catalog/models/tiny/state", json={"state": "Active"})
    reset(cluster)


def catalog_entry(cluster: Cluster, model_id: str) -> dict[str, Any]:
    with cluster.client() as client:
        response = client.get(f"/v2/catalog/models/{model_id}")
    return dict(response.json()) if response.status_code == 200 else {}


def held_by(cluster: Cluster, model_id: str, host_ids: list[str]) -> None:
    def listed() -> bool:
        with cluster.client() as client:
            models = {m["id"]: m for m in client.get("/v2/catalog/models").json()["models"]}
        return model_id in models and models[model_id]["hosts"] == host_ids

    wait_for(listed, f"the catalog to list {model_id} on {host_ids}")


@then(says('the catalog lists the model "{model_id}" held by "{a}" and "{b}"'))
def _(cluster: Cluster, model_id: str, a: str, b: str) -> None:
    held_by(cluster, model_id, [a, b])


@then(says('the catalog lists the model "{model_id}" held by "{host_id}"'))
def _(cluster: Cluster, model_id: str, host_id: str) -> None:
    held_by(cluster, model_id, [host_id])


@then(
    says(
        'the catalog entry "{model_id}" is "{state}" with a sha256, '
        'the architecture "{arch}" and a trained context of {ctx:d}'
    )
)
def _(cluster: Cluster, model_id: str, state: str, arch: str, ctx: int) -> None:
    entry = catalog_entry(cluster, model_id)
    assert (entry["lifecycle"], entry["architecture"], entry["trained_context"]) == (
        state,
        arch,
        ctx,
    ), entry
    assert len(entry["sha256"]) == 64, entry


@then("asking for the catalog again with its ETag answers 304")
def _(cluster: Cluster) -> None:
    with cluster.client() as client:
        page = client.get("/v2/catalog/models")
        again = client.get("/v2/catalog/models", headers={"If-None-Match": page.headers["etag"]})
    assert (page.status_code, again.status_code) == (200, 304)


@when(says('the operator verifies the model "{model_id}"'))
def _(cluster: Cluster, scene: Scene, model_id: str) -> None:
    with cluster.client() as client:
        scene.response = client.post(f"/v2/catalog/models/{model_id}/verify", timeout=120)


@then(says('the verification succeeds on "{a}" and "{b}"'))
def _(scene: Scene, a: str, b: str) -> None:
    assert scene.response is not None and scene.response.status_code == 200
    verified = scene.response.json()
    assert verified["ok"] and [h["host_id"] for h in verified["hosts"]] == [a, b], verified


@then(says('the catalog entry "{model_id}" records when it was verified'))
def _(cluster: Cluster, model_id: str) -> None:
    assert catalog_entry(cluster, model_id)["verified_at_ms"] > 0


def provision(
    cluster: Cluster, scene: Scene, model_id: str, host_id: str, sha256: str | None = None
) -> None:
    """`llorch provision model file:PATH` of a new model file into the host's state dir;
    the run in `scene.values["cli"]`, the file's real sha256 in `scene.values["sha256"]`."""
    incoming = cluster.root / "incoming"
    incoming.mkdir(exist_ok=True)
    spec = TinyModelSpec(context_length=4096, seed=zlib.crc32(model_id.encode()), name=model_id)
    path = write_tiny_model(incoming / f"{model_id}.gguf", spec)
    command = [
        *(sys.executable, "-m", "llorch", "provision", "model", f"file:{path}"),
        *("--id", model_id, "--root", str(incoming), "--state-dir", str(cluster.root / host_id)),
        *(("--sha256", sha256) if sha256 else ()),
    ]
    scene.values["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    scene.values["cli"] = subprocess.run(command, capture_output=True, text=True, timeout=120)
    scene.values["host"] = host_id


@when(says('the operator provisions a new model file as "{model_id}" on "{host_id}" with the CLI'))
def _(cluster: Cluster, scene: Scene, model_id: str, host_id: str) -> None:
    provision(cluster, scene, model_id, host_id)


@when(
    says(
        'the operator provisions a new model file as "{model_id}" on "{host_id}" '
        "with the CLI and a wrong sha256"
    )
)
def _(cluster: Cluster, scene: Scene, model_id: str, host_id: str) -> None:
    scene.values["wrong sha256"] = "0" * 64
    provision(cluster, scene, model_id, host_id, "0" * 64)


@then(says('the CLI narrates the steps "{a}", "{b}" and "{c}"'))
def _(scene: Scene, a: str, b: str, c: str) -> None:
    done = scene.values["cli"]
    assert done.returncode == 0, done.stderr
    for step in (a, b, c):
        assert f"llorch: {step}" in done.stderr, done.stderr


@then("the CLI fails showing the expected and the actual sha256")
def _(scene: Scene) -> None:
    done = scene.values["cli"]
    assert done.returncode == 1, (done.stdout, done.stderr)
    for digest in (scene.values["wrong sha256"], scene.values["sha256"]):
        assert digest in done.stderr, done.stderr


@then(says('the catalog does not list the model "{model_id}"'))
def _(cluster: Cluster, scene: Scene, model_id: str) -> None:
    state = cluster.root / scene.values["host"]
    local = subprocess.run(
        [sys.executable, "-m", "llorch", "catalog", "ls", "--json", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert local.returncode == 0, local.stderr
    listed = json.loads(local.stdout)
    assert model_id not in [m["id"] for m in listed], listed
    assert catalog_entry(cluster, model_id) == {}


@when(says('the operator sets the model "{model_id}" to "{state}"'))
def _(cluster: Cluster, model_id: str, state: str) -> None:
    with cluster.client() as client:
        response = client.post(f"/v2/catalog/models/{model_id}/state", json={"state": state})
    assert response.status_code == 200, response.text
    assert response.json()["lifecycle"] == state
