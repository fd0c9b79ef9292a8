"""Permits: the router's node-wide bound on running actions (a semaphore with a call-free fast path)."""

from __future__ import annotations

import asyncio

import pytest

from cloudisense.core.router import Permits


async def test_free_permits_are_taken_at_once_and_the_rest_wait_in_order() -> None:
    permits = Permits(2)
    assert permits.try_take() and permits.try_take()
    assert not permits.try_take()
    order: list[int] = []

    async def wait(n: int) -> None:
        await permits.take()
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert order == []
    permits.give()
    await asyncio.sleep(0)
    assert order == [0]
    permits.give()
    permits.give()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    # A waiter was handed each permit given back, so none is free now; three more make three free.
    assert not permits.try_take()
    for _ in range(3):
        permits.give()
    assert [permits.try_take() for _ in range(4)] == [True, True, True, False]


async def test_nobody_jumps_the_queue_while_someone_waits() -> None:
    permits = Permits(1)
    assert permits.try_take()
    waiter = asyncio.create_task(permits.take())
    await asyncio.sleep(0)
    permits.give()  # handed to the waiter, not made free
    assert not permits.try_take()
    await waiter
    permits.give()
    assert permits.try_take()


async def test_a_cancelled_waiter_loses_no_permit() -> None:
    permits = Permits(1)
    assert permits.try_take()
    waiter = asyncio.create_task(permits.take())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    permits.give()
    assert permits.try_take()
    assert not permits.try_take()


async def test_a_waiter_cancelled_just_as_it_is_handed_a_permit_passes_it_on() -> None:
    permits = Permits(1)
    assert permits.try_take()
    first = asyncio.create_task(permits.take())
    second = asyncio.create_task(permits.take())
    await asyncio.sleep(0)
    permits.give()  # first is handed the permit ...
    first.cancel()  # ... and cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # the permit went on to the next waiter
    permits.give()
    assert permits.try_take()
