"""The conformance suite (ADP-07) against real llama.cpp servers; runs by default.

- llama-server, built from source by the engine provisioner
  (`provisioners.testing.llama_server_for_tests()`). Cancel is checked against its own
  `llamacpp:requests_processing` gauge (`--metrics`).
- llama_cpp.server, from its package-mode venv
  (`provisioners.testing.llama_cpp_server_python_for_tests()`). It has no gauge: a
  cancel is seen as released when a new request is served at once (the server runs one
  request at a time, with `--interrupt_requests False` so it never cuts a stream short
  itself).

Both serve the tiny llama model (`catalog_core.write_tiny_model`) on loopback with a
per-pool API key; llama_cpp.server serves its ASCII-only variant (`ascii_only`): that
server looks for a client disconnect only when it emits a chunk, and llama-cpp-python
holds back incomplete UTF-8, so a random-weight model's stray high bytes could keep it
silent, and deaf to a cancel, for thousands of tokens. One shared engine per class
(module scope); scenarios that kill or pause an engine start a private one. The first
run on a machine builds the engines (minutes); later runs find them in the shared
engine cache.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import gguf
import pytest
from catalog_core import write_tiny_model
from provisioners.testing import llama_cpp_server_python_for_tests, llama_server_for_tests
from worker_adapters import Adapter, Endpoint, GenerateRequest, Sampling
from worker_adapters.llamacpp import LlamaServerAdapter
from worker_adapters.openai_compat import OpenAIAdapter
from worker_adapters.testing.conformance import STREAM_BOUND_S, AdapterConformance
from worker_adapters.testing.processes import EngineProcess, free_port
from worker_adapters.testing.scenarios import ConformanceTarget
from worker_adapters.testing.targets import TinyModelTarget, fast_settings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("http_session"),
    # The first run of a machine builds the engines in the (unbounded) fixtures; the
    # tests themselves must not hang: a stream that outlives this has found a bug.
    pytest.mark.timeout(STREAM_BOUND_S * 2, func_only=True),
]

KEY = "real-engine-key"


def start_llama_server(binary: str, model: Path, root: Path, *, api_key: str = "") -> EngineProcess:
    port = free_port()
    argv = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["-c", "8192", "-np", "2", "-t", "1", "--metrics"]
    argv += ["--api-key", api_key] if api_key else []
    return EngineProcess.start_http(argv, port, root)


def start_llama_cpp_server(
    python: str, model: Path, root: Path, *, api_key: str = ""
) -> EngineProcess:
    port = free_port()
    argv = [python, "-m", "llama_cpp.server", "--model", str(model)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"]
    argv += ["--n_threads", "1", "--interrupt_requests", "False"]
    argv += ["--api_key", api_key] if api_key else []
    return EngineProcess.start_http(argv, port, root)


async def gauge_released(adapter: Adapter, job_id: str) -> None:
    assert isinstance(adapter, LlamaServerAdapter)
    while (await adapter.metrics()).get("requests_processing", 0.0) > 0:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def next_request_served(adapter: Adapter, job_id: str) -> None:
    probe = GenerateRequest(f"{job_id}-probe", Sampling(max_tokens=1), prompt="x")
    _ = [event async for event in adapter.submit(probe)]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("real-engines") / "tiny.gguf")


def ascii_only(source: Path, target: Path) -> Path:
    """A copy of a tiny model whose non-ASCII byte tokens are never sampled: their rows
    of the output head are zeroed, as the fixture does for EOS (the other logits are
    large, so a zero logit practically never wins)."""
    shutil.copyfile(source, target)
    reader = gguf.GGUFReader(str(target), "r+")
    field = reader.fields["tokenizer.ggml.tokens"]
    pieces = [bytes(field.parts[index]).decode() for index in field.data]
    banned = [i for i, piece in enumerate(pieces) if any(b >= 0x7F for b in _raw(piece))]
    head = next(t for t in reader.tensors if t.name == "output.weight")
    head.data[banned, :] = 0  # the file is mapped read-write: this writes it
    return target


def _raw(piece: str) -> bytes:
    """The bytes a byte-level BPE token stands for (GPT-2's printable map inverted);
    b"" for a special token."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {chr(b): b for b in printable}
    others = [b for b in range(256) if b not in printable]
    mapping.update({chr(256 + n): b for n, b in enumerate(others)})
    try:
        return bytes(mapping[char] for char in piece)
    except KeyError:
        return b""


@pytest.fixture(scope="module")
def llama_server(model: Path) -> functools.partial[EngineProcess]:
    """Starts a llama-server on the tiny model (the binary built from source)."""
    return functools.partial(start_llama_server, str(llama_server_for_tests().command[0]), model)


@pytest.fixture(scope="module")
def llama_cpp_server(model: Path) -> functools.partial[EngineProcess]:
    """Starts a llama_cpp.server on the ASCII-only tiny model (the package venv's python)."""
    python = str(llama_cpp_server_python_for_tests())
    ascii_model = ascii_only(model, model.with_name("tiny-ascii.gguf"))
    return functools.partial(start_llama_cpp_server, python, ascii_model)


@pytest.fixture(scope="module")
def shared_llama_server(
    llama_server: functools.partial[EngineProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    process = llama_server(tmp_path_factory.mktemp("shared-llama-server"), api_key=KEY)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def shared_llama_cpp_server(
    llama_cpp_server: functools.partial[EngineProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    process = llama_cpp_server(tmp_path_factory.mktemp("shared-llama-cpp-server"), api_key=KEY)
    yield process
    process.stop()


class TestLlamaServerAdapterOnRealLlamaServer(AdapterConformance):
    @pytest.fixture
    async def target(
        self,
        shared_llama_server: EngineProcess,
        llama_server: functools.partial[EngineProcess],
        tmp_path: Path,
    ) -> AsyncIterator[ConformanceTarget]:
        adapter = LlamaServerAdapter(Endpoint(shared_llama_server.address, KEY), fast_settings())
        target = TinyModelTarget(
            adapter,
            lambda endpoint: LlamaServerAdapter(endpoint, fast_settings()),
            llama_server,
            tmp_path,
            released=gauge_released,
        )
        yield target
        await target.close()


class TestOpenAIAdapterOnRealLlamaCppPythonServer(AdapterConformance):
    @pytest.fixture
    async def target(
        self,
        shared_llama_cpp_server: EngineProcess,
        llama_cpp_server: functools.partial[EngineProcess],
        tmp_path: Path,
    ) -> AsyncIterator[ConformanceTarget]:
        adapter = OpenAIAdapter(Endpoint(shared_llama_cpp_server.address, KEY), fast_settings())
        target = TinyModelTarget(
            adapter,
            lambda endpoint: OpenAIAdapter(endpoint, fast_settings()),
            llama_cpp_server,
            tmp_path,
            released=next_request_served,
            grammar=False,
            typed_overflow=False,
        )
        yield target
        await target.close()
