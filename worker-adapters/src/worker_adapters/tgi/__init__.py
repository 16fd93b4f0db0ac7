"""The `tgi` adapter: Hugging Face text-generation-inference (ADP-02)."""

from __future__ import annotations

from worker_adapters.tgi.adapter import TgiAdapter

__all__ = ["TgiAdapter"]
