"""HTTP endpoints: ``/authorize``, ``/refresh``, ``/healthz``, ``/metrics``, and CloudiSENSE's file routes
``/file/read``, ``/file/write``, ``/log/download/<mode>`` and the download links ``/download/<token>``.

The file routes take the WebSocket's access token (``Authorization: Bearer <token>``, or a
``token`` query or form field) and run their intent through the router, exactly as an RPC
would: roles, the policy gate and the audit log apply. CORS: origins listed in ``[cors]
origins`` get the ``Access-Control-Allow-*`` headers, and ``OPTIONS`` preflights are answered.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import time
from typing import Any

from tornado.web import RequestHandler

from cloudisense.core.audit import AuditRecord
from cloudisense.core.clients import InProcessClient
from cloudisense.core.errors import CloudisenseError, NotFound, TooManyRequests, Unauthorized
from cloudisense.node import Node

log = logging.getLogger(__name__)


class JsonHandler(RequestHandler):
    """Base: JSON answers in the protocol's ``status``/``code`` envelope."""

    node: Node

    def initialize(self, node: Node) -> None:
        self.node = node
        allow_cors(self, node)  # set_default_headers runs before initialize, without the node

    def set_default_headers(self) -> None:
        # A JSON answer must never be sniffed into HTML or script by a browser.
        self.set_header("X-Content-Type-Options", "nosniff")
        if hasattr(self, "node"):  # an error answer clears the headers: set them again
            allow_cors(self, self.node)

    def options(self, *args: Any) -> None:
        """A CORS preflight: the headers are set by :func:`allow_cors`."""
        self.set_status(204)
        self.finish()

    def reply(self, code: int, body: dict[str, Any]) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))

    def fail(self, exc: CloudisenseError) -> None:
        self.reply(exc.code, {"status": "error", "code": exc.code, "message": exc.message})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.reply(status_code, {"status": "error", "code": status_code, "message": self._reason})

    def field(self, name: str) -> str:
        """A form field (urlencoded or multipart) or a JSON body field."""
        value = self.get_body_argument(name, None)
        if value is None and self.request.headers.get("Content-Type", "").startswith("application/json"):
            try:
                body = json.loads(self.request.body or b"{}")
                value = body.get(name) if isinstance(body, dict) else None
            except (ValueError, RecursionError):  # deeply nested JSON is as unusable as broken JSON
                value = None
        return value if isinstance(value, str) else ""


def allow_cors(handler: RequestHandler, node: Node) -> None:
    """CORS headers for a configured origin (nothing for any other: the browser then refuses the answer)."""
    origin = handler.request.headers.get("Origin")
    allowed = node.settings.cors.origins
    if not origin or not (origin in allowed or "*" in allowed):
        return
    handler.set_header("Access-Control-Allow-Origin", origin)
    handler.set_header("Vary", "Origin")
    handler.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
    handler.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
    handler.set_header("Access-Control-Max-Age", str(node.settings.cors.max_age))


class AuthorizeHandler(JsonHandler):
    """``POST /authorize`` with ``username`` and ``password`` (the SHA-256 hex of the password)."""

    async def post(self) -> None:
        username, credential = self.field("username"), self.field("password")
        address = self.request.remote_ip or "?"
        try:
            self.node.login_limiter.check(username, address, await self.node.unlocks.unlocked_at(username))
            user = await self.node.users.verify(username, credential) if username and credential else None
            if user is None:
                self.node.login_limiter.failed(username, address)
                raise Unauthorized("invalid username or password")
        except TooManyRequests as exc:
            self.node.metrics.logins.labels("limited").inc()
            self.fail(exc)
            return
        except Unauthorized as exc:
            self.node.metrics.logins.labels("failed").inc()
            self.fail(exc)
            return
        self.node.login_limiter.succeeded(username, address)
        self.node.metrics.logins.labels("success").inc()
        pair = self.node.tokens.issue_pair(user.username, user.role)
        self.reply(200, {"status": "success", "code": 200, "data": pair})


class RefreshHandler(JsonHandler):
    """``POST /refresh`` with ``refresh`` (a refresh token): a new access token for the same user."""

    async def post(self) -> None:
        try:
            user = await self.node.authenticate(self.field("refresh"), "refresh")
        except Unauthorized as exc:
            self.fail(exc)
            return
        # The role comes from the store, so a changed role takes effect at the next refresh.
        self.reply(200, {"status": "success", "code": 200,
                         "data": {"access": self.node.tokens.issue(user.username, user.role, "access")}})


