"""The scenarios of `specs/features/tasks/backpressure.feature`, on a cluster of their own
(`backpressure_cluster` in conftest: a queue of one, a spare pool, a rate-limited key)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ci_harness.cluster import Cluster
from pytest_bdd import scenarios

pytestmark = pytest.mark.integration

scenarios(str(Path(__file__).resolve().parents[4] / "specs/features/tasks/backpressure.feature"))


@pytest.fixture(scope="module")
def cluster(backpressure_cluster: Cluster) -> Cluster:
    return backpressure_cluster
