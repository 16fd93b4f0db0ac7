"""The conformance suite (ADP-07) for the `native` adapter against a real `llorch worker`
running llama.cpp in process on the tiny llama model (`catalog_core.write_tiny_model`).

A real model cannot be told to fail, so the engine-error scenarios are skipped (the
mock worker covers them); truncation and stalls come from SIGKILL and SIGSTOP of a
private worker after the first token; multi-byte text comes from a grammar that makes
the byte-level model emit characters one byte token at a time.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from catalog_core import write_tiny_model
from worker_adapters.native import NativeAdapter
from worker_adapters.protocol import Endpoint
from worker_adapters.testing.conformance import AdapterConformance
from worker_adapters.testing.processes import EngineProcess
from worker_adapters.testing.scenarios import ConformanceTarget
from worker_adapters.testing.targets import STALL_TIMEOUT_S, TinyModelTarget

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-llama")
    write_tiny_model(root / "tiny.gguf")
    return root


def start_llama_worker(model_root: Path, root: Path) -> EngineProcess:
    args = ("--model", str(model_root / "tiny.gguf"), "--ctx", "4096", "--slots", "2")
    return EngineProcess.start_worker(root, *args, "--threads", "1")


@pytest.fixture(scope="module")
def llama_worker(model_root: Path) -> Iterator[EngineProcess]:
    worker = start_llama_worker(model_root, model_root / "shared")
    yield worker
    worker.stop()
    assert worker.process.returncode == 0


def native(endpoint: Endpoint) -> NativeAdapter:
    return NativeAdapter(endpoint, stall_timeout_s=STALL_TIMEOUT_S)


class TestNativeAdapterOnTinyLlamaWorker(AdapterConformance):
    @pytest.fixture
    async def target(
        self, llama_worker: EngineProcess, model_root: Path, tmp_path: Path
    ) -> AsyncIterator[ConformanceTarget]:
        target = TinyModelTarget(
            native(Endpoint(llama_worker.address)),
            native,
            functools.partial(start_llama_worker, model_root),
            tmp_path,
        )
        yield target
        await target.close()
        await target.adapter.close()
