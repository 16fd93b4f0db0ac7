"""`vllm_gauges`: vLLM's `/metrics` page as numbers, the source of a vLLM pool's load."""

from __future__ import annotations

from worker_adapters.vllm.adapter import vllm_gauges

# The shape vLLM 0.32.0 (CPU build) serves, trimmed: one label set per engine and model.
PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 1.0
vllm:num_requests_running{engine="1",model_name="tiny"} 2.0
vllm:num_requests_waiting{engine="0",model_name="tiny"} 3.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="tiny",reason="capacity"} 3.0
vllm:generation_tokens_total{engine="0",model_name="tiny"} 1.2e+03
process_resident_memory_bytes 1.5e+09
vllm:broken{engine="0"} not-a-number
"""


def test_samples_are_summed_over_label_sets_by_name_without_the_prefix() -> None:
    gauges = vllm_gauges(PAGE)
    assert gauges["num_requests_running"] == 3.0
    assert gauges["num_requests_waiting"] == 3.0
    assert gauges["num_requests_waiting_by_reason"] == 3.0
    assert gauges["generation_tokens_total"] == 1200.0


def test_other_metrics_comments_and_unreadable_values_are_left_out() -> None:
    gauges = vllm_gauges(PAGE)
    assert "process_resident_memory_bytes" not in gauges
    assert "broken" not in gauges
    assert vllm_gauges("") == {}
