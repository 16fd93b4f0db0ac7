"""The engine provisioner (PRV-02, PRV-03): specs in, `PreparedEngine`s and catalog entries out.

`EngineProvisioner.provision(spec)` takes a spec (text in the grammar of
`provisioners.plan.engine_specs`, or a parsed one), holds the spec's file lock (one
provision of a spec at a time, across processes: a second one waits, then finds the
first one's entry and reuses it), then reconciles: gather facts, plan with the pure
`provisioners.plan.engines.plan_engine`, run the steps; when the steps only fetched the
source (`plan.replan`), do it again, now that the source's digest is known. It returns
the `PreparedEngine` of the entry the last plan registered or reused.

Everything lives under `settings.root`: `sources/` (sdists, their unpacked trees, git
checkouts), `work/` (cmake build folders, kept for incremental rebuilds of the same
tree), `builds/<entry id>/llama-server`, `venvs/<entry id>/`, `logs/`, `locks/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from catalog_core import CatalogStore

from provisioners.engines.execute import EngineStepContext, run_engine_plan
from provisioners.engines.facts import FactSettings, gather_facts
from provisioners.engines.prepared import PreparedEngine, prepared_engine
from provisioners.errors import EngineProvisionError
from provisioners.models.download import ProgressCallback
from provisioners.plan.engine_specs import EngineSpec, SpecOptions, describe_spec, parse_engine_spec
from provisioners.plan.engine_steps import (
    EngineFacts,
    EnginePlan,
    EnginePlanSettings,
    PlatformFacts,
)
from provisioners.plan.engines import plan_engine

__all__ = ["EngineProvisioner", "EngineProvisionerSettings"]

_MAX_ROUNDS = 3  # fetch the source, then build: two rounds; a third means it moved
_LOCK_POLL_S = 0.1  # a file lock has no event to await; poll it without blocking the loop


@dataclass(frozen=True, slots=True)
class EngineProvisionerSettings:
    """`root` holds everything provisioned (see module doc); `jobs` compile jobs.

    `search_path` replaces $PATH for finding tools and for the commands run (tests put
    shims there); `platform` replaces the detected platform (tests).
    """

    root: Path
    jobs: int = os.cpu_count() or 1
    search_path: str | None = None
    platform: PlatformFacts | None = None


class EngineProvisioner:
    """Provisions engines into one catalog store (see module doc)."""

    def __init__(
        self,
        store: CatalogStore,
        settings: EngineProvisionerSettings,
        *,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self._store = store
        root = settings.root.expanduser().absolute()
        self._settings = settings
        self._root = root
        self._facts = FactSettings(root, settings.search_path, settings.platform)
        self._plan_settings = EnginePlanSettings(str(root), settings.jobs)
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    def parse(self, spec: EngineSpec | str, options: SpecOptions | None = None) -> EngineSpec:
        return parse_engine_spec(spec, options) if isinstance(spec, str) else spec

    async def plan(self, spec: EngineSpec | str, options: SpecOptions | None = None) -> EnginePlan:
        """The plan `provision` would run first, without running it (a dry run)."""
        parsed = self.parse(spec, options)
        facts = await gather_facts(parsed, self._store, self._facts)
        return plan_engine(parsed, facts, self._plan_settings)

    async def provision(
        self,
        spec: EngineSpec | str,
        options: SpecOptions | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> PreparedEngine:
        """Provision `spec` (or find it provisioned) and return it; `progress(done, total)`
        reports build steps while compiling."""
        parsed = self.parse(spec, options)
        text = describe_spec(parsed)
        lock = self._root / "locks" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.lock"
        async with _file_lock(lock):
            for _ in range(_MAX_ROUNDS):
                facts = await gather_facts(parsed, self._store, self._facts)
                plan = plan_engine(parsed, facts, self._plan_settings)
                entry = await run_engine_plan(plan, self._context(facts, progress))
                if entry is not None:
                    return prepared_engine(entry)
        raise EngineProvisionError(f"{text}: the source changed on every fetch; try again")

    def _context(self, facts: EngineFacts, progress: ProgressCallback | None) -> EngineStepContext:
        search = self._settings.search_path
        return EngineStepContext(
            store=self._store,
            root=self._root,
            tools=facts.tools,
            clock_ms=self._clock_ms,
            progress=progress,
            env={"PATH": search} if search is not None else {},
        )


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive advisory lock on `path`, awaited without blocking the event loop."""
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    handle = await asyncio.to_thread(path.open, "a")
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(_LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
