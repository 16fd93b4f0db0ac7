"""Container engines' command prefix (issue 13: `tgi`). Pure.

A container engine's `engine_command` is what the engine provisioner prepared for it
(`PreparedEngine.command` of a container entry): `[TOOL, run, --rm, IMAGE]`, TOOL the
podman or docker it found, IMAGE the pinned reference. `container_image` reads the tool
and the image back from it; each start builds its own `run` line from them
(`provisioners.plan.containers.container_run`: ports, mounts, the key by name).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["container_image"]


def container_image(command: Sequence[str]) -> tuple[str, str] | None:
    """(tool, image) of `[TOOL, run, --rm, IMAGE]`; None for any other command."""
    if len(command) != 4 or tuple(command[1:3]) != ("run", "--rm"):
        return None
    tool, image = command[0], command[3]
    if not tool or not image or image.startswith("-") or any(c.isspace() for c in image):
        return None
    return tool, image
