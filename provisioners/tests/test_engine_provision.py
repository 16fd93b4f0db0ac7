"""The engine provisioner for real (PRV-02): llama-server built from llama.cpp's source by
cmake, a package-mode venv for `llama_cpp.server`, binary mode on the built server, and the
fast failures when a tool is missing.

The source build and the venv live in the shared engine cache with its own catalog
(`provisioners.testing.engines_root_for_tests()`), so a machine builds them once: the
first test session that needs one pays minutes, every later one (and other packages'
suites) finds it. The rest provision into a per-test folder and catalog.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from catalog_core import CatalogStore
from provisioners.engines import EngineProvisioner, EngineProvisionerSettings, PreparedEngine
from provisioners.errors import EngineProbeFailed, EngineToolMissing
from provisioners.plan.engine_specs import SdistSource
from provisioners.plan.engines import sdist_tree_dir
from provisioners.plan.probes import parse_llama_server_version
from provisioners.testing import (
    BUILD_TIMEOUT_S,
    LLAMA_CPP_SERVER_TEST_SPEC,
    LLAMA_SERVER_TEST_OPTIONS,
    LLAMA_SERVER_TEST_SPEC,
    engines_root_for_tests,
    llama_cpp_server_for_tests,
    llama_server_for_tests,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(BUILD_TIMEOUT_S)]

_NARRATION = "provisioners.engines"
_BUILD_ACTIONS = {"fetch-sdist", "unpack", "configure", "compile", "install"}


@pytest.fixture(scope="session")
def llama_server() -> PreparedEngine:
    started = time.monotonic()
    prepared = llama_server_for_tests()
    print(f"\nllama-server provisioned in {time.monotonic() - started:.1f} s")  # cold: a build
    return prepared


@pytest.fixture(scope="session")
def llama_cpp_server() -> PreparedEngine:
    started = time.monotonic()
    prepared = llama_cpp_server_for_tests()
    print(f"\nllama_cpp.server venv provisioned in {time.monotonic() - started:.1f} s")
    return prepared


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CatalogStore]:
    with CatalogStore(tmp_path / "catalog.sqlite") as opened:
        yield opened


@pytest.fixture
def shared_store() -> Iterator[CatalogStore]:
    with CatalogStore(engines_root_for_tests() / "catalog.sqlite") as opened:
        yield opened


def _actions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [str(r.__dict__["action"]) for r in caplog.records if "action" in r.__dict__]


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in argv], capture_output=True, text=True, timeout=120, check=False
    )


def _shims(folder: Path, **scripts: str) -> str:
    """A folder of executables for a search path: each a /bin/sh script (body given) or,
    for a body starting with `/`, a symlink to that program."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        path = folder / name
        if body.startswith("/"):
            path.symlink_to(body)
        else:
            path.write_text(f"#!/bin/sh\n{body}\n")
            path.chmod(0o755)
    return str(folder)


# -- source mode --------------------------------------------------------------------------


def test_the_llama_server_built_from_source_answers_its_version(
    llama_server: PreparedEngine, shared_store: CatalogStore
) -> None:
    assert llama_server.mode == "source" and llama_server.engine == "llamacpp"
    done = _run(llama_server.command[0], "--version")
    assert done.returncode == 0, done.stderr
    info = parse_llama_server_version(done.stdout + done.stderr)
    assert info is not None and info.version == llama_server.version
    entry = shared_store.get_engine(llama_server.entry_id)
    assert entry.artifact == llama_server.command[0] and entry.digest == llama_server.digest
    assert entry.build_ref.startswith("sdist:llama-cpp-python==0.3.36/vendor/llama.cpp sha256:")
    assert {"-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"} <= set(
        entry.flags
    )
    assert llama_server.server_flags is not None and llama_server.server_flags.api_key
    assert llama_server.api_key_env == "LLAMA_API_KEY"


async def test_a_second_provision_of_the_same_source_and_flags_builds_nothing(
    llama_server: PreparedEngine, shared_store: CatalogStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=_NARRATION)
    root = engines_root_for_tests()
    provisioner = EngineProvisioner(shared_store, EngineProvisionerSettings(root, jobs=2))
    started = time.monotonic()
    again = await provisioner.provision(LLAMA_SERVER_TEST_SPEC, LLAMA_SERVER_TEST_OPTIONS)
    print(f"\nwarm re-provision of {LLAMA_SERVER_TEST_SPEC}: {time.monotonic() - started:.2f} s")
    assert _actions(caplog) == ["reuse"]
    assert again.entry_id == llama_server.entry_id and again == llama_server


# -- binary mode --------------------------------------------------------------------------


