"""Provisioning plans (PRV-01..03): pure functions from a request and gathered facts to
ordered steps. Nothing in this package does I/O or reads a clock; a test keeps it so.

models.py        `plan_model`: a model ref into fetch/verify/inspect/publish/register steps
engine_specs.py  engine specs (`ENGINE:MODE[=VALUE]`), their grammar and engine profiles
engine_steps.py  engine facts, steps and `EnginePlan`
engines.py       `plan_engine`: one planner per mode (source, package, binary, container)
containers.py    `podman run` / `docker run` command lines for a pool's engine container
probes.py        reading `--version` / `--help` / build progress output

Everything `provisioners.plan` exported when it was one module (the model plan) is
re-exported here, with the engine plan's entry points.
"""

from __future__ import annotations

from provisioners.plan.engine_specs import (
    EngineSpec,
    SpecOptions,
    describe_spec,
    parse_engine_spec,
)
from provisioners.plan.engine_steps import EngineFacts, EnginePlan, EnginePlanSettings
from provisioners.plan.engines import plan_engine
from provisioners.plan.models import (
    Download,
    HubDownload,
    LocalFile,
    ModelFacts,
    ModelPlan,
    PlanSettings,
    Publish,
    ReadMetadata,
    Register,
    ReuseEntry,
    Step,
    VerifyDigest,
    candidate_model_id,
    plan_model,
    validator_path,
    wanted_model_id,
)

__all__ = [
    "Download",
    "EngineFacts",
    "EnginePlan",
    "EnginePlanSettings",
    "EngineSpec",
    "HubDownload",
    "LocalFile",
    "ModelFacts",
    "ModelPlan",
    "PlanSettings",
    "Publish",
    "ReadMetadata",
    "Register",
    "ReuseEntry",
    "SpecOptions",
    "Step",
    "VerifyDigest",
    "candidate_model_id",
    "describe_spec",
    "parse_engine_spec",
    "plan_engine",
    "plan_model",
    "validator_path",
    "wanted_model_id",
]
