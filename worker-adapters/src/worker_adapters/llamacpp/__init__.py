"""The `llamacpp` adapter: llama.cpp's `llama-server` over HTTP (ADP-02)."""

from __future__ import annotations

from worker_adapters.llamacpp.adapter import LlamaServerAdapter

__all__ = ["LlamaServerAdapter"]
