"""Helpers of the assistant runtime tests: a real node with real targets, logs and the demo policy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cloudisense.config import Settings
from tests.conftest import Running, make_settings, start_server, until

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
DEMO_POLICY = DEMO / "policy.toml"
SLEEPER = ["{python}", "-c", "import time\nwhile True: time.sleep(1)"]
MODULES = ["pubsub", "audit", "system", "targets", "logs", "assistant"]


def agent_settings(tmp_path: Path, *, policy: Path | str | None = DEMO_POLICY, modules: list[str] | None = None,
                   **overrides: Any) -> Settings:
    """Settings of a test node: two sleeper targets, an app log, the demo policy (or ``policy`` text)."""
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    app = logs / "app.log"
    if not app.exists():
        app.write_text("2024-05-01 10:00:00 INFO started\n2024-05-01 10:00:01 ERROR upstream timeout\n")
    if isinstance(policy, str):
        path = tmp_path / "policy.toml"
        path.write_text(policy)
        policy = path
    base: dict[str, Any] = {
        "modules": modules or MODULES,
        "targets": {"web": {"command": SLEEPER, "autostart": True, "stop_timeout": 1},
                    "nginx": {"command": SLEEPER, "autostart": True, "stop_timeout": 1}},
        "logs": {"files": {"app": str(app)}},
        "agent": {"policy_file": str(policy) if policy else None},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return make_settings(tmp_path, **base)


@asynccontextmanager
async def recording_webhook() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A local webhook on a free port: its URL, and the JSON bodies it received, in order."""
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets
    from tornado.web import Application, RequestHandler

    received: list[dict[str, Any]] = []

    class Hook(RequestHandler):
        def post(self) -> None:
            received.append(json.loads(self.request.body))
            self.finish({"ok": True})

    sockets = bind_sockets(0, "127.0.0.1")
    hook = HTTPServer(Application([(r"/hook", Hook)]))
    hook.add_sockets(sockets)
    try:
        yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}/hook", received
    finally:
        hook.stop()


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Running]:
    """A started server, stopped afterwards."""
    running = await start_server(settings)
    try:
        yield running
    finally:
        await running.server.stop()


async def audit_rows(running: Running, intent: str) -> list[dict[str, Any]]:
    """Audit records of ``intent``, oldest first."""
    return list(reversed(await running.node.audit.query(limit=1000, intent=intent)))


async def running_pid(running: Running, name: str = "web") -> int:
    """The pid of target ``name`` once it runs (asked over the WebSocket, as a client would)."""

    async def pid() -> int | None:
        conn = await running.connect("admin")
        try:
            data = await conn.call("target_status", {"name": name})
        finally:
            conn.close()
        return data.get("pid") if data.get("state") == "running" else None

    return int(await until(pid))
