"""llama.cpp in-process through llama-cpp-python: the engine of `llorch worker` (WRK-02)."""

from __future__ import annotations

from worker_adapters.llamacpp_inproc.backend import LlamaBackend, LlamaSettings

__all__ = ["LlamaBackend", "LlamaSettings"]
