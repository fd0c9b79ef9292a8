"""HTTP endpoints: ``/authorize``, ``/refresh``, ``/healthz``, ``/metrics``."""

from __future__ import annotations

import json
import logging
from typing import Any

from tornado.web import RequestHandler

from cloudisense.core.errors import CloudisenseError, TooManyRequests, Unauthorized
from cloudisense.node import Node

log = logging.getLogger(__name__)


class JsonHandler(RequestHandler):
    """Base: JSON answers in the protocol's ``status``/``code`` envelope."""

    node: Node

    def initialize(self, node: Node) -> None:
        self.node = node

    def set_default_headers(self) -> None:
        # A JSON answer must never be sniffed into HTML or script by a browser.
        self.set_header("X-Content-Type-Options", "nosniff")

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
        self.reply(200, {"status": "success", "code": 200, "data": self.node.tokens.issue_pair(user.username, user.role)})


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
