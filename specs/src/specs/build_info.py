"""What a daemon was built from, for its `llorch_build_info` series (OBS-01).

`build_info(package)` gives the labels `version` (the installed distribution that holds
the import package, whatever the distribution is named), `python` (major.minor.micro)
and `commit` (`LLORCH_COMMIT` when set, as a packaging step may set it; otherwise the
git commit of a source checkout the package runs from; `unknown` for an installed
wheel). Read once at start; nothing here runs per request.
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

__all__ = ["COMMIT_ENV", "build_info"]

COMMIT_ENV = "LLORCH_COMMIT"
UNKNOWN = "unknown"


@cache
def build_info(package: str) -> dict[str, str]:
    """The build-info labels of the daemon whose import package is `package`."""
    return {
        "version": _version(package),
        "python": platform.python_version(),
        "commit": _commit(package),
    }


def _version(package: str) -> str:
    # An editable install records no top-level packages: then the usual names, ours
    # (`llorch-<member>`) first, since a bare name may be an unrelated distribution.
    dashed = package.replace("_", "-")
    candidates = [*metadata.packages_distributions().get(package, []), f"llorch-{dashed}", dashed]
    for distribution in candidates:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return UNKNOWN


def _commit(package: str) -> str:
    pinned = os.environ.get(COMMIT_ENV, "").strip()
    if pinned:
        return pinned
    try:
        spec_origin = __import__(package).__file__
    except ImportError:
        return UNKNOWN
    if spec_origin is None or "site-packages" in Path(spec_origin).parts:
        return UNKNOWN  # an installed wheel: a surrounding checkout is not its source
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(spec_origin).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else UNKNOWN
