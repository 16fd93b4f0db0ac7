"""`llorch provision engine SPEC` (CLI-02, PRV-02, PRV-03), run as a subprocess.

Binary mode on the llama-server built from source (`provisioners.testing`; a machine
builds it once, later sessions find it) is the cheap real provision; the build's
progress bar is tested on its own.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from catalog_core import CatalogStore
from llorch.progress import Progress
from provisioners.engines import PreparedEngine
from provisioners.testing import (
    BUILD_TIMEOUT_S,
    LLAMA_SERVER_TEST_FLAGS,
    LLAMA_SERVER_TEST_SPEC,
    engines_root_for_tests,
    llama_server_for_tests,
)


@pytest.fixture(scope="module")
def llama_server() -> PreparedEngine:
    return llama_server_for_tests()


def _llorch(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llorch", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


@pytest.mark.integration
@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_provision_engine_records_a_binary_and_prints_its_entry(
    llama_server: PreparedEngine, tmp_path: Path
) -> None:
    binary = llama_server.command[0]
    state = ["--state-dir", str(tmp_path)]
    done = _llorch("provision", "engine", f"llamacpp:binary={binary}", *state, "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    entry = document["entry"]
    assert (entry["engine"], entry["mode"], entry["artifact"]) == ("llamacpp", "binary", binary)
    assert entry["version"] == llama_server.version and document["command"] == [binary]
    assert document["api_key_env"] == "LLAMA_API_KEY"
    assert "llorch: probe" in done.stderr and "llorch: register" in done.stderr
    with CatalogStore(tmp_path / "catalog.sqlite") as store:
        recorded = store.get_engine(entry["id"])
    assert (recorded.digest, recorded.version) == (llama_server.digest, llama_server.version)

    again = _llorch("provision", "engine", f"llamacpp:binary={binary}", *state)
    assert again.returncode == 0, again.stderr
    assert "llorch: reuse" in again.stderr and "llorch: probe" not in again.stderr
    header, row, command = again.stdout.splitlines()
    assert header.split() == ["ID", "ENGINE", "VERSION", "MODE", "ARTIFACT"]
    assert row.split() == [entry["id"], "llamacpp", llama_server.version, "binary", binary]
    assert command == f"command: {binary}"


@pytest.mark.integration
@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_dry_run_prints_the_plan_and_changes_nothing(
    llama_server: PreparedEngine, tmp_path: Path
) -> None:
    shared = engines_root_for_tests()
    built = _llorch(
        "provision", "engine", LLAMA_SERVER_TEST_SPEC, *LLAMA_SERVER_TEST_FLAGS,
        "--dry-run", "--json",
        "--engines-dir", str(shared), "--catalog", str(shared / "catalog.sqlite"),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    plan = json.loads(built.stdout)
    assert plan["steps"] == [{"action": "reuse", "target": llama_server.entry_id}]
    fresh = _llorch(
        "provision", "engine", LLAMA_SERVER_TEST_SPEC, "--dry-run", "--state-dir", str(tmp_path)
    )
    assert fresh.returncode == 0, fresh.stderr
    lines = fresh.stdout.splitlines()
    assert lines[0].startswith(f"plan for {LLAMA_SERVER_TEST_SPEC}")
    assert lines[1].split() == ["1.", "fetch-sdist", "llama-cpp-python==0.3.36"]
    assert "plan again" in lines[2]
    assert not (tmp_path / "engines").exists()


def test_a_missing_container_tool_is_named_with_how_to_get_it(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    done = _llorch("provision", "engine", "vllm:container", "--state-dir", str(tmp_path), env=env)
    assert done.returncode == 1
    assert "podman or docker is missing" in done.stderr
    assert "apt-get install podman" in done.stderr
    with CatalogStore(tmp_path / "catalog.sqlite") as store:
        assert store.list_engines().items == ()


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["llamacpp:package"], "has no 'package' mode"),
        (["nosuch:binary=/x"], "unknown engine 'nosuch'"),
        (["llamacpp:source=/s", "--cuda-arch", "86"], "need --cuda"),
    ],
)
def test_a_malformed_spec_is_a_usage_error(argv: list[str], reason: str, tmp_path: Path) -> None:
    done = _llorch("provision", "engine", *argv, "--state-dir", str(tmp_path))
    assert done.returncode == 2 and reason in done.stderr


def test_build_progress_shows_steps_done_of_total_with_an_eta() -> None:
    stream = io.StringIO()
    bar = Progress("compile", unit="step", stream=stream, enabled=True)
    bar(1, 206)
    bar(103, 206)
    bar(206, 206)
    drawn = stream.getvalue()
    assert "compile" in drawn and "1/206" in drawn and "100%" in drawn and "206/206" in drawn
    assert "step/s" in drawn and "<" in drawn  # the rate, and elapsed<remaining (the ETA)
    assert drawn.endswith("\n")
