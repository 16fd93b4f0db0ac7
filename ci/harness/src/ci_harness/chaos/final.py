"""The chaos run's final read, after the faults stopped and the clients finished: for
every accepted job its state once terminal (`GET /v2/tasks/{id}`, waiting until the
deadline) and its events replayed from the start, recorded in the history (`final`
records and `replay` reads). A replay is read within REPLAY_DEADLINE_S (a 3 s read
timeout: a finished job's replay is immediate), so one that never ends is recorded as
such and costs only its own deadline; FINAL_READERS jobs are read at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from ci_harness.chaos.history import History
from ci_harness.chaos.load import TERMINAL, TIMEOUT, json_of, sse_events

__all__ = ["final_phase"]

REPLAY_DEADLINE_S = 10.0
REPLAY_TIMEOUT = httpx.Timeout(connect=5.0, read=3.0, write=5.0, pool=5.0)
FINAL_READERS = 8


def final_phase(
    base_url: str,
    history: History,
    task_ids: list[str],
    timeout_s: float = 120.0,
    progress: Callable[[str], None] = print,
) -> None:
    """For every task: its state once terminal (or the last one seen at the deadline),
    and its events replayed from the start. FINAL_READERS tasks are read at a time (a
    replay that never ends costs its deadline, not the others')."""
    deadline = time.monotonic() + timeout_s
    history.record("phase", name="final", tasks=len(task_ids))
    limits = httpx.Limits(max_connections=FINAL_READERS)
    with (
        httpx.Client(base_url=base_url, timeout=TIMEOUT, limits=limits) as http,
        ThreadPoolExecutor(FINAL_READERS, thread_name_prefix="final") as readers,
    ):
        list(readers.map(lambda task_id: _final_read(http, history, task_id, deadline), task_ids))
    progress(f"final phase: {len(task_ids)} tasks read")


def _final_read(http: httpx.Client, history: History, task_id: str, deadline: float) -> None:
    status, payload = _status_when_terminal(http, task_id, deadline)
    error = payload.get("error") or {}
    history.record(
        "final",
        task_id=task_id,
        status=status,
        state=payload.get("state"),
        code=error.get("code") if isinstance(error, dict) else None,
        pool=payload.get("pool_id"),
    )
    if status == 200 and payload.get("state") in ("completed", "failed", "cancelled"):
        _replay(http, history, task_id)


def _status_when_terminal(
    http: httpx.Client, task_id: str, deadline: float
) -> tuple[int | None, dict[str, Any]]:
    status: int | None = None
    payload: dict[str, Any] = {}
    while True:
        try:
            response = http.get(f"/v2/tasks/{task_id}")
            status, payload = response.status_code, json_of(response)
        except httpx.HTTPError:
            status, payload = None, {}
        terminal = payload.get("state") in ("completed", "failed", "cancelled")
        if terminal or status == 404 or time.monotonic() > deadline:
            return status, payload
        time.sleep(0.1)


def _replay(http: httpx.Client, history: History, task_id: str) -> None:
    req = history.new_request_id()
    history.record("request", req=req, job=None, op="replay", task_id=task_id, idem=None, digest="")
    deadline = time.monotonic() + REPLAY_DEADLINE_S
    try:
        with http.stream("GET", f"/v2/tasks/{task_id}/events", timeout=REPLAY_TIMEOUT) as response:
            history.record("response", req=req, status=response.status_code, task_id=task_id)
            if response.status_code != 200:
                return
            for event in sse_events(_lines_until(response.iter_lines(), deadline)):
                data, name = event["data"], event["name"]
                fields: dict[str, Any] = {"id": event["id"], "name": name}
                if name == "token":
                    fields |= {"i": data.get("i"), "t": data.get("t")}
                elif name == "error":
                    fields["code"] = data.get("code")
                history.record("event", req=req, task_id=task_id, **fields)
                if name in TERMINAL:
                    break
    except httpx.HTTPError as exc:
        history.record("read_end", req=req, task_id=task_id, why=f"broken: {type(exc).__name__}")
    except TimeoutError:
        history.record("read_end", req=req, task_id=task_id, why="deadline")


def _lines_until(lines: Iterator[str], deadline: float) -> Iterator[str]:
    for line in lines:
        if time.monotonic() > deadline:
            raise TimeoutError
        yield line
