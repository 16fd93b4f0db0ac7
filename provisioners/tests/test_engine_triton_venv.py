"""Package-mode provisioning of the Triton engine: a real venv from Debian's python3.11
with the pinned PyTriton and llama-cpp-python, cached by the digest of its pins.

The venv lives in the shared engine cache ($LLORCH_ENGINE_CACHE or
~/.cache/llorch/engines), so the first test of a machine makes it (minutes when uv
must build llama-cpp-python; seconds when uv's cache has the wheel) and the rest, and
the worker-adapters Triton tests, find it. A missing tool fails with the provisioner's
message; nothing here skips.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from catalog_core import CatalogStore
from provisioners.engines import (
    TRITON_PINS,
    EngineToolMissing,
    TritonVenvSettings,
    default_cache_root,
    engine_entry,
    prepare_triton_engine,
    triton_venv,
    venv_digest,
)

pytestmark = pytest.mark.timeout(3600)  # a cold venv builds llama-cpp-python


def test_a_second_prepare_finds_the_venv_and_provisions_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first = prepare_triton_engine()
    assert first.mode == "package" and first.engine == "triton"
    assert "nvidia-pytriton==0.7.0" in first.version and "llama-cpp-python==0.3.36" in first.version
    assert Path(first.command[0]).is_file() and Path(first.command[1]).name == "triton_llamacpp.py"

    def no_subprocess(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a cached venv ran {args[0]!r}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    caplog.set_level(logging.INFO, logger=triton_venv.__name__)
    started = time.monotonic()
    second = prepare_triton_engine()
    assert time.monotonic() - started < 1.0
    assert second == first
    assert [r.__dict__.get("action") for r in caplog.records] == ["engine-venv-found"]


def test_the_venv_runs_the_engine_programs_imports(tmp_path: Path) -> None:
    prepared = prepare_triton_engine()
    done = subprocess.run(
        [prepared.command[0], prepared.command[1], "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--http-port" in done.stdout and "--model-name" in done.stdout


def test_the_venv_is_named_by_its_pins_whatever_their_order() -> None:
    python = Path("/usr/bin/python3.11")
    assert venv_digest(python, TRITON_PINS) == venv_digest(python, tuple(reversed(TRITON_PINS)))
    assert venv_digest(python, TRITON_PINS) != venv_digest(python, (*TRITON_PINS, "six"))
    assert venv_digest(python, TRITON_PINS) != venv_digest(Path("/usr/bin/python3"), TRITON_PINS)


def test_a_missing_debian_python_fails_fast_naming_it_and_how_to_install(tmp_path: Path) -> None:
    settings = TritonVenvSettings(tmp_path / "cache", python=tmp_path / "python3.11")
    with pytest.raises(EngineToolMissing) as raised:
        prepare_triton_engine(settings)
    assert raised.value.tool == str(tmp_path / "python3.11")
    assert "python3.11-venv" in str(raised.value)
    assert not (tmp_path / "cache").exists(), "nothing may be made before the tools are checked"


def test_a_missing_uv_fails_fast_naming_it(tmp_path: Path) -> None:
    settings = TritonVenvSettings(tmp_path / "cache", uv=tmp_path / "uv")
    with pytest.raises(EngineToolMissing) as raised:
        prepare_triton_engine(settings)
    assert raised.value.tool == "uv"


def test_a_venv_without_its_own_marker_is_not_trusted(tmp_path: Path) -> None:
    missing_python = tmp_path / "python3.11"
    settings = TritonVenvSettings(tmp_path / "cache", python=missing_python)
    digest = venv_digest(missing_python, TRITON_PINS)
    venv = tmp_path / "cache" / f"triton-{digest[:16]}"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    (venv / "llorch-engine.json").write_text(json.dumps({"digest": "another", "version": "x"}))
    with pytest.raises(EngineToolMissing):  # it went on to make the venv: tools checked
        prepare_triton_engine(settings)


def test_the_prepared_engine_is_recorded_in_the_catalog(tmp_path: Path) -> None:
    prepared = prepare_triton_engine()
    entry = engine_entry(prepared, created_at_ms=1_700_000_000_000)
    with CatalogStore(tmp_path / "catalog.sqlite") as store:
        store.put_engine(entry)
        assert store.get_engine(entry.id) == entry
    assert entry.mode == "package" and entry.artifact == str(prepared.artifact)
    assert Path(entry.artifact).parent == default_cache_root()
