"""A fake in-process engine with fault knobs, for tests (a fake, named as such)."""

from __future__ import annotations

from worker_adapters.mock.backend import MockBackend, MockKnobs

__all__ = ["MockBackend", "MockKnobs"]
