"""Deployments: desired state (`DeploymentSpec`), where pools go (`choose_device`, pure),
and the reconciler that turns deployments into Preload/Stop commands.
"""

from __future__ import annotations

from orchestratord.deployments.model import (
    Constraints,
    DeploymentSpec,
    DeviceView,
    HostView,
    PlacementChoice,
    Policy,
    Rejection,
)
from orchestratord.deployments.placement import choose_device, compute_capability_at_least

__all__ = [
    "Constraints",
    "DeploymentSpec",
    "DeviceView",
    "HostView",
    "PlacementChoice",
    "Policy",
    "Rejection",
    "choose_device",
    "compute_capability_at_least",
]
