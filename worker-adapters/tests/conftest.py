"""Fixtures shared by the worker-adapters tests: `http_session` closes the test loop's
shared HTTP connection pool at the end of a test (`worker_adapters.testing.fixtures`)."""

from __future__ import annotations

from worker_adapters.testing.fixtures import http_session

__all__ = ["http_session"]
