"""Which reported endpoints the orchestrator dials (`orchestratord.link_policy`, FLT-01),
and the configuration of links across hosts (FLT-02)."""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestratord.config import ConfigError, load_config
from orchestratord.link_policy import peer_host, refuse_unreachable
from orchestratord.registry import PoolInfo, ReplicaInfo


def pool(pool_id: str, *endpoints: str) -> PoolInfo:
    replicas = tuple(ReplicaInfo(i, e, True, 1, 1) for i, e in enumerate(endpoints))
    return PoolInfo(
        pool_id, "h", "ready", True, False, "llamacpp-inproc", "", "native", "m", "d",
        frozenset(), 2048, len(endpoints), frozenset(), replicas,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.77.0.2:51234", "10.77.0.2"),
        ("ipv6:[fd00::2]:51234", "fd00::2"),
        ("ipv6:[::1]:1", "::1"),
        ("ipv6:%5Bfd31:59ca:1::2%5D:40522", "fd31:59ca:1::2"),
        ("unix:/run/llorch.sock", ""),
        ("", ""),
    ],
)
def test_the_peer_host_is_read_from_grpc_peer_strings(peer: str, host: str) -> None:
    assert peer_host(peer) == host


def test_a_loopback_endpoint_over_a_remote_link_is_refused_and_kept_listed_unready() -> None:
    offered, refused = refuse_unreachable(
        [pool("good", "10.77.0.2:4000"), pool("bad", "10.77.0.2:4001", "127.0.0.1:4002")],
        "10.77.0.2",
    )
    assert list(refused) == ["bad"]
    assert "replica 1" in refused["bad"] and "advertise_host" in refused["bad"]
    bad = next(p for p in offered if p.pool_id == "bad")
    assert not bad.ready and bad.replicas == () and bad.last_error == refused["bad"]
    assert next(p for p in offered if p.pool_id == "good").ready


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1", ""])
def test_loopback_endpoints_are_fine_when_the_link_itself_is_local(peer: str) -> None:
    _, refused = refuse_unreachable([pool("p", "127.0.0.1:4000", "[::1]:4001")], peer)
    assert refused == {}


def test_an_endpoint_that_is_not_host_port_is_refused_saying_so() -> None:
    _, refused = refuse_unreachable([pool("p", "fd00::2:4000")], "fd00::2")
    assert "not host:port" in refused["p"]


@pytest.fixture
def join_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "t")


@pytest.mark.usefixtures("join_token")
def test_a_plaintext_control_link_off_the_machine_needs_insecure_and_is_flagged() -> None:
    with pytest.raises(ConfigError, match="insecure: true"):
        load_config(None, control_host="0.0.0.0")
    config = load_config(None, control_host="0.0.0.0", insecure=True)
    assert config.plaintext_off_host
    assert not load_config(None).plaintext_off_host


@pytest.mark.usefixtures("join_token")
def test_api_keys_can_live_in_their_own_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"- {{name: ops, key_sha256: '{'a' * 64}'}}\n")
    config = load_config(None, api_keys_file=str(keys), http_host="0.0.0.0")
    assert [k.name for k in config.api_keys] == ["ops"]
    keys.write_text("ops: nope\n")
    with pytest.raises(ConfigError, match="api_keys_file"):
        load_config(None, api_keys_file=str(keys))


@pytest.mark.usefixtures("join_token")
def test_tls_for_the_control_link_needs_a_certificate(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(ConfigError, match="cert_file"):
        load_config(None, tls={"ca_file": str(tmp_path / "ca.pem")})
