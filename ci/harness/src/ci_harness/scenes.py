"""Helpers for the BDD scenarios of the operator's side (TST-03), shared by the step
definitions in `ci/harness/tests/bdd_ops/` and their test modules.

`says(text)` is the step parser they all use: every untyped `{name}` in a step text is a
quoted value without `"`, so one text cannot swallow another's quotes and match two
definitions. `Scene` carries what a scenario's steps learn (streams read in the
background, engines held up, answers); `running(cluster, ready)` starts a cluster for
a module and checks on exit that every daemon stopped with 0 and no engine survived.
`fleet_scene(root, model, devices)` does the same for a fleet of hosts, one network
namespace each (`TWO_HOSTS`, `THREE_HOSTS`: their simulated GPUs), skipping where
namespaces cannot be made; `emptied_fleet` empties it between scenarios.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_bdd import parsers

from ci_harness.cluster import Cluster, Event, pinned_job, wait_for, workers_under
from ci_harness.deployments import (
    apply,
    deployment,
    fleet_of,
    gpu,
    host_settings,
    hosts,
    placed,
    reset,
)
from ci_harness.fleet import unavailable
from ci_harness.streams import BackgroundStream

__all__ = [
    "AT_ONCE_S",
    "DEPLOYMENT_CTX",
    "LONG",
    "REPO",
    "THREE_HOSTS",
    "TWO_HOSTS",
    "Scene",
    "apply_deployment",
    "apply_replicas",
    "completed",
    "cordon_device",
    "emptied_fleet",
    "engine_pid",
    "fleet_scene",
    "hold_up",
    "job_for_pool",
    "pending_reasons",
    "ready_pools",
    "refused",
    "reset_devices",
    "run_job",
    "running",
    "says",
]

REPO = Path(__file__).resolve().parents[4]
LONG = 8000  # tokens: several seconds of generation on the tiny model
DEPLOYMENT_CTX = 2048
AT_ONCE_S = 5.0  # "refused at once": well under any queue wait
# The fleets' hosts: the MiB and compute capability of each one's simulated GPU.
TWO_HOSTS = {"host-a": (1024, "8.6"), "host-b": (1024, "8.6")}
THREE_HOSTS = {"host-a": (1024, "8.6"), "host-b": (600, "8.6"), "host-c": (8192, "9.0")}


def _quoted(text: str) -> str:
    return text


setattr(_quoted, "pattern", r'[^"]*')  # noqa: B010 (parse reads the attribute)


def says(text: str) -> parsers.parse:
    """A step parser where every untyped `{name}` is a quoted value (no `"` inside),
    so one step text cannot swallow another's quotes and match two definitions."""
    return parsers.parse(re.sub(r"\{(\w+)\}", r"{\1:Q}", text), extra_types={"Q": _quoted})


@dataclass
class Scene:
    """What a scenario's steps learn and leave for later steps."""

    streams: dict[str, BackgroundStream] = field(default_factory=dict)
    engines: dict[str, int] = field(default_factory=dict)  # pool -> engine pid seen first
    paused: list[int] = field(default_factory=list)  # engine pids held up by SIGSTOP
    response: httpx.Response | None = None
    events: list[Event] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def resume(self) -> None:
        while self.paused:
            pid = self.paused.pop()
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def engine_pid(cluster: Cluster, pool_id: str) -> int:
    host_id = cluster.pool(pool_id)["host_id"]
    pids = wait_for(lambda: cluster.worker_pids(host_id, pool_id), f"the engine of {pool_id}")
    assert len(pids) == 1, f"pool {pool_id} runs {len(pids)} engines: {pids}"
    return int(pids[0])


def hold_up(scene: Scene, pid: int) -> None:
    """Freeze an engine (SIGSTOP): a slow engine, not a dead one; `scene` resumes it."""
    os.kill(pid, signal.SIGSTOP)
    scene.paused.append(pid)


def completed(events: list[Event], tokens: int) -> bool:
    return bool(
        events
        and events[0].name == "started"
        and events[-1].name == "end"
        and events[-1].data["tokens_out"] == tokens
    )


