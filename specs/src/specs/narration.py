"""The narration contract (OBS-02): every daemon logs JSON lines with the same fields.

One object per line: `ts`, `level`, `actor` (the daemon), `logger`, `human` (the
message, a short present-tense sentence) and, when given in `extra`, `action`,
`target` and the ids `correlation_id`, `task_id`, `session_id`, `pool_id`, `host_id`.
Secrets are never passed to log calls.
"""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["JsonFormatter", "configure_logging"]

_IDS = ("correlation_id", "task_id", "session_id", "pool_id", "host_id", "action", "target")


class JsonFormatter(logging.Formatter):
    def __init__(self, actor: str) -> None:
        super().__init__()
        self._actor = actor

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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


def configure_logging(actor: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(actor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
