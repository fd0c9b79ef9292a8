"""End-to-end tests of the notify module against real local HTTP peers (webhooks and a fake Telegram)."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from tests.conftest import Running, make_settings, start_server

MODULES = ["pubsub", "audit", "notify"]
TOKEN = "123456789:AAH-very_secret-token"


@dataclass
class Seen:
    """One request the peer received."""

    method: str
    path: str
    body: dict[str, Any]


@dataclass
class Peer:
    """A local HTTP peer: records requests; ``fail[suffix] = n`` answers 500 to the first ``n``
    requests whose path ends with ``suffix``."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    server: HTTPServer | None = None

    def paths(self) -> list[str]:
        """The paths requested, in order."""
        return [s.path for s in self.seen]


class _Handler(tornado.web.RequestHandler):
    def initialize(self, peer: Peer) -> None:
        self.peer = peer

    def _handle(self) -> None:
        path = self.request.path
        self.peer.seen.append(Seen(self.request.method or "", path, json.loads(self.request.body or b"{}")))
        failing = [k for k, n in self.peer.fail.items() if n > 0 and path.endswith(k)]
        if failing:
            self.peer.fail[failing[0]] -= 1
            self.set_status(500)
            self.finish({"error": "try again"})
        elif path == "/gone":
            self.set_status(404)
            self.finish({"error": "no such hook"})
        elif path.endswith("/sendMessage"):
            if self.peer.seen[-1].body.get("chat_id") == "missing":
                self.set_status(400)
                self.finish({"ok": False, "error_code": 400, "description": "Bad Request: chat not found"})
            else:
                self.finish({"ok": True, "result": {"message_id": 42}})
        else:
            self.finish({"ok": True})

    def post(self, *args: str) -> None:
        self._handle()

    def put(self, *args: str) -> None:
        self._handle()


@asynccontextmanager
async def peer() -> AsyncIterator[Peer]:
    """A Tornado peer on 127.0.0.1 and a free port."""
    p = Peer()
    # The peer plays Telegram, which does see the token: keep its access log out of the checked logs.
    app = tornado.web.Application([(r"/.*", _Handler, {"peer": p})], log_function=lambda handler: None)
    sockets = bind_sockets(0, "127.0.0.1")
    p.server = HTTPServer(app)
    p.server.add_sockets(sockets)
    p.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    try:
        yield p
    finally:
        p.server.stop()


