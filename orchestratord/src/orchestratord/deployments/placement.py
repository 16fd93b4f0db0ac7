"""Deployment placement: where a new pool of a deployment goes (pure; PLC-04, PLC-07).

For each (host, device) the checks run in order — the host is live, not cordoned, has
the engine and matches the host constraint; the device is not cordoned, is of the wanted
kind and compute capability, and has free memory (measured, so foreign processes count)
for the estimate. Every rejected device gets a reason. Survivors are ranked by policy:

- `binpack`: least free memory left after placing (fill devices before opening new ones);
- `spread`: fewest pools of this deployment on the host, then most free memory;

with a bonus for hosts that already hold the model files, placed before the policy's
term, and a final tie-break on (host id, device id) so decisions are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestratord.deployments.model import (
    DeploymentSpec,
    DeviceView,
    HostView,
    PlacementChoice,
    Rejection,
)

__all__ = ["choose_device", "compute_capability_at_least", "estimate_kind"]


def compute_capability_at_least(have: str, want: str) -> bool:
    """'8.6' >= '8.0'; an empty capability (a CPU) never satisfies a GPU requirement."""
    try:
        return tuple(int(p) for p in have.split(".")) >= tuple(int(p) for p in want.split("."))
    except ValueError:
        return False


def estimate_kind(device: DeviceView) -> str:
    """Which estimate a device is sized with: `gpu` (every layer offloaded, the GPU's
    memory) for a real GPU; `cpu` otherwise, simulated GPUs included (placement tests
    size them as declared, with the estimate the API shows)."""
    return "gpu" if device.kind == "gpu" and not device.simulated else "cpu"


def _host_reason(spec: DeploymentSpec, host: HostView) -> str:
    if not host.live:
        return "host is not connected"
    if host.cordoned:
        return "host is cordoned"
    if spec.engine not in host.engines:
        return f"engine {spec.engine} is not available on the host"
    if spec.constraints.hosts and host.host_id not in spec.constraints.hosts:
        return "host is not in constraints.hosts"
    return ""


def _device_reason(spec: DeploymentSpec, device: DeviceView, needed: int) -> str:
    wanted = spec.constraints
    if device.cordoned:
        return "device is cordoned"
    if wanted.device_kind and device.kind != wanted.device_kind:
        return f"device is a {device.kind}, wanted {wanted.device_kind}"
    if wanted.min_compute_capability and not compute_capability_at_least(
        device.compute_capability, wanted.min_compute_capability
    ):
        return (
            f"compute capability {device.compute_capability or 'none'} is below "
            f"{wanted.min_compute_capability}"
        )
    if device.memory_free_bytes < needed:
        return (
            f"needs {needed} bytes, {device.memory_free_bytes} free of {device.memory_total_bytes}"
        )
    return ""


def _score(
    spec: DeploymentSpec, host: HostView, device: DeviceView, needed: int, model_present: bool
) -> tuple[float, ...]:
    """Lower is better."""
    left = float(device.memory_free_bytes - needed)
    present = 0.0 if model_present else 1.0
    if spec.policy == "binpack":
        return (present, left)
    return (float(host.deployment_pools), present, -left)


def choose_device(
    spec: DeploymentSpec,
    needed_bytes: int | Mapping[str, int],
    hosts: Sequence[HostView],
    model_keys: frozenset[str],
) -> PlacementChoice | tuple[Rejection, ...]:
    """The best (host, device) for one more pool, or why none fits. `needed_bytes`: one
    size for every device, or sizes by `estimate_kind` (`cpu`'s for a kind not named)."""
    rejections: list[Rejection] = []
    best: PlacementChoice | None = None
    for host in sorted(hosts, key=lambda h: h.host_id):
        reason = _host_reason(spec, host)
        if reason:
            rejections.append(Rejection(host.host_id, "*", reason))
            continue
        present = bool(model_keys & host.models)
        for device in sorted(host.devices, key=lambda d: d.id):
            needed = (
                needed_bytes
                if isinstance(needed_bytes, int)
                else needed_bytes.get(estimate_kind(device), needed_bytes["cpu"])
            )
            reason = _device_reason(spec, device, needed)
            if reason:
                rejections.append(Rejection(host.host_id, device.id, reason))
                continue
            score = (*_score(spec, host, device, needed, present), 0.0)
            choice = PlacementChoice(host.host_id, device.id, score)
            if best is None or (score, host.host_id, device.id) < (
                best.score,
                best.host_id,
                best.device_id,
            ):
                best = choice
    return best if best is not None else tuple(rejections)
