"""The `native` adapter: gRPC to `llorch worker` (ADP-02)."""

from __future__ import annotations

from worker_adapters.native.adapter import NativeAdapter

__all__ = ["NativeAdapter"]
