"""Files of engine provisioning: source digests, unpacking, installing, locks, markers.

- `tree_digest(folder)`: `tree:` + sha256 over the sorted relative paths, sizes and
  mtimes (ns) of every file and symlink, leaving out `.git`, `__pycache__` and
  top-level `build*` folders (why this digest: see `provisioners.plan.engines`).
- `unpack_member(archive, member, tree_dir, digest)`: extract one folder of a tar
  archive into `tree_dir` through a scratch folder and a rename, then mark it with
  the archive's digest (a marker written last: its presence means complete).
- `install_file(built, artifact)`: copy, keep the executable bit, rename into place.

All blocking: call through `asyncio.to_thread` on an event loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

from provisioners.errors import SourceNotFound

__all__ = [
    "MARKER_NAME",
    "install_file",
    "read_marker",
    "tree_digest",
    "unpack_member",
    "write_marker",
]

MARKER_NAME = ".llorch-source.json"
_SKIPPED_ANYWHERE = frozenset({".git", "__pycache__"})


def tree_digest(folder: Path) -> str:
    """See module doc. Raises SourceNotFound when `folder` is not a folder."""
    if not folder.is_dir():
        raise SourceNotFound(f"{folder}: no such folder")
    digest = hashlib.sha256()
    for relative, info in sorted(_walk(folder, folder)):
        digest.update(f"{relative}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return "tree:" + digest.hexdigest()


def _walk(root: Path, folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name in _SKIPPED_ANYWHERE or entry.name == MARKER_NAME:
                continue
            if entry.is_dir(follow_symlinks=False):
                if folder == root and entry.name.startswith("build"):
                    continue  # someone's in-tree build folder is not source
                yield from _walk(root, Path(entry.path))
            else:
                yield (
                    os.path.relpath(entry.path, root),
                    entry.stat(follow_symlinks=False),
                )


def read_marker(folder: Path) -> dict[str, str]:
    """The marker a finished unpack or checkout left in `folder`; {} when there is none."""
    try:
        found = json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def write_marker(folder: Path, values: dict[str, str]) -> None:
    scratch = folder / f"{MARKER_NAME}.tmp"
    scratch.write_text(json.dumps(values, sort_keys=True))
    scratch.replace(folder / MARKER_NAME)


def unpack_member(archive: Path, member: str, tree_dir: Path, digest: str) -> None:
    """See module doc. Anything at `tree_dir` before is replaced."""
    scratch = tree_dir.with_name(tree_dir.name + ".unpacking")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    prefix = member.rstrip("/") + "/"
    with tarfile.open(archive) as bundle:
        chosen = []
        for info in bundle.getmembers():
            if info.name.startswith(prefix):
                info.name = info.name[len(prefix) :]
                chosen.append(info)
        if not chosen:
            raise SourceNotFound(f"{archive} has no folder {member}")
        bundle.extractall(scratch, members=chosen, filter="data")
    # A submodule's `.git` file points into a repository the archive does not have.
    dangling = scratch / ".git"
    if dangling.is_file():
        dangling.unlink()
    shutil.rmtree(tree_dir, ignore_errors=True)
    scratch.replace(tree_dir)
    write_marker(tree_dir, {"digest": digest, "archive": str(archive)})


def install_file(built: Path, artifact: Path) -> None:
    """Copy `built` to `artifact` (atomically, executable) and make it durable."""
    artifact.parent.mkdir(parents=True, exist_ok=True)
    scratch = artifact.with_name(artifact.name + ".installing")
    shutil.copyfile(built, scratch)
    mode = os.stat(built).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    os.chmod(scratch, mode)
    with scratch.open("rb") as handle:
        os.fsync(handle.fileno())
    scratch.replace(artifact)
