"""The ``/ws`` WebSocket endpoint: a thin adapter between Tornado and the router."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from cloudisense.core import protocol
from cloudisense.core.clients import AUTOMATED_KINDS, Client
from cloudisense.core.errors import Unauthorized
from cloudisense.core.roles import Role
from cloudisense.node import Node
from cloudisense.store.users import User

log = logging.getLogger(__name__)

#: Events sent together as one JSON array, at most this many per frame.
EVENT_BATCH = 100

#: What a WebSocket client may declare itself as (``/ws?client=mcp``). A label for the audit log and
#: the policy gate (automated kinds get policy decisions), not a security boundary: roles still bound
#: what the token's user may do, whatever the label says.
WS_CLIENT_KINDS = ("websocket", "mcp", "langchain")


class WebSocketClient(Client):
    """A browser or script on a WebSocket, with bounded memory whatever the peer does.

    Responses are written at once, after any events still queued for the client
    (so an RPC's progress events always precede its response); events go through
    a bounded queue drained by one writer task, which sends whatever is waiting
    as one JSON array, so a slow reader only ever loses its own events (counted)
    and never stalls others.

    Backpressure: a request counts as pending from the frame's arrival until its
    answer is handed to Tornado, and from then its bytes (like every event's) count
    as unwritten until the socket has taken them (Tornado's write future resolved).
    While pending requests reach ``max_pending`` or unwritten bytes reach
    ``max_unwritten``, the socket is not read (:meth:`RpcSocket.on_message` returns :meth:`paused`, which
    Tornado awaits before reading the next frame); a peer that stays over the
    byte limit for ``stall_timeout`` seconds is closed with code 1008.
    """

    kind = "websocket"

    def __init__(self, handler: RpcSocket, user: str, role: Role, queue_size: int, *,
                 kind: str = "websocket", max_pending: int = 256, max_unwritten: int = 4 << 20,
                 stall_timeout: float = 60.0) -> None:
        # Set before the base class builds the client id from the kind.
        self.kind = kind
        self.policy_applies = kind in AUTOMATED_KINDS
        super().__init__(user, role)
        self._handler = handler
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self._closed = False
        self.max_pending = max_pending
        self.max_unwritten = max_unwritten
        self.stall_timeout = stall_timeout
        #: Requests read whose answer is not yet handed to Tornado.
        self.pending = 0
        #: Bytes handed to Tornado and not yet taken by the socket.
        self.unwritten = 0
        self._resume: asyncio.Future[None] | None = None
        self._writer = asyncio.create_task(self._write_events(), name=f"ws-events-{self.id}")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the writer and release a paused reader; called when the socket closes."""
        self._closed = True
        self._writer.cancel()
        self._wake()

    @property
    def saturated(self) -> bool:
        """Whether reading must wait: too many pending requests or too many unwritten bytes."""
        return self.pending >= self.max_pending or self.unwritten >= self.max_unwritten

    async def paused(self) -> None:
        """Wait until the connection may be read again (closing it if its peer stopped reading)."""
        while self.saturated and not self._closed:
            self._resume = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.stall_timeout):
                    await self._resume
            except TimeoutError:
                if self.unwritten >= self.max_unwritten:
                    log.warning("closing %s (%s): it has not read its answers for %g s",
                                self.id, self.user, self.stall_timeout)
                    self._handler.close(1008, "not reading its answers; reconnect and read what you ask for")
                    return
            finally:
                self._resume = None

    def _wake(self) -> None:
        if self._resume is not None and not self._resume.done() and (self._closed or not self.saturated):
            self._resume.set_result(None)

    def request_done(self) -> None:
        """One pending request fully answered."""
        self.pending -= 1
        self._wake()

    def _write(self, text: bytes) -> asyncio.Future[None]:
        """Hand ``text`` (UTF-8 JSON) to Tornado, counting it as unwritten until the socket takes it."""
        fut = self._handler.send_text(text)  # raises WebSocketClosedError when closed
        if fut.done():
            # On the socket already (the usual case): nothing to count or to wait for. The outcome
            # is retrieved, so a failed write is no "never retrieved" error.
            if not fut.cancelled() and fut.exception() is not None:
                self._closed = True
            return fut
        size = len(text)
        self.unwritten += size

        def written(done: asyncio.Future[None]) -> None:
            self.unwritten -= size
            # Retrieve the outcome here, so a write that failed at close is no "never retrieved" error.
            if not done.cancelled() and done.exception() is not None:
                self._closed = True
            self._wake()

        fut.add_done_callback(written)
        return fut

    async def send(self, message: dict[str, Any]) -> None:
        if self._closed:
            return
        try:
            text = protocol.dumps_bytes(message)
        except (ValueError, TypeError, RecursionError):  # still one answer per request
            log.warning("response to %s could not be encoded as JSON", message.get("requestid"), exc_info=True)
            text = protocol.dumps_bytes(protocol.error(message.get("requestid"), 500,
                                                 "the result could not be encoded as JSON"))
        try:
            # Events queued before this response go out first (a stream's last deltas before its result).
            if not self._events.empty():
                self._flush_queued_events()
            # Not awaited (a loop turn per request saved): the answer's bytes count as unwritten
            # until the socket takes them, and that bound pauses reading (see the class docstring).
            self._write(text)
        except WebSocketClosedError:
            self._closed = True

    def _flush_queued_events(self) -> None:
        """Write what waits in the event queue now (Tornado buffers writes in order; at most the queue's size)."""
        while not self._events.empty():
            text = self._next_frame([])
            if text is not None:
                self._write(text)

    def _next_frame(self, batch: list[dict[str, Any]]) -> bytes | None:
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
                # Awaited: the next batch waits until this one is on the socket, so events wait in
                # the bounded queue (and are dropped there) rather than in Tornado's buffer.
                await self._write(text)
            except (WebSocketClosedError, StreamClosedError):
                self._closed = True
                return


def _encode_events(batch: list[dict[str, Any]]) -> bytes | None:
    """One event as an object, several as an array; events that can't be encoded are left out."""
    try:
        return protocol.dumps_bytes(batch[0] if len(batch) == 1 else batch)
    except (ValueError, TypeError, RecursionError):
        good = []
        for event in batch:
            try:
                protocol.dumps_bytes(event)
                good.append(event)
            except (ValueError, TypeError, RecursionError):
                log.warning("event on %s could not be encoded as JSON; dropped", event.get("topic"))
        return _encode_events(good) if good else None


def _frame_writer(conn: Any) -> Callable[[bool, int, bytes], asyncio.Future[None]] | None:
    """The protocol's ``_write_frame(fin, opcode, data)``; ``None`` (use ``write_message``) if this
    Tornado has none or compresses (the node turns compression off)."""
    write_frame = getattr(conn, "_write_frame", None)
    if write_frame is None or getattr(conn, "_compressor", None) is not None:
        return None
    return cast("Callable[[bool, int, bytes], asyncio.Future[None]]", write_frame)


class SteadyReads:
    """A connection's view of its IOLoop that keeps the socket registered for reads while Tornado
    drops read interest only for a moment.

    Tornado's IOStream stops listening for reads each time a read is satisfied with bytes left
    in its buffer (every WebSocket frame: the header, then the rest) and listens again one loop
    turn later: an ``epoll_ctl`` delete and add, with asyncio's selector bookkeeping, per frame.
    Here a drop is only noted; should the socket become readable while Tornado wants no reads
    (a paused connection: backpressure), the interest is dropped for real then, and that event
    not delivered, so Tornado reads exactly when it would have. Everything else is the IOLoop's.
    """

    def __init__(self, io_loop: Any, stream_fd: Any, fd: int, handler: Callable[[Any, int], None],
                 events: int) -> None:
        self._io_loop = io_loop
        #: What the stream passes as its fd (its socket), and the number the IOLoop keys it by.
        self._stream_fd = stream_fd
        self._fd = fd
        self._handler = handler
        #: The interest Tornado last asked for (it may hold less than what is registered: no read).
        self._events = events

    @classmethod
    def install(cls, stream: Any) -> None:
        """Put a :class:`SteadyReads` between ``stream`` and its IOLoop (no-op where it can't)."""
        io_loop = stream.io_loop
        handlers = getattr(io_loop, "handlers", None)
        stream_fd = stream.fileno()
        fd = stream_fd if isinstance(stream_fd, int) else stream_fd.fileno()
        if not isinstance(handlers, dict) or fd not in handlers or not hasattr(io_loop, "readers"):
            return
        fileobj, handler = handlers[fd]
        # The interest registered now, as the stream last asked for it (unknown: reads, as when idle).
        state = getattr(stream, "_state", None)
        events = state if isinstance(state, int) else io_loop.READ | io_loop.ERROR
        steady = cls(io_loop, stream_fd, fd, handler, events)
        handlers[fd] = (fileobj, steady._deliver)
        stream.io_loop = steady

    def __getattr__(self, name: str) -> Any:
        return getattr(self._io_loop, name)

    def update_handler(self, fd: Any, events: int) -> None:
        """As the IOLoop's, except that a dropped read interest stays registered until needed."""
        if fd is not self._stream_fd:
            self._io_loop.update_handler(fd, events)
            return
        self._events = events
        if self._fd in self._io_loop.readers:
            events |= self._io_loop.READ
        self._io_loop.update_handler(fd, events)

    def _deliver(self, fileobj: Any, events: int) -> None:
        read = self._io_loop.READ
        if events & read and not self._events & read:
            # Tornado wants no reads now: stop listening for real (until it asks again); the
            # bytes wait in the kernel, which reports them again once reads are wanted.
            self._io_loop.update_handler(self._fd, self._events)
            events &= ~read
            if not events:
                return
        self._handler(fileobj, events)


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
        #: The loop the connection runs on, looked up once (each lookup is a getpid() call in 3.11).
        self._loop: asyncio.AbstractEventLoop | None = None

    def check_origin(self, origin: str) -> bool:
        # Auth is a bearer token in the URL, not a cookie, so cross-origin pages can't ride a session.
        return True

    async def get(self, *args: Any, **kwargs: Any) -> None:
        kind = self.get_query_argument("client", "websocket")
        if kind not in WS_CLIENT_KINDS:
            self._refuse(400, f"unknown client kind {protocol.short_repr(kind)}; "
                              f"use one of {', '.join(WS_CLIENT_KINDS)}")
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

    def send_text(self, text: bytes) -> asyncio.Future[None]:
        """Write ``text`` (UTF-8) as one text frame; the future resolves once the socket has taken it.

        ``write_message`` wraps each write in a task of its own (a task, its loop turn and its
        done callback per answer), so the frame goes to the protocol's ``_write_frame``
        directly, whose future Tornado resolves at once when the write went out whole. Raises
        :class:`WebSocketClosedError` when closed, as ``write_message`` does.
        """
        conn = self.ws_connection
        if conn is None or conn.is_closing():
            raise WebSocketClosedError()
        write_frame = _frame_writer(conn)
        if write_frame is None:
            return self.write_message(text)
        try:
            fut = write_frame(True, 0x1, text)
        except StreamClosedError:
            raise WebSocketClosedError() from None
        return fut

    def open(self, *args: Any, **kwargs: Any) -> None:
        assert self._user is not None
        s = self.node.settings.server
        self.client = WebSocketClient(self, self._user.username, self._user.role, s.client_queue_size,
                                      kind=self._kind, max_pending=s.max_inflight_per_client,
                                      max_unwritten=s.max_unwritten_bytes, stall_timeout=s.write_stall_timeout)
        self._loop = asyncio.get_running_loop()
        if self.ws_connection is not None:
            SteadyReads.install(self.ws_connection.stream)
        self.node.metrics.clients.inc()

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        client, loop = self.client, self._loop
        if client is None or loop is None:
            return None
        if isinstance(message, bytes):
            message = message.decode("utf-8", errors="replace")
        # One task per message: requests on one connection run concurrently, up to the bound below.
        client.pending += 1
        # Held here until done (the loop keeps only weak references); _handle drops it itself,
        # cheaper than a done callback per request.
        self._tasks.add(loop.create_task(self._handle(client, message)))
        # Returning an awaitable makes Tornado wait for it before reading the next frame.
        return client.paused() if client.saturated else None

    async def _handle(self, client: WebSocketClient, message: str | bytes) -> None:
        try:
            await self.node.router.handle_messages(message, client)
        except Exception:  # the router answers every request itself; this is a bug, never silent
            log.exception("request handling failed on %s", client.id)
        finally:
            client.request_done()
            self._tasks.discard(asyncio.current_task(self._loop))  # type: ignore[arg-type,unused-ignore]

    def on_close(self) -> None:
        if self.client is None:
            return
        self.client.close()
        self.node.metrics.clients.dec()
        client, self.client = self.client, None
        task = asyncio.create_task(self.node.pubsub.drop_client(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
