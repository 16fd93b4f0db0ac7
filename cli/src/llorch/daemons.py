"""What `llorch up` and `llorch join` share about the daemons they run in the foreground:
stopping them, and reading their logs (JSON narration lines, `specs.narration`, mixed
with whatever a daemon printed to stderr before logging started).

`LogTail` reads the lines a daemon appended since it was opened, one complete line at a
time; `problem_line` is the human text of a log line when it says something went wrong
(an error or warning, or a plain line such as a traceback's last); `last_problem` is the
latest such line of a log, what an operator wants to see when a daemon failed. The
daemons never log secrets, so these lines may be shown as they are.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LogTail", "last_problem", "problem_line", "record_of", "stop"]

_PROBLEM_LEVELS = frozenset({"warning", "error", "critical"})
_GRPC_INFO = re.compile(r"^I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]")


def stop(children: list[subprocess.Popen[bytes]], timeout_s: float = 30.0) -> list[int]:
    """SIGTERM each child in order and wait for it (SIGKILL after `timeout_s`); the exit
    codes. Pool managers go first: each stops its engines before it exits."""
    codes = []
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        codes.append(child.returncode)
    return codes


def record_of(line: str) -> dict[str, Any]:
    """A log line as a narration record; a plain line becomes {"human": line}."""
    try:
        loaded = json.loads(line)
    except ValueError:
        return {"human": line}
    return loaded if isinstance(loaded, dict) else {"human": line}


def problem_line(line: str) -> str:
    """The text of a line that reports a problem ("" for an info line or a blank one).
    gRPC's own lines (`I1206 19:48:54.769365 10918 file.cc:2563] ...`) count from
    warnings on, as narration does."""
    record = record_of(line.strip())
    text = str(record.get("human", "")).strip()
    if "level" in record and str(record["level"]) not in _PROBLEM_LEVELS:
        return ""
    if _GRPC_INFO.match(text):
        return ""
    return text


def last_problem(log: Path, since: int = 0) -> str:
    """The last problem line of a log, from byte `since` on ("" when there is none)."""
    try:
        with log.open("rb") as stream:
            stream.seek(since)
            text = stream.read().decode(errors="replace")
    except OSError:
        return ""
    found = [problem for line in text.splitlines() if (problem := problem_line(line))]
    return found[-1] if found else ""


@dataclass
class LogTail:
    """New complete lines of a log file since `offset` (a byte position)."""

    path: Path
    offset: int = 0

    @classmethod
    def at_end(cls, path: Path) -> LogTail:
        return cls(path, path.stat().st_size if path.exists() else 0)

    def read(self) -> list[str]:
        try:
            with self.path.open("rb") as stream:
                stream.seek(self.offset)
                chunk = stream.read()
        except OSError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        return complete.decode(errors="replace").splitlines()
