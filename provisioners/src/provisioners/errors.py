"""Errors of the provisioners package: the one tree, for models and engines.

    ProvisionError
    ├── RefRefused            the ref may not be used: a `file:` path outside the allowed
    │                         roots, or not a regular file (fatal; SEC-03)
    ├── SourceNotFound        the source says the model (or engine source) is not there:
    │                         HTTP 404/410, an unknown hub repo, revision or file, a missing
    │                         local file, source tree or binary (fatal)
    ├── SourceUnreachable     the source could not be reached or kept failing: connection
    │                         refused, timeouts, 5xx, the hub offline, a failed sdist fetch
    │                         or git fetch (retryable; a partial download is kept and
    │                         resumed next time)
    ├── DownloadFailed        the source answered in a way we cannot use: access refused,
    │                         a bad Content-Range, a local disk error (fatal)
    ├── ModelDigestMismatch   the fetched file's sha256 is not the expected one; the file is
    │                         discarded and nothing is registered (fatal)
    ├── NotAModel             the file verified but is not a GGUF model we can read (fatal)
    ├── RegistrationFailed    the catalog refused the entry (fatal unless the cause is
    │                         retryable, e.g. the store was busy)
    └── EngineProvisionError  an engine could not be prepared (PRV-02)
        ├── InvalidEngineSpec     the engine spec does not parse, or names an unknown
        │                         engine or a mode that engine does not have (fatal)
        ├── EngineToolMissing     a tool the plan needs is not here (cmake, a C++
        │                         compiler, git, pip, uv, python3.11, podman/docker or its
        │                         daemon); names the tool and how to install it (fatal
        │                         until installed)
        ├── PlatformUnsupported   this machine cannot install or run the engine at all
        │                         (vLLM without Linux, x86-64/arm64 or an NVIDIA driver)
        ├── EngineBuildFailed     cmake configure or compile failed; carries the tail of
        │                         the build log and where the whole log is (fatal)
        ├── EngineInstallFailed   creating a venv, installing pins or pulling an image
        │                         failed; carries the installer's tail (retryable)
        └── EngineProbeFailed     the engine's binary or venv did not answer its version
                                  probe: not the engine we expected (fatal)

Malformed refs raise `catalog_core.InvalidModelRef` before any step runs. Foreign
exceptions (httpx, huggingface_hub, OSError, catalog errors) are mapped here once, at the
edge where they arise, and chained.
"""

from __future__ import annotations

__all__ = [
    "DownloadFailed",
    "EngineBuildFailed",
    "EngineInstallFailed",
    "EngineProbeFailed",
    "EngineProvisionError",
    "EngineToolMissing",
    "InvalidEngineSpec",
    "ModelDigestMismatch",
    "NotAModel",
    "PlatformUnsupported",
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


class EngineProvisionError(ProvisionError):
    """An engine could not be prepared."""


class InvalidEngineSpec(EngineProvisionError):
    """The engine spec does not parse or asks for something that does not exist."""


class EngineToolMissing(EngineProvisionError):
    """A required tool is missing. `tool` is its name, `remedy` how to get it."""

    def __init__(self, tool: str, remedy: str) -> None:
        super().__init__(f"{tool} is missing: {remedy}")
        self.tool = tool
        self.remedy = remedy


class PlatformUnsupported(EngineProvisionError):
    """This machine cannot install or run the engine; `missing` says what it lacks."""

    def __init__(self, engine: str, missing: str) -> None:
        super().__init__(f"{engine} cannot be installed here: {missing}")
        self.engine = engine
        self.missing = missing


class EngineBuildFailed(EngineProvisionError):
    """A build step failed; the message ends with the tail of its log."""

    def __init__(self, message: str, *, log_path: str = "") -> None:
        super().__init__(message)
        self.log_path = log_path


class EngineInstallFailed(EngineProvisionError):
    """Making a venv, installing pins or pulling an image failed; often passes on retry."""

    retryable: bool = True


class EngineProbeFailed(EngineProvisionError):
    """The prepared engine did not answer its version probe."""
