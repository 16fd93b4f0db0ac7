"""Engine provisioners (PRV-02): prepare an engine to run, cached by what it is made of.

provisioner.py  EngineProvisioner: spec -> facts -> plan (provisioners.plan.engines) -> run
facts.py        what the planner needs from this machine and the catalog
execute.py      runs and narrates a plan's steps, maps failures to the error tree
process.py      the only module here that starts processes (cmake, pip, uv, git, podman)
sources.py      source digests, unpacking, installing artifacts, markers
prepared.py     PreparedEngine, rebuilt from a catalog entry by `prepared_engine`
wheels.py       the wheelhouse that lets a new venv reuse a wheel uv built before
triton_venv.py  the Triton engine's own venv (see below)

Public surface: `EngineProvisioner` with `EngineProvisionerSettings` (every mode:
source, package, binary, container); `PreparedEngine`, `prepared_engine` and
`engine_entry` (its catalog record); the package
mode for Triton, `prepare_triton_engine` with `TritonVenvSettings`, `TRITON_PINS`,
`triton_engine_argv` and `ENGINE_SCRIPT` (the engine program, `triton_llamacpp.py`, a
standalone script run by the managed venv's python, never imported here); and the
errors in `provisioners.engines.errors`.
"""

from __future__ import annotations

from provisioners.engines.errors import (
    EngineInstallFailed,
    EngineProvisionError,
    EngineToolMissing,
)
from provisioners.engines.prepared import PreparedEngine, engine_entry, prepared_engine
from provisioners.engines.provisioner import EngineProvisioner, EngineProvisionerSettings
from provisioners.engines.triton_venv import (
    ENGINE_SCRIPT,
    TRITON_PINS,
    TritonVenvSettings,
    default_cache_root,
    prepare_triton_engine,
    triton_engine_argv,
    venv_digest,
)

__all__ = [
    "ENGINE_SCRIPT",
    "TRITON_PINS",
    "EngineInstallFailed",
    "EngineProvisionError",
    "EngineProvisioner",
    "EngineProvisionerSettings",
    "EngineToolMissing",
    "PreparedEngine",
    "TritonVenvSettings",
    "default_cache_root",
    "engine_entry",
    "prepare_triton_engine",
    "prepared_engine",
    "triton_engine_argv",
    "venv_digest",
]
