"""`llorch logs POOL [-f]` and `llorch stop POOL` (CLI-03): a pool's engine log, and
stopping a pool, on any host of the fleet (through the orchestrator; admin key).

`logs` prints the end of the pool's engine log (`GET /v2/pools/{id}/logs`, read on the
pool's host over the control link), narration lines as `time level text`, other lines
as they are (`--raw`: every line as written); `-f` follows it, asking again from
`next_offset` until Ctrl-C. `stop` drains the pool (no new work; running jobs may
finish within `--deadline-ms`, default 10000), then its engines stop; it waits until
the pool reports `stopped` (`--no-wait`: it does not). `llorch pools undrain POOL`
starts it again. Exit codes: 0, 1 refused (e.g. FORBIDDEN, NOT_FOUND), 3 unreachable,
130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from llorch import exits
from llorch.api_key import connection_options
from llorch.client import call, guarded
from llorch.daemons import record_of

__all__ = ["add_parsers", "human_log_line"]

_FOLLOW_POLL_S = 0.5
_STOP_MARGIN_S = 60.0


def add_parsers(commands: Any) -> None:
    logs = commands.add_parser("logs", help="print (and follow) a pool's engine log")
    connection_options(logs)
    logs.add_argument("pool")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--replica", type=int, default=0, help="which replica (default 0)")
    logs.add_argument("--bytes", type=int, default=8192, help="how much of the end (default 8192)")
    logs.add_argument("--raw", action="store_true", help="print lines exactly as written")
    logs.set_defaults(handler=guarded(_logs))
    stop = commands.add_parser("stop", help="stop a pool (drain, then stop its engines)")
    connection_options(stop)
    stop.add_argument("pool")
    stop.add_argument(
        "--deadline-ms", type=int, default=10_000, help="running jobs may finish until then"
    )
    stop.add_argument("--no-wait", action="store_true", help="do not wait for the stop")
    stop.set_defaults(handler=guarded(_stop))


def human_log_line(line: str) -> str:
    """A narration line (JSON) as `time level text`; any other line as it is (pure)."""
    record = record_of(line)
    if set(record) == {"human"}:
        return line
    when = str(record.get("ts", record.get("time", "")))
    level = str(record.get("level", ""))
    text = str(record.get("human", record.get("msg", line)))
    return " ".join(part for part in (when, level, text) if part)


def _print_chunk(text: str, raw: bool) -> None:
    for line in text.splitlines():
        print(line if raw else human_log_line(line), flush=True)


def _logs(args: argparse.Namespace) -> int:
    if args.bytes < 1:
        print("llorch logs: --bytes must be positive", file=sys.stderr)
        return exits.USAGE
    path = f"/v2/pools/{args.pool}/logs"
    params: dict[str, Any] = {"replica": args.replica, "offset": -args.bytes}
    chunk = call(args, "GET", path, params=params)
    _print_chunk(chunk["text"], args.raw)
    while args.follow:
        time.sleep(_FOLLOW_POLL_S)
        params["offset"] = chunk["next_offset"]
        chunk = call(args, "GET", path, params=params)
        _print_chunk(chunk["text"], args.raw)
    return exits.OK


def _stop(args: argparse.Namespace) -> int:
    if args.deadline_ms < 0:
        print("llorch stop: --deadline-ms must not be negative", file=sys.stderr)
        return exits.USAGE
    call(args, "POST", f"/v2/pools/{args.pool}/drain", {"deadline_ms": args.deadline_ms})
    if args.no_wait:
        print(f"{args.pool}: stopping")
        return exits.OK
    deadline = time.monotonic() + args.deadline_ms / 1000 + _STOP_MARGIN_S
    state = ""
    while time.monotonic() < deadline:
        state = str(call(args, "GET", f"/v2/pools/{args.pool}")["state"])
        if state == "stopped":
            print(f"{args.pool}: stopped (start it again: llorch pools undrain {args.pool})")
            return exits.OK
        time.sleep(0.2)
    print(f"llorch: {args.pool} did not stop in time (state {state})", file=sys.stderr)
    return exits.FAILED
