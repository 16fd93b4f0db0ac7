"""Bad input gets a typed 4xx envelope, never a 5xx and never a hang (API-07, SEC-03)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from ci_harness.cluster import Cluster, tiny_pool
from llama_cpp import Llama

pytestmark = pytest.mark.integration
MAX_PROMPT_BYTES = 65_536
MAX_BODY_BYTES = 131_072
CTX = 16384


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cluster = Cluster(
        tmp_path_factory.mktemp("bad-input"),
        {"host-a": [tiny_pool("tiny-a", tiny_model, ctx=CTX)]},
        {"max_prompt_bytes": MAX_PROMPT_BYTES, "max_body_bytes": MAX_BODY_BYTES},
    )
    cluster.start()
    yield cluster
    assert all(code == 0 for code in cluster.stop().values()), cluster.logs()


OK = {"model": "default", "prompt": "hi", "max_tokens": 4}


def body(**changes: Any) -> bytes:
    merged = {**OK, **changes}
    return json.dumps({k: v for k, v in merged.items() if v is not ...}).encode()


CASES: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("not-json", b"{", {}, 400, "INVALID_PARAMS"),
    ("empty-body", b"", {}, 400, "INVALID_PARAMS"),
    ("json-array", b"[1, 2]", {}, 400, "INVALID_PARAMS"),
    ("invalid-utf8", b'{"model": "default", "prompt": "\xff\xfe"}', {}, 400, "INVALID_PARAMS"),
    ("deeply-nested", b"[" * 50_000 + b"]" * 50_000, {}, 400, "INVALID_PARAMS"),
    ("missing-model", body(model=...), {}, 400, "INVALID_PARAMS"),
    ("null-model", body(model=None), {}, 400, "INVALID_PARAMS"),
    ("unknown-field", body(temprature=0.5), {}, 400, "INVALID_PARAMS"),
    ("prompt-is-a-number", body(prompt=5), {}, 400, "INVALID_PARAMS"),
    ("max-tokens-is-a-string", body(max_tokens="10"), {}, 400, "INVALID_PARAMS"),
    ("temperature-is-a-bool", body(temperature=True), {}, 400, "INVALID_PARAMS"),
    ("max-tokens-zero", body(max_tokens=0), {}, 400, "INVALID_PARAMS"),
    ("max-tokens-huge", body(max_tokens=10**9), {}, 400, "INVALID_PARAMS"),
    ("temperature-negative", body(temperature=-1), {}, 400, "INVALID_PARAMS"),
    ("top-p-above-one", body(top_p=2), {}, 400, "INVALID_PARAMS"),
    ("seed-negative", body(seed=-1), {}, 400, "INVALID_PARAMS"),
    ("seed-beyond-64-bits", body(seed=2**70), {}, 400, "INVALID_PARAMS"),
    (
        "nan-temperature",
        b'{"model": "default", "prompt": "x", "temperature": NaN}',
        {},
        400,
        "INVALID_PARAMS",
    ),
    ("unknown-priority", body(priority="urgent"), {}, 400, "INVALID_PARAMS"),
    ("bad-task-id", body(task_id="has spaces/and slashes"), {}, 400, "INVALID_PARAMS"),
    ("too-many-stops", body(stop=[f"s{i}" for i in range(17)]), {}, 400, "INVALID_PARAMS"),
    ("empty-stop", body(stop=[""]), {}, 400, "INVALID_PARAMS"),
    ("chat-without-messages", body(workload="chat"), {}, 400, "INVALID_PARAMS"),
    (
        "completion-with-messages",
        body(messages=[{"role": "user", "content": "x"}]),
        {},
        400,
        "INVALID_PARAMS",
    ),
    (
        "bad-chat-role",
        body(workload="chat", prompt=..., messages=[{"role": "robot", "content": "x"}]),
        {},
        400,
        "INVALID_PARAMS",
    ),
    (
        "embedding-via-tasks",
        body(workload="embedding", prompt=..., inputs=["x"]),
        {},
        400,
        "INVALID_PARAMS",
    ),
    (
        "grammar-and-schema",
        body(grammar='root ::= "a"', json_schema={"type": "string"}),
        {},
        400,
        "INVALID_PARAMS",
    ),
    ("unknown-model", body(model="no-such-model"), {}, 404, "MODEL_NOT_FOUND"),
    ("prompt-over-the-limit", body(prompt="x" * (MAX_PROMPT_BYTES + 1)), {}, 400, "INVALID_PARAMS"),
    ("body-over-the-limit", body(prompt="x" * MAX_BODY_BYTES), {}, 413, "INVALID_PARAMS"),
    (
        "context-overflow",
        body(prompt="word " * 4000, max_tokens=CTX - 100),
        {},
        400,
        "CONTEXT_OVERFLOW",
    ),
    ("wrong-content-type", body(), {"Content-Type": "text/plain"}, 415, "INVALID_PARAMS"),
    ("bad-correlation-id", body(), {"X-Correlation-Id": "not valid!"}, 400, "INVALID_PARAMS"),
]


@pytest.mark.parametrize(
    ("case", "raw", "headers", "status", "code"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_submissions_get_a_typed_4xx_envelope(
    cluster: Cluster, case: str, raw: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    sent = {"Content-Type": "application/json", **headers}
    with httpx.Client(base_url=cluster.url, timeout=10.0) as client:
        response = client.post("/v2/tasks", content=raw, headers=sent)
    assert response.status_code == status, response.text
    envelope = response.json()
    assert envelope["code"] == code
    assert envelope["message"] and envelope["retriable"] is False
    assert envelope["correlation_id"] == response.headers["x-correlation-id"]


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("GET", "/v2/tasks/unknown-task", {}, 404, "NOT_FOUND"),
        ("GET", "/v2/tasks/unknown-task/events", {}, 404, "NOT_FOUND"),
        ("GET", "/v2/tasks/bad%20id", {}, 400, "INVALID_PARAMS"),
        ("GET", "/v2/pools/no-such-pool", {}, 404, "NOT_FOUND"),
        ("GET", "/v2/nowhere", {}, 404, "NOT_FOUND"),
        ("DELETE", "/v2/tasks", {}, 405, "INVALID_PARAMS"),
    ],
    ids=[
        "unknown-task",
        "unknown-task-events",
        "bad-task-id",
        "unknown-pool",
        "unknown-route",
        "wrong-method",
    ],
)
def test_bad_requests_elsewhere_get_a_typed_envelope(
    cluster: Cluster, method: str, path: str, headers: dict[str, str], status: int, code: str
) -> None:
    with httpx.Client(base_url=cluster.url, timeout=10.0) as client:
        response = client.request(method, path, headers=headers)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.headers["x-correlation-id"]


def test_a_malformed_last_event_id_is_refused(cluster: Cluster) -> None:
    task_id = cluster.submit(OK).json()["task_id"]
    with httpx.Client(base_url=cluster.url, timeout=10.0) as client:
        response = client.get(f"/v2/tasks/{task_id}/events", headers={"Last-Event-ID": "x1"})
    assert response.status_code == 400 and response.json()["code"] == "INVALID_PARAMS"


def test_a_reused_task_id_is_a_conflict(cluster: Cluster) -> None:
    first = cluster.submit({**OK, "task_id": "fixed-id-1"})
    second = cluster.submit({**OK, "task_id": "fixed-id-1"})
    assert first.status_code == 202
    assert second.status_code == 409 and second.json()["code"] == "IDEMPOTENCY_CONFLICT"


def test_a_long_prompt_that_fits_by_exact_count_is_admitted(
    cluster: Cluster, tiny_model: Path
) -> None:
    """The byte bound says it may not fit; the pool's tokenizer says it does (ADM-03)."""
    prompt = "the quick brown fox " * 400
    vocab = Llama(str(tiny_model), vocab_only=True, verbose=False)
    exact = len(vocab.tokenize(prompt.encode(), add_bos=True, special=True))
    max_tokens = CTX - exact - 10
    assert len(prompt.encode()) + max_tokens > CTX  # the fast bound alone would refuse it
    response = cluster.submit({"model": "default", "prompt": prompt, "max_tokens": max_tokens})
    assert response.status_code == 202, response.text
    assert cluster.cancel(response.json()["task_id"]) == 204
