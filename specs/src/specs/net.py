"""Addresses across hosts (FLT-01): one way to write, read and judge `host:port`.

Every link in the fleet names its peer as `host:port`, where host is an IPv4 address,
an IPv6 address in brackets (`[fd00::2]:8090`) or a host name. `local_address_toward`
asks the kernel which of this machine's addresses it would use to reach a peer (a UDP
socket's route lookup: nothing is sent), which is what a pool manager advertises for its
engines by default: the local address of its control link to the orchestrator.
"""

from __future__ import annotations

import ipaddress
import socket

__all__ = [
    "AddressError",
    "host_port",
    "is_loopback",
    "is_wildcard",
    "local_address_toward",
    "split_host_port",
]


class AddressError(ValueError):
    """An address that cannot be read as `host:port`; the message says why."""


def host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets."""
    bare = host.strip("[]")
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def split_host_port(address: str) -> tuple[str, int]:
    """(`host`, `port`) of `host:port` or `[v6]:port`; the host without brackets."""
    text = address.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise AddressError(f"{address!r}: an IPv6 address needs the form [addr]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise AddressError(f"{address!r}: expected host:port")
        if ":" in host:
            raise AddressError(f"{address!r}: write an IPv6 address in brackets, [addr]:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AddressError(f"{address!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost` (any other name is taken as remote)."""
    bare = host.strip("[]")
    if bare.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """True for the any-address of either family (`0.0.0.0`, `::`)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def local_address_toward(host: str, port: int) -> str:
    """This machine's address on the route to `host` (resolved here; OSError if it cannot
    be resolved or no route leads there). Blocking: resolution may ask a name server."""
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_DGRAM)
    last: OSError | None = None
    for family, kind, proto, _, target in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.connect(target)
            except OSError as exc:
                last = exc
                continue
            return str(probe.getsockname()[0]).split("%", 1)[0]
    raise last or OSError(f"no address for {host}")
