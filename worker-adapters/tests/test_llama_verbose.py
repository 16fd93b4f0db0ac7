"""`LLORCH_LLAMA_VERBOSE=1` turns llama.cpp's own load log on, to the worker's stderr.

One real `llorch worker` process each way, on the tiny GGUF fixture: the test waits
until the worker reports the model loaded (health `ready`), stops it, and reads what it
wrote to stderr.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from catalog_core import write_tiny_model
from worker_adapters import Endpoint, create_adapter

KEY = "verbose-test-key"
# Lines llama.cpp writes while it loads a model, when its log is on.
LOADER_MARKS = ("llama_model_loader:", "print_info:")


async def _wait_ready(address: str, process: subprocess.Popen[bytes]) -> None:
    adapter = create_adapter("native", Endpoint(address, KEY))
    try:
        deadline = time.monotonic() + 60
        while (await adapter.health()).state != "ready":
            assert process.poll() is None, "worker exited while loading"
            assert time.monotonic() < deadline, "worker did not load the model in 60 s"
            await asyncio.sleep(0.02)
    finally:
        await adapter.close()


def _stderr_of_a_loaded_worker(root: Path, verbose: str | None) -> str:
    """Start a worker, wait until its model is loaded, stop it; its stderr."""
    model = write_tiny_model(root / "tiny.gguf")
    port_file = root / "port"
    env = {**os.environ, "LLORCH_WORKER_API_KEY": KEY}
    env.pop("LLORCH_LLAMA_VERBOSE", None)
    if verbose is not None:
        env["LLORCH_LLAMA_VERBOSE"] = verbose
    stderr_path = root / "stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker_adapters.worker",
                "--model",
                str(model),
                "--slots",
                "1",
                "--ctx",
                "256",
                "--threads",
                "1",
                "--port-file",
                str(port_file),
            ],
            env=env,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 60
            while not port_file.exists():
                assert process.poll() is None, "worker exited before it listened"
                assert time.monotonic() < deadline, "worker did not start in 60 s"
                time.sleep(0.02)
            asyncio.run(_wait_ready(f"127.0.0.1:{port_file.read_text().strip()}", process))
        finally:
            process.terminate()
            assert process.wait(30) == 0
    return stderr_path.read_text(errors="replace")


def test_llama_verbose_1_puts_llama_cpp_load_log_on_the_worker_stderr(tmp_path: Path) -> None:
    stderr = _stderr_of_a_loaded_worker(tmp_path, "1")
    for mark in LOADER_MARKS:
        assert mark in stderr, f"{mark!r} not in the worker's stderr:\n{stderr[-2000:]}"


@pytest.mark.parametrize("verbose", [None, "0"])
def test_without_llama_verbose_1_the_worker_stderr_has_no_llama_cpp_load_log(
    tmp_path: Path, verbose: str | None
) -> None:
    stderr = _stderr_of_a_loaded_worker(tmp_path, verbose)
    for mark in LOADER_MARKS:
        assert mark not in stderr, f"{mark!r} in the worker's stderr:\n{stderr[-2000:]}"
