"""Load llama.cpp's shared libraries before any other native extension (numpy, grpc).

Seen on an H100 machine (2026-12-07) with llama-cpp-python 0.3.36 built there with CUDA
and the machine's numpy 2.5.2: with numpy imported first, every
`llama_model_load_from_file` crashed (SIGSEGV in the tokenizer's initialisation); with
llama_cpp imported first the same script loaded and generated (on the GPU and on the
CPU). The in-process worker, which imports grpc and numpy through this package, crashed
the same way on every load. The likely mechanism — C++ symbols of an extension loaded
earlier interposing on llama.cpp's — is not proven.

So a worker that will host llama.cpp imports it first: pool-managerd starts
`llamacpp-inproc` workers with `LLORCH_PRELOAD_LLAMA_CPP=1`, and this package's
`__init__` then calls `load_llama_first()` before its own imports. Other processes
(orchestratord, the mock worker) never load llama.cpp through it.
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["PRELOAD_ENV", "load_llama_first", "wanted"]

PRELOAD_ENV = "LLORCH_PRELOAD_LLAMA_CPP"


def wanted() -> bool:
    return os.environ.get(PRELOAD_ENV) == "1"


def load_llama_first() -> bool:
    """Import llama_cpp now; True when it is loaded (False: not installed)."""
    if "llama_cpp" in sys.modules:
        return True
    with contextlib.suppress(ImportError):
        import llama_cpp  # noqa: F401 - loads libllama and the ggml backends

        return True
    return False
