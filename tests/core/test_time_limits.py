"""TimeLimits: one timer for every running request's limit, with asyncio.timeout's semantics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cloudisense.core.errors import RequestTimeout
from cloudisense.core.router import TimeLimits


async def _limited(limits: TimeLimits, seconds: float, work: Callable[[], Awaitable[Any]]) -> Any:
    """What the router's ``_run`` does around an action."""
    task = asyncio.current_task()
    assert task is not None
    limit = limits.start(task, seconds, asyncio.get_running_loop())
    timed_out = False
    try:
        try:
            return await work()
        finally:
            timed_out = limits.finish(limit)
    except asyncio.CancelledError:
        if timed_out:
            raise RequestTimeout("too slow") from None
        raise


async def _nap(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


async def test_a_request_over_its_limit_times_out_and_one_within_it_does_not() -> None:
    limits = TimeLimits()
    with pytest.raises(RequestTimeout):
        await _limited(limits, 0.05, lambda: _nap(30))
    assert await _limited(limits, 30, lambda: _nap(0)) == "done"
    assert not limits._running


async def test_nested_limits_in_one_task() -> None:
    limits = TimeLimits()

    async def parent_survives_its_child() -> str:
        with pytest.raises(RequestTimeout):
            await _limited(limits, 0.05, lambda: _nap(30))
        return "parent goes on"

    # A sub-call's limit expires: only the sub-call times out.
    assert await _limited(limits, 30, parent_survives_its_child) == "parent goes on"
    # The parent's limit expires while a sub-call with a longer one runs: the parent times out.
    with pytest.raises(RequestTimeout):
        await _limited(limits, 0.05, lambda: _limited(limits, 30, lambda: _nap(30)))
    assert not limits._running
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # every cancellation of ours was withdrawn


async def test_a_short_limit_after_a_long_one_still_fires() -> None:
    limits = TimeLimits()
    long = asyncio.create_task(_limited(limits, 30, lambda: _nap(0.3)))
    await asyncio.sleep(0)
    with pytest.raises(RequestTimeout):
        await _limited(limits, 0.05, lambda: _nap(30))
    assert await long == "done"  # the earlier timer did not cut the longer limit short


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    limits = TimeLimits()
    task = asyncio.create_task(_limited(limits, 30, lambda: _nap(30)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not limits._running


async def test_an_action_that_raises_its_own_timeout_error_keeps_it() -> None:
    limits = TimeLimits()

    async def own_timeout() -> None:
        raise TimeoutError("the action's own")

    with pytest.raises(TimeoutError, match="the action's own"):
        await _limited(limits, 30, own_timeout)
