"""Engine processes: spawn in their own process group, stop with a grace, read logs.

The only module of pool-managerd that starts or signals processes (STYLE rule 6).
Each process is the leader of a new session, so a signal to its process group reaches
everything it started and no engine outlives the pool manager (POOL-07); when the
leader exits, `reap_group` kills what it left behind (Triton's server under its
PyTriton script). Output goes to a per-replica log file (POOL-06), rotated when larger
than `LOG_ROTATE_BYTES`, keeping `LOG_KEEP` old files: at start by renaming
(`rotate_log`), and while the engine runs by copy-then-truncate (`trim_log`; the engine
writes with O_APPEND, so after the truncation its next line lands at the new start).
`log_tail` returns the last lines for `last_error`; `read_log` a chunk of a log from a byte
offset, for `llorch logs POOL [-f]` (the `TailLog` command).

Process facts for recovery (`recovery.py`): `process_facts` reads one process from
/proc (its group, session, start time in clock ticks, command line), `scan_processes`
reads them all, `boot_id` names this boot; `stop_group` stops a process group that is
not our child (a previous pool manager's engine), waiting on /proc.

Engine containers (`container_launch.py`): `remove_container` (`RUNTIME rm -f NAME`) and
`list_containers` (by label), each bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from pool_managerd.recovery import ProcessFacts

__all__ = [
    "EngineProcess",
    "boot_id",
    "list_containers",
    "log_needs_trim",
    "log_tail",
    "process_facts",
    "read_log",
    "remove_container",
    "rotate_log",
    "scan_processes",
    "stop_group",
    "trim_log",
]

LOG_ROTATE_BYTES = 10 << 20
LOG_KEEP = 3


def _too_small(path: Path, limit_bytes: int) -> bool:
    try:
        return path.stat().st_size < limit_bytes
    except OSError:
        return True


def _shift_old_logs(path: Path) -> Path:
    """Move `.1`..`.N-1` one up (the oldest falls off); returns the free `.1` path."""
    for index in range(LOG_KEEP - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{index + 1}"))
    return path.with_name(f"{path.name}.1")


def log_needs_trim(path: Path, limit_bytes: int = LOG_ROTATE_BYTES) -> bool:
    """Whether a log is past its size limit (one stat: cheap enough for the event loop)."""
    return not _too_small(path, limit_bytes)


def rotate_log(path: Path, limit_bytes: int = LOG_ROTATE_BYTES) -> None:
    """Before a start: rename a log past `limit_bytes` to `.1` (nobody writes it now)."""
    if not _too_small(path, limit_bytes):
        path.replace(_shift_old_logs(path))


def trim_log(path: Path, limit_bytes: int = LOG_ROTATE_BYTES) -> bool:
    """While an engine writes the log: copy it to `.1` and truncate it, when it is past
    `limit_bytes`. Blocking file I/O of up to `limit_bytes`; returns whether it rotated.
    Lines the engine writes between the copy and the truncation are lost (logrotate's
    copytruncate trade-off; the engine's file descriptor cannot be swapped from here)."""
    if _too_small(path, limit_bytes):
        return False
    shutil.copyfile(path, _shift_old_logs(path))
    with path.open("r+b") as handle:
        handle.truncate(0)
    return True


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

    def reap_group(self) -> None:
        """SIGKILL whatever is left of the process group once its leader has exited."""
        self.signal_group(signal.SIGKILL)

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


# -- processes of a previous pool manager (recovery) -----------------------------------

_PROC = Path("/proc")
_GONE_POLL_S = 0.05


def boot_id() -> str:
    """This boot's id (a pid and a start time mean something only within one boot)."""
    return (_PROC / "sys/kernel/random/boot_id").read_text().strip()


def process_facts(pid: int) -> ProcessFacts | None:
    """One process as /proc shows it; None when it is gone or a zombie. Blocking reads
    of two small files."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        raw_cmdline = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces and parentheses): state is
    # field 3, pgrp 5, session 6, starttime 22 (proc(5)).
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    cmdline = tuple(part.decode(errors="replace") for part in raw_cmdline.split(b"\0")[:-1])
    return ProcessFacts(pid, int(fields[2]), int(fields[3]), int(fields[19]), cmdline)


def scan_processes() -> dict[int, ProcessFacts]:
    """Every live process of the machine, by pid (blocking: reads /proc)."""
    found = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            facts = process_facts(int(entry.name))
            if facts is not None:
                found[facts.pid] = facts
    return found


def _alive(pids: Sequence[int], starts: Mapping[int, int]) -> list[int]:
    """Those of `pids` still running as the process first seen (same start time)."""
    alive = []
    for pid in pids:
        facts = process_facts(pid)
        if facts is not None and facts.start_ticks == starts[pid]:
            alive.append(pid)
    return alive


async def _wait_gone(pids: Sequence[int], starts: Mapping[int, int], timeout_s: float) -> bool:
    """Whether all of `pids` are gone within `timeout_s`. They are not our children, so
    no wait(2): poll /proc (the process's exit is only visible there)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while _alive(pids, starts):
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(_GONE_POLL_S)
    return True


async def stop_group(pgid: int, pids: Sequence[int], grace_s: float) -> bool:
    """SIGTERM process group `pgid`, wait up to `grace_s` for `pids` to be gone, then
    SIGKILL it and wait again (5 s). Returns whether they are all gone."""
    starts = {pid: f.start_ticks for pid in pids if (f := process_facts(pid)) is not None}
    left = [pid for pid in pids if pid in starts]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    if await _wait_gone(left, starts, grace_s):
        return True
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    return await _wait_gone(left, starts, 5.0)


def read_log(path: Path, offset: int, max_bytes: int) -> tuple[str, int, int]:
    """(text, next offset, size) of a log from byte `offset` (negative: the last
    `-offset` bytes), at most `max_bytes`, cut after the last complete line when the
    chunk is full. An offset past the end (the log was rotated or trimmed since) reads
    from the start again. A missing file reads as empty. Blocking file I/O."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size + offset) if offset < 0 else (offset if offset <= size else 0)
            handle.seek(start)
            data = handle.read(max(0, max_bytes))
    except OSError:
        return "", 0, 0
    if start + len(data) < size and b"\n" in data:
        data = data[: data.rfind(b"\n") + 1]
    return data.decode("utf-8", errors="replace"), start + len(data), size


# -- engine containers (container mode) ------------------------------------------------

_CONTAINER_CMD_S = 20.0


async def _runtime(argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
    """Run a container runtime command; (exit code, output). (-1, why) when the runtime
    cannot be run or does not answer within `timeout_s` (then it is killed)."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        return -1, str(exc)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return -1, f"{argv[0]} {argv[1]} did not answer within {timeout_s:.0f} s"
    return int(process.returncode or 0), output.decode(errors="replace").strip()


async def remove_container(runtime: str, name: str, timeout_s: float = _CONTAINER_CMD_S) -> str:
    """`RUNTIME rm -f NAME` (stops and removes it; killing the runtime's client does not
    stop its container). "" when it is gone (or never was), else why not."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    code, output = await _runtime([runtime, "rm", "-f", name], timeout_s)
    if code == 0 or "no such container" in output.lower():
        return ""
    if "already in progress" in output:  # `--rm` is removing it: wait until it is gone
        while asyncio.get_running_loop().time() < deadline:
            left = deadline - asyncio.get_running_loop().time()
            code, _ = await _runtime([runtime, "container", "inspect", name], max(1.0, left))
            if code != 0:
                return ""
            await asyncio.sleep(_GONE_POLL_S)
    return output or f"{runtime} rm -f {name} exited {code}"


async def list_containers(
    runtime: str, label: str, timeout_s: float = _CONTAINER_CMD_S
) -> tuple[list[str], str]:
    """(names of the containers, running or not, labelled `label` (KEY=VALUE), error)."""
    code, output = await _runtime(
        [runtime, "ps", "--all", "--filter", f"label={label}", "--format", "{{.Names}}"],
        timeout_s,
    )
    if code != 0:
        return [], output or f"{runtime} ps exited {code}"
    return [line.strip() for line in output.splitlines() if line.strip()], ""
