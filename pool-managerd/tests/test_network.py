"""Where engines listen and what is advertised (`pool_managerd.network.decide`, FLT-01)."""

from __future__ import annotations

import pytest
from pool_managerd.network import HostNetwork, decide
from specs.tls import TlsMaterial

OWN = frozenset({"10.77.0.2", "192.168.5.9", "fd00::2", "127.0.0.1", "::1"})


def net(
    advertise: str = "",
    bind: str = "",
    local: str = "10.77.0.2",
    *,
    control_loopback: bool = False,
    tls: TlsMaterial | None = None,
) -> HostNetwork:
    return decide(
        advertise_host=advertise,
        engine_bind_host=bind,
        local=local,
        own_addresses=OWN,
        control_loopback=control_loopback,
        tls=tls,
    )


@pytest.mark.parametrize(
    ("advertise", "bind", "local", "expected"),
    [
        # a plain second host: both default to its address toward the orchestrator
        ("", "", "10.77.0.2", ("10.77.0.2", "10.77.0.2", "10.77.0.2")),
        # one machine: loopback everywhere
        ("", "", "127.0.0.1", ("127.0.0.1", "127.0.0.1", "127.0.0.1")),
        # data on another interface of this host: bind what is advertised
        ("192.168.5.9", "", "10.77.0.2", ("192.168.5.9", "192.168.5.9", "192.168.5.9")),
        # a name or a NAT address is not this host's: bind the local address
        ("pool-a", "", "10.77.0.2", ("pool-a", "10.77.0.2", "10.77.0.2")),
        ("203.0.113.7", "", "10.77.0.2", ("203.0.113.7", "10.77.0.2", "10.77.0.2")),
        # the wildcard binds every address; probes then use loopback of its family
        ("pool-a", "0.0.0.0", "10.77.0.2", ("pool-a", "0.0.0.0", "127.0.0.1")),
        ("pool-a", "::", "fd00::2", ("pool-a", "::", "::1")),
        ("", "", "fd00::2", ("fd00::2", "fd00::2", "fd00::2")),
    ],
)
def test_engines_bind_and_advertise_consistently(
    advertise: str, bind: str, local: str, expected: tuple[str, str, str]
) -> None:
    network = net(advertise, bind, local, control_loopback=local in ("127.0.0.1", "::1"))
    got = (network.advertise_host, network.bind_host, network.probe_host)
    assert got == expected
    assert network.problem == ""


def test_advertising_loopback_over_a_link_that_leaves_the_host_is_a_named_problem() -> None:
    network = net("127.0.0.1", "", "10.77.0.2")
    assert "loopback" in network.problem and "advertise_host" in network.problem


def test_engines_serve_tls_only_with_a_host_certificate_and_probes_check_the_advertised_name() -> (
    None
):
    with_identity = TlsMaterial(b"CA", b"CERT", b"KEY")
    network = net("pool-a", tls=with_identity)
    assert network.engine_tls is with_identity
    assert network.probe_tls is not None and network.probe_tls.server_name == "pool-a"
    assert net(tls=TlsMaterial(b"CA")).engine_tls is None
