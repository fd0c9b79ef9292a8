"""The ``/ws`` WebSocket endpoint: a thin adapter between Tornado and the router."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from tornado.websocket import WebSocketClosedError, WebSocketHandler

from cloudisense.core import protocol
from cloudisense.core.clients import AUTOMATED_KINDS, Client
from cloudisense.core.errors import Unauthorized
from cloudisense.node import Node
from cloudisense.core.roles import Role
from cloudisense.store.users import User

log = logging.getLogger(__name__)

#: Events sent together as one JSON array, at most this many per frame.
EVENT_BATCH = 100

#: What a WebSocket client may declare itself as (``/ws?client=mcp``). A label for the audit log and
#: the policy gate (automated kinds get policy decisions), not a security boundary: roles still bound
#: what the token's user may do, whatever the label says.
WS_CLIENT_KINDS = ("websocket", "mcp", "langchain")


class WebSocketClient(Client):
    """A browser or script on a WebSocket.

    Responses are written at once, after any events still queued for the client
    (so an RPC's progress events always precede its response); events go through
    a bounded queue drained by one writer task, which sends whatever is waiting
    as one JSON array, so a slow reader only ever loses its own events (counted)
    and never stalls others.
    """

    kind = "websocket"

    def __init__(self, handler: "RpcSocket", user: str, role: Role, queue_size: int,
                 kind: str = "websocket") -> None:
        # Set before the base class builds the client id from the kind.
        self.kind = kind
        self.policy_applies = kind in AUTOMATED_KINDS
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
            text = json.dumps(message, default=str, allow_nan=False)
        except (ValueError, TypeError, RecursionError):  # still one answer per request
            log.warning("response to %s could not be encoded as JSON", message.get("requestid"), exc_info=True)
            text = json.dumps(protocol.error(message.get("requestid"), 500, "the result could not be encoded as JSON"))
        try:
            # Events queued before this response go out first (a stream's last deltas before its result).
            self._flush_queued_events()
            await self._handler.write_message(text)
        except WebSocketClosedError:
            self._closed = True

    def _flush_queued_events(self) -> None:
        """Write what waits in the event queue now (Tornado buffers writes in order)."""
        while not self._events.empty():
            text = self._next_frame([])
            if text is not None:
                self._handler.write_message(text)

    def _next_frame(self, batch: list[dict[str, Any]]) -> str | None:
        """``batch`` topped up from the queue (up to EVENT_BATCH) as one frame; ``None`` if none encodes."""
        while len(batch) < EVENT_BATCH and not self._events.empty():
            batch.append(self._events.get_nowait())
        text = _encode_events(batch)
        if text is None:
            self.dropped_events += len(batch)
        return text

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
            text = self._next_frame([await self._events.get()])
            if text is None:
                continue
            try:
                await self._handler.write_message(text)
            except WebSocketClosedError:
                self._closed = True
                return


def _encode_events(batch: list[dict[str, Any]]) -> str | None:
    """One event as an object, several as an array; events that can't be encoded are left out."""
    try:
        return json.dumps(batch[0] if len(batch) == 1 else batch, default=str, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        good = []
        for event in batch:
            try:
                json.dumps(event, default=str, allow_nan=False)
                good.append(event)
            except (ValueError, TypeError, RecursionError):
                log.warning("event on %s could not be encoded as JSON; dropped", event.get("topic"))
        return _encode_events(good) if good else None


class RpcSocket(WebSocketHandler):
    """``GET /ws?token=<access token>[&client=mcp]``: refused with 401 before the upgrade unless the token is valid.

    ``client`` declares the client's kind (one of :data:`WS_CLIENT_KINDS`, default ``websocket``).
    """

    node: Node
    client: WebSocketClient | None

    def initialize(self, node: Node) -> None:
        self.node = node
        self.client = None
        self._user: User | None = None
        self._kind = "websocket"
        self._tasks: set[asyncio.Task[None]] = set()

    def check_origin(self, origin: str) -> bool:
        # Auth is a bearer token in the URL, not a cookie, so cross-origin pages can't ride a session.
        return True

    async def get(self, *args: Any, **kwargs: Any) -> None:
        kind = self.get_query_argument("client", "websocket")
        if kind not in WS_CLIENT_KINDS:
            self._refuse(400, f"unknown client kind {protocol.short_repr(kind)}; use one of {', '.join(WS_CLIENT_KINDS)}")
            return
        self._kind = kind
        try:
            self._user = await self.node.authenticate(self.get_query_argument("token", None), "access")
        except Unauthorized as exc:
            self._refuse(401, exc.message)
            return
        await super().get(*args, **kwargs)

    def _refuse(self, code: int, message: str) -> None:
        """Answer the upgrade request with a JSON error instead of opening the socket."""
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": "error", "code": code, "message": message}))

    def get_compression_options(self) -> dict[str, Any] | None:
        return None

    def open(self, *args: Any, **kwargs: Any) -> None:
        assert self._user is not None
        self.client = WebSocketClient(self, self._user.username, self._user.role,
                                      self.node.settings.server.client_queue_size, kind=self._kind)
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
