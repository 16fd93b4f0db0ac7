"""`PreparedEngine`: what an engine provisioner hands the supervisor (PRV-02), and its
catalog record. Pure values; no I/O.

`prepared_engine(entry)` rebuilds the prepared engine from its catalog entry alone (the
engine profile says how it is started), so a pool manager that finds an entry in the
catalog needs no new probe. For containers, `PreparedEngine.container_command(launch)`
gives one pool's `podman run`/`docker run` line (see `provisioners.plan.containers`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from catalog_core import EngineEntry, EngineMode

from provisioners.plan.containers import ContainerLaunch, LaunchCommand, container_run
from provisioners.plan.engine_specs import ENGINES
from provisioners.plan.probes import ServerFlags

__all__ = ["PreparedEngine", "engine_entry", "prepared_engine"]


@dataclass(frozen=True, slots=True)
class PreparedEngine:
    """A ready-to-run engine. `command` is the argv prefix (engine flags follow it),
    `env` what to add to the environment, `artifact` the venv, binary or image it runs
    from, `digest` the hex digest naming its inputs (pins, source, flags).

    `ports` are the engine's default ports by purpose (`http`, ...); `api_key_env` the
    env var its server reads a per-pool key from (None: no key support, SEC-02);
    `server_flags` the flag forms a llama-server accepts; `runtime` the container tool.
    """

    engine: str
    mode: EngineMode
    command: tuple[str, ...]
    version: str
    digest: str
    artifact: Path
    env: Mapping[str, str] = field(default_factory=dict)
    entry_id: str = ""
    ports: Mapping[str, int] = field(default_factory=dict)
    api_key_env: str | None = None
    server_flags: ServerFlags | None = None
    runtime: str | None = None

    def container_command(self, launch: ContainerLaunch) -> LaunchCommand:
        """One pool's container command line; the engine's own flags follow the image."""
        if self.mode != "container" or self.runtime is None:
            raise ValueError(f"{self.entry_id or self.engine} is not a container engine")
        return container_run(self.runtime, str(self.artifact), self.engine, launch)


def prepared_engine(entry: EngineEntry) -> PreparedEngine:
    """The prepared engine a catalog entry describes (see module doc)."""
    profile = ENGINES.get(entry.engine)
    ports = dict(profile.ports) if profile is not None else {}
    runtime = entry.extra.get("runtime_path") if entry.mode == "container" else None
    return PreparedEngine(
        engine=entry.engine,
        mode=entry.mode,
        command=_command(entry, runtime),
        version=entry.version,
        digest=entry.digest,
        artifact=Path(entry.artifact),
        entry_id=entry.id,
        ports=ports,
        api_key_env=profile.api_key_env if profile is not None else None,
        server_flags=ServerFlags.from_extra(entry.extra),
        runtime=runtime,
    )


def _command(entry: EngineEntry, runtime: str | None) -> tuple[str, ...]:
    if entry.mode == "container":
        return (runtime or "docker", "run", "--rm", entry.artifact)
    if entry.mode != "package":
        return (entry.artifact,)
    package = ENGINES[entry.engine].package if entry.engine in ENGINES else None
    tail = package.command if package is not None else ()
    if tail and tail[0].startswith("bin/"):  # a console script of the venv
        return (posixpath.join(entry.artifact, tail[0]), *tail[1:])
    return (posixpath.join(entry.artifact, "bin", "python"), *tail)


def engine_entry(prepared: PreparedEngine, created_at_ms: int) -> EngineEntry:
    """The catalog record of a prepared engine (CAT-03); its id is engine and digest."""
    return EngineEntry(
        id=f"{prepared.engine}-{prepared.digest[:16]}",
        engine=prepared.engine,
        version=prepared.version,
        mode=prepared.mode,
        artifact=str(prepared.artifact),
        digest=prepared.digest,
        flags=prepared.command[1:],
        created_at_ms=created_at_ms,
        build_key=prepared.digest,
    )
