"""Hugging Face hub downloads (PRV-01): the only module that imports `huggingface_hub`.

`hub_download` fetches one file of a repository at a revision into a staging folder with
`hf_hub_download(local_dir=...)` (which resumes its own `.incomplete` files) in a worker
thread, and maps the library's exceptions once, here, to the provisioners' tree:
unknown repo, revision or file -> SourceNotFound; gated or unauthorised -> DownloadFailed;
no connection, the hub offline, 5xx -> SourceUnreachable. The token is passed through and
never logged (SEC-04).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from provisioners.errors import DownloadFailed, ProvisionError, SourceNotFound, SourceUnreachable

__all__ = ["HubSettings", "hub_download", "map_hub_error"]


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Where the hub is (None: the library's default) and the token to use, if any."""

    endpoint: str | None = None
    token: str | None = field(default=None, repr=False)


async def hub_download(
    settings: HubSettings, repo: str, filename: str, revision: str | None, staging_dir: Path
) -> Path:
    """Download one file into `staging_dir` and return its path there."""
    try:
        fetched = await asyncio.to_thread(
            hf_hub_download,
            repo,
            filename,
            revision=revision,
            local_dir=staging_dir,
            endpoint=settings.endpoint,
            token=settings.token,
        )
    except Exception as exc:  # every library failure is mapped, once, here
        raise map_hub_error(exc, f"{repo}@{revision or 'main'}/{filename}") from exc
    return Path(fetched)


def map_hub_error(exc: BaseException, what: str) -> ProvisionError:
    """The provisioners' error for a `huggingface_hub` failure while fetching `what`."""
    cause = _root_cause(exc)
    if isinstance(cause, GatedRepoError):
        return DownloadFailed(f"{what}: the repository is gated; a token with access is needed")
    if isinstance(
        cause, RepositoryNotFoundError | RevisionNotFoundError | RemoteEntryNotFoundError
    ):
        return SourceNotFound(f"{what}: not found on the hub ({type(cause).__name__})")
    if isinstance(cause, HfHubHTTPError):
        return _http_error(cause, what)
    if isinstance(cause, OfflineModeIsEnabled) or isinstance(exc, LocalEntryNotFoundError):
        return SourceUnreachable(f"{what}: the hub cannot be reached ({_first_line(cause)})")
    if isinstance(cause, ConnectionError | TimeoutError):
        return SourceUnreachable(f"{what}: the hub cannot be reached ({_first_line(cause)})")
    if isinstance(cause, OSError):
        return DownloadFailed(f"{what}: {_first_line(cause)}")
    return DownloadFailed(f"{what}: {type(cause).__name__}: {_first_line(cause)}")


def _root_cause(exc: BaseException) -> BaseException:
    """`hf_hub_download` wraps the HEAD call's failure in LocalEntryNotFoundError."""
    if isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def _http_error(cause: HfHubHTTPError, what: str) -> ProvisionError:
    status = cause.response.status_code if cause.response is not None else 0
    if status in (404, 410):
        return SourceNotFound(f"{what}: not found on the hub ({status})")
    if status in (401, 403):
        return DownloadFailed(f"{what}: the hub refused access ({status}); check the token")
    if status in (408, 429) or status >= 500 or status == 0:
        return SourceUnreachable(f"{what}: the hub answered {status or 'nothing'}")
    return DownloadFailed(f"{what}: the hub answered {status}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