def run_job(cluster: Cluster, body: dict[str, Any]) -> list[Event]:
    response = cluster.submit(body)
    assert response.status_code == 202, response.text
    return cluster.events(response.json()["task_id"])


def job_for_pool(cluster: Cluster, pool_id: str) -> dict[str, Any]:
    """A short job pinned to the pool, for the model name the pool answers to."""
    aliases = cluster.pool(pool_id).get("model_aliases") or ["default"]
    return pinned_job("default" if "default" in aliases else aliases[0], pool_id)


@contextmanager
def running(cluster: Cluster, ready: list[str]) -> Iterator[Cluster]:
    """Start the cluster (the pools in `ready` must become ready) for a module's
    scenarios; afterwards every daemon must exit 0 and no engine may survive."""
    try:
        cluster.start_orchestrator()
        for host_id in cluster.pools:
            cluster.start_manager(host_id)
        cluster.wait_ready(ready)
        yield cluster
    finally:
        codes = cluster.stop()
        survivors = workers_under(cluster.root)
        if survivors or any(codes.values()):
            print(cluster.logs())
    assert not survivors, f"engines survived their pool manager: {survivors}"
    assert all(code == 0 for code in codes.values()), codes


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text


def apply_deployment(cluster: Cluster, name: str, model: str, **spec: Any) -> None:
    """`PUT /v2/deployments/{name}`: the model at a 2048-token context unless `spec`
    says otherwise."""
    apply(cluster, name, {"model": model, "ctx": DEPLOYMENT_CTX, **spec})


def apply_replicas(
    cluster: Cluster, name: str, model: str, low: int, high: int, **spec: Any
) -> None:
    """`apply_deployment` with `low` to `high` replicas (and the rest of `spec`)."""
    apply_deployment(cluster, name, model, replicas={"min": low, "max": high}, **spec)


def ready_pools(cluster: Cluster, name: str, count: int) -> dict[str, str]:
    """Wait until the deployment has `count` pools, all ready; pool id -> host id."""
    wait_for(lambda: len(placed(cluster, name)) == count, f"{count} pools of {name}")
    where = placed(cluster, name)
    cluster.wait_ready(list(where))
    return where


def pending_reasons(cluster: Cluster, name: str) -> dict[tuple[str, str], str]:
    view = deployment(cluster, name)
    return {(r["host_id"], r["device_id"]): r["reason"] for r in view["pending_reasons"]}


def cordon_device(cluster: Cluster, host_id: str, device: str, cordoned: bool) -> None:
    with cluster.client() as client:
        body = {"cordoned": cordoned, "device": device}
        response = client.post(f"/v2/hosts/{host_id}/cordon", json=body)
    assert response.status_code == 204, response.text


def reset_devices(cluster: Cluster) -> None:
    """Between scenarios: every device uncordoned (hosts and deployments: `reset`)."""
    for host_id, seen in hosts(cluster).items():
        if gpu(seen)["cordoned"]:
            cordon_device(cluster, host_id, "gpu0", False)


@contextmanager
def fleet_scene(root: Path, model: Path, devices: dict[str, tuple[int, str]]) -> Iterator[Cluster]:
    """An orchestrator and one pool manager per host of `devices` (host -> its simulated
    GPU's MiB and compute capability), each holding `model` as `tiny` in its own network
    namespace of a fleet (`ci_harness.deployments.fleet_of`, which checks on exit that
    every daemon stopped with 0 and no worker survived). Skips where network namespaces
    cannot be made here."""
    reason = unavailable()
    if reason:
        pytest.skip(f"no network namespaces here: {reason}")
    settings = {
        h: host_settings(model, mib, capability) for h, (mib, capability) in devices.items()
    }
    with fleet_of(root, settings) as fleet:
        yield fleet


def emptied_fleet(cluster: Cluster) -> None:
    """Between scenarios: every device and host uncordoned, every deployment deleted and
    every pool gone (`reset_devices`, then `ci_harness.deployments.reset`)."""
    reset_devices(cluster)
    reset(cluster)
