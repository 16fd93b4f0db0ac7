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

import json
import logging
import os
import sys
import time

__all__ = ["JsonFormatter", "PrettyFormatter", "configure_logging"]

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


def configure_logging(actor: str, level: str = "INFO") -> None:
    # Neither format reads the caller, thread or process of a record: skip collecting
    # them (the logging HOWTO's "Optimization"; ~30 % of a narration line's cost, and
    # every task writes several).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    pretty = os.environ.get("LLORCH_LOG_FORMAT", "json").lower() == "pretty"
    handler.setFormatter(PrettyFormatter(actor) if pretty else JsonFormatter(actor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
