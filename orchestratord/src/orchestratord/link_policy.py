"""Which reported endpoints the orchestrator will dial (FLT-01): pure, no I/O.

A pool manager reports each replica's endpoint as `host:port`. Over a control link that
comes from another machine, a loopback endpoint names the orchestrator's own loopback,
not the engine: dialling it fails every job (or reaches something else). Such a pool is
refused, with a reason that reaches `GET /v2/hosts`, the pool's `last_error`, the
orchestrator's log and, as a `Refusals` message, the pool manager's log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from urllib.parse import unquote

from specs.net import AddressError, is_loopback, split_host_port

from orchestratord.registry import PoolInfo

__all__ = ["peer_host", "refuse_unreachable"]


def peer_host(peer: str) -> str:
    """The host part of a gRPC peer string (`ipv4:10.0.0.2:5120`, `ipv6:[::1]:5120`, which
    gRPC writes URL-encoded as `ipv6:%5B::1%5D:5120`, `unix:/path`); "" when it names no
    network address."""
    kind, _, rest = unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    try:
        return split_host_port(rest)[0]
    except AddressError:
        return ""


def _problem(pool: PoolInfo, peer: str) -> str:
    for replica in pool.replicas:
        if not replica.endpoint:
            continue
        try:
            host, _ = split_host_port(replica.endpoint)
        except AddressError as exc:
            return f"replica {replica.index} endpoint is not host:port: {exc}"
        if is_loopback(host) and not is_loopback(peer):
            return (
                f"replica {replica.index} is advertised at loopback {replica.endpoint} "
                f"but its host's control link comes from {peer}: the orchestrator cannot "
                "dial it; set advertise_host on that pool manager"
            )
    return ""


def refuse_unreachable(
    pools: Iterable[PoolInfo], peer: str
) -> tuple[list[PoolInfo], dict[str, str]]:
    """(pools as offered, {pool_id: reason}): a refused pool stays listed, not ready, with
    no replica to dial and the reason as its `last_error`. A link with no network peer
    (a Unix socket, or unknown) is judged by nothing."""
    offered: list[PoolInfo] = []
    refused: dict[str, str] = {}
    for pool in pools:
        reason = _problem(pool, peer) if peer else ""
        if reason:
            refused[pool.pool_id] = reason
            pool = replace(pool, ready=False, replicas=(), last_error=reason)
        offered.append(pool)
    return offered, refused
