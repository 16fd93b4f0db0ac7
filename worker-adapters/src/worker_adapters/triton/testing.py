"""`TritonProcess`: a real Triton engine process started for a test (test support, not
the supervisor).

The engine program (`provisioners.engines.triton_llamacpp`, run by the managed venv's
python; build its argv with `provisioners.engines.triton_engine_argv`) starts
`tritonserver` and its Python-backend stubs as children, so the process is started in
a session of its own and signals go to the whole group: `kill` (SIGKILL: the engine and
the path to it vanish mid-answer), `pause` / `resume` (SIGSTOP / SIGCONT: a stall),
`stop` (SIGTERM, then SIGKILL after a grace). Its output goes to a log file;
`wait_ready` polls that file for the program's ready line. Blocking: call from a sync
fixture or through `asyncio.to_thread`. `health_until_ready` records what an adapter's
`health()` said while the engine started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from worker_adapters.errors import AdapterError
from worker_adapters.protocol import Adapter

__all__ = ["READY_MARKER", "TritonProcess", "health_until_ready"]

READY_MARKER = "TRITON_ENGINE_READY"
_FAILED_MARKER = "TRITON_ENGINE_FAILED"
_POLL_S = 0.1
_STOP_GRACE_S = 30.0


class TritonProcess:
    def __init__(self, argv: list[str], http_port: int, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.address = f"127.0.0.1:{http_port}"
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                argv, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Until the program prints its ready line; RuntimeError (with the log) if it
        exits or fails first, or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while READY_MARKER not in (text := self.output()):
            if _FAILED_MARKER in text or self.process.poll() is not None:
                raise RuntimeError(f"triton engine failed to start:\n{text[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"triton engine not ready in {timeout_s} s:\n{text[-4000:]}")
            time.sleep(_POLL_S)  # the log line is the only signal the program gives

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)
        self.process.wait(10)

    def pause(self) -> None:
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    def stop(self) -> int:
        """SIGTERM to the program (it stops Triton itself); SIGKILL to the group after
        the grace. Returns the program's exit code."""
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.kill()
        self._signal_group(signal.SIGKILL)  # stragglers of the group (orphaned stubs)
        return self.process.returncode


async def health_until_ready(adapter: Adapter, timeout_s: float = 180.0) -> list[str]:
    """Every `health()` state (or the refusal's error name) until `ready`; TimeoutError
    after `timeout_s`. Polled: a starting engine announces nothing."""
    states: list[str] = []

    async def poll() -> None:
        while not states or states[-1] != "ready":
            try:
                states.append((await adapter.health()).state)
            except AdapterError as exc:
                states.append(type(exc).__name__)
            await asyncio.sleep(_POLL_S)

    await asyncio.wait_for(poll(), timeout_s)
    return states
