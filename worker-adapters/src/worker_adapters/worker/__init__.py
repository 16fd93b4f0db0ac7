"""`llorch worker`: one in-process engine behind the worker gRPC service (WRK-01)."""

from __future__ import annotations

from worker_adapters.worker.main import WorkerOptions, run_worker
from worker_adapters.worker.server import WorkerServicer

__all__ = ["WorkerOptions", "WorkerServicer", "run_worker"]