async def test_binary_mode_probes_the_version_and_flags_of_an_existing_server(
    llama_server: PreparedEngine,
    store: CatalogStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=_NARRATION)
    provisioner = EngineProvisioner(store, EngineProvisionerSettings(tmp_path / "engines"))
    spec = f"llamacpp:binary={llama_server.command[0]}"
    prepared = await provisioner.provision(spec)
    assert _actions(caplog) == ["probe", "register"]
    assert (prepared.mode, prepared.version) == ("binary", llama_server.version)
    assert prepared.command == llama_server.command
    assert prepared.server_flags == llama_server.server_flags
    entry = store.get_engine(prepared.entry_id)
    assert entry.digest == llama_server.digest and entry.extra["build_info"]
    caplog.clear()
    assert await provisioner.provision(spec) == prepared
    assert _actions(caplog) == ["reuse"]


async def test_a_binary_that_is_not_a_llama_server_fails_its_probe(
    store: CatalogStore, tmp_path: Path
) -> None:
    fake = Path(_shims(tmp_path / "bin", liar="echo 'I am not llama.cpp'")) / "liar"
    provisioner = EngineProvisioner(store, EngineProvisionerSettings(tmp_path / "engines"))
    with pytest.raises(EngineProbeFailed, match=r"printed no llama\.cpp version"):
        await provisioner.provision(f"llamacpp:binary={fake}")
    assert store.list_engines().items == ()


# -- missing tools --------------------------------------------------------------------------


async def test_a_source_build_without_cmake_fails_fast_naming_it(
    llama_server: PreparedEngine, store: CatalogStore, tmp_path: Path
) -> None:
    tree = sdist_tree_dir(str(engines_root_for_tests()), SdistSource("0.3.36"))
    tools = {name: path for name in ("g++", "gcc", "ninja") if (path := shutil.which(name))}
    search = _shims(tmp_path / "bin", **tools)
    settings = EngineProvisionerSettings(tmp_path / "engines", search_path=search)
    provisioner = EngineProvisioner(store, settings)
    started = time.monotonic()
    with pytest.raises(EngineToolMissing) as raised:
        await provisioner.provision(f"llamacpp:source={tree}")
    print(f"\nmissing cmake reported in {time.monotonic() - started:.2f} s")
    assert raised.value.tool == "cmake" and "apt-get install cmake" in str(raised.value)
    assert not (tmp_path / "engines" / "work").exists(), "nothing was configured"
    assert store.list_engines().items == ()


async def test_container_mode_without_podman_or_docker_names_the_tool_and_its_remedy(
    store: CatalogStore, tmp_path: Path
) -> None:
    search = _shims(tmp_path / "empty")
    settings = EngineProvisionerSettings(tmp_path / "engines", search_path=search)
    with pytest.raises(EngineToolMissing) as raised:
        await EngineProvisioner(store, settings).provision("vllm:container")
    assert raised.value.tool == "podman or docker"
    assert "apt-get install podman" in raised.value.remedy


async def test_a_docker_client_whose_daemon_does_not_answer_is_refused_with_its_words(
    store: CatalogStore, tmp_path: Path
) -> None:
    said = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock"
    search = _shims(tmp_path / "bin", docker=f"echo '{said}' >&2; exit 1")
    settings = EngineProvisionerSettings(tmp_path / "engines", search_path=search)
    with pytest.raises(EngineToolMissing) as raised:
        await EngineProvisioner(store, settings).provision("tgi:container")
    assert raised.value.tool == "docker daemon"
    assert said in raised.value.remedy and "podman" in raised.value.remedy


# -- package mode ---------------------------------------------------------------------------


def test_package_mode_makes_a_venv_whose_python_runs_llama_cpp_server(
    llama_cpp_server: PreparedEngine, shared_store: CatalogStore
) -> None:
    python = Path(llama_cpp_server.command[0])
    assert llama_cpp_server.command[1:] == ("-m", "llama_cpp.server")
    code = "import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)"
    done = _run(python, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0.3.36" == llama_cpp_server.version
    entry = shared_store.get_engine(llama_cpp_server.entry_id)
    assert (entry.mode, entry.artifact) == ("package", str(llama_cpp_server.artifact))
    assert entry.flags == ("llama-cpp-python[server]==0.3.36",)
    assert llama_cpp_server.api_key_env == "API_KEY"


async def test_a_new_venv_reuses_the_llama_cpp_python_wheel_uv_built_before(
    llama_cpp_server: PreparedEngine,
    store: CatalogStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=_NARRATION)
    root = tmp_path / "engines"
    provisioner = EngineProvisioner(store, EngineProvisionerSettings(root))
    started = time.monotonic()
    prepared = await provisioner.provision(LLAMA_CPP_SERVER_TEST_SPEC)
    print(f"\na second llama_cpp.server venv in {time.monotonic() - started:.1f} s")
    # Each step is narrated as it starts; the wheel is reused inside install-pins.
    assert _actions(caplog) == ["create-venv", "install-pins", "reuse-wheel", "probe", "register"]
    assert prepared.version == "0.3.36" and prepared.artifact.is_relative_to(root)
    assert any((root / "wheels").glob("llama_cpp_python-0.3.36-*.whl"))
    log = (root / "logs" / "venv.log").read_text()
    assert "Built llama-cpp-python" not in log, "uv compiled llama-cpp-python again"
    assert not set(_actions(caplog)) & _BUILD_ACTIONS
