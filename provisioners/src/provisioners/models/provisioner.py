"""The model provisioner (PRV-01): refs in, Active and verified catalog entries out.

`ModelProvisioner.provision(ref)` gathers the facts (catalog entry, files on disk),
plans with the pure `provisioners.plan.plan_model`, and runs the plan. Provisions of one
ref are single-flight: a second call while one is running joins it (one download, one
registration) when it expects the same digest, else waits for it to land and then plans
again (finding, usually, the entry to reuse).
A flight is cancelled only when every caller waiting on it has been cancelled; its
partial download stays on disk and the next provision of the ref resumes it.

The provisioner owns its flights and its HTTP client: use `async with`, or `aclose()`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from catalog_core import CatalogStore, ModelEntry, ModelRef, parse_model_ref

from provisioners.models.download import DownloadPolicy, ProgressCallback
from provisioners.models.execute import StepContext, run_plan
from provisioners.models.facts import gather_facts, resolve_roots
from provisioners.models.hub import HubSettings
from provisioners.plan import ModelPlan, PlanSettings, plan_model

__all__ = ["ModelProvisioner", "ModelProvisionerSettings"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ModelProvisionerSettings:
    """Where models go, where `file:` refs may point, and how to fetch (seconds)."""

    models_dir: Path
    allowed_roots: tuple[Path, ...] = ()
    hub: HubSettings = field(default_factory=HubSettings)
    download: DownloadPolicy = field(default_factory=DownloadPolicy)
    timeout_s: float = 30.0


@dataclass(eq=False, slots=True)
class _Flight:
    """One running provision of a ref, shared by every compatible caller."""

    expected_sha256: str | None
    model_id: str | None
    listeners: list[ProgressCallback] = field(default_factory=list)
    waiters: int = 0
    abandoned: bool = False  # every caller was cancelled; the task is being cancelled
    task: asyncio.Task[ModelEntry] | None = None

    def report(self, done: int, total: int | None) -> None:
        for listener in tuple(self.listeners):
            listener(done, total)

    def admits(self, expected_sha256: str | None, model_id: str | None) -> bool:
        if self.abandoned or self.task is None or self.task.done():
            return False
        # Only the same expectation joins: a looser caller must not inherit a stricter
        # flight's digest failure. It waits instead, then usually finds the entry to reuse.
        return expected_sha256 == self.expected_sha256 and model_id in (None, self.model_id)


class ModelProvisioner:
    """Provisions model refs into one catalog store (see module doc)."""

    def __init__(
        self,
        store: CatalogStore,
        settings: ModelProvisionerSettings,
        *,
        clock_ms: Callable[[], int] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._plan_settings = PlanSettings(
            models_dir=str(settings.models_dir.expanduser().absolute()),
            allowed_roots=resolve_roots(settings.allowed_roots),
        )
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s), follow_redirects=True
        )
        self._flights: dict[str, _Flight] = {}

    async def __aenter__(self) -> ModelProvisioner:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel running flights (their partial files stay) and close the HTTP client."""
        tasks = [flight.task for flight in self._flights.values() if flight.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._owns_client:
            await self._client.aclose()

    async def plan(
        self, ref: ModelRef | str, *, sha256: str | None = None, model_id: str | None = None
    ) -> ModelPlan:
        """The plan `provision` would run now, without running it (a dry run)."""
        parsed = parse_model_ref(ref) if isinstance(ref, str) else ref
        facts = await asyncio.to_thread(gather_facts, self._store, parsed, model_id)
        return plan_model(
            parsed, facts, self._plan_settings, expected_sha256=sha256, model_id=model_id
        )

    async def provision(
        self,
        ref: ModelRef | str,
        *,
        sha256: str | None = None,
        model_id: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> ModelEntry:
        """Make `ref` an Active, verified entry and return it; `progress(done, total)`."""
        parsed = parse_model_ref(ref) if isinstance(ref, str) else ref
        expected = _normalised_digest(sha256)
        flight = await self._flight_for(parsed, expected, model_id)
        return await self._join(flight, progress)

    async def _flight_for(
        self, ref: ModelRef, expected: str | None, model_id: str | None
    ) -> _Flight:
        key = str(ref)
        while (running := self._flights.get(key)) is not None:
            if running.admits(expected, model_id):
                return running
            assert running.task is not None
            await asyncio.wait({running.task})  # incompatible: let it land, then run ours
        flight = _Flight(expected, model_id)
        flight.task = asyncio.create_task(self._run(ref, flight), name=f"provision {key}")
        self._flights[key] = flight
        flight.task.add_done_callback(lambda _: self._land(key, flight))
        return flight

    def _land(self, key: str, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    async def _join(self, flight: _Flight, progress: ProgressCallback | None) -> ModelEntry:
        task = flight.task
        assert task is not None
        flight.waiters += 1
        if progress is not None:
            flight.listeners.append(progress)
        try:
            return await asyncio.shield(task)
        finally:
            flight.waiters -= 1
            if progress is not None:
                flight.listeners.remove(progress)
            if flight.waiters == 0 and not task.done():  # the last caller gave up
                flight.abandoned = True
                task.cancel()
                await asyncio.wait({task})

    async def _run(self, ref: ModelRef, flight: _Flight) -> ModelEntry:
        plan = await self.plan(ref, sha256=flight.expected_sha256, model_id=flight.model_id)
        context = StepContext(
            store=self._store,
            client=self._client,
            hub=self._settings.hub,
            policy=self._settings.download,
            clock_ms=self._clock_ms,
            progress=flight.report,
        )
        return await run_plan(plan, context)


def _normalised_digest(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    lowered = sha256.strip().lower()
    if not _SHA256.fullmatch(lowered):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    return lowered
