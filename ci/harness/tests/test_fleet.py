"""A fleet across network stacks (FLT-01/02/04): one orchestrator in the root namespace,
each pool manager with its engines in its own network namespace with its own address.
Jobs reach every host's engines across the bridge; a host that advertises loopback is
refused with a reason; links are secured with mutual TLS, and a plaintext client, a
certificate from another CA and a wrong join token are each refused with a clear
message in the refused side's log, while no key or token reaches any log line.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from ci_harness.cluster import Cluster, parse_events, tiny_pool, wait_for
from provisioners.testing import llama_cpp_server_for_tests, llama_server_for_tests

pytestmark = pytest.mark.integration
Factory = Callable[..., Cluster]


def stream_on(cluster: Cluster, pool_id: str) -> list[Any]:
    return cluster.stream_pinned(pool_id, prompt="Across the bridge")


def hosts(cluster: Cluster) -> dict[str, dict[str, Any]]:
    with cluster.client() as client:
        return {h["host_id"]: h for h in client.get("/v2/hosts").json()["hosts"]}


def log_of(cluster: Cluster, name: str) -> str:
    return (cluster.root / f"{name}.log").read_text(errors="replace")


def test_jobs_stream_from_engines_on_three_hosts_each_in_its_own_network_namespace(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    pools = {h: [tiny_pool(f"pool-{h}", tiny_model)] for h in ("h1", "h2", "h3")}
    cluster = cluster_factory(pools, {"h3": {"engine_ports": "42100-42199"}}, fleet=True)
    assert cluster.fleet is not None
    seen = hosts(cluster)
    for host_id in pools:
        address = cluster.fleet.hosts[host_id].address
        assert seen[host_id]["address"] == address and seen[host_id]["link"] == "plaintext"
        said = log_of(cluster, f"pool-managerd-{host_id}")
        assert f"engines listen on {address} and are advertised as {address}" in said
        (replica,) = cluster.pool(f"pool-{host_id}")["replicas"]
        assert replica["endpoint"].startswith(f"{address}:"), replica
        if host_id == "h3":  # engine_ports: one firewall rule opens this host's engines
            assert 42100 <= int(replica["endpoint"].rsplit(":", 1)[1]) <= 42199, replica
        events = stream_on(cluster, f"pool-{host_id}")
        assert events[0].name == "started" and events[0].data["pool_id"] == f"pool-{host_id}"
        assert events[-1].name == "end", events[-1]
        assert events[-1].data["tokens_out"] == 8 and any(e.name == "token" for e in events)
    addresses = {cluster.fleet.hosts[h].address for h in pools}
    assert len(addresses) == 3 and all(ipaddress.ip_address(a).is_private for a in addresses)
    # The harness's loss fault: every packet to one host dropped, then restored.
    (replica,) = cluster.pool("pool-h1")["replicas"]
    host, port = replica["endpoint"].rsplit(":", 1)
    cluster.fleet.degrade("h1", loss_percent=100)
    with pytest.raises(TimeoutError):
        socket.create_connection((host, int(port)), timeout=1.0)
    cluster.fleet.restore("h1")
    assert _connect_s(host, int(port)) < 1.0
    warned = log_of(cluster, "orchestratord")
    assert "INSECURE" in warned  # a plaintext link off the machine is said at every start


def _connect_s(host: str, port: int) -> float:
    """Seconds a TCP connection to host:port takes to open."""
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=5.0):
        return time.monotonic() - started


def test_a_host_advertising_loopback_over_a_bridge_is_refused_with_a_reason(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    bad = {"advertise_host": "127.0.0.1", "pools": [tiny_pool("pool-bad", tiny_model)]}
    cluster = cluster_factory(
        {"good": [tiny_pool("pool-good", tiny_model)], "bad": []},  # nobody waits for pool-bad
        hosts={"bad": bad},
        fleet=True,
    )

    def refused() -> list[dict[str, str]]:
        return list(hosts(cluster).get("bad", {}).get("refused_pools") or [])

    found = wait_for(refused, "the loopback pool to be refused")
    assert found[0]["pool_id"] == "pool-bad"
    assert "loopback" in found[0]["reason"] and "advertise_host" in found[0]["reason"]
    assert not cluster.pool("pool-bad").get("ready")
    manager_log = log_of(cluster, "pool-managerd-bad")
    assert "loopback" in manager_log
    wait_for(
        lambda: "orchestrator refuses pool pool-bad" in log_of(cluster, "pool-managerd-bad"),
        "the refusal in the pool manager's log",
    )
    events = stream_on(cluster, "pool-good")
    assert events[-1].name == "end"


def test_mutual_tls_on_control_and_worker_links_serves_jobs_and_keeps_secrets_out_of_logs(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory(
        {"h1": [tiny_pool("pool-h1", tiny_model)], "h2": [tiny_pool("pool-h2", tiny_model)]},
        fleet=True,
        tls=True,
        engine_client_auth=True,
    )
    seen = hosts(cluster)
    assert {seen[h]["link"] for h in ("h1", "h2")} == {"mtls"}
    for pool_id in ("pool-h1", "pool-h2"):
        events = stream_on(cluster, pool_id)
        assert events[-1].name == "end", events[-1]
    assert "INSECURE" not in log_of(cluster, "orchestratord")
    secrets = [cluster.token]
    for host_id, pool_id in (("h1", "pool-h1"), ("h2", "pool-h2")):
        (pid,) = cluster.worker_pids(host_id, pool_id)  # the per-pool engine key it was given
        secrets.append(psutil.Process(pid).environ()["LLORCH_WORKER_API_KEY"])
    assert all(len(s) >= 16 for s in secrets)
    assert cluster.tls is not None
    for key_file in cluster.tls.root.rglob("*.key"):
        secrets += _key_lines(key_file.read_text())
    assert all(code == 0 for code in cluster.stop().values())  # shutdown lines count too
    for log in cluster.root.rglob("*.log"):
        text = log.read_text(errors="replace")
        leaked = [s[:8] for s in secrets if s in text]
        assert not leaked, f"{log.name} holds a secret starting {leaked}"


def _key_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM key (any of them in a log would be a leak)."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


@pytest.mark.parametrize(
    ("case", "settings", "expected"),
    [
        ("plaintext", {"tls": None, "insecure": True}, r"UNAVAILABLE.*may serve TLS"),
        ("foreign-ca", "foreign", r"does not accept this host's client certificate"),
        ("wrong-token", "token", r"UNAUTHENTICATED.*join token"),
    ],
)
def test_a_pool_manager_with_bad_credentials_is_refused_with_a_clear_message(
    cluster_factory: Factory,
    tiny_model: Path,
    case: str,
    settings: Any,
    expected: str,
) -> None:
    cluster = cluster_factory({"good": [tiny_pool("pool-good", tiny_model)]}, fleet=True, tls=True)
    assert cluster.tls is not None
    intruder = f"intruder-{case}"
    address = cluster.host_address(intruder)
    if settings == "foreign":
        settings = {"tls": cluster.tls.foreign_host_tls(intruder, address)}
    elif settings == "token":
        settings = {"join_token_env": "LLORCH_WRONG_TOKEN"}
    cluster.pools[intruder] = []
    cluster.hosts[intruder] = settings
    cluster.env_extra["LLORCH_WRONG_TOKEN"] = "not-the-token"
    cluster.start_manager(intruder)
    wait_for(
        lambda: re.search(expected, log_of(cluster, f"pool-managerd-{intruder}")),
        f"the {case} refusal in the intruder's log",
    )
    assert intruder not in hosts(cluster)
    assert "not-the-token" not in log_of(cluster, "orchestratord")


def test_a_partitioned_host_leaves_the_view_within_the_lease_and_serves_again_after_heal(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory(
        {"h1": [tiny_pool("pool-h1", tiny_model)], "h2": [tiny_pool("pool-h2", tiny_model)]},
        fleet=True,
    )
    assert cluster.fleet is not None
    lease_s = 1.5  # the Cluster's lease_ms
    streaming = _Reader(cluster, {"placement": {"pin_pool_id": "pool-h1"}, "max_tokens": 16000})
    wait_for(lambda: streaming.tokens > 0, "the job on h1 to stream")
    busy = _Reader(cluster, {"placement": {"pin_pool_id": "pool-h2"}, "max_tokens": 1500})
    queued = cluster.submit({"model": "default", "prompt": "waiting", "max_tokens": 4})
    assert queued.status_code == 202, queued.text

    cluster.fleet.partition("h1")
    cut = time.monotonic()
    wait_for(lambda: not cluster.pool("pool-h1").get("live"), "pool-h1 to leave the view")
    left_after_s = time.monotonic() - cut
    assert left_after_s <= lease_s + 1.0, f"pool-h1 was offered {left_after_s:.1f} s after the cut"

    streaming.join()
    terminals = [e for e in streaming.events if e.name in ("end", "error")]
    assert len(terminals) == 1 and terminals[0] is streaming.events[-1], terminals
    error = terminals[0].data
    assert terminals[0].name == "error" and error["code"] == "WORKER_RESET", error
    assert error["retriable"] is True and "h1" in error["message"], error
    busy.join()
    assert busy.events[-1].name == "end"
    moved = cluster.events(queued.json()["task_id"])
    assert moved[0].data["pool_id"] == "pool-h2" and moved[-1].name == "end", moved[-1]
    assert hosts(cluster)["h1"]["live"] is False and hosts(cluster)["h1"]["lost_reason"]

    cluster.fleet.heal("h1")
    healed = time.monotonic()
    wait_for(
        lambda: cluster.pool("pool-h1").get("live") and cluster.pool("pool-h1").get("ready"),
        "pool-h1 to serve again",
        timeout_s=10.0,
    )
    events = stream_on(cluster, "pool-h1")
    assert events[-1].name == "end", events[-1]
    assert time.monotonic() - healed < 10.0 + 5.0  # rejoined within 10 s, then one short job


class _Reader:
    """Submit a job and read its event stream in a thread (one round trip)."""

    def __init__(self, cluster: Cluster, body: dict[str, Any]) -> None:
        self.events: list[Any] = []
        self.tokens = 0
        request = {"model": "default", "prompt": "A long story", **body}
        self._thread = threading.Thread(target=self._read, args=(cluster, request), daemon=True)
        self._thread.start()

    def _read(self, cluster: Cluster, body: dict[str, Any]) -> None:
        with (
            cluster.client() as client,
            client.stream(
                "POST", "/v2/tasks", json=body, headers={"Accept": "text/event-stream"}
            ) as response,
        ):
            assert response.status_code == 200, response.read()
            for event in parse_events(response.iter_lines()):
                self.events.append(event)
                if event.name == "token":
                    self.tokens += 1

    def join(self, timeout_s: float = 60.0) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the stream did not end"


def test_during_a_join_token_rotation_hosts_with_the_old_and_the_new_token_both_join(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory(
        {"old": [tiny_pool("pool-old", tiny_model)], "new": [tiny_pool("pool-new", tiny_model)]},
        hosts={"old": {"join_token_env": "LLORCH_OLD"}, "new": {"join_token_env": "LLORCH_NEW"}},
        start=False,
    )
    cluster.env_extra.update(LLORCH_OLD="old-token-1", LLORCH_NEW="new-token-2")
    cluster.token = "new-token-2, old-token-1"  # what the orchestrator accepts
    cluster.start()
    assert {"old", "new"} <= set(hosts(cluster))
    for pool_id in ("pool-old", "pool-new"):
        assert stream_on(cluster, pool_id)[-1].name == "end"


def test_a_fleet_over_ipv6_advertises_bracketed_endpoints_and_serves(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory({"v6": [tiny_pool("pool-v6", tiny_model)]}, fleet=True, ipv6=True)
    assert cluster.fleet is not None
    address = cluster.fleet.hosts["v6"].address6
    assert hosts(cluster)["v6"]["address"] == address
    (replica,) = cluster.pool("pool-v6")["replicas"]
    assert replica["endpoint"].startswith(f"[{address}]:"), replica
    assert stream_on(cluster, "pool-v6")[-1].name == "end"


@pytest.mark.timeout(300, func_only=True)  # the first run on a machine builds llama-server
def test_http_engines_on_a_tls_host_serve_https_with_the_host_certificate(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    engines = {
        "llamacpp": list(llama_server_for_tests().command),
        "llamacpp-server-py": list(llama_cpp_server_for_tests().command),
    }
    pools = [
        {**tiny_pool(f"pool-{engine}", tiny_model, ctx=4096), "engine": engine}
        | {"engine_command": command}
        for engine, command in engines.items()
    ]
    cluster = cluster_factory({"h1": pools}, fleet=True, tls=True, start=False)
    cluster.start()
    assert cluster.tls is not None
    address = cluster.host_address("h1")
    for engine in engines:
        (replica,) = cluster.pool(f"pool-{engine}")["replicas"]
        endpoint = replica["endpoint"]
        assert endpoint.startswith(f"{address}:"), replica
        # The engine port speaks TLS with a certificate of the fleet's CA for that address.
        trusted = ssl.create_default_context(cafile=str(cluster.tls.ca_file))
        with httpx.Client(verify=trusted, timeout=5.0) as client:
            assert client.get(f"https://{endpoint}/health").status_code < 500
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{endpoint}/health", timeout=5.0).raise_for_status()
        events = stream_on(cluster, f"pool-{engine}")
        assert events[-1].name == "end", events[-1]
    assert "plaintext HTTP" not in log_of(cluster, "pool-managerd-h1")
