"""Deployment values: the operator's desired state and what placement sees of hosts.

All frozen; memory in bytes, durations in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Constraints",
    "DeploymentSpec",
    "DeviceView",
    "HostView",
    "PlacementChoice",
    "Policy",
    "Rejection",
]

Policy = Literal["binpack", "spread"]


@dataclass(frozen=True, slots=True)
class Constraints:
    hosts: frozenset[str] = frozenset()  # empty: any host
    device_kind: str | None = None  # "gpu" or "cpu"; None: any
    min_compute_capability: str | None = None  # e.g. "8.0"


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    name: str
    model: str  # model reference the pool managers resolve (catalog id, or file:/path)
    engine: str = "llamacpp-inproc"
    ctx: int = 4096
    slots: int = 1
    min_replicas: int = 1
    max_replicas: int = 1
    policy: Policy = "spread"
    constraints: Constraints = field(default_factory=Constraints)
    idle_unload_after_ms: int | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceView:
    id: str
    kind: str
    memory_total_bytes: int
    memory_free_bytes: int
    compute_capability: str = ""
    cordoned: bool = False
    simulated: bool = False  # declared in a pool manager's config, no hardware


@dataclass(frozen=True, slots=True)
class HostView:
    host_id: str
    live: bool
    cordoned: bool
    engines: frozenset[str]
    models: frozenset[str]  # model references / digests the host already holds
    devices: tuple[DeviceView, ...]
    deployment_pools: int = 0  # pools of the deployment being placed, already on this host


@dataclass(frozen=True, slots=True)
class Rejection:
    host_id: str
    device_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class PlacementChoice:
    host_id: str
    device_id: str
    score: tuple[float, ...]
