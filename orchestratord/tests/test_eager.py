"""`start_eagerly`: the coroutine's first step runs in the caller's step, as the new task
(its timeouts and `current_task()` are the task's, not the caller's); then it runs as an
ordinary task: results, errors and cancels as `asyncio.Task` gives them."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from orchestratord.eager import start_eagerly

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_the_first_step_runs_before_start_returns_as_the_new_task() -> None:
    async def main() -> None:
        seen: list[object] = []

        async def job() -> str:
            seen.append(asyncio.current_task())
            await asyncio.sleep(0)
            seen.append(asyncio.current_task())
            return "done"

        caller = asyncio.current_task()
        task = start_eagerly(job())
        assert seen == [task]  # ran already, as the task
        assert asyncio.current_task() is caller
        assert await task == "done"
        assert seen == [task, task]

    run(main())


def test_a_coroutine_that_ends_in_its_first_step_gives_its_value_and_its_error() -> None:
    async def main() -> None:
        async def value() -> int:
            return 7

        async def error() -> int:
            raise ValueError("bad")

        assert await start_eagerly(value()) == 7
        with pytest.raises(ValueError, match="bad"):
            await start_eagerly(error())

    run(main())


def test_a_timeout_entered_in_the_first_step_cancels_the_task_not_the_caller() -> None:
    async def main() -> None:
        async def job() -> str:
            try:
                async with asyncio.timeout(0.01):
                    await asyncio.Event().wait()
            except TimeoutError:
                return "timed out"
            return "not reached"

        task = start_eagerly(job())
        await asyncio.sleep(0.05)  # the caller is not cancelled meanwhile
        assert task.done() and task.result() == "timed out"

    run(main())


def test_cancel_before_the_task_ever_ran_reaches_the_coroutine() -> None:
    async def main() -> None:
        cleaned: list[str] = []

        async def job() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                cleaned.append("finally")

        task = start_eagerly(job())
        task.cancel()  # before the loop ran the task's own first step
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled() and cleaned == ["finally"]

    run(main())


def test_cancel_while_it_waits_reaches_the_coroutine_which_may_answer_it() -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def job() -> str:
            try:
                started.set()
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                return "answered the cancel"
            return "not reached"

        task = start_eagerly(job())
        await started.wait()
        await asyncio.sleep(0)
        task.cancel()
        assert await task == "answered the cancel"

    run(main())


def test_a_cancel_after_its_future_resolved_is_still_thrown_in() -> None:
    async def main() -> None:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def job() -> str:
            try:
                await future
            except asyncio.CancelledError:
                return "cancelled"
            return "resumed with the result"

        task = start_eagerly(job())
        await asyncio.sleep(0)  # the task waits on the future now
        future.set_result("x")
        task.cancel()  # the future is done already: Task throws the cancel in
        assert await task == "cancelled"

    run(main())


def test_the_future_errors_and_bare_yields_reach_the_coroutine_as_with_a_task() -> None:
    async def main() -> None:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def job() -> str:
            for _ in range(3):
                await asyncio.sleep(0)
            try:
                await future
            except KeyError as exc:
                return f"got {exc!r}"
            return "not reached"

        task = start_eagerly(job())
        for _ in range(5):
            await asyncio.sleep(0)
        future.set_exception(KeyError("k"))
        assert await task == "got KeyError('k')"

    run(main())


def test_every_step_runs_in_the_given_context_and_the_callers_is_untouched() -> None:
    async def main() -> None:
        async def job() -> list[str]:
            seen = [VAR.get()]
            VAR.set("set by the first step")
            await asyncio.sleep(0)
            seen.append(VAR.get())
            return seen

        context = contextvars.copy_context()
        context.run(VAR.set, "given")
        task = start_eagerly(job(), context=context)
        assert VAR.get() == "unset"
        assert await task == ["given", "set by the first step"]
        assert VAR.get() == "unset"

    run(main())
