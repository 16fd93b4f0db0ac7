"""Hostile input never reaches an engine, never costs another client anything (SEC-03).

Each case here reproduces a finding of a schemathesis run against `llorch up` on real
processes (orchestrator, pool manager, llama.cpp worker on the tiny fixture model): an
id outside the vocabulary that aborted the worker, empty prompts and unconvertible JSON
schemas tried three times on the engine, oversized tokenize/detokenize requests, idle and
slow connections held forever, and a plain-text 500 when a detokenize raced the worker's
death.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from ci_harness.cluster import Cluster, tiny_pool, wait_for
from ci_harness.streams import BackgroundStream

pytestmark = pytest.mark.integration
VOCAB = 512  # the tiny fixture model's vocabulary
KEEP_ALIVE_S = 1.0
READ_TIMEOUT_S = 1.5
MAX_PROMPT_BYTES = 4096
MAX_TOKEN_IDS = 1000


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cluster = Cluster(
        tmp_path_factory.mktemp("hostile"),
        {"host-a": [tiny_pool("tiny-a", tiny_model)]},
        {
            "http_keep_alive_s": KEEP_ALIVE_S,
            "http_request_read_timeout_s": READ_TIMEOUT_S,
            "max_prompt_bytes": MAX_PROMPT_BYTES,
            "max_token_ids": MAX_TOKEN_IDS,
        },
        # Declared, so the host's inventory carries its GGUF facts (vocabulary size).
        {"host-a": {"models": [{"id": "tiny", "path": str(tiny_model)}]}},
    )
    cluster.start()
    yield cluster
    assert all(code == 0 for code in cluster.stop().values()), cluster.logs()


def _refused(response: httpx.Response, status: int = 400, code: str = "INVALID_PARAMS") -> str:
    """The envelope's message, after checking status, code and that it is not retriable."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    error = body.get("error", body)  # the OpenAI facade nests it
    assert error["code"] == code, body
    if "retriable" in error:
        assert error["retriable"] is False
    return str(error["message"])


# -- token ids -------------------------------------------------------------------------


def test_an_id_outside_the_vocabulary_is_refused_and_a_running_stream_survives(
    cluster: Cluster,
) -> None:
    task = cluster.submit({"model": "default", "prompt": "go on", "max_tokens": 400, "seed": 1})
    assert task.status_code == 202, task.text
    with BackgroundStream(cluster, task.json()["task_id"]) as stream, cluster.client() as client:
        stream.wait_tokens(1)
        for bad in ([VOCAB], [1, 2, VOCAB + 7], [2**31], [2**32 - 1]):
            for _ in range(3):  # six of these once left the pool failed for good
                response = client.post("/v2/detokenize", json={"model": "default", "tokens": bad})
                assert f"0..{VOCAB - 1}" in _refused(response)
                assert "pool_id" not in response.json()  # refused here, not by the engine
        events = stream.result()
    assert events[-1].name == "end" and events[-1].data["tokens_out"] == 400, events[-1]
    pool = cluster.pool("tiny-a")
    assert pool["ready"] and pool["restarts"] == 0, pool
    with cluster.client() as client:
        fine = client.post("/v2/detokenize", json={"model": "default", "tokens": [VOCAB - 1]})
    assert fine.status_code == 200, fine.text


def test_too_many_token_ids_are_refused_before_an_engine(cluster: Cluster) -> None:
    with cluster.client() as client:
        over_config = client.post(
            "/v2/detokenize", json={"model": "default", "tokens": [5] * (MAX_TOKEN_IDS + 1)}
        )
        over_document = client.post(
            "/v2/detokenize", json={"model": "default", "tokens": [5] * 131_073}
        )
        at_limit = client.post(
            "/v2/detokenize", json={"model": "default", "tokens": [5] * MAX_TOKEN_IDS}
        )
    assert str(MAX_TOKEN_IDS) in _refused(over_config, status=413)
    _refused(over_document)
    assert at_limit.status_code == 200, at_limit.text


def test_text_to_tokenize_is_under_the_prompt_limit(cluster: Cluster) -> None:
    with cluster.client() as client:
        over = client.post(
            "/v2/tokenize", json={"model": "default", "text": "x" * (MAX_PROMPT_BYTES + 1)}
        )
        at = client.post("/v2/tokenize", json={"model": "default", "text": "x" * MAX_PROMPT_BYTES})
    assert str(MAX_PROMPT_BYTES) in _refused(over)
    assert at.status_code == 200 and at.json()["tokens"], at.text


