"""Helpers of the core tests: raw WebSocket frames, raw HTTP, a node with extra test modules."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.websocket import WebSocketClientConnection, websocket_connect

from cloudisense.client import login
from cloudisense.config import Settings
from cloudisense.core.modules import Module
from cloudisense.modules.audit import AuditModule
from cloudisense.modules.pubsub import PubSubModule
from cloudisense.modules.system import SystemModule
from tests.conftest import PASSWORDS, Running, start_server

#: The core modules only: these tests must not depend on modules other engineers are writing.
CORE_MODULES: dict[str, type[Module]] = {"pubsub": PubSubModule, "system": SystemModule, "audit": AuditModule}

SUCCESS_KEYS = {"type", "requestid", "status", "code", "data", "timestamp"}
ERROR_KEYS = {"type", "requestid", "status", "code", "message", "timestamp"}


async def start_core(settings: Settings, extra: dict[str, type[Module]] | None = None) -> Running:
    """Like ``conftest.start_server`` but with the core modules plus ``extra`` test modules."""
    return await start_server(settings, {**CORE_MODULES, **(extra or {})})


async def post_form(url: str, fields: dict[str, str], *, multipart: bool = False,
                    source_ip: str | None = None) -> tuple[int, dict[str, Any]]:
    """POST a form (urlencoded or multipart/form-data); returns status and JSON body."""
    if multipart:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
        body = ("".join(parts) + f"--{boundary}--\r\n").encode()
        ctype = f"multipart/form-data; boundary={boundary}"
    else:
        body = urlencode(fields).encode()
        ctype = "application/x-www-form-urlencoded"
    req = HTTPRequest(url, method="POST", body=body, headers={"Content-Type": ctype}, network_interface=source_ip)
    resp: HTTPResponse = await AsyncHTTPClient().fetch(req, raise_error=False)
    return resp.code, json.loads(resp.body) if resp.body else {}


async def get_text(url: str) -> tuple[int, str]:
    """GET ``url``; status and body text."""
    resp = await AsyncHTTPClient().fetch(url, raise_error=False)
    return resp.code, resp.body.decode() if resp.body else ""


async def access_token(running: Running, user: str = "admin") -> str:
    """A fresh access token of ``user``."""
    return (await login(running.url, user, PASSWORDS[user]))["access"]["token"]


class RawWs:
    """A WebSocket that shows every frame as it came (arrays stay arrays)."""

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, running: Running, user: str = "admin", **kwargs: Any) -> "RawWs":
        """Log in as ``user`` and connect."""
        token = await access_token(running, user)
        ws_url = running.url.replace("http://", "ws://") + f"/ws?token={token}"
        return cls(await websocket_connect(ws_url, **kwargs))

    async def send(self, frame: Any, *, binary: bool = False) -> None:
        """Send a dict/list as JSON, a str as is, bytes as a binary frame."""
        if isinstance(frame, bytes):
            await self.conn.write_message(frame, binary=True)
        elif isinstance(frame, str):
            await self.conn.write_message(frame.encode() if binary else frame, binary=binary)
        else:
            await self.conn.write_message(json.dumps(frame))

    async def frame(self, timeout: float = 10) -> Any:
        """The next frame, parsed; ``None`` when the socket closed."""
        raw = await asyncio.wait_for(self.conn.read_message(), timeout)
        return None if raw is None else json.loads(raw)

    async def response(self, timeout: float = 10) -> dict[str, Any]:
        """The next ``rpc_response`` (events in between are skipped)."""
        while True:
            msg = await self.frame(timeout)
            if msg is None:
                raise ConnectionError("closed")
            if isinstance(msg, dict) and msg.get("type") == "rpc_response":
                return msg

    async def rpc(self, intent: str, params: Any = None, **extra: Any) -> dict[str, Any]:
        """One request and its response (nothing else may be in flight)."""
        rid = uuid.uuid4().hex
        msg: dict[str, Any] = {"type": "rpc", "requestid": rid, "intent": intent, **extra}
        if params is not None:
            msg["params"] = params
        await self.send(msg)
        resp = await self.response()
        assert resp["requestid"] == rid
        return resp

    def close(self) -> None:
        """Close the socket."""
        self.conn.close()


def assert_success_shape(resp: dict[str, Any], code: int = 200) -> None:
    """Exactly the keys and types protocol.md gives a success response."""
    assert set(resp) == SUCCESS_KEYS, resp
    assert resp["type"] == "rpc_response" and resp["status"] == "success" and resp["code"] == code
    assert isinstance(resp["requestid"], str)
    assert isinstance(resp["timestamp"], int) and not isinstance(resp["timestamp"], bool)


def assert_error_shape(resp: dict[str, Any], code: int) -> None:
    """Exactly the keys and types protocol.md gives an error response."""
    assert set(resp) == ERROR_KEYS, resp
    assert resp["type"] == "rpc_response" and resp["status"] == "error" and resp["code"] == code, resp
    assert isinstance(resp["message"], str) and resp["message"]
    assert isinstance(resp["timestamp"], int) and not isinstance(resp["timestamp"], bool)
