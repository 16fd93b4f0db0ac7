"""`History`: the chaos run's append-only record, one JSON object per line.

Every line has `type`, `mono` (seconds of `time.monotonic()`, for order and intervals)
and `wall` (Unix seconds, for reading beside the daemons' logs). The load generator
writes requests, responses, stream events and reader moves; the nemesis writes faults;
the run writes its setup, the schedule and the final read phase. The checker reads this
file and nothing else.

Line types and their fields (besides `type`, `mono`, `wall`):

| type       | fields                                                                     |
|------------|----------------------------------------------------------------------------|
| `setup`    | `seed`, `hosts` {host: [pool ids]}, `schedule` [fault plans]               |
| `request`  | `req` (unique), `job` (client job key), `op`, `idem` (key or null),        |
|            | `digest` (body sha256), `probe` (true: a deliberate key reuse), `after_id`  |
| `response` | `req`, `status` (HTTP, null: no answer), `error` (why no answer), `code`,  |
|            | `task_id`                                                                  |
| `event`    | `req`, `task_id`, `id`, `name`, `i`, `t` (token), `state`, `code` (terminal)|
| `read_end` | `req`, `task_id`, `why` (`terminal`, `left`, `broken: ...`, `eof`)         |
| `fault`    | `kind`, `target`, `host`, `pool`, `pid`, `start`, `end` (monotonic), `note` |
| `final`    | `task_id`, `status` (HTTP), `state`, `code`, `pool`                        |
| `phase`    | `name` (`load`, `quiesce`, `final`, `done`)                               |

Ops: `submit` (POST /v2/tasks, 202), `stream_v2` (POST /v2/tasks with
`Accept: text/event-stream`), `chat` / `completion` (`/v1/...` with `stream: true`),
`events` (GET /v2/tasks/{id}/events, `after_id` for Last-Event-ID), `replay` (the final
phase's read from the start).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["History", "read_history"]


class History:
    """Thread-safe appender; each record is flushed as one line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._next_req = 0

    def record(self, type_: str, **fields: Any) -> dict[str, Any]:
        line = {"type": type_, "mono": time.monotonic(), "wall": time.time(), **fields}
        text = json.dumps(line, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._file.write(text + "\n")
            self._file.flush()
        return line

    def new_request_id(self) -> int:
        with self._lock:
            self._next_req += 1
            return self._next_req

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_history(path: Path) -> list[dict[str, Any]]:
    """Every record of a history file, in file order."""
    return list(_lines(path))


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as file:
        for line in file:
            if line.strip():
                yield json.loads(line)