# -- prompts and constraints: refused at admission, never tried on an engine -----------


def _admitted(cluster: Cluster) -> float:
    """Tasks admitted into the queue so far (the orchestrator's own counter)."""
    with cluster.client() as client:
        text = client.get("/metrics").text
    counts = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("llorch_tasks_enqueued_total{")
    ]
    assert counts, "the scrape has llorch_tasks_enqueued_total"
    return sum(counts)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/tasks", {"model": "default", "prompt": "", "max_tokens": 4}),
        ("/v1/completions", {"model": "default", "prompt": "", "max_tokens": 4}),
        ("/v1/completions", {"model": "default", "prompt": [""], "max_tokens": 4}),
        (
            "/v2/tasks",
            {"model": "default", "prompt": "x", "max_tokens": 4, "json_schema": {"foo": []}},
        ),
        (
            "/v2/tasks",
            {"model": "default", "prompt": "x", "max_tokens": 4, "json_schema": {"type": "nope"}},
        ),
        (
            "/v2/tasks",
            {"model": "default", "prompt": "x", "max_tokens": 4, "grammar": "anything at all"},
        ),
        (
            "/v1/chat/completions",
            {
                "model": "default",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"foo": []}},
                },
            },
        ),
    ],
    ids=[
        "empty-prompt",
        "openai-empty-prompt",
        "openai-empty-prompt-list",
        "schema-the-converter-refuses",
        "schema-against-the-meta-schema",
        "grammar-without-root",
        "openai-response-format-schema",
    ],
)
def test_input_no_engine_can_take_is_a_400_at_admission(
    cluster: Cluster, path: str, body: dict[str, Any]
) -> None:
    before = _admitted(cluster)
    with cluster.client() as client:
        _refused(client.post(path, json=body))
    assert _admitted(cluster) == before  # refused at admission: never queued for an engine


def test_an_integral_number_is_an_integer_as_the_document_says_and_a_fraction_is_not(
    cluster: Cluster,
) -> None:
    """JSON Schema's `integer` takes 4.0; strict parsing still refuses 4.5, "4" and true."""
    accepted = cluster.submit({"model": "default", "prompt": "x", "max_tokens": 4.0, "seed": 7.0})
    assert accepted.status_code == 202, accepted.text
    with cluster.client() as client:
        ids = client.post("/v2/detokenize", json={"model": "default", "tokens": [5.0, 6]})
        assert ids.status_code == 200, ids.text
        for bad in (4.5, "4", True):
            _refused(
                client.post(
                    "/v2/tasks", json={"model": "default", "prompt": "x", "max_tokens": bad}
                )
            )


def test_a_schema_too_large_is_a_413(cluster: Cluster) -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(4000)}}
    with cluster.client() as client:
        response = client.post(
            "/v2/tasks", json={"model": "default", "prompt": "x", "json_schema": schema}
        )
    assert "65536" in _refused(response, status=413)


def test_an_engine_that_refuses_input_fails_the_task_once_not_retriable(cluster: Cluster) -> None:
    """A grammar that passes admission's check but not llama.cpp's parser: one attempt,
    INVALID_PARAMS, never three tries ending in a retriable ENGINE_ERROR."""
    response = cluster.submit(
        {"model": "default", "prompt": "x", "max_tokens": 4, "grammar": 'root ::= ( "a"'}
    )
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    events = cluster.events(task_id)
    assert [e.name for e in events] == ["error"], events
    assert events[0].data["code"] == "INVALID_PARAMS" and events[0].data["retriable"] is False
    assert cluster.task(task_id)["attempts"] == 1


# -- connections: idle and slow ones are closed, streams are not ------------------------


def _connect(cluster: Cluster) -> socket.socket:
    host, port = cluster.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10.0)


def _read_until_closed(sock: socket.socket, trickle: bytes = b"", every_s: float = 0.2) -> bytes:
    """Everything the server sends until it closes; `trickle` goes out a byte at a time
    meanwhile. Bounded: 10 s."""
    received, deadline = b"", time.monotonic() + 10.0
    sock.settimeout(every_s)
    for byte in [trickle[i : i + 1] for i in range(len(trickle))] + [b""] * 10_000:
        assert time.monotonic() < deadline, "the server kept the connection open"
        try:
            if byte:
                sock.sendall(byte)
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError("unreachable")


