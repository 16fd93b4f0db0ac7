"""Resumable HTTP downloads into a `.part` file (PRV-01): the only module that fetches URLs.

`download_resumable(client, url, part)` appends to `part` from its current size with an
HTTP `Range` request (and `If-Range` with the validator saved beside it, so a file that
changed on the server restarts from zero instead of being spliced). A connection that
drops, times out or meets a 5xx is retried from where it stopped, with exponential
back-off, up to `DownloadPolicy.attempts` times; after that `SourceUnreachable` is raised
and the `.part` file stays for the next try. Cancellation also keeps it. Progress is
reported after every chunk written, as (bytes in the file, total bytes or None).

File writes run in a worker thread so the event loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from provisioners.errors import DownloadFailed, SourceNotFound, SourceUnreachable
from provisioners.plan import validator_path

__all__ = ["DownloadPolicy", "ProgressCallback", "download_resumable"]

ProgressCallback = Callable[[int, int | None], None]

_log = logging.getLogger(__name__)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")


@dataclass(frozen=True, slots=True)
class DownloadPolicy:
    """How hard to try. Back-off doubles from `backoff_s` between attempts (seconds)."""

    attempts: int = 5
    backoff_s: float = 0.5


class _Retry(Exception):
    """This attempt failed in a way another attempt may fix."""


class _Restart(_Retry):
    """The partial file cannot be continued: start again from zero."""


@dataclass(frozen=True, slots=True)
class _Window:
    start: int  # offset in the file where the response body begins
    total: int | None  # size of the whole file, when the server says


async def download_resumable(
    client: httpx.AsyncClient,
    url: str,
    part: Path,
    *,
    policy: DownloadPolicy | None = None,
    progress: ProgressCallback | None = None,
) -> int:
    """Complete `part` from `url` and return its size in bytes (see module doc)."""
    policy = policy or DownloadPolicy()
    await asyncio.to_thread(part.parent.mkdir, parents=True, exist_ok=True)
    last_error: Exception | None = None
    for attempt in range(policy.attempts):
        if attempt:
            await asyncio.sleep(policy.backoff_s * 2 ** (attempt - 1))
        try:
            return await _attempt(client, url, part, progress)
        except _Restart as exc:
            await asyncio.to_thread(_truncate, part)
            last_error = exc
        except _Retry as exc:
            last_error = exc
        _log.warning(
            "download of %s interrupted (%s); resuming",
            _redacted(url),
            last_error,
            extra={"action": "download-retry", "target": _redacted(url)},
        )
    raise SourceUnreachable(
        f"download of {_redacted(url)} failed after {policy.attempts} attempts: {last_error}"
    ) from last_error


async def _attempt(
    client: httpx.AsyncClient,
    url: str,
    part: Path,
    progress: ProgressCallback | None,
) -> int:
    offset = await asyncio.to_thread(_size, part)
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = await asyncio.to_thread(_read_validator, part)
        if validator:
            headers["If-Range"] = validator
    try:
        async with client.stream("GET", url, headers=headers) as response:
            window = _window(response, offset, url)
            if window.total is not None and window.start == window.total:
                return window.total  # the partial file is already whole
            await asyncio.to_thread(_save_validator, part, response.headers)
            return await _write_body(response, part, window, progress)
    except httpx.TransportError as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from exc


def _window(response: httpx.Response, offset: int, url: str) -> _Window:
    """Where the body goes, from the status and Content-Range; raise for the others."""
    status = response.status_code
    if status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
        if match is None or int(match[1]) != offset:
            raise DownloadFailed(f"{_redacted(url)} answered a range we did not ask for")
        return _Window(offset, None if match[3] == "*" else int(match[3]))
    if status == 200:
        length = response.headers.get("content-length")
        return _Window(0, int(length) if length and length.isdigit() else None)
    if status == 416:
        match = _UNSATISFIED_RANGE.fullmatch(response.headers.get("content-range", ""))
        if match is not None and int(match[1]) == offset:
            return _Window(offset, offset)
        raise _Restart("the partial file is longer than the source")
    raise _status_error(status, url)


def _status_error(status: int, url: str) -> Exception:
    where = _redacted(url)
    if status in (404, 410):
        return SourceNotFound(f"{where} answered {status}: no such file")
    if status in (408, 425, 429) or status >= 500:
        return _Retry(f"{where} answered {status}")
    if status in (401, 403):
        return DownloadFailed(f"{where} answered {status}: access refused")
    return DownloadFailed(f"{where} answered an unexpected {status}")


async def _write_body(
    response: httpx.Response,
    part: Path,
    window: _Window,
    progress: ProgressCallback | None,
) -> int:
    """Append the body as it arrives; every byte received is on disk before it is reported."""
    mode = "ab" if window.start else "wb"
    handle = await asyncio.to_thread(_open, part, mode)
    done = window.start
    try:
        async for chunk in response.aiter_raw():  # unbuffered: nothing waits in memory
            await asyncio.to_thread(handle.write, chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, window.total)
        await asyncio.to_thread(_flush, handle)
    finally:
        handle.close()
    if window.total is not None and done != window.total:
        raise _Retry(f"the body ended at {done} of {window.total} bytes")
    return done


def _open(part: Path, mode: str) -> BinaryIO:
    try:
        return part.open(mode)  # type: ignore[return-value]
    except OSError as exc:
        raise DownloadFailed(f"cannot write {part}: {exc.strerror}") from exc


def _flush(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _size(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0


def _truncate(part: Path) -> None:
    part.unlink(missing_ok=True)
    Path(validator_path(str(part))).unlink(missing_ok=True)


def _read_validator(part: Path) -> str | None:
    try:
        saved = json.loads(Path(validator_path(str(part))).read_text())
    except (OSError, ValueError):
        return None
    value = saved.get("validator") if isinstance(saved, dict) else None
    return value if isinstance(value, str) else None


def _save_validator(part: Path, headers: httpx.Headers) -> None:
    """Keep a strong ETag (weak ones may not be used in If-Range) or Last-Modified."""
    etag = headers.get("etag", "")
    validator = etag if etag and not etag.startswith("W/") else headers.get("last-modified")
    if validator:
        Path(validator_path(str(part))).write_text(json.dumps({"validator": validator}))


def _redacted(url: str) -> str:
    """The URL without its query, which may carry a signature or a token (SEC-04)."""
    return url.split("?", 1)[0]
