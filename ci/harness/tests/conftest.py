"""Fixtures for the cross-service tests: the tiny model and a cluster factory."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from catalog_core import TinyModelSpec, write_tiny_model
from ci_harness.cluster import Cluster
from ci_harness.fleet import Fleet, unavailable
from ci_harness.tls import FleetCerts


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture model with a 32k trained context, so long generations are possible."""
    return write_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny.gguf", TinyModelSpec(context_length=32768)
    )


@pytest.fixture
def cluster_factory(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Cluster]]:
    """Start clusters; on teardown stop them, check clean exits and no orphan workers.

    `fleet=True` puts every host in its own network namespace (FLT-04; skipped with the
    reason on a machine that cannot make namespaces); `tls=True` secures the links that
    cross hosts with certificates made for this test (mutual TLS on the control link;
    `engine_client_auth=True` also on the workers' gRPC)."""
    started: list[Cluster] = []

    def make(
        pools: dict[str, list[dict[str, Any]]],
        hosts: dict[str, dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        *,
        fleet: bool = False,
        tls: bool = False,
        engine_client_auth: bool = False,
        ipv6: bool = False,
        start: bool = True,
        **orchestrator: Any,
    ) -> Cluster:
        root = tmp_path_factory.mktemp("cluster")
        cluster = Cluster(root, pools, orchestrator, hosts or {}, headers or {})
        started.append(cluster)
        if fleet:
            reason = unavailable()
            if reason:
                pytest.skip(f"no network namespaces here: {reason}")
            cluster.fleet = Fleet().start()
            cluster.ipv6 = ipv6
        if tls:
            names = (cluster.control_host, "127.0.0.1")
            cluster.tls = FleetCerts(root / "tls", names)
            cluster.engine_client_auth = engine_client_auth
        return cluster.start() if start else cluster

    yield make
    for cluster in started:
        try:
            codes = cluster.stop()
        finally:
            if cluster.fleet is not None:
                cluster.fleet.close()
        orphans = [
            pid
            for host in cluster.pools
            for p in cluster.pools[host]
            for pid in cluster.worker_pids(host, p["id"])
        ]
        failed = request.node.stash.get(_FAILED, False)
        if failed or orphans or any(codes.values()):
            print(cluster.logs())
        assert not orphans, f"worker processes survived their pool manager: {orphans}"
        assert all(code == 0 for code in codes.values()), codes


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


REQUIREMENT_TAG = re.compile(r"[A-Z]+-\d{2}")


def pytest_bdd_apply_tag(tag: str, function: Callable[..., object]) -> bool | None:
    """A scenario's requirement ID tag (`@API-01`, the BDD folders' features) is read by
    ci/gen-traceability from the feature file, not a pytest marker (`--strict-markers`
    would refuse it); other tags get pytest-bdd's default."""
    return True if REQUIREMENT_TAG.fullmatch(tag) else None
