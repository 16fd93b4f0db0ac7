"""pool-managerd's Prometheus metrics (OBS-01, `specs/metrics/metrics.yaml`).

All series mirror state the manager already keeps, so they are read at scrape time by
one collector: engine restarts per pool, memory in use per device (measured for real
devices; the pools' estimates for simulated ones), and each pool's estimated and
measured memory; and `llorch_build_info` (1, labelled by what runs). Served by
prometheus-client's own HTTP server on `metrics_port` (0 picks a free port, written
to `state_dir/run/metrics.port`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from specs.build_info import build_info

from pool_managerd.inventory import Inventory
from pool_managerd.pool import PoolStatus

__all__ = ["serve_metrics"]


class _ManagerCollector(Collector):
    def __init__(
        self, pools: Callable[[], list[PoolStatus]], inventory: Callable[[], Inventory]
    ) -> None:
        self._pools = pools
        self._inventory = inventory

    def collect(self) -> Iterator[Metric]:
        statuses = self._pools()
        restarts = CounterMetricFamily(
            "llorch_engine_restarts", "Engine restarts after a crash.", labels=["pool_id"]
        )
        memory = GaugeMetricFamily(
            "llorch_pool_memory_bytes",
            "Pool memory, estimated and measured.",
            labels=["pool_id", "kind"],
        )
        for status in statuses:
            restarts.add_metric([status.pool_id], status.restarts)
            memory.add_metric([status.pool_id, "estimated"], status.memory_estimated_bytes)
            memory.add_metric([status.pool_id, "actual"], status.memory_actual_bytes)
        used = GaugeMetricFamily(
            "llorch_vram_used_bytes", "Memory in use per device.", labels=["device"]
        )
        for device in self._inventory().devices:
            used.add_metric([device.id], device.memory_total_bytes - device.memory_free_bytes)
        info = build_info("pool_managerd")
        build = GaugeMetricFamily(
            "llorch_build_info", "What runs: 1, labelled by its build.", labels=list(info)
        )
        build.add_metric(list(info.values()), 1.0)
        yield restarts
        yield memory
        yield used
        yield build


def serve_metrics(
    host: str,
    port: int,
    run_dir: Path,
    pools: Callable[[], list[PoolStatus]],
    inventory: Callable[[], Inventory],
) -> int:
    """Start the metrics HTTP server (a daemon thread); returns the bound port."""
    registry = CollectorRegistry()
    registry.register(_ManagerCollector(pools, inventory))
    server, _ = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_address[1])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.port").write_text(f"{bound}\n")
    return bound
