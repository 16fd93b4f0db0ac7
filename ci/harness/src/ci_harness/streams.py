"""`BackgroundStream`: read one task's SSE stream on a thread while the test acts.

The test starts it, waits for a fact of the stream (`wait_tokens(n)`: n token events
arrived), does something to the system (kill an engine, reload a pool, cancel), then
`result()` joins the reader and returns every event. Every wait is bounded.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

import httpx

from ci_harness.cluster import Cluster, Event, parse_events

__all__ = ["BackgroundStream"]


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
