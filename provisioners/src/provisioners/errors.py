"""Errors of the provisioners package.

    ProvisionError
    ├── RefRefused            the ref may not be used: a `file:` path outside the allowed
    │                         roots, or not a regular file (fatal; SEC-03)
    ├── SourceNotFound        the source says the model is not there: HTTP 404/410, an
    │                         unknown hub repo, revision or file, a missing local file (fatal)
    ├── SourceUnreachable     the source could not be reached or kept failing: connection
    │                         refused, timeouts, 5xx, the hub offline (retryable; a partial
    │                         download is kept and resumed next time)
    ├── DownloadFailed        the source answered in a way we cannot use: access refused,
    │                         a bad Content-Range, a local disk error (fatal)
    ├── ModelDigestMismatch   the fetched file's sha256 is not the expected one; the file is
    │                         discarded and nothing is registered (fatal)
    ├── NotAModel             the file verified but is not a GGUF model we can read (fatal)
    └── RegistrationFailed    the catalog refused the entry (fatal unless the cause is
                              retryable, e.g. the store was busy)

Malformed refs raise `catalog_core.InvalidModelRef` before any step runs. Foreign
exceptions (httpx, huggingface_hub, OSError, catalog errors) are mapped here once, at the
edge where they arise, and chained.
"""

from __future__ import annotations

__all__ = [
    "DownloadFailed",
    "ModelDigestMismatch",
    "NotAModel",
    "ProvisionError",
    "RefRefused",
    "RegistrationFailed",
    "SourceNotFound",
    "SourceUnreachable",
]


class ProvisionError(Exception):
    """Root of the provisioners' errors; `retryable` says whether trying again can help."""

    retryable: bool = False


class RefRefused(ProvisionError):
    """The ref points where models may not be taken from."""


class SourceNotFound(ProvisionError):
    """The source has no such model."""


class SourceUnreachable(ProvisionError):
    """The source could not be reached, or kept failing; a later try may succeed."""

    retryable: bool = True


class DownloadFailed(ProvisionError):
    """The source answered, but not with something we can use."""


class ModelDigestMismatch(ProvisionError):
    """The fetched file's sha256 differs from the expected one; both are named."""

    def __init__(self, ref: str, expected: str, actual: str) -> None:
        super().__init__(
            f"sha256 of {ref} is {actual}, expected {expected}; the file was discarded"
        )
        self.ref = ref
        self.expected = expected
        self.actual = actual


class NotAModel(ProvisionError):
    """The file is not a GGUF model we can read."""


class RegistrationFailed(ProvisionError):
    """The catalog refused the new entry."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
