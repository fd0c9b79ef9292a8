"""The ``/ws`` WebSocket endpoint: a thin adapter between Tornado and the router."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from tornado.websocket import WebSocketClosedError, WebSocketHandler

from cloudisense.core.clients import Client
from cloudisense.core.errors import Unauthorized
from cloudisense.core.node import Node
from cloudisense.store.users import Role

log = logging.getLogger(__name__)

#: Events sent together as one JSON array, at most this many per frame.
EVENT_BATCH = 100


class WebSocketClient(Client):
    """A browser or script on a WebSocket.

    Responses are written at once; events go through a bounded queue drained
    by one writer task, which sends whatever is waiting as one JSON array, so a
    slow reader only ever loses its own events (counted) and never stalls others.
    """

    kind = "websocket"

    def __init__(self, handler: "RpcSocket", user: str, role: Role, queue_size: int) -> None:
        super().__init__(user, role)
        self._handler = handler
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self._closed = False
        self._writer = asyncio.create_task(self._write_events(), name=f"ws-events-{self.id}")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the writer; called when the socket closes."""
        self._closed = True
        self._writer.cancel()

    async def send(self, message: dict[str, Any]) -> None:
        if self._closed:
            return
        try:
            await self._handler.write_message(json.dumps(message, default=str))
        except WebSocketClosedError:
            self._closed = True

    def push_event(self, event: dict[str, Any]) -> bool:
        if self._closed:
            return False
        try:
            self._events.put_nowait(event)
            return True
        except asyncio.QueueFull:
            self.dropped_events += 1
            return False

    async def _write_events(self) -> None:
        while True:
            batch = [await self._events.get()]
            while len(batch) < EVENT_BATCH and not self._events.empty():
                batch.append(self._events.get_nowait())
            payload = batch[0] if len(batch) == 1 else batch
            try:
                await self._handler.write_message(json.dumps(payload, default=str))
            except WebSocketClosedError:
                self._closed = True
                return


class RpcSocket(WebSocketHandler):
    """``GET /ws?token=<access token>``: refused with 401 before the upgrade unless the token is valid."""

    node: Node
    client: WebSocketClient | None

    def initialize(self, node: Node) -> None:
        self.node = node
        self.client = None
        self._claims = None
        self._tasks: set[asyncio.Task[None]] = set()

    def check_origin(self, origin: str) -> bool:
        # Auth is a bearer token in the URL, not a cookie, so cross-origin pages can't ride a session.
        return True

    async def get(self, *args: Any, **kwargs: Any) -> None:
        try:
            self._claims = self.node.tokens.verify(self.get_query_argument("token", None), "access")
        except Unauthorized as exc:
            self.set_status(401)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": "error", "code": 401, "message": exc.message}))
            return
        await super().get(*args, **kwargs)

    def get_compression_options(self) -> dict[str, Any] | None:
        return None

    def open(self, *args: Any, **kwargs: Any) -> None:
        assert self._claims is not None
        self.client = WebSocketClient(self, self._claims.username, self._claims.role,
                                      self.node.settings.server.client_queue_size)
        self.node.metrics.clients.inc()

    def on_message(self, message: str | bytes) -> None:
        if self.client is None:
            return
        if isinstance(message, bytes):
            message = message.decode("utf-8", errors="replace")
        # One task per message: requests on one connection run concurrently.
        task = asyncio.create_task(self.node.router.handle_messages(message, self.client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_close(self) -> None:
        if self.client is None:
            return
        self.client.close()
        self.node.metrics.clients.dec()
        client, self.client = self.client, None
        task = asyncio.create_task(self.node.pubsub.drop_client(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