class HealthHandler(JsonHandler):
    """``GET /healthz``: liveness plus a few figures."""

    async def get(self) -> None:
        await self.node.db.fetchone("SELECT 1")
        self.reply(200, {"status": "ok", "identity": self.node.identity, "intents": len(self.node.registry),
                         "modules": sorted(self.node.modules)})


class MetricsHandler(RequestHandler):
    """``GET /metrics``: Prometheus text format."""

    def initialize(self, node: Node) -> None:
        self.node = node

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.node.metrics.render())


class IntentHandler(JsonHandler):
    """Base of the REST routes that run one intent for the token's user, through the router."""

    async def run(self, intent: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The intent's ``rpc_response``; ``None`` after answering 401 itself."""
        header = self.request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else self.get_argument("token", None)
        try:
            user = await self.node.authenticate(token, "access")
        except Unauthorized as exc:
            self.fail(exc)
            return None
        client = InProcessClient(self.node.router, user.username, user.role, kind="http")
        return await client.call(intent, params)

    def answer(self, response: dict[str, Any], data: Any) -> None:
        """The protocol's envelope, with ``data`` when the intent succeeded."""
        if response.get("status") == "success":
            self.reply(200, {"status": "success", "code": 200, "data": data})
        else:
            code = int(response.get("code") or 500)
            self.reply(code, {"status": "error", "code": code, "message": response.get("message")})


class FileReadHandler(IntentHandler):
    """``POST /file/read`` with ``path``: the file's content, base64-encoded, in ``data``."""

    async def post(self) -> None:
        response = await self.run("read_file", {"path": self.field("path"), "encoded": True})
        if response is not None:
            self.answer(response, (response.get("data") or {}).get("content"))


class FileWriteHandler(IntentHandler):
    """``POST /file/write`` with ``path`` and base64 ``content``."""

    async def post(self) -> None:
        response = await self.run("write_file", {"path": self.field("path"), "content": self.field("content"),
                                                 "encoded": True, "update": True})
        if response is not None:
            self.answer(response, response.get("data"))


class LogDownloadHandler(IntentHandler):
    """``POST /log/download/<static|dynamic>`` with ``logname``: a download path in ``data``."""

    async def post(self, mode: str) -> None:
        response = await self.run("download_log", {"logname": self.field("logname"), "mode": mode})
        if response is not None:
            self.answer(response, (response.get("data") or {}).get("url"))


class DownloadHandler(RequestHandler):
    """``GET /download/<token>``: the file behind a download link (the link is the permission; it expires)."""

    def initialize(self, node: Node) -> None:
        self.node = node
        allow_cors(self, node)

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")
        if hasattr(self, "node"):
            allow_cors(self, self.node)

    async def get(self, token: str) -> None:
        files = self.node.module("files")
        started = time.monotonic()
        try:
            if files is None:
                raise NotFound("the file manager is not loaded on this node")
            grant = files.redeem(token)
        except CloudisenseError as exc:
            self.set_status(exc.code)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": "error", "code": exc.code, "message": exc.message}))
            return
        # Served as an attachment, never rendered: a downloaded .html must not run as this site.
        kind = mimetypes.guess_type(grant.name)[0] or "application/octet-stream"
        self.set_header("Content-Type", "text/plain; charset=utf-8" if kind.startswith("text/") else kind)
        self.set_header("Content-Disposition", f'attachment; filename="{grant.name}"')
        sent = 0
        try:
            with os.fdopen(grant.open(), "rb") as fh:
                while chunk := fh.read(256 * 1024):
                    self.write(chunk)
                    sent += len(chunk)
                    await self.flush()
        except CloudisenseError as exc:  # the file changed since the link was made
            self.set_status(exc.code)
            self.set_header("Content-Type", "application/json")
            self.set_header("Content-Disposition", "inline")
            self.finish(json.dumps({"status": "error", "code": exc.code, "message": exc.message}))
            return
        except OSError as exc:
            log.warning("download of %s failed: %s", grant.name, exc.strerror)
        await self.node.audit.record(AuditRecord(
            user=grant.user, role=grant.role, client_kind="http", client_id=self.request.remote_ip or "?",
            requestid=None,
            intent="download", params={"file": grant.name, "bytes": sent}, outcome="success", code=200,
            message=None, duration_ms=(time.monotonic() - started) * 1000, ts=time.time()))
        self.finish()
