"""A small async client for a CloudiSENSE server (used by the CLI, tests and benchmarks).

It speaks protocol.md exactly like the browser client: ``POST /authorize`` with
the SHA-256 hex of the password, then RPC over ``/ws?token=``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.websocket import WebSocketClientConnection, websocket_connect

from cloudisense.core.errors import CloudisenseError, Unauthorized
from cloudisense.store.users import client_credential


class RpcError(CloudisenseError):
    """An ``rpc_response`` with ``status: error``."""


async def login(base_url: str, username: str, password: str, *, hashed: bool = False) -> dict[str, Any]:
    """The ``data`` of ``/authorize`` (access and refresh tokens); ``password`` is plain unless ``hashed``."""
    credential = password if hashed else client_credential(password)
    body = urlencode({"username": username, "password": credential})
    try:
        resp = await AsyncHTTPClient().fetch(f"{base_url}/authorize", method="POST", body=body,
                                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    except HTTPClientError as exc:
        message = "login failed"
        if exc.response is not None and exc.response.body:
            try:
                message = json.loads(exc.response.body).get("message", message)
            except ValueError:
                pass
        raise Unauthorized(message, code=exc.code) from None
    return json.loads(resp.body)["data"]


class Connection:
    """An open WebSocket: concurrent ``call``s matched by requestid, events on a queue."""

    def __init__(self, ws: WebSocketClientConnection) -> None:
        self.ws = ws
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.unmatched: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, base_url: str, token: str, *, client_kind: str | None = None,
                   **kwargs: Any) -> Connection:
        """Connect to ``/ws`` with an access token (``client_kind``: declare e.g. ``mcp`` for the audit log)."""
        query = {"token": token, **({"client": client_kind} if client_kind else {})}
        ws_url = base_url.replace("http://", "ws://").replace("https://", "wss://") + "/ws?" + urlencode(query)
        return cls(await websocket_connect(ws_url, **kwargs))

    @property
    def closed(self) -> bool:
        """True once the socket closed (nothing more will be answered)."""
        return self._reader.done()

    async def _read(self) -> None:
        while True:
            raw = await self.ws.read_message()
            if raw is None:
                break
            payload = json.loads(raw)
            for msg in payload if isinstance(payload, list) else [payload]:
                if msg.get("type") == "event":
                    self.events.put_nowait(msg)
                    continue
                fut = self._pending.pop(str(msg.get("requestid")), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                else:
                    self.unmatched.append(msg)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))

    async def request(self, intent: str, params: dict[str, Any] | None = None, *, timeout: float = 60,
                      **extra: Any) -> dict[str, Any]:
        """Send one RPC and return the raw ``rpc_response`` message."""
        rid = uuid.uuid4().hex
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        msg = {"type": "rpc", "requestid": rid, "intent": intent, "params": params or {}, **extra}
        await self.ws.write_message(json.dumps(msg))
        return await asyncio.wait_for(fut, timeout)

    async def call(self, intent: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Send one RPC; its ``data`` on success, :class:`RpcError` on error."""
        resp = await self.request(intent, params, **kwargs)
        if resp.get("status") != "success":
            raise RpcError(str(resp.get("message")), code=int(resp.get("code", 500)))
        return resp.get("data")

    async def next_event(self, topic: str | None = None, timeout: float = 10) -> dict[str, Any]:
        """The next event (on ``topic`` when given)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ev = await asyncio.wait_for(self.events.get(), max(0.01, deadline - loop.time()))
            if topic is None or ev.get("topic") == topic:
                return ev

    def close(self) -> None:
        """Close the socket."""
        self.ws.close()
        self._reader.cancel()
