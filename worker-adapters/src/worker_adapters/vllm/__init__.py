"""The `vllm` adapter: vLLM's OpenAI server plus its extras (ADP-02)."""

from __future__ import annotations

from worker_adapters.vllm.adapter import VllmAdapter

__all__ = ["VllmAdapter"]
