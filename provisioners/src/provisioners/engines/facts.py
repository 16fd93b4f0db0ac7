"""What the engine planner needs to know, gathered from this machine and the catalog.

`gather_facts(spec, store, settings)` looks up the tools the spec's mode may need on
PATH (or `settings.search_path`), the platform, the source tree and its digest (see
`provisioners.plan.engines` for the digests), the binary, the base interpreter, the
container runtimes (`info` must answer: a docker client without its daemon is not a
runtime), and finally the catalog's entry under the build key those facts give, with
whether its artifact is still intact (a binary's sha256 matches, a venv's marker names
the key). Short probes run through `provisioners.engines.process`; file work and the
catalog run in worker threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from catalog_core import CatalogStore, ModelFileError, sha256_file

from provisioners.engines.process import capture
from provisioners.engines.sources import read_marker, tree_digest
from provisioners.plan.engine_specs import (
    ENGINES,
    BinarySpec,
    ContainerSpec,
    DirectorySource,
    EngineSpec,
    GitSource,
    PackageSpec,
    SdistSource,
    SourceSpec,
)
from provisioners.plan.engine_steps import (
    BinaryFacts,
    CachedEngine,
    EngineFacts,
    LocalProject,
    PlatformFacts,
    PythonFacts,
    RuntimeFacts,
    SourceFacts,
)
from provisioners.plan.engines import (
    build_key_for,
    git_checkout_dir,
    sdist_archive_path,
    sdist_tree_dir,
)

__all__ = [
    "FactSettings",
    "dependencies_digest",
    "detect_platform",
    "gather_facts",
    "local_projects",
    "parse_pip_find_links",
    "pip_find_links",
]

_SOURCE_TOOLS = {
    "cmake": ("cmake",),
    "ninja": ("ninja",),
    "make": ("make",),
    "ccache": ("ccache",),
    "git": ("git",),
    "pip": ("pip3", "pip"),
    "nvcc": ("nvcc",),
    "c++": ("c++", "g++", "clang++"),
    "cc": ("cc", "gcc", "clang"),
}
_COMPILER_ENV = {"c++": "CXX", "cc": "CC"}
_RUNTIME_VERSION = {"docker": "{{.ServerVersion}}", "podman": "{{.Version.Version}}"}
_PYTHON_VERSION = (
    "import os, sys; print('%d.%d.%d' % sys.version_info[:3]); "
    "print(os.path.realpath(sys.executable))"
)
_PROBE_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class FactSettings:
    root: Path  # absolute
    search_path: str | None = None  # where tools are looked up; None: $PATH
    platform: PlatformFacts | None = None  # None: detected


async def gather_facts(
    spec: EngineSpec, store: CatalogStore, settings: FactSettings
) -> EngineFacts:
    """The facts for planning `spec` now (see module doc)."""
    facts = EngineFacts(platform=settings.platform or detect_platform())
    match spec:
        case SourceSpec():
            tools = _find_tools(_SOURCE_TOOLS, settings.search_path)
            source = await asyncio.to_thread(_source_facts, spec, settings.root)
            facts = replace(facts, tools=tools, source=source)
        case PackageSpec():
            tools = _find_tools({"uv": ("uv",)}, settings.search_path)
            if "uv" not in tools and settings.search_path is None and os.environ.get("UV"):
                tools["uv"] = os.environ["UV"]  # `uv run` names itself in $UV
            python = await _python_facts(spec.base_python or "python3.11", settings.search_path)
            links = await pip_find_links(settings.search_path)
            package = ENGINES[spec.engine].package
            members = package.local_members if package is not None else ()
            local = await asyncio.to_thread(local_projects, members)
            facts = replace(
                facts, tools=tools, base_python=python, find_links=links, local_projects=local
            )
        case BinarySpec():
            binary = await asyncio.to_thread(_binary_facts, spec.path, settings.search_path)
            facts = replace(facts, binary=binary)
        case ContainerSpec():
            runtimes = await _runtime_facts(spec.image, settings.search_path)
            facts = replace(facts, runtimes=runtimes)
    key = build_key_for(spec, facts)
    if key is None:
        return facts
    cached = await asyncio.to_thread(_cached, store, key)
    return replace(facts, cached=cached)


def local_projects(distributions: tuple[str, ...]) -> tuple[LocalProject, ...]:
    """Where the running llorch's `distributions` come from: the folder each was
    installed from as a project (its `direct_url.json` names a local directory, as
    `uv sync` records for the workspace's members), with `dependencies_digest`; path
    None for one installed from a wheel or not installed."""
    found = []
    for name in distributions:
        folder = _project_folder(name)
        pyproject = Path(folder, "pyproject.toml") if folder else None
        if pyproject is None or not pyproject.is_file():
            found.append(LocalProject(name, None))
            continue
        found.append(LocalProject(name, folder, dependencies_digest(pyproject)))
    return tuple(found)


def dependencies_digest(pyproject: Path) -> str:
    """sha256 of what an install of the project depends on (`project.dependencies`,
    optional dependencies, `requires-python`, its build system and uv sources), not of
    the whole file: a comment or a tool's setting changes no venv."""
    with pyproject.open("rb") as handle:
        data = tomllib.load(handle)
    project = data.get("project", {})
    relevant = {
        "dependencies": project.get("dependencies", []),
        "optional": project.get("optional-dependencies", {}),
        "python": project.get("requires-python", ""),
        "build": data.get("build-system", {}),
        "sources": data.get("tool", {}).get("uv", {}).get("sources", {}),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def _project_folder(distribution: str) -> str | None:
    try:
        said = importlib.metadata.distribution(distribution).read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None
    try:
        direct = json.loads(said or "{}")
    except json.JSONDecodeError:
        return None
    url = str(direct.get("url", ""))
    if "dir_info" not in direct or not url.startswith("file://"):
        return None
    return str(Path(url.removeprefix("file://")).resolve())


def detect_platform() -> PlatformFacts:
    driver = Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None
    return PlatformFacts(platform.system(), platform.machine(), driver)


def _find_tools(wanted: dict[str, tuple[str, ...]], search_path: str | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for tool, names in wanted.items():
        configured = os.environ.get(_COMPILER_ENV.get(tool, ""), "")
        for name in (configured, *names) if configured else names:
            path = shutil.which(name, path=search_path)
            if path is not None:
                found[tool] = path
                break
    return found


def _source_facts(spec: SourceSpec, root: Path) -> SourceFacts:
    match spec.source:
        case SdistSource() as sdist:
            archive = Path(sdist_archive_path(str(root), sdist))
            tree = sdist_tree_dir(str(root), sdist)
            if not archive.is_file():
                return SourceFacts(tree, False, None, str(archive), False)
            digest = "sha256:" + sha256_file(archive)
            ready = read_marker(Path(tree)).get("digest") == digest
            return SourceFacts(tree, ready, digest, str(archive), True)
        case GitSource(url=url, ref=ref) as git:
            checkout = git_checkout_dir(str(root), git)
            marker = read_marker(Path(checkout))
            fetched = marker.get("url") == url and marker.get("ref") == str(ref)
            commit = marker.get("commit") if fetched else None
            return SourceFacts(checkout, commit is not None, f"git:{commit}" if commit else None)
        case DirectorySource(path=path):
            folder = Path(path).expanduser().resolve()
            if not (folder / "CMakeLists.txt").is_file():
                return SourceFacts(str(folder), False, None)
            return SourceFacts(str(folder), True, tree_digest(folder))
    raise AssertionError(spec.source)


async def _python_facts(python: str, search_path: str | None) -> PythonFacts | None:
    path = shutil.which(python, path=search_path)
    if path is None:
        return None
    probe = await capture([path, "-c", _PYTHON_VERSION], timeout_s=_PROBE_TIMEOUT_S)
    said = probe.output.strip().splitlines()
    if not probe.ok or len(said) != 2:
        return None
    version, executable = said
    # The interpreter itself, not a launcher in front of it (a pyenv shim, a symlink):
    # the venv is made from it, and the build key names it.
    return PythonFacts(executable, version)


async def pip_find_links(search_path: str | None) -> tuple[str, ...]:
    """pip's configured `find-links` (`pip config list`, any scope, and $PIP_FIND_LINKS):
    uv does not read pip's configuration, so package mode passes them on. () when there
    is no pip or it says nothing."""
    links = list(parse_pip_find_links(os.environ.get("PIP_FIND_LINKS", "")))
    pip = _find_tools({"pip": ("pip3", "pip")}, search_path).get("pip")
    if pip is not None:
        said = await capture([pip, "config", "list"], timeout_s=_PROBE_TIMEOUT_S)
        if said.ok:
            for line in said.output.splitlines():
                name, sep, value = line.partition("=")
                if sep and name.strip().endswith(".find-links"):
                    links += parse_pip_find_links(value.strip().strip("'\""))
    return tuple(dict.fromkeys(links))


def parse_pip_find_links(value: str) -> tuple[str, ...]:
    """The locations of one find-links value (whitespace separated)."""
    return tuple(part for part in value.split() if part)


def _binary_facts(given: str, search_path: str | None) -> BinaryFacts:
    located = given if "/" in given else shutil.which(given, path=search_path)
    if located is None or not Path(located).expanduser().exists():
        return BinaryFacts(None, False, None)
    path = Path(located).expanduser().resolve()
    if not path.is_file() or not os.access(path, os.X_OK):
        return BinaryFacts(str(path), False, None)
    try:
        return BinaryFacts(str(path), True, sha256_file(path))
    except ModelFileError:
        return BinaryFacts(str(path), False, None)


async def _runtime_facts(image: str, search_path: str | None) -> tuple[RuntimeFacts, ...]:
    found: list[RuntimeFacts] = []
    for tool in ("podman", "docker"):
        path = shutil.which(tool, path=search_path)
        if path is None:
            continue
        env = {"PATH": search_path} if search_path is not None else None
        info = await capture(
            [path, "info", "--format", _RUNTIME_VERSION[tool]], timeout_s=_PROBE_TIMEOUT_S, env=env
        )
        if not info.ok:
            found.append(RuntimeFacts(tool, path, False, _last_line(info.output)))
            continue
        inspect = await capture([path, "image", "inspect", image], timeout_s=_PROBE_TIMEOUT_S)
        found.append(RuntimeFacts(tool, path, True, image_present=inspect.ok))
    return tuple(found)


def _cached(store: CatalogStore, key: str) -> CachedEngine | None:
    entry = store.engine_by_build_key(key)
    if entry is None:
        return None
    artifact = Path(entry.artifact)
    match entry.mode:
        case "source" | "binary":
            intact = _file_digest(artifact) == entry.digest
        case "package":
            marker = read_marker(artifact)
            intact = (artifact / "bin" / "python").exists() and marker.get("build_key") == key
        case "container":
            intact = True  # the planner also wants the image in the runtime's store
    return CachedEngine(entry, intact)


def _file_digest(path: Path) -> str | None:
    try:
        return sha256_file(path) if path.is_file() else None
    except ModelFileError:
        return None


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
