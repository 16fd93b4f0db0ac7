"""Where this host's engines listen, what the orchestrator dials, and over what (FLT-01/02).

The token stream goes from an engine straight to the orchestrator, so every engine must
listen on an address the orchestrator can reach and be advertised by it. `decide` (pure)
settles the addresses from the configuration and one measured fact, this host's
address on the route to the orchestrator (`local`):

| setting            | default                                                        |
|--------------------|----------------------------------------------------------------|
| `advertise_host`   | `local` (so a plain two-host set-up needs no setting)          |
| `engine_bind_host` | the advertised host when it is an address of this machine,     |
|                    | else `local` (a name or a NAT address is not bound)            |

This manager probes its own engines at the bound address (the loopback of its family
when engines bind the wildcard), checking their certificate for the advertised host.
A loopback advertised host while the orchestrator is reached over a non-loopback
route is reported as a problem: the orchestrator refuses such endpoints.

`resolve` measures `local` (blocking: it may resolve a name); `settle_network` retries
it until the orchestrator's name resolves (a compose service may start first), then
refuses a plaintext control link that leaves the machine unless `insecure: true`, and
warns at every start when it is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from dataclasses import dataclass

import psutil
from specs.net import is_loopback, is_wildcard, local_address_toward, split_host_port
from specs.tls import ClientTls, TlsMaterial

from pool_managerd.config import ConfigError, ManagerConfig

__all__ = ["HostNetwork", "decide", "local_addresses", "resolve", "settle_network"]

log = logging.getLogger("pool_managerd.network")
_RETRY_S = (0.25, 5.0)  # first and longest wait between tries to reach the orchestrator


@dataclass(frozen=True, slots=True)
class HostNetwork:
    advertise_host: str  # the host part of every endpoint this manager reports
    bind_host: str  # engines listen here
    probe_host: str  # this manager dials its own engines here
    control_loopback: bool  # the orchestrator is on this machine's loopback
    engine_tls: TlsMaterial | None = None  # engines serve TLS with this identity
    probe_tls: ClientTls | None = None  # and this manager's probes dial them so
    problem: str = ""  # why the orchestrator will refuse these endpoints, if it will


def decide(
    *,
    advertise_host: str,
    engine_bind_host: str,
    local: str,
    own_addresses: Collection[str],
    control_loopback: bool,
    tls: TlsMaterial | None = None,
) -> HostNetwork:
    advertise = advertise_host or local
    if engine_bind_host:
        bind = engine_bind_host
    elif advertise in own_addresses or is_loopback(advertise):
        bind = advertise
    else:
        bind = local
    probe = bind
    if is_wildcard(bind):
        probe = "::1" if ":" in bind else "127.0.0.1"
    problem = ""
    if is_loopback(advertise) and not control_loopback:
        problem = (
            f"engines are advertised at loopback address {advertise} but the orchestrator "
            f"is reached over {local}: it cannot dial them; set advertise_host to an "
            "address of this host that the orchestrator can reach"
        )
    engine_tls = tls if tls is not None and tls.has_identity else None
    probe_tls = None
    if engine_tls is not None:
        probe_tls = ClientTls(engine_tls.ca_pem, engine_tls.cert_pem, engine_tls.key_pem, advertise)
    return HostNetwork(advertise, bind, probe, control_loopback, engine_tls, probe_tls, problem)


def local_addresses() -> frozenset[str]:
    """Every address of this machine's interfaces (IPv4 and IPv6, scope suffix dropped)."""
    found = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family.name in ("AF_INET", "AF_INET6"):
                found.add(entry.address.split("%", 1)[0])
    return frozenset(found)


def resolve(config: ManagerConfig, tls: TlsMaterial | None) -> HostNetwork:
    """Measure the route to the orchestrator and decide (OSError while it cannot be
    resolved or reached; the caller retries)."""
    host, port = split_host_port(config.orchestrator)
    local = local_address_toward(host, port)
    return decide(
        advertise_host=config.advertise_host,
        engine_bind_host=config.engine_bind_host,
        local=local,
        own_addresses=local_addresses(),
        control_loopback=is_loopback(local),
        tls=tls if config.engine_tls else None,
    )


async def settle_network(
    config: ManagerConfig, tls: TlsMaterial | None, stop: asyncio.Event
) -> HostNetwork | None:
    """The host's network, once the orchestrator's address resolves (None: stopped while
    waiting). ConfigError for a plaintext non-loopback control link without `insecure`."""
    delay = _RETRY_S[0]
    while True:
        try:
            network = await asyncio.to_thread(resolve, config, tls)
            break
        except OSError as exc:
            log.warning(
                "cannot reach orchestrator %s yet (%s); retrying in %.1f s",
                config.orchestrator,
                exc,
                delay,
                extra={"action": "network"},
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
            return None
        delay = min(delay * 2, _RETRY_S[1])
    _check_security(config, network, tls)
    log.info(
        "engines listen on %s and are advertised as %s%s",
        network.bind_host,
        network.advertise_host,
        " over TLS" if network.engine_tls else "",
        extra={"action": "network"},
    )
    if network.problem:
        log.error(network.problem, extra={"action": "network"})
    return network


def _check_security(config: ManagerConfig, network: HostNetwork, tls: TlsMaterial | None) -> None:
    if network.control_loopback or tls is not None:
        return
    if not config.insecure:
        raise ConfigError(
            f"the control link to {config.orchestrator} leaves this machine: configure tls "
            "(ca_file, and cert_file/key_file for mutual TLS) or set insecure: true"
        )
    log.warning(
        "INSECURE: the control link to %s is plaintext (insecure: true): the join token and "
        "per-pool engine keys cross the network unencrypted",
        config.orchestrator,
        extra={"action": "insecure"},
    )
