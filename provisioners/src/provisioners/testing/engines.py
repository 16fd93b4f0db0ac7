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

Blocking: call it from a sync fixture (or a thread). A test whose fixture may make the
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

__all__ = [
    "BUILD_TIMEOUT_S",
    "LLAMA_SERVER_TEST_SPEC",
    "engines_root_for_tests",
    "llama_server_for_tests",
]

LLAMA_SERVER_TEST_SPEC = "llamacpp:source=sdist:0.3.36"
BUILD_TIMEOUT_S = 3600  # a cold build measured ~10-15 min on two shared cores
_JOBS = 2

_lock = threading.Lock()
_built: PreparedEngine | None = None


def engines_root_for_tests() -> Path:
    """Where test engines are provisioned (with their own catalog: `catalog.sqlite`)."""
    return default_cache_root()


def llama_server_for_tests(progress: ProgressCallback | None = None) -> PreparedEngine:
    """The test llama-server (see module doc); `progress(done, total)` while compiling."""
    global _built
    with _lock:
        if _built is None:
            with ThreadPoolExecutor(1, thread_name_prefix="llama-server-build") as pool:
                _built = pool.submit(asyncio.run, _provision(progress)).result()
        return _built


async def _provision(progress: ProgressCallback | None) -> PreparedEngine:
    root = engines_root_for_tests()
    root.mkdir(parents=True, exist_ok=True)
    with CatalogStore(root / "catalog.sqlite") as store:
        provisioner = EngineProvisioner(store, EngineProvisionerSettings(root, jobs=_JOBS))
        return await provisioner.provision(LLAMA_SERVER_TEST_SPEC, progress=progress)
