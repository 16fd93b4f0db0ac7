"""The model provisioner: `file:`, `hf:` and `https://` refs into the catalog (PRV-01).

provisioner.py  ModelProvisioner: facts -> plan (provisioners.plan) -> run; single-flight
facts.py        what the planner needs from the catalog and the file system
execute.py      runs and narrates a plan's steps
download.py     resumable HTTP downloads (Range, If-Range, retries, progress)
hub.py          Hugging Face hub downloads and their error mapping
"""

from __future__ import annotations

from provisioners.models.download import DownloadPolicy, ProgressCallback
from provisioners.models.hub import HubSettings
from provisioners.models.provisioner import ModelProvisioner, ModelProvisionerSettings

__all__ = [
    "DownloadPolicy",
    "HubSettings",
    "ModelProvisioner",
    "ModelProvisionerSettings",
    "ProgressCallback",
]
