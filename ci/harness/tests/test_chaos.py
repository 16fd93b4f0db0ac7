"""The chaos run (REL-07, TST-06): under load, a seeded nemesis kills -9 llama-server
engines, in-process workers, pool managers and the orchestrator (each daemon started
again on its state), SIGSTOPs them for 1-5 s and partitions hosts; the checker then
finds, from the recorded history alone, no accepted job lost, no job with two terminal
states, every resumed stream equal to an uninterrupted one and every idempotent retry
answered with the same job.

The cluster is two hosts in network namespaces (`ci_harness.chaos.run`): one with two
in-process llama.cpp workers, one with two llama-server engines, both serving the tiny
fixture model. The table (per fault kind: injected, jobs affected, outcomes; totals;
verdicts) is printed; a failing run is replayed with the printed seed through
`python -m ci_harness.chaos --faults 180 --span 180 --seed 7`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ci_harness.chaos.checker import Violation
from ci_harness.chaos.nemesis import FAULT_KINDS
from ci_harness.chaos.run import ChaosSettings, run_chaos
from ci_harness.fleet import unavailable
from provisioners.testing import llama_server_for_tests

# The first run on a machine builds llama-server in the (unbounded) fixture.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900, func_only=True)]
PER_KIND = 30
SETTINGS = ChaosSettings(seed=7, per_kind=PER_KIND, span_s=180.0, clients=4)


@pytest.fixture(scope="module")
def llama_server() -> list[str]:
    reason = unavailable()
    if reason:
        pytest.skip(f"no network namespaces here: {reason}")
    return list(llama_server_for_tests().command)


def first(violations: list[Violation]) -> list[str]:
    return [f"{v.task_id}: {v.detail}" for v in violations[:5]]


def test_under_chaos_no_accepted_job_is_lost_or_ends_twice_and_resumed_streams_match(
    tmp_path: Path, llama_server: list[str]
) -> None:
    result = run_chaos(tmp_path / "chaos", SETTINGS, llama_server)
    print(result.table)
    print(f"orphan processes after the pool managers stopped: {result.orphans}")
    assert result.harness_errors == []
    short = {
        k: result.counts.injected[k] for k in FAULT_KINDS if result.counts.injected[k] < PER_KIND
    }
    assert not short, f"faults injected below {PER_KIND}: {short} ({result.counts.skipped})"
    verdict = result.verdict
    assert verdict.accepted > 0
    assert verdict.lost == [], first(verdict.lost)
    assert verdict.double_terminals == [], first(verdict.double_terminals)
    assert verdict.resume_mismatches == [], first(verdict.resume_mismatches)
    assert verdict.idempotency_mismatches == [], first(verdict.idempotency_mismatches)
