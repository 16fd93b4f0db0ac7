"""Errors of engine provisioning: the engine branch of the package's one error tree.

They are defined (and the whole tree drawn) in `provisioners.errors`; this module only
re-exports the engine branch so that `provisioners.engines.errors` keeps working.
"""

from __future__ import annotations

from provisioners.errors import (
    EngineBuildFailed,
    EngineInstallFailed,
    EngineProbeFailed,
    EngineProvisionError,
    EngineToolMissing,
    InvalidEngineSpec,
    PlatformUnsupported,
)

__all__ = [
    "EngineBuildFailed",
    "EngineInstallFailed",
    "EngineProbeFailed",
    "EngineProvisionError",
    "EngineToolMissing",
    "InvalidEngineSpec",
    "PlatformUnsupported",
]
