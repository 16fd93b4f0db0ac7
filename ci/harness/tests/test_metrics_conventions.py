"""The metrics contract follows Prometheus naming (base units), and the Grafana dashboard
in deploy/grafana names only series and labels the contract defines (OBS-01, OBS-04)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from ci_harness.metrics_lint import contract, dashboard_problems, naming_problems, panels

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "llorch.json"


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_the_contract_names_every_series_in_base_units() -> None:
    assert naming_problems(contract()) == []


@pytest.mark.parametrize(
    ("name", "spec", "problem"),
    [
        ("latency_first_token_ms", {"type": "histogram", "unit": "seconds"}, "base unit"),
        ("latency_decode", {"type": "histogram"}, "names its unit"),
        ("queue_wait_seconds", {"type": "histogram", "unit": "bytes"}, "ends in _bytes"),
        ("job_duration", {"type": "gauge"}, "ends in _seconds"),
        ("pool_memory_mb", {"type": "gauge"}, "base unit"),
        ("tasks_done", {"type": "counter"}, "ends in _total"),
        (
            "x_seconds",
            {"type": "histogram", "unit": "seconds", "help": "In milliseconds."},
            "milli",
        ),
    ],
)
def test_the_naming_lint_refuses_a_non_base_unit(
    name: str, spec: dict[str, Any], problem: str
) -> None:
    problems = naming_problems({"metrics": {name: {"labels": {}, **spec}}})
    assert any(problem in p for p in problems), problems


def test_the_dashboard_names_only_series_of_the_contract() -> None:
    assert dashboard_problems(_dashboard(), contract()) == []


def test_the_dashboard_shows_throughput_latency_quantiles_queue_pools_and_errors() -> None:
    exprs = " ".join(
        t["expr"] for p in panels(_dashboard()) for t in p.get("targets", []) if "expr" in t
    )
    for name in (
        "latency_first_token_seconds",
        "latency_inter_token_seconds",
        "latency_end_to_end_seconds",
        "latency_queue_wait_seconds",
    ):
        assert f"sum by (le, model) (rate(llorch_{name}_bucket" in exprs
    for series in (
        "llorch_tokens_out_total",
        "llorch_queue_depth",
        "llorch_pool_ready",
        "llorch_tasks_rejected_total",
        'llorch_tasks_finished_total{state="failed"}',
        "llorch_build_info",
    ):
        assert series in exprs


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(llorch_latency_first_token_ms_bucket[5m])", "series llorch_latency_first_token_ms"),
        ("sum(rate(llorch_tokens_out[5m]))", "series llorch_tokens_out is not"),  # no _total
        ("llorch_latency_end_to_end_seconds", "series llorch_latency_end_to_end_seconds is"),
        ('llorch_pool_ready{host="a"}', "label host"),
        ("sum by (task_id) (llorch_queue_depth)", "label task_id"),
        ("rates(llorch_tokens_out_total[5m])", "rates() is not a PromQL function"),
        ("sum(rate(llorch_tokens_out_total[5m])", "unbalanced"),
    ],
)
def test_the_dashboard_check_fails_on_a_panel_naming_what_the_contract_lacks(
    expr: str, problem: str
) -> None:
    dashboard = copy.deepcopy(_dashboard())
    dashboard["panels"].append({"type": "timeseries", "title": "Bad", "targets": [{"expr": expr}]})
    problems = dashboard_problems(dashboard, contract())
    assert problems and all(p.startswith("panel 'Bad'") for p in problems), problems
    assert any(problem in p for p in problems), problems


def test_the_dashboard_check_reads_panels_nested_in_rows_and_variables() -> None:
    dashboard = copy.deepcopy(_dashboard())
    dashboard["panels"].append(
        {"type": "row", "title": "Row", "panels": [{"title": "Inner", "targets": [{"expr": "up"}]}]}
    )
    dashboard["templating"]["list"].append(
        {"type": "query", "name": "host", "query": "label_values(llorch_pool_ready, host)"}
    )
    problems = dashboard_problems(dashboard, contract())
    assert any(p.startswith("panel 'Inner'") and "series up" in p for p in problems), problems
    assert any(p.startswith("variable 'host'") and "label host" in p for p in problems), problems
