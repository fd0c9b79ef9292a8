"""The Tornado application and the running server."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, HTTPError, RedirectHandler, RequestHandler, StaticFileHandler

from cloudisense.node import Node
from cloudisense.server.http import (
    AuthorizeHandler,
    DownloadHandler,
    FileReadHandler,
    FileWriteHandler,
    HealthHandler,
    LogDownloadHandler,
    MetricsHandler,
    RefreshHandler,
)
from cloudisense.server.ws import RpcSocket

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

access_log = logging.getLogger("tornado.access")
log = logging.getLogger(__name__)

#: The dashboard loads only its own files and talks only to its own node (``'self'`` covers
#: the same-origin ``ws:``/``wss:`` URL); no inline scripts or styles, and no framing.
DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                 "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                 "frame-ancestors 'none'")


class DashboardHandler(StaticFileHandler):
    """The dashboard's static files, with headers that keep a browser from misusing them."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", DASHBOARD_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")

    def parse_url_path(self, url_path: str) -> str:
        # A NUL byte makes the file system calls raise ValueError (a 500 and a traceback per request).
        if "\x00" in url_path:
            raise HTTPError(404)
        return super().parse_url_path(url_path)


def log_request(handler: RequestHandler) -> None:
    """Tornado's access log line without the query string: ``/ws?token=`` carries an access token."""
    status = handler.get_status()
    log = access_log.info if status < 400 else access_log.warning if status < 500 else access_log.error
    request = handler.request
    log("%d %s %s (%s) %.2fms", status, request.method, request.path, request.remote_ip,
        1000.0 * request.request_time())


def make_app(node: Node, mcp: Any = None) -> Application:
    """Routes of one node (``mcp``: an :class:`~cloudisense.interop.mcp_http.McpHttp` to serve at ``/mcp``)."""
    s = node.settings.server
    routes: list = [
        (r"/authorize", AuthorizeHandler, {"node": node}),
        (r"/refresh", RefreshHandler, {"node": node}),
        (r"/ws", RpcSocket, {"node": node}),
        (r"/healthz", HealthHandler, {"node": node}),
        (r"/metrics", MetricsHandler, {"node": node}),
        (r"/file/read", FileReadHandler, {"node": node}),
        (r"/file/write", FileWriteHandler, {"node": node}),
        (r"/log/download/(static|dynamic)", LogDownloadHandler, {"node": node}),
        (r"/download/([A-Za-z0-9_\-]{16,64})", DownloadHandler, {"node": node}),
    ]
    routes += [route for module in node.modules.values() for route in module.http_routes()]
    if mcp is not None:
        from cloudisense.interop.mcp_http import MCP_PATH, AsgiHandler

        routes.append((MCP_PATH, AsgiHandler, {"app": mcp.app}))
    if s.dashboard and (WEB_DIR / "index.html").exists():
        routes += [
            (r"/", RedirectHandler, {"url": "/ui/"}),
            (r"/ui/(.*)", DashboardHandler, {"path": str(WEB_DIR), "default_filename": "index.html"}),
        ]
    return Application(
        routes,
        log_function=log_request,
        websocket_max_message_size=s.max_message_bytes,
        websocket_ping_interval=s.ping_interval or None,
        # Tornado requires the timeout to be at most the interval: a peer gets one interval to answer.
        websocket_ping_timeout=s.ping_interval or None,
    )


class Server:
    """A started node behind a listening HTTP server."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.http: HTTPServer | None = None
        self.port = 0
        #: The MCP streamable HTTP endpoint, when the ``mcp`` extra is installed.
        self.mcp: Any = None

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Start the node, then listen; returns the bound port (``port=0`` picks a free one)."""
        s = self.node.settings.server
        # Bind before the node starts anything (targets, scripts): a busy port must not leave
        # supervised processes behind.
        sockets = bind_sockets(s.port if port is None else port, host or s.host, family=socket.AF_INET)
        try:
            await self.node.start()
            self.mcp = await _start_mcp(self.node)
        except BaseException:
            for sock in sockets:
                sock.close()
            await self.node.stop()
            raise
        self.port = sockets[0].getsockname()[1]
        self.http = HTTPServer(make_app(self.node, self.mcp), max_body_size=1_048_576)
        self.http.add_sockets(sockets)
        return self.port

    async def stop(self) -> None:
        """Stop listening and stop the node."""
        if self.http is not None:
            self.http.stop()
            await self.http.close_all_connections()
        if self.mcp is not None:
            await self.mcp.stop()
            self.mcp = None
        await self.node.stop()


async def _start_mcp(node: Node) -> Any:
    """The node's ``/mcp`` endpoint, started; ``None`` without the ``mcp`` extra."""
    try:
        from cloudisense.interop.mcp_http import McpHttp
    except ImportError:
        log.info("MCP over HTTP is off: install the mcp extra (pip install 'cloudisense[mcp]') to serve /mcp")
        return None
    mcp = McpHttp(node)
    await mcp.start()
    return mcp