def test_a_connection_that_never_sends_a_request_is_closed_after_the_keep_alive(
    cluster: Cluster,
) -> None:
    with _connect(cluster) as sock:
        opened = time.monotonic()
        assert _read_until_closed(sock) == b""
        held = time.monotonic() - opened
    assert KEEP_ALIVE_S * 0.8 <= held < KEEP_ALIVE_S + 3.0, held


def test_an_idle_keep_alive_connection_is_closed_after_its_response(cluster: Cluster) -> None:
    with _connect(cluster) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = time.monotonic()
        received = _read_until_closed(sock)
        held = time.monotonic() - answered
    assert received.startswith(b"HTTP/1.1 200") and b'"ok"' in received
    assert KEEP_ALIVE_S * 0.8 <= held < KEEP_ALIVE_S + 3.0, held


@pytest.mark.parametrize(
    ("head", "trickle"),
    [
        (b"GET /healthz HTTP/1.1\r\n", b"X-Slow: " + b"a" * 200),
        (
            b"POST /v2/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 400\r\n\r\n",
            b'{"model": "default", "prompt": "' + b"a" * 300,
        ),
    ],
    ids=["headers-trickle", "body-trickle"],
)
def test_a_request_that_trickles_in_is_answered_408_and_closed(
    cluster: Cluster, head: bytes, trickle: bytes
) -> None:
    with _connect(cluster) as sock:
        sock.sendall(head)
        started = time.monotonic()
        received = _read_until_closed(sock, trickle)
        held = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    envelope = json.loads(received.split(b"\r\n\r\n", 1)[1])
    assert envelope["code"] == "INVALID_PARAMS" and str(READ_TIMEOUT_S) in envelope["message"]
    assert READ_TIMEOUT_S * 0.8 <= held < READ_TIMEOUT_S + 3.0, held


def test_a_quiet_event_stream_outlives_both_deadlines(cluster: Cluster) -> None:
    """A task waiting behind a long one: its stream is open and silent longer than the
    keep-alive and read deadlines, and still delivers the task to its end."""
    long = cluster.submit({"model": "default", "prompt": "a", "max_tokens": 16000, "seed": 2})
    waiting = cluster.submit({"model": "default", "prompt": "b", "max_tokens": 4, "seed": 3})
    assert long.status_code == waiting.status_code == 202
    waiting_id = waiting.json()["task_id"]
    with BackgroundStream(cluster, waiting_id) as stream:
        opened = time.monotonic()
        wait_for(
            lambda: time.monotonic() - opened > KEEP_ALIVE_S + READ_TIMEOUT_S,
            "both deadlines to pass on the open stream",
        )
        assert cluster.task(long.json()["task_id"])["state"] == "running"  # still silent
        assert cluster.cancel(long.json()["task_id"]) == 204
        events = stream.result()
    assert events[0].name == "started" and events[-1].name == "end", events


# -- the worker dies under a detokenize: always the envelope ----------------------------


def test_detokenize_racing_the_workers_death_answers_the_envelope_never_plain_text(
    cluster: Cluster,
) -> None:
    statuses: dict[int, int] = {}
    problems: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with cluster.client() as client:
            while not stop.is_set():
                response = client.post(
                    "/v2/detokenize", json={"model": "default", "tokens": [5] * MAX_TOKEN_IDS}
                )
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                content_type = response.headers.get("content-type", "")
                if response.status_code != 200 and not (
                    content_type.startswith("application/json")
                    and response.json().get("code") in ("POOL_UNREADY", "MODEL_NOT_FOUND")
                ):
                    problems.append(f"{response.status_code} {content_type}: {response.text[:200]}")

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: statuses.get(200, 0) >= 3, "detokenize answers before the kill")
        (pid,) = cluster.worker_pids("host-a", "tiny-a")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not cluster.pool("tiny-a").get("ready"), "the pool to notice")
        cluster.wait_ready(["tiny-a"])
        served = statuses.get(200, 0)
        wait_for(lambda: statuses.get(200, 0) > served, "detokenize served after the restart")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not problems, problems[:5]
    assert statuses.get(500, 0) == 0, statuses


def test_the_pool_serves_normally_after_all_this(cluster: Cluster) -> None:
    events = cluster.stream_pinned("tiny-a")
    assert events[-1].name == "end" and events[-1].data["tokens_out"] == 8, events[-1]
