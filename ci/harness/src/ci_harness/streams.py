"""Read one task's SSE stream in the background while the test acts.

The test starts a reader, waits for a fact of the stream (`wait_tokens(n)`: n token
events arrived), does something to the system (kill an engine, reload a pool, cancel),
then `result()` waits for the end and returns every event. Every wait is bounded.

`BackgroundStream` reads on a thread of the test process. `ProcessStream` reads in a
`curl` process into a file, for tests that time the system while a fast stream flows:
there a reader thread parsing hundreds of events a second holds the test process's GIL
for most of that time, and on a loaded machine what the test does meanwhile (send the
cancel, read a gauge) waits seconds for it. Seen with in-process vLLM at ~400 tokens/s
and the CPU contended: a cancel reached the orchestrator 6 s after the test sent it,
when the stream had already ended on its own; the engine's count dropped within 15 ms of
every cancel that arrived.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx

from ci_harness.cluster import Cluster, Event, parse_events, wait_for

__all__ = ["BackgroundStream", "ProcessStream"]


class BackgroundStream:
    def __init__(self, cluster: Cluster, task_id: str) -> None:
        self.task_id = task_id
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.ended_at: float | None = None  # time.monotonic() of the terminal event
        self._cluster = cluster
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True, name=f"sse-{task_id}")

    def __enter__(self) -> BackgroundStream:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._thread.join(timeout=60.0)

    def _read(self) -> None:
        try:
            with (
                self._cluster.client() as client,
                client.stream("GET", f"/v2/tasks/{self.task_id}/events") as response,
            ):
                for event in parse_events(response.iter_lines()):
                    with self._changed:
                        self.events.append(event)
                        if event.name in ("end", "error"):
                            self.ended_at = time.monotonic()
                        self._changed.notify_all()
        except (httpx.HTTPError, AssertionError, ValueError) as exc:  # result() reports it
            self.error = exc
        finally:
            with self._changed:
                self._changed.notify_all()

    @property
    def tokens(self) -> int:
        with self._changed:
            return sum(1 for e in self.events if e.name == "token")

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait_tokens(self, count: int, timeout_s: float = 60.0) -> None:
        """Block until `count` token events arrived; AssertionError if the stream ended
        first or the time ran out."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while sum(1 for e in self.events if e.name == "token") < count:
                left = deadline - time.monotonic()
                ended = self.ended_at is not None or not self._thread.is_alive()
                assert not ended, f"the stream ended before {count} tokens: {self.events[-3:]}"
                assert left > 0, f"no {count} tokens within {timeout_s:.0f} s"
                self._changed.wait(left)

    def result(self, timeout_s: float = 120.0) -> list[Event]:
        """Every event of the stream, once it has ended."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"the stream did not end within {timeout_s:.0f} s"
        if self.error is not None:
            raise AssertionError(f"reading the stream failed: {self.error!r}")
        return list(self.events)


class ProcessStream:
    """One task's SSE stream read by `curl -N` into `path` (see the module's docstring).
    The same waits as `BackgroundStream`; `done` once curl has exited (the stream ended,
    or failed: `result()` says which)."""

    def __init__(self, cluster: Cluster, task_id: str, path: Path) -> None:
        self.task_id = task_id
        self.path = path
        headers = [
            arg for name, value in cluster.headers.items() for arg in ("-H", f"{name}: {value}")
        ]
        url = f"{cluster.url}/v2/tasks/{task_id}/events"
        self._command = ["curl", "-sS", "-N", "--fail", *headers, "-o", str(path), url]
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ProcessStream:
        self._process = subprocess.Popen(
            self._command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        process = self._started()
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30.0)
        if process.stderr is not None:
            process.stderr.close()

    def _started(self) -> subprocess.Popen[bytes]:
        assert self._process is not None, "ProcessStream used outside its with-block"
        return self._process

    @property
    def done(self) -> bool:
        return self._started().poll() is not None

    def events(self) -> list[Event]:
        """The events read so far: those whole in the file (an event ends with a blank
        line; curl may have written part of the next)."""
        text = self.path.read_text("utf-8") if self.path.exists() else ""
        whole = text[: text.rfind("\n\n") + 2] if "\n\n" in text else ""
        return list(parse_events(iter(whole.splitlines())))

    def wait_tokens(self, count: int, timeout_s: float = 60.0) -> None:
        """Until `count` token events arrived; AssertionError if the stream ended first
        or the time ran out."""

        def arrived() -> bool:
            ended = self.done
            if sum(1 for e in self.events() if e.name == "token") >= count:
                return True
            assert not ended, f"the stream ended before {count} tokens: {self.events()[-3:]}"
            return False

        wait_for(arrived, f"{count} tokens of task {self.task_id}", timeout_s)

    def result(self, timeout_s: float = 120.0) -> list[Event]:
        """Every event of the stream, once it has ended."""
        process = self._started()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"the stream did not end within {timeout_s:.0f} s") from exc
        if process.returncode != 0:
            reason = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise AssertionError(
                f"reading the stream failed: curl exit {process.returncode}: {reason}"
            )
        return self.events()
