"""The narration contract (OBS-02): every daemon logs JSON lines with the same fields.

One object per line: `ts`, `level`, `actor` (the daemon), `logger`, `human` (the
message, a short present-tense sentence) and, when given in `extra`, `action`,
`target` and the ids `correlation_id`, `task_id`, `session_id`, `pool_id`, `host_id`,
and `trace_id` when tracing is on (OBS-03).
Secrets are never passed to log calls.

`LLORCH_LOG_FORMAT=pretty` switches to a console format for humans:
`12:03:04.512 orchestratord place        [task 3f2a…] places task … on pool …`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from typing import TextIO

__all__ = ["DeferredLines", "JsonFormatter", "PrettyFormatter", "configure_logging"]

_IDS = (
    "correlation_id",
    "task_id",
    "session_id",
    "pool_id",
    "host_id",
    "trace_id",
    "action",
    "target",
)


class JsonFormatter(logging.Formatter):
    def __init__(self, actor: str) -> None:
        super().__init__()
        self._actor = actor
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # the date and time are formatted once a second
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        line: dict[str, object] = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "actor": self._actor,
            "logger": record.name,
            "human": record.getMessage(),
        }
        for key in _IDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


class PrettyFormatter(logging.Formatter):
    """One readable line per event, for a terminal."""

    def __init__(self, actor: str) -> None:
        super().__init__()
        self._actor = actor

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        action = str(getattr(record, "action", "") or record.levelname.lower())
        ids = [
            f"{key.removesuffix('_id')} {str(value)[:8]}"
            for key in ("task_id", "pool_id", "host_id")
            if (value := getattr(record, key, None))
        ]
        where = f"[{', '.join(ids)}] " if ids else ""
        line = (
            f"{clock}.{int(record.msecs):03d} {self._actor} {action:<14} {where}"
            f"{record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class DeferredLines(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that keeps info and debug lines logged on a running event loop
    for `defer_s`, then formats and writes them in one write.

    A request's narration (admission, placement, stream start) is logged on the way to
    the engine request and the first token: deferred, those lines cost the request's
    latency nothing, and the lines of many requests share one system call. Each record
    keeps the time it was logged. Warnings and errors, and every line logged outside an
    event loop, are written at once (after what was pending, so order is kept);
    `flush` (called by `logging.shutdown` at exit) writes what is pending."""

    def __init__(self, stream: TextIO, defer_s: float = 0.002) -> None:
        super().__init__(stream)
        self._defer_s = defer_s
        self._pending: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        loop = asyncio._get_running_loop()
        if loop is None or record.levelno >= logging.WARNING:
            self.flush()
            super().emit(record)
            return
        if not self._pending:
            loop.call_later(self._defer_s, self.flush)
        self._pending.append(record)

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            records, self._pending = self._pending, []
            if records:
                lines = []
                for record in records:
                    try:
                        lines.append(self.format(record) + self.terminator)
                    except Exception:  # noqa: BLE001 - logging's contract: report, go on
                        self.handleError(record)
                try:
                    self.stream.write("".join(lines))
                except Exception:  # noqa: BLE001 - logging's contract: report, go on
                    self.handleError(records[0])
            super().flush()


def configure_logging(actor: str, level: str = "INFO", *, defer_s: float = 0.0) -> None:
    """JSON lines (or the pretty format) on stderr; `defer_s` > 0 defers info lines
    logged on an event loop by that long (`DeferredLines`: the orchestrator's token
    path)."""
    # Neither format reads the caller, thread or process of a record: skip collecting
    # them (the logging HOWTO's "Optimization"; ~30 % of a narration line's cost, and
    # every task writes several).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = (
        DeferredLines(sys.stderr, defer_s) if defer_s > 0 else logging.StreamHandler(sys.stderr)
    )
    pretty = os.environ.get("LLORCH_LOG_FORMAT", "json").lower() == "pretty"
    handler.setFormatter(PrettyFormatter(actor) if pretty else JsonFormatter(actor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
