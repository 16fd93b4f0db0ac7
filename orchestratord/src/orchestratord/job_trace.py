"""The spans of one task (OBS-03), made only when tracing is on (`specs.tracing`).

    task        SERVER; parent: the client's `traceparent`, if it sent one
    ├─ admission     submit: feasibility, quota, queue
    ├─ placement     per attempt: from (re)queueing to the placement decision
    └─ dispatch      per attempt: the engine call; current in the runner task's context,
       │             so the adapter's `engine.generate` span is its child
       └─ engine.generate ──traceparent──► worker.generate (other process)
    events on `task`: first_token (stamped when it arrived), end (the final state)

A `JobTrace` holds its spans explicitly and never makes one current in the
orchestrator's own context. Nothing here runs per token: the first token's time is read
from the record when the task ends.

The `task` span carries the OpenTelemetry GenAI semantic-convention attributes
(`gen_ai_request` at admission, `gen_ai_response` at the end): `gen_ai.operation.name`
(`chat`, `text_completion`, `embeddings`), `gen_ai.provider.name` (`llorch`; the name
that replaced `gen_ai.system`), `gen_ai.request.model` (as the client named it), the
sampling parameters the client set (`gen_ai.request.max_tokens`, `.temperature`,
`.top_p`, `.top_k`, `.seed`, `.frequency_penalty`, `.presence_penalty`,
`.stop_sequences`), and at the end `gen_ai.response.id` (the task id),
`gen_ai.response.model` (the serving pool's model id), `gen_ai.usage.input_tokens`,
`gen_ai.usage.output_tokens` and `gen_ai.response.finish_reasons`. llorch's own
attributes are `llorch.*`.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from worker_adapters import End, Failed, StreamEvent

from specs import tracing

if TYPE_CHECKING:
    from orchestratord.tasks import TaskSpec

__all__ = ["PROVIDER", "JobTrace", "client_trace", "gen_ai_request", "gen_ai_response"]

PROVIDER = "llorch"
_OPERATIONS = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}
Attributes = dict[str, str | int | float | bool | list[str]]


def gen_ai_request(spec: TaskSpec) -> Attributes:
    """The GenAI request attributes of a task: what was asked, as the client set it."""
    attributes: Attributes = {
        "gen_ai.operation.name": _OPERATIONS[spec.workload],
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": spec.model,
    }
    if spec.workload == "embedding":
        return attributes
    sampling = spec.request.sampling
    attributes["gen_ai.request.max_tokens"] = sampling.max_tokens
    optional = {
        "gen_ai.request.temperature": sampling.temperature,
        "gen_ai.request.top_p": sampling.top_p,
        "gen_ai.request.top_k": sampling.top_k,
        "gen_ai.request.seed": sampling.seed,
        "gen_ai.request.frequency_penalty": sampling.frequency_penalty,
        "gen_ai.request.presence_penalty": sampling.presence_penalty,
    }
    attributes.update({k: v for k, v in optional.items() if v is not None})
    if sampling.stop:
        attributes["gen_ai.request.stop_sequences"] = list(sampling.stop)
    return attributes


def gen_ai_response(
    task_id: str, tokens: tuple[int, int], model_id: str | None, finish_reason: str | None
) -> Attributes:
    """The GenAI response attributes of an ended task."""
    attributes: Attributes = {
        "gen_ai.response.id": task_id,
        "gen_ai.usage.input_tokens": tokens[0],
        "gen_ai.usage.output_tokens": tokens[1],
    }
    if model_id is not None:
        attributes["gen_ai.response.model"] = model_id
    if finish_reason is not None:
        attributes["gen_ai.response.finish_reasons"] = [finish_reason]
    return attributes


def client_trace(headers: Mapping[str, str]) -> dict[str, str] | None:
    """The W3C trace context a client sent (`traceparent`, `tracestate`), to parent the
    task's trace; None when tracing is off or the client sent none."""
    if not tracing.enabled():
        return None
    parent = headers.get("traceparent")
    if parent is None:
        return None
    carrier = {"traceparent": parent}
    state = headers.get("tracestate")
    if state:
        carrier["tracestate"] = state
    return carrier


