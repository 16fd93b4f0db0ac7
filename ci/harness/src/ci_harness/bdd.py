"""`World`: what one BDD scenario has done and seen, shared by its steps.

The step definitions (ci/harness/tests/bdd_data, bdd_ops) get one per scenario from
their `world` fixture: the cluster they talk to, the credentials in use, the last
answer, the events read, the tasks started (which the fixture cancels when the scenario
ends). Its helpers speak HTTP to the cluster with those credentials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from ci_harness.cluster import Cluster, Event
from ci_harness.streams import BackgroundStream

__all__ = ["LONG", "TERMINAL", "World", "completion", "text_of"]

LONG = 8000  # tokens: many seconds of generation on the tiny model
TERMINAL = ("completed", "failed", "cancelled")  # a task's states that end it


@dataclass
class World:
    """What one scenario has done and seen."""

    cluster: Cluster
    headers: dict[str, str] | None = None  # the credentials in use; None: the cluster's
    key: str = ""  # the bearer key in use, to check it is never echoed
    response: httpx.Response | None = None
    responses: list[httpx.Response] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)  # the last task body submitted
    task_id: str = ""
    events: list[Event] = field(default_factory=list)
    first_events: list[Event] = field(default_factory=list)
    stream: BackgroundStream | None = None
    started: list[str] = field(default_factory=list)  # every task id it submitted
    turn_pools: dict[str, list[str]] = field(default_factory=dict)  # session -> pools
    values: dict[str, Any] = field(default_factory=dict)
    openai_client: Any = None  # an `openai.OpenAI` on the facade, once a step made one
    error: Any = None  # the `openai.APIStatusError` the last facade call raised

    def client(self) -> httpx.Client:
        headers = self.cluster.headers if self.headers is None else self.headers
        return httpx.Client(base_url=self.cluster.url, timeout=30.0, headers=headers)

    def submit(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        self.body = body
        with self.client() as client:
            response = client.post("/v2/tasks", json=body, headers=headers)
        self.response = response
        self.responses.append(response)
        if response.status_code == 202:
            self.task_id = response.json()["task_id"]
            self.started.append(self.task_id)
        return response

    def admitted(self, body: dict[str, Any]) -> str:
        response = self.submit(body)
        assert response.status_code == 202, response.text
        return self.task_id

    def envelope(self) -> dict[str, Any]:
        assert self.response is not None
        body: dict[str, Any] = self.response.json()
        return body


def completion(max_tokens: int, **body: Any) -> dict[str, Any]:
    return {
        "model": "default",
        "prompt": "A story about a lighthouse",
        "max_tokens": max_tokens,
        **body,
    }


def text_of(events: list[Event]) -> str:
    return "".join(e.data["t"] for e in events if e.name == "token")
