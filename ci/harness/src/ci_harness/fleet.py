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
it back; `degrade(host, loss_percent)` drops that share of the packets between the
orchestrator and the host (iptables `statistic`; `tc netem` would add delay too, but
these kernels have no `sch_netem`), `restore(host)` removes it.

Needs root and `ip netns` (iproute2); `degrade` installs Debian's iptables if missing.
`unavailable()` says why a machine cannot run these tests, for a skip with that reason.
Names are short (interface names are at most 15 bytes) and carry a per-fleet tag, so
fleets of concurrent test runs do not collide; `close()` deletes what this fleet made,
and only that.
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
    _degraded: dict[str, float] = field(default_factory=dict)  # host -> loss percent
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

    def degrade(self, host_id: str, loss_percent: float) -> None:
        """Drop this share of the packets between the root namespace (the orchestrator)
        and the host, both ways, at random (iptables' `statistic` match: the kernels
        here have no `sch_netem`, so no delay). 100 drops everything, silently."""
        self.restore(host_id)
        _ensure_iptables()
        for rule in self._loss_rules(host_id, loss_percent / 100.0):
            subprocess.run([*rule[:1], "-I", *rule[1:]], check=True, capture_output=True)
        self._degraded[host_id] = loss_percent

    def restore(self, host_id: str) -> None:
        """Undo `degrade` (no effect when the host is not degraded)."""
        loss_percent = self._degraded.pop(host_id, None)
        if loss_percent is None:
            return
        for rule in self._loss_rules(host_id, loss_percent / 100.0):
            subprocess.run([*rule[:1], "-D", *rule[1:]], check=False, capture_output=True)

    def _loss_rules(self, host_id: str, probability: float) -> list[list[str]]:
        host = self.hosts[host_id]
        drop = ["-m", "statistic", "--mode", "random", "--probability", f"{probability:.4f}"]
        rules = []
        for tool, address in (("iptables", host.address), ("ip6tables", host.address6)):
            rules.append([tool, "INPUT", "-s", address, *drop, "-j", "DROP"])
            rules.append([tool, "OUTPUT", "-d", address, *drop, "-j", "DROP"])
        return rules

    # -- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Delete the namespaces (killing anything still inside), the bridge and any
        loss rules."""
        for host_id in list(self._degraded):
            self.restore(host_id)
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


def _ensure_iptables() -> None:
    """Install Debian's iptables when missing (not in the base image; Docker pulls it in)."""
    if shutil.which("iptables") and shutil.which("ip6tables"):
        return
    install = ["apt-get", "install", "-y", "--no-install-recommends", "iptables"]
    if subprocess.run(install, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        subprocess.run(install, check=True, capture_output=True)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.231.0.0/16 that no interface of this machine uses yet."""
    used = _ip("-4", "-o", "addr", "show").stdout
    for subnet in _SUBNETS.subnets(new_prefix=24):
        prefix = str(subnet.network_address).rsplit(".", 1)[0] + "."
        if f" {prefix}" not in used:
            return subnet
    raise RuntimeError("no free /24 left in 10.231.0.0/16 for a test fleet")
