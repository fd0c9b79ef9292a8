"""The WebSocket read side: a connection stays registered for reads between frames (no epoll
delete and add per frame), and a paused connection (backpressure) is really not read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloudisense.core.context import ActionContext
from cloudisense.core.intents import Intent, NoParams, Risk
from cloudisense.core.modules import Module
from cloudisense.server import ws
from tests.conftest import Running, make_settings, until
from tests.core.helpers import RawWs, start_core

#: Released by the test: requests of the held intent wait for it.
RELEASE: asyncio.Event | None = None
#: Requests of the held intent running now.
HELD: list[int] = [0]


class HoldModule(Module):
    """A test-only intent that answers once the test releases it."""

    name = "holdtest"

    def intents(self) -> list[Intent]:
        return [Intent("held", "Answer once released", self.held, NoParams, Risk.READ, ("hold",))]

    async def held(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        assert RELEASE is not None
        HELD[0] += 1
        try:
            await RELEASE.wait()
        finally:
            HELD[0] -= 1
        return {"ok": True}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    global RELEASE
    RELEASE = asyncio.Event()
    r = await start_core(make_settings(tmp_path, server={"max_inflight_per_client": 2}), {"holdtest": HoldModule})
    yield r
    RELEASE.set()
    await r.server.stop()


def _installed(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The streams SteadyReads is installed on from now on."""
    streams: list[Any] = []
    install = ws.SteadyReads.install.__func__  # type: ignore[attr-defined]

    def recording(cls: type[ws.SteadyReads], stream: Any) -> None:
        install(cls, stream)
        streams.append(stream)

    monkeypatch.setattr(ws.SteadyReads, "install", classmethod(recording))
    return streams


def _removals(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The fds the running loop stops listening to for reads from now on."""
    loop = asyncio.get_running_loop()
    removed: list[int] = []
    remove = loop.remove_reader

    def counting(fd: Any) -> bool:
        removed.append(fd if isinstance(fd, int) else fd.fileno())
        return remove(fd)

    monkeypatch.setattr(loop, "remove_reader", counting)
    return removed


async def test_a_connection_stays_registered_for_reads_between_frames(
        node: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    streams = _installed(monkeypatch)
    conn = await RawWs.open(node, "viewer")
    try:
        assert len(streams) == 1 and isinstance(streams[0].io_loop, ws.SteadyReads)
        fd = streams[0].fileno().fileno()
        removed = _removals(monkeypatch)
        for _ in range(30):
            assert (await conn.rpc("list_channels"))["status"] == "success"
        # Tornado asks to stop reading after every frame's header; the socket stayed registered.
        assert fd not in removed
    finally:
        conn.conn.close()


async def test_a_paused_connection_is_not_read_until_its_answers_are_done(
        node: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    assert RELEASE is not None
    streams = _installed(monkeypatch)
    conn = await RawWs.open(node, "viewer")
    try:
        steady = streams[0].io_loop
        fd = streams[0].fileno().fileno()
        removed = _removals(monkeypatch)
        # Two held requests fill the connection's bound (2): it is paused.
        for n in range(2):
            await conn.send({"type": "rpc", "requestid": f"h{n}", "intent": "held", "params": {}})
        await until(lambda: HELD[0] == 2)
        # Frames sent while paused: Tornado reads one chunk to see whether the peer closed, then
        # wants no reads; the next bytes find the socket readable and it is dropped for real, so
        # the kernel, not Tornado's buffer, holds what comes after.
        for n in range(2, 8):
            await conn.send({"type": "rpc", "requestid": f"h{n}", "intent": "held", "params": {}})
            await asyncio.sleep(0.05)
        await until(lambda: fd in removed)
        assert fd not in steady._io_loop.readers
        assert HELD[0] == 2  # nothing more was read and started
        RELEASE.set()
        answers = [await conn.response() for _ in range(8)]
        assert sorted(a["requestid"] for a in answers) == [f"h{n}" for n in range(8)]
        assert all(a["status"] == "success" for a in answers)
        # Reading again: the socket is registered once more, and answers at once.
        assert (await conn.rpc("list_channels"))["status"] == "success"
        assert fd in steady._io_loop.readers
    finally:
        conn.conn.close()
