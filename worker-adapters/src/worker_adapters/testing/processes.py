"""`EngineProcess`: an engine process started for a test (test support, not the supervisor).

Starts `llorch worker` (`python -m worker_adapters.worker`), llama-server or
llama_cpp.server on loopback, waits until it reports its port (the worker's port file)
or accepts TCP connections (readiness beyond that is the adapter's `health()`), and
can kill (SIGKILL), pause (SIGSTOP) and stop it, so conformance tests can disrupt a
real engine mid-stream. Blocking: call `start_*` from a sync fixture or through
`asyncio.to_thread`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["EngineProcess", "free_port"]

_START_TIMEOUT_S = 120.0
_POLL_S = 0.02


def free_port() -> int:
    """A loopback port nothing listens on right now (for engines that need one given)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EngineProcess:
    def __init__(self, process: subprocess.Popen[bytes], address: str, log: Path) -> None:
        self.process = process
        self.address = address
        self.log = log

    @classmethod
    def start_worker(cls, root: Path, *args: str, api_key: str = "") -> EngineProcess:
        """`llorch worker` with `args` (e.g. `--engine mock`); ready when it has a port."""
        root.mkdir(parents=True, exist_ok=True)
        port_file = root / f"port-{time.monotonic_ns()}"
        argv = [sys.executable, "-m", "worker_adapters.worker", "--port-file", str(port_file)]
        env = {**os.environ, "LLORCH_WORKER_API_KEY": api_key} if api_key else None
        log = root / f"{port_file.name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen([*argv, *args], env=env, stderr=sink)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"worker did not start: {log.read_text()[-2000:]}")
            time.sleep(_POLL_S)  # the file appearing is the event; there is no other signal
        return cls(process, f"127.0.0.1:{port_file.read_text().strip()}", log)

    @classmethod
    def start_http(
        cls, argv: list[str], port: int, root: Path, env: dict[str, str] | None = None
    ) -> EngineProcess:
        """An HTTP engine listening on `port`; returns once the port accepts connections."""
        root.mkdir(parents=True, exist_ok=True)
        log = root / f"engine-{port}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(argv, stdout=sink, stderr=sink, env=env)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _accepts(port):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"engine did not start: {log.read_text()[-2000:]}")
            time.sleep(_POLL_S * 5)
        return cls(process, f"127.0.0.1:{port}", log)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
