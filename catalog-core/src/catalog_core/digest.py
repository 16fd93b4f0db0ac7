"""Content digests of model files: sha256 over the whole file, read in 1 MiB blocks.

Blocking file I/O: call from a thread when on an event loop.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from catalog_core.errors import DigestMismatch, ModelFileError

_BLOCK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file's bytes."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while block := handle.read(_BLOCK_BYTES):
                digest.update(block)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror}") from exc
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> str:
    """Return the file's sha256, raising DigestMismatch (naming both) when it differs."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise DigestMismatch(str(path), expected.lower(), actual)
    return actual
