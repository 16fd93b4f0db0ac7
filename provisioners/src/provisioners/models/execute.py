"""Running a model plan: each step narrated, executed, and undone where it must be.

`run_plan(plan, context)` walks the plan's steps in order. Every step is announced with
one log line carrying `extra={"action": ..., "target": ...}` (PRV-03) before it runs.
Blocking work (hashing, GGUF reading, renames, the catalog) runs in worker threads.
A file that fails verification or is not a model is deleted with its scratch files
before the error is raised, so nothing bad reaches the final path or the catalog.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
from catalog_core import (
    CatalogStore,
    ModelEntry,
    ModelFileError,
    ModelInfo,
    StoreError,
    inspect_model,
    model_digest,
    model_entry,
)

from provisioners.errors import (
    DownloadFailed,
    ModelDigestMismatch,
    NotAModel,
    RegistrationFailed,
    SourceNotFound,
)
from provisioners.models.download import DownloadPolicy, ProgressCallback, download_resumable
from provisioners.models.hub import HubSettings, hub_download
from provisioners.plan import (
    Download,
    HubDownload,
    ModelPlan,
    Publish,
    ReadMetadata,
    Register,
    ReuseEntry,
    Step,
    VerifyDigest,
)

__all__ = ["StepContext", "run_plan"]

_log = logging.getLogger("provisioners.models")


@dataclass(frozen=True, slots=True)
class StepContext:
    """The ports a plan runs against; `clock_ms` gives wall-clock milliseconds."""

    store: CatalogStore
    client: httpx.AsyncClient
    hub: HubSettings
    policy: DownloadPolicy
    clock_ms: Callable[[], int]
    progress: ProgressCallback


@dataclass(slots=True)
class _Outcome:
    """What the steps found so far, for the steps after them."""

    sha256: str = ""
    size: int = 0
    info: ModelInfo | None = None
    entry: ModelEntry | None = None


async def run_plan(plan: ModelPlan, context: StepContext) -> ModelEntry:
    """Run every step of `plan`; return the catalog entry it leaves Active."""
    outcome = _Outcome()
    for step in plan.steps:
        _log.info(
            "%s %s",
            step.action,
            step.target,
            extra={"action": step.action, "target": step.target, "ref": plan.ref},
        )
        await _run_step(step, plan, context, outcome)
    if outcome.entry is None:
        raise RegistrationFailed(f"the plan for {plan.ref} registered nothing")
    return outcome.entry


async def _run_step(step: Step, plan: ModelPlan, context: StepContext, outcome: _Outcome) -> None:
    match step:
        case ReuseEntry(model_id=model_id):
            outcome.entry = await asyncio.to_thread(context.store.get_model, model_id)
        case Download(url=url, part_path=part):
            await download_resumable(
                context.client, url, Path(part), policy=context.policy, progress=context.progress
            )
        case HubDownload():
            staging = Path(step.staging_dir)
            await hub_download(context.hub, step.repo, step.filename, step.revision, staging)
        case VerifyDigest():
            await _verify(step, plan, outcome)
        case ReadMetadata(path=path, discard=discard):
            outcome.info = await _inspect(Path(path), discard)
        case Publish(source=source, destination=destination, remove_after=remove_after):
            await asyncio.to_thread(_publish, Path(source), Path(destination), remove_after)
        case Register():
            outcome.entry = await _register(step, context, outcome)


async def _verify(step: VerifyDigest, plan: ModelPlan, outcome: _Outcome) -> None:
    path = Path(step.path)
    try:
        actual = await asyncio.to_thread(model_digest, path)  # a folder: its folder digest
        size = (await asyncio.to_thread(path.stat)).st_size
    except (ModelFileError, OSError) as exc:
        raise SourceNotFound(f"{plan.ref}: cannot read {path}: {exc}") from exc
    if step.expected_sha256 is not None and actual != step.expected_sha256:
        await asyncio.to_thread(_discard, step.discard)
        raise ModelDigestMismatch(plan.ref, step.expected_sha256, actual)
    outcome.sha256, outcome.size = actual, size


async def _inspect(path: Path, discard: tuple[str, ...]) -> ModelInfo:
    try:  # a GGUF file, or a Hugging Face model folder
        return await asyncio.to_thread(inspect_model, path)
    except ModelFileError as exc:
        await asyncio.to_thread(_discard, discard)
        raise NotAModel(str(exc)) from exc


async def _register(step: Register, context: StepContext, outcome: _Outcome) -> ModelEntry:
    if outcome.info is None or not outcome.sha256:
        raise RegistrationFailed(f"{step.ref}: nothing verified to register")
    entry = _entry(step, outcome.info, outcome.sha256, outcome.size, context.clock_ms())
    try:
        await asyncio.to_thread(context.store.put_model, entry)
    except StoreError as exc:
        raise RegistrationFailed(f"{step.ref}: {exc}", retryable=exc.retryable) from exc
    return entry


def _entry(step: Register, info: ModelInfo, sha256: str, size: int, now_ms: int) -> ModelEntry:
    entry = model_entry(
        step.model_id, step.ref, Path(step.local_path), info, sha256, verified_at_ms=now_ms
    )
    return entry if entry.format != "gguf" else replace(entry, size=size)


def _publish(source: Path, destination: Path, remove_after: tuple[str, ...]) -> None:
    """Atomic rename within the models folder, made durable, then clean up."""
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, destination)
        directory = os.open(destination.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise DownloadFailed(f"cannot move {source} to {destination}: {exc.strerror}") from exc
    _discard(remove_after)


def _discard(paths: tuple[str, ...]) -> None:
    for name in paths:
        path = Path(name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
