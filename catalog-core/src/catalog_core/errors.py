"""Errors of catalog-core.

    CatalogError
    ├── ModelFileError        the file or folder is missing, unreadable or not a model (fatal)
    ├── DigestMismatch        a file's sha256 differs from the expected one (fatal)
    ├── InvalidModelRef       a model ref does not parse: `file:`, `hf:` or `https://` (fatal)
    └── StoreError            the SQLite catalog store failed
        ├── SchemaTooNew      the database was written by a newer llorch (fatal: upgrade)
        ├── StoreCorrupt      the file is not a catalog database we can read (fatal)
        ├── EntryNotFound     no entry with that id (fatal)
        ├── DuplicateEntry    the id, ref or build key is taken by another entry (fatal)
        └── StoreBusy         another process held the write lock too long (retryable)

Every class says whether retrying can help through its `retryable` attribute; only
`StoreBusy` is retryable: for the others, retrying with the same input gives the same
answer. Foreign exceptions (`sqlite3`, `OSError`, `gguf`) are mapped to these once, where
they arise, and chained.
"""

from __future__ import annotations

from typing import ClassVar


class CatalogError(Exception):
    """Root of catalog-core's errors."""

    retryable: ClassVar[bool] = False


class ModelFileError(CatalogError):
    """A model file or folder is missing, unreadable, or not a GGUF file or Hugging Face
    folder we can read."""


class DigestMismatch(CatalogError):
    """A file's sha256 is not the one that was expected."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(f"sha256 of {path} is {actual}, expected {expected}")
        self.path = path
        self.expected = expected
        self.actual = actual


class InvalidModelRef(CatalogError):
    """A model ref is not one of the accepted forms; `reason` says what is wrong."""

    def __init__(self, ref: str, reason: str) -> None:
        super().__init__(f"invalid model ref {ref!r}: {reason}")
        self.ref = ref
        self.reason = reason


class StoreError(CatalogError):
    """The catalog store failed."""


class SchemaTooNew(StoreError):
    """The database's schema version is newer than the one this code knows."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"catalog {path} has schema version {found}, newer than version {supported} "
            "that this llorch supports; upgrade llorch or point it at another catalog"
        )
        self.path = path
        self.found = found
        self.supported = supported


class StoreCorrupt(StoreError):
    """The file is not a SQLite database, or its catalog tables are damaged."""


class EntryNotFound(StoreError):
    """No model or engine entry has the given id."""

    def __init__(self, kind: str, entry_id: str) -> None:
        super().__init__(f"no {kind} with id {entry_id!r} in the catalog")
        self.kind = kind
        self.entry_id = entry_id


class DuplicateEntry(StoreError):
    """A write would give two entries the same id, ref or build key."""


class StoreBusy(StoreError):
    """The database stayed locked by another writer beyond the busy timeout."""

    retryable: ClassVar[bool] = True
