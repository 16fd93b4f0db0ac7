"""The metrics contract (OBS-01): scrape live daemons after real work and lint the
scrape against specs/metrics/metrics.yaml — names, types, labels, cardinality budgets,
no per-task labels — and check the counters tell the truth about the work done."""

from __future__ import annotations

import platform
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from ci_harness.cluster import Cluster, tiny_pool, wait_for
from ci_harness.metrics_lint import scrape_problems

pytestmark = pytest.mark.integration
Factory = Callable[..., Cluster]
_LATENCIES = (
    "llorch_latency_queue_wait_seconds",
    "llorch_latency_first_token_seconds",
    "llorch_latency_decode_seconds",
    "llorch_latency_inter_token_seconds",
    "llorch_latency_end_to_end_seconds",
)


def test_live_scrapes_match_the_contract_and_count_the_work(
    cluster_factory: Factory, tiny_model: Path
) -> None:
    cluster = cluster_factory(
        {"host-a": [tiny_pool("p1", tiny_model)]}, hosts={"host-a": {"metrics_port": 0}}
    )
    tokens = 0
    for seed in range(3):
        events = cluster.events(
            cluster.submit(
                {"model": "default", "prompt": f"x{seed}", "max_tokens": 7, "seed": seed}
            ).json()["task_id"]
        )
        tokens += events[-1].data["tokens_out"]
    long = cluster.submit({"model": "default", "prompt": "y", "max_tokens": 8000}).json()
    wait_for(lambda: cluster.task(long["task_id"])["state"] == "running", "a running task")
    cluster.cancel(long["task_id"])
    assert cluster.submit({"model": "nope", "prompt": "z"}).status_code == 404

    with cluster.client() as client:
        scrape = client.get("/metrics").text
    result = scrape_problems(scrape, "orchestratord")
    assert result.problems == []
    assert result.value("llorch_tokens_out") == tokens == 21  # per task, never per token
    assert result.value("llorch_tasks_finished", state="completed") == 3
    assert result.value("llorch_tasks_canceled", reason="client") == 1
    assert result.value("llorch_tasks_rejected", reason="MODEL_NOT_FOUND") == 1
    assert result.value("llorch_pool_ready", pool_id="p1") == 1
    assert result.value("llorch_tasks_enqueued", priority="interactive") == 4
    # Latencies in seconds, by the pool's model id (the tasks asked for the alias).
    by = {"model": cluster.pool("p1")["model_id"], "pool": "p1"}
    assert by["model"] != "default"
    counts = {name: _sample(result.samples(name), f"{name}_count", by) for name in _LATENCIES}
    assert counts == {
        "llorch_latency_queue_wait_seconds": 4,  # every placed task, the cancelled one too
        "llorch_latency_first_token_seconds": 3,  # completed tasks only
        "llorch_latency_decode_seconds": 3,
        "llorch_latency_inter_token_seconds": 3,
        "llorch_latency_end_to_end_seconds": 3,
    }
    ttft = _sample(result.samples(_LATENCIES[1]), f"{_LATENCIES[1]}_sum", by) / 3
    e2e = _sample(result.samples(_LATENCIES[4]), f"{_LATENCIES[4]}_sum", by) / 3
    itl = _sample(result.samples(_LATENCIES[3]), f"{_LATENCIES[3]}_sum", by) / 3
    assert 0 < ttft < e2e < 60  # seconds, not milliseconds
    assert 0 < itl < e2e
    (build,) = result.samples("llorch_build_info")
    assert build.value == 1
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", build.labels["version"])
    assert build.labels["python"] == platform.python_version()
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", build.labels["commit"])

    port = (cluster.root / "host-a" / "run" / "metrics.port").read_text().strip()
    manager = scrape_problems(
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text, "pool-managerd"
    )
    assert manager.problems == []
    assert manager.value("llorch_engine_restarts", pool_id="p1") == 0
    assert manager.value("llorch_pool_memory_bytes", pool_id="p1", kind="actual") > 0
    (manager_build,) = manager.samples("llorch_build_info")
    assert manager_build.value == 1
    assert manager_build.labels["python"] == build.labels["python"]
    assert manager_build.labels["commit"] == build.labels["commit"]


def _sample(samples: list[Any], name: str, labels: dict[str, str]) -> float:
    (value,) = [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return float(value)


def test_the_lint_catches_a_per_task_label_and_an_unknown_metric() -> None:
    scrape = (
        "# TYPE llorch_tokens_out counter\n"
        'llorch_tokens_out_total{task_id="0123456789abcdef0123456789abcdef"} 3\n'
        "# TYPE llorch_mystery gauge\nllorch_mystery 1\n"
    )
    problems = scrape_problems(scrape, "none").problems
    assert any("per-task label task_id" in p for p in problems)
    assert any("llorch_mystery is not in the contract" in p for p in problems)
