"""Running an engine plan: each step narrated, then executed (PRV-02, PRV-03).

`run_engine_plan(plan, context)` walks the steps in order. Every step is announced with
one log line carrying `extra={"action": ..., "target": ..., "engine": <spec>}` before it
runs; the compile step reports build progress (ninja's `[12/80]`, make's `[ 45%]`) to
`context.progress` as (done, total). Commands go through
`provisioners.engines.process`; file work and the catalog run in worker threads.
Failures are mapped here, once: a failed fetch is `SourceUnreachable` (retryable), a
failed configure or compile `EngineBuildFailed` (with the log's tail and its path), a
failed venv, install or pull `EngineInstallFailed`, a probe that does not answer
`EngineProbeFailed`. Returns the registered (or reused) entry, or None when the plan
only fetched the source and must be planned again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from catalog_core import CatalogStore, EngineEntry, StoreError, sha256_file

from provisioners.engines.process import CommandResult, capture, stream
from provisioners.engines.sources import install_file, unpack_member, write_marker
from provisioners.engines.wheels import seed_wheelhouse
from provisioners.errors import (
    EngineBuildFailed,
    EngineInstallFailed,
    EngineProbeFailed,
    RegistrationFailed,
    SourceUnreachable,
)
from provisioners.models.download import ProgressCallback
from provisioners.plan.engine_steps import (
    Compile,
    Configure,
    CreateVenv,
    EnginePlan,
    EngineStep,
    FetchSdist,
    GitCheckout,
    InstallArtifact,
    InstallPins,
    ProbeImage,
    ProbeLlamaServer,
    ProbePackage,
    ProbeVersion,
    PullImage,
    RegisterEngine,
    ReuseEngine,
    UnpackSource,
)
from provisioners.plan.probes import (
    parse_build_progress,
    parse_first_version,
    parse_llama_server_help,
    parse_llama_server_version,
)

__all__ = ["EngineStepContext", "run_engine_plan"]

_log = logging.getLogger("provisioners.engines")
# Narration (OBS-02): each step's line is a present-tense sentence: "compiles llama-server".
_NARRATED = {
    "reuse": "reuses the catalog's engine",
    "fetch-sdist": "fetches the sdist of",
    "unpack": "unpacks the source into",
    "git-fetch": "fetches",
    "configure": "configures the build of",
    "compile": "compiles",
    "install": "installs the binary at",
    "create-venv": "creates the venv",
    "install-pins": "installs",
    "pull": "pulls the image",
    "probe": "probes",
    "register": "registers the engine",
}
_PROBE_TIMEOUT_S = 60.0
_UV_LOCK_TIMEOUT_S = "3600"  # another uv may hold its cache lock through a long build
_FREEZE = (
    "import importlib.metadata as m, json, sys;"
    "names = sorted(f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions());"
    "print(json.dumps({'version': m.version(sys.argv[1]), 'freeze': names}))"
)


@dataclass(frozen=True, slots=True)
class EngineStepContext:
    """The ports a plan runs against. `tools` are the paths the facts found; `env` is
    added to every command's environment (a test's PATH); `clock_ms` is wall-clock ms."""

    store: CatalogStore
    root: Path
    tools: Mapping[str, str]
    clock_ms: Callable[[], int]
    progress: ProgressCallback | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Outcome:
    version: str = ""
    digest: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    entry: EngineEntry | None = None


async def run_engine_plan(plan: EnginePlan, context: EngineStepContext) -> EngineEntry | None:
    """Run every step of `plan` (see module doc)."""
    outcome = _Outcome()
    for step in plan.steps:
        _log.info(
            "%s %s",
            _NARRATED.get(step.action, step.action),
            step.target,
            extra={"action": step.action, "target": step.target, "engine": plan.spec},
        )
        await _run_step(step, context, outcome)
    if plan.replan:
        return None
    if outcome.entry is None:
        raise RegistrationFailed(f"the plan for {plan.spec} registered nothing")
    return outcome.entry


async def _run_step(step: EngineStep, context: EngineStepContext, outcome: _Outcome) -> None:
    match step:
        case ReuseEngine(entry_id=entry_id):
            outcome.entry = await asyncio.to_thread(context.store.get_engine, entry_id)
        case FetchSdist():
            await _fetch_sdist(step, context)
        case UnpackSource():
            archive, tree = Path(step.archive_path), Path(step.tree_dir)
            await asyncio.to_thread(unpack_member, archive, step.member, tree, step.digest)
        case GitCheckout():
            await _git_checkout(step, context)
        case Configure():
            await _configure(step, context)
        case Compile():
            await _compile(step, context)
        case InstallArtifact(built=built, artifact=artifact):
            if not await asyncio.to_thread(Path(built).is_file):
                raise EngineBuildFailed(f"the build finished but made no {built}")
            await asyncio.to_thread(install_file, Path(built), Path(artifact))
        case CreateVenv() | InstallPins():
            await _venv_step(step, context)
        case PullImage(tool=tool, image=image):
            pulled = await stream([tool, "pull", image], env=context.env)
            _check(pulled, EngineInstallFailed, f"{tool} pull {image}")
        case ProbeLlamaServer() | ProbeVersion() | ProbePackage() | ProbeImage():
            await _probe(step, context, outcome)
        case RegisterEngine():
            outcome.entry = await _register(step, context, outcome)


async def _fetch_sdist(step: FetchSdist, context: EngineStepContext) -> None:
    archive = Path(step.archive_path)
    scratch = archive.with_name(archive.name + ".fetching")
    await asyncio.to_thread(shutil.rmtree, scratch, True)
    # `--no-binary PACKAGE`, not `:all:`: pip builds metadata in an isolated env, whose
    # build requirements (scikit-build-core, ...) may come as wheels.
    argv = [context.tools["pip"], "download", "--no-deps", "--no-binary", step.package]
    argv += [f"{step.package}=={step.version}", "-d", str(scratch)]
    fetched = await stream(argv, env=context.env, log_path=_log_path(context, "fetch-sdist"))
    _check(fetched, SourceUnreachable, f"pip download {step.package}=={step.version}")
    found = sorted(scratch.glob("*.tar.gz"))
    if len(found) != 1:
        raise SourceUnreachable(f"pip download left {len(found)} archives in {scratch}")
    await asyncio.to_thread(found[0].replace, archive)
    await asyncio.to_thread(shutil.rmtree, scratch, True)


async def _git_checkout(step: GitCheckout, context: EngineStepContext) -> None:
    git, checkout = context.tools["git"], Path(step.checkout_dir)
    env: dict[str, str | None] = {**context.env, "GIT_TERMINAL_PROMPT": "0"}
    log = _log_path(context, "git")
    if not (checkout / ".git").exists():
        await asyncio.to_thread(checkout.mkdir, parents=True, exist_ok=True)
        _check(await stream([git, "init", "-q", str(checkout)], env=env, log_path=log),
               SourceUnreachable, "git init")  # fmt: skip
    fetch = [git, "-C", str(checkout), "fetch", "--depth", "1", step.url, step.ref or "HEAD"]
    _check(await stream(fetch, env=env, log_path=log), SourceUnreachable, f"git fetch {step.url}")
    switch = [git, "-C", str(checkout), "checkout", "-q", "--force", "--detach", "FETCH_HEAD"]
    _check(await stream(switch, env=env, log_path=log), SourceUnreachable, "git checkout")
    head = await capture([git, "-C", str(checkout), "rev-parse", "HEAD"], env=env)
    _check(head, SourceUnreachable, "git rev-parse HEAD")
    marker = {"url": step.url, "ref": str(step.ref), "commit": head.output.strip()}
    await asyncio.to_thread(write_marker, checkout, marker)


async def _configure(step: Configure, context: EngineStepContext) -> None:
    build = Path(step.build_dir)
    log = build / "llorch-build.log"
    argv = [context.tools["cmake"], "-S", step.source_dir, "-B", step.build_dir, *step.args]
    env = {**context.env, **dict(step.env)}
    done = await stream(argv, env=env, log_path=log)
    if not done.ok:
        raise EngineBuildFailed(
            f"cmake configure of {step.source_dir} failed (exit {done.returncode}):\n"
            f"{done.output}\nthe whole log: {log}",
            log_path=str(log),
        )


async def _compile(step: Compile, context: EngineStepContext) -> None:
    log = Path(step.build_dir) / "llorch-build.log"
    argv = [context.tools["cmake"], "--build", step.build_dir, "--target", step.build_target]
    argv += ["-j", str(step.jobs)]
    progress = context.progress

    def on_line(line: str) -> None:
        found = parse_build_progress(line)
        if found is not None and progress is not None:
            progress(*found)

    done = await stream(argv, env=context.env, log_path=log, on_line=on_line)
    if not done.ok:
        raise EngineBuildFailed(
            f"building {step.build_target} failed (exit {done.returncode}):\n{done.output}\n"
            f"the whole log: {log}",
            log_path=str(log),
        )


async def _venv_step(step: CreateVenv | InstallPins, context: EngineStepContext) -> None:
    uv = context.tools["uv"]
    env = {**context.env, "UV_LOCK_TIMEOUT": _UV_LOCK_TIMEOUT_S, "VIRTUAL_ENV": None}
    cwd = context.root  # not inside a project: uv must not pick up a workspace's settings
    log = _log_path(context, "venv")
    if isinstance(step, CreateVenv):
        argv = [uv, "venv", "--clear", "--no-project", "--python", step.base_python]
        done = await stream([*argv, step.venv_dir], env=env, cwd=cwd, log_path=log)
        _check(done, EngineInstallFailed, f"uv venv {step.venv_dir}")
        return
    wheelhouse = Path(step.wheelhouse)
    uv_cache = await _uv_cache_dir(uv, env)
    for wheel in await asyncio.to_thread(seed_wheelhouse, wheelhouse, uv_cache, step.pins):
        _log.info(
            "reuses %s, built by uv before", wheel.name,
            extra={"action": "reuse-wheel", "target": str(wheel), "engine": step.venv_dir},
        )  # fmt: skip
    python = str(Path(step.venv_dir) / "bin" / "python")
    install = [uv, "pip", "install", "--python", python, "--find-links", str(wheelhouse)]
    for link in step.find_links:
        install += ["--find-links", link]
    if step.overrides:
        overrides = Path(step.venv_dir) / "llorch-overrides.txt"
        text = "".join(f"{line}\n" for line in step.overrides)
        await asyncio.to_thread(overrides.write_text, text, encoding="utf-8")
        install += ["--override", str(overrides)]
    editables = [arg for path in step.editables for arg in ("-e", path)]
    done = await stream([*install, *step.pins, *editables], env=env, cwd=cwd, log_path=log)
    _check(done, EngineInstallFailed, f"uv pip install {step.target}")


async def _uv_cache_dir(uv: str, env: Mapping[str, str | None]) -> Path | None:
    """Where uv keeps its cache (`uv cache dir`: honours UV_CACHE_DIR); None if unknown."""
    said = await capture([uv, "cache", "dir"], timeout_s=_PROBE_TIMEOUT_S, env=env)
    lines = said.output.strip().splitlines() if said.ok else []
    return Path(lines[-1]) if lines else None


async def _probe(
    step: ProbeLlamaServer | ProbeVersion | ProbePackage | ProbeImage,
    context: EngineStepContext,
    outcome: _Outcome,
) -> None:
    match step:
        case ProbeLlamaServer(binary=binary):
            said = await _answer(binary, "--version", env=context.env)
            info = parse_llama_server_version(said)
            if info is None:
                raise EngineProbeFailed(f"{binary} --version printed no llama.cpp version")
            flags = parse_llama_server_help(await _answer(binary, "--help", env=context.env))
            outcome.version, outcome.extra = info.version, {"build_info": info.build}
            outcome.extra.update(flags.to_extra())
            outcome.digest = await asyncio.to_thread(sha256_file, Path(binary))
        case ProbeVersion(binary=binary):
            version = parse_first_version(await _answer(binary, "--version", env=context.env))
            if version is None:
                raise EngineProbeFailed(f"{binary} --version printed no version")
            outcome.version = version
            outcome.digest = await asyncio.to_thread(sha256_file, Path(binary))
        case ProbePackage(venv_dir=venv, distribution=distribution):
            python = str(Path(venv) / "bin" / "python")
            report = json.loads(await _answer(python, "-c", _FREEZE, distribution))
            outcome.version = str(report["version"])
            outcome.digest = hashlib.sha256("\n".join(report["freeze"]).encode()).hexdigest()
        case ProbeImage(tool=tool, image=image):
            said = await _answer(
                tool, "image", "inspect", "--format", "{{json .RepoDigests}}", image
            )
            digests = json.loads(said or "[]") or [""]
            outcome.version = _image_tag(image)
            outcome.digest = str(digests[0]).rpartition("@")[2]


async def _answer(*argv: str, env: Mapping[str, str] | None = None) -> str:
    done = await capture(argv, timeout_s=_PROBE_TIMEOUT_S, env=env)
    if not done.ok:
        tail = done.output.strip()[-800:]
        raise EngineProbeFailed(f"`{' '.join(argv[:2])}` failed (exit {done.returncode}): {tail}")
    return done.output


async def _register(
    step: RegisterEngine, context: EngineStepContext, outcome: _Outcome
) -> EngineEntry:
    if not outcome.version:
        raise RegistrationFailed(f"{step.entry_id}: nothing was probed to register")
    entry = EngineEntry(
        id=step.entry_id,
        engine=step.engine,
        version=outcome.version,
        mode=step.mode,
        artifact=step.artifact,
        digest=outcome.digest,
        build_ref=step.build_ref,
        flags=step.flags,
        created_at_ms=context.clock_ms(),
        extra={**step.extra, **outcome.extra},
        build_key=step.build_key,
    )
    if step.mode == "package":  # the venv's marker: it is complete, and for this key
        marker = {"build_key": step.build_key, "entry_id": step.entry_id}
        await asyncio.to_thread(write_marker, Path(step.artifact), marker)
    try:
        await asyncio.to_thread(_replace_entry, context.store, entry)
    except StoreError as exc:
        raise RegistrationFailed(f"{step.entry_id}: {exc}", retryable=exc.retryable) from exc
    return entry


def _replace_entry(store: CatalogStore, entry: EngineEntry) -> None:
    """Put `entry`, first removing a stale entry that holds its build key under another id."""
    stale = store.engine_by_build_key(entry.build_key)
    if stale is not None and stale.id != entry.id:
        store.remove_engine(stale.id)
    store.put_engine(entry)


def _check(done: CommandResult, error: type[Exception], what: str) -> None:
    if not done.ok:
        raise error(f"{what} failed (exit {done.returncode}):\n{done.output.strip()[-3000:]}")


def _image_tag(image: str) -> str:
    name = image.partition("@")[0]
    colon, slash = name.rfind(":"), name.rfind("/")
    return name[colon + 1 :] if colon > slash else "latest"


def _log_path(context: EngineStepContext, name: str) -> Path:
    return context.root / "logs" / f"{name}.log"
