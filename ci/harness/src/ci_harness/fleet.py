"""`Fleet`: hosts as separate network stacks, for tests that speak of several hosts (FLT-04).

A Linux bridge in the root namespace holds the subnet's first address (the orchestrator
listens there); each host is a network namespace joined to the bridge by a veth pair,
with its own address, its own loopback and a default route to the bridge. Every host
also has an IPv6 address (a ULA /64 per fleet, `gateway6` on the bridge), so the same
fleet runs over IPv6 when the orchestrator listens on `gateway6`. A process
started with `Fleet.command(host, argv)` runs inside that host's namespace (`ip netns
exec`), so its engines bind and advertise that host's address and the orchestrator
reaches them across the bridge, as it would a second machine.

Faults for the partition tests and the chaos harness: `partition(host)` takes the host's
link down (packets are dropped, connections stall, nothing is reset), `heal(host)` brings
it back; `degrade(host, loss_percent, delay_ms)` adds `tc netem` loss and delay on the
link, `restore(host)` removes it.

Needs root and `ip netns` (iproute2). `unavailable()` says why a machine cannot run
these tests, for a skip with that reason. Names are short (interface names are at most
15 bytes) and carry a per-fleet tag, so fleets of concurrent test runs do not collide;
`close()` deletes what this fleet made, and only that.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

__all__ = ["Fleet", "FleetHost", "unavailable"]

_SUBNETS = ipaddress.IPv4Network("10.231.0.0/16")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def unavailable() -> str:
    """Why network namespaces cannot be made here ("" when they can)."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    name = f"llprobe{secrets.token_hex(3)}"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return ""


@dataclass(frozen=True, slots=True)
class FleetHost:
    host_id: str
    netns: str
    address: str  # this host's own address on the fleet's bridge
    address6: str  # and its IPv6 address there
    link: str  # the root-namespace end of its veth pair (what partition takes down)


@dataclass
class Fleet:
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: dict[str, FleetHost] = field(default_factory=dict)
    bridge: str = ""
    gateway: str = ""  # the root namespace's address on the bridge
    gateway6: str = ""  # its IPv6 address there
    _network: ipaddress.IPv4Network | None = None

    def start(self) -> Fleet:
        self._network = _free_subnet()
        self.bridge = f"llb{self.tag}"
        self.gateway = str(self._network.network_address + 1)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/{self._network.prefixlen}", "dev", self.bridge)
        self.gateway6 = self._v6(1)
        _ip("-6", "addr", "add", f"{self.gateway6}/64", "dev", self.bridge, "nodad")
        _ip("link", "set", self.bridge, "up")
        return self

    def add_host(self, host_id: str) -> FleetHost:
        """A namespace with its own address, joined to the bridge."""
        assert self._network is not None, "start() the fleet first"
        index = len(self.hosts) + 1
        netns = f"ll{self.tag}h{index}"
        link = f"ll{self.tag}v{index}"
        address = str(self._network.network_address + 1 + index)
        _ip("netns", "add", netns)
        _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", link, "master", self.bridge, "up")
        _ip("-n", netns, "addr", "add", f"{address}/{self._network.prefixlen}", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "route", "add", "default", "via", self.gateway)
        address6 = self._v6(1 + index)
        _ip("-n", netns, "-6", "addr", "add", f"{address6}/64", "dev", "eth0", "nodad")
        host = FleetHost(host_id, netns, address, address6, link)
        self.hosts[host_id] = host
        return host

    def _v6(self, index: int) -> str:
        """An address of the fleet's ULA /64 (no duplicate detection: usable at once)."""
        assert self._network is not None
        third = str(self._network.network_address).split(".")[2]
        return str(ipaddress.IPv6Address(f"fd31:{int(self.tag, 16):x}:{third}::{index:x}"))

    def command(self, host_id: str, argv: list[str]) -> list[str]:
        """`argv` run inside the host's namespace (the same process: exec, no wrapper)."""
        return ["ip", "netns", "exec", self.hosts[host_id].netns, *argv]

    # -- faults ----------------------------------------------------------------------------

    def partition(self, host_id: str) -> None:
        """Cut the host off: its link goes down, every packet to or from it is dropped."""
        _ip("link", "set", self.hosts[host_id].link, "down")

    def heal(self, host_id: str) -> None:
        _ip("link", "set", self.hosts[host_id].link, "up")

    def degrade(self, host_id: str, loss_percent: float = 0.0, delay_ms: float = 0.0) -> None:
        """Packet loss and delay on the host's link (both directions' root-side queue)."""
        link = self.hosts[host_id].link
        subprocess.run(
            ["tc", "qdisc", "replace", "dev", link, "root", "netem"]
            + (["delay", f"{delay_ms}ms"] if delay_ms else [])
            + (["loss", f"{loss_percent}%"] if loss_percent else []),
            check=True,
            capture_output=True,
        )

    def restore(self, host_id: str) -> None:
        link = self.hosts[host_id].link
        subprocess.run(["tc", "qdisc", "del", "dev", link, "root"], check=False)

    # -- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Delete the namespaces (killing anything still inside) and the bridge."""
        for host in self.hosts.values():
            pids = _ip("netns", "pids", host.netns, check=False).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-KILL", pid], check=False, capture_output=True)
            _ip("netns", "del", host.netns, check=False)
            _ip("link", "del", host.link, check=False)
        self.hosts.clear()
        if self.bridge:
            _ip("link", "del", self.bridge, check=False)
            self.bridge = ""


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.231.0.0/16 that no interface of this machine uses yet."""
    used = _ip("-4", "-o", "addr", "show").stdout
    for subnet in _SUBNETS.subnets(new_prefix=24):
        prefix = str(subnet.network_address).rsplit(".", 1)[0] + "."
        if f" {prefix}" not in used:
            return subnet
    raise RuntimeError("no free /24 left in 10.231.0.0/16 for a test fleet")