class JobTrace:
    """The live spans of one task. Not thread-safe; lives on the orchestrator's loop."""

    __slots__ = (
        "_admission",
        "_dispatch",
        "_inside",
        "_queued_ns",
        "_root",
        "task_id",
        "trace_id",
    )

    def __init__(self, spec: TaskSpec, client: Mapping[str, str] | None) -> None:
        self.task_id = spec.task_id
        self._root = tracing.start_span(
            "task",
            kind=tracing.SpanKind.SERVER,
            parent=tracing.extract(client),
            attributes={
                "llorch.task_id": spec.task_id,
                "llorch.model": spec.model,
                "llorch.priority": spec.priority,
                **gen_ai_request(spec),
            },
        )
        self._inside = tracing.context_with(self._root)
        self._admission = tracing.start_span("admission", parent=self._inside)
        self._dispatch: tracing.Span | None = None
        self._queued_ns = 0
        self.trace_id = tracing.trace_id_of(self._root)

    def admitted(self, queue_position: int) -> None:
        self._admission.set_attribute("llorch.queue_position", queue_position)
        self._admission.end()
        self._queued_ns = time.time_ns()

    def rejected(self, code: str) -> None:
        """Admission refused the task: the trace ends here."""
        for span in (self._admission, self._root):
            span.set_attribute("llorch.error_code", code)
            span.set_status(tracing.StatusCode.ERROR, code)
        self._admission.end()
        self._root.add_event("end", {"llorch.state": "rejected"})
        self._root.end()

    def placed(self, pool_id: str, replica: int, attempt: int) -> contextvars.Context:
        """Placement decided: close `placement`, open `dispatch`, and return the context to
        run the attempt's task in (its current span is `dispatch`)."""
        where: dict[str, str | int] = {
            "llorch.pool_id": pool_id,
            "llorch.replica": replica,
            "llorch.attempt": attempt,
        }
        placement = tracing.start_span(
            "placement", parent=self._inside, attributes=where, start_ns=self._queued_ns or None
        )
        placement.end()
        self._dispatch = tracing.start_span("dispatch", parent=self._inside, attributes=where)
        return tracing.task_context(self._dispatch)

    def attempt_ended(self, outcome: StreamEvent | None) -> None:
        """The attempt's engine call is over; a retry's placement starts counting now."""
        dispatch, self._dispatch = self._dispatch, None
        self._queued_ns = time.time_ns()
        if dispatch is None:
            return
        if isinstance(outcome, Failed):
            dispatch.set_attribute("llorch.error_code", outcome.code)
            dispatch.set_status(tracing.StatusCode.ERROR, outcome.code)
        elif not isinstance(outcome, End):
            dispatch.set_attribute("llorch.outcome", "stopped before a terminal event")
        dispatch.end()

    def end(
        self,
        state: str,
        error_code: str | None,
        tokens: tuple[int, int],
        first_token_age_s: float | None,
        *,
        model_id: str | None = None,
        finish_reason: str | None = None,
    ) -> None:
        """The task reached its terminal `state`; `tokens` is (in, out) and
        `first_token_age_s` how long ago its first token arrived (None: no token);
        `model_id` the serving pool's model and `finish_reason` why generation stopped
        (None when it did not end by itself)."""
        now_ns = time.time_ns()
        if self._dispatch is not None:  # cancelled or timed out mid-attempt
            self._dispatch.end(now_ns)
            self._dispatch = None
        root = self._root
        root.set_attribute("llorch.state", state)
        root.set_attributes(gen_ai_response(self.task_id, tokens, model_id, finish_reason))
        if error_code is not None:
            root.set_attribute("llorch.error_code", error_code)
            root.set_status(tracing.StatusCode.ERROR, error_code)
        if first_token_age_s is not None:
            root.add_event("first_token", timestamp=now_ns - int(first_token_age_s * 1e9))
        root.add_event("end", {"llorch.state": state}, timestamp=now_ns)
        root.end(now_ns)
