"""The `openai` adapter: any OpenAI-compatible server, llama_cpp.server included (ADP-02)."""

from __future__ import annotations

from worker_adapters.openai_compat.adapter import OpenAIAdapter

__all__ = ["OpenAIAdapter"]
