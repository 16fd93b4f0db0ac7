"""The one place the engine provisioner starts processes (STYLE rule 6).

- `stream(argv, ...)` runs a long command (cmake, pip, uv, git, a pull), hands every
  output line (stdout and stderr merged) to `on_line` as it arrives, appends it to a
  log file, and keeps the last lines for the error message. Cancelling the awaiting
  task kills the command's whole process group (a build's compilers included).
- `capture(argv, ...)` runs a short probe (`--version`, `--help`, `info`) with a time
  limit and returns its exit status and output.

`env` is added to this process's environment; a None value removes that variable.

A program that is not there raises `EngineToolMissing` naming it; nothing else is
interpreted here: callers decide what an exit status means.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioners.errors import EngineToolMissing

__all__ = ["CommandResult", "capture", "stream"]

_TAIL_LINES = 40
_READ_LIMIT_BYTES = 1 << 20  # one output line may be long (a compiler's command line)


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    output: str  # `capture`: all of it; `stream`: the last lines

    @property
    def ok(self) -> bool:
        return self.returncode == 0


async def stream(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str | None] | None = None,
    log_path: Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> CommandResult:
    """Run `argv` to its end, line by line (see module doc). Blocks only the task."""
    process = await _start(argv, cwd, env)
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    log = await asyncio.to_thread(_open_log, log_path)
    try:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            tail.append(line)
            if log is not None:
                log.write(line + "\n")
            if on_line is not None:
                on_line(line)
        returncode = await process.wait()
    except BaseException:
        await _kill(process)
        raise
    finally:
        if log is not None:
            log.close()
    return CommandResult(returncode, "\n".join(tail))


async def capture(
    argv: Sequence[str],
    *,
    timeout_s: float = 30.0,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
) -> CommandResult:
    """Run a short command and return all its output; past `timeout_s` it is killed."""
    process = await _start(argv, cwd, env)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        await _kill(process)
        return CommandResult(-1, f"{argv[0]} did not finish within {timeout_s:.0f} s")
    except BaseException:
        await _kill(process)
        raise
    return CommandResult(process.returncode or 0, output.decode(errors="replace"))


async def _start(
    argv: Sequence[str], cwd: Path | None, env: Mapping[str, str | None] | None
) -> asyncio.subprocess.Process:
    full_env = None
    if env is not None:  # added to ours; a None value removes the variable
        full_env = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
        for name in [k for k, v in env.items() if v is None]:
            full_env.pop(name, None)
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a cancel kills all of it
            limit=_READ_LIMIT_BYTES,
        )
    except FileNotFoundError as exc:
        raise EngineToolMissing(argv[0], f"{argv[0]} is not installed or not on PATH") from exc
    except PermissionError as exc:
        raise EngineToolMissing(argv[0], f"{argv[0]} is not executable") from exc


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await asyncio.shield(process.wait())


def _open_log(path: Path | None) -> _LineLog | None:
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return _LineLog(path)


class _LineLog:
    """An append-only log file written line by line (flushed by the OS; no fsync)."""

    def __init__(self, path: Path) -> None:
        self._handle = path.open("a", encoding="utf-8")

    def write(self, text: str) -> None:
        self._handle.write(text)

    def close(self) -> None:
        self._handle.close()
