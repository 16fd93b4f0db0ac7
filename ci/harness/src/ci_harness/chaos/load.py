"""The load generator: clients that submit jobs and read them as real clients would,
recording every request, answer and event in the history.

Each client thread runs seeded job plans (`plan_job`, pure) one after another until told
to stop. A job is one of:

- `submit`: two-step, POST /v2/tasks (202) then GET /v2/tasks/{id}/events;
- `stream_v2`: one round trip, POST /v2/tasks with `Accept: text/event-stream`;
- `chat` / `completion`: one round trip on the OpenAI facade with `stream: true`.

Half carry an `Idempotency-Key`. Like a real client: a submit that got no answer, a 429
or a 5xx is sent again (with the same key when the job has one; without a key it is a
new submission); a broken event stream is resumed with `Last-Event-ID` (or, for a
`/v1` stream with a key, the same request is sent again); some readers leave a stream on
purpose after a few tokens and come back after a planned pause (the load's own
schedule, as the nemesis's durations are). A one-round-trip stream that means to come
back (`stream_v2`, or any keyed stream) asks `X-Llorch-On-Disconnect: continue`, so its
job runs on while the reader is away. Some keyed jobs send the key again with another
body, which must be refused with 422 (a probe). The job id of a one-round-trip stream
comes from its `X-Llorch-Task-Id` header (or the `/v1` chunk ids).

The run's last read, after the faults, is `final.final_phase`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ci_harness.chaos.history import History
from ci_harness.cluster import sse_events as cluster_sse_events

__all__ = ["TERMINAL", "TIMEOUT", "JobPlan", "LoadGenerator", "json_of", "plan_job", "sse_events"]

TIMEOUT = httpx.Timeout(connect=5.0, read=20.0, write=5.0, pool=5.0)
JOB_DEADLINE_S = 90.0  # a client gives a job up after this long
RETRY_PAUSE_S = 0.2  # between retries when the server said nothing about when
OPS = ("submit", "submit", "stream_v2", "chat", "completion")
TERMINAL = ("end", "error")
TASK_HEADER = "x-llorch-task-id"
ON_DISCONNECT = "X-Llorch-On-Disconnect"


@dataclass(frozen=True, slots=True)
class JobPlan:
    job: str  # the client's name for the job
    op: str
    idem: str | None
    max_tokens: int
    leave_after: int | None  # the reader leaves after this many tokens (once)
    away_s: float  # and resumes after this pause
    probe: bool  # after acceptance, the key is sent again with another body
    think_s: float  # the client's pause before its next job
    pin: str | None = None  # a pool the job is pinned to (PLC-02), else placement chooses

    def body(self, *, probe: bool = False) -> dict[str, Any]:
        prompt = f"chaos job {self.job}" + (" with another body" if probe else "")
        if self.op == "chat":
            messages = [{"role": "user", "content": prompt}]
            return {
                "model": "default",
                "messages": messages,
                "max_tokens": self.max_tokens,
                "stream": True,
            }
        body: dict[str, Any] = {"model": "default", "prompt": prompt, "max_tokens": self.max_tokens}
        if self.pin is not None:
            body["placement"] = {"pin_pool_id": self.pin}
        return {**body, "stream": True} if self.op == "completion" else body


def plan_job(rng: random.Random, client: int, n: int, pools: tuple[str, ...] = ()) -> JobPlan:
    """The next job of a client; with `pools`, half the two-step and `/v2` stream jobs are
    pinned to one of them (so every pool, the slow one too, has jobs when it is hit)."""
    op = rng.choice(OPS)
    pin = (
        rng.choice(pools)
        if pools and op in ("submit", "stream_v2") and rng.random() < 0.5
        else None
    )
    keyed = rng.random() < 0.5
    resumable = op in ("submit", "stream_v2")
    leave = resumable and rng.random() < 0.35
    return JobPlan(
        job=f"c{client}-{n}",
        op=op,
        idem=f"chaos-{client}-{n}-{rng.randrange(1 << 30):x}" if keyed else None,
        max_tokens=rng.randint(16, 128),
        leave_after=rng.randint(1, 6) if leave else None,
        away_s=round(rng.uniform(0.0, 0.6), 3),
        probe=keyed and rng.random() < 0.25,
        think_s=round(rng.uniform(0.0, 0.5), 3),
        pin=pin,
    )


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(slots=True)
class _Cursor:
    """The last event id a reader has seen (what it resumes after)."""

    after_id: int | None = None


@dataclass(slots=True)
class _StreamRead:
    task_id: str | None = None
    opened: bool = False  # an answer (any status) came
    answered: bool = False  # 200 received
    outcome: str = "broken"  # or 'terminal', 'left', 'eof'
    cursor: _Cursor = field(default_factory=_Cursor)


def _without_probe(plan: JobPlan) -> JobPlan:
    return dataclasses.replace(plan, probe=False)


class _Stop(Exception):
    """The job is over for this client (given up or told to stop)."""


class _Client:
    """One client: runs its jobs in turn on its own HTTP connection pool."""

    def __init__(self, base_url: str, history: History, number: int, seed: int) -> None:
        self.history = history
        self.number = number
        self.rng = random.Random(seed * 1000 + number)
        self.http = httpx.Client(base_url=base_url, timeout=TIMEOUT)
        self.accepted_last = False  # whether the last job got as far as a job id
        self.deadline = 0.0  # monotonic time the running job is given up at

    # -- one HTTP exchange, recorded ---------------------------------------------------------

    def _request(self, plan: JobPlan, op: str, **fields: Any) -> int:
        req = self.history.new_request_id()
        self.history.record("request", req=req, job=plan.job, op=op, **fields)
        return req

    def _answer(self, req: int, status: int | None, **fields: Any) -> None:
        self.history.record("response", req=req, status=status, **fields)

    # -- submitting ----------------------------------------------------------------------------

    def run(self, plan: JobPlan) -> None:
        deadline = self.deadline = time.monotonic() + JOB_DEADLINE_S
        self.accepted_last = False
        try:
            if plan.op == "submit":
                task_id = self._submit(plan, deadline)
                self._probe(plan, task_id)
                self._read(plan, task_id, None, deadline, leave=plan.leave_after)
            else:
                self._stream(plan, deadline)
        except _Stop:
            pass

    def _headers(self, plan: JobPlan) -> dict[str, str]:
        return {"Idempotency-Key": plan.idem} if plan.idem else {}

    def _submit(self, plan: JobPlan, deadline: float) -> str:
        body = plan.body()
        while True:
            self._check(deadline)
            req = self._request(plan, "submit", idem=plan.idem, digest=_digest(body), probe=False)
            try:
                response = self.http.post("/v2/tasks", json=body, headers=self._headers(plan))
            except httpx.HTTPError as exc:
                self._answer(req, None, error=type(exc).__name__)
                self._retry_pause(None)
                continue
            payload = json_of(response)
            task_id = payload.get("task_id")
            code = _code(payload)
            self._answer(req, response.status_code, code=code, task_id=task_id)
            if response.status_code == 202 and task_id:
                self.accepted_last = True
                return str(task_id)
            if not _retriable(response.status_code, code):
                raise _Stop
            self._retry_pause(response)

    def _probe(self, plan: JobPlan, task_id: str | None) -> None:
        """The job's key again with another body: must be refused (422)."""
        if not (plan.probe and plan.idem and task_id):
            return
        body = plan.body(probe=True)
        op = "submit" if plan.op in ("submit", "stream_v2") else plan.op
        path = "/v2/tasks" if op == "submit" else _V1_PATHS[op]
        req = self._request(plan, op, idem=plan.idem, digest=_digest(body), probe=True)
        try:
            response = self.http.post(path, json=body, headers=self._headers(plan))
        except httpx.HTTPError as exc:
            self._answer(req, None, error=type(exc).__name__)
            return
        payload = json_of(response)
        task = payload.get("task_id") or _task_of_v1(payload.get("id"))
        self._answer(req, response.status_code, code=_code(payload), task_id=task)

    # -- reading a job's events -------------------------------------------------------------------

    def _read(
        self, plan: JobPlan, task_id: str, after_id: int | None, deadline: float, leave: int | None
    ) -> None:
        """GET the job's events (resuming after `after_id`) until its terminal event."""
        cursor = _Cursor(after_id)
        while True:
            self._check(deadline)
            after = cursor.after_id
            headers = {} if after is None else {"Last-Event-ID": str(after)}
            req = self._request(
                plan, "events", task_id=task_id, after_id=after, idem=None, digest=""
            )
            opened = False
            try:
                with self.http.stream(
                    "GET", f"/v2/tasks/{task_id}/events", headers=headers
                ) as response:
                    opened = True
                    self._answer(req, response.status_code, task_id=task_id)
                    if response.status_code != 200:
                        if response.status_code in (400, 404):
                            self._end(req, task_id, f"refused {response.status_code}")
                            raise _Stop  # lost or out of the replay buffer: the checker says
                        self._retry_pause(response)
                        continue
                    outcome = self._consume_v2(req, task_id, response, cursor, leave)
            except httpx.HTTPError as exc:
                self._broken(req, task_id, exc, answered=opened)
                self._retry_pause(None)
                continue
            if outcome == "terminal":
                return
            if outcome == "left":
                leave = None
                self.pause(plan.away_s)

    def _consume_v2(
        self,
        req: int,
        task_id: str | None,
        response: httpx.Response,
        cursor: _Cursor,
        leave: int | None,
    ) -> str:
        """Record a /v2 stream's events, moving `cursor`; 'terminal', 'left' or 'eof'."""
        tokens = 0
        for event in sse_events(self._lines(req, task_id, response)):
            self._event_v2(req, task_id, event)
            cursor.after_id = event["id"]
            if event["name"] in TERMINAL:
                self._end(req, task_id, "terminal")
                return "terminal"
            tokens += event["name"] == "token"
            if leave is not None and tokens >= leave:
                self._end(req, task_id, "left")
                return "left"
        self._end(req, task_id, "eof")
        return "eof"

    def _lines(self, req: int, task_id: str | None, response: httpx.Response) -> Iterator[str]:
        """The stream's lines until the job's deadline: a stream that never ends (only
        heart-beats) is given up, recorded as such."""
        for line in response.iter_lines():
            if time.monotonic() > self.deadline:
                self._end(req, task_id, "deadline")
                raise _Stop
            yield line

    def _event_v2(self, req: int, task_id: str | None, event: dict[str, Any]) -> None:
        data, name = event["data"], event["name"]
        fields: dict[str, Any] = {"id": event["id"], "name": name}
        if name == "token":
            fields |= {"i": data.get("i"), "t": data.get("t")}
        elif name == "started":
            fields["pool"] = data.get("pool_id")
        elif name == "error":
            fields["code"] = data.get("code")
        self.history.record("event", req=req, task_id=task_id, **fields)

    def _broken(
        self, req: int, task_id: str | None, exc: httpx.HTTPError, *, answered: bool
    ) -> None:
        """A read that failed: no answer at all (recorded as a response without status),
        or a stream cut after its answer."""
        if answered:
            self._end(req, task_id, f"broken: {type(exc).__name__}")
        else:
            self._answer(req, None, error=type(exc).__name__, task_id=task_id)

    def _end(self, req: int, task_id: str | None, why: str) -> None:
        self.history.record("read_end", req=req, task_id=task_id, why=why)

    # -- one-round-trip streams -----------------------------------------------------------------

    def _stream(self, plan: JobPlan, deadline: float) -> None:
        body = plan.body()
        headers = self._headers(plan)
        path = "/v2/tasks" if plan.op == "stream_v2" else _V1_PATHS[plan.op]
        if plan.op == "stream_v2":
            headers["Accept"] = "text/event-stream"
        if plan.op == "stream_v2" or plan.idem:
            # This client means to come back to the job (resume, or ask again with its
            # key): the job runs on while it is away (the default cancels it).
            headers[ON_DISCONNECT] = "continue"
        while True:
            self._check(deadline)
            req = self._request(plan, plan.op, idem=plan.idem, digest=_digest(body), probe=False)
            read = _StreamRead()
            try:
                with self.http.stream("POST", path, json=body, headers=headers) as response:
                    read.opened = True
                    read.task_id = response.headers.get(TASK_HEADER)
                    if response.status_code != 200:
                        code = _code(_json_read(response))
                        self._answer(req, response.status_code, code=code, task_id=read.task_id)
                        if not _retriable(response.status_code, code):
                            raise _Stop
                        self._retry_pause(response)
                        continue
                    self._answer(req, 200, task_id=read.task_id)
                    read.answered = self.accepted_last = True
                    self._consume_stream(plan, req, response, read)
            except httpx.HTTPError as exc:
                self._broken(req, read.task_id, exc, answered=read.opened)
            if read.task_id and read.answered:
                self._probe(plan, read.task_id)
                plan = _without_probe(plan)
            if read.outcome == "terminal":
                return
            if plan.op == "stream_v2" and read.task_id:
                # Resume on the two-step route (the job's id came in the header).
                if read.outcome == "left":
                    self.pause(plan.away_s)
                self._read(plan, read.task_id, read.cursor.after_id, deadline, leave=None)
                return
            if read.answered and plan.idem is None:
                return  # no key and no way back to the job's stream: the client gives up
            self._retry_pause(None)

    def _consume_stream(
        self, plan: JobPlan, req: int, response: httpx.Response, read: _StreamRead
    ) -> None:
        if "text/event-stream" not in response.headers.get("content-type", ""):
            payload = _json_read(response)  # a finished job's result, for a v1 retry
            read.task_id = read.task_id or _task_of_v1(payload.get("id"))
            self.history.record("read_end", req=req, task_id=read.task_id, why="result")
            read.outcome = "terminal"
        elif plan.op == "stream_v2":
            # Leaving on purpose only makes sense when the job's id is known to come back.
            leave = plan.leave_after if read.task_id else None
            read.outcome = self._consume_v2(req, read.task_id, response, read.cursor, leave)
        else:
            read.outcome = self._consume_v1(req, read, response)

    def _consume_v1(self, req: int, read: _StreamRead, response: httpx.Response) -> str:
        """Record an OpenAI stream's chunks as events (content chunk n is token n)."""
        index = 0
        for line in self._lines(req, read.task_id, response):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            read.task_id = read.task_id or _task_of_v1(chunk.get("id"))
            if "error" in chunk:
                code = chunk["error"].get("code")
                self._v1_event(req, read, name="error", code=code)
                self._end(req, read.task_id, "terminal")
                return "terminal"
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if choice.get("finish_reason"):
                    self._v1_event(req, read, name="end")
                    self._end(req, read.task_id, "terminal")
                    return "terminal"
                text = delta.get("content") if "delta" in choice else choice.get("text")
                if "role" not in delta and text is not None:
                    self._v1_event(req, read, name="token", i=index, t=text)
                    index += 1
        self._end(req, read.task_id, "eof")
        return "eof"

    def _v1_event(self, req: int, read: _StreamRead, **fields: Any) -> None:
        self.history.record("event", req=req, task_id=read.task_id, id=None, **fields)

    # -- pacing --------------------------------------------------------------------------------

    def _check(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise _Stop

    def _retry_pause(self, response: httpx.Response | None) -> None:
        """A client's back-off: Retry-After when the server gave one (capped at 2 s)."""
        pause = RETRY_PAUSE_S
        if response is not None and response.headers.get("retry-after", "").isdigit():
            pause = min(2.0, float(response.headers["retry-after"]))
        self.pause(pause)

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)


