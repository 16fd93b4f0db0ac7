"""Engine processes: spawn in their own process group, stop with a grace, read logs.

The only module of pool-managerd that starts or signals processes (STYLE rule 6).
Each process is the leader of a new session, so a signal to its process group reaches
everything it started and no engine outlives the pool manager (POOL-07). Output goes
to a per-replica log file, rotated at start when larger than `LOG_ROTATE_BYTES`
(keeping `LOG_KEEP` old files); `log_tail` returns the last lines for `last_error`
(POOL-06).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

__all__ = ["EngineProcess", "log_tail", "rotate_log"]

LOG_ROTATE_BYTES = 10 << 20
LOG_KEEP = 3


def rotate_log(path: Path) -> None:
    if not path.exists() or path.stat().st_size < LOG_ROTATE_BYTES:
        return
    for index in range(LOG_KEEP - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{index + 1}"))
    path.replace(path.with_name(f"{path.name}.1"))


def log_tail(path: Path, lines: int = 12, max_bytes: int = 8192) -> str:
    """The last lines of a log file, joined with ' | ' (empty if there is no file)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in data.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)


class EngineProcess:
    """One running engine process (a process-group leader)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    async def spawn(
        cls, command: Sequence[str], *, env: Mapping[str, str], log_path: Path, cwd: Path
    ) -> EngineProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        rotate_log(log_path)
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        return cls(process)

    def memory_bytes(self) -> int:
        """Resident set size of the process tree, in bytes (what it really took)."""
        try:
            root = psutil.Process(self._process.pid)
            tree = [root, *root.children(recursive=True)]
            return sum(p.memory_info().rss for p in tree)
        except psutil.Error:
            return 0

    async def wait(self) -> int:
        return await self._process.wait()

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, sig)

    async def stop(self, grace_s: float) -> int:
        """SIGTERM the group, wait up to `grace_s`, then SIGKILL it. Returns the exit code."""
        if self._process.returncode is None:
            self.signal_group(signal.SIGTERM)
            try:
                return await asyncio.wait_for(self._process.wait(), grace_s)
            except TimeoutError:
                pass
        self.signal_group(signal.SIGKILL)  # also reaps children of an exited leader
        return await self._process.wait()
