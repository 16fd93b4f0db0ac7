"""`LLORCH_LLAMA_VERBOSE=1` turns llama.cpp's own load log on, to the worker's stderr.

One real `llorch worker` process each way, on the tiny GGUF fixture: the test waits
until the worker reports the model loaded (health `ready`), stops it, and reads what it
wrote to stderr.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from catalog_core import write_tiny_model
from worker_adapters import Endpoint, create_adapter
from worker_adapters.testing.processes import EngineProcess

KEY = "verbose-test-key"
# Lines llama.cpp writes while it loads a model, when its log is on.
LOADER_MARKS = ("llama_model_loader:", "print_info:")


async def _wait_ready(worker: EngineProcess) -> None:
    adapter = create_adapter("native", Endpoint(worker.address, KEY))
    try:
        deadline = time.monotonic() + 60
        while (await adapter.health()).state != "ready":
            assert worker.process.poll() is None, "worker exited while loading"
            assert time.monotonic() < deadline, "worker did not load the model in 60 s"
            await asyncio.sleep(0.02)
    finally:
        await adapter.close()


def _stderr_of_a_loaded_worker(
    root: Path, verbose: str | None, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Start a worker, wait until its model is loaded, stop it; its stderr."""
    model = write_tiny_model(root / "tiny.gguf")
    if verbose is None:
        monkeypatch.delenv("LLORCH_LLAMA_VERBOSE", raising=False)
    else:
        monkeypatch.setenv("LLORCH_LLAMA_VERBOSE", verbose)
    worker = EngineProcess.start_worker(
        root, "--model", str(model), "--slots", "1", "--ctx", "256", "--threads", "1",
        api_key=KEY,
    )  # fmt: skip
    try:
        asyncio.run(_wait_ready(worker))
    finally:
        worker.process.terminate()
        assert worker.process.wait(30) == 0
    return worker.log.read_text(errors="replace")


def test_llama_verbose_1_puts_llama_cpp_load_log_on_the_worker_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = _stderr_of_a_loaded_worker(tmp_path, "1", monkeypatch)
    for mark in LOADER_MARKS:
        assert mark in stderr, f"{mark!r} not in the worker's stderr:\n{stderr[-2000:]}"


@pytest.mark.parametrize("verbose", [None, "0"])
def test_without_llama_verbose_1_the_worker_stderr_has_no_llama_cpp_load_log(
    tmp_path: Path, verbose: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = _stderr_of_a_loaded_worker(tmp_path, verbose, monkeypatch)
    for mark in LOADER_MARKS:
        assert mark not in stderr, f"{mark!r} in the worker's stderr:\n{stderr[-2000:]}"
