"""`GET /v2/tasks`: the jobs the orchestrator holds in memory (`llorch ps`).

Running and queued jobs first (oldest first), then the recently ended ones the task
table still keeps (`finished_tasks_kept`: 1,000 with the journal, 10,000 without, most
recent first), each as `task_summary`.
`state=` filters (one state, or several comma-separated), `limit=` bounds the count
(1-1000, default 100). A client key sees only the jobs it submitted; an admin key, or
anyone when no keys are configured (loopback), sees all of them (`viewer.Viewer`, the
rule of every job route). `listing_query` parses
the query (INVALID_PARAMS naming the parameter), `visible_tasks` decides; both pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import get_args

from orchestratord.errors import ApiError, Detail
from orchestratord.http.body import query_integer
from orchestratord.http.viewer import Viewer
from orchestratord.tasks import TaskRecord, TaskState

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "ListingQuery", "listing_query", "visible_tasks"]

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
_STATES: tuple[str, ...] = get_args(TaskState)


@dataclass(frozen=True, slots=True)
class ListingQuery:
    states: frozenset[str]  # empty: every state
    limit: int


def _invalid(field: str, reason: str) -> ApiError:
    return ApiError("INVALID_PARAMS", f"{field}: {reason}", details=[Detail(reason, field=field)])


def listing_query(params: Mapping[str, str]) -> ListingQuery:
    unknown = sorted(set(params) - {"state", "limit"})
    if unknown:
        raise _invalid(unknown[0], "unknown query parameter (expected state, limit)")
    if len(params.get("state", "")) > 64:
        raise _invalid("state", "longer than 64 characters")
    if "state" in params and not params["state"].strip():
        raise _invalid("state", f"empty; name one or more of {', '.join(_STATES)}")
    states = frozenset(s.strip() for s in params.get("state", "").split(",") if s.strip())
    wrong = sorted(states - set(_STATES))
    if wrong:
        raise _invalid("state", f"{wrong[0]!r} is not one of {', '.join(_STATES)}")
    limit = query_integer(params.get("limit", str(DEFAULT_LIMIT)))
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise _invalid("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return ListingQuery(states, limit)


def visible_tasks(
    live: Iterable[TaskRecord],
    finished: Iterable[TaskRecord],
    query: ListingQuery,
    viewer: Viewer,
) -> list[TaskRecord]:
    """The jobs `viewer` may see, in order."""
    ordered = [*sorted(live, key=lambda r: r.created_mono), *finished]
    shown = [
        record
        for record in ordered
        if viewer.sees(record) and (not query.states or record.shown_state in query.states)
    ]
    return shown[: query.limit]
