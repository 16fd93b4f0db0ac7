"""Source mode end to end on a small CMake tree (PRV-02): real cmake, ninja, compiler, git.

The tree stands in for llama.cpp: its `llama-server` target is a small C program that
answers `--version` and `--help` the way llama-server does, beside a second target that
must not be built. That makes every path of a source build run for real in seconds:
configure, compile only `llama-server` (with progress), install, probe, register, reuse,
rebuild after an edit, a git checkout, ccache as the compiler launcher, a failing compile.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from catalog_core import CatalogStore
from provisioners.engines import EngineProvisioner, EngineProvisionerSettings
from provisioners.errors import EngineBuildFailed

pytestmark = pytest.mark.integration

_NARRATION = "provisioners.engines"
_BUILD = ["configure", "compile", "install", "probe", "register"]
_CMAKELISTS = """\
cmake_minimum_required(VERSION 3.14)
project(fake_llama C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(llama-server server.c)
add_executable(llama-other other.c)
"""
_SERVER = """\
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        fprintf(stderr, "version: 0.0.1-test (build %d, commit abc1234)\\n", BUILD);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        printf("-fa,   --flash-attn [on|off|auto]\\n--metrics\\n--api-key KEY\\n");
        return 0;
    }
    return 1;
}
"""
_TOOLS = ("cmake", "ninja", "gcc", "cc", "g++", "c++", "ld", "as", "ar", "ranlib", "git")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    folder = tmp_path / "llama.cpp"
    folder.mkdir()
    (folder / "CMakeLists.txt").write_text(_CMAKELISTS)
    (folder / "server.c").write_text("#define BUILD 7\n" + _SERVER)
    (folder / "other.c").write_text("int main(void) { return 0; }\n")
    return folder


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CatalogStore]:
    with CatalogStore(tmp_path / "catalog.sqlite") as opened:
        yield opened


def _provisioner(store: CatalogStore, root: Path, search: str | None = None) -> EngineProvisioner:
    return EngineProvisioner(store, EngineProvisionerSettings(root, jobs=2, search_path=search))


def _actions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [str(r.__dict__["action"]) for r in caplog.records if "action" in r.__dict__]


def _text(path: str) -> str:
    """A file's text (a plain function: the tests are async)."""
    return Path(path).read_text()


def _git(folder: Path, *argv: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *argv],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return done.stdout.strip()


async def test_a_tree_is_configured_and_only_llama_server_is_built_then_reused(
    tree: Path, store: CatalogStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=_NARRATION)
    provisioner = _provisioner(store, tmp_path / "engines")
    progress: list[tuple[int, int | None]] = []
    prepared = await provisioner.provision(
        f"llamacpp:source={tree}", progress=lambda done, total: progress.append((done, total))
    )
    assert _actions(caplog) == _BUILD
    assert (prepared.version, prepared.mode) == ("0.0.1-test", "source")
    assert prepared.server_flags is not None and prepared.server_flags.flash_attn == "value"
    assert prepared.artifact == tmp_path / "engines" / "builds" / prepared.entry_id / "llama-server"
    assert progress and progress[-1][0] == progress[-1][1], progress
    built = list((tmp_path / "engines" / "work").glob("*/bin/*"))
    assert [path.name for path in built] == ["llama-server"], "only llama-server is built"
    entry = store.get_engine(prepared.entry_id)
    assert entry.build_ref == f"{tree} {entry.extra['source_digest']}"
    assert entry.extra["build_info"] == "b7-abc1234"

    caplog.clear()
    assert await provisioner.provision(f"llamacpp:source={tree}") == prepared
    assert _actions(caplog) == ["reuse"]


async def test_an_edited_tree_is_built_again_under_a_new_entry(
    tree: Path, store: CatalogStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provisioner = _provisioner(store, tmp_path / "engines")
    first = await provisioner.provision(f"llamacpp:source={tree}")
    (tree / "server.c").write_text("#define BUILD 8\n" + _SERVER)
    caplog.set_level(logging.INFO, logger=_NARRATION)
    second = await provisioner.provision(f"llamacpp:source={tree}")
    assert _actions(caplog) == _BUILD
    assert second.entry_id != first.entry_id and second.digest != first.digest
    assert store.get_engine(second.entry_id).extra["build_info"] == "b8-abc1234"
    assert first.artifact.exists(), "the earlier build stays usable"


async def test_a_git_source_is_checked_out_at_its_commit_then_built(
    tree: Path, store: CatalogStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _git(tree, "init", "-q")
    _git(tree, "add", ".")
    _git(tree, "commit", "-q", "-m", "fake llama.cpp")
    commit = _git(tree, "rev-parse", "HEAD")
    caplog.set_level(logging.INFO, logger=_NARRATION)
    provisioner = _provisioner(store, tmp_path / "engines")
    spec = f"llamacpp:source=git+file://{tree}"
    prepared = await provisioner.provision(spec)
    assert _actions(caplog) == ["git-fetch", *_BUILD]
    entry = store.get_engine(prepared.entry_id)
    assert entry.build_ref == f"git+file://{tree}@{commit}"
    assert entry.extra["source_digest"] == f"git:{commit}"
    caplog.clear()
    assert (await provisioner.provision(spec)).entry_id == prepared.entry_id
    assert _actions(caplog) == ["reuse"]


async def test_ccache_launches_the_compiler_when_it_is_on_the_path(
    tree: Path, store: CatalogStore, tmp_path: Path
) -> None:
    shims = tmp_path / "bin"
    shims.mkdir()
    for tool in _TOOLS:
        if (found := shutil.which(tool)) is not None:
            (shims / tool).symlink_to(found)
    calls = tmp_path / "ccache-calls"
    (shims / "ccache").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec "$@"\n')
    (shims / "ccache").chmod(0o755)
    provisioner = _provisioner(store, tmp_path / "engines", search=str(shims))
    prepared = await provisioner.provision(f"llamacpp:source={tree}")
    assert prepared.version == "0.0.1-test"
    assert "server.c" in calls.read_text(), "the compile went through ccache"


async def test_a_failing_compile_reports_the_compilers_words_and_the_whole_log(
    tree: Path, store: CatalogStore, tmp_path: Path
) -> None:
    (tree / "server.c").write_text("int main(void) { return undeclared_thing; }\n")
    provisioner = _provisioner(store, tmp_path / "engines")
    with pytest.raises(EngineBuildFailed) as raised:
        await provisioner.provision(f"llamacpp:source={tree}")
    assert "undeclared_thing" in str(raised.value)
    assert "undeclared_thing" in _text(raised.value.log_path)
    assert store.list_engines().items == ()