_V1_PATHS = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}


def _retriable(status: int, code: str | None) -> bool:
    """Worth sending again: 429, 5xx, and MODEL_NOT_FOUND, which a restarted
    orchestrator answers until the pool managers have joined it again."""
    return status == 429 or status >= 500 or code == "MODEL_NOT_FOUND"


def _code(payload: dict[str, Any]) -> str | None:
    """The error code of a /v2 envelope or of an OpenAI error body."""
    error = payload.get("error")
    code = payload.get("code") or (error.get("code") if isinstance(error, dict) else None)
    return str(code) if code else None


def json_of(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _json_read(response: httpx.Response) -> dict[str, Any]:
    response.read()
    return json_of(response)


def _task_of_v1(chunk_id: Any) -> str | None:
    if not isinstance(chunk_id, str):
        return None
    for prefix in ("chatcmpl-", "cmpl-"):
        if chunk_id.startswith(prefix):
            return chunk_id[len(prefix) :]
    return None


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """SSE events as {id, name, data} as they arrive; comments (heart-beats) skipped."""
    for event_id, name, data in cluster_sse_events(lines):
        yield {"id": event_id, "name": name, "data": data}


class LoadGenerator:
    """`clients` threads running seeded jobs until `stop()`; each finishes its job."""

    def __init__(
        self, base_url: str, history: History, clients: int, seed: int, pools: tuple[str, ...] = ()
    ) -> None:
        self._pools = pools
        self._clients = [_Client(base_url, history, n, seed) for n in range(clients)]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(c,), daemon=True, name=f"client-{c.number}")
            for c in self._clients
        ]
        self.jobs = 0

    def start(self) -> LoadGenerator:
        for thread in self._threads:
            thread.start()
        return self

    def _loop(self, client: _Client) -> None:
        n = 0
        while not self._stop.is_set():
            plan = plan_job(client.rng, client.number, n, self._pools)
            n += 1
            self.jobs += 1
            client.run(plan)
            # Think time (at least a retry pause after a refusal: no hot loop of refusals).
            client.pause(plan.think_s if client.accepted_last else max(plan.think_s, RETRY_PAUSE_S))

    def stop(self, timeout_s: float = JOB_DEADLINE_S + 30.0) -> bool:
        """Start no new job; wait for the running ones. False if a client is stuck."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for client in self._clients:
            client.http.close()
        return not any(t.is_alive() for t in self._threads)
