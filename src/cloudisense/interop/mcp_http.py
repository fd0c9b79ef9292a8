"""MCP over streamable HTTP on the node's own Tornado server: ``/mcp``, bearer tokens only.

The SDK's streamable HTTP transport is an ASGI app. :class:`AsgiHandler` is a small
bridge that serves an ASGI app from a Tornado handler (request body in, response
head and body chunks out, flushed as they come so SSE streams stream, and a client
that goes away is an ``http.disconnect``). :class:`McpHttp` wraps the transport in
the SDK's own bearer-token middleware with a verifier that checks the node's access
tokens (``Node.authenticate``), so every HTTP request is authenticated, and runs the
SDK's session manager for the life of the server.

Each tool call runs through the router in process as the token's user, client kind
``mcp`` (policy, approvals and audit apply). The SDK's DNS-rebinding check is off:
it protects servers that trust ambient browser credentials, and ``/mcp`` trusts
only a bearer token a page can't attach on its own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from mcp.server import ServerRequestContext
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route
from tornado.iostream import StreamClosedError
from tornado.web import RequestHandler

from cloudisense.core.errors import Unauthorized
from cloudisense.interop.backends import Backend, RouterBackend
from cloudisense.interop.mcp_server import build_server

if TYPE_CHECKING:
    from cloudisense.node import Node

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
#: Open MCP sessions (2025 handshake era) at most; more get 503 until some end or idle out (30 min).
MAX_SESSIONS = 256


class NodeTokenVerifier:
    """The SDK's ``TokenVerifier``: a valid, current access token of the node, or nothing."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's user and role (from the user store, so a changed role counts at once)."""
        try:
            user = await self.node.authenticate(token, "access")
        except Unauthorized:
            return None
        return AccessToken(token=token, client_id=user.username, subject=user.username, scopes=[],
                           claims={"role": user.role.value})


class McpHttp:
    """The ``/mcp`` endpoint of one node: the MCP server, the SDK's session manager, and their lifetime."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.server = build_server(self._backend_for)
        # Sessions only exist for authenticated users; a bound keeps one user's client from
        # holding the node's memory with thousands of them.
        self.manager = StreamableHTTPSessionManager(app=self.server, security_settings=None,
                                                    max_sessions=MAX_SESSIONS)
        self.app = Starlette(
            routes=[Route(MCP_PATH, endpoint=RequireAuthMiddleware(StreamableHTTPASGIApp(self.manager), []),
                          methods=["GET", "POST", "DELETE"])],
            middleware=[Middleware(AuthenticationMiddleware, backend=BearerAuthBackend(NodeTokenVerifier(node))),
                        Middleware(AuthContextMiddleware)],
        )
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def _backend_for(self, ctx: ServerRequestContext[Any, Any]) -> Backend:
        # The user of the HTTP request that carried this MCP message, checked by the bearer middleware.
        user = ctx.request.scope.get("user") if ctx.request is not None else None
        if not isinstance(user, AuthenticatedUser):
            raise Unauthorized("an access token is required")
        token = user.access_token
        return RouterBackend(self.node, token.client_id, (token.claims or {})["role"], kind="mcp")

    async def start(self) -> None:
        """Run the session manager (its task group lives as long as the server)."""
        started = asyncio.Event()

        async def run() -> None:
            async with self.manager.run():
                started.set()
                await self._stop.wait()

        self._task = asyncio.create_task(run(), name="mcp-http")
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task.done():
            self._task.result()  # raises what stopped it

    async def stop(self) -> None:
        """End every MCP session and the session manager."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except Exception:  # shutting down: log, never hang the node's stop
                log.warning("the MCP session manager did not stop cleanly", exc_info=True)
            self._task = None


class AsgiHandler(RequestHandler):
    """Serves an ASGI (HTTP) app from Tornado: one request, its body whole, the response streamed."""

    SUPPORTED_METHODS = ("GET", "POST", "DELETE")

    def initialize(self, app: Any) -> None:
        self.app = app
        self._gone = asyncio.Event()

    def on_connection_close(self) -> None:
        self._gone.set()

    async def get(self) -> None:
        await self._serve()

    async def post(self) -> None:
        await self._serve()

    async def delete(self) -> None:
        await self._serve()

    async def _serve(self) -> None:
        request = self.request
        host, _, port = request.host.partition(":")
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.version.rpartition("/")[2] or "1.1", "method": request.method,
            "scheme": request.protocol, "path": request.path, "raw_path": request.path.encode("latin-1"),
            "query_string": request.query.encode("latin-1"), "root_path": "",
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.get_all()],
            "client": (request.remote_ip or "", 0), "server": (host, int(port) if port.isdigit() else 80),
        }
        body_read = False

        async def receive() -> dict[str, Any]:
            nonlocal body_read
            if not body_read:
                body_read = True
                return {"type": "http.request", "body": request.body or b"", "more_body": False}
            await self._gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if self._gone.is_set() or self._finished:
                return
            if message["type"] == "http.response.start":
                self.set_status(message["status"])
                self.clear_header("Content-Type")
                for key, value in message.get("headers", []):
                    self.add_header(key.decode("latin-1"), value.decode("latin-1"))
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    self.write(message["body"])
                try:
                    if message.get("more_body"):
                        await self.flush()  # an SSE event must reach the client now, not at the end
                    else:
                        self.finish()
                except StreamClosedError:
                    self._gone.set()

        await self.app(scope, receive, send)
        if not self._finished and not self._gone.is_set():
            self.finish()
