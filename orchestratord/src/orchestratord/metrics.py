"""orchestratord's Prometheus metrics, as fixed by `specs/metrics/metrics.yaml` (OBS-01).

Counters and histograms are updated at task boundaries only — admission, first token,
end — never per token: a task's token counts are added once when it finishes, so the
token path does no metric work. Label values are pre-registered where they are known in
advance. Gauges that mirror state (queue depth, pool readiness and free slots) are read
at scrape time by a collector, so keeping them current costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestratord.registry import PoolRegistry

__all__ = ["Metrics"]

disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series: not in the contract

_LATENCY_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
_CODES = (
    "INVALID_PARAMS",
    "CONTEXT_OVERFLOW",
    "MODEL_NOT_FOUND",
    "NOT_FOUND",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "ADMISSION_REJECT",
    "QUOTA_EXCEEDED",
    "NO_CAPACITY",
    "POOL_UNREADY",
    "IDEMPOTENCY_CONFLICT",
    "IDEMPOTENCY_KEY_REUSED",
    "SHUTTING_DOWN",
    "INTERNAL",
)


class _StateCollector(Collector):
    def __init__(self, registry: PoolRegistry, queue_depth: Callable[[], dict[str, int]]) -> None:
        self._registry = registry
        self._queue_depth = queue_depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "llorch_queue_depth", "Tasks waiting, by priority.", labels=["priority"]
        )
        for priority, value in self._queue_depth().items():
            depth.add_metric([priority], value)
        yield depth
        ready = GaugeMetricFamily(
            "llorch_pool_ready", "1 when the pool is ready to take work.", labels=["pool_id"]
        )
        free = GaugeMetricFamily(
            "llorch_pool_slots_free", "Free slots of the pool.", labels=["pool_id"]
        )
        for view in self._registry.views(time.monotonic()):
            live = view.ready and view.lease_fresh and not view.draining
            ready.add_metric([view.pool_id], 1.0 if live else 0.0)
            free.add_metric([view.pool_id], view.slots_free)
        yield ready
        yield free


class Metrics:
    def __init__(self, registry: PoolRegistry, queue_depth: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.enqueued = Counter(
            "llorch_tasks_enqueued", "Tasks admitted into the queue.", ["priority"], registry=r
        )
        self.started = Counter(
            "llorch_tasks_started", "Tasks whose engine started them.", registry=r
        )
        self.canceled = Counter(
            "llorch_tasks_canceled", "Tasks cancelled, by who asked.", ["reason"], registry=r
        )
        self.finished = Counter(
            "llorch_tasks_finished", "Tasks in a terminal state.", ["state"], registry=r
        )
        self.rejected = Counter(
            "llorch_tasks_rejected", "Submissions refused before queueing.", ["reason"], registry=r
        )
        self.ttft = Histogram(
            "llorch_latency_first_token_ms",
            "Admission to first token, ms.",
            buckets=_LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.decode = Histogram(
            "llorch_latency_decode_ms",
            "First token to end, ms.",
            buckets=_LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.tokens_in = Counter("llorch_tokens_in", "Prompt tokens of finished tasks.", registry=r)
        self.tokens_out = Counter(
            "llorch_tokens_out", "Generated tokens of finished tasks.", registry=r
        )
        self.backpressure = Counter(
            "llorch_admission_backpressure_events",
            "Full-queue policy actions, by policy.",
            ["policy"],
            registry=r,
        )
        self.placements = Counter(
            "llorch_placement_decisions", "Placement decisions.", ["outcome"], registry=r
        )
        r.register(_StateCollector(registry, queue_depth))
        for priority in ("interactive", "batch"):
            self.enqueued.labels(priority)
        for reason in ("client", "disconnect", "shutdown", "watchdog"):
            self.canceled.labels(reason)
        for state in ("completed", "failed", "cancelled"):
            self.finished.labels(state)
        for code in _CODES:
            self.rejected.labels(code)
        for policy in ("reject", "drop-lru", "shed-low-priority"):
            self.backpressure.labels(policy)
        for outcome in ("placed", "waiting", "unplaceable"):
            self.placements.labels(outcome)

    def scrape(self) -> bytes:
        return generate_latest(self.registry)
