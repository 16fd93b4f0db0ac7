"""A pool's load progress (issue 14) as the orchestrator shows it: read off the control
link's pool status and put on `GET /v2/pools` (`pool_json`), null when absent."""

from __future__ import annotations

from orchestratord.control_translate import pool_from_wire
from orchestratord.http.views import pool_json
from orchestratord.registry import PoolRegistry
from specs.control.v1 import control_pb2 as pb


def _shown(wire: pb.PoolStatus) -> object:
    registry = PoolRegistry(lease_s=6.0, suspect_ttl_s=4.0)
    pool = pool_from_wire("host-a", wire)
    registry.host_snapshot("host-a", [pool], 1.0)
    return pool_json(registry, pool, 1.0)["load_progress"]


def test_a_loading_pools_fraction_loaded_is_shown_and_its_absence_is_null() -> None:
    loading = pb.PoolStatus(pool_id="p1", state="loading", load_progress=0.123456)
    assert _shown(loading) == 0.1235
    assert _shown(pb.PoolStatus(pool_id="p1", state="loading", load_progress=0.0)) == 0.0
    assert _shown(pb.PoolStatus(pool_id="p1", state="ready")) is None
