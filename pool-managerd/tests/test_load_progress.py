"""A pool's load progress (issue 14): what its replicas' engines report while they load
goes into the pool's status on the control link, and nothing once no replica loads."""

from __future__ import annotations

from pool_managerd.control_translate import pool_to_wire
from pool_managerd.pool import PoolStatus, load_progress
from specs.control.v1 import control_pb2 as pb


def test_a_pools_load_progress_is_the_least_of_its_loading_replicas_that_report_one() -> None:
    assert load_progress([("loading", 0.5), ("starting", 0.2), ("loading", None)]) == 0.2
    assert load_progress([("ready", 1.0), ("loading", 0.7)]) == 0.7
    assert load_progress([("ready", None), ("loading", None)]) is None  # warming up / unknown
    assert load_progress([("backoff", 0.3), ("ready", None)]) is None
    assert load_progress([]) is None


def _status(progress: float | None) -> PoolStatus:
    return PoolStatus(
        "p1", "loading", False, False, "llamacpp-inproc", "", "native", "m", "d", ("default",),
        4096, 1, 0, "", 0, (), (), load_progress=progress,
    )  # fmt: skip


def test_the_pool_status_on_the_control_link_carries_load_progress_and_its_absence() -> None:
    for progress in (0.0, 0.5, 1.0):
        wire = pb.PoolStatus.FromString(pool_to_wire(_status(progress)).SerializeToString())
        assert wire.HasField("load_progress") and wire.load_progress == progress
    wire = pb.PoolStatus.FromString(pool_to_wire(_status(None)).SerializeToString())
    assert not wire.HasField("load_progress")
