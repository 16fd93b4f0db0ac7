"""orchestratord's Prometheus metrics, as fixed by `specs/metrics/metrics.yaml` (OBS-01).

Counters and histograms are updated at task boundaries only — admission, placement,
end — never per token: a task's token counts are added once when it finishes, so the
token path does no metric work. Latencies are in seconds (Prometheus base units) and
labelled by `model` (the pool's model id, so bounded by the configuration) and `pool`:
queue wait at the first placement, and at a completed task's end its time to first
token, decode time, mean inter-token latency (decode time over the tokens after the
first: one observation per task, nothing per token) and end-to-end latency. Label values
are pre-registered where they are known in advance. Gauges that mirror state (queue
depth, pool readiness and free slots) are read at scrape time by a collector, so keeping
them current costs nothing; `llorch_build_info` is 1, its labels say what runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from specs.build_info import build_info

from orchestratord.registry import PoolRegistry

__all__ = ["Metrics"]

disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series: not in the contract

# Seconds. Waits and first tokens span milliseconds to minutes (a queue, a model load);
# the gap between two tokens is milliseconds; a whole job may take minutes.
_WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ITL_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1,
)
_E2E_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_BY_MODEL_POOL = ("model", "pool")
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
        self.queue_wait = Histogram(
            "llorch_latency_queue_wait_seconds",
            "Admission to the first placement, seconds.",
            _BY_MODEL_POOL,
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "llorch_latency_first_token_seconds",
            "Admission to the first token of completed tasks, seconds.",
            _BY_MODEL_POOL,
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.decode = Histogram(
            "llorch_latency_decode_seconds",
            "First token to the end of completed tasks, seconds.",
            _BY_MODEL_POOL,
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "llorch_latency_inter_token_seconds",
            "Mean time between two tokens of a completed task, seconds (one per task).",
            _BY_MODEL_POOL,
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "llorch_latency_end_to_end_seconds",
            "Admission to the end of completed tasks, seconds.",
            _BY_MODEL_POOL,
            buckets=_E2E_BUCKETS,
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
        self._by_model_pool: dict[tuple[str, str], tuple[Histogram, ...]] = {}
        r.register(_StateCollector(registry, queue_depth))
        info = build_info("orchestratord")
        Gauge(
            "llorch_build_info", "What runs: 1, labelled by its build.", list(info), registry=r
        ).labels(**info).set(1)
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

    def _latencies(self, model: str, pool: str) -> tuple[Histogram, ...]:
        """The five latency series of a (model, pool), looked up once (`labels()` is
        the costly part of an observation)."""
        key = (model, pool)
        found = self._by_model_pool.get(key)
        if found is None:
            found = self._by_model_pool[key] = tuple(
                h.labels(model, pool)
                for h in (
                    self.queue_wait,
                    self.ttft,
                    self.decode,
                    self.inter_token,
                    self.end_to_end,
                )
            )
        return found

    def placed(self, model: str, pool: str, wait_s: float) -> None:
        """A task's first placement, `wait_s` after its admission."""
        self._latencies(model, pool)[0].observe(wait_s)

    def completed(
        self,
        model: str,
        pool: str,
        *,
        ttft_s: float,
        decode_s: float,
        end_to_end_s: float,
        tokens_out: int,
    ) -> None:
        """A completed task's latencies, observed once at its end."""
        _, ttft, decode, inter_token, end_to_end = self._latencies(model, pool)
        ttft.observe(ttft_s)
        decode.observe(decode_s)
        end_to_end.observe(end_to_end_s)
        if tokens_out > 1:  # a gap needs two tokens
            inter_token.observe(decode_s / (tokens_out - 1))

    def scrape(self) -> bytes:
        return generate_latest(self.registry)
