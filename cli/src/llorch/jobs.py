"""`llorch ps` and `llorch cancel` (CLI-03, CLI-05): the jobs the orchestrator holds.

    llorch ps [-a] [--state S[,S]] [--limit N] [--json]
    llorch cancel ID [ID ...]

`ps` lists running and queued jobs (`GET /v2/tasks?state=queued,running`); `-a` adds the
recently ended ones the orchestrator still keeps. A client key sees its own jobs, an
admin key every job. `cancel` ends jobs (`POST /v2/tasks/{id}/cancel`): an unknown id
is an error (exit 1, NOT_FOUND), an ended job is left as it is; it prints each job's
state once the cancellation took. Exit codes: 0, 1 refused or unknown, 3 unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from llorch import exits
from llorch.api_key import connection_options
from llorch.catalog import table
from llorch.client import Refused, call, guarded

__all__ = ["add_parsers", "format_jobs"]

_CANCEL_WAIT_S = 10.0
_ENDED = frozenset({"completed", "failed", "cancelled"})


def add_parsers(commands: Any) -> None:
    ps = commands.add_parser("ps", help="list running and queued jobs")
    connection_options(ps)
    ps.add_argument("-a", "--all", action="store_true", help="also recently ended jobs")
    ps.add_argument("--state", help="only these states (comma-separated)")
    ps.add_argument("--limit", type=int, default=100, help="at most N jobs (1-1000)")
    ps.add_argument("--json", action="store_true", help="print the jobs as JSON")
    ps.set_defaults(handler=guarded(_ps))
    cancel = commands.add_parser("cancel", help="cancel jobs by id")
    connection_options(cancel)
    cancel.add_argument("task_ids", nargs="+", metavar="ID")
    cancel.set_defaults(handler=guarded(_cancel))


def _age(ms: int | None, now_ms: int) -> str:
    if ms is None:
        return "-"
    seconds = max(0, now_ms - ms) // 1000
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"


def format_jobs(jobs: list[dict[str, Any]], now_ms: int) -> str:
    """The `ps` table: one line per job (pure)."""
    if not jobs:
        return "no jobs"
    rows = []
    for job in jobs:
        state = str(job["state"])
        if state == "queued" and job.get("queue_position") is not None:
            state = f"queued #{job['queue_position']}"
        if job.get("error_code") and job["state"] != "cancelled":
            state = f"{state} {job['error_code']}"
        rows.append(
            [
                str(job["task_id"]),
                state,
                str(job["model"]),
                str(job.get("pool_id") or "-"),
                f"{job['tokens_in']}/{job['tokens_out']}",
                _age(job.get("created_at_ms"), now_ms),
                str(job.get("owner") or "-"),
            ]
        )
    return table(["ID", "STATE", "MODEL", "POOL", "TOKENS IN/OUT", "AGE", "OWNER"], rows)


def _ps(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        print("llorch ps: --limit must be from 1 to 1000", file=sys.stderr)
        return exits.USAGE
    params: dict[str, Any] = {"limit": args.limit}
    if args.state:
        params["state"] = args.state
    elif not args.all:
        params["state"] = "queued,running"
    jobs = call(args, "GET", "/v2/tasks", params=params)["tasks"]
    print(json.dumps(jobs, indent=2) if args.json else format_jobs(jobs, int(time.time() * 1000)))
    return exits.OK


def _cancel(args: argparse.Namespace) -> int:
    code = exits.OK
    for task_id in args.task_ids:
        try:
            before = call(args, "GET", f"/v2/tasks/{task_id}")
        except Refused as exc:
            print(f"llorch: {task_id}: {exc}", file=sys.stderr)
            code = exits.FAILED
            continue
        if before["state"] in _ENDED:
            print(f"{task_id}: already {before['state']}")
            continue
        call(args, "POST", f"/v2/tasks/{task_id}/cancel")
        deadline = time.monotonic() + _CANCEL_WAIT_S
        state = before["state"]
        while state not in _ENDED and time.monotonic() < deadline:
            time.sleep(0.1)
            state = call(args, "GET", f"/v2/tasks/{task_id}")["state"]
        print(f"{task_id}: {state}")
        if state not in _ENDED:
            code = exits.FAILED
    return code
