"""Deployment files (`llorch deploy apply FILE`): one deployment, or a list of them, each
the body of `PUT /v2/deployments/{name}` plus its `name`.

Checked against the API's own model (`DeploymentRequest`, generated from the OpenAPI
document) before anything is sent, so a typo or a wrong type is one line naming the
file, the key path and what was expected, not a 422 from the server or a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from specs.api.models import DeploymentRequest
from specs.settings import SettingsError, read_yaml, validate_file

__all__ = ["DESCRIPTIONS", "DeploymentFile", "load_deployments"]

NAME_PATTERN = r"^[a-z0-9][a-z0-9.-]{0,63}$"


class DeploymentFile(DeploymentRequest):
    """One deployment: the desired state of a model's pools across the fleet."""

    name: str = Field(pattern=NAME_PATTERN)


# The generated API models carry no descriptions; these are the reference page's.
DESCRIPTIONS = {
    "DeploymentFile.name": "The deployment's name: 1-64 characters of `a-z0-9.-`, "
    "starting with a letter or digit.",
    "DeploymentFile.model": "A model the hosts hold: catalog id, alias, sha256 or file path.",
    "DeploymentFile.engine": "The engine its pools run.",
    "DeploymentFile.ctx": "Context tokens per slot.",
    "DeploymentFile.slots": "Sequences decoded at once per pool.",
    "DeploymentFile.replicas": "How many pools, at least and at most.",
    "DeploymentFile.policy": "`spread`: fewest of its pools per host; `binpack`: fill devices "
    "before opening new ones.",
    "DeploymentFile.constraints": "Where its pools may go.",
    "DeploymentFile.idle_unload_after_ms": "Pools idle this long are unloaded, down to "
    "`replicas.min`; null: never.",
    "DeploymentFile.aliases": "More names clients may ask for this model by.",
    "DeploymentReplicas.min": "Pools kept at least (0: loaded on the first request).",
    "DeploymentReplicas.max": "Pools at most.",
    "DeploymentConstraints.hosts": "Host ids its pools may go to; absent: any host.",
    "DeploymentConstraints.device_kind": "Only devices of this kind; absent: any.",
    "DeploymentConstraints.min_compute_capability": 'Lowest GPU compute capability, e.g. "8.0".',
}


def load_deployments(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(name, request body) of each deployment in the file; SettingsError (one line)
    when the file is unreadable or an entry does not fit the API's model."""
    raw = read_yaml(path)
    many = isinstance(raw, list)
    entries = raw if many else [raw]
    found: list[tuple[str, dict[str, Any]]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            where = f"[{index}]: " if many else ""
            raise SettingsError(f"{path}: {where}expected a mapping with name and model")
        checked = validate_file(DeploymentFile, entry, str(path), at=(index,) if many else ())
        body = {key: value for key, value in entry.items() if key != "name"}
        found.append((checked.name, body))
    return found
