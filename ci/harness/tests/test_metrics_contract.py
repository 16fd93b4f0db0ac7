"""The metrics contract (OBS-01): scrape live daemons after real work and lint the
scrape against specs/metrics/metrics.yaml — names, types, labels, cardinality budgets,
no per-task labels — and check the counters tell the truth about the work done."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ci_harness.cluster import Cluster, tiny_pool, wait_for
from prometheus_client.parser import text_string_to_metric_families

from specs import metrics_contract

pytestmark = pytest.mark.integration
Factory = Callable[..., Cluster]
CONTRACT = yaml.safe_load(metrics_contract())
_TASK_ID_LIKE = re.compile(r"^[0-9a-f]{32}$")


def lint(scrape: str, exporter: str) -> dict[str, Any]:
    """Problems found, as a list; and the parsed families by contract name."""
    prefix = CONTRACT["prefix"]
    families = {
        f.name: f for f in text_string_to_metric_families(scrape) if f.name.startswith(prefix)
    }
    problems: list[str] = []
    for name, family in families.items():
        spec = CONTRACT["metrics"].get(
            name.removeprefix(prefix) + ("_total" if family.type == "counter" else "")
        )
        if spec is None:
            problems.append(f"{name} is not in the contract")
            continue
        if spec["type"] != family.type:
            problems.append(f"{name} is a {family.type}, the contract says {spec['type']}")
        values: dict[str, set[str]] = {}
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label in ("le", "quantile"):
                    continue
                values.setdefault(label, set()).add(value)
                if label in CONTRACT["forbidden_labels"] or _TASK_ID_LIKE.match(value):
                    problems.append(f"{name} carries a per-task label {label}={value}")
        for label, seen in values.items():
            budget = spec["labels"].get(label)
            if budget is None:
                problems.append(f"{name} has label {label} not in the contract")
            elif len(seen) > budget:
                problems.append(f"{name}{{{label}}} has {len(seen)} values, budget {budget}")
    expected = {n for n, s in CONTRACT["metrics"].items() if s["exporter"] == exporter}
    present = {
        n.removeprefix(prefix) + ("_total" if f.type == "counter" else "")
        for n, f in families.items()
    }
    problems += [f"{n} is missing from the scrape" for n in sorted(expected - present)]
    return {"problems": problems, "families": families}


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    for sample in families[name].samples:
        if sample.name in (name, name + "_total") and all(
            sample.labels.get(k) == v for k, v in labels.items()
        ):
            return float(sample.value)
    raise KeyError((name, labels))


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
    result = lint(scrape, "orchestratord")
    assert result["problems"] == []
    families = result["families"]
    assert value(families, "llorch_tokens_out") == tokens == 21  # per task, never per token
    assert value(families, "llorch_tasks_finished", state="completed") == 3
    assert value(families, "llorch_tasks_canceled", reason="client") == 1
    assert value(families, "llorch_tasks_rejected", reason="MODEL_NOT_FOUND") == 1
    assert value(families, "llorch_pool_ready", pool_id="p1") == 1
    assert value(families, "llorch_tasks_enqueued", priority="interactive") == 4

    port = (cluster.root / "host-a" / "run" / "metrics.port").read_text().strip()
    manager = lint(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text, "pool-managerd")
    assert manager["problems"] == []
    assert value(manager["families"], "llorch_engine_restarts", pool_id="p1") == 0
    assert value(manager["families"], "llorch_pool_memory_bytes", pool_id="p1", kind="actual") > 0


def test_the_lint_catches_a_per_task_label_and_an_unknown_metric() -> None:
    scrape = (
        "# TYPE llorch_tokens_out counter\n"
        'llorch_tokens_out_total{task_id="0123456789abcdef0123456789abcdef"} 3\n'
        "# TYPE llorch_mystery gauge\nllorch_mystery 1\n"
    )
    problems = lint(scrape, "none")["problems"]
    assert any("per-task label task_id" in p for p in problems)
    assert any("llorch_mystery is not in the contract" in p for p in problems)
