"""Errors of catalog-core.

    CatalogError
    ├── ModelFileError        the file is missing, unreadable or not a GGUF model (fatal)
    └── DigestMismatch        a file's sha256 differs from the expected one (fatal)

All are fatal for the operation that raised them: retrying with the same input gives the
same answer.
"""

from __future__ import annotations


class CatalogError(Exception):
    """Root of catalog-core's errors."""


class ModelFileError(CatalogError):
    """A model file is missing, unreadable, or not a GGUF file we can read."""


class DigestMismatch(CatalogError):
    """A file's sha256 is not the one that was expected."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(f"sha256 of {path} is {actual}, expected {expected}")
        self.path = path
        self.expected = expected
        self.actual = actual
