"""The values engine planning works on (PRV-02, PRV-03): facts in, steps out. Pure.

`EngineFacts` is what the executor found before planning: the tools on PATH, the
platform, the source tree and its digest, the binary, the base interpreter, the
container runtimes, and the catalog's entry under the plan's build key. The steps are
frozen values, each with an `action` and a `target` for narration; the executor runs
them in order. `EnginePlan.replan` says that the steps only fetch the source, whose
digest (and so the build key) is known after them: the executor then gathers facts and
plans again.

`TOOL_REMEDIES` says how to install each tool a plan may need (Debian package names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

from catalog_core.entries import EngineEntry, EngineMode

__all__ = [
    "TOOL_REMEDIES",
    "BinaryFacts",
    "CachedEngine",
    "Compile",
    "Configure",
    "CreateVenv",
    "EngineFacts",
    "EnginePlan",
    "EnginePlanSettings",
    "EngineStep",
    "FetchSdist",
    "GitCheckout",
    "InstallArtifact",
    "InstallPins",
    "LocalProject",
    "PlatformFacts",
    "ProbeImage",
    "ProbeLlamaServer",
    "ProbePackage",
    "ProbeVersion",
    "PullImage",
    "PythonFacts",
    "RegisterEngine",
    "ReuseEngine",
    "RuntimeFacts",
    "SourceFacts",
    "UnpackSource",
]

TOOL_REMEDIES: Mapping[str, str] = MappingProxyType(
    {
        "cmake": "install it: apt-get install cmake",
        "c++": "install a C++ compiler: apt-get install g++ (or build-essential)",
        "cc": "install a C compiler: apt-get install gcc (or build-essential)",
        "ninja or make": "install a build tool: apt-get install ninja-build (or make)",
        "git": "install it: apt-get install git",
        "pip": "install it: apt-get install python3-pip",
        "uv": "install it: pip install uv (see https://docs.astral.sh/uv/)",
        "nvcc": "install the CUDA toolkit: apt-get install nvidia-cuda-toolkit",
        "python3.11": "install it: apt-get install python3.11 python3.11-venv",
        "podman or docker": "install one: apt-get install podman (or docker.io)",
        "podman": "install it: apt-get install podman",
        "docker": "install it: apt-get install docker.io (the daemon comes with it)",
    }
)


# -- facts -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlatformFacts:
    system: str = "Linux"  # platform.system()
    machine: str = "x86_64"  # platform.machine()
    nvidia_driver: bool = False  # /proc/driver/nvidia/version or nvidia-smi is there


@dataclass(frozen=True, slots=True)
class SourceFacts:
    """Where the source tree is (or goes), whether it is ready, and its digest."""

    tree_dir: str  # absolute: the tree cmake builds
    tree_ready: bool  # present and complete (unpacked from this archive, checked out)
    digest: str | None  # None until the source is here (see module doc)
    archive_path: str | None = None  # sdist: where the archive is kept
    archive_present: bool = False


@dataclass(frozen=True, slots=True)
class LocalProject:
    """A distribution of the running llorch that a venv gets editable (package mode's
    `local_members`): its source project, and a sha256 of what that project's
    `pyproject.toml` says it depends on (part of the build key, so a changed dependency
    makes a new venv; code edits need none, the install is editable). `path` None: the
    running llorch has it installed from a wheel, with no source project to install."""

    distribution: str
    path: str | None
    pyproject_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class BinaryFacts:
    resolved_path: str | None  # symlinks resolved; None when nothing is there
    executable: bool
    sha256: str | None


@dataclass(frozen=True, slots=True)
class PythonFacts:
    """The interpreter a venv is made from."""

    path: str
    version: str  # "3.11.2"


@dataclass(frozen=True, slots=True)
class RuntimeFacts:
    """A container tool found on PATH and whether it can run containers now."""

    tool: str  # "podman" or "docker"
    path: str
    reachable: bool  # `info` answered: the daemon (docker) or the runtime (podman) works
    detail: str = ""  # why not, in the tool's words
    image_present: bool = False  # the spec's image is in its local store


@dataclass(frozen=True, slots=True)
class CachedEngine:
    entry: EngineEntry  # the catalog's entry under the plan's build key
    intact: bool  # its artifact is still there, unchanged


@dataclass(frozen=True, slots=True)
class EngineFacts:
    tools: Mapping[str, str] = field(default_factory=dict)  # tool name -> path, found ones
    platform: PlatformFacts = field(default_factory=PlatformFacts)
    source: SourceFacts | None = None
    binary: BinaryFacts | None = None
    base_python: PythonFacts | None = None
    runtimes: tuple[RuntimeFacts, ...] = ()  # in order of preference
    cached: CachedEngine | None = None
    find_links: tuple[str, ...] = ()  # pip's configured find-links (package mode)
    local_projects: tuple[LocalProject, ...] = ()  # package mode's `local_members`


@dataclass(frozen=True, slots=True)
class EnginePlanSettings:
    """`root` (absolute) holds sources, build folders, artifacts, venvs and locks."""

    root: str
    jobs: int = 2  # parallel compile jobs; not part of the build key


# -- steps -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReuseEngine:
    """The catalog already has this engine, with its artifact intact."""

    action: ClassVar[str] = "reuse"
    entry_id: str

    @property
    def target(self) -> str:
        return self.entry_id


@dataclass(frozen=True, slots=True)
class FetchSdist:
    """`pip download --no-deps --no-binary :all: PACKAGE==VERSION` into `archive_path`."""

    action: ClassVar[str] = "fetch-sdist"
    package: str
    version: str
    archive_path: str

    @property
    def target(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True, slots=True)
class UnpackSource:
    """Extract the archive's `member` folder into `tree_dir`, marked with `digest`."""

    action: ClassVar[str] = "unpack"
    archive_path: str
    member: str
    tree_dir: str
    digest: str

    @property
    def target(self) -> str:
        return self.tree_dir


