"""A stand-in for the existing CloudiSENSE TypeScript client: it speaks the wire exactly as that client does.

Login is a form POST of the username and the lowercase hex SHA-256 of the password; RPCs are
``{"type": "rpc", "requestid", "intent", "params"}`` frames whose promise resolves with ``data``
or rejects with ``message``; events are dispatched ONLY by the six names the client knows, and
``data_generated`` / ``error_generated`` / ``text_data_notification`` are routed by topic prefix.
Anything else is dropped, as the client drops it ("Unrecognized event type").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import string
from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

KNOWN_EVENTS = {"data_generated", "error_generated", "text_notification", "text_data_notification",
                "ui_update", "ping_generated"}
#: The client's topic prefixes for routed events, in the order it tests them.
ROUTES = (("/logging", "log"), ("/script", "script"), ("/stats", "stats"), ("/ui/updates", "ui"))
_NANOID = string.ascii_letters + string.digits + "_-"


class ClientRejected(Exception):
    """The promise of an RPC was rejected with the server's ``message``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class ExistingClient:
    """Login, RPC and the event dispatcher of the existing client."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.ws: WebSocketClientConnection | None = None
        self.tokens: dict[str, Any] = {}
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        #: Dispatched events by route: log, script, stats, ui, error, notification, ping, guide.
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.dropped: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def login(self, username: str, password: str) -> dict[str, Any]:
        """``POST /authorize`` with the SHA-256 hex of the password, then open ``/ws?token=``."""
        body = urlencode({"username": username, "password": hashlib.sha256(password.encode()).hexdigest()})
        resp = await AsyncHTTPClient().fetch(HTTPRequest(
            self.base_url + "/authorize", method="POST", body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"}), raise_error=False)
        answer = json.loads(resp.body)
        if answer.get("status") != "success":
            raise ClientRejected(answer.get("message", ""), answer.get("code", resp.code))
        self.tokens = answer["data"]
        url = self.base_url.replace("http://", "ws://") + f"/ws?token={self.tokens['access']['token']}"
        self.ws = await websocket_connect(url)
        self._reader = asyncio.create_task(self._read())
        return self.tokens

    @property
    def token(self) -> str:
        """The access token (the REST routes take it too)."""
        return str(self.tokens["access"]["token"])

    async def _read(self) -> None:
        assert self.ws is not None
        while True:
            raw = await self.ws.read_message()
            if raw is None:
                for fut in self.pending.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("closed"))
                return
            payload = json.loads(raw)
            for msg in payload if isinstance(payload, list) else [payload]:
                if msg.get("type") == "rpc_response":
                    fut = self.pending.pop(msg.get("requestid"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                elif msg.get("type") == "event":
                    self._dispatch(msg)
            self._changed.set()

    def _dispatch(self, ev: dict[str, Any]) -> None:
        name, topic = ev.get("name"), str(ev.get("topic", ""))
        if name not in KNOWN_EVENTS:
            self.dropped.append(ev)
            return
        if name == "text_notification":
            self.received["notification"].append(ev)
        elif name == "ping_generated":
            self.received["ping"].append(ev)
        elif name == "ui_update":
            self.received["ui" if topic.startswith("/ui/updates") else "guide"].append(ev)
        elif name == "error_generated":
            self.received["error"].append(ev)
        else:
            route = next((r for prefix, r in ROUTES if topic.startswith(prefix)), None)
            if route is None:
                self.dropped.append(ev)
            else:
                self.received[route].append(ev)

    async def execute(self, intent: str, params: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        """``execute_arbitrary_action(intent, params)``: resolves with ``data``, raises on an error."""
        assert self.ws is not None
        rid = "".join(secrets.choice(_NANOID) for _ in range(21))
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        await self.ws.write_message(json.dumps({"type": "rpc", "requestid": rid, "intent": intent,
                                                "params": params or {}}))
        msg = await asyncio.wait_for(fut, timeout)
        if msg["status"] == "success":
            return msg["data"]
        raise ClientRejected(msg["message"], msg["code"])

    async def wait(self, route: str, predicate: Any = None, timeout: float = 15) -> dict[str, Any]:
        """The first event dispatched to ``route`` that satisfies ``predicate`` (already received ones count)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for ev in self.received[route]:
                if predicate is None or predicate(ev):
                    return ev
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no {route} event in time (dropped: {[e.get('name') for e in self.dropped]})")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    def close(self) -> None:
        """Close the socket."""
        if self.ws is not None:
            self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
