"""Engine and model provisioners (PRV-01..03).

Public surface: `ModelProvisioner` with `ModelProvisionerSettings`, `DownloadPolicy`,
`HubSettings` and `ProgressCallback` (the model provisioner, in `provisioners.models`);
`plan_model` and its step values (pure planning, in `provisioners.plan`); and the error
tree in `provisioners.errors`. `provisioners.testing` ships a Range-capable HTTP file
server for tests.
"""

from __future__ import annotations

from provisioners.errors import (
    DownloadFailed,
    ModelDigestMismatch,
    NotAModel,
    ProvisionError,
    RefRefused,
    RegistrationFailed,
    SourceNotFound,
    SourceUnreachable,
)
from provisioners.models import (
    DownloadPolicy,
    HubSettings,
    ModelProvisioner,
    ModelProvisionerSettings,
    ProgressCallback,
)
from provisioners.plan import ModelPlan, plan_model

__all__ = [
    "DownloadFailed",
    "DownloadPolicy",
    "HubSettings",
    "ModelDigestMismatch",
    "ModelPlan",
    "ModelProvisioner",
    "ModelProvisionerSettings",
    "NotAModel",
    "ProgressCallback",
    "ProvisionError",
    "RefRefused",
    "RegistrationFailed",
    "SourceNotFound",
    "SourceUnreachable",
    "plan_model",
]