@dataclass(frozen=True, slots=True)
class GitCheckout:
    """Fetch `ref` of `url` into `checkout_dir` (made if missing) and check it out."""

    action: ClassVar[str] = "git-fetch"
    url: str
    ref: str | None
    checkout_dir: str

    @property
    def target(self) -> str:
        return f"{self.url}@{self.ref or 'HEAD'}"


@dataclass(frozen=True, slots=True)
class Configure:
    """`cmake -S source_dir -B build_dir ARGS` with `env` added."""

    action: ClassVar[str] = "configure"
    source_dir: str
    build_dir: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()

    @property
    def target(self) -> str:
        return self.source_dir


@dataclass(frozen=True, slots=True)
class Compile:
    """`cmake --build build_dir --target TARGET -j JOBS`, progress parsed from its lines."""

    action: ClassVar[str] = "compile"
    build_dir: str
    build_target: str
    jobs: int

    @property
    def target(self) -> str:
        return f"{self.build_target} (-j{self.jobs})"


@dataclass(frozen=True, slots=True)
class InstallArtifact:
    """Copy the built file to `artifact` atomically."""

    action: ClassVar[str] = "install"
    built: str
    artifact: str

    @property
    def target(self) -> str:
        return self.artifact


@dataclass(frozen=True, slots=True)
class CreateVenv:
    """`uv venv --clear --python BASE VENV` (any half-made venv there is replaced)."""

    action: ClassVar[str] = "create-venv"
    base_python: str
    venv_dir: str

    @property
    def target(self) -> str:
        return self.venv_dir


@dataclass(frozen=True, slots=True)
class InstallPins:
    """`uv pip install --python VENV/bin/python --find-links WHEELHOUSE PINS`, after
    copying into the wheelhouse the wheels uv already built for the pins (see
    `provisioners.engines.wheels`: a pinned sdist is not compiled again). `find_links`
    are more `--find-links` (pip's configured ones: uv does not read pip's config);
    `overrides` become a uv `--override` file in the venv; `editables` are project
    folders installed editable (`-e PATH`) in the same resolution."""

    action: ClassVar[str] = "install-pins"
    venv_dir: str
    pins: tuple[str, ...]
    wheelhouse: str
    find_links: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    editables: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        return " ".join((*self.pins, *(f"-e {path}" for path in self.editables)))


@dataclass(frozen=True, slots=True)
class PullImage:
    action: ClassVar[str] = "pull"
    tool: str  # path of podman or docker
    image: str

    @property
    def target(self) -> str:
        return self.image


@dataclass(frozen=True, slots=True)
class ProbeLlamaServer:
    """`--version` and `--help` of a llama-server; sha256 of the file."""

    action: ClassVar[str] = "probe"
    binary: str

    @property
    def target(self) -> str:
        return self.binary


@dataclass(frozen=True, slots=True)
class ProbeVersion:
    """`BINARY --version`, its first version; sha256 of the file."""

    action: ClassVar[str] = "probe"
    binary: str

    @property
    def target(self) -> str:
        return self.binary


@dataclass(frozen=True, slots=True)
class ProbePackage:
    """The installed version of `distribution` in the venv; digest of its whole freeze."""

    action: ClassVar[str] = "probe"
    venv_dir: str
    distribution: str

    @property
    def target(self) -> str:
        return self.venv_dir


@dataclass(frozen=True, slots=True)
class ProbeImage:
    """The image's repo digest from `TOOL image inspect`."""

    action: ClassVar[str] = "probe"
    tool: str
    image: str

    @property
    def target(self) -> str:
        return self.image


@dataclass(frozen=True, slots=True)
class RegisterEngine:
    """Write the entry; version and digest come from the probe step before it."""

    action: ClassVar[str] = "register"
    entry_id: str
    engine: str
    mode: EngineMode
    artifact: str
    build_ref: str
    flags: tuple[str, ...]
    build_key: str
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return self.entry_id


EngineStep = (
    ReuseEngine
    | FetchSdist
    | UnpackSource
    | GitCheckout
    | Configure
    | Compile
    | InstallArtifact
    | CreateVenv
    | InstallPins
    | PullImage
    | ProbeLlamaServer
    | ProbeVersion
    | ProbePackage
    | ProbeImage
    | RegisterEngine
)


@dataclass(frozen=True, slots=True)
class EnginePlan:
    spec: str  # the spec, as text
    engine: str
    mode: EngineMode
    entry_id: str | None  # None while the source is still to be fetched
    build_key: str | None
    steps: tuple[EngineStep, ...]
    replan: bool = False  # True: gather facts and plan again after these steps
