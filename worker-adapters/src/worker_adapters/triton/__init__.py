"""The `triton` adapter: Triton Inference Server (via PyTriton) serving our llama.cpp
engine model, over the HTTP generate extension (ADP-02)."""

from __future__ import annotations

from worker_adapters.triton.adapter import DEFAULT_MODEL, TritonAdapter

__all__ = ["DEFAULT_MODEL", "TritonAdapter"]
