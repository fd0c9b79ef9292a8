"""The WebSocket write path: frames go to the protocol's frame writer (or Tornado's public one), whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from cloudisense.core.context import ActionContext
from cloudisense.core.intents import Intent, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.server import ws
from tests.conftest import Running, make_settings
from tests.core.helpers import RawWs, start_core

#: Larger than the loopback socket buffers, so the write can't go out whole at once.
BIG = 12 << 20


class TextParams(Params):
    """How much text to answer with."""

    size: int = Field(10, ge=1, le=BIG)


class TextModule(Module):
    """A test-only intent answering with non-ASCII text of a given size, and one that publishes first."""

    name = "texttest"

    def intents(self) -> list[Intent]:
        return [Intent("text_of_size", "Answer with text", self.text, TextParams, Risk.READ, ("text",))]

    async def text(self, p: TextParams, ctx: ActionContext) -> dict[str, Any]:
        ctx.notify_client("progress", "texttest", {"text": "é…"})
        return {"text": "é" * (p.size // 2)}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    r = await start_core(make_settings(tmp_path), {"texttest": TextModule})
    yield r
    await r.server.stop()


@pytest.mark.parametrize("public", [False, True], ids=["frame writer", "write_message"])
async def test_answers_and_events_arrive_whole_in_order_on_either_write_path(
        node: Running, public: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if public:  # as on a Tornado without _write_frame: the public write_message is used
        monkeypatch.setattr(ws, "_frame_writer", lambda conn: None)
    waited: list[int] = []
    write = ws.WebSocketClient._write

    def counting_write(self: ws.WebSocketClient, text: bytes) -> asyncio.Future[None]:
        fut = write(self, text)
        if not fut.done():
            waited.append(len(text))
        return fut

    monkeypatch.setattr(ws.WebSocketClient, "_write", counting_write)
    conn = await RawWs.open(node, "viewer", max_message_size=4 * BIG)
    try:
        for size in (10, BIG):
            await conn.send({"type": "rpc", "requestid": f"r{size}", "intent": "text_of_size",
                             "params": {"size": size}})
            event = await conn.frame()
            assert event["type"] == "event" and event["data"] == {"text": "é…"}
            answer = await conn.frame(timeout=30)
            assert answer["requestid"] == f"r{size}" and answer["status"] == "success"
            assert answer["data"]["text"] == "é" * (size // 2)
        # The big answer did not go out whole at once (so it took the counted path) ...
        assert any(size > BIG for size in waited)
        # ... its bytes were counted as unwritten until the socket took them, then released:
        # the connection is read again and answers at once.
        resp = await conn.rpc("list_channels")
        assert resp["status"] == "success"
        await asyncio.sleep(0.05)
        handlers = [h for h in _socket_handlers(node) if h.client is not None]
        assert handlers and all(h.client.unwritten == 0 and h.client.pending == 0 for h in handlers)
    finally:
        conn.close()


def _socket_handlers(node: Running) -> list[ws.RpcSocket]:
    """The open RpcSocket handlers (found through the garbage collector: the node keeps no list)."""
    import gc

    return [o for o in gc.get_objects() if isinstance(o, ws.RpcSocket) and o.client is not None]