def closed_url() -> str:
    """A URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@asynccontextmanager
async def node(tmp_path: Path, notify: dict[str, Any]) -> AsyncIterator[Running]:
    """A server with the notify module and fast retries."""
    running = await start_server(make_settings(tmp_path, modules=MODULES,
                                               notify={"backoff": 0.01, "timeout": 2, **notify}))
    try:
        yield running
    finally:
        await running.server.stop()


async def test_webhooks_all_or_one(tmp_path: Path) -> None:
    async with peer() as p:
        hooks = [f"{p.url}/hook", f"{p.url}/hook2"]
        async with node(tmp_path, {"webhooks": hooks}) as r:
            conn = await r.connect("oper")
            await conn.call("subscribe_channel", {"topic": "/notification"})
            result = await conn.call("simple_http_notify", {"message": "deploy done"})
            assert result["delivered"] == 2 and result["failed"] == 0
            assert [(x["index"], x["status"], x["attempts"]) for x in result["results"]] == [(0, 200, 1), (1, 200, 1)]
            # Only scheme and host of a webhook are shown: its path may be a secret.
            assert all(x["webhook"] == p.url for x in result["results"])
            assert "/hook" not in json.dumps(result)
            assert sorted(p.paths()) == ["/hook", "/hook2"]
            body = p.seen[0].body
            assert body["message"] == "deploy done" and body["node"] == "test-node" and body["timestamp"] > 0
            event = await conn.next_event("/notification")
            # The existing client's text_notification: {message, code (2 = success), data}.
            assert event["name"] == "text_notification" and event["meta"]["event"] == "notification"
            assert event["data"]["message"] == "deploy done" and event["data"]["code"] == 2
            assert event["data"]["data"]["via"] == "webhook"

            one = await conn.call("simple_http_notify", {"message": "only two", "webhook": hooks[1], "method": "PUT"})
            assert one["delivered"] == 1 and p.seen[-1] == Seen("PUT", "/hook2", p.seen[-1].body)
            assert p.seen[-1].body["message"] == "only two" and len(p.seen) == 3
            conn.close()


async def test_webhook_retries(tmp_path: Path) -> None:
    async with peer() as p:
        down = closed_url() + "/hook"
        hooks = [f"{p.url}/flaky", down, f"{p.url}/gone"]
        async with node(tmp_path, {"webhooks": hooks, "retries": 2}) as r:
            conn = await r.connect("admin")
            p.fail = {"/flaky": 2}
            result = await conn.call("simple_http_notify", {"message": "disk almost full"})
            by_hook = {hooks[x["index"]]: x for x in result["results"]}
            assert by_hook[hooks[0]]["ok"] and by_hook[hooks[0]]["attempts"] == 3 and by_hook[hooks[0]]["status"] == 200
            assert p.paths().count("/flaky") == 3
            assert not by_hook[down]["ok"] and by_hook[down]["attempts"] == 3 and by_hook[down]["status"] is None
            assert "connection" in by_hook[down]["error"].lower() or "refused" in by_hook[down]["error"].lower()
            assert by_hook[hooks[2]]["status"] == 404 and by_hook[hooks[2]]["attempts"] == 1  # 4xx is final
            assert result["delivered"] == 1 and result["failed"] == 2

            failed = await conn.request("simple_http_notify", {"message": "x", "webhook": down})
            assert failed["code"] == 500 and "no webhook accepted" in failed["message"]
            conn.close()


async def test_only_configured_webhooks(tmp_path: Path) -> None:
    async with peer() as p:
        async with node(tmp_path, {"webhooks": [f"{p.url}/hook"]}) as r:
            conn = await r.connect("admin")
            for url in ("http://169.254.169.254/latest/meta-data", f"{p.url}/other", f"{p.url}/hook/../admin"):
                refused = await conn.request("simple_http_notify", {"message": "x", "webhook": url})
                assert refused["code"] == 400 and "configured" in refused["message"]
            assert (await conn.request("simple_http_notify", {"message": "x", "method": "DELETE"}))["code"] == 400
            assert (await conn.request("simple_http_notify", {"message": ""}))["code"] == 400
            assert p.seen == []

            viewer = await r.connect("viewer")
            denied = await viewer.request("simple_http_notify", {"message": "x"})
            assert denied["code"] == 403 and p.seen == []
            viewer.close()
            conn.close()
    async with node(tmp_path / "none", {}) as r:
        conn = await r.connect("admin")
        missing = await conn.request("simple_http_notify", {"message": "x"})
        assert missing["code"] == 503 and "notify.webhooks" in missing["message"]
        conn.close()


async def test_telegram_and_the_token_stays_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with peer() as p:
        settings = {"telegram_bot_token": TOKEN, "telegram_chat_id": "-1001", "telegram_base_url": p.url + "/",
                    "retries": 1}
        async with node(tmp_path, settings) as r:
            conn = await r.connect("oper")
            sent = await conn.call("simple_telegram_notify", {"message": "redis restarted"})
            assert sent == {"via": "telegram", "chat_id": "-1001", "ok": True, "status": 200, "attempts": 1,
                            "message_id": 42}
            assert p.seen[-1] == Seen("POST", f"/bot{TOKEN}/sendMessage", {"chat_id": "-1001", "text": "redis restarted"})
            other = await conn.call("simple_telegram_notify", {"message": "hi", "chat_id": "777"})
            assert other["chat_id"] == "777" and p.seen[-1].body["chat_id"] == "777"

            refused = await conn.request("simple_telegram_notify", {"message": "x", "chat_id": "missing"})
            assert refused["code"] == 500 and "chat not found" in refused["message"]
            p.fail = {"/sendMessage": 5}
            flaky = await conn.request("simple_telegram_notify", {"message": "x"})
            assert flaky["code"] == 500 and "2 attempt" in flaky["message"]

            admin = await r.connect("admin")
            audit = await admin.call("get_audit_log", {"intent": "simple_telegram_notify"})
            assert len(audit["records"]) == 4
            texts = [json.dumps(x) for x in (sent, other, refused, flaky, audit)]
            admin.close()
            conn.close()
    async with node(tmp_path / "down", {"telegram_bot_token": TOKEN, "telegram_chat_id": "1",
                                        "telegram_base_url": closed_url(), "retries": 0}) as r:
        conn = await r.connect("oper")
        down = await conn.request("simple_telegram_notify", {"message": "x"})
        assert down["code"] == 500 and "telegram did not accept" in down["message"]
        texts.append(json.dumps(down))
        conn.close()
    secret_part = TOKEN.split(":")[1]
    for text in texts + [rec.getMessage() for rec in caplog.records]:
        assert secret_part not in text


async def test_telegram_not_configured(tmp_path: Path) -> None:
    async with node(tmp_path, {"telegram_chat_id": "1"}) as r:
        conn = await r.connect("admin")
        missing = await conn.request("simple_telegram_notify", {"message": "x"})
        assert missing["code"] == 503 and "notify.telegram_bot_token" in missing["message"]
        conn.close()
    async with node(tmp_path / "b", {"telegram_bot_token": TOKEN}) as r:
        conn = await r.connect("admin")
        no_chat = await conn.request("simple_telegram_notify", {"message": "x"})
        assert no_chat["code"] == 400 and "telegram_chat_id" in no_chat["message"]
        conn.close()


async def test_python_api_for_other_modules(tmp_path: Path) -> None:
    async with peer() as p:
        settings = {"webhooks": [f"{p.url}/hook"], "telegram_bot_token": TOKEN, "telegram_chat_id": "5",
                    "telegram_base_url": p.url}
        async with node(tmp_path, settings) as r:
            conn = await r.connect("viewer")
            await conn.call("subscribe_channel", {"topic": "/notification"})
            notify = r.node.module("notify")
            assert (await notify.notify("escalation: disk full"))["delivered"] == 1
            assert p.seen[-1].body["message"] == "escalation: disk full"
            assert (await notify.notify("escalation by telegram", via="telegram"))["message_id"] == 42
            assert (await notify.notify("only on the dashboard", via="none")) == {"via": "none", "delivered": 0}
            vias = [(await conn.next_event("/notification"))["data"]["data"]["via"] for _ in range(3)]
            assert vias == ["webhook", "telegram", "none"]
            conn.close()
