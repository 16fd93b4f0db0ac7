"""One real job end to end, and the stream contract (API-02..06), across real processes.

Cluster: one orchestrator, one pool manager with two single-slot pools of the tiny
fixture model (`tiny-a`, `tiny-b`, both answering to `default`), workers running
llama.cpp in-process.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from ci_harness.cluster import Cluster, Event, parse_events, tiny_pool, wait_for

pytestmark = pytest.mark.integration
LONG = 8000  # tokens: several seconds of generation on the tiny model


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cluster = Cluster(
        tmp_path_factory.mktemp("streaming"),
        {"host-a": [tiny_pool("tiny-a", tiny_model), tiny_pool("tiny-b", tiny_model)]},
    )
    cluster.start()
    yield cluster
    codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), (codes, cluster.logs())


def check_stream_contract(events: list[Event]) -> None:
    """API-04: ids increase; started first; tokens indexed 0..n-1; exactly one terminal, last."""
    ids = [e.id for e in events]
    assert ids == sorted(set(ids)), ids
    assert events[0].name == "started"
    terminals = [e for e in events if e.name in ("end", "error")]
    assert len(terminals) == 1 and terminals[0] is events[-1]
    indexes = [e.data["i"] for e in events if e.name == "token"]
    assert indexes == list(range(len(indexes)))


def test_a_completion_streams_to_completion_with_increasing_indexes_and_ids(
    cluster: Cluster,
) -> None:
    response = cluster.submit(
        {"model": "default", "prompt": "Hello world", "max_tokens": 64, "seed": 7}
    )
    assert response.status_code == 202, response.text
    admitted = response.json()
    assert admitted["events_url"] == f"/v2/tasks/{admitted['task_id']}/events"
    assert admitted["queue_position"] >= 0 and admitted["predicted_start_ms"] >= 0
    events = cluster.events(admitted["task_id"])
    check_stream_contract(events)
    started, end = events[0].data, events[-1]
    assert end.name == "end", end
    assert started["pool_id"] in ("tiny-a", "tiny-b")
    assert started["engine"] == "llamacpp-inproc" and started["engine_version"]
    assert len(started["model_digest"]) == 64 and started["tokens_in"] >= 2
    assert end.data["tokens_out"] == 64 and end.data["finish_reason"] == "length"
    text = "".join(e.data["t"] for e in events if e.name == "token")
    assert text
    status = cluster.task(admitted["task_id"])
    assert status["state"] == "completed" and status["tokens_out"] == 64
    assert status["pool_id"] == started["pool_id"] and status["attempts"] == 1


def test_one_round_trip_sse_admits_and_streams_with_correlation_id(cluster: Cluster) -> None:
    with (
        cluster.client() as client,
        client.stream(
            "POST",
            "/v2/tasks",
            json={"model": "tiny", "prompt": "Once", "max_tokens": 16},
            headers={"Accept": "text/event-stream", "X-Correlation-Id": "trace-42"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-correlation-id"] == "trace-42"
        events = list(parse_events(response.iter_lines()))
    check_stream_contract(events)
    assert events[-1].name == "end" and events[-1].data["tokens_out"] == 16


def test_chat_uses_the_models_template_and_stop_strings_end_the_stream(cluster: Cluster) -> None:
    body = {
        "model": "default",
        "workload": "chat",
        "max_tokens": 200,
        "seed": 3,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    }
    plain = cluster.events(cluster.submit(body).json()["task_id"])
    check_stream_contract(plain)
    text = "".join(e.data["t"] for e in plain if e.name == "token")
    assert plain[0].data["tokens_in"] > 10  # the template's markers count as prompt tokens
    stop = text[20:22]
    stopped = cluster.events(cluster.submit({**body, "stop": [stop]}).json()["task_id"])
    stopped_text = "".join(e.data["t"] for e in stopped if e.name == "token")
    assert stopped[-1].name == "end" and stopped[-1].data["finish_reason"] == "stop"
    assert stopped_text == text[: text.index(stop)]


def test_the_same_seed_gives_the_same_text(cluster: Cluster) -> None:
    body = {"model": "default", "prompt": "abc", "max_tokens": 40, "seed": 11, "temperature": 1.0}
    texts = []
    for pin in ("tiny-a", "tiny-b"):
        task = cluster.submit({**body, "placement": {"pin_pool_id": pin}}).json()["task_id"]
        events = cluster.events(task)
        assert events[0].data["pool_id"] == pin
        texts.append("".join(e.data["t"] for e in events if e.name == "token"))
    assert texts[0] == texts[1] and texts[0]


def _first_token(
    cluster: Cluster, task_id: str, seen: list[Event], reached: threading.Event
) -> None:
    with cluster.client() as client, client.stream("GET", f"/v2/tasks/{task_id}/events") as r:
        for event in parse_events(r.iter_lines()):
            seen.append(event)
            if event.name == "token":
                reached.set()


def stream_in_background(
    cluster: Cluster, task_id: str
) -> tuple[list[Event], threading.Event, threading.Thread]:
    seen: list[Event] = []
    reached = threading.Event()
    thread = threading.Thread(
        target=_first_token, args=(cluster, task_id, seen, reached), daemon=True
    )
    thread.start()
    assert reached.wait(30), "no token arrived"
    return seen, reached, thread


def test_two_pools_serve_concurrent_jobs_and_placement_spreads_by_free_slots(
    cluster: Cluster,
) -> None:
    long_task = cluster.submit({"model": "default", "prompt": "a", "max_tokens": LONG}).json()
    first, _, thread = stream_in_background(cluster, long_task["task_id"])
    short = cluster.submit({"model": "default", "prompt": "b", "max_tokens": 8}).json()
    short_events = cluster.events(short["task_id"])
    assert cluster.task(long_task["task_id"])["state"] == "running"
    assert short_events[-1].name == "end"
    assert {first[0].data["pool_id"], short_events[0].data["pool_id"]} == {"tiny-a", "tiny-b"}
    assert cluster.cancel(long_task["task_id"]) == 204
    thread.join(30)


def test_cancel_mid_stream_answers_204_and_no_token_follows(cluster: Cluster) -> None:
    task_id = cluster.submit({"model": "default", "prompt": "c", "max_tokens": LONG}).json()[
        "task_id"
    ]
    seen, _, thread = stream_in_background(cluster, task_id)
    assert cluster.cancel(task_id) == 204
    thread.join(30)
    assert not thread.is_alive()
    check_stream_contract(seen)
    assert seen[-1].name == "error" and seen[-1].data["code"] == "CANCELLED"
    replay = cluster.events(task_id)
    assert [e.id for e in replay] == [e.id for e in seen]  # nothing was added after the cancel
    status = cluster.task(task_id)
    assert status["state"] == "cancelled" and status["error"]["code"] == "CANCELLED"
    assert cluster.cancel(task_id) == 204  # idempotent
    assert cluster.cancel("never-existed") == 204
    cluster.wait_ready(["tiny-a", "tiny-b"])
    wait_for(
        lambda: all(cluster.pool(p)["slots_free"] == 1 for p in ("tiny-a", "tiny-b")),
        "the cancelled job's slot to be released",
    )


def test_a_queued_job_that_is_cancelled_never_starts(cluster: Cluster) -> None:
    busy = [
        cluster.submit(
            {
                "model": "default",
                "prompt": "d",
                "max_tokens": LONG,
                "placement": {"pin_pool_id": pool},
            }
        ).json()["task_id"]
        for pool in ("tiny-a", "tiny-b")
    ]
    wait_for(lambda: all(cluster.task(t)["state"] == "running" for t in busy), "busy pools")
    queued = cluster.submit({"model": "default", "prompt": "e", "max_tokens": 4}).json()
    assert queued["queue_position"] == 0
    assert cluster.task(queued["task_id"])["state"] == "queued"
    assert cluster.cancel(queued["task_id"]) == 204
    for task_id in busy:
        assert cluster.cancel(task_id) == 204
    cluster.wait_ready(["tiny-a", "tiny-b"])
    events = cluster.events(queued["task_id"])
    assert [e.name for e in events] == ["error"] and events[0].data["code"] == "CANCELLED"
    status = cluster.task(queued["task_id"])
    assert status["state"] == "cancelled" and status["attempts"] == 0
    assert status["pool_id"] is None and status["started_at_ms"] is None


def test_a_pin_to_an_unknown_pool_is_a_400_not_a_fallback(cluster: Cluster) -> None:
    response = cluster.submit(
        {
            "model": "default",
            "prompt": "x",
            "max_tokens": 4,
            "placement": {"pin_pool_id": "no-such-pool"},
        }
    )
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "INVALID_PARAMS" and "no-such-pool" in error["message"]
    assert error["correlation_id"] == response.headers["x-correlation-id"]


def test_resuming_with_last_event_id_replays_without_gap_or_duplicate(cluster: Cluster) -> None:
    task_id = cluster.submit({"model": "default", "prompt": "r", "max_tokens": 30}).json()[
        "task_id"
    ]
    full = cluster.events(task_id)
    resumed = cluster.events(task_id, last_event_id=full[1].id)
    assert resumed == full[2:]


def test_llorch_submit_streams_tokens_live_and_prints_timings(cluster: Cluster) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llorch",
            "submit",
            "--url",
            cluster.url,
            "--max-tokens",
            "12",
            "--seed",
            "5",
            "Hello",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "12 tokens" in result.stderr and "ttft" in result.stderr


def test_llorch_submit_reports_a_refusal_with_exit_code_1(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llorch", "submit", "--url", cluster.url, "--model", "nope", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and "MODEL_NOT_FOUND" in result.stderr


def test_capabilities_list_ready_pools_and_honour_an_api_version_pin(cluster: Cluster) -> None:
    with cluster.client() as client:
        caps = client.get("/v2/meta/capabilities").json()
        assert caps["api_version"] == "2.0.0"
        pools = {p["pool_id"]: p for p in caps["pools"]}
        assert set(pools) == {"tiny-a", "tiny-b"}
        pool = pools["tiny-a"]
        assert pool["models"][0]["id"] == "tiny" and "default" in pool["models"][0]["aliases"]
        assert pool["ctx_max"] == 16384 and pool["slots_total"] == 1
        assert pool["workloads"] == ["completion", "chat"] and "grammar" in pool["features"]
        (engine,) = caps["engines"]
        assert engine["engine"] == "llamacpp-inproc" and sorted(engine["pools"]) == sorted(pools)
        assert client.get("/v2/meta/capabilities", params={"api_version": "2"}).status_code == 200
        ranged = client.get("/v2/meta/capabilities", params={"api_version": ">=2.0,<3"})
        assert ranged.status_code == 200
        refused = client.get("/v2/meta/capabilities", params={"api_version": ">=3"})
        assert refused.status_code == 400 and "2.0.0" in refused.json()["message"]


def test_tokenize_gives_ids_and_byte_offsets_and_detokenize_inverts_it(cluster: Cluster) -> None:
    text = "héllo wörld"
    with cluster.client() as client:
        tokens = client.post(
            "/v2/tokenize", json={"model": "default", "text": text, "with_offsets": True}
        ).json()
        assert tokens["pool_id"] in ("tiny-a", "tiny-b")
        assert len(tokens["tokens"]) == len(tokens["offsets"]) >= 3
        assert tokens["offsets"][0] == 0 and tokens["offsets"] == sorted(tokens["offsets"])
        back = client.post(
            "/v2/detokenize", json={"model": "default", "tokens": tokens["tokens"]}
        ).json()
        assert back["text"] == text
        missing = client.post("/v2/tokenize", json={"model": "nope", "text": "x"})
        assert missing.status_code == 404 and missing.json()["code"] == "MODEL_NOT_FOUND"


def test_llorch_chat_keeps_history_across_turns_in_one_session(cluster: Cluster) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llorch",
            "chat",
            "--url",
            cluster.url,
            "--max-tokens",
            "6",
            "--session",
            "cli-chat",
        ],
        input="first question\nsecond question\n/exit\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line]) >= 2
    with cluster.client() as client:
        session = client.get("/v2/sessions/cli-chat").json()
    assert session["turns"] == 2 and session["kv_warm"]


def test_llorch_caps_prints_the_pools(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llorch", "caps", "--url", cluster.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert (
        "tiny-a" in result.stdout and "tiny-b" in result.stdout and "api_version" in result.stdout
    )
