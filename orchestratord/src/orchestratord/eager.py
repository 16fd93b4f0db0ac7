"""`start_eagerly`: a task whose coroutine runs at once, up to its first suspension, in
the caller's step, then goes on as an ordinary task (Python 3.12's eager tasks).

Why: an attempt's first steps write the engine request (a pooled keep-alive connection:
no suspension before the write). Created as an ordinary task, the attempt waits behind
every callback and task already ready: when 32 requests arrive together (32 streams of
equal length end on the same decode step, and their clients send again at once) each
attempt waited behind the other requests' intake, and the engine requests went out in
clumps ~10 ms late (`bench/gpu_trace.py` on an H100, c=32: bench/README.md).

On 3.12+ this is `asyncio.eager_task_factory`. On 3.11 it is emulated: the task is
created first (so that `asyncio.current_task()`, and every `asyncio.timeout` entered in
the first step, is the new task), the coroutine's first step runs as that task, and the
task then takes the coroutine over: what it waits on goes up to the task as if yielded
there, and from the task's next step on it runs the coroutine natively (`yield from`: no
cost per step). A cancel of the task before it ever ran is thrown into the coroutine.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["start_eagerly"]

T = TypeVar("T")


def start_eagerly(
    coro: Coroutine[Any, Any, T], *, context: contextvars.Context | None = None
) -> asyncio.Task[T]:
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        return asyncio.eager_task_factory(loop, coro, context=context)
    ctx = context if context is not None else contextvars.copy_context()
    eager = _Eager(coro)
    driver = eager.drive()
    driver.send(None)  # to its first `_suspend()`: a cancel before the task runs lands there
    task = loop.create_task(driver, context=ctx)
    current = asyncio.current_task(loop)
    if current is not None:
        asyncio.tasks._leave_task(loop, current)
    asyncio.tasks._enter_task(loop, task)
    try:
        ctx.run(eager.first_step)
    finally:
        asyncio.tasks._leave_task(loop, task)
        if current is not None:
            asyncio.tasks._enter_task(loop, current)
    return task


@types.coroutine
def _suspend() -> Generator[None, None, None]:
    """A bare yield: the task resumes at its next step (as `asyncio.sleep(0)`)."""
    yield


@types.coroutine
def _hand_over(
    coro: Coroutine[Any, Any, Any], waited: Any, pending: BaseException | None
) -> Generator[Any, None, Any]:
    """Hands the coroutine, suspended on `waited`, to the task that runs this: `waited`
    goes up to the task as if the coroutine had yielded it there (the task waits for the
    future, or comes back at its next step for a bare yield); once the task resumes,
    `yield from` delegates natively, the coroutine's yields and the task's throws
    included. `pending`: a cancel thrown into the task before it ever ran."""
    while True:
        if pending is not None:
            error, pending = pending, None
            try:
                waited = coro.throw(error)
            except StopIteration as stop:
                return stop.value
        try:
            yield waited
        except BaseException as exc:  # noqa: BLE001 - thrown in by the task: its cancel
            pending = exc
            continue
        break
    return (yield from coro)  # a native coroutine, from a generator-based one


class _Eager:
    __slots__ = ("_coro", "_done", "_error", "_value", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._yielded: Any = None
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def first_step(self) -> None:
        try:
            self._yielded = self._coro.send(None)
        except StopIteration as stop:
            self._done, self._value = True, stop.value
        except BaseException as exc:  # noqa: BLE001 - raised by the task, to its awaiter
            self._done, self._error = True, exc

    async def drive(self) -> Any:
        pending: BaseException | None = None
        try:
            await _suspend()  # the task's first step resumes here
        except asyncio.CancelledError as exc:  # cancelled before it ever ran
            pending = exc
        if self._done:
            error, self._error = self._error, None
            if error is not None:
                raise error
            return self._value
        return await _hand_over(self._coro, self._yielded, pending)
